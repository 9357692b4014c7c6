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
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfeat.operators import PartitionOperator
from streamfeat.pipeline import PartitionPipeline
from streamfeat.pipeline.cache import EntityCache, StateBudget
from streamfeat.records import RecordBatch
from streamfeat.state import PartitionStore
from streamfeat.topology.definitions import (
    AggKind,
    FeatureDef,
    SourceDef,
    TopologyDef,
    WindowDef,
    WindowKind,
)
from streamfeat.topology.expressions import compile_where
from tests.operators.test_fast_paths import features_st, record_st

KEYS = ["a", "b", "c", "d", "e"]
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
Event = tuple[str, int, dict[str, Any] | None]  # None: a malformed record


@st.composite
def stream_st(draw: st.DrawFn, keys: list[str] = KEYS, most: int = 90) -> list[Event]:
    t = draw(st.integers(0, 5000))
    out: list[Event] = []
    for _ in range(draw(st.integers(1, most))):
        # mostly forward, now and then far ahead (windows expire, entities fall due)
        t = max(0, t + draw(st.one_of(st.integers(-4000, 2500), st.integers(0, 40_000))))
        malformed = draw(st.integers(0, 19)) == 0
        out.append((draw(st.sampled_from(keys)), t, None if malformed else draw(record_st)))
    return out


def batch(first: int, events: list[Event]) -> RecordBatch:
    values = [b"{not json" if r is None else json.dumps({**r, "u": k, "ts": t}).encode()
              for k, t, r in events]
    return RecordBatch(0, list(range(first, first + len(events))), [t for _k, t, _r in events],
                       [k.encode() for k, _t, _r in events], values)


FIVE_MINUTES = WindowDef(WindowKind.SLIDING, 300_000, 60_000, "5m")
ONE_DAY = WindowDef(WindowKind.SLIDING, 86_400_000, 3_600_000, "1d")


def counting(window: WindowDef) -> TopologyDef:
    """One count of events over ``window`` (the mechanism tests' topology)."""
    return TopologyDef(name="t", source=SourceDef(topic="t", key="u", timestamp="ts"),
                       features=(FeatureDef("n", AggKind.COUNT, (window,)),))


def cached_count(root: Path, window: WindowDef, budget: StateBudget) -> PartitionPipeline:
    """A pipeline of :func:`counting` over ``window`` under ``budget``, its store in ``root``."""
    return PartitionPipeline(counting(window), 0, store=PartitionStore(root, "t", "t", 0),
                             budget=budget)


def counts(out: Any) -> dict[str, Any]:
    """The count each entity's update in a batch's output writes."""
    return {e: u.columns[0][i] for u in out.updates for i, e in enumerate(u.entity_ids)}


def updates(out: Any) -> bytes:
    """What the batch writes to Redis, entity by entity (the cache writes the evicted
    entities that expire in a batch of their own)."""
    by_entity = {}
    for u in out.updates:
        for i, entity in enumerate(u.entity_ids):
            assert entity not in by_entity, f"{entity} written twice in one batch"
            by_entity[entity] = [dict(zip(u.names, (c[i] for c in u.columns), strict=True)),
                                 u.asof_ms, u.version, list(u.deletes)]
    return msgspec.msgpack.encode(sorted(by_entity.items()))


def dead(out: Any) -> list[tuple[int, str]]:
    return [(d.record.offset, d.reason, d.kind) for d in out.dead]


def stored(store: PartitionStore | None, topo: TopologyDef) -> dict[str, bytes]:
    """The stored state, each entity's as of the stored stream time: loaded and stored
    again (an entity the cache evicted when its windows partly expired keeps its bytes
    until it is next stored; what the expiry dropped is dropped then, and no read sees
    it; :func:`stored_ids` checks that one left with nothing is deleted)."""
    assert store is not None
    committed = store.committed()
    operator = PartitionOperator(topo, 0, where_compiler=compile_where)
    if committed.meta is not None:
        operator.load_meta(committed.meta)
    operator.load_entities(store.entities())
    return dict(operator.dump_all())


