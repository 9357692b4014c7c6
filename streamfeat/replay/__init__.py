"""Offline commands over Parquet snapshots, through the worker's own pipeline.

Owns ``streamfeat replay`` (:func:`replay`: backfill Redis or write final values),
``streamfeat training-set`` (:func:`training_set`: point-in-time-correct features for a
spine) and ``streamfeat verify`` (:func:`verify`: online values against a replay).
Each reads a partition's snapshots in offset order and feeds them to
:mod:`streamfeat.pipeline`, the code the worker runs, so its values are the stream's.

Modules: :mod:`~streamfeat.replay.backfill`, :mod:`~streamfeat.replay.training` and
:mod:`~streamfeat.replay.verification` (the commands); :mod:`~streamfeat.replay.inputs`
(topology and snapshot arguments), :mod:`~streamfeat.replay.spine` (reading a spine),
:mod:`~streamfeat.replay.output` (Arrow columns, Parquet files) and
:mod:`~streamfeat.replay.jobs` (one job per partition in parallel processes).

May import: topology, operators, records, pipeline, sinks, snapshot, state, client, retry,
errors, config. Must not import :mod:`streamfeat.runtime`, Kafka or Faust clients, or the
CLI: an offline command runs where no broker is. It never prints; it logs on
``streamfeat.replay`` (progress at INFO) and the CLI shows that log.
"""

from streamfeat.replay.backfill import PartitionStats, ReplayResult, replay
from streamfeat.replay.training import training_set
from streamfeat.replay.verification import Mismatch, VerifyReport, verify

__all__ = [
    "Mismatch",
    "PartitionStats",
    "ReplayResult",
    "VerifyReport",
    "replay",
    "training_set",
    "verify",
]
