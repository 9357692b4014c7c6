"""What every offline command starts from: a topology, and the snapshots of its source.

The commands accept a loaded topology or a path to one, and refuse a snapshot directory
or a partition list that cannot be right with the same messages, so these checks live
here once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from streamfeat.errors import ConfigError
from streamfeat.snapshot import snapshot_store
from streamfeat.snapshot.reader import SnapshotFile
from streamfeat.storage import LocalStore
from streamfeat.topology import TopologyDef, load_topology

__all__ = [
    "TopologyLike",
    "planned_records",
    "resolve_topology",
    "select_partitions",
    "snapshot_root",
]

TopologyLike = TopologyDef | str | os.PathLike[str]


def resolve_topology(topology: TopologyLike) -> TopologyDef:
    """A loaded topology (a path is loaded and validated)."""
    if isinstance(topology, TopologyDef):
        return topology
    return load_topology(Path(topology))


def snapshot_root(snapshot_dir: str | os.PathLike[str]) -> str:
    """``snapshot_dir`` as text (a path or an object-store URL), once it is known to exist:
    a local directory, or a bucket that exists and these credentials may read (else a
    :class:`ConfigError` saying what to set)."""
    snap = os.fspath(snapshot_dir)
    store = snapshot_store(snap)
    if isinstance(store, LocalStore):
        if not store.root.is_dir():
            raise ConfigError(f"snapshot directory {snap!r} does not exist; pass --snapshot-dir")
        return snap
    return store.url


def select_partitions(
    wanted: Iterable[int] | None, found: list[int], snapshot_dir: str, topic: str
) -> list[int]:
    """The partitions to read: ``wanted`` (sorted, unique), or every one ``found``.

    A wanted partition without snapshots is kept (it replays nothing) unless the topic
    has no snapshots at all, which means the directory or the worker's flag is wrong.
    """
    if wanted is None:
        return found
    out = sorted(set(wanted))
    if any(p < 0 for p in out):
        raise ConfigError(f"partitions must be >= 0, got {out}")
    missing = [p for p in out if p not in found]
    if missing and not found:
        raise ConfigError(
            f"no snapshots of topic {topic!r} under {snapshot_dir}; run the worker with "
            "--snapshot-dir (or pass the right --snapshot-dir)"
        )
    return out


def planned_records(files: Iterable[SnapshotFile]) -> int:
    """How many records reading ``files`` (one partition, in offset order) goes through, as
    their names say: overlaps counted once; gaps in the offsets (compacted or transactional
    topics) make it an upper bound."""
    total = 0
    next_offset = 0
    for f in files:
        first = max(f.first_offset, next_offset)
        if f.last_offset >= first:
            total += f.last_offset - first + 1
            next_offset = f.last_offset + 1
    return total
