"""Mergeable aggregation states, one class per family of aggregations.

Each state takes events one by one (``add(value, ts, seq)``), merges with
another state of the same kind (``merge``, in place, associative), answers
every aggregation of its family (``result``) and round-trips exactly through
plain msgpack-able values (``to_obj`` / ``from_obj``): the :class:`AggState`
protocol. :data:`STATE_CLASSES` maps each family to its class, so the window
kinds build and restore states without knowing the families.

Families (aggregations that can share one state):

- :class:`Moments`: ``count sum mean var stddev min max``. Shifted exact-ish
  moments ``(c, n, K, s1 = sum(x - K), s2 = sum((x - K)^2), min, max)``, where
  ``K`` is the first numeric value the state saw: stable for data near its
  first value, exact (and so independent of how events are grouped) for
  integers below 2**53.
- :class:`Distinct`: ``count_distinct``; an exact set up to ``exact_up_to``
  values, then a HyperLogLog (precision 14, standard error about 0.8 %).
- :class:`Quantiles`: ``percentile``; a DDSketch with 1 % relative accuracy.
- :class:`Ends`: ``first`` and ``last`` by ``(ts, seq)``.
- :class:`Recent`: ``last_k``: the ``k`` values with the largest ``(ts, seq)``.
- :class:`Frequencies`: ``top_k``: exact counts while a state holds at most
  ``exact_up_to`` distinct values (default 10000); beyond that a Misra-Gries summary
  (mergeable): a count is then low by at most ``N / (exact_up_to + 1)`` for ``N`` events
  in the window, and a value more frequent than that is never lost.

Every aggregation except ``count`` skips an event whose field is missing or
null; the numeric ones also skip non-numbers (``bool`` counts as a number,
as in Python; ``NaN`` is treated as missing).

Feature values and the values events carry are typed ``Any`` on purpose: they
are whatever JSON-able value a record holds (numbers, strings, lists...).
"""

from __future__ import annotations

import heapq
import math
from enum import StrEnum
from itertools import chain
from typing import Any, Protocol, Self

from streamfeat.errors import StateError
from streamfeat.operators.sketches import DDSketch, HyperLogLog, hash64_many
from streamfeat.topology.definitions import TOP_K_EXACT_UP_TO, AggKind, FeatureDef

__all__ = [
    "STATE_CLASSES",
    "AggState",
    "Distinct",
    "Ends",
    "Family",
    "Frequencies",
    "Moments",
    "Quantiles",
    "Recent",
    "empty_value",
    "family_of",
    "moments_result",
    "new_state",
    "numeric",
    "state_from_obj",
]

PERCENTILE_RELATIVE_ACCURACY = 0.01
HLL_PRECISION = 14


class Family(StrEnum):
    """Aggregations that can share one state (their values are part of the state key)."""

    MOMENTS = "moments"
    DISTINCT = "distinct"
    QUANTILES = "quantiles"
    ENDS = "ends"
    RECENT = "recent"
    FREQUENCIES = "frequencies"


_FAMILY = {
    AggKind.COUNT: Family.MOMENTS,
    AggKind.SUM: Family.MOMENTS,
    AggKind.MEAN: Family.MOMENTS,
    AggKind.VAR: Family.MOMENTS,
    AggKind.STDDEV: Family.MOMENTS,
    AggKind.MIN: Family.MOMENTS,
    AggKind.MAX: Family.MOMENTS,
    AggKind.COUNT_DISTINCT: Family.DISTINCT,
    AggKind.PERCENTILE: Family.QUANTILES,
    AggKind.FIRST: Family.ENDS,
    AggKind.LAST: Family.ENDS,
    AggKind.LAST_K: Family.RECENT,
    AggKind.TOP_K: Family.FREQUENCIES,
}


def family_of(agg: AggKind) -> Family:
    return _FAMILY[agg]


def empty_value(agg: AggKind) -> Any:
    """The value of ``agg`` over a window with no events: ``0`` for counts and sums."""
    return 0 if agg in (AggKind.COUNT, AggKind.SUM) else None


