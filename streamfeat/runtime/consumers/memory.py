"""An in-memory consumer over an in-memory log: the worker without a broker.

:class:`MemoryLog` holds topics as lists of records per partition; :class:`MemoryConsumer`
is the one member of its group and follows every rule of
:class:`~streamfeat.runtime.consumers.GroupConsumer`: the callbacks run on the polling
thread, each assigned partition is read from the offset ``on_assign`` answers, batches come
a partition at a time in offset order. Unit tests drive the worker core with it to check
the order of its effects, crashes included; it is also a way to embed the worker core over
records that do not come from Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streamfeat.records import Origins, RawRecord, RecordBatch
from streamfeat.runtime.consumers.base import TP, OnAssign, OnRevoke

__all__ = ["MemoryConsumer", "MemoryLog"]


class MemoryLog:
    """Topics in memory: records per partition, in offset order, and a group's offsets."""

    def __init__(self) -> None:
        self.records: dict[TP, list[RawRecord]] = {}
        self.origins: dict[TP, list[tuple[int, int]]] = {}  # re-keyed topics only
        self.committed: dict[TP, int] = {}

    def create(self, topic: str, partitions: int) -> None:
        for p in range(partitions):
            self.records.setdefault((topic, p), [])

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
               kafka_ts: int, *, origin: tuple[int, int] | None = None) -> int:
        """Append one record (of a re-keyed topic: with its origin); returns its offset."""
        log = self.records.setdefault((topic, partition), [])
        offset = len(log)
        log.append(RawRecord(partition, offset, kafka_ts, key, value))
        if origin is not None:
            self.origins.setdefault((topic, partition), []).append(origin)
        return offset

    def partitions(self, topic: str) -> list[int]:
        return sorted(p for t, p in self.records if t == topic)

    def topics(self) -> set[str]:
        return {t for t, _p in self.records}


class MemoryConsumer:
    """The only member of a group over a :class:`MemoryLog`; gets every partition."""

    def __init__(self, log: MemoryLog) -> None:
        self.log = log
        self._topics: list[str] = []
        self._on_assign: OnAssign | None = None
        self._on_revoke: OnRevoke | None = None
        self._positions: dict[TP, int] = {}
        self._assigned = False
        self.closed = False
        self.unreachable: BaseException | None = None
        """Set to make :meth:`probe` raise it (a broker outage, for health tests)."""

    def subscribe(self, topics: Sequence[str], on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        self._topics = list(topics)
        self._on_assign, self._on_revoke = on_assign, on_revoke

    def poll(self, max_records: int, timeout_s: float) -> dict[TP, RecordBatch]:
        if self._on_assign is None:
            raise RuntimeError("poll() before subscribe()")
        if not self._assigned:  # the assignment is answered on the polling thread
            self._assigned = True
            tps = [(t, p) for t in self._topics for p in self.log.partitions(t)]
            starts = self._on_assign(tps)
            self._positions = {tp: max(0, starts.get(tp, 0)) for tp in tps}
        out: dict[TP, RecordBatch] = {}
        room = max_records
        for tp, position in sorted(self._positions.items()):
            if room <= 0:
                break
            run = self.log.records[tp][position:position + room]
            if run:
                batch = RecordBatch.of(run, tp[1])
                origins = self.log.origins.get(tp)
                if origins is not None:
                    taken = origins[position:position + len(run)]
                    batch.origins = Origins([p for p, _o in taken], [o for _p, o in taken])
                out[tp] = batch
                self._positions[tp] = position + len(run)
                room -= len(run)
        return out

    def commit(self, offsets: Mapping[TP, int]) -> None:
        self.log.committed.update(offsets)

    def committed(self, partitions: Sequence[TP]) -> dict[TP, int]:
        return {tp: self.log.committed.get(tp, -1001) for tp in partitions}

    def watermarks(self, tp: TP, *, cached: bool = False) -> tuple[int, int]:
        return 0, len(self.log.records.get(tp, []))

    def partitions(self, topic: str) -> list[int]:
        return self.log.partitions(topic)

    def probe(self, timeout_s: float) -> None:
        if self.unreachable is not None:
            raise self.unreachable

    def close(self) -> None:
        if self._assigned and self._on_revoke is not None and not self.closed:
            self._on_revoke(sorted(self._positions))
        self.closed = True
