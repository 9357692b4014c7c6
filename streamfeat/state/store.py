"""RocksDB (rocksdict) store of one partition's window state.

The last processed offset is written in the same atomic write batch as the state it
produced, so after a crash the state and the resume point always agree: nothing is lost
and nothing is counted twice.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    RdictIter,
    WriteBatch,
)

from streamfeat.errors import StateError

__all__ = ["Committed", "PartitionStore"]

_OFFSET = b"\x00offset"
_META = b"\x00meta"
_ORIGINS = b"\x00origins"
_ENTITY = b"e:"
_TIMER = b"t:"  # t:{time, int64 big-endian}{entity}: when an evicted entity is next due
_TIMER_END = b"t;"
_FORMAT = b"\x00format"
_FORMAT_VERSION = b"1"
_WRITE_BUFFER_BYTES = 8 * 1024 * 1024
_SECONDARY_ATTEMPTS = 5
_BLOCK_CACHE_BYTES = 32 * 1024 * 1024
_BLOCK_CACHE: Cache | None = None


def _block_cache() -> Cache:
    """One block cache for every store of the process (RocksDB gives each its own 32 MiB:
    128 MiB for a worker holding four partitions)."""
    global _BLOCK_CACHE  # one per process, made on first use
    if _BLOCK_CACHE is None:
        _BLOCK_CACHE = Cache(_BLOCK_CACHE_BYTES)
    return _BLOCK_CACHE


@dataclass(frozen=True, slots=True)
class Committed:
    """What a partition's store says on open: the next offset to read and the operator meta."""

    next_offset: int | None
    meta: bytes | None
    origins: bytes | None = None
    """For a re-keyed stream: the highest source offset seen per source partition."""


