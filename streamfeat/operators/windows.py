"""Window kinds: bucket arithmetic (:class:`Span`) and the per-event slots.

Every kind implements :class:`~streamfeat.operators.slots.Slot`; which kind a
feature-window gets is decided by the operator's plan:

- :class:`~streamfeat.operators.rings.MomentsRing`: sliding, hopping, tumbling and
  lifetime windows of the moments family (``count sum mean var stddev min max``),
  numpy tables for all entities (its own module).
- :class:`BucketSlot`: the same windows for the other families: per entity a
  dict ``bucket -> state``, expired buckets dropped.
- :class:`SessionSlot`: per entity the sessions that can still be current.
- :class:`ExactSlot`: ``hop: exact``: per entity the events ``(ts, seq, value)``
  that a query at or after stream time can still see.

The last three hold Python objects per entity and take a batch event by event
(in offset order); they share :class:`_PerEventSlot`. Queries are never earlier
than stream time (the operator enforces it), which is what lets every slot drop
what no such query can read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from streamfeat.errors import StateError
from streamfeat.operators.aggregations import (
    STATE_CLASSES,
    AggState,
    Family,
    empty_value,
    state_from_obj,
)
from streamfeat.operators.slots import NEVER, Batch
from streamfeat.topology.definitions import FeatureDef, WindowDef, WindowKind

__all__ = ["BucketSlot", "ExactSlot", "SessionSlot", "Span"]

I64 = npt.NDArray[np.int64]

_PER_ITEM_BYTES = 120
"""Estimated memory of one bucket, session or kept event of a per-event slot."""


@dataclass(frozen=True, slots=True)
class Span:
    """Bucket arithmetic of a bucketed window (sliding, hopping, tumbling, lifetime).

    Bucket ``b`` holds events with ``b*hop <= ts < (b+1)*hop`` (lifetime: one
    bucket ``0``). ``window(t)`` is the inclusive range of buckets read as of
    ``t`` (events are never after ``t``), ``keep_from(st)`` the lowest bucket any
    query at or after stream time ``st`` can read.
    """

    kind: WindowKind
    size: int
    hop: int
    final: bool

    @classmethod
    def of(cls, window: WindowDef) -> Span:
        if window.kind is WindowKind.LIFETIME:
            return cls(window.kind, 0, 0, False)
        size = int(window.size_ms or 0)
        if window.kind is WindowKind.TUMBLING:
            return cls(window.kind, size, size, window.emit_final)
        hop = window.hop_ms or size
        return cls(window.kind, size, int(hop), False)

    @property
    def ring(self) -> int:
        if self.hop == 0:
            return 1
        if self.kind is WindowKind.TUMBLING:
            return 2 if self.final else 1
        return -(-self.size // self.hop) + 1

    def buckets(self, ts: I64) -> I64:
        if self.hop == 0:
            return np.zeros_like(ts)
        return ts // self.hop

    def bucket(self, ts: int) -> int:
        return 0 if self.hop == 0 else ts // self.hop

    def window(self, t: int) -> tuple[int, int]:
        if self.hop == 0:
            return 0, 0
        if self.kind is WindowKind.TUMBLING:
            cur = t // self.size
            return (cur - 1, cur - 1) if self.final else (cur, cur)
        return (t - self.size) // self.hop, t // self.hop

    def keep_from(self, st: int) -> int:
        return self.window(st)[0]

    def next_change_one(self, b: int, t: int) -> int:
        """Scalar :meth:`next_change`."""
        if self.hop == 0:
            return int(NEVER)
        if self.kind is WindowKind.TUMBLING:
            nxt = (b + 1) * self.size
            return nxt if not self.final or nxt > t else nxt + self.size
        return self.size + (b + 1) * self.hop

    def next_change(self, b: I64, t: int) -> I64:
        """Earliest time after ``t`` at which bucket ``b`` (kept) enters or leaves the window."""
        if self.hop == 0:
            return np.full_like(b, NEVER)
        if self.kind is WindowKind.TUMBLING:
            nxt = (b + 1) * self.size
            if self.final:
                nxt = np.where(nxt > t, nxt, nxt + self.size)
            return nxt
        return self.size + (b + 1) * self.hop


E = TypeVar("E", bound=Sized)


def _rows_of(obj: object, what: str) -> list[Any]:
    """A per-event slot's stored row state: a list (anything else is corrupt)."""
    if not isinstance(obj, list):
        raise StateError(
            f"corrupt {what} state (a list expected, got {type(obj).__name__}); delete the "
            "partition's state directory and replay from the snapshots"
        )
    return obj


