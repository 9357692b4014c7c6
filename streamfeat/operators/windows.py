"""Window state of many entities: bucket arithmetic and four kinds of slot.

A *slot* holds the state of one or more feature-windows that can share it
(same window, ``where`` and field, and a shared aggregation family). Entities
are small integers (rows) handed out by the partition operator.

- :class:`MomentsRing`: sliding, hopping, tumbling and lifetime windows of the
  moments family (``count sum mean var stddev min max``). Numpy arrays
  ``ids[entity, R]`` and ``acc[entity, R, 4]`` (``c n s1 s2``), a ring of the
  ``R = ceil(W/H) + 1`` buckets that a query at or after stream time can read;
  updated once per ``(entity, bucket)`` group per batch with ``bincount``.
- :class:`BucketSlot`: the same windows for the other families: per entity a
  dict ``bucket -> state``, expired buckets dropped.
- :class:`SessionSlot`: per entity the sessions that can still be current.
- :class:`ExactSlot`: ``hop: exact``: per entity the events ``(ts, seq, value)``
  that a query at or after stream time can still see.

Queries are never earlier than stream time (the operator enforces it), which
is what lets every slot drop what no such query can read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streamfeat.operators.aggregations import Family, new_state, state_from_obj
from streamfeat.topology.definitions import FeatureDef, WindowDef, WindowKind

__all__ = [
    "NEVER",
    "BucketSlot",
    "ExactSlot",
    "MomentsRing",
    "SessionSlot",
    "Span",
]

NEVER = np.iinfo(np.int64).max
"""Next-change time of a state that never changes without new events."""

_EMPTY_ID = np.iinfo(np.int64).min // 2

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


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


class MomentsRing:
    """Moments of a bucketed window for all entities, as numpy rings (see module doc)."""

    def __init__(self, span: Span, minmax: bool, capacity: int = 1024) -> None:
        self.span = span
        self.minmax = minmax
        self.r = span.ring
        self.cap = 0
        self.ids: I64 = np.empty((0, self.r), dtype=np.int64)
        self.acc: F64 = np.empty((0, self.r, 4), dtype=np.float64)
        self.ext: F64 = np.empty((0, self.r, 2), dtype=np.float64)
        self.k: F64 = np.empty(0, dtype=np.float64)
        self.grow(capacity)

    def grow(self, capacity: int) -> None:
        if capacity <= self.cap:
            return
        new = max(capacity, 2 * self.cap)
        ids = np.full((new, self.r), _EMPTY_ID, dtype=np.int64)
        ids[: self.cap] = self.ids
        acc = np.zeros((new, self.r, 4), dtype=np.float64)
        acc[: self.cap] = self.acc
        k = np.full(new, np.nan, dtype=np.float64)
        k[: self.cap] = self.k
        if self.minmax:
            ext = np.empty((new, self.r, 2), dtype=np.float64)
            ext[..., 0] = np.inf
            ext[..., 1] = -np.inf
            ext[: self.cap] = self.ext
            self.ext = ext
        self.ids, self.acc, self.k, self.cap = ids, acc, k, new

    def update(self, e: I64, ts: I64, x: F64, valid: B, st: int) -> None:
        """Add events (already accepted and passing ``where``) in offset order."""
        if e.size == 0:
            return
        # The shift K of an entity is its first numeric value, whatever bucket it is in.
        k = self.k
        kx = k[e]
        need = valid & np.isnan(kx)
        if need.any():
            ne = e[need]
            ue, first = np.unique(ne, return_index=True)
            k[ue] = x[need][first]
            kx = k[e]
        b = self.span.buckets(ts)
        keep = b >= self.span.keep_from(st)
        if not keep.all():
            e, b, x, valid, kx = e[keep], b[keep], x[keep], valid[keep], kx[keep]
            if e.size == 0:
                return
        r = self.r
        pos = b % r
        flat = e * r + pos
        uniq, first, inv = np.unique(flat, return_index=True, return_inverse=True)
        ue = uniq // r
        up = uniq - ue * r
        ub = b[first]
        stale = self.ids[ue, up] != ub
        if stale.any():
            se, sp = ue[stale], up[stale]
            self.ids[se, sp] = ub[stale]
            self.acc[se, sp] = 0.0
            if self.minmax:
                self.ext[se, sp, 0] = np.inf
                self.ext[se, sp, 1] = -np.inf
        m = uniq.size
        d = np.where(valid, x - kx, 0.0)
        sums = np.empty((m, 4), dtype=np.float64)
        sums[:, 0] = np.bincount(inv, minlength=m)
        sums[:, 1] = np.bincount(inv, weights=valid, minlength=m)
        sums[:, 2] = np.bincount(inv, weights=d, minlength=m)
        sums[:, 3] = np.bincount(inv, weights=d * d, minlength=m)
        self.acc[ue, up] += sums
        if self.minmax and valid.any():
            gi, gx = inv[valid], x[valid]
            lo = np.full(m, np.inf)
            hi = np.full(m, -np.inf)
            np.minimum.at(lo, gi, gx)
            np.maximum.at(hi, gi, gx)
            cur = self.ext[ue, up]
            cur[:, 0] = np.minimum(cur[:, 0], lo)
            cur[:, 1] = np.maximum(cur[:, 1], hi)
            self.ext[ue, up] = cur

    def query(self, rows: I64, t: int) -> tuple[dict[str, F64], I64]:
        """Window moments as of ``t`` for ``rows``, and each row's next change time."""
        lo, hi = self.span.window(t)
        ids = self.ids[rows]
        mask = (ids >= lo) & (ids <= hi)
        acc = self.acc[rows]
        tot = np.einsum("mr,mrc->mc", mask.astype(np.float64), acc)
        cols: dict[str, F64] = {
            "c": tot[:, 0], "n": tot[:, 1], "s1": tot[:, 2], "s2": tot[:, 3], "k": self.k[rows],
        }
        if self.minmax:
            ext = self.ext[rows]
            cols["mn"] = np.where(mask, ext[..., 0], np.inf).min(axis=1)
            cols["mx"] = np.where(mask, ext[..., 1], -np.inf).max(axis=1)
        kept = ids >= self.span.keep_from(t)
        if self.span.hop == 0 or not kept.any():
            return cols, np.full(rows.size, NEVER, dtype=np.int64)
        nxt = np.where(kept, self.span.next_change(ids, t), NEVER)
        return cols, nxt.min(axis=1)

    def dump(self, row: int, st: int) -> list[Any] | None:
        k = float(self.k[row])
        ids = self.ids[row]
        live = np.flatnonzero(ids >= self.span.keep_from(st))
        if math.isnan(k) and live.size == 0:
            return None
        cells = []
        for p in live[np.argsort(ids[live])].tolist():
            c, n, s1, s2 = self.acc[row, p].tolist()
            cell: list[Any] = [int(ids[p]), int(c), int(n), s1, s2]
            if self.minmax:
                cell += self.ext[row, p].tolist()
            cells.append(cell)
        return [None if math.isnan(k) else k, cells]

    def load(self, row: int, obj: list[Any]) -> None:
        self.k[row] = np.nan if obj[0] is None else obj[0]
        self.ids[row] = _EMPTY_ID
        self.acc[row] = 0.0
        for cell in obj[1]:
            p = cell[0] % self.r
            self.ids[row, p] = cell[0]
            self.acc[row, p] = cell[1:5]
            if self.minmax:
                self.ext[row, p] = cell[5:7]

    def clear(self, row: int) -> None:
        self.k[row] = np.nan
        self.ids[row] = _EMPTY_ID