class PartitionStore:
    """State of one topology on one partition, under ``{state_dir}/{topology}/{topic}-{p}``.

    ``read_only``: open an existing store to read it while a worker may hold it open
    (``streamfeat plan``); :meth:`commit` and :meth:`clear` then refuse.
    """

    def __init__(
        self, state_dir: str | Path, topology: str, topic: str, partition: int,
        *, lock_wait_s: float = 30.0, read_only: bool = False,
    ) -> None:
        self.path = Path(state_dir) / topology / f"{topic}-{partition}"
        self.read_only = read_only
        self._secondary: Path | None = None
        if read_only:
            self._db = self._open_secondary()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # Small memtables: RocksDB's default (64 MiB, two of them per store) made a worker's
        # memory grow with the events processed until each partition's memtables were full.
        options.set_write_buffer_size(_WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(2)
        # Point reads of entities that were never stored (a new entity, with a bounded
        # working set) stop at a Bloom filter instead of reading blocks.
        table = BlockBasedOptions()
        table.set_bloom_filter(10, False)
        table.set_block_cache(_block_cache())
        options.set_block_based_table_factory(table)
        # During a rebalance between worker processes of one host, the previous owner may
        # still be closing the store: wait for its lock a little before giving up.
        deadline = time.monotonic() + lock_wait_s
        while True:
            try:
                self._db = Rdict(str(self.path), options=options)
                break
            except Exception as exc:  # rocksdict raises plain Exception subclasses
                if "lock" in str(exc).lower() and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise StateError(
                    f"cannot open state at {self.path}: {exc}. Is a worker of another group "
                    "using the same --state-dir? Give each worker group its own --state-dir."
                ) from exc
        stored = self._db.get(_FORMAT)
        if stored is None:
            self._db[_FORMAT] = _FORMAT_VERSION
        elif stored != _FORMAT_VERSION:
            raise StateError(
                f"state at {self.path} has format {stored!r}, this streamfeat writes "
                f"{_FORMAT_VERSION!r}; delete the directory to rebuild it from the source topic"
            )

    def _open_secondary(self) -> Rdict:
        """Open an existing store to read only, whether or not a worker has it open.

        A RocksDB *secondary* instance: it takes no lock and writes nothing in the store's
        directory (its own log goes to a temporary directory, removed on :meth:`close`). A
        plain read-only open failed now and then while the worker compacted (a file deleted
        while it opened: 1 open in 300 against a busy writer, none of 300 secondary opens);
        a secondary open that fails all the same is tried again a few times.
        """
        if not (self.path / "CURRENT").is_file():
            raise StateError(f"no state at {self.path}: not a RocksDB directory")
        options = Options(raw_mode=True)
        options.create_if_missing(False)
        options.set_max_open_files(-1)  # required of a secondary instance
        for attempt in range(_SECONDARY_ATTEMPTS):
            self._secondary = Path(tempfile.mkdtemp(prefix="streamfeat-state-reader-"))
            try:
                db = Rdict(str(self.path), options=options,
                           access_type=AccessType.secondary(str(self._secondary)))
            except Exception as exc:  # rocksdict raises plain Exception subclasses
                shutil.rmtree(self._secondary, ignore_errors=True)
                self._secondary = None
                if attempt + 1 < _SECONDARY_ATTEMPTS:
                    time.sleep(0.05)
                    continue
                raise StateError(f"cannot read the state at {self.path}: {exc}") from exc
            stored = db.get(_FORMAT)
            if stored is not None and stored != _FORMAT_VERSION:
                db.close()
                shutil.rmtree(self._secondary, ignore_errors=True)
                self._secondary = None
                raise StateError(
                    f"state at {self.path} has format {stored!r}, this streamfeat reads "
                    f"{_FORMAT_VERSION!r}; a worker would ask for it to be rebuilt")
            return db
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def partitions(state_dir: str | Path, topology: str, topic: str) -> list[int]:
        """The partitions of ``topic`` that have a store of ``topology`` under ``state_dir``."""
        root = Path(state_dir) / topology
        prefix = f"{topic}-"
        try:
            names = [p.name for p in root.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"cannot list the state in {root}: {exc}") from exc
        return sorted(int(n[len(prefix):]) for n in names
                      if n.startswith(prefix) and n[len(prefix):].isdigit())

    def committed(self) -> Committed:
        raw = self._db.get(_OFFSET)
        next_offset = None if raw is None else struct.unpack(">q", raw)[0]
        return Committed(next_offset, self._db.get(_META), self._db.get(_ORIGINS))

    def entities(self) -> Iterator[tuple[str, bytes]]:
        """Each stored entity's id and state, in key order."""
        return ((entity, it.value()) for entity, it in self._scan_entities())

    def entity_ids(self) -> Iterator[str]:
        """The stored entities' ids, in key order (their states are not read)."""
        return (entity for entity, _it in self._scan_entities())

    def _scan_entities(self) -> Iterator[tuple[str, RdictIter]]:
        """Each stored entity's id, with the iterator standing on its key."""
        it = self._db.iter()
        it.seek(_ENTITY)
        while it.valid():
            key = it.key()
            if not key.startswith(_ENTITY):
                break
            yield key[len(_ENTITY):].decode(), it
            it.next()

    def states(self, entities: Sequence[str]) -> list[bytes | None]:
        """The stored state of each of ``entities`` (``None`` for one not stored)."""
        if not entities:
            return []
        got = self._db.get([_ENTITY + e.encode() for e in entities])
        return list(got or ())

    # -- when entities held out of memory are next due (streamfeat.pipeline.cache) ------

    def add_timers(self, timers: Iterable[tuple[str, int]]) -> None:
        """Record that each entity is next due at its time (any number per entity)."""
        self._writable()
        batch = WriteBatch(raw_mode=True)
        pack = struct.Struct(">q").pack
        for entity, at in timers:
            batch.put(_TIMER + pack(at) + entity.encode(), b"")
        self._db.write(batch)

    def pop_timers(self, up_to: int) -> list[str]:
        """The entities of every timer at or before ``up_to``, those timers deleted."""
        self._writable()
        it = self._db.iter()
        it.seek(_TIMER)
        found: list[bytes] = []
        unpack = struct.Struct(">q").unpack_from
        while it.valid():
            key = it.key()
            if not key.startswith(_TIMER) or unpack(key, 2)[0] > up_to:
                break
            found.append(key)
            it.next()
        if not found:
            return []
        batch = WriteBatch(raw_mode=True)
        for key in found:
            batch.delete(key)
        self._db.write(batch)
        return [key[10:].decode() for key in found]

    def clear_timers(self) -> None:
        """Forget every timer (they are rebuilt from the entities' state)."""
        self._writable()
        self._db.delete_range(_TIMER, _TIMER_END)

    def commit(self, next_offset: int, meta: bytes, entities: list[tuple[str, bytes]],
               deleted: Sequence[str] = (), *, origins: bytes | None = None) -> None:
        """Atomically store changed entity states, delete those of ``deleted`` (left with no
        state), and store the operator meta, the resume offset and (re-keyed streams) the
        source offsets seen."""
        self._writable()
        batch = WriteBatch(raw_mode=True)
        for entity, data in entities:
            batch.put(_ENTITY + entity.encode(), data)
        for entity in deleted:
            batch.delete(_ENTITY + entity.encode())
        batch.put(_META, meta)
        if origins is not None:
            batch.put(_ORIGINS, origins)
        batch.put(_OFFSET, struct.pack(">q", next_offset))
        try:
            self._db.write(batch)
        except Exception as exc:
            raise StateError(f"cannot write state at {self.path}: {exc}") from exc

    def clear(self) -> None:
        """Forget everything (used when the state must be rebuilt from the source)."""
        self._writable()
        keys = list(self._db.keys())
        batch = WriteBatch(raw_mode=True)
        for key in keys:
            if key != _FORMAT:
                batch.delete(key)
        self._db.write(batch)

    def _writable(self) -> None:
        if self.read_only:
            raise StateError(f"the state at {self.path} was opened to read only")

    def close(self) -> None:
        self._db.close()
        if self._secondary is not None:
            shutil.rmtree(self._secondary, ignore_errors=True)
            self._secondary = None