def numeric(value: Any) -> float | None:
    """``value`` as a float when it is a number (not NaN), else ``None``."""
    if isinstance(value, int | float):
        f = float(value)
        return None if math.isnan(f) else f
    return None


def _sort_key(value: Any) -> tuple[str, Any]:
    """Total order of values of any kinds: numbers by value (ints and floats together),
    then by kind name for the others (contract section 2: ties by value ascending)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ("number", value)
    return (type(value).__name__, value)


def _k(feature: FeatureDef) -> int:
    return 1 if feature.k is None else feature.k


def _cap(feature: FeatureDef) -> int:
    """Distinct values a ``top_k`` state counts exactly (a feature built in code may carry
    count_distinct's default; the loader gives top_k its own)."""
    return feature.exact_up_to


class AggState(Protocol):
    """What every family's state offers (see the module doc).

    ``new`` and ``from_obj`` take the feature that configures the state
    (``exact_up_to``, ``k``); a family that needs no configuration ignores it.
    """

    @classmethod
    def new(cls, feature: FeatureDef) -> Self:
        """A fresh, empty state."""
        ...

    @classmethod
    def from_obj(cls, obj: list[Any], feature: FeatureDef) -> Self:
        """Inverse of :meth:`to_obj` (may raise ``TypeError``, ``ValueError``...)."""
        ...

    def add(self, value: Any, ts: int, seq: int) -> None: ...
    def merge(self, other: Self) -> None: ...
    def result(self, feature: FeatureDef) -> Any: ...
    def empty(self) -> bool: ...
    def to_obj(self) -> list[Any]: ...


class Moments:
    """``count sum mean var stddev min max`` as shifted moments."""

    __slots__ = ("c", "k", "mn", "mx", "n", "s1", "s2")

    def __init__(self) -> None:
        self.c = 0
        self.n = 0
        self.k: float | None = None
        self.s1 = 0.0
        self.s2 = 0.0
        self.mn = math.inf
        self.mx = -math.inf

    @classmethod
    def new(cls, feature: FeatureDef) -> Moments:
        return cls()

    def add(self, value: Any, ts: int, seq: int) -> None:
        self.c += 1
        kind = type(value)
        if kind is float:
            if value != value:  # NaN: missing
                return
            x = value
        elif kind is int:
            x = float(value)
        else:
            got = numeric(value)
            if got is None:
                return
            x = got
        k = self.k
        if k is None:
            k = self.k = x
        d = x - k
        self.n += 1
        self.s1 += d
        self.s2 += d * d
        if x < self.mn:  # as min(): the first of equal values (0.0, -0.0) stays
            self.mn = x
        if x > self.mx:
            self.mx = x

    def merge(self, other: Moments) -> None:
        self.c += other.c
        if other.n == 0 or other.k is None:
            return
        if self.k is None:
            self.k = other.k
        delta = other.k - self.k  # other's data shifted to self.k: d' = d + delta
        self.s2 += other.s2 + 2.0 * delta * other.s1 + other.n * delta * delta
        self.s1 += other.s1 + other.n * delta
        self.n += other.n
        self.mn = min(self.mn, other.mn)
        self.mx = max(self.mx, other.mx)

    def empty(self) -> bool:
        return self.c == 0

    def result(self, feature: FeatureDef) -> Any:
        return moments_result(feature.agg, self.c, self.n, self.k or 0.0, self.s1, self.s2,
                              self.mn, self.mx)

    def to_obj(self) -> list[Any]:
        return [self.c, self.n, self.k, self.s1, self.s2, self.mn, self.mx]

    @classmethod
    def from_obj(cls, obj: list[Any], feature: FeatureDef) -> Moments:
        st = cls()
        st.c, st.n, st.k, st.s1, st.s2, st.mn, st.mx = obj
        return st


def moments_result(agg: AggKind, c: float, n: float, k: float, s1: float, s2: float,
                   mn: float, mx: float) -> Any:
    """One aggregation's answer from shifted moments (shared with the vector path)."""
    if agg is AggKind.COUNT:
        return int(c)
    if agg is AggKind.SUM:
        return float(n * k + s1) if n else 0
    if n == 0:
        return None
    if agg is AggKind.MEAN:
        return float(k + s1 / n)
    if agg is AggKind.MIN:
        return float(mn)
    if agg is AggKind.MAX:
        return float(mx)
    var = max((s2 - s1 * s1 / n) / n, 0.0)
    if agg is AggKind.VAR:
        return float(var)
    return math.sqrt(var)


class Distinct:
    """``count_distinct``: exact set up to ``limit`` values, then HyperLogLog."""

    __slots__ = ("hll", "limit", "values")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.values: set[Any] | None = set()
        """The exact set; ``None`` once the state has become a HyperLogLog."""
        self.hll: HyperLogLog | None = None
        """The sketch once more than ``limit`` values were seen (then ``values`` is ``None``)."""

    @classmethod
    def new(cls, feature: FeatureDef) -> Distinct:
        return cls(feature.exact_up_to)

    def _to_hll(self) -> HyperLogLog:
        hll = HyperLogLog(precision=HLL_PRECISION)
        hll.add_hashes(hash64_many(sorted(self.values or (), key=_sort_key)))
        self.hll, self.values = hll, None
        return hll

    def add(self, value: Any, ts: int, seq: int) -> None:
        if value is None:
            return
        if self.values is not None:
            self.values.add(value)
            if len(self.values) > self.limit:
                self._to_hll()
        elif self.hll is not None:
            self.hll.add(value)

    def merge(self, other: Distinct) -> None:
        if self.values is not None and other.values is not None:
            self.values |= other.values
            if len(self.values) > self.limit:
                self._to_hll()
            return
        hll = self._to_hll() if self.values is not None else self.hll
        if hll is None:  # pragma: no cover - exactly one of values and hll is set
            raise StateError("internal error: a count_distinct state with neither set nor sketch")
        if other.values is not None:
            hll.add_hashes(hash64_many(sorted(other.values, key=_sort_key)))
        elif other.hll is not None:
            hll.merge(other.hll)

    def empty(self) -> bool:
        return self.values is not None and not self.values

    def result(self, feature: FeatureDef) -> Any:
        if self.values is not None or self.hll is None:
            return len(self.values or ())
        return round(self.hll.estimate())

    def to_obj(self) -> list[Any]:
        if self.values is not None or self.hll is None:
            return [0, sorted(self.values or (), key=_sort_key)]
        return [1, self.hll.to_bytes()]

    @classmethod
    def from_obj(cls, obj: list[Any], feature: FeatureDef) -> Distinct:
        st = cls(feature.exact_up_to)
        if obj[0] == 0:
            st.values = set(obj[1])
        else:
            st.values, st.hll = None, HyperLogLog.from_bytes(obj[1])
        return st


_EMPTY_SKETCH = DDSketch(relative_accuracy=PERCENTILE_RELATIVE_ACCURACY)
"""The parameters of every ``percentile`` state's sketch (:meth:`Quantiles.new` copies them)."""


class Quantiles:
    """``percentile``: a DDSketch (relative accuracy 1 %)."""

    __slots__ = ("sketch",)

    def __init__(self, sketch: DDSketch | None = None) -> None:
        if sketch is None:
            sketch = DDSketch(relative_accuracy=PERCENTILE_RELATIVE_ACCURACY)
        self.sketch = sketch

    @classmethod
    def new(cls, feature: FeatureDef) -> Quantiles:
        return cls(_EMPTY_SKETCH.blank())

    def add(self, value: Any, ts: int, seq: int) -> None:
        x = numeric(value)
        if x is not None:
            self.sketch.add(x)

    def merge(self, other: Quantiles) -> None:
        self.sketch.merge(other.sketch)

    def empty(self) -> bool:
        return bool(self.sketch.count == 0)

    def result(self, feature: FeatureDef) -> Any:
        q = 0.5 if feature.q is None else feature.q
        return self.sketch.quantile(q)

    def to_obj(self) -> list[Any]:
        return [self.sketch.to_bytes()]

    @classmethod
    def from_obj(cls, obj: list[Any], feature: FeatureDef) -> Quantiles:
        return cls(DDSketch.from_bytes(obj[0]))


class Ends:
    """``first`` and ``last``: the values with the smallest and largest ``(ts, seq)``."""

    __slots__ = ("first", "last")

    def __init__(self) -> None:
        self.first: tuple[int, int, Any] | None = None
        """``(ts, seq, value)`` of the earliest event with a value."""
        self.last: tuple[int, int, Any] | None = None
        """``(ts, seq, value)`` of the latest event with a value."""

    @classmethod
    def new(cls, feature: FeatureDef) -> Ends:
        return cls()

    def add(self, value: Any, ts: int, seq: int) -> None:
        if value is None:
            return
        if self.first is None or (ts, seq) < self.first[:2]:
            self.first = (ts, seq, value)
        if self.last is None or (ts, seq) > self.last[:2]:
            self.last = (ts, seq, value)

    def add_items(self, items: list[tuple[int, int, Any]]) -> None:
        """``add(value, ts, seq)`` of each ``(ts, seq, value)`` (values not null, ``(ts, seq)``
        distinct), at once: only the earliest and the latest can change the state."""
        if not items:
            return
        first, last = min(items), max(items)  # (ts, seq) distinct: values never compared
        if self.first is None or first[:2] < self.first[:2]:
            self.first = first
        if self.last is None or last[:2] > self.last[:2]:
            self.last = last

    def merge(self, other: Ends) -> None:
        if other.first is not None:
            self.add(other.first[2], other.first[0], other.first[1])
        if other.last is not None:
            self.add(other.last[2], other.last[0], other.last[1])

    def empty(self) -> bool:
        return self.first is None

    def result(self, feature: FeatureDef) -> Any:
        end = self.first if feature.agg is AggKind.FIRST else self.last
        return None if end is None else end[2]

    def to_obj(self) -> list[Any]:
        return [None if self.first is None else list(self.first),
                None if self.last is None else list(self.last)]

    @classmethod
    def from_obj(cls, obj: list[Any], feature: FeatureDef) -> Ends:
        st = cls()
        st.first = None if obj[0] is None else (obj[0][0], obj[0][1], obj[0][2])
        st.last = None if obj[1] is None else (obj[1][0], obj[1][1], obj[1][2])
        return st


class Recent:
    """``last_k``: the ``k`` most recent values by ``(ts, seq)``; a min-heap."""

    __slots__ = ("heap", "k")

    def __init__(self, k: int) -> None:
        self.k = k
        self.heap: list[tuple[int, int, Any]] = []
        """``(ts, seq, value)`` of the ``k`` latest events with a value; oldest first."""

    @classmethod
    def new(cls, feature: FeatureDef) -> Recent:
        return cls(_k(feature))

    def add(self, value: Any, ts: int, seq: int) -> None:
        if value is None:
            return
        item = (ts, seq, value)
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, item)
        elif (ts, seq) > self.heap[0][:2]:
            heapq.heapreplace(self.heap, item)

    def add_items(self, items: list[tuple[int, int, Any]]) -> None:
        """``add(value, ts, seq)`` of each ``(ts, seq, value)`` (values not null, ``(ts, seq)``
        distinct from each other and from those held), at once: the ``k`` latest of both."""
        heap = self.heap
        if len(heap) + len(items) <= self.k:
            heap.extend(items)
            heapq.heapify(heap)
        else:  # the k largest, ascending: a heap already
            self.heap = sorted(chain(heap, items))[-self.k:]

    def merge(self, other: Recent) -> None:
        for ts, seq, value in other.heap:
            self.add(value, ts, seq)

    def empty(self) -> bool:
        return not self.heap

    def result(self, feature: FeatureDef) -> Any:
        if not self.heap:
            return None
        return [v for _, _, v in sorted(self.heap, key=lambda i: (i[0], i[1]), reverse=True)]

    def to_obj(self) -> list[Any]:
        return [[list(i) for i in sorted(self.heap, key=lambda i: (i[0], i[1]))]]

    @classmethod
    def from_obj(cls, obj: list[Any], feature: FeatureDef) -> Recent:
        st = cls(_k(feature))
        st.heap = [(i[0], i[1], i[2]) for i in obj[0]]
        heapq.heapify(st.heap)
        return st


