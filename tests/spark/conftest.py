"""One local Spark session (``local[2]``) for the Spark engine's tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from objectstore import S3


@pytest.fixture(scope="session")
def spark(s3: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Started after the S3 server: its executors (local Python workers) inherit the AWS
    settings, as a cluster's executors get them from their environment."""
    from streamfeat.spark import spark_session

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    warehouse = tmp_path_factory.mktemp("warehouse")
    session = spark_session("local[2]", app_name="streamfeat-tests", config={
        "spark.sql.shuffle.partitions": "4", "spark.sql.warehouse.dir": str(warehouse)})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
