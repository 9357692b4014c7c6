"""The offline commands on Spark: ``replay``, ``training-set`` and ``verify`` at scale.

The same operators as the worker and the local engine, not a second implementation: each
Spark task runs a job function of :mod:`streamfeat.replay` on one source partition (or one
time slice of it) and reads that partition's snapshot files itself; Spark carries plans,
spines and results as Arrow batches. Modules: :mod:`~streamfeat.spark.session` (the
SparkSession), :mod:`~streamfeat.spark.engine` (the three commands),
:mod:`~streamfeat.spark.tasks` (what runs in a task), :mod:`~streamfeat.spark.slicing`
(time slices with a warm-up), :mod:`~streamfeat.spark.columns` (typing columns exactly as
the local engine) and :mod:`~streamfeat.spark.sinks` (Parquet parts, tables).

The only package that imports pyspark (an optional extra: ``pip install
streamfeat[spark]``). May import what :mod:`streamfeat.replay` may, and replay itself;
must not import :mod:`streamfeat.runtime`.
"""

from streamfeat.spark.engine import SparkReplayResult, replay, training_set, verify
from streamfeat.spark.session import spark_session

__all__ = ["SparkReplayResult", "replay", "spark_session", "training_set", "verify"]
