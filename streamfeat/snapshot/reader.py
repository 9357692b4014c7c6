"""Read snapshot files back, one partition at a time, in offset order.

Pruning is by directory name only: the date directories of the topic are listed, those
outside ``[date_from, date_to]`` are skipped without looking inside, and in the others
only ``partition=N`` is entered; only the files found there are opened. Files are read
in offset order; a record at or below an offset already yielded (overlapping or
duplicated files, e.g. copied by hand) is skipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date as Date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streamfeat.errors import ConfigError, StateError
from streamfeat.records import Origins, RecordBatch
from streamfeat.snapshot.writer import parse_file_name

__all__ = [
    "DateLike",
    "SnapshotFile",
    "iter_files",
    "iter_partition",
    "parse_date",
    "partitions",
    "snapshot_files",
]

DateLike = str | Date
_DATE_DIR = re.compile(r"\Adate=(\d{4}-\d{2}-\d{2})\Z")
_PART_DIR = re.compile(r"\Apartition=(\d+)\Z")
_COLUMNS = ["offset", "kafka_ts", "key", "value"]
_ORIGIN_COLUMNS = ["origin_partition", "origin_offset"]


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """One snapshot file: where it is and the offsets its name says it holds."""

    path: Path
    date: str
    partition: int
    first_offset: int
    last_offset: int


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


def _dates(root: Path, date_from: str | None, date_to: str | None) -> list[str]:
    try:
        names = [entry.name for entry in os.scandir(root) if entry.is_dir()]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StateError(f"cannot list snapshots in {root}: {exc}; check --snapshot-dir") from exc
    out = []
    for name in names:
        m = _DATE_DIR.match(name)
        if m is None:
            continue
        d = m[1]
        if (date_from is None or d >= date_from) and (date_to is None or d <= date_to):
            out.append(d)
    return sorted(out)


def partitions(snapshot_dir: str | os.PathLike[str], topic: str) -> list[int]:
    """Partitions that have snapshot directories under ``{snapshot_dir}/{topic}``."""
    root = Path(snapshot_dir) / topic
    found: set[int] = set()
    for d in _dates(root, None, None):
        for entry in os.scandir(root / f"date={d}"):
            m = _PART_DIR.match(entry.name)
            if m is not None and entry.is_dir():
                found.add(int(m[1]))
    return sorted(found)


def snapshot_files(
    snapshot_dir: str | os.PathLike[str],
    topic: str,
    partition: int,
    *,
    date_from: DateLike | None = None,
    date_to: DateLike | None = None,
) -> list[SnapshotFile]:
    """The files of one partition within the dates (inclusive), in offset order."""
    root = Path(snapshot_dir) / topic
    lo, hi = parse_date(date_from, "--from"), parse_date(date_to, "--to")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"--from {lo} is after --to {hi}; swap them")
    files: list[SnapshotFile] = []
    for d in _dates(root, lo, hi):
        pdir = root / f"date={d}" / f"partition={partition}"
        try:
            entries = list(os.scandir(pdir))
        except FileNotFoundError:
            continue
        for entry in entries:
            offsets = parse_file_name(entry.name)
            if offsets is not None:
                files.append(SnapshotFile(Path(entry.path), d, partition, *offsets))
    files.sort(key=lambda f: (f.first_offset, f.last_offset))
    return files


def _open(path: Path) -> Any:
    """Open one snapshot file (a seam for tests that check which files are opened)."""
    return pq.ParquetFile(path)


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
            pf = _open(f.path)
            rekeyed = "origin_offset" in pf.schema_arrow.names
            columns = [*_COLUMNS, *_ORIGIN_COLUMNS] if rekeyed else _COLUMNS
            batches = pf.iter_batches(batch_size=batch_rows, columns=columns)
            for batch in batches:
                origins = (Origins(batch.column(4).to_pylist(), batch.column(5).to_pylist())
                           if rekeyed else None)
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
    snapshot_dir: str | os.PathLike[str],
    topic: str,
    partition: int,
    *,
    date_from: DateLike | None = None,
    date_to: DateLike | None = None,
    batch_rows: int = 50_000,
) -> Iterator[RecordBatch]:
    """Records of one partition in offset order, from the files of the dates asked for.

    Only the directories of those dates and of this partition are entered, and only
    their files are opened. Duplicated or overlapping records are skipped.
    """
    files = snapshot_files(snapshot_dir, topic, partition, date_from=date_from, date_to=date_to)
    return iter_files(files, batch_rows=batch_rows)
