"""In-memory stand-ins for Redis and the dead-letter topic, journaling every effect.

They are what the worker core's unit tests run against (with
:class:`~streamfeat.runtime.consumers.MemoryConsumer`): a :class:`Journal` records, in order,
each acknowledged sink write, each delivered dead letter and each state commit, and can
raise :class:`Crash` just before the n-th effect, as a process killed between two effects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamfeat.runtime.consumers import TP
from streamfeat.runtime.deadletters import Letter, SentKey
from streamfeat.sinks import UpdateBatch, WriteResult, parse_version


class Crash(BaseException):
    """The process dies here (raised before an effect happens)."""


@dataclass
class Journal:
    """Effects in the order they happened; ``crash_at``: die before effect number n (1-based)."""

    crash_at: int | None = None
    effects: list[tuple[Any, ...]] = field(default_factory=list)
    count: int = 0
    checks: list[Callable[[tuple[Any, ...]], None]] = field(default_factory=list)

    def effect(self, *entry: Any) -> None:
        self.count += 1
        if self.crash_at is not None and self.count == self.crash_at:
            raise Crash(f"crash before effect {self.count}: {entry}")
        for check in self.checks:
            check(entry)
        self.effects.append(entry)


class MemoryRedis:
    """Entity hashes with Redis's compare-and-set rule: a write applies only if newer."""

    def __init__(self, journal: Journal, *, delay_s: float = 0.0) -> None:
        self.journal = journal
        self.delay_s = delay_s
        self.hashes: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        self.acked: dict[int, int] = {}  # partition -> highest offset of an acknowledged write
        self.partial: dict[str, dict[str, int]] = {}  # topology -> {field@partition: since}

    def sink(self, topology: str) -> MemorySink:
        return MemorySink(self, topology)


class MemorySink:
    def __init__(self, redis: MemoryRedis, topology: str) -> None:
        self.redis, self.topology = redis, topology

    def write(self, updates: Sequence[UpdateBatch]) -> WriteResult:
        import time

        time.sleep(self.redis.delay_s)  # a write takes a while: later ones queue behind it
        applied = stale = 0
        for batch in updates:
            v = parse_version(batch.version)
            self.redis.journal.effect("redis", self.topology, v[1], v[2])
            for entity, row in zip(batch.entity_ids, zip(*batch.columns, strict=True),
                                   strict=True):
                key = f"{self.topology}:{entity}"
                held = self.redis.hashes.get(key)
                if held is not None and (held[0] > v or (held[0] == v and not batch.refresh)):
                    stale += 1
                    continue
                # Redis's rule: named fields set (None: deleted), others left, retired ones gone
                values = {} if held is None else dict(held[1])
                values.update(zip(batch.names, row, strict=True))
                values["_asof"] = batch.asof_ms
                for name in [*batch.deletes, *(n for n, x in values.items() if x is None)]:
                    values.pop(name, None)
                self.redis.hashes[key] = (v, values)
                applied += 1
            self.redis.acked[v[1]] = max(self.redis.acked.get(v[1], -1), v[2])
        return WriteResult(applied=applied, stale=stale)

    def partition_entities(self, partition: int) -> Iterator[list[str]]:
        prefix = f"{self.topology}:"
        yield [k[len(prefix):] for k, (v, _values) in self.redis.hashes.items()
               if k.startswith(prefix) and v[1] == partition]

    def mark_history(self, partition: int, recomputed: Sequence[str],
                     partial: Mapping[str, int]) -> None:
        marks = self.redis.partial.setdefault(self.topology, {})
        for name in recomputed:
            marks.pop(f"{name}@{partition}", None)
        marks.update({f"{name}@{partition}": since for name, since in partial.items()})

    def stored_version(self, entity_id: str) -> tuple[int, int, int] | None:
        held = self.redis.hashes.get(f"{self.topology}:{entity_id}")
        return None if held is None else held[0]

    def close(self) -> None:
        pass


class MemoryDeadLetters:
    """A dead-letter topic in memory: letters are delivered (acknowledged) when handed over."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.letters: list[tuple[str, str, int, int, str]] = []  # topology, topic, p, offset, kind
        self.origins: list[tuple[int, int] | None] = []  # re-keyed: the source record

    def prepare(self, topics: Sequence[str]) -> None:
        pass

    def deliver(self, letters: Sequence[Letter],
                on_wait: Callable[[int, BaseException], None]) -> list[Letter]:
        for topic, d in letters:
            self.journal.effect("dlq", d.topology, d.record.partition, d.record.offset)
            self.letters.append((d.topology, topic, d.record.partition, d.record.offset, d.kind))
            self.origins.append(d.origin)
        return []

    def sent(self, partitions: Sequence[TP]) -> dict[SentKey, int]:
        found: dict[SentKey, int] = {}
        wanted = set(partitions)
        for topology, topic, p, offset, _kind in self.letters:
            if (topic, p) in wanted:
                key = (topology, topic, p)
                found[key] = max(found.get(key, -1), offset)
        return found

    def close(self) -> None:
        pass
