"""State larger than memory (:mod:`streamfeat.pipeline.cache`) against all of it held.

Two pipelines over the same raw records (late, malformed and out-of-order ones among
them), each with its own RocksDB store: one holds every entity in memory, the other evicts
the entities hypothesis picks after each commit, in any order, or (second test) whatever a
budget of a few bytes forces out. After every batch both give the same Redis updates and
dead letters; after every commit the same stored bytes; at the end, after a restart at a
random point, the same values as of later times. Values and state are compared as msgpack
bytes (``1`` and ``1.0``, ``0.0`` and ``-0.0`` differ).
"""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfeat.pipeline import PartitionPipeline
from streamfeat.pipeline.cache import EntityCache, StateBudget
from streamfeat.records import RecordBatch
from streamfeat.state import PartitionStore
from streamfeat.topology.definitions import SourceDef, TopologyDef
from tests.operators.test_fast_paths import features_st, record_st

KEYS = ["a", "b", "c", "d", "e"]
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
Event = tuple[str, int, dict[str, Any] | None]  # None: a malformed record


@st.composite
def stream_st(draw: st.DrawFn) -> list[Event]:
    t = draw(st.integers(0, 5000))
    out: list[Event] = []
    for _ in range(draw(st.integers(1, 90))):
        # mostly forward, now and then far ahead (windows expire, entities fall due)
        t = max(0, t + draw(st.one_of(st.integers(-4000, 2500), st.integers(0, 40_000))))
        malformed = draw(st.integers(0, 19)) == 0
        out.append((draw(st.sampled_from(KEYS)), t, None if malformed else draw(record_st)))
    return out


def batch(first: int, events: list[Event]) -> RecordBatch:
    values = [b"{not json" if r is None else json.dumps({**r, "u": k, "ts": t}).encode()
              for k, t, r in events]
    return RecordBatch(0, list(range(first, first + len(events))), [t for _k, t, _r in events],
                       [k.encode() for k, _t, _r in events], values)


def updates(out: Any) -> bytes:
    return msgspec.msgpack.encode([
        [list(u.entity_ids), list(u.names), [list(c) for c in u.columns],
         u.asof_ms, u.version] for u in out.updates])


def dead(out: Any) -> list[tuple[int, str]]:
    return [(d.record.offset, d.reason, d.kind) for d in out.dead]


def stored(store: PartitionStore | None) -> dict[str, bytes]:
    assert store is not None
    return dict(store.entities())


def pipelines(topo: TopologyDef, root: Path, budget: StateBudget
              ) -> tuple[PartitionPipeline, PartitionPipeline]:
    held = PartitionPipeline(topo, 0, store=PartitionStore(root / "held", "t", "t", 0))
    cached = PartitionPipeline(topo, 0, store=PartitionStore(root / "cached", "t", "t", 0),
                               budget=budget)
    return held, cached


