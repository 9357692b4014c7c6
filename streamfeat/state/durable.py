"""State that survives its host: checkpoints of each partition store in an object store.

Contract section 11: a partition's window state, stream time and next offset are durable
outside the host, consistent with each other, at every commit, so that a worker taking the
partition over on another host restores them and never needs a source record older than
the restored offset.

Layout, under the store's ``_checkpoints/{store name}/`` (store name
``{topology}/{topic}-{partition}``, the local RocksDB's): one object per commit,
``{next_offset:020d}-delta.ckpt``, holding the entities changed since the previous commit
(their whole state, not a difference), those deleted, the operator meta, the origins of a
re-keyed stream and the next offset; and from time to time ``{next_offset:020d}-base.ckpt``,
the whole state. Restoring reads the latest base and the deltas after it, in offset order.
A base of a large state is written a part at a time (``{next_offset:020d}-base-{k:05d}.part``,
at most ``_PART_ENTITIES`` entities each, read from RocksDB as they are written, so that
writing it never holds the whole state in memory), then the ``-base.ckpt`` that names
them: a base without it was never finished and is not read.
Each object is written whole or not at all (:class:`~streamfeat.storage.ObjectStore`), and
before the local commit it mirrors, so the durable state is never behind what the local
state says was done.

Objects are msgpack, zstd-compressed, after a magic line and their uncompressed size. A
base is written when the deltas since the last one add up to more than it (or 64 MiB),
then older objects are deleted: storage stays within about twice the state, and a restore
reads at most about twice the state.

Two writers of one partition (a zombie that has not noticed its partition moved) write the
same states: processing is deterministic, so any writer's state at an offset is the state
at that offset, and applying deltas in offset order ends at the latest one.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
from rocksdict import WriteBatch

from streamfeat.errors import StateError
from streamfeat.state.store import PartitionStore
from streamfeat.storage import ObjectStore

__all__ = ["Checkpoints", "DurableStore"]

log = logging.getLogger("streamfeat.state")

_FORMAT = 1
_MAGIC = b"SFCKPT1\n"
_BASE_MIN_BYTES = 64 * 1024 * 1024
_RESTORE_CHUNK = 20_000
_PART_ENTITIES = 50_000  # entities per part of a base
_ENTITY = b"e:"


@dataclass(frozen=True)
class _Checkpoint:
    """One object of a partition's chain."""

    path: str
    offset: int
    base: bool