class _PerEventSlot(ABC, Generic[E]):
    """What the per-event kinds share: per row an ``E`` (buckets, sessions or events) in
    :attr:`entities`; the values loop over rows; dump and clear by row.

    ``feature`` (the slot's first) configures new states (``exact_up_to``, ``k``): the
    features sharing a slot agree on those, the share key includes them.
    """

    def __init__(self, family: Family, feature: FeatureDef) -> None:
        self.family = family
        self.feature = feature
        self.state_class: type[AggState] = STATE_CLASSES[family]
        self.entities: dict[int, E] = {}
        """Per row, its state; a row without state has no entry."""

    def new_state(self) -> AggState:
        return self.state_class.new(self.feature)

    def restore_state(self, obj: list[Any]) -> AggState:
        return state_from_obj(self.family, self.feature, obj)

    @abstractmethod
    def prune(self, row: int, st: int) -> None:
        """Drop what no query at or after stream time ``st`` can read."""

    @abstractmethod
    def state_at(self, row: int, t: int) -> tuple[AggState | None, int]:
        """The row's merged state of the window as of ``t`` (``None`` if empty), and the
        next time after ``t`` the window changes by time alone."""

    @abstractmethod
    def dump_row(self, row: int) -> list[Any]:
        """The row's state (which :meth:`prune` has just left non-empty), msgpack-able."""

    def reserve(self, rows: int) -> None:
        """Nothing to reserve: rows are dict keys."""

    def values(
        self, rows: I64, t: int, features: Sequence[FeatureDef]
    ) -> tuple[list[list[Any]], I64]:
        columns: list[list[Any]] = [[] for _ in features]
        nexts: list[int] = []
        for row in rows.tolist():
            state, nxt = self.state_at(row, t)
            nexts.append(nxt)
            if state is None or state.empty():
                for column, feature in zip(columns, features, strict=True):
                    column.append(empty_value(feature.agg))
            else:
                for column, feature in zip(columns, features, strict=True):
                    column.append(state.result(feature))
        return columns, np.array(nexts, dtype=np.int64)

    def dump(self, rows: list[int], st: int) -> list[list[Any] | None]:
        out: list[list[Any] | None] = []
        for row in rows:
            self.prune(row, st)
            out.append(self.dump_row(row) if row in self.entities else None)
        return out

    def clear(self, row: int) -> None:
        self.entities.pop(row, None)

    def approx_bytes(self) -> int:
        return _PER_ITEM_BYTES * sum(len(v) for v in self.entities.values())


class BucketSlot(_PerEventSlot[dict[int, AggState]]):
    """A bucketed window of a non-moments family: per entity ``{bucket: state}``."""

    def __init__(self, span: Span, family: Family, feature: FeatureDef) -> None:
        super().__init__(family, feature)
        self.span = span

    def add(self, batch: Batch, field: str | None, where: str | None) -> None:
        values, rows, ts = batch.column(field), batch.row_list, batch.ts_list
        first_seq, st = batch.first_seq, batch.stream_time
        keep = self.span.keep_from(st)
        for i in np.flatnonzero(batch.passes(where)).tolist():
            self._add(rows[i], ts[i], first_seq + i, values[i], keep)
        for row in batch.touched_rows:
            self.prune(row, st)

    def _add(self, row: int, ts: int, seq: int, value: Any, keep: int) -> None:
        b = self.span.bucket(ts)
        if b < keep:
            return
        self._state_of(row, b).add(value, ts, seq)

    def _state_of(self, row: int, b: int) -> AggState:
        """The state of bucket ``b`` of ``row``, a new one if it has none."""
        buckets = self.entities.get(row)
        if buckets is None:
            buckets = self.entities[row] = {}
        state = buckets.get(b)
        if state is None:
            state = buckets[b] = self.new_state()
        return state

    def prune(self, row: int, st: int) -> None:
        buckets = self.entities.get(row)
        if buckets is None:
            return
        keep = self.span.keep_from(st)
        for b in [b for b in buckets if b < keep]:
            del buckets[b]
        if not buckets:
            del self.entities[row]

    def state_at(self, row: int, t: int) -> tuple[AggState | None, int]:
        buckets = self.entities.get(row)
        if not buckets:
            return None, NEVER
        lo, hi = self.span.window(t)
        keep = self.span.keep_from(t)
        nxt = int(NEVER)
        if self.span.hop:
            # next_change_one grows with the bucket: the oldest kept bucket changes first
            oldest = min((b for b in buckets if b >= keep), default=None)
            if oldest is not None:
                nxt = self.span.next_change_one(oldest, t)
        merged = None
        for b in sorted(buckets):
            if lo <= b <= hi:
                if merged is None:
                    merged = self.new_state()
                merged.merge(buckets[b])
        return merged, nxt

    def dump_row(self, row: int) -> list[Any]:
        buckets = self.entities[row]
        return [[b, buckets[b].to_obj()] for b in sorted(buckets)]

    def load(self, row: int, obj: object) -> None:
        self.entities[row] = {
            b: self.restore_state(s) for b, s in _rows_of(obj, self.family.value)
        }


class _Session:
    """A run of an entity's events with gaps below the session gap."""

    __slots__ = ("last", "start", "state")

    def __init__(self, start: int, last: int, state: AggState) -> None:
        self.start = start
        """Time of the run's first event."""
        self.last = last
        """Time of the run's last event."""
        self.state = state
        """The run's events that pass ``where``."""


