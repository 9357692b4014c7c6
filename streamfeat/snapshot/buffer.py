"""Raw records waiting to be snapshotted, held as Arrow columns: :class:`RecordBuffer`.

A worker buffers up to ``--snapshot-max-rows`` records per partition between snapshot
files (twice that while one is being written). As Python objects a record costs its key and
value bytes plus about 170 bytes (a bytes object each for key and value, an int each for
offset and timestamp, four list slots); as Arrow columns it costs its key and value bytes
plus 24 (two offsets into the binary buffers, two int64). The columns are the ones the
Parquet file is written from, so the conversion the writer did at flush time is done at
append time instead, and the file is written from them without another copy.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from streamfeat.records import RecordBatch

__all__ = ["BUFFER_FIELDS", "ORIGIN_FIELDS", "RecordBuffer"]

BUFFER_FIELDS = [
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("kafka_ts", pa.int64(), nullable=False),
    pa.field("key", pa.binary()),
    pa.field("value", pa.binary()),
]
"""A buffered record: the snapshot file's columns but ``partition`` (one per buffer)."""
ORIGIN_FIELDS = [
    pa.field("origin_partition", pa.int32(), nullable=False),
    pa.field("origin_offset", pa.int64(), nullable=False),
]
"""Two more columns in the snapshots of a re-keyed stream (``<topology>.repartition``):
the source partition and offset where each record was first written."""
_PLAIN = pa.schema(BUFFER_FIELDS)
_REKEYED = pa.schema([*BUFFER_FIELDS, *ORIGIN_FIELDS])
_COALESCE = 64
"""Small appended chunks are merged this many at a time (each chunk costs a few hundred
bytes of Arrow bookkeeping: a busy partition appends one per batch)."""


class RecordBuffer:
    """Records of one partition in offset order, as Arrow record batches."""

    def __init__(self) -> None:
        self._chunks: list[pa.RecordBatch] = []
        self._merged = 0  # chunks at the front already merged
        self._rows = 0
        self._schema: pa.Schema | None = None

    def __len__(self) -> int:
        return self._rows

    def __bool__(self) -> bool:
        return self._rows > 0

    def append(self, batch: RecordBatch) -> None:
        """Append ``batch``'s records (later offsets than those buffered)."""
        if not batch:
            return
        schema = _PLAIN if batch.origins is None else _REKEYED
        if self._schema is not None and self._rows and not schema.equals(self._schema):
            raise ValueError("cannot mix re-keyed records (with origins) and records without")
        self._schema = schema
        columns = [pa.array(batch.offsets, pa.int64()), pa.array(batch.kafka_ts, pa.int64()),
                   pa.array(batch.keys, pa.binary()), pa.array(batch.values, pa.binary())]
        if batch.origins is not None:
            columns += [pa.array(batch.origins.partitions, pa.int32()),
                        pa.array(batch.origins.offsets, pa.int64())]
        self._chunks.append(pa.RecordBatch.from_arrays(columns, schema=schema))
        self._rows += len(batch)
        if len(self._chunks) - self._merged >= _COALESCE:
            tail = pa.Table.from_batches(self._chunks[self._merged:], schema=schema)
            self._chunks[self._merged:] = tail.combine_chunks().to_batches()
            self._merged = len(self._chunks)

    def prepend(self, table: pa.Table) -> None:
        """Put ``table``'s records (earlier offsets: a write's remainder) back in front."""
        if table.num_rows == 0:
            return
        if self._schema is not None and self._rows and not table.schema.equals(self._schema):
            raise ValueError("cannot mix re-keyed records (with origins) and records without")
        self._schema = table.schema
        front = table.to_batches()
        self._chunks[:0] = front
        self._merged += len(front)
        self._rows += table.num_rows

    def cut(self) -> pa.Table:
        """Every buffered record as one table; the buffer is left empty."""
        table = pa.Table.from_batches(self._chunks, schema=self._schema or _PLAIN)
        self._chunks, self._merged, self._rows = [], 0, 0
        return table

    def oldest_ts(self) -> int | None:
        """The smallest ``kafka_ts`` buffered."""
        if not self._rows:
            return None
        return min(int(pc.min(c.column(1)).as_py()) for c in self._chunks if c.num_rows)
