"""Read snapshot files back, one partition at a time, in offset order.

The snapshots are in a local directory or an object store (``s3://bucket/prefix``); both are
read through their :class:`~streamfeat.storage.ObjectStore`. Pruning is by folder name only:
the date folders of the topic are listed, those outside ``[date_from, date_to]`` are
skipped without looking inside, and in the others only ``partition=N`` is listed; only the
files found there are opened (from an object store, in ranges: the footer, then the columns
read). Files are read in offset order; a record at or below an offset already yielded
(overlapping or duplicated files, e.g. copied by hand) is skipped. A thread reads each file a
few Arrow batches ahead of the caller (Parquet's decompression and decoding hold no GIL, so
they run beside the caller's work on the records before).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import date as Date
from queue import Full, Queue
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from streamfeat.errors import ConfigError, StateError
from streamfeat.records import Origins, RecordBatch
from streamfeat.snapshot.layout import (
    PART_DIR,
    SnapshotLocation,
    date_folders,
    list_folders,
    parse_file_name,
    partition_prefix,
    snapshot_store,
)

__all__ = [
    "DateLike",
    "SnapshotFile",
    "iter_files",
    "iter_partition",
    "open_file",
    "parse_date",
    "partitions",
    "snapshot_files",
]

DateLike = str | Date
_COLUMNS = ["offset", "kafka_ts", "key", "value"]
_ORIGIN_COLUMNS = ["origin_partition", "origin_offset"]
_CHUNK_ROWS = 25_000  # rows of the Arrow batches read ahead
_READ_AHEAD = 8  # Arrow batches read ahead of the caller, per file


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """One snapshot file: where it is and the offsets its name says it holds.

    Plain data (it crosses process boundaries): ``root`` is the snapshot location (a path
    or a URL, :attr:`ObjectStore.url`), ``key`` the file's path in it.
    """

    root: str
    key: str
    date: str
    partition: int
    first_offset: int
    last_offset: int

    @property
    def path(self) -> str:
        """The file's full path or URL, for messages."""
        return f"{self.root.rstrip('/')}/{self.key}"


def parse_date(value: DateLike | None, flag: str = "date") -> str | None:
    """``YYYY-MM-DD`` text of a date given as text or ``datetime.date``."""
    if value is None:
        return None
    if isinstance(value, Date):
        return value.strftime("%Y-%m-%d")
    try:
        return Date.fromisoformat(value).strftime("%Y-%m-%d")
    except ValueError:
        raise ConfigError(f"{flag} {value!r} is not a date; write it as YYYY-MM-DD") from None


def _listing_failed(root: str, exc: OSError) -> StateError:
    return StateError(f"cannot list snapshots in {root}: {exc}; check --snapshot-dir")


def partitions(snapshot_dir: SnapshotLocation, topic: str) -> list[int]:
    """Partitions that have snapshot folders under ``{snapshot_dir}/{topic}``."""
    store = snapshot_store(snapshot_dir)
    found: set[int] = set()
    try:
        for d in date_folders(store, topic):
            for name in store.folders(f"{topic}/date={d}"):
                m = PART_DIR.match(name)
                if m is not None:
                    found.add(int(m[1]))
    except OSError as exc:
        raise _listing_failed(f"{store.url}/{topic}", exc) from exc
    return sorted(found)


def snapshot_files(
    snapshot_dir: SnapshotLocation,
    topic: str,
    partition: int,
    *,
    date_from: DateLike | None = None,
    date_to: DateLike | None = None,
) -> list[SnapshotFile]:
    """The files of one partition within the dates (inclusive), in offset order."""
    lo, hi = parse_date(date_from, "--from"), parse_date(date_to, "--to")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"--from {lo} is after --to {hi}; swap them")
    store = snapshot_store(snapshot_dir)
    try:
        dates = date_folders(store, topic, lo, hi)
        prefixes = [partition_prefix(topic, d, partition) for d in dates]
        listed = list_folders(store, prefixes)
    except OSError as exc:
        raise _listing_failed(f"{store.url}/{topic}", exc) from exc
    files: list[SnapshotFile] = []
    for d, prefix, keys in zip(dates, prefixes, listed, strict=True):
        for key in keys:
            folder, _slash, name = key.rpartition("/")
            offsets = parse_file_name(name)
            if offsets is not None and folder == prefix:
                files.append(SnapshotFile(store.url, key, d, partition, *offsets))
    files.sort(key=lambda f: (f.first_offset, f.last_offset))
    return files