def stored_ids(store: PartitionStore | None) -> set[str]:
    """The entities the store holds bytes for, as it holds them."""
    assert store is not None
    return {entity for entity, _data in store.entities()}


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
        assert stored(held.store, topo) == stored(cached.store, topo)
        assert stored_ids(held.store) == stored_ids(cached.store)  # emptied ones deleted
        assert cached.cache is not None
        if evictions is not None and i < len(evictions):
            cached.cache.evict(evictions[i])
        for op in (held.operator, cached.operator):  # what eviction picks from: every row held
            assert op._held_rows().tolist() == sorted(op._index.values())
        evicted = max(evicted, cached.cache.evicted)
    # every entity with stored state; a held row of late events only may be dropped
    assert set(stored(held.store, topo)) <= set(cached.entity_ids())
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
    cached = cached_count(tmp_path, FIVE_MINUTES, StateBudget(1))
    cached.process(batch(0, [("a", 0, {}), ("b", 1000, {})]))
    cached.commit()
    cache = cached.cache
    assert isinstance(cache, EntityCache)
    assert cached.operator.entity_count == 0 and cache.evicted == 2
    assert sorted(cached.entity_ids()) == ["a", "b"]
    out = cached.process(batch(2, [("c", 400_000, {})]))  # a and b's 5m windows emptied
    assert counts(out) == {"a": 0, "b": 0, "c": 1}
    assert cache.loaded == 2
    assert cached.operator.entity_ids() == ["c"]  # a and b were read, written, evicted
    cached.close()


def test_an_evicted_entity_its_expiry_leaves_with_no_state_is_deleted_at_the_next_commit(
        tmp_path: Path) -> None:
    """The store keeps no entity that is gone from every window, evicted or not: the
    expiry that empties an evicted entity's windows has the next commit delete its bytes
    (as the state held deletes them); one left with state keeps its older bytes."""
    cached = cached_count(tmp_path, ONE_DAY, StateBudget(1))
    cached.process(batch(0, [("a", 0, {}), ("b", 10 * 3_600_000, {})]))
    cached.commit()
    assert cached.operator.entity_count == 0 and stored_ids(cached.store) == {"a", "b"}
    out = cached.process(batch(2, [("c", 26 * 3_600_000, {})]))  # a's day ends, b's not
    assert counts(out) == {"a": 0, "c": 1}
    assert stored_ids(cached.store) == {"a", "b"}  # deleted with the commit, not before
    cached.commit()
    assert stored_ids(cached.store) == {"b", "c"}
    assert sorted(cached.entity_ids()) == ["b", "c"]
    cached.close()


