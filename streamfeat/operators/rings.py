"""The moments family on bucketed windows, for all entities at once: :class:`MomentsRing`.

Sliding, hopping, tumbling and lifetime windows of ``count sum mean var stddev
min max`` are the bulk of most topologies, so this window kind is numpy through
and through: per entity a chain of its live cells in a table shared by all entities,
newest bucket first, updated once per ``(entity, bucket)`` group per batch. An entity's
memory is that of the buckets it holds, not of the window's length: a day's window of
10-minute hops costs a user with two events two cells, not 145 ring positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from streamfeat.errors import StateError
from streamfeat.operators import kernels
from streamfeat.operators.aggregations import moments_result
from streamfeat.operators.slots import NEVER, Batch
from streamfeat.operators.windows import Span
from streamfeat.topology.definitions import AggKind, FeatureDef, WindowKind

__all__ = ["MomentsRing", "WindowMoments", "moments_column"]

_FREE = np.iinfo(np.int64).min // 2
"""The bucket of a free cell (below every real bucket)."""

_NO_CELLS = np.empty(0, dtype=np.int64)

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

# Columns of MomentsRing.cell_moments
_COUNT = 0  # events
_NUMBERS = 1  # events with a numeric value
_SHIFT = 2  # K: the cell's first numeric value, in offset order
_SUM = 3  # sum(x - K)
_SUM_SQ = 4  # sum((x - K)^2)
_MOMENTS = 5


class FreeCells:
    """Cells free for reuse, a stack in an int64 array (a Python list held an int object
    and a pointer per free cell: 40 bytes, where an entity's live cells cost ~60 each, and
    evicting entities frees hundreds of thousands of cells)."""

    __slots__ = ("_cells", "_n")

    def __init__(self) -> None:
        self._cells: I64 = np.empty(0, dtype=np.int64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def push(self, cells: I64) -> None:
        """Add ``cells`` on top, in order (the last is taken first)."""
        n, m = self._n, int(cells.size)
        if n + m > self._cells.size:
            grown = np.empty(max(n + m, 2 * self._cells.size, 1024), dtype=np.int64)
            grown[:n] = self._cells[:n]
            self._cells = grown
        self._cells[n : n + m] = cells
        self._n = n + m

    def top(self, count: int) -> I64:
        """The ``count`` cells on top (fewer if fewer are free), bottom first; a copy."""
        return self._cells[max(0, self._n - count) : self._n].copy()

    def drop(self, count: int) -> None:
        """Take ``count`` cells off the top (those :meth:`top` gave)."""
        self._n -= min(count, self._n)

    def pop(self) -> int:
        self._n -= 1
        return int(self._cells[self._n])

    @property
    def nbytes(self) -> int:
        return int(self._cells.nbytes)


def _i64(a: npt.ArrayLike) -> I64:
    """``a`` as a contiguous int64 array (the compiled kernels take one layout)."""
    return np.ascontiguousarray(a, dtype=np.int64)


def _sum_by(groups: I64, weights: F64, m: int) -> F64:
    """Per-group sums, each accumulated left to right in input order (np.bincount is a
    sequential loop), so equal inputs in equal order give bit-identical sums."""
    return np.bincount(groups, weights=weights, minlength=m).astype(np.float64, copy=False)


_LONG_RUN = 32

FEW_EVENTS = 96
"""Batches of at most this many events (after the ``where`` filter) are added to a ring one
``(row, bucket)`` group at a time in Python: on small batches numpy's fixed cost per call
(a few µs, some fifty calls per ring) dominates, and freshness at modest rates is made of
small batches. Both paths do the same float operations in the same order."""

FEW_ROWS, FEW_CELLS = 8, 40
"""Queries of at most this many rows reading at most this many live cells sum them in
Python (see :data:`FEW_EVENTS`; past these, one numpy pass over all rows is cheaper)."""


def _accumulate_runs(base: F64, starts: I64, n: int, values: F64) -> F64:
    """:func:`_accumulate_lengths` of runs starting at ``starts`` in ``n`` values."""
    if starts.size == 0:
        return base.copy()
    return _accumulate_lengths(base, starts, _run_lengths(starts, n), values)


def _run_lengths(starts: I64, n: int) -> I64:
    """Lengths of the runs starting at ``starts`` (ascending, not empty) in ``n`` values."""
    lengths = np.empty(starts.size, dtype=np.int64)
    np.subtract(starts[1:], starts[:-1], out=lengths[:-1])
    lengths[-1] = n - starts[-1]
    return lengths


def _accumulate_lengths(base: F64, starts: I64, lengths: I64, values: F64) -> F64:
    """``base[g] + v[s] + v[s+1] + ...`` for each run ``g`` of ``values``, added one value at
    a time from left to right, exactly as a sequential loop over the events would.

    Adding a batch's values one by one onto the stored sum (rather than adding the
    batch's subtotal) makes a float sum independent of how the stream was cut into
    batches: the replay then equals the stream bit for bit. Runs share a numpy step per
    position; runs longer than ``_LONG_RUN`` use one sequential ``np.cumsum`` each.
    """
    if lengths.size == values.size:  # every run one value long: base + v, as the loop does
        return base + values
    out = base.copy()
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
class WindowMoments:
    """Moments of the window of each queried row, shifted to ``shift`` (the shift of the
    row's oldest cell with a number in the window)."""

    count: F64
    numbers: F64
    shift: F64
    sum_dev: F64
    """``sum(x - shift)``"""
    sum_sq_dev: F64
    """``sum((x - shift)^2)``"""
    minimum: F64 | None
    """``None`` when no feature of the slot needs min or max."""
    maximum: F64 | None


def moments_column(agg: AggKind, m: WindowMoments) -> list[Any]:
    """The vector twin of :func:`~streamfeat.operators.aggregations.moments_result` (same
    float operations, same answers): one value of ``agg`` per row of ``m``."""
    if agg is AggKind.COUNT:
        return m.count.astype(np.int64).tolist()  # type: ignore[no-any-return]
    n, k, s1, s2 = m.numbers, m.shift, m.sum_dev, m.sum_sq_dev
    with np.errstate(all="ignore"):
        if agg is AggKind.SUM:
            v = n * k + s1
        elif agg is AggKind.MEAN:
            v = k + s1 / n
        elif agg in (AggKind.MIN, AggKind.MAX):
            ext = m.minimum if agg is AggKind.MIN else m.maximum
            if ext is None:  # pragma: no cover - the plan keeps min/max for such slots
                raise StateError(f"internal error: {agg.value} of a ring without min/max")
            v = ext
        else:
            v = np.maximum((s2 - s1 * s1 / n) / n, 0.0)
            if agg is AggKind.STDDEV:
                v = np.sqrt(v)
    out: list[Any] = v.tolist()
    empty = n == 0
    if empty.any():
        fill = 0 if agg is AggKind.SUM else None
        for i in np.flatnonzero(empty).tolist():
            out[i] = fill
    return out


class MomentsRing:
    """Moments of a bucketed window for all entities (see module doc).

    Layout: a table of *cells*, one per live ``(row, bucket)``, and per row a chain
    through them: ``head[row]`` is the cell of the row's newest bucket (``-1``: none),
    ``cell_next[cell]`` the row's next older one (``-1``: the last), so a chain holds
    its buckets in strictly descending order. A cell holds ``c n K s1 s2``: events,
    numeric values, the shift ``K`` (the cell's first numeric value, in offset order),
    ``sum(x - K)`` and ``sum((x - K)^2)``, plus ``min max`` when a feature needs them.
    Cells of expired buckets (the tail of each chain) are cut off, swept and reused
    as stream time moves, so memory is 4 bytes per entity plus about 60 bytes per
    live bucket. Events arrive mostly in time order, so the bucket an event goes to
    is almost always the chain's head, or a new head.

    Cells are merged at query time onto the shift of one live cell, so every
    shift is a value inside the window and the variance stays accurate however
    the data drift; for integers (squares of deviations below 2**53) every sum
    is exact, so the state does not depend on how the stream was cut into batches.
    """

    def __init__(self, span: Span, minmax: bool, capacity: int = 1024) -> None:
        self.span = span
        """Bucket arithmetic of the window."""
        self.minmax = minmax
        """Whether cells keep min and max (only when a feature of the slot needs them)."""
        self.ring_size = span.ring
        """``R``: the most buckets a row keeps (those a query at or after stream time can
        read)."""
        self.capacity = 0
        """Rows the ring has room for."""
        self.head: I32 = np.empty(0, dtype=np.int32)
        """``head[row]``: the cell of the row's newest bucket, ``-1`` if none."""
        self.cell_next: I32 = np.empty(0, dtype=np.int32)
        """Per cell, the cell of the row's next older bucket, ``-1`` if none."""
        self.cells_used = 0
        """High-water mark of the cell table: cells at or above it were never used."""
        self.cell_bucket: I64 = np.empty(0, dtype=np.int64)
        """Bucket of each cell; ``_FREE`` for a free cell."""
        self.cell_row: I64 = np.empty(0, dtype=np.int64)
        """Row (entity) of each cell."""
        self.cell_moments: F64 = np.empty((0, _MOMENTS), dtype=np.float64)
        """Per cell ``c n K s1 s2`` (the ``_COUNT`` ... ``_SUM_SQ`` columns)."""
        self.cell_extremes: F64 = np.empty((0, 2), dtype=np.float64)
        """Per cell ``min max`` of its numbers (allocated only with :attr:`minmax`)."""
        self.free_cells = FreeCells()
        """Cells below the high-water mark free for reuse."""
        self.swept_to = _FREE
        """Lowest bucket kept by the last :meth:`sweep`: older cells have been freed."""
        self.grow(capacity)

    def grow(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        new = max(capacity, self.capacity + self.capacity // 4)
        head = np.full(new, -1, dtype=np.int32)
        head[: self.capacity] = self.head
        self.head, self.capacity = head, new

    def reserve(self, rows: int) -> None:
        self.grow(rows)

    @property
    def nbytes(self) -> int:
        """Bytes of the heads and of the cell table (allocated, not only used)."""
        return int(self.head.nbytes + self.cell_bucket.nbytes + self.cell_row.nbytes
                   + self.cell_next.nbytes + self.cell_moments.nbytes
                   + (self.cell_extremes.nbytes if self.minmax else 0)
                   + self.free_cells.nbytes)

    def approx_bytes(self) -> int:
        return self.nbytes

    def live_bytes(self, rows: int) -> int:
        """Bytes ``rows`` entities' state needs here: their heads and the live cells
        (what a memory budget counts; :attr:`nbytes` is what is allocated)."""
        cell = 8 * (2 + _MOMENTS + (2 if self.minmax else 0)) + 4
        return int(rows * 4 + (self.cells_used - len(self.free_cells)) * cell)

    def _alloc(self, count: int) -> I64:
        free = self.free_cells
        take = min(count, len(free))
        ids = np.empty(count, dtype=np.int64)
        if take:
            ids[:take] = free.top(take)
            free.drop(take)
        rest = count - take
        if rest:
            start = self.cells_used
            need = start + rest
            self._grow_cells(need)
            ids[take:] = np.arange(start, need)
            self.cells_used = need
        return ids

    def _grow_cells(self, need: int) -> None:
        """Make the cell table hold at least ``need`` cells."""
        size = self.cell_bucket.size
        if need <= size:
            return
        grown = max(need, 2 * size, 1024)
        bucket = np.full(grown, _FREE, dtype=np.int64)
        bucket[:size] = self.cell_bucket
        row = np.zeros(grown, dtype=np.int64)
        row[:size] = self.cell_row
        nxt = np.full(grown, -1, dtype=np.int32)
        nxt[:size] = self.cell_next
        moments = np.zeros((grown, _MOMENTS), dtype=np.float64)
        moments[:size] = self.cell_moments
        self.cell_bucket, self.cell_row, self.cell_moments = bucket, row, moments
        self.cell_next = nxt
        if self.minmax:
            extremes = np.empty((grown, 2), dtype=np.float64)
            extremes[:size] = self.cell_extremes
            self.cell_extremes = extremes

    def _reset(self, cid: I64, rows: I64, buckets: I64) -> None:
        self.cell_bucket[cid] = buckets
        self.cell_row[cid] = rows
        self.cell_moments[cid] = 0.0
        if self.minmax:
            self.cell_extremes[cid, 0] = np.inf
            self.cell_extremes[cid, 1] = -np.inf

    def sweep(self, st: int) -> None:
        """Free the cells of buckets no query at or after ``st`` can read."""
        keep = self.span.keep_from(st)
        if keep <= self.swept_to:
            return
        self.swept_to = keep
        n = self.cells_used
        buckets = self.cell_bucket[:n]
        old = buckets < keep
        dead = np.flatnonzero(old & (buckets != _FREE))
        if dead.size == 0:
            return
        # Dead cells are the tails of their chains (buckets descend along a chain): cut
        # each chain before its first dead cell, from a live cell or from the head.
        nxt = self.cell_next[:n]
        linked = np.flatnonzero(~old & (nxt >= 0))
        cut = linked[old[nxt[linked]]]
        self.cell_next[cut] = -1
        rows = self.cell_row[dead]
        heads = self.head[rows]
        self.head[rows[heads >= 0][old[heads[heads >= 0]]]] = -1
        self.cell_bucket[dead] = _FREE
        self.free_cells.push(dead)

    def add(self, batch: Batch, field: str | None, where: str | None) -> None:
        positions = batch.by_entity
        if where is not None:
            positions = positions[np.asarray(batch.passes(where)[positions], dtype=np.bool_)]
        numbers, valid = batch.numbers(field)
        self.update(batch.rows[positions], batch.ts[positions], positions, numbers, valid,
                    batch.stream_time)

    def update(self, e: I64, ts: I64, orig: I64, xs: F64, oks: B, st: int) -> None:
        """Add events (accepted, passing ``where``) sorted by ``(row, ts, offset)``.

        ``e`` are the events' rows, ``orig`` their positions in the batch (offset
        order) and ``xs``, ``oks`` the batch's numeric values and their validity, by
        position. The sort makes every ``(row, bucket)`` group a contiguous run, so
        groups are found without sorting again.
        """
        self.sweep(st)
        if e.size == 0:
            return
        if kernels.COMPILED:
            self._update_compiled(e, ts, orig, xs, oks, st)
            return
        if e.size <= FEW_EVENTS:
            self._update_few(e, ts, orig, xs, oks, st)
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
        inv = np.cumsum(new) - 1  # group of each event
        ue, ub = e[starts], b[starts]  # row and bucket of each group
        cid = self._cells_of(ue, ub)
        m = starts.size
        cells = self.cell_moments[cid]
        has = cells[:, _NUMBERS] > 0  # the cell already has its shift K
        if not has.all() and valid.any():
            vi = np.flatnonzero(valid)
            gv = inv[vi]
            step = np.empty(gv.size, dtype=np.bool_)
            step[0] = True
            np.not_equal(gv[1:], gv[:-1], out=step[1:])
            vstart = np.flatnonzero(step)
            groups = gv[vstart]
            first = np.minimum.reduceat(orig[vi], vstart)  # earliest offset of the group
            fresh_k = ~has[groups]
            cells[groups[fresh_k], _SHIFT] = xs[first[fresh_k]]
        # Sums of values near float's limits become inf or nan, as Python's floats do
        # (the moments state's twin): served as absent, never an error.
        with np.errstate(over="ignore", invalid="ignore"):
            d = np.where(valid, x - cells[inv, _SHIFT], 0.0)
            # Accumulate each group's values in offset order, one at a time (see
            # _accumulate_runs): the float sums then do not depend on batch boundaries.
            # (by group, then offset: one int64 key sorts faster than lexsort's two)
            by_offset = np.argsort(inv * (int(orig.max()) + 1) + orig, kind="stable")
            d = d[by_offset]
            lengths = _run_lengths(starts, e.size)
            cells[:, _COUNT] += lengths
            cells[:, _NUMBERS] += np.bincount(inv, weights=valid, minlength=m)
            cells[:, _SUM] = _accumulate_lengths(cells[:, _SUM], starts, lengths, d)
            cells[:, _SUM_SQ] = _accumulate_lengths(cells[:, _SUM_SQ], starts, lengths, d * d)
        self.cell_moments[cid] = cells
        if self.minmax and valid.any():
            # + 0.0 makes -0.0 into 0.0: numpy's minimum and maximum keep the later of two
            # equal values, so a cell holding 0.0 and -0.0 would keep whichever came in the
            # later batch, and the state would depend on where batches were cut.
            gi, gx = inv[valid], x[valid] + 0.0
            lo = np.full(m, np.inf)
            hi = np.full(m, -np.inf)
            np.minimum.at(lo, gi, gx)
            np.maximum.at(hi, gi, gx)
            cur = self.cell_extremes[cid]
            cur[:, 0] = np.minimum(cur[:, 0], lo)
            cur[:, 1] = np.maximum(cur[:, 1], hi)
            self.cell_extremes[cid] = cur

    def _cells_of(self, rows: I64, buckets: I64) -> I64:
        """The cell of each ``(row, bucket)`` group (sorted by row, then bucket; distinct),
        a new one linked into its row's chain where the row had none."""
        m = rows.size
        cid = np.full(m, -1, dtype=np.int64)
        prev = np.full(m, -1, dtype=np.int64)  # the chain's cell before the group's place
        succ = self.head[rows].astype(np.int64)  # the cell at the group's place
        active = np.arange(m)
        # Walk every group's chain at once, one link per step, until its bucket or an older
        # one: in time-ordered streams the first step settles nearly every group.
        while active.size:
            at = succ[active]
            on = at >= 0
            active, at = active[on], at[on]
            have = self.cell_bucket[at]
            want = buckets[active]
            found = have == want
            cid[active[found]] = at[found]
            newer = have > want
            active, at = active[newer], at[newer]
            prev[active] = at
            succ[active] = self.cell_next[at]
        missing = np.flatnonzero(cid < 0)
        if missing.size == 0:
            return cid
        fresh = self._alloc(missing.size)
        cid[missing] = fresh
        mr, mb = rows[missing], buckets[missing]
        self._reset(fresh, mr, mb)
        mp = prev[missing]
        # New cells of a row that go between the same two cells are consecutive groups, by
        # ascending bucket: link them newest first, then the place's neighbours to them.
        first = np.ones(missing.size, dtype=np.bool_)
        first[1:] = (mr[1:] != mr[:-1]) | (mp[1:] != mp[:-1])
        last = self._link_runs(fresh, first, succ[missing][first])
        newest, before, row = fresh[last], mp[last], mr[last]
        linked = before >= 0
        self.cell_next[before[linked]] = newest[linked]
        self.head[row[~linked]] = newest[~linked]
        return cid

    def _link_runs(self, cells: I64, first: B, older: I64 | int) -> B:
        """Link ``cells`` (runs by ascending bucket, ``first`` marking each run's oldest)
        newest first within each run, each run's oldest to its ``older`` cell (``-1``: the
        chain ends there); returns the mask of each run's newest (what links to it)."""
        last = np.ones(cells.size, dtype=np.bool_)
        last[:-1] = first[1:]
        nxt = np.empty(cells.size, dtype=np.int64)
        nxt[1:] = cells[:-1]
        nxt[first] = older
        self.cell_next[cells] = nxt
        return last

    def _update_compiled(self, e: I64, ts: I64, orig: I64, xs: F64, oks: B, st: int) -> None:
        """:meth:`update` by :func:`~streamfeat.operators.kernels.update_groups` (the float
        operations of :meth:`_update_few`, compiled)."""
        n = int(e.size)
        free = self.free_cells
        tail = free.top(n) if free else _NO_CELLS
        self._grow_cells(self.cells_used + max(0, n - tail.size))  # every event a new cell
        taken, used = kernels.update_groups(
            _i64(e), _i64(self.span.buckets(ts)), _i64(orig), np.asarray(xs, dtype=np.float64),
            np.asarray(oks, dtype=np.bool_), self.span.keep_from(st), self.head,
            self.cell_next, self.cell_bucket, self.cell_row, self.cell_moments, self.cell_extremes,
            self.minmax, tail, self.cells_used)
        if taken:
            free.drop(taken)
        self.cells_used = int(used)

    def _alloc_one(self) -> int:
        """One cell, as :meth:`_alloc` would give it."""
        if self.free_cells:
            return self.free_cells.pop()
        if self.cells_used < self.cell_bucket.size:
            self.cells_used += 1
            return self.cells_used - 1
        return int(self._alloc(1)[0])

    def _update_few(self, e: I64, ts: I64, orig: I64, xs: F64, oks: B, st: int) -> None:
        """:meth:`update` for a small batch: the same groups, the same float operations in
        the same order (each group's values onto the cell one at a time, in offset order),
        one ``(row, bucket)`` group at a time in Python."""
        span = self.span
        keep = span.keep_from(st)
        rows: list[int] = e.tolist()
        buckets: list[int] = span.buckets(ts).tolist()
        offsets: list[int] = orig.tolist()
        xl: list[float] = xs[orig].tolist()
        vl: list[bool] = oks[orig].tolist()
        head = self.head
        cell_next, cell_bucket, cell_moments = self.cell_next, self.cell_bucket, self.cell_moments
        minmax = self.minmax
        n = len(rows)
        i = 0
        while i < n:
            row, bucket = rows[i], buckets[i]
            j = i + 1
            while j < n and rows[j] == row and buckets[j] == bucket:
                j += 1
            if bucket < keep:  # a whole group: its bucket can no longer be read
                i = j
                continue
            before, cid = -1, int(head[row])
            while cid >= 0 and int(cell_bucket[cid]) > bucket:
                before, cid = cid, int(cell_next[cid])
            fresh = cid < 0 or int(cell_bucket[cid]) != bucket
            if fresh:
                older = cid
                cid = self._alloc_one()
                # the cell table may have grown: new arrays
                cell_next, cell_bucket = self.cell_next, self.cell_bucket
                cell_moments = self.cell_moments
                cell_next[cid] = older
                if before < 0:
                    head[row] = cid
                else:
                    cell_next[before] = cid
                cell_bucket[cid] = bucket
                self.cell_row[cid] = row
                count, numbers, shift, s1, s2 = 0.0, 0.0, 0.0, 0.0, 0.0
                lo, hi = math.inf, -math.inf
            else:
                count, numbers, shift, s1, s2 = cell_moments[cid].tolist()
                if minmax:
                    lo, hi = self.cell_extremes[cid].tolist()
            group = range(i, j) if j - i == 1 else sorted(range(i, j), key=offsets.__getitem__)
            count += j - i
            if numbers == 0:
                for k in group:
                    if vl[k]:
                        shift = xl[k]
                        break
            for k in group:
                if vl[k]:
                    numbers += 1.0
                    d = xl[k] - shift
                    if minmax:
                        x = xl[k] + 0.0  # -0.0 as 0.0, as in update()
                        if x < lo:
                            lo = x
                        if x > hi:
                            hi = x
                else:
                    d = 0.0
                s1 += d
                s2 += d * d
            cell_moments[cid] = (count, numbers, shift, s1, s2)
            if minmax:
                self.cell_extremes[cid] = (lo, hi)
            i = j

    def _live(self, rows: I64, t: int) -> tuple[I64, I64, I64]:
        """(index into ``rows``, cell id, bucket) of every cell of ``rows`` kept as of ``t``.

        Scans the cell table or walks the rows' chains, whichever touches less memory (the
        walk when ``rows`` repeat); the order of the result is unspecified.
        """
        keep = self.span.keep_from(t)
        if self.cells_used < 4 * rows.size:
            n = self.cells_used
            index = np.arange(rows.size)
            at = np.full(self.capacity, -1, dtype=np.int64)
            at[rows] = index
            if (at[rows] == index).all():  # distinct rows
                buckets = self.cell_bucket[:n]
                pos = at[self.cell_row[:n]]
                cid = np.flatnonzero((buckets >= keep) & (pos >= 0))  # free cells: no bucket
                return pos[cid], cid, buckets[cid]
        return self._walk(rows, keep)

    def _walk(self, rows: I64, keep: int) -> tuple[I64, I64, I64]:
        """(index into ``rows``, cell id, bucket) of every cell of ``rows`` of a bucket at
        least ``keep`` (``_FREE``: every cell), following all the chains at once."""
        index = np.arange(rows.size)
        at = self.head[rows].astype(np.int64)
        found: list[tuple[I64, I64, I64]] = []
        while index.size:
            on = at >= 0
            index, at = index[on], at[on]
            buckets = self.cell_bucket[at]
            kept = buckets >= keep  # the rest of a chain is older still
            index, at, buckets = index[kept], at[kept], buckets[kept]
            found.append((index, at, buckets))
            at = self.cell_next[at].astype(np.int64)
        if len(found) == 1:
            return found[0]
        return (np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found]),
                np.concatenate([f[2] for f in found]))

    def query(self, rows: I64, t: int,
              live: tuple[I64, I64, I64] | None = None) -> tuple[WindowMoments, I64]:
        """Window moments as of ``t`` for ``rows``, and each row's next change time
        (``live``: :meth:`_live` of ``rows`` at ``t`` when already gathered)."""
        if live is None and self._compiled_query(rows.size):
            return self._query_compiled(rows, t)
        m = rows.size
        lo, hi = self.span.window(t)
        i, cid, bids = self._live(rows, t) if live is None else live
        inwin = (bids >= lo) & (bids <= hi)
        wi, wc, wb = i[inwin], cid[inwin], bids[inwin]
        # Sum each row's cells in bucket order, whatever order the cells were allocated in.
        order = np.lexsort((wb, wi))
        wi, wc, wb = wi[order], wc[order], wb[order]
        cells = self.cell_moments[wc]
        nc, kc = cells[:, _NUMBERS], cells[:, _SHIFT]
        k0 = np.zeros(m)
        num = np.flatnonzero(nc > 0)
        if num.size:
            wn, bn = wi[num], wb[num]
            oldest = np.full(m, NEVER, dtype=np.int64)
            np.minimum.at(oldest, wn, bn)
            pick = bn == oldest[wn]  # one cell per row: buckets of a row are distinct
            k0[wn[pick]] = kc[num[pick]]
        with np.errstate(over="ignore", invalid="ignore"):  # inf and nan as in add()
            delta = np.where(nc > 0, kc - k0[wi], 0.0)
            s1c = cells[:, _SUM]
            sum_dev = _sum_by(wi, s1c + nc * delta, m)
            sum_sq_dev = _sum_by(
                wi, cells[:, _SUM_SQ] + 2.0 * delta * s1c + nc * delta * delta, m)
        minimum = maximum = None
        if self.minmax:
            ext = self.cell_extremes[wc]
            minimum = np.full(m, np.inf)
            maximum = np.full(m, -np.inf)
            np.minimum.at(minimum, wi, ext[:, 0])
            np.maximum.at(maximum, wi, ext[:, 1])
        moments = WindowMoments(
            count=_sum_by(wi, cells[:, _COUNT], m),
            numbers=_sum_by(wi, nc, m),
            shift=k0,
            sum_dev=sum_dev,
            sum_sq_dev=sum_sq_dev,
            minimum=minimum,
            maximum=maximum,
        )
        nxt = np.full(m, NEVER, dtype=np.int64)
        if self.span.hop and i.size:
            np.minimum.at(nxt, i, self.span.next_change(bids, t))
        return moments, nxt

    def _compiled_query(self, rows: int) -> bool:
        """Whether a query of ``rows`` rows takes the compiled kernel (whenever there is one:
        it reads each row's own cells, however many rows)."""
        return kernels.COMPILED

    def _query_compiled(self, rows: I64, t: int) -> tuple[WindowMoments, I64]:
        """:meth:`query` by :func:`~streamfeat.operators.kernels.query_rows` (the float
        operations of :meth:`_values_few`, compiled)."""
        span = self.span
        lo, hi = span.window(t)
        rows = _i64(rows)
        out = np.empty((rows.size, 7), dtype=np.float64)
        nxt = np.empty(rows.size, dtype=np.int64)
        change = 0 if not span.hop else 1 if span.kind is WindowKind.TUMBLING else 2
        kernels.query_rows(rows, span.keep_from(t), lo, hi, self.head, self.cell_next,
                           self.cell_bucket, self.cell_moments, self.cell_extremes, self.minmax,
                           change, span.size, span.hop, span.final, t, int(NEVER),
                           self.ring_size, out, nxt)
        moments = WindowMoments(
            count=out[:, 0], numbers=out[:, 1], shift=out[:, 2], sum_dev=out[:, 3],
            sum_sq_dev=out[:, 4], minimum=out[:, 5] if self.minmax else None,
            maximum=out[:, 6] if self.minmax else None)
        return moments, nxt

    def values(
        self, rows: I64, t: int, features: Sequence[FeatureDef]
    ) -> tuple[list[list[Any]], I64]:
        if self._compiled_query(rows.size):
            moments, nxt = self._query_compiled(rows, t)
            return [moments_column(f.agg, moments) for f in features], nxt
        live = self._live(rows, t)
        if rows.size <= FEW_ROWS and live[0].size <= FEW_CELLS:
            return self._values_few(rows.size, live, t, features)
        moments, nxt = self.query(rows, t, live)
        return [moments_column(f.agg, moments) for f in features], nxt

    def _values_few(
        self, m: int, live: tuple[I64, I64, I64], t: int, features: Sequence[FeatureDef]
    ) -> tuple[list[list[Any]], I64]:
        """:meth:`values` over few cells, summed in Python: the same float operations in
        the same order as :meth:`query` (each row's cells by bucket, onto the shift of its
        oldest cell with a number) and :func:`moments_result`, the scalar twin of
        :func:`moments_column`."""
        span = self.span
        lo, hi = span.window(t)
        index, cids, buckets = live
        nxt = [int(NEVER)] * m
        per_row: list[list[tuple[int, int]]] = [[] for _ in range(m)]
        for r, cid, b in zip(index.tolist(), cids.tolist(), buckets.tolist(), strict=True):
            if span.hop:
                change = span.next_change_one(b, t)
                if change < nxt[r]:
                    nxt[r] = change
            if lo <= b <= hi:
                per_row[r].append((b, cid))
        order = [cid for cells in per_row
                 for _b, cid in (sorted(cells) if len(cells) > 1 else cells)]
        moments = self.cell_moments[order].tolist()
        extremes = self.cell_extremes[order].tolist() if self.minmax else None
        columns: list[list[Any]] = [[] for _ in features]
        at = 0
        for cells in per_row:
            mine = moments[at : at + len(cells)]
            k0 = next((kc for _c, nc, kc, _s1, _s2 in mine if nc > 0), 0.0)
            count = numbers = s1 = s2 = 0.0
            for cc, nc, kc, a1, a2 in mine:
                delta = kc - k0 if nc > 0 else 0.0
                count += cc
                numbers += nc
                s1 += a1 + nc * delta
                s2 += a2 + 2.0 * delta * a1 + nc * delta * delta
            mn, mx = math.inf, -math.inf
            if extremes is not None:
                for e0, e1 in extremes[at : at + len(cells)]:
                    if e0 < mn:
                        mn = e0
                    if e1 > mx:
                        mx = e1
            at += len(cells)
            for f, column in zip(features, columns, strict=True):
                column.append(moments_result(f.agg, count, numbers, k0, s1, s2, mn, mx))
        return columns, np.asarray(nxt, dtype=np.int64)

    @property
    def _cell_dtype(self) -> np.dtype[np.void]:
        """A stored cell: little-endian ``bucket`` then the moments (then min, max)."""
        fields: list[tuple[str, str, tuple[int, ...]]] = [
            ("bucket", "<i8", ()), ("moments", "<f8", (_MOMENTS,))]
        if self.minmax:
            fields.append(("extremes", "<f8", (2,)))
        return np.dtype(fields)

    def dump(self, rows: list[int], st: int) -> list[bytes | None]:
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
        packed["bucket"] = bids
        packed["moments"] = self.cell_moments[cid]
        if self.minmax:
            packed["extremes"] = self.cell_extremes[cid]
        blob = packed.tobytes()
        width = dtype.itemsize
        bounds = np.flatnonzero(np.r_[True, i[1:] != i[:-1], True]).tolist()
        which = i.tolist()
        for a, b in pairwise(bounds):
            out[which[a]] = blob[a * width : b * width]
        return out

    def load(self, row: int, obj: object) -> None:
        self.clear(row)
        if not obj:
            return
        if not isinstance(obj, bytes):
            raise StateError(
                f"corrupt moments state (packed cells expected, got {type(obj).__name__}); "
                "delete the partition's state directory and replay from the snapshots"
            )
        self._restore(np.full(len(obj) // self._cell_dtype.itemsize, row, dtype=np.int64),
                      np.frombuffer(obj, dtype=self._cell_dtype))

    def load_many(self, rows: list[int], objs: list[object]) -> None:
        """:meth:`load` of many distinct rows at once (a few numpy calls in all), rows that
        hold no cell: new ones, or ones :meth:`clear_many` emptied (the caller knows which
        rows held state; clearing the rest again cost a gather of their whole ring rows)."""
        if not rows:
            return
        kept: list[int] = []
        blobs: list[bytes] = []
        for row, obj in zip(rows, objs, strict=True):
            if not obj:
                continue
            if not isinstance(obj, bytes):
                raise StateError(
                    f"corrupt moments state (packed cells expected, got {type(obj).__name__}); "
                    "delete the partition's state directory and replay from the snapshots"
                )
            kept.append(row)
            blobs.append(obj)
        if not blobs:
            return
        dtype = self._cell_dtype
        packed = np.frombuffer(b"".join(blobs), dtype=dtype)
        counts = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs)) // dtype.itemsize
        self._restore(np.repeat(np.asarray(kept, dtype=np.int64), counts), packed)

    def _restore(self, cell_rows: I64, packed: npt.NDArray[np.void]) -> None:
        """Cells of rows that hold none, from their stored records (each row's contiguous,
        by ascending bucket, as :meth:`dump` writes them), each row's chain linked newest
        first."""
        if cell_rows.size == 0:
            return
        buckets = packed["bucket"].astype(np.int64)
        if buckets.size > 1 and not (np.diff(buckets)[cell_rows[1:] == cell_rows[:-1]] > 0).all():
            raise StateError(
                "corrupt moments state (buckets out of order); delete the partition's state "
                "directory and replay from the snapshots")
        cid = self._alloc(buckets.size)
        self._reset(cid, cell_rows, buckets)
        self.cell_moments[cid] = packed["moments"]
        if self.minmax:
            self.cell_extremes[cid] = packed["extremes"]
        oldest = np.ones(cid.size, dtype=np.bool_)
        oldest[1:] = cell_rows[1:] != cell_rows[:-1]
        newest = self._link_runs(cid, oldest, -1)
        self.head[cell_rows[newest]] = cid[newest]

    def clear_many(self, rows: I64) -> None:
        """:meth:`clear` of many rows at once."""
        rows = np.asarray(rows, dtype=np.int64)
        _i, used, _b = self._walk(rows, _FREE)
        if used.size:
            self.cell_bucket[used] = _FREE
            self.free_cells.push(used)
        self.head[rows] = -1

    def clear(self, row: int) -> None:
        self.clear_many(np.array([row], dtype=np.int64))
