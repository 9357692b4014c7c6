"""ValueSketch: merge laws, the quantile error bound, moments against numpy, nulls."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfeat.monitoring.sketch import (
    ALPHA,
    LAYOUT,
    MAX_MAGNITUDE,
    SketchState,
    ValueKind,
    ValueSketch,
    field_kinds,
)
from streamfeat.topology import load_topology_text

finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
value = st.one_of(finite, st.integers(-10**9, 10**9), st.none(),
                  st.sampled_from([math.nan, math.inf, -math.inf]))


def sketch_of(values: list[object]) -> ValueSketch:
    s = ValueSketch()
    s.add(values)
    return s


def same(a: ValueSketch, b: ValueSketch) -> None:
    """Equal as state: counts and buckets exactly, moments within float rounding."""
    assert (a.count, a.nulls, a.n) == (b.count, b.nulls, b.n)
    assert np.array_equal(a.buckets, b.buckets)
    if a.n:
        assert (a.min, a.max) == (b.min, b.max)
        scale = max(1.0, abs(a.mean), abs(b.mean))
        assert math.isclose(a.mean, b.mean, rel_tol=1e-9, abs_tol=1e-9 * scale)
        assert math.isclose(a.m2, b.m2, rel_tol=1e-6, abs_tol=1e-6 * scale * scale)


@settings(max_examples=200, deadline=None)
@given(st.lists(value, max_size=60), st.lists(value, max_size=60), st.lists(value, max_size=60))
def test_merge_is_associative_and_equals_the_sketch_of_the_union(
        xs: list[object], ys: list[object], zs: list[object]) -> None:
    a, b, c = sketch_of(xs), sketch_of(ys), sketch_of(zs)
    left = a.copy().merge(b).merge(c)
    right = a.copy().merge(b.copy().merge(c))
    same(left, right)
    same(left, sketch_of(xs + ys + zs))
    same(b.copy().merge(a), a.copy().merge(b))  # commutative


@settings(max_examples=100, deadline=None)
@given(st.lists(value, max_size=80))
def test_moments_and_nulls_equal_numpys(xs: list[object]) -> None:
    s = sketch_of(xs)
    x = np.array([math.nan if v is None else v for v in xs], dtype=np.float64)
    good = x[np.isfinite(x)]
    assert s.count == len(xs)
    assert s.nulls == len(xs) - good.size
    assert s.n == good.size
    if good.size:
        scale = max(1.0, float(np.max(np.abs(good))))
        assert math.isclose(s.mean, float(good.mean()), rel_tol=1e-9, abs_tol=1e-9 * scale)
        var = s.variance
        assert var is not None
        assert math.isclose(var, float(good.var()), rel_tol=1e-6, abs_tol=1e-9 * scale**2)
        assert (s.min, s.max) == (good.min(), good.max())
    else:
        assert s.variance is None and math.isnan(s.quantile(0.5))


def test_moments_over_many_batches_equal_numpys() -> None:
    rng = np.random.default_rng(3)
    whole = rng.lognormal(3, 1.2, 100_000)
    s = ValueSketch()
    for part in np.array_split(whole, 37):
        s.add(part.tolist())
    assert math.isclose(s.mean, float(whole.mean()), rel_tol=1e-12)
    assert math.isclose(s.variance or 0.0, float(whole.var()), rel_tol=1e-9)


@pytest.mark.parametrize("dist", ["lognormal", "normal", "uniform_ints", "zeros_and_tail",
                                  "tiny_and_huge"])
def test_quantiles_are_within_the_relative_error(dist: str) -> None:
    rng = np.random.default_rng(11)
    n = 50_000
    if dist == "lognormal":
        x = rng.lognormal(2, 2, n)
    elif dist == "normal":
        x = rng.normal(0, 100, n)  # negatives, positives
    elif dist == "uniform_ints":
        x = rng.integers(0, 1000, n).astype(np.float64)
    elif dist == "zeros_and_tail":
        x = np.where(rng.random(n) < 0.6, 0.0, rng.exponential(50, n))
    else:
        x = rng.choice([1e-7, 3e-3, 1.0, 7e8, 2e13], n) * rng.uniform(0.5, 1.5, n)
    s = ValueSketch()
    s.add(x.tolist())
    ordered = np.sort(x)
    qs = [0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]
    for q, got in zip(qs, s.quantiles(qs), strict=True):
        want = ordered[math.floor(q * (n - 1))]
        assert abs(got - want) <= ALPHA * abs(want) * (1 + 1e-9), (q, got, want)


def test_huge_magnitudes_share_the_top_bucket_and_answers_stay_within_min_max() -> None:
    s = sketch_of([1.0, 2.0, MAX_MAGNITUDE * 10, MAX_MAGNITUDE * 100])
    assert s.quantile(1.0) == MAX_MAGNITUDE * 100  # clamped to the max seen
    assert s.quantile(0.0) == 1.0
    assert s.quantile(0.67) == pytest.approx(MAX_MAGNITUDE, rel=ALPHA)  # the top bucket


def test_nulls_are_none_nan_and_infinities() -> None:
    s = sketch_of([1, None, math.nan, math.inf, -math.inf, 2.5, 0])
    assert (s.count, s.nulls, s.n) == (7, 4, 3)
    assert s.null_rate == pytest.approx(4 / 7)
    assert s.mean == pytest.approx(3.5 / 3)


def test_other_kinds_are_counted_not_sketched() -> None:
    s = ValueSketch()
    s.add([[1, 2], None, [["a", 3]], None], ValueKind.OTHER)
    assert (s.count, s.nulls, s.n) == (4, 2, 0)
    m = ValueSketch()
    m.add(["a", 3, None, 4.5, True, {"x": 1}], ValueKind.MIXED)  # first/last of any field
    assert (m.count, m.nulls, m.n) == (6, 1, 2)
    assert m.mean == pytest.approx(3.75)
    # a numeric column: strings are not numbers to be parsed
    pure = ValueSketch()
    pure.add([1, 2, None], ValueKind.MIXED)
    assert (pure.count, pure.nulls, pure.n) == (3, 1, 2)


def test_stored_state_round_trips_and_another_layout_is_refused() -> None:
    rng = random.Random(5)
    s = sketch_of([rng.gauss(0, 10) for _ in range(1000)] + [None] * 10)
    back = ValueSketch.from_state(s.state())
    same(s, back)
    assert back.quantiles([0.1, 0.5, 0.9]) == s.quantiles([0.1, 0.5, 0.9])
    state = s.state()
    with pytest.raises(ValueError, match="layout"):
        ValueSketch.from_state(SketchState("log:0.02:1e-9:1e15", *[
            getattr(state, f) for f in state.__struct_fields__[1:]]))
    assert state.layout == LAYOUT
    empty = ValueSketch.from_state(ValueSketch().state())
    assert (empty.count, empty.n) == (0, 0)


def test_field_kinds_follow_the_aggregation() -> None:
    topology = load_topology_text("""
