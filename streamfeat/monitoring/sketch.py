"""The distribution of a feature-window's values, as a fixed-size mergeable sketch.

:class:`ValueSketch` holds, for the values of one Redis field (an interval's writes, or a
baseline):

- ``count``: values seen; ``nulls``: those served as absent (``None``, NaN, infinities:
  what the sink writes as a deleted field, so the reader gets ``None`` or the default);
- ``n``, ``mean``, ``m2``, ``min``, ``max``: moments of the numeric values (Welford's
  running mean and sum of squared deviations, merged with Chan's formula);
- quantiles: DDSketch-style logarithmic buckets, a NumPy ``int64`` array of fixed size on
  one ordered axis (negative values, zero, positive values). A value ``v`` with
  ``MIN_MAGNITUDE <= |v|`` goes to key ``ceil(ln|v| / ln gamma)``, gamma =
  ``(1 + ALPHA) / (1 - ALPHA)``; smaller magnitudes count as 0. A quantile is answered
  with its bucket's midpoint ``2 gamma**k / (gamma + 1)``, within ``ALPHA`` (1 %) of the
  lower quantile ``sorted[floor(q * (n - 1))]``, for magnitudes up to ``MAX_MAGNITUDE``
  (1e15); larger ones share the top bucket (their quantiles are then only known to be at
  least 1e15). Answers are clamped to ``[min, max]``, and the 0 and 1 quantiles are the
  exact minimum and maximum.

Merging adds counts and buckets and combines the moments, so it is associative and
commutative (exactly for counts and buckets, within float rounding for the moments): the
sketches of several intervals, workers or partitions merge into the sketch of their union.

Only numbers are sketched; a column of another kind (``last_k``, ``top_k``, strings) is
counted (``count``, ``nulls``) and its values otherwise ignored. :meth:`ValueSketch.add`
takes a whole column at once and does not loop over its values in Python.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from enum import Enum
from itertools import repeat
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from streamfeat.topology import AggKind, TopologyDef

__all__ = [
    "ALPHA",
    "LAYOUT",
    "MAX_MAGNITUDE",
    "MIN_MAGNITUDE",
    "SIZE",
    "SketchState",
    "ValueKind",
    "ValueSketch",
    "field_kinds",
]

ALPHA = 0.01
"""Relative accuracy of the quantiles."""
MIN_MAGNITUDE = 1e-9
"""Values closer to 0 than this count as 0."""
MAX_MAGNITUDE = 1e15
"""Values larger in magnitude share the outermost bucket of their sign."""

_GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LN_GAMMA = math.log(_GAMMA)
_INV_LN_GAMMA = 1.0 / _LN_GAMMA
_KMIN = math.ceil(math.log(MIN_MAGNITUDE) * _INV_LN_GAMMA)
_KMAX = math.ceil(math.log(MAX_MAGNITUDE) * _INV_LN_GAMMA)
_KEYS = _KMAX - _KMIN + 1
ZERO = _KEYS
"""The axis position of the zero bucket: negatives below it, positives above."""
SIZE = 2 * _KEYS + 1
"""Buckets of a sketch (about 5,500: 44 KB of counts)."""
LAYOUT = f"log:{ALPHA}:{MIN_MAGNITUDE}:{MAX_MAGNITUDE}"
"""Names the bucket layout in stored sketches: one of another layout is refused, not misread."""

Counts = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def _bucket_values() -> Floats:
    """The value each axis position stands for (the midpoint of its bucket)."""
    keys = np.arange(_KMIN, _KMAX + 1, dtype=np.float64)
    mids = 2.0 * np.exp(keys * _LN_GAMMA) / (_GAMMA + 1.0)
    out = np.zeros(SIZE, dtype=np.float64)
    out[ZERO + 1:] = mids
    out[:ZERO] = -mids[::-1]
    return out


BUCKET_VALUES = _bucket_values()


class ValueKind(Enum):
    """What a feature-window's values are, by its aggregation."""

    NUMERIC = "numeric"  # count, sum, mean, ...: numbers or absent
    MIXED = "mixed"  # first, last: the field's own values, numbers or not
    OTHER = "other"  # last_k, top_k: lists; counted, not sketched


