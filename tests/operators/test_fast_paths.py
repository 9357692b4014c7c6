"""The fast paths (:mod:`streamfeat.operators.vector`) against the pure window kinds.

``PartitionOperator(..., pure=True)`` runs the reference kinds of
:mod:`streamfeat.operators.windows`; the default operator runs the fast ones. For any
stream (disorder, late events, nulls, ints and floats that are equal as values, signed
zeros, strings), any batch split and any restore point, both give the same values, the
same due entities and the same state bytes (compared as msgpack bytes, so ``1`` and
``1.0``, ``0.0`` and ``-0.0`` differ).
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfeat.operators import PartitionOperator
from streamfeat.operators.vector import FastBucketSlot, FastExactSlot, FastSessionSlot
from streamfeat.topology.definitions import (
    AggKind,
    FeatureDef,
    SourceDef,
    TopologyDef,
)
from tests.operators.test_partition_operator import make_window as window

KEYS = ["a", "b", "c"]
WHERES: dict[str, Any] = {"s == 'x'": lambda r: r.get("s") == "x"}
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: the families with fast paths, each with the windows they take there
FAST = [AggKind.COUNT_DISTINCT, AggKind.PERCENTILE, AggKind.TOP_K, AggKind.LAST_K,
        AggKind.FIRST, AggKind.LAST, AggKind.STDDEV, AggKind.MIN, AggKind.MAX, AggKind.SUM,
        AggKind.COUNT, AggKind.MEAN]


windows_st = st.builds(
    window, st.sampled_from(["sliding", "exact", "tumbling", "final", "session", "lifetime"]),
    st.sampled_from([1000, 3000, 10_000]), st.sampled_from([300, 1000]))


@st.composite
def features_st(draw: st.DrawFn) -> tuple[FeatureDef, ...]:
    out = []
    for i, agg in enumerate(draw(st.lists(st.sampled_from(FAST), min_size=1, max_size=4))):
        wins = draw(st.lists(windows_st, min_size=1, max_size=2, unique_by=lambda w: w.label))
        field = None
        if agg is not AggKind.COUNT:
            field = "v" if agg.numeric else draw(st.sampled_from(["v", "s"]))
        out.append(FeatureDef(
            name=f"f{i}", agg=agg, windows=tuple(wins), field=field,
            where=draw(st.sampled_from([None, "s == 'x'"])),
            q=draw(st.sampled_from([0.0, 0.5, 0.95, 1.0])) if agg is AggKind.PERCENTILE else None,
            k=draw(st.integers(1, 3)) if agg in (AggKind.LAST_K, AggKind.TOP_K) else None,
            # small caps: count_distinct becomes a HyperLogLog, top_k meets Misra-Gries
            exact_up_to=draw(st.sampled_from([2, 3, 1000])),
        ))
    return tuple(out)


numbers = st.one_of(st.integers(-5, 5), st.sampled_from([0.0, -0.0, 1.0, 2.5, -2.5, 1e-320]),
                    st.floats(-1e6, 1e6, allow_nan=False), st.booleans())
record_st = st.fixed_dictionaries({}, optional={
    "v": st.one_of(st.none(), numbers),
    "s": st.one_of(st.sampled_from(["x", "y", "z", 1, 1.0, True]), st.none()),
})


@st.composite
def stream_st(draw: st.DrawFn) -> list[tuple[str, int, dict[str, Any]]]:
    t = draw(st.integers(0, 5000))
    out = []
    for _ in range(draw(st.integers(1, 80))):
        t = max(0, t + draw(st.integers(-4000, 2500)))
        out.append((draw(st.sampled_from(KEYS)), t, draw(record_st)))
    return out


def new_op(topo: TopologyDef, pure: bool) -> PartitionOperator:
    return PartitionOperator(topo, 0, where_compiler=WHERES.__getitem__, pure=pure)


def feed(op: PartitionOperator, events: list[tuple[str, int, dict[str, Any]]]) -> Any:
    return op.process([e[0] for e in events], np.array([e[1] for e in events], dtype=np.int64),
                      [e[2] for e in events])


def split(events: list[Any], cuts: list[int]) -> list[list[Any]]:
    bounds = [0, *sorted(set(cuts)), len(events)]
    return [events[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def values(op: PartitionOperator, t: int | None = None) -> bytes:
    return msgspec.msgpack.encode(op.values([*KEYS, "nobody", *KEYS], t))


def test_the_default_operator_runs_the_fast_kinds() -> None:
    features = (
        FeatureDef("d", AggKind.COUNT_DISTINCT, (window("sliding", 1000, 300),), field="s"),
        FeatureDef("x", AggKind.STDDEV, (window("exact", 1000, 0),), field="v"),
        FeatureDef("n", AggKind.COUNT, (window("session", 1000, 0),)),
    )
    topo = TopologyDef(name="t", source=SourceDef(topic="t", key="u"), features=features)
    kinds = {type(s.impl) for s in new_op(topo, pure=False)._slots}
    assert kinds == {FastBucketSlot, FastExactSlot, FastSessionSlot}
    assert not kinds & {type(s.impl) for s in new_op(topo, pure=True)._slots}


@SETTINGS
@given(features_st(), st.sampled_from([0, 2000, 10_000]), stream_st(), st.data())
def test_fast_equals_pure_after_every_batch(
    features: tuple[FeatureDef, ...], lateness: int, events: list[Any], data: st.DataObject
) -> None:
    """Batch by batch (the pure operator in its own split): values at stream time and
    later, due entities, and every commit's bytes."""
    topo = TopologyDef(name="t", source=SourceDef(topic="t", key="u"), features=features,
                       lateness_ms=lateness)
    fast, pure = new_op(topo, pure=False), new_op(topo, pure=True)
    for batch in split(events, data.draw(st.lists(st.integers(1, len(events)), max_size=6))):
        assert feed(fast, batch).late.tolist() == feed(pure, batch).late.tolist()
        assert values(fast) == values(pure)
        later = (fast.stream_time or 0) + data.draw(st.integers(0, 25_000))
        assert fast.due(later) == pure.due(later)
        assert values(fast, later) == values(pure, later)
        assert values(fast) == values(pure)  # back to stream time, after a later query
        if data.draw(st.booleans()):
            assert fast.take_dirty() == pure.take_dirty()
    assert fast.dump_all() == pure.dump_all()


