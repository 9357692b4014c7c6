"""Fast paths of the per-event window kinds, equal to their pure paths (issue #18).

The window kinds of :mod:`~streamfeat.operators.windows` are the reference: simple
loops over events and a merge of every bucket of the window per entity per query.
The kinds here keep the same state (the same Python objects per bucket, session or
event, so the stored bytes are the same) and give the same values, bit for bit, only
faster:

- :class:`FastBucketSlot` (bucketed windows of the non-moments families): the batch's
  buckets (and a percentile's DDSketch keys) computed with numpy, the events added in one
  tight loop; and queries that do not merge every bucket of the window:
  ``count_distinct``, ``top_k`` and ``percentile`` keep per entity a running *window
  multiset* (value or sketch key -> count over the buckets of the entity's last
  window), moved by the buckets that enter and leave the window and by the events of
  buckets inside it, so a query costs the buckets that moved, not the window's;
  ``first``/``last``/``last_k`` merge the window's buckets newest (or oldest) first and
  stop once no older bucket can change the answer. Whatever the multiset cannot answer
  exactly as the merge would (a ``count_distinct`` state that became a HyperLogLog, a
  ``top_k`` beyond its exact cap, a sketch at its bucket limit) is answered by the
  reference merge.
- :class:`FastExactSlot` (``hop: exact`` windows of the moments family): the window's
  moments of all queried entities at once, with numpy, the sums accumulated one value at
  a time in the kept order as :class:`~streamfeat.operators.aggregations.Moments` does.
- :class:`FastSessionSlot`: the common case (an event at or after its entity's latest
  session start) without scanning every session.

``PartitionOperator(..., pure=True)`` builds the reference kinds instead; the property
tests (``tests/operators/test_fast_paths.py``) check that both give the same values and
bytes for any stream, batch split and event order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from streamfeat.operators.aggregations import (
    AggState,
    Distinct,
    Ends,
    Family,
    Frequencies,
    Quantiles,
    Recent,
    _sort_key,
    empty_value,
    moments_result,
)
from streamfeat.operators.rings import _accumulate_runs
from streamfeat.operators.sketches import _KEY_OFFSET, _MIN_NORMAL, _bucket_value
from streamfeat.operators.slots import NEVER, Batch, _floats, msgpack_header
from streamfeat.operators.windows import BucketSlot, ExactSlot, SessionSlot, Span
from streamfeat.topology.definitions import AggKind, FeatureDef

__all__ = ["FastBucketSlot", "FastExactSlot", "FastSessionSlot"]

I64 = npt.NDArray[np.int64]

_MULTISET = (Family.DISTINCT, Family.FREQUENCIES, Family.QUANTILES)


def _multiset(state: AggState) -> dict[Any, int] | None:
    """A bucket state as value -> count, or ``None`` when it is not a plain multiset
    (a HyperLogLog)."""
    if isinstance(state, Distinct):
        return None if state.values is None else dict.fromkeys(state.values, 1)
    if isinstance(state, Frequencies):
        return state.counts
    if isinstance(state, Quantiles):
        return state.sketch._buckets
    raise TypeError(f"not a multiset state: {type(state).__name__}")  # pragma: no cover


class _Window:
    """An entity's running window multiset: the sum of its buckets ``lo .. hi``."""

    __slots__ = ("counts", "hi", "lo")

    def __init__(self, lo: int, hi: int) -> None:
        self.lo = lo
        self.hi = hi
        self.counts: dict[Any, int] = {}


def _plus(counts: dict[Any, int], items: dict[Any, int]) -> None:
    get = counts.get
    for v, c in items.items():
        counts[v] = get(v, 0) + c


def _minus(counts: dict[Any, int], items: dict[Any, int]) -> None:
    for v, c in items.items():
        left = counts[v] - c
        if left:
            counts[v] = left
        else:
            del counts[v]


def _ends(state: object) -> Ends:
    """A ``first``/``last`` bucket's state (its family's class)."""
    if not isinstance(state, Ends):  # pragma: no cover - the family's class
        raise TypeError(type(state).__name__)
    return state