class SessionSlot(_PerEventSlot[list[_Session]]):
    """Session window, gap ``G``: per entity its sessions by start, stored as
    ``[[start, last, state], ...]``.

    Sessions are maximal runs of the entity's accepted events (all of them,
    whatever ``where`` says) with consecutive gaps below ``G``; the state holds
    the events of the run that pass ``where``. A session is dropped once it
    can neither be joined by an acceptable event nor be the latest one.
    """

    def __init__(self, gap: int, lateness: int, family: Family, feature: FeatureDef) -> None:
        super().__init__(family, feature)
        self.gap = gap
        self.lateness = lateness

    def add(self, batch: Batch, field: str | None, where: str | None) -> None:
        values, rows, ts = batch.column(field), batch.row_list, batch.ts_list
        first_seq, st = batch.first_seq, batch.stream_time
        passes: list[bool] = batch.passes(where).tolist()
        for i in batch.accepted_list:  # every accepted event extends or joins sessions
            self._add(rows[i], ts[i], first_seq + i, values[i], passes[i])
        for row in batch.touched_rows:
            self.prune(row, st)

    def _add(self, row: int, ts: int, seq: int, value: Any, passes: bool) -> None:
        sessions = self.entities.get(row)
        if sessions is None:
            sessions = self.entities[row] = []
        g = self.gap
        hit = [i for i, s in enumerate(sessions) if s.start - g < ts < s.last + g]
        if not hit:
            new = _Session(ts, ts, self.new_state())
            i = 0
            while i < len(sessions) and sessions[i].start < ts:
                i += 1
            sessions.insert(i, new)
        else:
            new = sessions[hit[0]]
            for i in hit[1:]:
                other = sessions[i]
                new.start = min(new.start, other.start)
                new.last = max(new.last, other.last)
                new.state.merge(other.state)
            for i in reversed(hit[1:]):
                del sessions[i]
            new.start = min(new.start, ts)
            new.last = max(new.last, ts)
        if passes:
            new.state.add(value, ts, seq)

    def prune(self, row: int, st: int) -> None:
        sessions = self.entities.get(row)
        if sessions is None:
            return
        limit = st - self.lateness - self.gap
        sessions[:] = [s for s in sessions if s.last > limit]
        if not sessions:
            del self.entities[row]

    def state_at(self, row: int, t: int) -> tuple[AggState | None, int]:
        sessions = self.entities.get(row)
        if not sessions:
            return None, NEVER
        latest = max(sessions, key=lambda s: s.last)
        if t - latest.last >= self.gap:
            return None, NEVER
        return latest.state, latest.last + self.gap

    def dump_row(self, row: int) -> list[Any]:
        return [[s.start, s.last, s.state.to_obj()] for s in self.entities[row]]

    def load(self, row: int, obj: object) -> None:
        self.entities[row] = [
            _Session(s[0], s[1], self.restore_state(s[2]))
            for s in _rows_of(obj, "session")
        ]


class ExactSlot(_PerEventSlot[list[tuple[int, int, Any]]]):
    """``hop: exact`` window of size ``W``: per entity the events ``(ts, seq, value)``
    with ``ts > st - W``; the state is built from them at query time."""

    def __init__(self, size: int, family: Family, feature: FeatureDef) -> None:
        super().__init__(family, feature)
        self.size = size

    def add(self, batch: Batch, field: str | None, where: str | None) -> None:
        values, rows, ts = batch.column(field), batch.row_list, batch.ts_list
        first_seq, st = batch.first_seq, batch.stream_time
        limit = st - self.size
        entities = self.entities
        for i in np.flatnonzero(batch.passes(where)).tolist():
            t = ts[i]
            if t <= limit:
                continue
            events = entities.get(rows[i])
            if events is None:
                events = entities[rows[i]] = []
            events.append((t, first_seq + i, values[i]))
        for row in batch.touched_rows:
            self.prune(row, st)

    def prune(self, row: int, st: int) -> None:
        events = self.entities.get(row)
        if events is None:
            return
        limit = st - self.size
        events[:] = [ev for ev in events if ev[0] > limit]
        if not events:
            del self.entities[row]

    def state_at(self, row: int, t: int) -> tuple[AggState | None, int]:
        events = self.entities.get(row)
        if not events:
            return None, NEVER
        limit = t - self.size
        state = None
        nxt = int(NEVER)
        for ts, seq, value in events:
            if ts > limit:
                if state is None:
                    state = self.new_state()
                state.add(value, ts, seq)
                nxt = min(nxt, ts + self.size)
        return state, nxt

    def dump_row(self, row: int) -> list[Any]:
        return [list(ev) for ev in self.entities[row]]

    def load(self, row: int, obj: object) -> None:
        self.entities[row] = [(ev[0], ev[1], ev[2]) for ev in _rows_of(obj, "exact window")]
