"""Offline snapshots: raw records to Parquet (writer) and back (reader), contract section 5.

Owns the snapshot layout ``{dir}/{topic}/date=.../partition=N/{first}-{last}.parquet`` in a
local directory or an object store (``s3://bucket/prefix``), whole-or-nothing file writes,
and reading a partition back in offset order.

Must not import: operators, pipeline, runtime, replay, Kafka or Redis clients. May import
:mod:`streamfeat.records`, :mod:`streamfeat.topology` (time bounds), :mod:`streamfeat.storage`
(where the files are) and :mod:`streamfeat.errors`.
"""

from streamfeat.snapshot.layout import SnapshotLocation, snapshot_store
from streamfeat.snapshot.reader import (
    SnapshotFile,
    iter_files,
    iter_partition,
    open_file,
    parse_date,
    partitions,
    snapshot_files,
)
from streamfeat.snapshot.writer import SCHEMA, SnapshotWriter, file_name, parse_file_name

__all__ = [
    "SCHEMA",
    "SnapshotFile",
    "SnapshotLocation",
    "SnapshotWriter",
    "file_name",
    "iter_files",
    "iter_partition",
    "open_file",
    "parse_date",
    "parse_file_name",
    "partitions",
    "snapshot_files",
    "snapshot_store",
]