class FastBucketSlot(BucketSlot):
    """:class:`~streamfeat.operators.windows.BucketSlot` with the fast paths of the
    module doc; same state, same values."""

    def __init__(self, span: Span, family: Family, feature: FeatureDef) -> None:
        super().__init__(span, family, feature)
        self.windows: dict[int, _Window] = {}
        """Per row, its running window multiset (multiset families only)."""
        self.irregular: set[int] = set()
        """Rows with a bucket the multiset cannot follow (answered by the merge)."""
        self.stored: dict[int, dict[int, bytes]] = {}
        """Per row, the encoded ``[b, to_obj()]`` of its buckets unchanged since they were
        last stored (:meth:`dump_encoded`)."""
        self.multiset = family in _MULTISET
        self._limit = feature.exact_up_to
        self._sketch_limit = 0
        if family is Family.QUANTILES:
            self._probe = Quantiles.new(feature).sketch
            self._multiplier = self._probe._multiplier
            self._sketch_limit = self._probe.max_buckets

    # -- adding ---------------------------------------------------------------

    def add(self, batch: Batch, field: str | None, where: str | None) -> None:
        st = batch.stream_time
        keep = self.span.keep_from(st)
        pos, groups = batch.bucket_groups(where, self.span.hop, keep)
        if groups:
            states = self._group_states(groups)
            if self.family in (Family.RECENT, Family.ENDS):
                self._add_items(groups, states, batch, pos, field)
            else:
                column = batch.column(field)
                values = list(map(column.__getitem__, pos.tolist()))
                if self.family is Family.QUANTILES:
                    self._add_quantiles(groups, states, batch, pos, values)
                elif self.family is Family.DISTINCT:
                    self._add_distinct(groups, states, values)
                elif self.family is Family.FREQUENCIES:
                    self._add_frequencies(groups, states, batch, pos, values)
                else:
                    self._add_states(groups, states, batch, pos, values)
        if self.span.hop:  # (a lifetime window keeps its one bucket)
            for row in batch.touched_rows:
                self._prune(row, keep)

    def _group_states(self, groups: list[tuple[int, int, int, int]]) -> list[AggState]:
        """The state of each group's bucket, about to change (a new one if it has none, as
        :meth:`_state_of` makes it; its stored form is forgotten)."""
        entities, stored = self.entities, self.stored
        new, feature = self.state_class.new, self.feature
        out: list[AggState] = []
        append = out.append
        for row, b, _lo, _hi in groups:
            buckets = entities.get(row)
            if buckets is None:
                buckets = entities[row] = {}
            state = buckets.get(b)
            if state is None:
                state = buckets[b] = new(feature)
            held = stored.get(row)
            if held is not None:
                held.pop(b, None)
            append(state)
        return out

    def _add_states(self, groups: list[tuple[int, int, int, int]], states: list[AggState],
                    batch: Batch, pos: I64, values: list[Any]) -> None:
        ts = batch.ts[pos].tolist()
        seqs = (pos + batch.first_seq).tolist()
        for (_row, _b, lo, hi), state in zip(groups, states, strict=True):
            add = state.add
            for j in range(lo, hi):
                add(values[j], ts[j], seqs[j])

    def _add_items(self, groups: list[tuple[int, int, int, int]], states: list[AggState],
                   batch: Batch, pos: I64, field: str | None) -> None:
        """``last_k``, ``first``/``last``: of each group's events with a value, only those
        that can change the state, by ``(ts, seq)``: the ``k`` latest (``last_k``), the
        earliest and the latest (``first``/``last``), handed over at once (``add_items``:
        the ``k`` latest of the held and the given, the least and the greatest). Found
        with one sort of the batch, not a tuple per event; ``(ts, seq)`` are distinct,
        seqs being, and within a batch ``seq`` orders as the position does."""
        m = len(groups)
        group_ids = np.arange(m, dtype=np.int64)
        sizes = np.fromiter((hi - lo for _r, _b, lo, hi in groups), dtype=np.int64, count=m)
        gid = np.repeat(group_ids, sizes)
        kept = np.flatnonzero(batch.present(field)[pos])
        if not kept.size:
            return
        # by (group, ts), a group's equal times in position order (lexsort is stable and
        # a group's positions ascend): the state's own (ts, seq) order
        order = kept[np.lexsort((batch.ts[pos[kept]], gid[kept]))]
        gs = gid[order]
        index = np.arange(order.size, dtype=np.int64)
        ends = np.searchsorted(gs, group_ids, side="right")
        to_end = ends[gs] - index  # 1 for the latest of its group
        if self.family is Family.RECENT:
            first = states[0]
            if not isinstance(first, Recent):  # pragma: no cover - the family's class
                raise TypeError(type(first).__name__)
            chosen = to_end <= first.k
        else:
            starts = np.concatenate(([0], ends[:-1]))  # a group starts where the last ended
            chosen = (to_end == 1) | (index == starts[gs])
        at = pos[order[chosen]]
        column = batch.column(field)
        items = list(zip(batch.ts[at].tolist(), (at + batch.first_seq).tolist(),
                         map(column.__getitem__, at.tolist()), strict=True))
        bounds = np.searchsorted(gs[chosen], np.arange(m + 1, dtype=np.int64)).tolist()
        for g, state in enumerate(states):
            lo, hi = bounds[g], bounds[g + 1]
            if lo == hi:
                continue
            if not isinstance(state, Recent | Ends):  # pragma: no cover - the family's class
                raise TypeError(type(state).__name__)
            state.add_items(items[lo:hi])

    def _in_window(self, row: int, b: int) -> _Window | None:
        win = self.windows.get(row)
        if win is not None and win.lo <= b <= win.hi:
            return win
        return None

    def _add_distinct(self, groups: list[tuple[int, int, int, int]], states: list[AggState],
                      values: list[Any]) -> None:
        limit = self._limit
        for (row, b, lo, hi), state in zip(groups, states, strict=True):
            # (the reference makes the state for a null too)
            if not isinstance(state, Distinct):  # pragma: no cover - the family's class
                raise TypeError(type(state).__name__)
            held = state.values
            if held is None:
                if state.hll is not None:
                    for value in values[lo:hi]:
                        if value is not None:
                            state.hll.add(value)
                continue
            # new values, each as first seen (a set keeps the first of equal values)
            fresh = [v for v in dict.fromkeys(values[lo:hi]) if v is not None and v not in held]
            if not fresh:
                continue
            held.update(fresh)
            win = self._in_window(row, b)
            if win is not None:
                counts = win.counts
                for value in fresh:
                    counts[value] = counts.get(value, 0) + 1
            if len(held) > limit:  # registers are the same whatever the order
                state._to_hll()
                self._irregular(row)

    def _add_frequencies(self, groups: list[tuple[int, int, int, int]],
                         states: list[AggState], batch: Batch, pos: I64,
                         values: list[Any]) -> None:
        for (row, b, lo, hi), state in zip(groups, states, strict=True):
            # (the reference makes the state for a null too)
            if not isinstance(state, Frequencies):  # pragma: no cover - the family's class
                raise TypeError(type(state).__name__)
            counts = state.counts
            group = [v for v in values[lo:hi] if v is not None]
            if len(counts) + len(group) > state.cap:  # Misra-Gries may run: event by event
                ts = batch.ts[pos[lo:hi]].tolist()
                seqs = (pos[lo:hi] + batch.first_seq).tolist()
                for value, t, seq in zip(values[lo:hi], ts, seqs, strict=True):
                    state.add(value, t, seq)
                self._irregular(row)
                continue
            get = counts.get
            for value in group:
                counts[value] = get(value, 0) + 1
            win = self._in_window(row, b)
            if win is not None:
                wc = win.counts
                for value in group:
                    wc[value] = wc.get(value, 0) + 1

    def _add_quantiles(self, groups: list[tuple[int, int, int, int]], states: list[AggState],
                       batch: Batch, pos: I64, values: list[Any]) -> None:
        x, ok = _floats(values)
        if not bool(np.isfinite(x[ok]).all()):  # refused by the sketch: as the reference does
            self._add_states(groups, states, batch, pos, values)
            return
        mag = np.abs(np.where(ok, x, 0.0))
        nonzero = mag >= _MIN_NORMAL
        keys = np.zeros(x.size, dtype=np.int64)
        if nonzero.any():  # DDSketch's own vector mapping (equal to its scalar one)
            k = self._probe._keys_of_magnitudes(mag[nonzero]) + _KEY_OFFSET
            keys[nonzero] = np.where(x[nonzero] > 0, k, -k)
        key_list = keys.tolist()
        good = ok.tolist()
        limit = self._sketch_limit
        for (row, b, lo, hi), state in zip(groups, states, strict=True):
            # (the reference makes the state for a null too)
            if not isinstance(state, Quantiles):  # pragma: no cover - the family's class
                raise TypeError(type(state).__name__)
            group = [key_list[j] for j in range(lo, hi) if good[j]]
            if not group:
                continue
            sketch = state.sketch
            held = sketch._buckets
            if len(held) + len(group) > limit:  # the sketch may collapse: event by event
                for j in range(lo, hi):
                    if good[j]:
                        state.add(values[j], 0, 0)
                self._irregular(row)
                continue
            get = held.get
            for key in group:
                held[key] = get(key, 0) + 1
            sketch._count += len(group)
            least = min(group)
            if sketch._min_key is None or least < sketch._min_key:
                sketch._min_key = least
            win = self._in_window(row, b)
            if win is not None:
                wc = win.counts
                for key in group:
                    wc[key] = wc.get(key, 0) + 1

    def _irregular(self, row: int) -> None:
        self.irregular.add(row)
        self.windows.pop(row, None)

    # -- state the multiset follows --------------------------------------------

    def prune(self, row: int, st: int) -> None:
        self._prune(row, self.span.keep_from(st))

    def _prune(self, row: int, keep: int) -> None:
        buckets = self.entities.get(row)
        if buckets is None:
            return
        win = self.windows.get(row)
        for b in [b for b in buckets if b < keep] if min(buckets) < keep else ():
            if win is not None and win.lo <= b <= win.hi:
                items = _multiset(buckets[b])
                if items is None:  # pragma: no cover - such rows are irregular
                    self._irregular(row)
                    win = None
                else:
                    _minus(win.counts, items)
            del buckets[b]
            stored = self.stored.get(row)
            if stored is not None:
                stored.pop(b, None)
        if win is not None and win.lo < keep:
            win.lo = keep
            if win.hi < keep:
                del self.windows[row]
        if not buckets:
            del self.entities[row]
            self.windows.pop(row, None)
            self.irregular.discard(row)
            self.stored.pop(row, None)

    def dump(self, rows: list[int], st: int) -> list[list[Any] | None]:
        keep = self.span.keep_from(st)
        entities = self.entities
        out: list[list[Any] | None] = []
        for row in rows:
            self._prune(row, keep)
            out.append(self.dump_row(row) if row in entities else None)
        return out

    def dump_row(self, row: int) -> list[Any]:
        buckets = self.entities[row]
        return [[b, _to_obj(buckets[b])] for b in sorted(buckets)]

    def dump_encoded(self, rows: list[int], st: int) -> list[bytes | None]:
        """``msgpack.encode`` of each of :meth:`dump`'s states, built from each bucket's
        encoded ``[b, state]`` (msgpack lays an array out as its header and its items'
        encodings): a bucket is encoded once, at the first commit after it changed, not
        at every commit while it is in the window."""
        keep = self.span.keep_from(st)
        entities, stored = self.entities, self.stored
        encode = msgspec.msgpack.encode
        join = b"".join
        out: list[bytes | None] = []
        append = out.append
        for row in rows:
            self._prune(row, keep)
            buckets = entities.get(row)
            if buckets is None:
                append(None)
                continue
            held = stored.get(row)
            if held is None:
                held = stored[row] = {}
            pieces = []
            for b in sorted(buckets):
                piece = held.get(b)
                if piece is None:
                    piece = held[b] = encode([b, _to_obj(buckets[b])])
                pieces.append(piece)
            append(_array_header(len(pieces)) + join(pieces))
        return out

    def load(self, row: int, obj: object) -> None:
        super().load(row, obj)
        self.windows.pop(row, None)
        self.irregular.discard(row)
        self.stored.pop(row, None)
        if self.multiset and any(_multiset(s) is None for s in self.entities[row].values()):
            self.irregular.add(row)  # a HyperLogLog

    def clear(self, row: int) -> None:
        super().clear(row)
        self.windows.pop(row, None)
        self.irregular.discard(row)
        self.stored.pop(row, None)

    # -- queries ----------------------------------------------------------------

    def values(
        self, rows: I64, t: int, features: Sequence[FeatureDef]
    ) -> tuple[list[list[Any]], I64]:
        if self.multiset:
            return self._multiset_values(rows, t, features)
        if self.family is Family.RECENT:
            return self._recent_values(rows, t, features)
        if self.family is Family.ENDS:
            return self._ends_values(rows, t, features)
        return super().values(rows, t, features)  # through state_at below

    def _ends_values(
        self, rows: I64, t: int, features: Sequence[FeatureDef]
    ) -> tuple[list[list[Any]], I64]:
        """``first``/``last``: what the merge of the window's buckets would answer, the
        oldest non-empty bucket's first and the newest's last (buckets split time)."""
        lo, hi = self.span.window(t)
        keep = self.span.keep_from(t)
        entities = self.entities
        firsts: list[Any] = []
        lasts: list[Any] = []
        nexts: list[int] = []
        never = int(NEVER)
        for row in rows.tolist():
            buckets = entities.get(row)
            if not buckets:
                nexts.append(never)
                firsts.append(None)
                lasts.append(None)
                continue
            nexts.append(self._next_change(buckets, t, keep))
            if len(buckets) == 1:
                inside = [b for b in buckets if lo <= b <= hi]
            else:
                inside = sorted(b for b in buckets if lo <= b <= hi)
            first = last = None
            for b in inside:
                first = _ends(buckets[b]).first
                if first is not None:
                    break
            if first is not None:
                for b in reversed(inside):
                    last = _ends(buckets[b]).last
                    if last is not None:
                        break
            firsts.append(None if first is None else first[2])
            lasts.append(None if last is None else last[2])
        columns = [list(firsts if f.agg is AggKind.FIRST else lasts) for f in features]
        return columns, np.array(nexts, dtype=np.int64)

    def _recent_values(
        self, rows: I64, t: int, features: Sequence[FeatureDef]
    ) -> tuple[list[list[Any]], I64]:
        """``last_k``: the ``k`` latest ``(ts, seq, value)`` of the window's newest buckets
        (buckets split time: once ``k`` are held, no older bucket has a later one)."""
        lo, hi = self.span.window(t)
        keep = self.span.keep_from(t)
        k = 1 if self.feature.k is None else self.feature.k
        column: list[Any] = []
        nexts: list[int] = []
        entities = self.entities
        for row in rows.tolist():
            buckets = entities.get(row)
            if not buckets:
                nexts.append(int(NEVER))
                column.append(None)
                continue
            nexts.append(self._next_change(buckets, t, keep))
            items: list[tuple[int, int, Any]] = []
            for b in sorted(buckets, reverse=True):
                if b > hi:
                    continue
                if b < lo:
                    break
                state = buckets[b]
                if not isinstance(state, Recent):  # pragma: no cover - the family's class
                    raise TypeError(type(state).__name__)
                items.extend(state.heap)
                if len(items) >= k:
                    break
            if not items:
                column.append(None)
                continue
            items.sort(reverse=True)  # (ts, seq) are distinct: values are never compared
            column.append([v for _, _, v in items[:k]])
        return [list(column) for _ in features], np.array(nexts, dtype=np.int64)

    def _next_change(self, buckets: dict[int, AggState], t: int, keep: int) -> int:
        """The next time after ``t`` the window changes by time alone (``keep``:
        ``span.keep_from(t)``)."""
        if not self.span.hop:
            return int(NEVER)
        oldest: int | None = min(buckets)
        if oldest is not None and oldest < keep:
            oldest = min((b for b in buckets if b >= keep), default=None)
        return int(NEVER) if oldest is None else self.span.next_change_one(oldest, t)

    def state_at(self, row: int, t: int) -> tuple[AggState | None, int]:
        if self.family not in (Family.RECENT, Family.ENDS):
            return super().state_at(row, t)
        buckets = self.entities.get(row)
        if not buckets:
            return None, NEVER
        nxt = self._next_change(buckets, t, self.span.keep_from(t))
        lo, hi = self.span.window(t)
        inside = sorted(b for b in buckets if lo <= b <= hi)
        if not inside:
            return None, nxt
        merged = self.new_state()
        if isinstance(merged, Recent):
            # Buckets split time: once k values are held, no older bucket has a later one.
            for b in reversed(inside):
                merged.merge(buckets[b])  # type: ignore[arg-type]
                if len(merged.heap) >= merged.k:
                    break
            return merged, nxt
        if not isinstance(merged, Ends):  # pragma: no cover - the family's class
            raise TypeError(type(merged).__name__)
        # The window's first value is its oldest non-empty bucket's, the last its newest's.
        newest = next((b for b in reversed(inside) if not buckets[b].empty()), None)
        if newest is None:
            return merged, nxt
        oldest = next(b for b in inside if not buckets[b].empty())
        merged.merge(buckets[oldest])  # type: ignore[arg-type]
        if newest != oldest:
            merged.merge(buckets[newest])  # type: ignore[arg-type]
        return merged, nxt

    def _window(self, row: int, buckets: dict[int, AggState], lo: int, hi: int) -> _Window:
        """The row's multiset of buckets ``lo .. hi``, moved there from where it was."""
        win = self.windows.get(row)
        if win is not None and win.lo == lo and win.hi == hi:
            return win
        if win is None or lo < win.lo or hi < win.hi or lo > win.hi:
            win = self.windows[row] = _Window(lo, hi)
            for b, state in buckets.items():
                if lo <= b <= hi:
                    _plus(win.counts, _multiset(state))  # type: ignore[arg-type]
            return win
        counts = win.counts
        if lo > win.lo:
            for b in range(win.lo, lo) if lo - win.lo < len(buckets) else list(buckets):
                if win.lo <= b < lo and b in buckets:
                    _minus(counts, _multiset(buckets[b]))  # type: ignore[arg-type]
        if hi > win.hi:
            for b in range(win.hi + 1, hi + 1) if hi - win.hi < len(buckets) else list(buckets):
                if win.hi < b <= hi and b in buckets:
                    _plus(counts, _multiset(buckets[b]))  # type: ignore[arg-type]
        win.lo, win.hi = lo, hi
        return win

    def _multiset_values(
        self, rows: I64, t: int, features: Sequence[FeatureDef]
    ) -> tuple[list[list[Any]], I64]:
        columns: list[list[Any]] = [[] for _ in features]
        nexts: list[int] = []
        lo, hi = self.span.window(t)
        keep = self.span.keep_from(t)
        family = self.family
        entities, irregular, windows = self.entities, self.irregular, self.windows
        next_change = self._next_change
        # beyond it the merge becomes a HyperLogLog, trims (Misra-Gries) or collapses
        limit = self._sketch_limit if family is Family.QUANTILES else self._limit
        for row in rows.tolist():
            buckets = entities.get(row)
            if not buckets:
                nexts.append(int(NEVER))
                for column, feature in zip(columns, features, strict=True):
                    column.append(empty_value(feature.agg))
                continue
            nexts.append(next_change(buckets, t, keep))
            counts: dict[Any, int] | None = None
            if row not in irregular:
                win = windows.get(row)
                if win is None or win.lo != lo or win.hi != hi:
                    win = self._window(row, buckets, lo, hi)
                counts = win.counts
                if len(counts) > limit:
                    counts = None
            if counts is None:
                state, _ = BucketSlot.state_at(self, row, t)
                for column, feature in zip(columns, features, strict=True):
                    column.append(empty_value(feature.agg) if state is None or state.empty()
                                  else state.result(feature))
                continue
            if family is Family.DISTINCT:  # what _result answers, without the call
                for column, feature in zip(columns, features, strict=True):
                    column.append(len(counts) if counts else empty_value(feature.agg))
                continue
            for column, feature in zip(columns, features, strict=True):
                column.append(self._result(counts, feature, buckets, lo, hi))
        return columns, np.array(nexts, dtype=np.int64)

    def _result(self, counts: dict[Any, int], feature: FeatureDef,
                buckets: dict[int, AggState], lo: int, hi: int) -> Any:
        """What the merged state of the window would answer (``Distinct``, ``Frequencies``,
        ``Quantiles`` ``result``), from the window's multiset."""
        if not counts:
            return empty_value(feature.agg)
        family = self.family
        if family is Family.DISTINCT:
            return len(counts)
        if family is Family.FREQUENCIES:
            k = 1 if feature.k is None else feature.k
            items: Any = counts.items()
            if len(counts) > 4 * k:  # only values counted at least the k-th count can rank
                least = sorted(counts.values(), reverse=True)[k - 1]  # the k-th count
                items = [i for i in items if i[1] >= least]
            if set(map(type, counts)) != _STR_ONLY:
                # Equal values of other kinds (1, 1.0, True) are one key, held as the merge
                # of the buckets in order holds it: as the oldest bucket that has it does.
                first: dict[Any, Any] = {}
                for b in sorted(b for b in buckets if lo <= b <= hi):
                    for key in _multiset(buckets[b]) or ():
                        first.setdefault(key, key)
                items = [(first.get(v, v), c) for v, c in items]
                ranked = sorted(items, key=lambda i: (-i[1], *_sort_key(i[0])))
            else:  # strings only: _sort_key is ("str", value), and no two are equal
                return [[v, -c] for c, v in sorted([(-c, v) for v, c in items])[:k]]
            return [[v, c] for v, c in ranked[:k]]
        q = 0.5 if feature.q is None else feature.q
        rank = math.floor(q * (sum(counts.values()) - 1))
        seen = 0
        for key in sorted(counts):
            seen += counts[key]
            if seen > rank:
                return _bucket_value(self._multiplier, key)
        raise AssertionError("unreachable: bucket counts sum to count")  # pragma: no cover


