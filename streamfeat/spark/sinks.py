"""Where a Spark run's values go: Parquet parts, a Spark table (Redis: inside the tasks).

Parquet is written by the tasks themselves with pyarrow, one file per Spark partition
(``part-NNNNN.parquet`` in the output directory, each written whole or not at all through
:mod:`streamfeat.storage`: a local path or ``s3://``), with exactly the local engine's
column types and schema metadata (a training set's lineage): read together and sorted by
key they equal the local engine's file. Spark's own writer would re-type the columns
and drop the metadata.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import TaskContext
from pyspark.sql import DataFrame

from streamfeat.errors import ConfigError
from streamfeat.storage import LocalStore, open_store

__all__ = ["PART_PREFIX", "write_parts", "write_table"]

PART_PREFIX = "part-"


class _PartWriter:
    """``mapInArrow``: this Spark partition's batches into one Parquet part."""

    def __init__(self, location: str, schema: pa.Schema) -> None:
        self.location = location
        self.schema = schema

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ctx = TaskContext.get()
        pid = ctx.partitionId() if ctx is not None else 0
        buf = io.BytesIO()
        rows = 0
        with pq.ParquetWriter(buf, self.schema, compression="zstd") as writer:
            for batch in batches:
                if batch.num_rows:
                    table = pa.Table.from_batches([batch]).select(self.schema.names)
                    writer.write_table(table.cast(self.schema))
                    rows += batch.num_rows
        name = f"{PART_PREFIX}{pid:05d}.parquet"
        if rows or pid == 0:  # part 0 always: an empty result still has its schema
            open_store(self.location).put(name, buf.getvalue())
        yield pa.RecordBatch.from_pydict({"rows": [rows]}, schema=pa.schema([("rows", pa.int64())]))


def write_parts(frame: DataFrame, location: str, schema: pa.Schema) -> int:
    """Write ``frame`` as Parquet parts of ``schema`` under ``location``; the rows written.

    Parts of an earlier run there are deleted first; a file at ``location`` is refused."""
    store = open_store(location)
    if isinstance(store, LocalStore) and store.root.is_file():
        raise ConfigError(f"{location} is a file; the Spark engine writes a directory of "
                          "Parquet parts there: pass a directory path")
    store.delete([p for p in store.list("") if p.rsplit("/", 1)[-1].startswith(PART_PREFIX)
                  and "/" not in p])
    counts = frame.mapInArrow(_PartWriter(location, schema), "rows long").collect()
    return sum(int(r[0]) for r in counts)


def write_table(frame: DataFrame, name: str) -> None:
    """``frame`` as the Spark table ``name`` (replaced when it exists)."""
    frame.write.mode("overwrite").saveAsTable(name)
