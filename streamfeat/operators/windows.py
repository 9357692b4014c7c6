"""Window state of many entities: bucket arithmetic and four kinds of slot.

A *slot* holds the state of one or more feature-windows that can share it
(same window, ``where`` and field, and a shared aggregation family). Entities
are small integers (rows) handed out by the partition operator.

- :class:`MomentsRing`: sliding, hopping, tumbling and lifetime windows of the
  moments family (``count sum mean var stddev min max``). Per entity a ring of
  ``R = ceil(W/H) + 1`` positions (the buckets a query at or after stream time
  can read) pointing into a numpy table of live cells ``c n K s1 s2``; updated
  once per ``(entity, bucket)`` group per batch with ``bincount``.
- :class:`BucketSlot`: the same windows for the other families: per entity a
  dict ``bucket -> state``, expired buckets dropped.
- :class:`SessionSlot`: per entity the sessions that can still be current.
- :class:`ExactSlot`: ``hop: exact``: per entity the events ``(ts, seq, value)``
  that a query at or after stream time can still see.

Queries are never earlier than stream time (the operator enforces it), which
is what lets every slot drop what no such query can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
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


def _sum_by(groups: I64, weights: F64, m: int) -> F64:
    """Per-group sums, each accumulated left to right in input order (np.bincount is a
    sequential loop), so equal inputs in equal order give bit-identical sums."""
    return np.bincount(groups, weights=weights, minlength=m).astype(np.float64, copy=False)


_LONG_RUN = 32


def _accumulate_runs(base: F64, starts: I64, n: int, values: F64) -> F64:
    """``base[g] + v[s] + v[s+1] + ...`` for each run ``g`` of ``values``, added one value at
    a time from left to right, exactly as a sequential loop over the events would.

    Adding a batch's values one by one onto the stored sum (rather than adding the
    batch's subtotal) makes a float sum independent of how the stream was cut into
    batches: the replay then equals the stream bit for bit. Runs share a numpy step per
    position; runs longer than ``_LONG_RUN`` use one sequential ``np.cumsum`` each.
    """
    out = base.copy()
    lengths = np.diff(np.r_[starts, n])
    long_runs = np.flatnonzero(lengths > _LONG_RUN)
    for g in long_runs.tolist():
        s, e = int(starts[g]), int(starts[g] + lengths[g])
        run = np.empty(e - s + 1)
        run[0] = out[g]
        run[1:] = values[s:e]
        out[g] = np.cumsum(run)[-1]  # np.add.accumulate is strictly sequential
    short = np.flatnonzero(lengths <= _LONG_RUN)
    if short.size == 0:
        return out
    by_length = short[np.argsort(-lengths[short], kind="stable")]  # longest first
    # longer[k]: how many short runs are longer than k (a prefix of by_length)
    longer = short.size - np.cumsum(np.bincount(lengths[short], minlength=_LONG_RUN + 1))
    at = starts[by_length]
    for k in range(int(lengths[by_length[0]])):
        runs = by_length[: longer[k]]
        out[runs] += values[at[: longer[k]] + k]
    return out


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


class MomentsRing:
    """Moments of a bucketed window for all entities (see module doc).

    Layout: ``ring[entity, R]`` (int32) points into a table of *cells*, one per
    live ``(entity, bucket)``; ``-1`` is an empty slot. A cell holds
    ``c n K s1 s2``: events, numeric values, the shift ``K`` (the cell's first
    numeric value, in offset order), ``sum(x - K)`` and ``sum((x - K)^2)``, plus
    ``min max`` when a feature needs them. Cells of expired buckets are swept
    and reused as stream time moves, so memory is ``4 R`` bytes per entity plus
    about 60 bytes per live bucket.

    Cells are merged at query time onto the shift of one live cell, so every
    shift is a value inside the window and the variance stays accurate however
    the data drift; for integers (squares of deviations below 2**53) every sum
    is exact, so the state does not depend on how the stream was cut into batches.
    """

    def __init__(self, span: Span, minmax: bool, capacity: int = 1024) -> None:
        self.span = span
        self.minmax = minmax
        self.r = span.ring
        self.cap = 0
        self.ring: npt.NDArray[np.int32] = np.empty((0, self.r), dtype=np.int32)
        # the cell table
        self.cells = 0  # high-water mark
        self.cb: I64 = np.empty(0, dtype=np.int64)  # bucket id; _EMPTY_ID when free
        self.ce: I64 = np.empty(0, dtype=np.int64)  # entity row
        self.acc: F64 = np.empty((0, 5), dtype=np.float64)
        self.ext: F64 = np.empty((0, 2), dtype=np.float64)
        self.free: list[int] = []
        self.swept_to = _EMPTY_ID
        self.grow(capacity)

    def grow(self, capacity: int) -> None:
        if capacity <= self.cap:
            return
        new = max(capacity, 2 * self.cap)
        ring = np.full((new, self.r), -1, dtype=np.int32)
        ring[: self.cap] = self.ring
        self.ring, self.cap = ring, new

    @property
    def nbytes(self) -> int:
        """Bytes of the ring and of the cell table (allocated, not only used)."""
        return int(self.ring.nbytes + self.cb.nbytes + self.ce.nbytes + self.acc.nbytes
                   + (self.ext.nbytes if self.minmax else 0) + 8 * len(self.free))

    def _alloc(self, count: int) -> I64:
        take = min(count, len(self.free))
        ids = np.empty(count, dtype=np.int64)
        if take:
            ids[:take] = self.free[-take:]
            del self.free[-take:]
        rest = count - take
        if rest:
            start = self.cells
            need = start + rest
            size = self.cb.size
            if need > size:
                grown = max(need, 2 * size, 1024)
                cb = np.full(grown, _EMPTY_ID, dtype=np.int64)
                cb[:size] = self.cb
                ce = np.zeros(grown, dtype=np.int64)
                ce[:size] = self.ce
                acc = np.zeros((grown, 5), dtype=np.float64)
                acc[:size] = self.acc
                self.cb, self.ce, self.acc = cb, ce, acc
                if self.minmax:
                    ext = np.empty((grown, 2), dtype=np.float64)
                    ext[:size] = self.ext
                    self.ext = ext
            ids[take:] = np.arange(start, need)
            self.cells = need
        return ids

    def _reset(self, cid: I64, e: I64, b: I64) -> None:
        self.cb[cid] = b
        self.ce[cid] = e
        self.acc[cid] = 0.0
        if self.minmax:
            self.ext[cid, 0] = np.inf
            self.ext[cid, 1] = -np.inf

    def sweep(self, st: int) -> None:
        """Free the cells of buckets no query at or after ``st`` can read."""
        keep = self.span.keep_from(st)
        if keep <= self.swept_to:
            return
        self.swept_to = keep
        cb = self.cb[: self.cells]
        dead = np.flatnonzero((cb < keep) & (cb != _EMPTY_ID))
        if dead.size == 0:
            return
        self.ring[self.ce[dead], cb[dead] % self.r] = -1
        self.cb[dead] = _EMPTY_ID
        self.free.extend(dead.tolist())

    def update(self, e: I64, ts: I64, orig: I64, xs: F64, oks: B, st: int) -> None:
        """Add events (accepted, passing ``where``) sorted by ``(entity, ts, offset)``.

        ``orig`` are the events' positions in the batch (offset order) and ``xs``,
        ``oks`` the batch's numeric values and their validity, by position. The
        sort makes every ``(entity, bucket)`` group a contiguous run, so groups are
        found without sorting again.
        """
        self.sweep(st)
        if e.size == 0:
            return
        b = self.span.buckets(ts)
        keep = b >= self.span.keep_from(st)
        if not keep.all():
            e, b, orig = e[keep], b[keep], orig[keep]
            if e.size == 0:
                return
        x, valid = xs[orig], oks[orig]
        new = np.empty(e.size, dtype=np.bool_)
        new[0] = True
        np.not_equal(e[1:], e[:-1], out=new[1:])
        new[1:] |= b[1:] != b[:-1]
        starts = np.flatnonzero(new)
        inv = np.cumsum(new) - 1
        ue, ub = e[starts], b[starts]
        up = ub % self.r
        cid = self.ring[ue, up].astype(np.int64)
        missing = cid < 0
        if missing.any():
            fresh = self._alloc(int(missing.sum()))
            cid[missing] = fresh
            self.ring[ue[missing], up[missing]] = fresh
            self._reset(fresh, ue[missing], ub[missing])
        stale = self.cb[cid] != ub  # an expired bucket not swept yet at this position
        if stale.any():
            self._reset(cid[stale], ue[stale], ub[stale])
        m = starts.size
        cells = self.acc[cid]
        has = cells[:, 1] > 0  # the cell already has its shift K
        if not has.all() and valid.any():
            vi = np.flatnonzero(valid)
            gv = inv[vi]
            vstart = np.flatnonzero(np.r_[True, gv[1:] != gv[:-1]])
            groups = gv[vstart]
            first = np.minimum.reduceat(orig[vi], vstart)  # earliest offset of the group
            fresh_k = ~has[groups]
            cells[groups[fresh_k], 2] = xs[first[fresh_k]]
        d = np.where(valid, x - cells[inv, 2], 0.0)
        # Accumulate each group's values in offset order, one at a time (see
        # _accumulate_runs): the float sums then do not depend on batch boundaries.
        by_offset = np.lexsort((orig, inv))
        d = d[by_offset]
        cells[:, 0] += np.diff(np.r_[starts, e.size])
        cells[:, 1] += np.bincount(inv, weights=valid, minlength=m)
        cells[:, 3] = _accumulate_runs(cells[:, 3], starts, e.size, d)
        cells[:, 4] = _accumulate_runs(cells[:, 4], starts, e.size, d * d)
        self.acc[cid] = cells
        if self.minmax and valid.any():
            gi, gx = inv[valid], x[valid]
            lo = np.full(m, np.inf)
            hi = np.full(m, -np.inf)
            np.minimum.at(lo, gi, gx)
            np.maximum.at(hi, gi, gx)
            cur = self.ext[cid]
            cur[:, 0] = np.minimum(cur[:, 0], lo)
            cur[:, 1] = np.maximum(cur[:, 1], hi)
            self.ext[cid] = cur

    def _live(self, rows: I64, t: int) -> tuple[I64, I64, I64]:
        """(index into ``rows``, cell id, bucket) of every cell of ``rows`` kept as of ``t``.

        Scans the cell table or gathers the rings, whichever touches less memory
        (the ring gather when ``rows`` repeat); the order of the result is unspecified.
        """
        keep = self.span.keep_from(t)
        if self.cells < rows.size * self.r:
            n = self.cells
            index = np.arange(rows.size)
            at = np.full(self.cap, -1, dtype=np.int64)
            at[rows] = index
            if (at[rows] == index).all():  # distinct rows
                cb = self.cb[:n]
                pos = at[self.ce[:n]]
                cid = np.flatnonzero((cb >= keep) & (pos >= 0))  # free cells have no bucket
                return pos[cid], cid, cb[cid]
        cids = self.ring[rows]
        i, p = np.nonzero(cids >= 0)
        cidr = cids[i, p].astype(np.int64)
        bids = self.cb[cidr]
        kept = bids >= keep
        return i[kept], cidr[kept], bids[kept]

    def query(self, rows: I64, t: int) -> tuple[dict[str, F64], I64]:
        """Window moments as of ``t`` for ``rows``, and each row's next change time.

        Returns columns ``c n k s1 s2`` (moments shifted to ``k``: the shift of
        the row's oldest numeric cell in the window) and ``mn mx`` with min/max.
        """
        m = rows.size
        lo, hi = self.span.window(t)
        i, cid, bids = self._live(rows, t)
        inwin = (bids >= lo) & (bids <= hi)
        wi, wc, wb = i[inwin], cid[inwin], bids[inwin]
        # Sum each row's cells in bucket order, whatever order the cells were allocated in.
        order = np.lexsort((wb, wi))
        wi, wc, wb = wi[order], wc[order], wb[order]
        cells = self.acc[wc]
        nc, kc = cells[:, 1], cells[:, 2]
        k0 = np.zeros(m)
        num = np.flatnonzero(nc > 0)
        if num.size:
            wn, bn = wi[num], wb[num]
            oldest = np.full(m, NEVER, dtype=np.int64)
            np.minimum.at(oldest, wn, bn)
            pick = bn == oldest[wn]  # one cell per row: buckets of a row are distinct
            k0[wn[pick]] = kc[num[pick]]
        delta = np.where(nc > 0, kc - k0[wi], 0.0)
        s1c = cells[:, 3]
        cols: dict[str, F64] = {
            "c": _sum_by(wi, cells[:, 0], m),
            "n": _sum_by(wi, nc, m),
            "k": k0,
            "s1": _sum_by(wi, s1c + nc * delta, m),
            "s2": _sum_by(wi, cells[:, 4] + 2.0 * delta * s1c + nc * delta * delta, m),
        }
        if self.minmax:
            ext = self.ext[wc]
            mn = np.full(m, np.inf)
            mx = np.full(m, -np.inf)
            np.minimum.at(mn, wi, ext[:, 0])
            np.maximum.at(mx, wi, ext[:, 1])
            cols["mn"], cols["mx"] = mn, mx
        nxt = np.full(m, NEVER, dtype=np.int64)
        if self.span.hop and i.size:
            np.minimum.at(nxt, i, self.span.next_change(bids, t))
        return cols, nxt

    def dump(self, row: int, st: int) -> bytes | None:
        return self.dump_many([row], st)[0]

    @property
    def _cell_dtype(self) -> np.dtype[Any]:
        fields: list[tuple[str, str, tuple[int, ...]]] = [("b", "<i8", ()), ("a", "<f8", (5,))]
        if self.minmax:
            fields.append(("x", "<f8", (2,)))
        return np.dtype(fields)

    def dump_many(self, rows: list[int], st: int) -> list[bytes | None]:
        """Per row (distinct), its kept cells by bucket, as packed little-endian records
        ``(bucket int64, c n K s1 s2 float64 (, min max float64))``: exact, compact, and
        built for all rows with a few numpy calls (this runs at every state commit)."""
        out: list[bytes | None] = [None] * len(rows)
        if not rows:
            return out
        i, cid, bids = self._live(np.asarray(rows, dtype=np.int64), st)
        if i.size == 0:
            return out
        order = np.lexsort((bids, i))
        i, cid, bids = i[order], cid[order], bids[order]
        dtype = self._cell_dtype
        packed = np.empty(i.size, dtype=dtype)
        packed["b"] = bids
        packed["a"] = self.acc[cid]
        if self.minmax:
            packed["x"] = self.ext[cid]
        blob = packed.tobytes()
        width = dtype.itemsize
        bounds = np.flatnonzero(np.r_[True, i[1:] != i[:-1], True]).tolist()
        which = i.tolist()
        for a, b in pairwise(bounds):
            out[which[a]] = blob[a * width : b * width]
        return out

    def load(self, row: int, obj: Any) -> None:
        self.clear(row)
        if not obj:
            return
        packed = np.frombuffer(obj, dtype=self._cell_dtype)
        b = packed["b"].astype(np.int64)
        cid = self._alloc(b.size)
        self._reset(cid, np.full(b.size, row, dtype=np.int64), b)
        self.ring[row, b % self.r] = cid
        self.acc[cid] = packed["a"]
        if self.minmax:
            self.ext[cid] = packed["x"]

    def clear(self, row: int) -> None:
        cids = self.ring[row]
        used = cids[cids >= 0].astype(np.int64)
        if used.size:
            self.cb[used] = _EMPTY_ID
            self.free.extend(used.tolist())
        self.ring[row] = -1


class BucketSlot:
    """A bucketed window of a non-moments family: per entity ``{bucket: state}``."""

    def __init__(self, span: Span, family: Family, feature: FeatureDef) -> None:
        self.span = span
        self.family = family
        self.feature = feature
        self.entities: dict[int, dict[int, Any]] = {}
        self._keep: tuple[int, int] = (-1, 0)  # (stream time, keep_from of it): one per batch

    def add(self, row: int, ts: int, seq: int, value: Any, st: int) -> None:
        b = self.span.bucket(ts)
        kst, keep = self._keep
        if kst != st:
            keep = self.span.keep_from(st)
            self._keep = (st, keep)
        if b < keep:
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