def _array_header(n: int) -> bytes:
    """msgpack's header of an array of ``n`` items (fixarray, array 16 or array 32)."""
    return msgpack_header(n, 0x90, b"\xdc", b"\xdd")


def _to_obj(state: AggState) -> list[Any]:
    """``state.to_obj()`` (as msgpack writes it), faster where values are all strings
    (their ``_sort_key`` order is the strings' own)."""
    # One value (most buckets of a sliding window's hop hold one or two events) has no
    # order to find, whatever its kind.
    if isinstance(state, Distinct) and state.values is not None:
        values = state.values
        if len(values) == 1 or set(map(type, values)) == _STR_ONLY:
            return [0, sorted(values)]
    elif isinstance(state, Frequencies):
        counts = state.counts
        if len(counts) == 1 or set(map(type, counts)) == _STR_ONLY:
            # (value, count) pairs: msgpack writes a tuple as the list to_obj() gives
            return [sorted(counts.items())]
    elif isinstance(state, Recent):  # (ts, seq) are distinct: values are never compared
        return [sorted(state.heap)]
    return state.to_obj()


_STR_ONLY = {str}


_TS = itemgetter(0)
_VALUE = itemgetter(2)


class FastExactSlot(ExactSlot):
    """:class:`~streamfeat.operators.windows.ExactSlot`, its events added a row at a time and
    the moments family's queries in numpy (module doc); same state, same values."""

    def add(self, batch: Batch, field: str | None, where: str | None) -> None:
        st = batch.stream_time
        pos = np.flatnonzero(batch.passes(where) & (batch.ts > st - self.size))
        if pos.size:
            # each row's events in offset order (a stable sort), appended as the reference does
            rows_arr = batch.rows[pos]
            order = np.argsort(rows_arr, kind="stable")
            pos, rows_arr = pos[order], rows_arr[order]
            heads = np.flatnonzero(np.r_[True, rows_arr[1:] != rows_arr[:-1]])
            bounds = [*heads.tolist(), pos.size]
            column = batch.column(field)
            pos_list = pos.tolist()
            items = list(zip(batch.ts[pos].tolist(), (pos + batch.first_seq).tolist(),
                             [column[i] for i in pos_list], strict=True))
            entities = self.entities
            for row, lo, hi in zip(rows_arr[heads].tolist(), bounds, bounds[1:], strict=False):
                events = entities.get(row)
                if events is None:
                    entities[row] = items[lo:hi]
                else:
                    events.extend(items[lo:hi])
        for row in batch.touched_rows:
            self.prune(row, st)

    def prune(self, row: int, st: int) -> None:
        events = self.entities.get(row)
        if events is not None and (not events or min(map(_TS, events)) <= st - self.size):
            super().prune(row, st)

    def dump_row(self, row: int) -> list[Any]:
        return list(self.entities[row])  # (ts, seq, value) tuples: msgpack writes lists

    def values(
        self, rows: I64, t: int, features: Sequence[FeatureDef]
    ) -> tuple[list[list[Any]], I64]:
        if self.family is not Family.MOMENTS:
            return super().values(rows, t, features)
        m = rows.size
        entities = self.entities
        lists = [entities.get(r, ()) for r in rows.tolist()]
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=m)
        flat = list(chain.from_iterable(lists))
        count = np.zeros(m, dtype=np.int64)
        numbers = np.zeros(m, dtype=np.int64)
        shift = np.zeros(m)
        s1 = np.zeros(m)
        s2 = np.zeros(m)
        mn = np.full(m, np.inf)
        mx = np.full(m, -np.inf)
        nxt = np.full(m, NEVER, dtype=np.int64)
        if flat:
            ts = np.fromiter(map(_TS, flat), dtype=np.int64, count=len(flat))
            x, ok = _floats(list(map(_VALUE, flat)))
            group = np.repeat(np.arange(m), lengths)
            inwin = ts > t - self.size
            g = group[inwin]
            count = np.bincount(g, minlength=m)
            if g.size:
                np.minimum.at(nxt, g, ts[inwin] + self.size)
            gn = g[ok[inwin]]
            xn = x[inwin][ok[inwin]]
            numbers = np.bincount(gn, minlength=m)
            if gn.size:
                heads = np.flatnonzero(np.r_[True, gn[1:] != gn[:-1]])
                owners = gn[heads]
                shift[owners] = xn[heads]
                with np.errstate(all="ignore"):  # inf and nan as Moments.add gives them
                    d = xn - shift[gn]
                    zero = np.zeros(heads.size)
                    s1[owners] = _accumulate_runs(zero, heads, gn.size, d)
                    s2[owners] = _accumulate_runs(zero, heads, gn.size, d * d)
                if any(f.agg in (AggKind.MIN, AggKind.MAX) for f in features):
                    mn[owners] = np.minimum.reduceat(xn, heads)
                    mx[owners] = np.maximum.reduceat(xn, heads)
                    for i in np.flatnonzero((mn == 0.0) | (mx == 0.0)).tolist():
                        # signed zeros: min() and max() keep the first of equal values
                        vals = xn[gn == i].tolist()
                        mn[i] = min(vals)
                        mx[i] = max(vals)
        columns: list[list[Any]] = []
        cl, nl, kl = count.tolist(), numbers.tolist(), shift.tolist()
        s1l, s2l, mnl, mxl = s1.tolist(), s2.tolist(), mn.tolist(), mx.tolist()
        for feature in features:
            agg = feature.agg
            empty = empty_value(agg)
            columns.append([
                empty if c == 0 else moments_result(agg, c, n, k or 0.0, a, b, lo, hi)
                for c, n, k, a, b, lo, hi in zip(cl, nl, kl, s1l, s2l, mnl, mxl, strict=True)
            ])
        return columns, nxt


class FastSessionSlot(SessionSlot):
    """:class:`~streamfeat.operators.windows.SessionSlot` whose events at or after the
    latest session's start skip the scan of every session (module doc)."""

    def add(self, batch: Batch, field: str | None, where: str | None) -> None:
        values, rows, ts = batch.column(field), batch.row_list, batch.ts_list
        first_seq, st = batch.first_seq, batch.stream_time
        passes: list[bool] = batch.passes(where).tolist()
        entities = self.entities
        g = self.gap
        for i in batch.accepted_list:
            row, t = rows[i], ts[i]
            sessions = entities.get(row)
            if sessions:
                latest = sessions[-1]
                # Sessions are disjoint and ordered: an event after the last one's start
                # can only touch that one.
                if t > latest.start and t < latest.last + g and (
                        len(sessions) == 1 or sessions[-2].last + g <= t):
                    if t > latest.last:
                        latest.last = t
                    if passes[i]:
                        latest.state.add(values[i], t, first_seq + i)
                    continue
            self._add(row, t, first_seq + i, values[i], passes[i])
        for row in batch.touched_rows:
            self.prune(row, st)
