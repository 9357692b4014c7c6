"""Raw records of one partition to Parquet snapshot files (contract section 5).

Layout, pruned by directory name (topic, then date, then partition)::

    {snapshot_dir}/{topic}/date=YYYY-MM-DD/partition=N/{first:020d}-{last:020d}.parquet

Columns ``partition`` int32, ``offset`` int64, ``kafka_ts`` int64 (ms), ``key`` and
``value`` binary; zstd. A file is written as ``*.tmp`` in its final directory, fsynced,
then renamed with ``os.replace`` (and the directory fsynced): a crash leaves either no
file or a whole one, never a half file under a ``.parquet`` name. ``*.tmp`` leftovers
are deleted when a writer opens the partition.

Dates: a record's date is the UTC date of the running maximum of ``kafka_ts`` over the
partition (so dates never go backwards in offset order and each flush splits at most at
day boundaries, giving files whose offset ranges never overlap). With broker-assigned
timestamps (``LogAppendTime``) that is simply the record's own date; with producer
timestamps a record stamped a little before midnight can land in the next day's directory.

Exactly-once on disk: :attr:`SnapshotWriter.next_offset` is computed from the file names
on open, and :meth:`SnapshotWriter.append` drops every record below it, so re-running
over already snapshotted offsets never duplicates a record.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from streamfeat.errors import StateError
from streamfeat.source import RawRecord

__all__ = ["SCHEMA", "SnapshotWriter", "file_name", "parse_file_name", "partition_dir"]

SCHEMA = pa.schema([
    pa.field("partition", pa.int32(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("kafka_ts", pa.int64(), nullable=False),
    pa.field("key", pa.binary()),
    pa.field("value", pa.binary()),
])
"""Columns of every snapshot file."""

_FILE_RE = re.compile(r"\A(\d{20})-(\d{20})\.parquet\Z")
_DEFAULT_MAX_ROWS = 500_000


def file_name(first_offset: int, last_offset: int) -> str:
    """``{first:020d}-{last:020d}.parquet``: zero-padded so names sort as offsets do."""
    return f"{first_offset:020d}-{last_offset:020d}.parquet"


def parse_file_name(name: str) -> tuple[int, int] | None:
    """``(first_offset, last_offset)`` of a snapshot file name, ``None`` for anything else."""
    m = _FILE_RE.match(name)
    if m is None:
        return None
    return int(m[1]), int(m[2])


def partition_dir(snapshot_dir: str | os.PathLike[str], topic: str, date: str,
                  partition: int) -> Path:
    """``{snapshot_dir}/{topic}/date={date}/partition={partition}``."""
    return Path(snapshot_dir) / topic / f"date={date}" / f"partition={partition}"


def _utc_date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        snapshot_dir: str | os.PathLike[str],
        topic: str,
        partition: int,
        *,
        every_s: float = 60.0,
        max_rows: int = _DEFAULT_MAX_ROWS,
    ) -> None:
        if every_s < 0 or max_rows < 1:
            raise ValueError(f"every_s must be >= 0 and max_rows >= 1, got {every_s}, {max_rows}")
        self.snapshot_dir = Path(snapshot_dir)
        self.topic = topic
        self.partition = partition
        self.every_s = every_s
        self.max_rows = max_rows
        self._buffer: list[RawRecord] = []
        self._buffer_since: float | None = None
        self._oldest_ts: int | None = None
        self._max_ts: int | None = None  # running max of kafka_ts (dates never go backwards)
        self._durable: int | None = self._scan()
        self._accept_from = self._durable or 0

    def _scan(self) -> int | None:
        """One past the last durable offset, from file names; deletes ``*.tmp`` leftovers."""
        root = self.snapshot_dir / self.topic
        if not root.is_dir():
            return None
        last = -1
        wanted = f"partition={self.partition}"
        try:
            for date_dir in root.iterdir():
                if not date_dir.name.startswith("date="):
                    continue
                pdir = date_dir / wanted
                if not pdir.is_dir():
                    continue
                for entry in pdir.iterdir():
                    if entry.name.endswith(".tmp"):
                        entry.unlink(missing_ok=True)
                        continue
                    offsets = parse_file_name(entry.name)
                    if offsets is not None:
                        last = max(last, offsets[1])
        except OSError as exc:
            raise StateError(
                f"cannot read snapshots of {self.topic}[{self.partition}] under {root}: {exc}; "
                "check --snapshot-dir (exists, readable, writable)"
            ) from exc
        return last + 1 if last >= 0 else None

    @property
    def next_offset(self) -> int | None:
        """One past the last offset durable in snapshot files (``None``: no file yet)."""
        return self._durable

    @property
    def oldest_unflushed_kafka_ts(self) -> int | None:
        """Smallest Kafka timestamp (ms) among buffered records, for the snapshot-lag metric."""
        return self._oldest_ts

    @property
    def buffered(self) -> int:
        """Records waiting for the next :meth:`flush`."""
        return len(self._buffer)

    def append(self, records: Iterable[RawRecord]) -> None:
        """Buffer records of this partition in offset order.

        Records below :attr:`next_offset` (or already buffered) are dropped, so feeding
        the same offsets again never duplicates a record.
        """
        start = self._accept_from
        buf = self._buffer
        oldest = self._oldest_ts
        for r in records:
            if r.offset < start:
                continue
            if r.partition != self.partition:
                raise ValueError(
                    f"record of partition {r.partition} given to the snapshot writer of "
                    f"{self.topic}[{self.partition}]"
                )
            buf.append(r)
            start = r.offset + 1
            if oldest is None or r.kafka_ts < oldest:
                oldest = r.kafka_ts
        self._accept_from = start
        self._oldest_ts = oldest
        if buf and self._buffer_since is None:
            self._buffer_since = time.time()

    def due(self, now_s: float) -> bool:
        """Whether a :meth:`flush` is due at wall-clock ``now_s`` (``time.time()``)."""
        if not self._buffer:
            return False
        if len(self._buffer) >= self.max_rows:
            return True
        return self._buffer_since is not None and now_s - self._buffer_since >= self.every_s

    def flush(self) -> None:
        """Write every buffered record durably (one file per UTC date), then forget them.

        On failure no partial file is visible and the records not yet written stay
        buffered (a later flush retries them); raises :class:`StateError`.
        """
        buf = self._buffer
        if not buf:
            return
        max_ts = self._max_ts
        # (date, end, running max at end) of consecutive runs of one date
        runs: list[tuple[str, int, int]] = []
        run_date: str | None = None
        for i, r in enumerate(buf):
            if max_ts is None or r.kafka_ts > max_ts:
                date = _utc_date(r.kafka_ts)
                if run_date is not None and date != run_date:
                    runs.append((run_date, i, max_ts if max_ts is not None else r.kafka_ts))
                run_date = date
                max_ts = r.kafka_ts
            elif run_date is None:
                run_date = _utc_date(max_ts)
        if run_date is None or max_ts is None:  # pragma: no cover - buf is not empty
            raise StateError("internal error: no date for a non-empty snapshot buffer")
        runs.append((run_date, len(buf), max_ts))
        start = 0
        try:
            for date, end, run_max in runs:
                self._write(date, buf[start:end])
                self._durable = buf[end - 1].offset + 1
                self._max_ts = run_max
                start = end
        finally:
            del buf[:start]
            self._oldest_ts = min((r.kafka_ts for r in buf), default=None)
            if not buf:
                self._buffer_since = None

    def _write(self, date: str, records: list[RawRecord]) -> None:
        first, last = records[0].offset, records[-1].offset
        directory = partition_dir(self.snapshot_dir, self.topic, date, self.partition)
        final = directory / file_name(first, last)
        tmp = final.with_name(final.name + ".tmp")
        table = pa.table(
            [
                pa.array([r.partition for r in records], pa.int32()),
                pa.array([r.offset for r in records], pa.int64()),
                pa.array([r.kafka_ts for r in records], pa.int64()),
                pa.array([r.key for r in records], pa.binary()),
                pa.array([r.value for r in records], pa.binary()),
            ],
            schema=SCHEMA,
        )
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            _fsync_dir(directory)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StateError(
                f"cannot write snapshot {final} of {self.topic}[{self.partition}]: {exc}; "
                "check --snapshot-dir (free space, permissions); the records stay buffered"
            ) from exc

    def close(self) -> None:
        """Flush what is buffered."""
        self.flush()