version: 1
name: kinds
source: {topic: t, key: user_id, timestamp: ts}
entity: user
features:
  - {name: orders, agg: count, windows: [1h]}
  - {name: amount, agg: mean, field: amount, windows: [1h, 1d]}
  - {name: last_merchant, agg: last, field: merchant_id, windows: [1h]}
  - {name: recent, agg: last_k, k: 3, field: amount, windows: [1h]}
  - {name: top_merchants, agg: top_k, k: 3, field: merchant_id, windows: [1d]}
""")
    assert field_kinds(topology) == {
        "orders__1h": ValueKind.NUMERIC, "amount__1h": ValueKind.NUMERIC,
        "amount__1d": ValueKind.NUMERIC, "last_merchant__1h": ValueKind.MIXED,
        "recent__1h": ValueKind.OTHER, "top_merchants__1d": ValueKind.OTHER}


def test_values_near_floats_limits_give_a_finite_mean_and_no_warning() -> None:
    """The sum behind the mean of values near 1.8e308 overflows (found by the bad-records
    property test, whose warnings are errors): the mean is taken scaled instead."""
    sketch = ValueSketch()
    sketch.add([1.7e308, 1.7e308, -1e308])
    other = ValueSketch()
    other.add([1e308])
    sketch.merge(other)
    assert sketch.n == 4 and sketch.mean == pytest.approx(0.85e308)
    assert sketch.max == 1.7e308 and sketch.min == -1e308