@SETTINGS
@given(features_st(), st.sampled_from([0, 2000, 10_000]), stream_st(), st.data())
def test_fast_equals_pure_in_any_split_and_after_a_restore(
    features: tuple[FeatureDef, ...], lateness: int, events: list[Any], data: st.DataObject
) -> None:
    """Any batch split, the state stored at any point and loaded into a fresh operator
    (as after a restart): the fast operator gives what the pure one gives."""
    topo = TopologyDef(name="t", source=SourceDef(topic="t", key="u"), features=features,
                       lateness_ms=lateness)
    cut = data.draw(st.integers(0, len(events)))
    head = split(events[:cut], data.draw(st.lists(st.integers(1, max(cut, 1)))))
    rest = events[cut:]
    tail = split(rest, data.draw(st.lists(st.integers(1, max(len(rest), 1)))))
    later = data.draw(st.integers(0, 25_000))

    def go(pure: bool) -> tuple[bytes, bytes, dict[str, bytes]]:
        first = new_op(topo, pure)
        for batch in head:
            feed(first, batch)
            first.values(KEYS)
        op = new_op(topo, pure)
        op.load_meta(first.meta())
        op.load_entities(first.take_dirty())
        op.values(KEYS)
        for batch in tail:
            feed(op, batch)
            op.values(KEYS)
        return values(op), values(op, (op.stream_time or 0) + later), dict(op.dump_all())

    assert go(pure=False) == go(pure=True)


