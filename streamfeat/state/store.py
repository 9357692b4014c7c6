"""RocksDB (rocksdict) store of one partition's window state.

The last processed offset is written in the same atomic write batch as the state it
produced, so after a crash the state and the resume point always agree: nothing is lost
and nothing is counted twice.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from streamfeat.errors import StateError

__all__ = ["Committed", "PartitionStore"]

_OFFSET = b"\x00offset"
_META = b"\x00meta"
_ORIGINS = b"\x00origins"
_ENTITY = b"e:"
_FORMAT = b"\x00format"
_FORMAT_VERSION = b"1"
_WRITE_BUFFER_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Committed:
    """What a partition's store says on open: the next offset to read and the operator meta."""

    next_offset: int | None
    meta: bytes | None
    origins: bytes | None = None
    """For a re-keyed stream: the highest source offset seen per source partition."""


class PartitionStore:
    """State of one topology on one partition, under ``{state_dir}/{topology}/{topic}-{p}``."""

    def __init__(
        self, state_dir: str | Path, topology: str, topic: str, partition: int,
        *, lock_wait_s: float = 30.0,
    ) -> None:
        self.path = Path(state_dir) / topology / f"{topic}-{partition}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # Small memtables: RocksDB's default (64 MiB, two of them per store) made a worker's
        # memory grow with the events processed until each partition's memtables were full.
        options.set_write_buffer_size(_WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(2)
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

    def committed(self) -> Committed:
        raw = self._db.get(_OFFSET)
        next_offset = None if raw is None else struct.unpack(">q", raw)[0]
        return Committed(next_offset, self._db.get(_META), self._db.get(_ORIGINS))

    def entities(self) -> Iterator[tuple[str, bytes]]:
        it = self._db.iter()
        it.seek(_ENTITY)
        while it.valid():
            key = it.key()
            if not key.startswith(_ENTITY):
                break
            yield key[len(_ENTITY):].decode(), it.value()
            it.next()

    def commit(self, next_offset: int, meta: bytes, entities: list[tuple[str, bytes]],
               deleted: Sequence[str] = (), *, origins: bytes | None = None) -> None:
        """Atomically store changed entity states, delete those of ``deleted`` (left with no
        state), and store the operator meta, the resume offset and (re-keyed streams) the
        source offsets seen."""
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
        keys = list(self._db.keys())
        batch = WriteBatch(raw_mode=True)
        for key in keys:
            if key != _FORMAT:
                batch.delete(key)
        self._db.write(batch)

    def close(self) -> None:
        self._db.close()
