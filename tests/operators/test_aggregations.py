"""Merge laws and serialization of the aggregation states; the late decision."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfeat.operators import late_mask
from streamfeat.operators.aggregations import Family, new_state, state_from_obj
from streamfeat.topology.definitions import AggKind, FeatureDef, WindowDef, WindowKind

LIFETIME = WindowDef(WindowKind.LIFETIME, None, None, "lifetime")
FEATURE = FeatureDef("f", AggKind.TOP_K, (LIFETIME,), field="v", k=2, q=0.5, exact_up_to=5)
#: top_k within its cap (exact, so merges are associative); beyond it: its own test below
EXACT_TOP_K = FeatureDef("f", AggKind.TOP_K, (LIFETIME,), field="v", k=2, exact_up_to=10_000)

values_st = st.one_of(st.none(), st.integers(-1000, 1000), st.sampled_from(["a", "b", "c"]))


@st.composite
def parts_st(draw: st.DrawFn) -> list[list[tuple[Any, int, int]]]:
    events = draw(st.lists(st.tuples(values_st, st.integers(0, 50)), max_size=40))
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), min_size=2, max_size=2)))
    seqd = [(v, ts, seq) for seq, (v, ts) in enumerate(events)]
    return [seqd[: cuts[0]], seqd[cuts[0]: cuts[1]], seqd[cuts[1]:]]


def build(family: Family, events: list[tuple[Any, int, int]],
          feature: FeatureDef | None = None) -> Any:
    if feature is None:
        feature = EXACT_TOP_K if family is Family.FREQUENCIES else FEATURE
    state = new_state(family, feature)
    for v, ts, seq in events:
        if family in (Family.MOMENTS, Family.QUANTILES) and isinstance(v, str):
            v = None
        state.add(v, ts, seq)
    return state


def obj(state: Any) -> bytes:
    return msgspec.msgpack.encode(state.to_obj())


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(Family)), parts_st())
def test_merge_is_associative_and_equals_one_state(
    family: Family, parts: list[list[tuple[Any, int, int]]]
) -> None:
    a, b, c = (build(family, p) for p in parts)
    left = build(family, parts[0])
    left.merge(b)
    left.merge(c)
    bc = build(family, parts[1])
    bc.merge(c)
    right = a
    right.merge(bc)
    assert obj(left) == obj(right)
    whole = build(family, parts[0] + parts[1] + parts[2])
    assert left.result(FEATURE) == whole.result(FEATURE)
    if family is not Family.MOMENTS:  # Moments keeps the first value as its shift
        assert obj(left) == obj(whole)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(list(Family)), parts_st())
def test_state_round_trip_is_exact(family: Family, parts: list[list[tuple[Any, int, int]]]) -> None:
    state = build(family, parts[0] + parts[1] + parts[2])
    data = obj(state)
    back = state_from_obj(family, FEATURE, msgspec.msgpack.decode(data))
    assert obj(back) == data
    assert back.result(FEATURE) == state.result(FEATURE)


def test_moments_stay_accurate_when_data_drift() -> None:
    state = new_state(Family.MOMENTS, FeatureDef("v", AggKind.VAR, (LIFETIME,), field="v"))
    for i, v in enumerate([1e9 + 1, 1e9 + 2, 1e9 + 3, 1e9 + 4]):
        state.add(v, i, i)
    assert state.result(FeatureDef("v", AggKind.VAR, (LIFETIME,), field="v")) == 1.25


def test_top_k_orders_by_count_then_value() -> None:
    feature = FeatureDef("t", AggKind.TOP_K, (LIFETIME,), field="v", k=2)
    state = new_state(Family.FREQUENCIES, feature)
    for i, v in enumerate(["b", "a", "c", "c", "b", "a"]):
        state.add(v, i, i)
    assert state.result(feature) == [["a", 2], ["b", 2]]


def test_last_k_newest_first_ties_by_arrival() -> None:
    feature = FeatureDef("l", AggKind.LAST_K, (LIFETIME,), field="v", k=3)
    state = new_state(Family.RECENT, feature)
    for seq, (v, ts) in enumerate([("a", 5), ("b", 9), ("c", 5), ("d", 1)]):
        state.add(v, ts, seq)
    assert state.result(feature) == ["b", "c", "a"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=50),
    st.one_of(st.none(), st.integers(0, 10_000)),
    st.integers(0, 3000),
)
def test_late_mask_equals_sequential_scan(ts: list[int], start: int | None, lateness: int) -> None:
    late, end = late_mask(np.array(ts, dtype=np.int64), start, lateness)
    cur = start
    expected = []
    for t in ts:
        expected.append(cur is not None and t < cur - lateness)
        cur = t if cur is None else max(cur, t)
    assert late.tolist() == expected
    assert end == cur


@settings(max_examples=200, deadline=None)
@given(parts_st())
def test_top_k_beyond_its_cap_is_low_by_at_most_n_over_cap_plus_one(
    parts: list[list[tuple[Any, int, int]]]
) -> None:
    """Misra-Gries beyond ``exact_up_to``: however the events are split and merged, every
    count is at most N / (cap + 1) below the true one, and never above it."""
    cap = FEATURE.exact_up_to
    merged = build(Family.FREQUENCIES, parts[0], FEATURE)
    for part in parts[1:]:
        merged.merge(build(Family.FREQUENCIES, part, FEATURE))
    values = [v for part in parts for v, _ts, _seq in part if v is not None]
    truth: dict[Any, int] = {}
    for v in values:
        truth[v] = truth.get(v, 0) + 1
    assert len(merged.counts) <= cap
    for value, count in truth.items():
        got = merged.counts.get(value, 0)
        assert count - len(values) / (cap + 1) <= got <= count, (value, got, count)