def test_entities_an_older_streamfeat_kept_with_no_state_are_deleted_after_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store written before expiries deleted emptied entities holds some: the cache finds
    them when it opens the store, and the first commit deletes them."""
    before = cached_count(tmp_path, ONE_DAY, StateBudget(1))
    with monkeypatch.context() as older:  # the expiry keeps what it empties
        older.setattr(EntityCache, "take_emptied", lambda self: [])
        before.process(batch(0, [("a", 0, {}), ("b", 10 * 3_600_000, {})]))
        before.commit()
        before.process(batch(2, [("c", 26 * 3_600_000, {})]))  # a's day ends, b's not
        before.commit()
    assert stored_ids(before.store) == {"a", "b", "c"}
    before.close()
    after = cached_count(tmp_path, ONE_DAY, StateBudget(1))
    after.process(batch(3, [("c", 26 * 3_600_000 + 1, {})]))
    after.commit()
    assert stored_ids(after.store) == {"b", "c"}
    after.close()


def test_an_expiry_pushes_out_no_entity_held(tmp_path: Path) -> None:
    """Entities read back only for their window expiry are evicted again at once: loading
    them makes no room (it would push out entities held, to be read back when next used)."""
    budget = StateBudget(10**9)
    cached = cached_count(tmp_path, FIVE_MINUTES, budget)
    hot = ["h1", "h2", "h3"]
    cached.process(batch(0, [(e, 1000 * i, {}) for i, e in enumerate(["a", "b", *hot])]))
    cached.commit()
    cache = cached.cache
    assert isinstance(cache, EntityCache)
    assert cache.evict(["a", "b"]) == 2
    held = cached.operator.state_bytes()
    budget.total_bytes = held + held // 6  # the three held fill the share
    out = cached.process(batch(5, [("h1", 400_000, {})]))  # a and b's 5m windows emptied
    assert counts(out) == {"a": 0, "b": 0, "h1": 1, "h2": 0, "h3": 0}
    assert cache.loaded == 2
    assert sorted(cached.operator.entity_ids()) == hot
    cached.close()


def test_a_timer_left_before_the_entity_came_back_writes_nothing(tmp_path: Path) -> None:
    """A session's end moves with each event: the timer an entity left when first evicted
    fires after it came back and left again with a later one; it is read, found not due,
    and neither written nor changed."""
    session = WindowDef(WindowKind.SESSION, 10_000, None, "s10s")
    held, cached = pipelines(counting(session), tmp_path, StateBudget(1))
    try:
        steps = [[("a", 0, {}), ("z", 0, {})],  # a's session ends at 10 s: its first timer
                 [("a", 8000, {})],  # a comes back: its session now ends at 18 s
                 [("z", 12_000, {})],  # past a's first timer, before its second
                 [("z", 30_000, {})]]  # past both
        offset = 0
        for events in steps:
            one, two = held.process(batch(offset, events)), cached.process(batch(offset, events))
            offset += len(events)
            assert updates(one) == updates(two)
            held.commit()
            cached.commit()
        assert cached.cache is not None and cached.cache.loaded >= 3
    finally:
        held.close()
        cached.close()


def test_the_room_of_a_batch_is_a_fifth_of_what_the_share_holds(tmp_path: Path) -> None:
    """The worker's batches grow while it is behind (runtime.batching), but never beyond
    what the state budget can take: a fifth of the entities the share holds, divided by
    the entities the last batch brought into memory per record (those held already add
    nothing)."""
    budget = StateBudget(10**9)
    cached = cached_count(tmp_path, ONE_DAY, budget)
    cached.process(batch(0, [(f"u{i}", i, {}) for i in range(500)]))
    assert cached.record_room() is None  # under a thousand held: bytes per entity unknown
    # 3,000 records of 1,500 entities, 500 of them held already: 1,000 brought in
    cached.process(batch(500, [(f"u{i % 1500}", i, {}) for i in range(500, 3500)]))
    assert cached.new_entities_per_record == 1000 / 3000
    per_entity = cached.operator.state_bytes() / cached.operator.entity_count
    room = cached.record_room()
    assert room is not None
    assert abs(room - 0.2 * 10**9 / per_entity * 3) <= 2
    budget.join()  # a second partition opened: half the share, half the room
    half = cached.record_room()
    assert half is not None and abs(half - room / 2) <= 2
    # every entity held already: the least rate (1 in 100 records) bounds it
    cached.process(batch(3500, [(f"u{i % 1500}", 4000 + i, {}) for i in range(3000)]))
    assert cached.new_entities_per_record == 0
    held = cached.record_room()
    assert held is not None and abs(held - 0.2 * 5 * 10**8 / per_entity * 100) <= 200
    unbounded = cached_count(tmp_path / "x", ONE_DAY, StateBudget(None))
    unbounded.process(batch(0, [(f"u{i}", i, {}) for i in range(2000)]))
    assert unbounded.record_room() is None
    cached.close()
    unbounded.close()


MANY = [f"k{i}" for i in range(300)]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(features=features_st(), events=stream_st(MANY, 400), data=st.data())
def test_a_batch_of_too_many_new_entities_is_taken_in_parts_with_a_commit_between(
    features: Any, events: list[Event], data: st.DataObject
) -> None:
    """``split_batches`` (the worker's), over hundreds of entities, a few events each: a
    batch is aggregated up to the cache's entity room, and the rest after a commit lets
    the cache evict; the entities held never go past the room. Each part gives the
    updates, dead letters and stored bytes of the all-in-memory state handed the same
    parts, and every record is taken once."""
    from streamfeat.pipeline.cache import _LEAST_ROOM

    topo = TopologyDef(name="t", source=SourceDef(topic="t", key="u", timestamp="ts"),
                       features=features, lateness_ms=data.draw(st.sampled_from([0, 10_000])))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(events)), max_size=3))))
    parts = 0
    with tempfile.TemporaryDirectory() as tmp:
        held, cached = pipelines(topo, Path(tmp), StateBudget(1))
        cached.split_batches = True
        try:
            for pipeline in (held, cached):  # one entity held: the room is known
                pipeline.process(batch(0, [("k0", 0, {})]))
                pipeline.commit()
            for a, b in itertools.pairwise([0, *cuts, len(events)]):
                rest = batch(a + 1, events[a:b])
                while rest:
                    two = cached.process(rest)
                    assert 0 < two.consumed <= len(rest)
                    assert cached.next_offset == rest.offsets[two.consumed - 1] + 1
                    assert cached.operator.entity_count <= _LEAST_ROOM
                    one = held.process(rest[:two.consumed])
                    assert updates(one) == updates(two)
                    assert dead(one) == dead(two)
                    assert (one.late, one.malformed, one.aggregated) == (
                        two.late, two.malformed, two.aggregated)
                    held.commit()
                    cached.commit()
                    assert stored(held.store, topo) == stored(cached.store, topo)
                    rest = rest[two.consumed:]
                    parts += 1
        finally:
            held.close()
            cached.close()
    assert parts >= len([a for a, b in itertools.pairwise([0, *cuts, len(events)]) if b > a])


def splitting_daily_count(root: Path) -> PartitionPipeline:
    """A count over 1 day, a budget of a byte, batches taken in parts (as the worker)."""
    cached = cached_count(root, ONE_DAY, StateBudget(1))
    cached.split_batches = True
    return cached


def test_the_parts_of_a_wide_batch_bring_in_at_most_the_room(tmp_path: Path) -> None:
    """Shown once: 1,000 new entities in one batch, a budget that holds a few: parts of
    64 entities' events, each after the last was stored and evicted."""
    cached = splitting_daily_count(tmp_path)
    cached.process(batch(0, [("first", 0, {})]))  # something held: the room is known
    cached.commit()
    rest = batch(1, [(f"u{i % 1000}", i, {}) for i in range(2000)])
    sizes = []
    while rest:
        out = cached.process(rest)
        sizes.append(out.consumed)
        rest = rest[out.consumed:]
        cached.commit()
    # the first part: the first 64 entities' events; the second part begins with the 65th
    # entity's first event, and so on; the second half of the batch (u0..u999 again) is
    # in parts of 64 entities too, since each was evicted at the commit before
    assert sizes[0] == 64 and sum(sizes) == 2000 and max(sizes) == 64
    assert len(sizes) == 2 * -(-1000 // 64)
    assert cached.cache is not None and cached.cache.loaded == 1000
    cached.cache.ensure(["u0", "u999"])
    values = cached.operator.values(["u0", "u999"], 2000)
    assert [values[e][f] for e in ("u0", "u999") for f in values[e]] == [2, 2]
    cached.close()


def test_a_re_keyed_batch_taken_in_parts_drops_no_record_as_written_twice(
    tmp_path: Path,
) -> None:
    """A re-keyed stream drops a record whose source offset it took already; the part of
    a batch left for after the commit was judged once with the whole batch, and is still
    taken (the source offsets seen are those of the part taken), while a record the first
    stage wrote twice is still dropped."""
    from streamfeat.records import Origins

    cached = splitting_daily_count(tmp_path)

    def rekeyed(first: int, events: list[Event], sources: list[int]) -> RecordBatch:
        out = batch(first, events)
        out.origins = Origins([3] * len(sources), sources)
        return out

    rest = rekeyed(0, [(f"u{i}", i, {}) for i in range(300)], list(range(300)))
    taken = duplicates = parts = 0
    while rest:
        out = cached.process(rest)
        taken += out.aggregated
        duplicates += out.duplicates
        parts += 1
        rest = rest[out.consumed:]
        cached.commit()
    assert parts > 1 and taken == 300 and duplicates == 0
    again = cached.process(rekeyed(300, [("u5", 400, {}), ("u7", 401, {})], [5, 300]))
    assert again.duplicates == 1 and again.aggregated == 1
    cached.close()