def compare_run(topo: TopologyDef, events: list[Event], cuts: list[int], restart_at: int,
                budget: StateBudget, evictions: list[list[str]] | None) -> int:
    """Runs both; returns how many entities the cached one evicted."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        live = list(pipelines(topo, root, budget))
        try:
            evicted = _compare(topo, events, cuts, restart_at, budget, evictions, root, live)
        finally:
            for pipeline in live:
                pipeline.close()
    return evicted


def _compare(topo: TopologyDef, events: list[Event], cuts: list[int], restart_at: int,
             budget: StateBudget, evictions: list[list[str]] | None, root: Path,
             live: list[PartitionPipeline]) -> int:
    evicted = 0
    held, cached = live
    if True:
        bounds = [0, *sorted(set(cuts)), len(events)]
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            if b <= a:
                continue
            if i == restart_at:  # both restart from their stores
                held.close()
                cached.close()
                held, cached = pipelines(topo, root, budget)
                live[:] = [held, cached]
            one, two = held.process(batch(a, events[a:b])), cached.process(batch(a, events[a:b]))
            assert updates(one) == updates(two)
            assert dead(one) == dead(two)
            held.commit()
            cached.commit()
            assert stored(held.store) == stored(cached.store)
            assert cached.cache is not None
            if evictions is not None and i < len(evictions):
                cached.cache.evict(evictions[i])
            evicted = max(evicted, cached.cache.evicted)
        # every entity with stored state; a held row of late events only may be dropped
        assert set(stored(held.store)) <= set(cached.entity_ids()) <= set(held.entity_ids())
        st_ = held.stream_time
        if st_ is not None:
            assert cached.cache is not None
            for later in (st_, st_ + 1000, st_ + 30_000, st_ + 10**9):
                cached.cache.ensure(KEYS)
                one_v = held.operator.values([*KEYS, "nobody"], later)
                two_v = cached.operator.values([*KEYS, "nobody"], later)
                assert msgspec.msgpack.encode(one_v) == msgspec.msgpack.encode(two_v)
    return evicted


@SETTINGS
@given(features=features_st(), events=stream_st(), data=st.data())
def test_any_eviction_order_gives_the_values_and_bytes_of_the_state_held(
    features: Any, events: list[Event], data: st.DataObject
) -> None:
    lateness = data.draw(st.sampled_from([0, 1000, 10_000]))
    topo = TopologyDef(name="t", source=SourceDef(topic="t", key="u", timestamp="ts"),
                       features=features, lateness_ms=lateness)
    cuts = data.draw(st.lists(st.integers(1, len(events)), max_size=8))
    evictions = data.draw(st.lists(st.lists(st.sampled_from(KEYS), max_size=5), max_size=9))
    restart_at = data.draw(st.integers(0, 10))
    compare_run(topo, events, cuts, restart_at, StateBudget(10**12), evictions)


@SETTINGS
@given(features=features_st(), events=stream_st(), data=st.data())
def test_a_budget_too_small_for_one_entity_evicts_every_entity_at_every_commit(
    features: Any, events: list[Event], data: st.DataObject
) -> None:
    topo = TopologyDef(name="t", source=SourceDef(topic="t", key="u", timestamp="ts"),
                       features=features, lateness_ms=data.draw(st.sampled_from([0, 10_000])))
    cuts = data.draw(st.lists(st.integers(1, len(events)), max_size=8))
    compare_run(topo, events, cuts, data.draw(st.integers(0, 10)), StateBudget(1), None)


def test_evicted_entities_leave_memory_and_come_back_when_due(tmp_path: Path) -> None:
    """The mechanism the properties rely on, shown once: an evicted entity holds no row,
    its window expiry is a timer in the store, and it is loaded (and written) when due."""
    from streamfeat.topology.definitions import AggKind, FeatureDef, WindowDef, WindowKind

    five = WindowDef(WindowKind.SLIDING, 300_000, 60_000, "5m")
    topo = TopologyDef(name="t", source=SourceDef(topic="t", key="u", timestamp="ts"),
                       features=(FeatureDef("n", AggKind.COUNT, (five,)),))
    cached = PartitionPipeline(topo, 0, store=PartitionStore(tmp_path, "t", "t", 0),
                               budget=StateBudget(1))
    cached.process(batch(0, [("a", 0, {}), ("b", 1000, {})]))
    cached.commit()
    cache = cached.cache
    assert isinstance(cache, EntityCache)
    assert cached.operator.entity_count == 0 and cache.evicted == 2
    assert sorted(cached.entity_ids()) == ["a", "b"]
    out = cached.process(batch(2, [("c", 400_000, {})]))  # a and b's 5m windows emptied
    got = dict(zip(out.updates[0].entity_ids, out.updates[0].columns[0], strict=True))
    assert got == {"a": 0, "b": 0, "c": 1}
    assert cache.loaded == 2
    cached.close()