class Checkpoints:
    """The checkpoint chains of every partition store, in one object store."""

    def __init__(self, store: ObjectStore, prefix: str = "_checkpoints") -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self._codec = pa.Codec("zstd")

    def _folder(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def chain(self, name: str) -> list[_Checkpoint]:
        """The objects a restore of store ``name`` reads: the latest base and the deltas
        after it, in offset order."""
        found = self._all(name)
        found.sort(key=lambda c: (c.offset, not c.base))
        bases = [c for c in found if c.base]
        if bases:
            start = bases[-1].offset
            return [bases[-1], *(c for c in found if not c.base and c.offset > start)]
        return [c for c in found if not c.base]

    def write(self, name: str, next_offset: int, obj: dict[str, Any], *, base: bool,
              part: int | None = None) -> int:
        """Write one object of ``name``'s chain (``part``: part ``k`` of a base); returns
        its size in bytes."""
        raw = msgspec.msgpack.encode({"v": _FORMAT, **obj})
        data = _MAGIC + struct.pack(">Q", len(raw)) + self._codec.compress(raw, asbytes=True)
        self.store.put(self._path(name, next_offset, base, part), data)
        return len(data)

    def _path(self, name: str, next_offset: int, base: bool, part: int | None = None) -> str:
        if part is not None:
            return f"{self._folder(name)}/{next_offset:020d}-base-{part:05d}.part"
        return f"{self._folder(name)}/{next_offset:020d}-{'base' if base else 'delta'}.ckpt"

    def parts(self, checkpoint: _Checkpoint, count: int) -> list[_Checkpoint]:
        """The ``count`` parts a base names."""
        name = checkpoint.path.rsplit("/", 1)[0]
        return [_Checkpoint(f"{name}/{checkpoint.offset:020d}-base-{k:05d}.part",
                            checkpoint.offset, True) for k in range(count)]

    def read(self, checkpoint: _Checkpoint) -> tuple[dict[str, Any], int]:
        """One object's content and its size in bytes."""
        data = self.store.get(checkpoint.path)
        try:
            if not data.startswith(_MAGIC):
                raise ValueError("not a streamfeat checkpoint")
            head = len(_MAGIC) + 8
            (size,) = struct.unpack(">Q", data[len(_MAGIC):head])
            if size > 1000 * len(data) + (1 << 20):
                raise ValueError(f"an uncompressed size of {size} bytes cannot be right")
            raw = self._codec.decompress(data[head:], decompressed_size=size, asbytes=True)
            obj = msgspec.msgpack.decode(raw)
        except (pa.ArrowException, msgspec.DecodeError, OSError, struct.error,
                ValueError) as exc:
            raise StateError(
                f"checkpoint {checkpoint.path} in {self.store.url} is corrupt ({exc}); delete "
                "it (the restore then stops at the object before it) or the whole folder "
                "(the partition is rebuilt from the topic)") from exc
        if not isinstance(obj, dict) or obj.get("v") != _FORMAT:
            raise StateError(f"checkpoint {checkpoint.path} has an unknown format; upgrade "
                             "streamfeat or delete the folder to rebuild from the topic")
        return obj, len(data)

    def prune(self, name: str, upto: int) -> None:
        """Delete the objects of ``name`` made obsolete by a base at ``upto`` (parts of
        older bases, finished or not, too)."""
        old = []
        for path in self.store.list(self._folder(name)):
            c = _checkpoint_of(path)
            if c is not None and (c.offset < upto or (c.offset == upto and not c.base)):
                old.append(path)
            stem = path.rsplit("/", 1)[-1]
            if stem.endswith(".part") and stem[:20].isdigit() and int(stem[:20]) < upto:
                old.append(path)
        self.store.delete(old)

    def _all(self, name: str) -> list[_Checkpoint]:
        """Every checkpoint object of ``name`` (``{offset:020d}-base|delta.ckpt``)."""
        found = (_checkpoint_of(path) for path in self.store.list(self._folder(name)))
        return [c for c in found if c is not None]


def _checkpoint_of(path: str) -> _Checkpoint | None:
    """The checkpoint a ``{offset:020d}-base|delta.ckpt`` object is (``None``: another)."""
    stem = path.rsplit("/", 1)[-1]
    if not stem.endswith(".ckpt"):
        return None
    offset, _dash, kind = stem.removesuffix(".ckpt").partition("-")
    if offset.isdigit() and kind in ("base", "delta"):
        return _Checkpoint(path, int(offset), kind == "base")
    return None


class DurableStore(PartitionStore):
    """A :class:`PartitionStore` whose every commit is first made durable in
    :class:`Checkpoints`; opened behind them (a new host, or a crash between the two), it
    restores the local RocksDB from them first."""

    def __init__(self, state_dir: str | Path, topology: str, topic: str, partition: int,
                 *, checkpoints: Checkpoints, lock_wait_s: float = 30.0) -> None:
        super().__init__(state_dir, topology, topic, partition, lock_wait_s=lock_wait_s)
        self.checkpoints = checkpoints
        self.name = f"{topology}/{topic}-{partition}"
        self.restored_bytes = 0
        self.restore_s = 0.0
        self.durable_offset: int | None = None
        self.durable_at: float | None = None
        """Wall clock of the last durable write (or of the restore)."""
        self._base_bytes = 0
        self._since_base = 0
        self._open_durably()

    # -- opening: restore, or start the chain ---------------------------------------

    def _open_durably(self) -> None:
        chain = self.checkpoints.chain(self.name)
        local = self.committed().next_offset
        durable = chain[-1].offset if chain else None
        if durable is not None and (local is None or local < durable):
            self._restore(chain)
        elif local is not None and (durable is None or local > durable or not any(
                c.base for c in chain)):
            # state kept only here so far (durability just turned on, or the store emptied)
            self._write_base()
        else:
            self.durable_offset = durable
            self.durable_at = time.time()
            self._base_bytes = _BASE_MIN_BYTES

    def _restore(self, chain: list[_Checkpoint]) -> None:
        started = time.perf_counter()
        log.info("%s: restoring from %s: %d objects up to offset %d", self.name,
                 self.checkpoints.store.url, len(chain), chain[-1].offset)
        self.clear()  # no offset until the last object is in: a kill restarts the restore
        size = 0
        last: dict[str, Any] | None = None
        for checkpoint in chain:
            obj, n = self.checkpoints.read(checkpoint)
            if checkpoint.base:
                for part in self.checkpoints.parts(checkpoint, int(obj.get("parts", 0))):
                    content, k = self.checkpoints.read(part)
                    self._apply(content["entities"], [])
                    n += k
            size += n
            if checkpoint.base:
                self._base_bytes = n
            else:
                self._since_base += n
            self._apply(obj["entities"], obj.get("deleted", []))
            last = obj
        if last is None:
            return
        super().commit(int(last["next_offset"]), last["meta"], [], (),
                       origins=last.get("origins"))
        self.restored_bytes = size
        self.restore_s = time.perf_counter() - started
        self.durable_offset = int(last["next_offset"])
        self.durable_at = time.time()
        log.info("%s: restored from %s up to offset %d (%d objects, %.1f MB) in %.1f s",
                 self.name, self.checkpoints.store.url, self.durable_offset, len(chain),
                 size / 1e6, self.restore_s)

    def _apply(self, entities: Sequence[Sequence[Any]], deleted: Sequence[str]) -> None:
        for i in range(0, max(len(entities), len(deleted)), _RESTORE_CHUNK):
            batch = WriteBatch(raw_mode=True)
            for entity, data in entities[i:i + _RESTORE_CHUNK]:
                batch.put(_ENTITY + str(entity).encode(), bytes(data))
            for entity in deleted[i:i + _RESTORE_CHUNK]:
                batch.delete(_ENTITY + str(entity).encode())
            self._db.write(batch)

    def _write_base(self) -> None:
        committed = self.committed()
        if committed.next_offset is None or committed.meta is None:
            return
        offset = committed.next_offset
        size = parts = 0
        chunk: list[list[Any]] = []
        for entity, data in self.entities():  # a part at a time: never the whole state
            chunk.append([entity, data])
            if len(chunk) >= _PART_ENTITIES:
                size += self.checkpoints.write(self.name, offset, {"entities": chunk},
                                               base=True, part=parts)
                parts += 1
                chunk = []
        self._base_bytes = size + self.checkpoints.write(self.name, offset, {
            "next_offset": offset, "meta": committed.meta, "parts": parts,
            "origins": committed.origins, "entities": chunk, "deleted": []}, base=True)
        self._since_base = 0
        self.checkpoints.prune(self.name, committed.next_offset)
        self.durable_offset = committed.next_offset
        self.durable_at = time.time()

    # -- committing ----------------------------------------------------------------------

    def commit(self, next_offset: int, meta: bytes, entities: list[tuple[str, bytes]],
               deleted: Sequence[str] = (), *, origins: bytes | None = None) -> None:
        """Make the commit durable, then store it locally (a crash between the two: the next
        open finds the checkpoints ahead and restores from them)."""
        try:
            self._since_base += self.checkpoints.write(self.name, next_offset, {
                "next_offset": next_offset, "meta": meta, "origins": origins,
                "entities": entities, "deleted": list(deleted)},  # (tuples: msgpack arrays)
                base=False)
        except OSError as exc:
            raise StateError(
                f"cannot write the checkpoint of {self.name} to "
                f"{self.checkpoints.store.url}: {exc}") from exc
        super().commit(next_offset, meta, entities, deleted, origins=origins)
        self.durable_offset = next_offset
        self.durable_at = time.time()
        if self._since_base > max(self._base_bytes, _BASE_MIN_BYTES):
            self._write_base()