def open_file(f: SnapshotFile) -> pq.ParquetFile:
    """One snapshot file, opened for reading (from an object store: in ranged reads, the
    column chunks read ahead in few requests)."""
    fs, root = snapshot_store(f.root).filesystem()
    source = fs.open_input_file(f"{root}/{f.key}")
    return pq.ParquetFile(source, pre_buffer=not isinstance(fs, pafs.LocalFileSystem))


def _open(f: SnapshotFile) -> Any:
    """Open one snapshot file (a seam for tests that check which files are opened)."""
    return open_file(f)


def _read_ahead(batches: Iterator[pa.RecordBatch], depth: int
                ) -> Generator[pa.RecordBatch, None, None]:
    """``batches``, read by a thread up to ``depth`` batches ahead of the caller (its errors
    raised here, in order); stopping early stops the thread."""
    queue: Queue[pa.RecordBatch | BaseException | None] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: pa.RecordBatch | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.05)
                return True
            except Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
        except BaseException as exc:  # handed to the caller, raised there
            put(exc)
            return
        put(None)

    thread = threading.Thread(target=read, name="streamfeat-snapshot-read", daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def iter_files(
    files: Sequence[SnapshotFile], *, batch_rows: int = 50_000
) -> Iterator[RecordBatch]:
    """Records of ``files`` (one partition, in offset order) in batches of up to ``batch_rows``.

    A record at or below an offset already yielded is skipped (overlapping files).
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    next_offset = -1
    out: RecordBatch | None = None
    for f in files:
        if f.last_offset < next_offset:
            continue  # wholly covered by files already read
        try:
            pf = _open(f)
            rekeyed = "origin_offset" in pf.schema_arrow.names
            columns = [*_COLUMNS, *_ORIGIN_COLUMNS] if rekeyed else _COLUMNS
            reading = pf.iter_batches(batch_size=min(batch_rows, _CHUNK_ROWS), columns=columns)
            with closing(_read_ahead(reading, _READ_AHEAD)) as batches:
                for batch in batches:
                    origins = (Origins(batch.column(4).to_pylist(),
                                       batch.column(5).to_pylist()) if rekeyed else None)
                    got = RecordBatch(f.partition, batch.column(0).to_pylist(),
                                      batch.column(1).to_pylist(), batch.column(2).to_pylist(),
                                      batch.column(3).to_pylist(), origins)
                    got = got.since(next_offset)  # overlapping files
                    if not got:
                        continue
                    next_offset = got.offsets[-1] + 1
                    if out is None:
                        out = got
                    else:
                        out.extend(got)
                    while len(out) >= batch_rows:
                        yield out[:batch_rows]
                        out = out[batch_rows:]
        except (OSError, pa.ArrowException) as exc:
            raise StateError(
                f"cannot read snapshot file {f.path}: {exc}; restore it or delete it and replay "
                "the partition from Kafka"
            ) from exc
    if out:
        yield out


def iter_partition(
    snapshot_dir: SnapshotLocation,
    topic: str,
    partition: int,
    *,
    date_from: DateLike | None = None,
    date_to: DateLike | None = None,
    batch_rows: int = 50_000,
) -> Iterator[RecordBatch]:
    """Records of one partition in offset order, from the files of the dates asked for.

    Only the folders of those dates and of this partition are listed, and only
    their files are opened. Duplicated or overlapping records are skipped.
    """
    files = snapshot_files(snapshot_dir, topic, partition, date_from=date_from, date_to=date_to)
    return iter_files(files, batch_rows=batch_rows)
