"""Offline snapshots: raw records to Parquet (writer) and back (reader), contract section 5.

Owns the snapshot layout ``{dir}/{topic}/date=.../partition=N/{first}-{last}.parquet``,
atomic file writes, and reading a partition back in offset order.

Must not import: operators, pipeline, runtime, replay, Kafka or Redis clients. May import
:mod:`streamfeat.records`, :mod:`streamfeat.topology` (time bounds) and :mod:`streamfeat.errors`.
"""

from streamfeat.snapshot.reader import (
    SnapshotFile,
    iter_files,
    iter_partition,
    parse_date,
    partitions,
    snapshot_files,
)
from streamfeat.snapshot.writer import SCHEMA, SnapshotWriter, file_name, parse_file_name

__all__ = [
    "SCHEMA",
    "SnapshotFile",
    "SnapshotWriter",
    "file_name",
    "iter_files",
    "iter_partition",
    "parse_date",
    "parse_file_name",
    "partitions",
    "snapshot_files",
]