_OTHER_AGGS = frozenset({AggKind.LAST_K, AggKind.TOP_K})
_MIXED_AGGS = frozenset({AggKind.FIRST, AggKind.LAST})


def field_kinds(topology: TopologyDef) -> dict[str, ValueKind]:
    """Each Redis field of ``topology`` and the kind of its values."""
    out: dict[str, ValueKind] = {}
    for f in topology.features:
        kind = (ValueKind.OTHER if f.agg in _OTHER_AGGS
                else ValueKind.MIXED if f.agg in _MIXED_AGGS else ValueKind.NUMERIC)
        for w in f.windows:
            out[f.redis_field(w)] = kind
    return out


class SketchState(msgspec.Struct, array_like=True, frozen=True):
    """A :class:`ValueSketch` as stored (msgpack): the buckets sparse, as positions and
    counts of the non-empty ones."""

    layout: str
    count: int
    nulls: int
    n: int
    mean: float
    m2: float
    min: float
    max: float
    positions: list[int]
    counts: list[int]


_NUMBER_TYPES = frozenset({int, float, type(None)})


class ValueSketch:
    """Count, nulls, moments and quantiles of one field's values; see the module docstring."""

    __slots__ = ("buckets", "count", "m2", "max", "mean", "min", "n", "nulls")

    def __init__(self) -> None:
        self.count = 0
        self.nulls = 0
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.buckets: Counts = np.zeros(SIZE, dtype=np.int64)

    # -- adding ------------------------------------------------------------------------

    def add(self, values: Sequence[Any], kind: ValueKind = ValueKind.NUMERIC) -> None:
        """Add one column of values (as an :class:`~streamfeat.sinks.UpdateBatch` holds
        them: Python numbers, ``None``, or other JSON values), vectorised over the column."""
        total = len(values)
        if total == 0:
            return
        if kind is ValueKind.OTHER:
            self.count += total
            self.nulls += sum(map(operator.is_, values, repeat(None)))
            return
        if kind is ValueKind.MIXED and not set(map(type, values)) <= _NUMBER_TYPES:
            # first/last of a field that is not always a number: strings, booleans, lists
            # are values (not nulls), only the numbers are sketched.
            absent = sum(map(operator.is_, values, repeat(None)))
            numbers = [v for v in values if type(v) is int or type(v) is float]
            self.count += total - len(numbers)
            self.nulls += absent
            values = numbers
            if not values:
                return
        try:
            x = np.array(values, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):  # e.g. an int beyond float's range
            x = np.array([_as_float(v) for v in values], dtype=np.float64)
        self.add_array(x)

    def add_array(self, x: Floats) -> None:
        """Add float values; NaN and infinities are nulls (the sink writes them as absent)."""
        x = np.asarray(x, dtype=np.float64).ravel()
        total = int(x.size)
        if total == 0:
            return
        finite = np.isfinite(x)
        v = x if finite.all() else x[finite]
        nb = int(v.size)
        self.count += total
        self.nulls += total - nb
        if nb == 0:
            return
        # Values near float's limits: the sum behind the mean overflows; the mean of the
        # values scaled by the largest magnitude does not (the spread may still be inf).
        with np.errstate(over="ignore", invalid="ignore"):
            mb = float(v.mean())
            if not np.isfinite(mb):
                scale = float(np.abs(v).max())
                mb = float((v / scale).mean()) * scale
            d = v - mb
            # einsum, not dot: a BLAS dot may wake its thread pool (milliseconds on a busy host)
            m2b = float(np.einsum("i,i->", d, d))
            self._merge_moments(nb, mb, m2b, float(v.min()), float(v.max()))
        self.buckets += np.bincount(_positions(v), minlength=SIZE)

    def _merge_moments(self, nb: int, mb: float, m2b: float, lo: float, hi: float) -> None:
        na = self.n
        if na == 0:
            self.n, self.mean, self.m2 = nb, mb, m2b
        else:
            n = na + nb
            with np.errstate(over="ignore", invalid="ignore"):  # float64 scalars: inf, no error
                delta = np.float64(mb) - self.mean
                self.mean = float(self.mean + delta * nb / n)
                self.m2 = float(self.m2 + m2b + delta * delta * na * nb / n)
            self.n = n
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)

    def merge(self, other: ValueSketch) -> ValueSketch:
        """Add ``other``'s values to this sketch (``other`` is unchanged); returns self."""
        self.count += other.count
        self.nulls += other.nulls
        if other.n:
            self._merge_moments(other.n, other.mean, other.m2, other.min, other.max)
            self.buckets += other.buckets
        return self

    def copy(self) -> ValueSketch:
        return ValueSketch().merge(self)

    # -- answers -----------------------------------------------------------------------

    @property
    def null_rate(self) -> float | None:
        """Nulls / values; ``None`` with no values."""
        return self.nulls / self.count if self.count else None

    @property
    def variance(self) -> float | None:
        """Population variance of the numeric values; ``None`` without any."""
        return max(0.0, self.m2 / self.n) if self.n else None

    @property
    def stddev(self) -> float | None:
        var = self.variance
        return None if var is None else math.sqrt(var)

    def positions(self, qs: Sequence[float]) -> npt.NDArray[np.intp]:
        """The axis position of each lower quantile ``q`` (rank ``floor(q * (n - 1))``)."""
        if not self.n:
            raise ValueError("no numeric values: a quantile is undefined")
        ranks = np.floor(np.asarray(qs, dtype=np.float64) * (self.n - 1))
        cum = np.cumsum(self.buckets)
        return np.searchsorted(cum, ranks + 1, side="left")

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """Lower quantiles of the numeric values (see the module docstring for the error)."""
        if not self.n:
            return [math.nan for _ in qs]
        out = np.clip(BUCKET_VALUES[self.positions(qs)], self.min, self.max)
        ranks = np.floor(np.asarray(qs, dtype=np.float64) * (self.n - 1))
        out[ranks <= 0] = self.min  # the extremes are known exactly
        out[ranks >= self.n - 1] = self.max
        return out.tolist()  # type: ignore[no-any-return]

    def quantile(self, q: float) -> float:
        return self.quantiles([q])[0]

    # -- stored form -------------------------------------------------------------------

    def state(self) -> SketchState:
        nz = np.flatnonzero(self.buckets)
        return SketchState(LAYOUT, self.count, self.nulls, self.n, self.mean, self.m2,
                           self.min if self.n else 0.0, self.max if self.n else 0.0,
                           nz.tolist(), self.buckets[nz].tolist())

    @classmethod
    def from_state(cls, state: SketchState) -> ValueSketch:
        """The sketch ``state`` describes; ``ValueError`` if it has another bucket layout
        or is inconsistent."""
        if state.layout != LAYOUT:
            raise ValueError(f"a sketch of layout {state.layout!r}, this version reads "
                             f"{LAYOUT!r}: create it again with this version")
        if len(state.positions) != len(state.counts):
            raise ValueError("a stored sketch has as many positions as counts")
        s = cls()
        s.count, s.nulls, s.n = state.count, state.nulls, state.n
        s.mean, s.m2 = state.mean, state.m2
        if state.n:
            s.min, s.max = state.min, state.max
        if state.positions:
            pos = np.asarray(state.positions, dtype=np.int64)
            if pos.min() < 0 or pos.max() >= SIZE:
                raise ValueError("a stored sketch has a bucket outside the layout")
            s.buckets[pos] = np.asarray(state.counts, dtype=np.int64)
        if int(s.buckets.sum()) != s.n:
            raise ValueError("a stored sketch's buckets do not add up to its numeric count")
        return s

    def __repr__(self) -> str:
        return (f"ValueSketch(count={self.count}, nulls={self.nulls}, n={self.n}, "
                f"mean={self.mean:g}, stddev={self.stddev})")


def _positions(v: Floats) -> npt.NDArray[np.int64]:
    """The axis position of each finite value."""
    mag = np.abs(v)
    small = mag < MIN_MAGNITUDE
    with np.errstate(divide="ignore"):
        k = np.log(mag)
    k *= _INV_LN_GAMMA
    np.ceil(k, out=k)
    np.clip(k, _KMIN, _KMAX, out=k)
    key = k.astype(np.int64)
    key -= _KMIN - 1  # 1 .. _KEYS
    pos = np.where(v < 0, ZERO - key, ZERO + key)
    pos[small] = ZERO
    return pos


def _as_float(v: Any) -> float:
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return math.nan
