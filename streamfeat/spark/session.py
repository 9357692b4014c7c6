"""The Spark session the engine runs in: the caller's, or one started here.

A job submitted with ``spark-submit`` (or a Databricks / EMR job) already has a session and
a master: it is used as is. Otherwise the master is ``--spark-master``, else
``SPARK_MASTER``, else ``local[*]`` (every core of this machine). In local mode the Python
workers run this interpreter, so they import the same streamfeat and pyarrow.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from pyspark.sql import SparkSession

__all__ = ["spark_session"]

_LOCAL_SHUFFLE = 8
_SUBMITTED = "PYSPARK_GATEWAY_PORT"  # set in a driver started by spark-submit / pyspark


def spark_session(
    master: str | None = None, *, app_name: str = "streamfeat",
    config: Mapping[str, str] | None = None,
) -> SparkSession:
    """The active session (when ``master`` is not given), or a new one on ``master`` with
    these extra ``config`` settings."""
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    chosen = master or os.environ.get("SPARK_MASTER")
    if chosen is None and _SUBMITTED not in os.environ:
        chosen = "local[*]"
    builder = SparkSession.builder.appName(app_name)
    if chosen is not None:
        builder = builder.master(chosen)
        if chosen.startswith("local"):
            # the executors' Python is this one (a venv's, with streamfeat installed)
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            builder = (builder.config("spark.ui.showConsoleProgress", "false")
                       # a few groups per core, not Spark's 200 (a task each, mostly empty)
                       .config("spark.sql.shuffle.partitions", str(_LOCAL_SHUFFLE)))
    for k, v in (config or {}).items():
        builder = builder.config(k, v)
    session = builder.getOrCreate()
    return session
