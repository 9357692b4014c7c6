"""Raw records of one partition to Parquet snapshot files (contract sections 5 and 11).

Layout, pruned by folder name (topic, then date, then partition)::

    {snapshot_dir}/{topic}/date=YYYY-MM-DD/partition=N/{first:020d}-{last:020d}.parquet

in a local directory or an object store (``s3://bucket/prefix``): workers on many hosts
write one layout. Columns ``partition`` int32, ``offset`` int64, ``kafka_ts`` int64 (ms),
``key`` and ``value`` binary; zstd. Each file is written whole or not at all at its final
path, through the :class:`~streamfeat.storage.ObjectStore`: locally a temporary file in its
folder, fsynced, renamed (temporary leftovers are deleted when a writer opens the
partition); in an object store one upload to the final key, completed only once whole (a
worker killed mid-upload leaves no object). A crash never leaves a half file under a
``.parquet`` name.

Dates: a record's date is the UTC date of the running maximum of ``kafka_ts`` over the
partition (so dates never go backwards in offset order and each flush splits at most at
day boundaries, giving files whose offset ranges never overlap). With broker-assigned
timestamps (``LogAppendTime``) that is simply the record's own date; with producer
timestamps a record stamped a little before midnight can land in the next day's folder.

Exactly-once in the store: :attr:`SnapshotWriter.next_offset` is computed from the file
names listed on open (whichever host wrote them), and :meth:`SnapshotWriter.append` drops
every record below it, so re-running over already snapshotted offsets never duplicates a
record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamfeat.errors import StateError
from streamfeat.records import RawRecord, RecordBatch, as_batch
from streamfeat.snapshot.buffer import BUFFER_FIELDS, ORIGIN_FIELDS, RecordBuffer
from streamfeat.snapshot.layout import (
    SnapshotLocation,
    date_folders,
    file_name,
    list_folders,
    parse_file_name,
    partition_dir,
    partition_prefix,
    snapshot_store,
)
from streamfeat.topology.definitions import MAX_EVENT_TIME_MS

__all__ = [
    "ORIGIN_FIELDS",
    "REKEYED_SCHEMA",
    "SCHEMA",
    "SnapshotWriter",
    "file_name",
    "parse_file_name",
    "partition_dir",
]

SCHEMA = pa.schema([pa.field("partition", pa.int32(), nullable=False), *BUFFER_FIELDS])
"""Columns of every snapshot file: ``partition``, ``offset``, ``kafka_ts``, ``key``, ``value``
(a re-keyed stream's add :data:`ORIGIN_FIELDS`)."""
REKEYED_SCHEMA = pa.schema([*SCHEMA, *ORIGIN_FIELDS])

_DEFAULT_MAX_ROWS = 500_000
_DAY_MS = 86_400_000


def _utc_date(ms: int) -> str:
    """The UTC date of a Kafka timestamp; one outside the years 1970..9999 (a producer's
    bad clock: such records are dead letters) is filed under the nearest end of that range,
    so that no timestamp can stop the snapshots."""
    clamped = min(max(ms, 0), MAX_EVENT_TIME_MS)
    return datetime.fromtimestamp(clamped / 1000, tz=UTC).strftime("%Y-%m-%d")


class _Written(NamedTuple):
    """What a write of buffered records did."""

    records: int  # how many (from the first) became durable
    durable: int | None  # the writer's next_offset after it
    max_ts: int | None  # the running maximum of kafka_ts after it
    error: StateError | None  # what stopped it before the end


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _background() -> ThreadPoolExecutor:
    """Two threads writing the snapshot files of every partition (one write per partition
    at a time, so a partition's files are written in offset order). Two: compression and
    fsync release the GIL, so two partitions' files are written at once on two cores."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(2, thread_name_prefix="streamfeat-snapshot")
        return _executor


class SnapshotWriter:
    """Buffers the raw records of one topic partition and writes them as Parquet files.

    ``every_s``: :meth:`due` turns true this long after the first unflushed record was
    appended; ``max_rows``: or as soon as that many records are buffered (bounds memory).
    The caller flushes when due, before (or together with) committing its state, and
    seeks the partition to ``min(state offset, next_offset)`` on start so that no offset
    is ever missing from the snapshots.
    """

    def __init__(
        self,
        snapshot_dir: SnapshotLocation,
        topic: str,
        partition: int,
        *,
        every_s: float = 60.0,
        max_rows: int = _DEFAULT_MAX_ROWS,
    ) -> None:
        if every_s < 0 or max_rows < 1:
            raise ValueError(f"every_s must be >= 0 and max_rows >= 1, got {every_s}, {max_rows}")
        self.store = snapshot_store(snapshot_dir)
        self.snapshot_dir = self.store.url
        self.topic = topic
        self.partition = partition
        self.every_s = every_s
        self.max_rows = max_rows
        self._buffer = RecordBuffer()  # Arrow columns: a third of the memory of the records
        # A write handed to the background thread: its records, and what it returns (how
        # many of them became durable, and the error that stopped it, if any).
        self._inflight: pa.Table | None = None
        self._inflight_oldest: int | None = None  # smallest kafka_ts in _inflight
        self._future: Future[_Written] | None = None
        self._buffer_since: float | None = None
        self._oldest_ts: int | None = None
        self._max_ts: int | None = None  # running max of kafka_ts (dates never go backwards)
        self._durable: int | None = self._scan()
        self._accept_from = self._durable or 0

    def _scan(self) -> int | None:
        """One past the last durable offset, from the names of the partition's files in every
        date folder; deletes leftovers of interrupted local writes."""
        store, topic = self.store, self.topic
        try:
            prefixes = [partition_prefix(topic, d, self.partition)
                        for d in date_folders(store, topic)]
            for prefix in prefixes:
                store.clean(prefix)
            last = -1
            for keys in list_folders(store, prefixes):
                for key in keys:
                    offsets = parse_file_name(key.rpartition("/")[2])
                    if offsets is not None:
                        last = max(last, offsets[1])
        except OSError as exc:
            raise StateError(
                f"cannot read snapshots of {topic}[{self.partition}] under "
                f"{store.url}/{topic}: {exc}; check --snapshot-dir (exists, readable, writable)"
            ) from exc
        return last + 1 if last >= 0 else None

    @property
    def next_offset(self) -> int | None:
        """One past the last offset durable in snapshot files (``None``: no file yet)."""
        return self._durable

    @property
    def oldest_unflushed_kafka_ts(self) -> int | None:
        """Smallest Kafka timestamp (ms) among records not yet durable (snapshot-lag metric)."""
        oldest = self._inflight_oldest
        if oldest is None or (self._oldest_ts is not None and self._oldest_ts < oldest):
            return self._oldest_ts
        return oldest

    @property
    def buffered(self) -> int:
        """Records accepted but not yet durable (buffered, or being written)."""
        return len(self._buffer) + (self._inflight.num_rows if self._inflight is not None else 0)

    def append(self, records: RecordBatch | Sequence[RawRecord]) -> None:
        """Buffer records of this partition in offset order.

        Records below :attr:`next_offset` (or already buffered) are dropped, so feeding
        the same offsets again never duplicates a record.
        """
        if not records:
            return
        batch = as_batch(records, self.partition)
        if batch.partition != self.partition:
            raise ValueError(
                f"record of partition {batch.partition} given to the snapshot writer of "
                f"{self.topic}[{self.partition}]"
            )
        batch = batch.since(self._accept_from)
        if not batch:
            return
        self._buffer.append(batch)
        self._accept_from = batch.offsets[-1] + 1
        oldest = min(batch.kafka_ts)
        if self._oldest_ts is None or oldest < self._oldest_ts:
            self._oldest_ts = oldest
        if self._buffer_since is None:
            self._buffer_since = time.time()

    def due(self, now_s: float) -> bool:
        """Whether a :meth:`flush` is due at wall-clock ``now_s`` (``time.time()``)."""
        if not self._buffer:
            return False
        if len(self._buffer) >= self.max_rows:
            return True
        return self._buffer_since is not None and now_s - self._buffer_since >= self.every_s

    def flush(self, *, wait: bool = True) -> None:
        """Write every buffered record durably (one file per UTC date), then forget them.

        ``wait=False`` hands the records to a background thread and returns at once (the
        worker's hot path: compression and fsync overlap the next batch). One write per
        partition is in flight at a time; while it is, the buffer keeps filling, up to
        twice ``max_rows`` before this waits. Every call, and :meth:`poll`, takes in what a
        background write finished.

        On failure no partial file is visible and the records not yet written stay
        buffered (a later flush retries them); raises :class:`StateError` (for a
        background write: from the call that takes in its result).
        """
        self._collect(block=wait or len(self._buffer) >= 2 * self.max_rows)
        if wait:
            batch = self._cut()
            self._take_back(batch, self._write_runs(batch, self._max_ts))
        elif self._future is None and self._buffer:
            self._inflight_oldest = self._oldest_ts  # of the records the cut hands over
            batch = self._inflight = self._cut()
            self._future = _background().submit(self._write_runs, batch, self._max_ts)

    def poll(self) -> None:
        """Take in the result of a finished background write (raises its error)."""
        self._collect(block=False)

    def _cut(self) -> pa.Table:
        table = self._buffer.cut()
        self._oldest_ts = None
        self._buffer_since = None
        return table

    def _collect(self, *, block: bool) -> None:
        future, batch = self._future, self._inflight
        if future is None or batch is None or (not block and not future.done()):
            return
        self._future = self._inflight = self._inflight_oldest = None
        self._take_back(batch, future.result())

    def _take_back(self, batch: pa.Table, done: _Written) -> None:
        """Take in a finished write: what became durable, and what goes back in front."""
        self._durable, self._max_ts = done.durable, done.max_ts
        if done.records < batch.num_rows:
            self._buffer.prepend(batch.slice(done.records))
            self._oldest_ts = self._buffer.oldest_ts()
            if self._buffer_since is None:
                self._buffer_since = time.time()
        if done.error is not None:
            raise done.error

    def _write_runs(self, buf: pa.Table, max_ts: int | None) -> _Written:
        """Write ``buf`` as files of one date each (on any thread: changes nothing here)."""
        if buf.num_rows == 0:
            return _Written(0, self._durable, max_ts, None)
        # The date of a record is that of the running maximum of kafka_ts: find the runs
        # of one date (vectorized; a flush holds up to max_rows records).
        ts = np.array(buf.column("kafka_ts").to_numpy(), dtype=np.int64)
        offsets = buf.column("offset")
        if max_ts is not None:
            ts[0] = max(int(ts[0]), max_ts)
        running = np.maximum.accumulate(ts)
        days = running // _DAY_MS
        ends = [*(np.flatnonzero(np.diff(days)) + 1).tolist(), buf.num_rows]
        start, durable = 0, self._durable
        try:
            for end in ends:
                run_max = int(running[end - 1])
                self._write(_utc_date(run_max), buf.slice(start, end - start))
                durable, max_ts, start = int(offsets[end - 1].as_py()) + 1, run_max, end
        except StateError as exc:
            return _Written(start, durable, max_ts, exc)
        except Exception as exc:  # a background write must never lose records
            error = StateError(
                f"cannot write a snapshot of {self.topic}[{self.partition}]: {exc!r}; "
                "the records stay buffered"
            )
            return _Written(start, durable, max_ts, error)
        return _Written(start, durable, max_ts, None)

    def _write(self, date: str, records: pa.Table) -> None:
        """One file of ``records`` (buffered columns: :data:`~.buffer.BUFFER_FIELDS`)."""
        offsets = records.column("offset")
        first, last = int(offsets[0].as_py()), int(offsets[-1].as_py())
        key = f"{partition_prefix(self.topic, date, self.partition)}/{file_name(first, last)}"
        partition = pa.array(np.full(records.num_rows, self.partition, dtype=np.int32))
        schema = SCHEMA if records.num_columns == len(SCHEMA) - 1 else REKEYED_SCHEMA
        table = pa.Table.from_arrays([partition, *records.columns], schema=schema)
        out = pa.BufferOutputStream()
        pq.write_table(table, out, compression="zstd")
        try:
            self.store.put(key, out.getvalue().to_pybytes())
        except OSError as exc:
            raise StateError(
                f"cannot write snapshot {self.store.url}/{key} of {self.topic}[{self.partition}]: "
                f"{exc}; check --snapshot-dir (free space, permissions; for an object store "
                "the bucket and the AWS_* settings); the records stay buffered"
            ) from exc

    def close(self) -> None:
        """Wait for a background write, then flush what is buffered."""
        self.flush()