def run_both(features: tuple[FeatureDef, ...],
             events: list[tuple[str, int, dict[str, Any]]]) -> tuple[bytes, bytes]:
    topo = TopologyDef(name="t", source=SourceDef(topic="t", key="u"), features=features,
                       lateness_ms=10_000)
    fast, pure = new_op(topo, pure=False), new_op(topo, pure=True)
    for batch in split(events, list(range(7, len(events), 7))):
        feed(fast, batch)
        feed(pure, batch)
        assert values(fast) == values(pure)
    return values(fast), values(pure)


def test_a_window_beyond_exact_up_to_answers_the_hyperloglog() -> None:
    """No bucket holds more than 3 values, the window does: the merged state is a
    HyperLogLog, whose estimate of 300 values is not exactly 300."""
    feature = FeatureDef("d", AggKind.COUNT_DISTINCT, (window("sliding", 100_000, 1000),),
                         field="s", exact_up_to=3)
    events = [("a", 1000 * (i // 3), {"s": f"m{i}"}) for i in range(300)]
    fast, pure = run_both((feature,), events)
    assert fast == pure
    assert msgspec.msgpack.decode(pure)["a"]["d__sl100000_1000"] != 300


def test_signed_zeros_keep_the_first_as_min_and_max_do() -> None:
    features = (FeatureDef("lo", AggKind.MIN, (window("exact", 10_000, 0),), field="v"),
                FeatureDef("hi", AggKind.MAX, (window("exact", 10_000, 0),), field="v"))
    for first, second in ((0.0, -0.0), (-0.0, 0.0)):
        events = [("a", 1, {"v": first}), ("a", 2, {"v": second})]
        fast, pure = run_both(features, events)
        assert fast == pure
        got = msgspec.msgpack.decode(pure)["a"]
        assert str(got["lo__ex10000"]) == str(first) == str(got["hi__ex10000"])


_MIXED = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**63), 2**64 - 1), st.sampled_from(["1.5", "x", ""]),
    st.lists(st.integers(0, 3), max_size=2))


@SETTINGS
@given(st.lists(_MIXED, max_size=30), st.booleans())
def test_floats_reads_each_value_as_float_does(values: list[Any], numbers_only: bool) -> None:
    """``_floats`` (numpy's conversion when every value is a plain number or null) gives
    what ``float(v)`` gives for each int, float or bool and NaN (invalid) for anything
    else: a numeric string is not a number."""
    from streamfeat.operators.slots import _floats

    if numbers_only:
        values = [v for v in values if not isinstance(v, str | list)]
    x, ok = _floats(values)
    want = [float(v) if isinstance(v, int | float) else float("nan") for v in values]
    assert x.dtype == np.float64 and x.shape == (len(values),)
    assert [msgspec.msgpack.encode(float(v)) for v in x.tolist()] == [
        msgspec.msgpack.encode(v) for v in want]
    assert ok.tolist() == [v == v for v in want]


@SETTINGS
@given(features_st(), stream_st(), stream_st(), st.booleans())
def test_loading_over_held_state_replaces_it(
    features: tuple[FeatureDef, ...], held: list[Any], stored: list[Any], pure: bool
) -> None:
    """``load_entities`` for entities the operator holds already (other state in any slot,
    or state in a slot the loaded one lacks) leaves exactly the loaded state: a row taken
    for a new entity is not cleared again, a held one is."""
    topo = TopologyDef(name="t", source=SourceDef(topic="t", key="u"), features=features,
                       lateness_ms=2000)
    source = new_op(topo, pure)
    feed(source, stored)
    op = new_op(topo, pure)
    feed(op, held)
    op.values(KEYS)
    loaded = source.dump_all()
    op.load_meta(source.meta())
    op.load_entities(loaded)
    again = new_op(topo, pure)
    again.load_meta(source.meta())
    again.load_entities(loaded)
    names = [e for e, _ in loaded]
    assert dict(op.dump_all()).keys() >= set(names)
    assert [dict(op.dump_all())[e] for e in names] == [dict(again.dump_all())[e] for e in names]
    assert op.values(names) == again.values(names)
