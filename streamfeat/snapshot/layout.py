"""Where snapshot files are: their names, their folders, and the store that holds them.

A snapshot location is a local directory or an object-store URL (``s3://bucket/prefix``,
contract section 11), opened as an :class:`~streamfeat.storage.ObjectStore`; the layout in it
is the same, ``{topic}/date=YYYY-MM-DD/partition=N/{first:020d}-{last:020d}.parquet``, so
workers on many hosts write one layout and the offline commands read it wherever it is.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from streamfeat.storage import LocalStore, ObjectStore, open_store

__all__ = [
    "SnapshotLocation",
    "date_folders",
    "file_name",
    "list_folders",
    "parse_file_name",
    "partition_dir",
    "partition_prefix",
    "snapshot_store",
]

SnapshotLocation = str | os.PathLike[str] | ObjectStore
"""``--snapshot-dir``: a path, a URL, or a store already open."""

_FILE_RE = re.compile(r"\A(\d{20})-(\d{20})\.parquet\Z")
DATE_DIR = re.compile(r"\Adate=(\d{4}-\d{2}-\d{2})\Z")
PART_DIR = re.compile(r"\Apartition=(\d+)\Z")
_LISTING_THREADS = 8


def file_name(first_offset: int, last_offset: int) -> str:
    """``{first:020d}-{last:020d}.parquet``: zero-padded so names sort as offsets do."""
    return f"{first_offset:020d}-{last_offset:020d}.parquet"


def parse_file_name(name: str) -> tuple[int, int] | None:
    """``(first_offset, last_offset)`` of a snapshot file name, ``None`` for anything else."""
    m = _FILE_RE.match(name)
    if m is None:
        return None
    return int(m[1]), int(m[2])


def partition_prefix(topic: str, date: str, partition: int) -> str:
    """``{topic}/date={date}/partition={partition}``: a partition's folder of one date."""
    return f"{topic}/date={date}/partition={partition}"


def partition_dir(snapshot_dir: str | os.PathLike[str], topic: str, date: str,
                  partition: int) -> Path:
    """``{snapshot_dir}/{topic}/date={date}/partition={partition}`` (a local directory)."""
    return Path(snapshot_dir) / partition_prefix(topic, date, partition)


@functools.lru_cache(maxsize=32)
def _remote(url: str) -> ObjectStore:
    return open_store(url)


def snapshot_store(location: SnapshotLocation) -> ObjectStore:
    """The store of a snapshot location; a URL's is opened (and checked) once per process."""
    if not isinstance(location, (str, os.PathLike)):
        return location
    text = os.fspath(location)
    if "://" in text and not text.lower().startswith("file://"):
        return _remote(text.rstrip("/"))
    return open_store(text)


def date_folders(store: ObjectStore, topic: str, date_from: str | None = None,
                 date_to: str | None = None) -> list[str]:
    """The dates (``YYYY-MM-DD``) with a folder under ``{topic}``, within the bounds, sorted."""
    out = []
    for name in store.folders(topic):
        m = DATE_DIR.match(name)
        if m is None:
            continue
        d = m[1]
        if (date_from is None or d >= date_from) and (date_to is None or d <= date_to):
            out.append(d)
    return sorted(out)


def list_folders(store: ObjectStore, prefixes: Sequence[str]) -> list[list[str]]:
    """``store.list`` of each prefix; an object store's are asked several at a time (one
    listing per date folder: a year of dates is hundreds of requests)."""
    if isinstance(store, LocalStore) or len(prefixes) < 2:
        return [store.list(p) for p in prefixes]
    with ThreadPoolExecutor(min(_LISTING_THREADS, len(prefixes)),
                            thread_name_prefix="streamfeat-listing") as pool:
        return list(pool.map(store.list, prefixes))