class BucketSlot:
    """A bucketed window of a non-moments family: per entity ``{bucket: state}``."""

    def __init__(self, span: Span, family: Family, feature: FeatureDef) -> None:
        self.span = span
        self.family = family
        self.feature = feature
        self.entities: dict[int, dict[int, Any]] = {}

    def add(self, row: int, ts: int, seq: int, value: Any, st: int) -> None:
        b = self.span.bucket(ts)
        if b < self.span.keep_from(st):
            return
        buckets = self.entities.get(row)
        if buckets is None:
            buckets = self.entities[row] = {}
        state = buckets.get(b)
        if state is None:
            state = buckets[b] = new_state(self.family, self.feature)
        state.add(value, ts, seq)

    def prune(self, row: int, st: int) -> None:
        buckets = self.entities.get(row)
        if buckets is None:
            return
        keep = self.span.keep_from(st)
        for b in [b for b in buckets if b < keep]:
            del buckets[b]
        if not buckets:
            del self.entities[row]

    def query(self, row: int, t: int) -> tuple[Any, int]:
        """Merged state of the window as of ``t`` (``None`` if empty), and next change."""
        buckets = self.entities.get(row)
        if not buckets:
            return None, NEVER
        lo, hi = self.span.window(t)
        keep = self.span.keep_from(t)
        merged = None
        nxt = NEVER
        for b in sorted(buckets):
            if b < keep:
                continue
            if self.span.hop:
                nxt = min(nxt, int(self.span.next_change(np.array([b]), t)[0]))
            if lo <= b <= hi:
                if merged is None:
                    merged = new_state(self.family, self.feature)
                merged.merge(buckets[b])
        return merged, nxt

    def dump(self, row: int, st: int) -> list[Any] | None:
        self.prune(row, st)
        buckets = self.entities.get(row)
        if not buckets:
            return None
        return [[b, buckets[b].to_obj()] for b in sorted(buckets)]

    def load(self, row: int, obj: list[Any]) -> None:
        self.entities[row] = {
            b: state_from_obj(self.family, self.feature, s) for b, s in obj
        }

    def clear(self, row: int) -> None:
        self.entities.pop(row, None)