class Frequencies:
    """``top_k``: value counts, exact up to ``cap`` (``exact_up_to``) distinct values, then
    a Misra-Gries summary: a new value when ``cap`` are held takes one from every count
    instead (those reaching 0 go), and a merge beyond ``cap`` subtracts the (cap+1)-th
    largest count from all. Each count is then at most ``N / (cap + 1)`` low."""

    __slots__ = ("cap", "counts", "k")

    def __init__(self, k: int, cap: int = TOP_K_EXACT_UP_TO) -> None:
        self.k = k
        self.cap = cap
        self.counts: dict[Any, int] = {}
        """Events per value (at most ``cap`` values)."""

    @classmethod
    def new(cls, feature: FeatureDef) -> Frequencies:
        return cls(_k(feature), _cap(feature))

    def _trim(self) -> None:
        if len(self.counts) > self.cap:
            cut = sorted(self.counts.values(), reverse=True)[self.cap]
            self.counts = {v: n - cut for v, n in self.counts.items() if n > cut}

    def add(self, value: Any, ts: int, seq: int) -> None:
        if value is None:
            return
        counts = self.counts
        if value in counts:
            counts[value] += 1
        elif len(counts) < self.cap:
            counts[value] = 1
        else:  # Misra-Gries: this event and one of every held value cancel out
            self.counts = {v: n - 1 for v, n in counts.items() if n > 1}

    def merge(self, other: Frequencies) -> None:
        for value, count in other.counts.items():
            self.counts[value] = self.counts.get(value, 0) + count
        self._trim()

    def empty(self) -> bool:
        return not self.counts

    def result(self, feature: FeatureDef) -> Any:
        if not self.counts:
            return None
        ranked = sorted(self.counts.items(), key=lambda i: (-i[1], *_sort_key(i[0])))
        return [[v, c] for v, c in ranked[: self.k]]

    def to_obj(self) -> list[Any]:
        return [sorted(([v, c] for v, c in self.counts.items()), key=lambda i: _sort_key(i[0]))]

    @classmethod
    def from_obj(cls, obj: list[Any], feature: FeatureDef) -> Frequencies:
        st = cls(_k(feature), _cap(feature))
        st.counts = {v: c for v, c in obj[0]}
        return st


STATE_CLASSES: dict[Family, type[AggState]] = {
    Family.MOMENTS: Moments,
    Family.DISTINCT: Distinct,
    Family.QUANTILES: Quantiles,
    Family.ENDS: Ends,
    Family.RECENT: Recent,
    Family.FREQUENCIES: Frequencies,
}
"""The state class of each family: ``STATE_CLASSES[family].new(feature)``."""


def new_state(family: Family, feature: FeatureDef) -> AggState:
    """A fresh, empty state of ``family`` configured by ``feature``."""
    return STATE_CLASSES[family].new(feature)


def state_from_obj(family: Family, feature: FeatureDef, obj: list[Any]) -> AggState:
    """Inverse of ``to_obj``; raises :class:`StateError` on a malformed payload."""
    try:
        return STATE_CLASSES[family].from_obj(obj, feature)
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise StateError(
            f"corrupt {family.value} state ({exc}); delete the partition's state directory "
            "and replay from the snapshots to rebuild it"
        ) from exc