class SessionSlot:
    """Session window, gap ``G``: per entity ``[[start, last, state], ...]`` by start.

    Sessions are maximal runs of the entity's accepted events (all of them,
    whatever ``where`` says) with consecutive gaps below ``G``; the state holds
    the events of the run that pass ``where``. A session is dropped once it
    can neither be joined by an acceptable event nor be the latest one.
    """

    def __init__(self, gap: int, lateness: int, family: Family, feature: FeatureDef) -> None:
        self.gap = gap
        self.lateness = lateness
        self.family = family
        self.feature = feature
        self.entities: dict[int, list[list[Any]]] = {}

    def add(self, row: int, ts: int, seq: int, value: Any, passes: bool) -> None:
        sessions = self.entities.get(row)
        if sessions is None:
            sessions = self.entities[row] = []
        g = self.gap
        hit = [i for i, s in enumerate(sessions) if s[0] - g < ts < s[1] + g]
        if not hit:
            state = new_state(self.family, self.feature)
            new: list[Any] = [ts, ts, state]
            i = 0
            while i < len(sessions) and sessions[i][0] < ts:
                i += 1
            sessions.insert(i, new)
        else:
            new = sessions[hit[0]]
            for i in hit[1:]:
                other = sessions[i]
                new[0] = min(new[0], other[0])
                new[1] = max(new[1], other[1])
                new[2].merge(other[2])
            for i in reversed(hit[1:]):
                del sessions[i]
            new[0] = min(new[0], ts)
            new[1] = max(new[1], ts)
        if passes:
            new[2].add(value, ts, seq)

    def prune(self, row: int, st: int) -> None:
        sessions = self.entities.get(row)
        if sessions is None:
            return
        limit = st - self.lateness - self.gap
        sessions[:] = [s for s in sessions if s[1] > limit]
        if not sessions:
            del self.entities[row]

    def query(self, row: int, t: int) -> tuple[Any, int]:
        sessions = self.entities.get(row)
        if not sessions:
            return None, NEVER
        latest = max(sessions, key=lambda s: s[1])
        if t - latest[1] >= self.gap:
            return None, NEVER
        return latest[2], latest[1] + self.gap

    def dump(self, row: int, st: int) -> list[Any] | None:
        self.prune(row, st)
        sessions = self.entities.get(row)
        if not sessions:
            return None
        return [[s[0], s[1], s[2].to_obj()] for s in sessions]

    def load(self, row: int, obj: list[Any]) -> None:
        self.entities[row] = [
            [s[0], s[1], state_from_obj(self.family, self.feature, s[2])] for s in obj
        ]

    def clear(self, row: int) -> None:
        self.entities.pop(row, None)


class ExactSlot:
    """``hop: exact`` window of size ``W``: per entity the events with ``ts > st - W``."""

    def __init__(self, size: int, family: Family, feature: FeatureDef) -> None:
        self.size = size
        self.family = family
        self.feature = feature
        self.entities: dict[int, list[tuple[int, int, Any]]] = {}

    def add(self, row: int, ts: int, seq: int, value: Any, st: int) -> None:
        if ts <= st - self.size:
            return
        events = self.entities.get(row)
        if events is None:
            events = self.entities[row] = []
        events.append((ts, seq, value))

    def prune(self, row: int, st: int) -> None:
        events = self.entities.get(row)
        if events is None:
            return
        limit = st - self.size
        events[:] = [ev for ev in events if ev[0] > limit]
        if not events:
            del self.entities[row]

    def query(self, row: int, t: int) -> tuple[Any, int]:
        events = self.entities.get(row)
        if not events:
            return None, NEVER
        limit = t - self.size
        state = None
        nxt = NEVER
        for ts, seq, value in events:
            if ts > limit:
                if state is None:
                    state = new_state(self.family, self.feature)
                state.add(value, ts, seq)
                nxt = min(nxt, ts + self.size)
        return state, nxt

    def dump(self, row: int, st: int) -> list[Any] | None:
        self.prune(row, st)
        events = self.entities.get(row)
        if not events:
            return None
        return [list(ev) for ev in events]

    def load(self, row: int, obj: list[Any]) -> None:
        self.entities[row] = [(ev[0], ev[1], ev[2]) for ev in obj]

    def clear(self, row: int) -> None:
        self.entities.pop(row, None)
