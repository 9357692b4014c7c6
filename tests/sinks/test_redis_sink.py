"""RedisSink against a real Redis: the CAS script, batching, TTL, retries."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import streamfeat.sinks.redis as redis_sink
from streamfeat.errors import SinkError
from streamfeat.sinks import RedisSink, Update, UpdateBatch, WriteResult, encode_value, version
from streamfeat.topology.definitions import (
    AggKind,
    FeatureDef,
    SourceDef,
    TopologyDef,
    WindowDef,
    WindowKind,
)

pytestmark = pytest.mark.integration

H1 = WindowDef(WindowKind.SLIDING, 3_600_000, 60_000, "1h")
D1 = WindowDef(WindowKind.SLIDING, 86_400_000, 1_800_000, "1d")


def make_topology(name: str, ttl_ms: int | None = 60_000) -> TopologyDef:
    return TopologyDef(
        name=name,
        source=SourceDef(topic="orders", key="user_id"),
        features=(
            FeatureDef("orders", AggKind.COUNT, (H1, D1)),
            FeatureDef("amount_mean", AggKind.MEAN, (H1,), field="amount"),
            FeatureDef("last_items", AggKind.LAST_K, (H1,), field="item", k=3),
        ),
        ttl_ms=ttl_ms,
        defaults={"orders__1h": 0, "orders__1d": 0},
    )


class RoundTrips:
    """Counts requests written to the socket: one per command, one per whole pipeline."""

    def __init__(self, url: str) -> None:
        counter = self

        class Counting(redis.Connection):
            def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                counter.count += 1
                super().send_packed_command(command, check_health)

        self.count = 0
        self.client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
            url, connection_class=Counting))
        self.client.ping()  # connect (and handshake) before counting
        self.count = 0


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _delete_keys(redis_url: str, unique_id: str) -> Iterator[None]:
    """Leave the shared Redis as found: delete this test's keys afterwards."""
    yield
    with redis.Redis.from_url(redis_url) as conn:
        keys = list(conn.scan_iter(match=f"sf:{unique_id}-*", count=1000))
        if keys:
            conn.unlink(*keys)


@pytest.fixture
def topology(unique_id: str) -> TopologyDef:
    return make_topology(f"{unique_id}-orders")


@pytest.fixture
def sink(redis_url: str, topology: TopologyDef) -> Iterator[RedisSink]:
    with RedisSink(redis_url, topology) as s:
        yield s


def stored(r: redis.Redis, topology: TopologyDef, entity_id: str) -> dict[str, str]:
    return r.hgetall(topology.redis_key(entity_id))  # type: ignore[return-value]


def up(entity: str, offset: int, values: dict[str, Any], *, gen: int = 1, part: int = 0,
       asof: int = 1_000) -> Update:
    return Update(entity, values, asof, version(gen, part, offset))


def test_first_write_applies_and_sets_reserved_fields(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    seconds, micros = r.time()
    now_ms = seconds * 1000 + micros // 1000
    result = sink.write([up("u1", 5, {"orders__1h": 3, "amount_mean__1h": 12.5,
                                      "last_items__1h": ["a", "b"]}, asof=1_700_000_000_000)])
    assert result == WriteResult(applied=1)
    h = stored(r, topology, "u1")
    assert h["orders__1h"] == "3"
    assert h["amount_mean__1h"] == "12.5"
    assert h["last_items__1h"] == '["a","b"]'
    assert h["_asof"] == "1700000000000"
    assert h["_v"] == version(1, 0, 5)
    assert now_ms - 1000 <= int(h["_updated"]) <= now_ms + 5000
    assert "orders__1d" not in h  # fields not named are left as they are


def test_newer_version_applies_older_and_equal_are_rejected(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    assert sink.write([up("u1", 10, {"orders__1h": 5})]).applied == 1
    result = sink.write([
        up("u1", 9, {"orders__1h": 99}),  # older offset: stale
        up("u1", 10, {"orders__1h": 98}),  # same version: duplicate
        up("u1", 20, {"orders__1h": 4}, part=0, gen=0),  # older generation: stale
    ])
    assert (result.applied, result.duplicate, result.stale, result.rejected) == (0, 1, 2, 3)
    assert result.rejected_ids == ("u1", "u1", "u1")
    assert result.stale_ids == ("u1", "u1")  # the duplicate is not stale
    assert stored(r, topology, "u1")["orders__1h"] == "5"

    result = sink.write([up("u1", 11, {"orders__1h": 6}), up("u1", 0, {"orders__1h": 7}, gen=2)])
    assert result.applied == 2
    h = stored(r, topology, "u1")
    assert h["orders__1h"] == "7"
    assert h["_v"] == version(2, 0, 0)  # a backfill's higher generation wins


def test_updates_in_a_batch_apply_in_order(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    result = sink.write([up("u1", 1, {"orders__1h": 1}), up("u1", 3, {"orders__1h": 3}),
                         up("u1", 2, {"orders__1h": 2})])
    assert (result.applied, result.stale) == (2, 1)
    assert stored(r, topology, "u1")["orders__1h"] == "3"


def test_none_and_non_finite_delete_fields(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    sink.write([up("u1", 1, {"orders__1h": 2, "amount_mean__1h": 3.5, "last_items__1h": [1]})])
    sink.write([up("u1", 2, {"amount_mean__1h": None, "last_items__1h": math.nan})])
    h = stored(r, topology, "u1")
    assert "amount_mean__1h" not in h
    assert "last_items__1h" not in h
    assert h["orders__1h"] == "2"


def test_ttl_is_set_and_refreshed_on_applied_writes(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    key = topology.redis_key("u1")
    sink.write([up("u1", 1, {"orders__1h": 1})])
    assert 50_000 < r.pttl(key) <= 60_000
    r.pexpire(key, 5_000)
    sink.write([up("u1", 1, {"orders__1h": 1})])  # duplicate: not a write, TTL untouched
    assert r.pttl(key) <= 5_000
    sink.write([up("u1", 2, {"orders__1h": 2})])
    assert 50_000 < r.pttl(key) <= 60_000


def test_no_ttl_means_no_expiry(redis_url: str, r: redis.Redis, unique_id: str) -> None:
    topology = make_topology(f"{unique_id}-forever", ttl_ms=None)
    key = topology.redis_key("u1")
    r.hset(key, mapping={"orders__1h": "1"})
    r.pexpire(key, 5_000)
    with RedisSink(redis_url, topology) as sink:
        sink.write([up("u1", 1, {"orders__1h": 2})])
    assert r.pttl(key) == -1


def test_replayed_batch_is_idempotent(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    batch = [up(f"u{i}", 100 + i, {"orders__1h": i, "orders__1d": i * 10,
                                   "amount_mean__1h": i / 3 if i % 2 else None})
             for i in range(50)]
    assert sink.write(batch).applied == 50
    before = {f"u{i}": stored(r, topology, f"u{i}") for i in range(50)}
    again = sink.write(batch)
    assert (again.applied, again.duplicate, again.stale) == (0, 50, 0)
    assert {f"u{i}": stored(r, topology, f"u{i}") for i in range(50)} == before


def test_resending_a_partly_applied_batch_ends_as_one_clean_write(
    redis_url: str, r: redis.Redis, unique_id: str
) -> None:
    """A connection lost mid-batch leaves some chunks applied; the retry re-sends it all."""
    clean_topo = make_topology(f"{unique_id}-clean")
    retry_topo = make_topology(f"{unique_id}-retry")
    older = [up(f"u{i}", 1, {"orders__1h": -1, "amount_mean__1h": 0.5}) for i in range(30)]
    batch = [up(f"u{i}", 10 + i, {"orders__1h": i, "amount_mean__1h": None}) for i in range(30)]
    with RedisSink(redis_url, clean_topo, chunk_size=7) as clean, \
            RedisSink(redis_url, retry_topo, chunk_size=7) as retry:
        clean.write(older)
        clean.write(batch)
        retry.write(older)
        retry.write(batch[:14])  # the first two chunks got through before the "failure"
        result = retry.write(batch)  # the worker re-sends the whole batch
    assert (result.applied, result.duplicate) == (16, 14)

    def state(topo: TopologyDef) -> list[dict[str, str]]:
        return [{k: v for k, v in stored(r, topo, f"u{i}").items() if k != "_updated"}
                for i in range(30)]

    assert state(retry_topo) == state(clean_topo)


@pytest.mark.parametrize("chunk_size", [500, 1])
def test_many_entities_in_one_round_trip(
    redis_url: str, r: redis.Redis, topology: TopologyDef, chunk_size: int
) -> None:
    trips = RoundTrips(redis_url)
    sink = RedisSink(trips.client, topology, chunk_size=chunk_size)
    batch = [up(f"e{i}", 1, {"orders__1h": i, "orders__1d": 2 * i}) for i in range(1_200)]
    result = sink.write(batch)  # includes loading the script, in the same pipeline
    assert result.applied == 1_200
    assert trips.count == 1
    assert sink.write([up(f"e{i}", 2, {"orders__1h": 0}) for i in range(1_200)]).applied == 1_200
    assert trips.count == 2
    assert stored(r, topology, "e1199")["orders__1d"] == "2398"
    trips.client.close()


def test_script_is_reloaded_after_script_flush(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    sink.write([up("u1", 1, {"orders__1h": 1})])
    r.script_flush()
    assert sink.write([up("u1", 2, {"orders__1h": 2})]).applied == 1
    assert stored(r, topology, "u1")["orders__1h"] == "2"


def test_unreachable_redis_raises_sink_error(topology: TopologyDef) -> None:
    sink = RedisSink("redis://127.0.0.1:1/0", topology)
    assert sink.ping() is False
    with pytest.raises(SinkError, match="safe to re-send"):
        sink.write([up("u1", 1, {"orders__1h": 1})])


def test_ping(sink: RedisSink) -> None:
    assert sink.ping() is True


def test_a_foreign_key_of_another_type_raises_sink_error(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    r.set(topology.redis_key("u1"), "not a hash")
    with pytest.raises(SinkError, match="WRONGTYPE"):
        sink.write([up("u1", 1, {"orders__1h": 1})])


@pytest.mark.parametrize(
    ("update", "error"),
    [
        (Update("u1", {"nope__1h": 1}, 0, version(1, 0, 0)), ValueError),
        (Update("u1", {"_v": "x"}, 0, version(1, 0, 0)), ValueError),
        (Update("u1", {"orders__1h": 1}, 0, "1.0.0"), ValueError),
        (Update("u1", {"orders__1h": object()}, 0, version(1, 0, 0)), TypeError),
    ],
)
def test_invalid_updates_fail_before_touching_redis(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef, update: Update,
    error: type[Exception],
) -> None:
    with pytest.raises(error):
        sink.write([up("u0", 1, {"orders__1h": 1}), update])
    assert not r.exists(topology.redis_key("u0"))


def test_empty_batch_is_a_no_op(sink: RedisSink) -> None:
    assert sink.write([]) == WriteResult()


def test_racing_writers_end_at_the_newest_version(
    redis_url: str, r: redis.Redis, topology: TopologyDef
) -> None:
    """Two workers (say, before and after a rebalance) write the same entities at once."""
    offsets = list(range(1, 401))
    random.Random(7).shuffle(offsets)
    halves = [offsets[::2], offsets[1::2]]
    results: list[WriteResult] = []

    def run(mine: list[int]) -> None:
        with RedisSink(redis_url, topology, chunk_size=3) as sink:
            for i in range(0, len(mine), 20):
                batch = [up(f"u{o % 5}", o, {"orders__1h": o}) for o in mine[i : i + 20]]
                results.append(sink.write(batch))

    threads = [threading.Thread(target=run, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(x.applied + x.rejected for x in results) == 400
    for e in range(5):
        newest = max(o for o in offsets if o % 5 == e)
        h = stored(r, topology, f"u{e}")
        assert (h["orders__1h"], h["_v"]) == (str(newest), version(1, 0, newest))


# ------------------------------------------------------------------ columnar batches

def batch(ids: list[str], offset: int, rows: list[dict[str, Any]], *, gen: int = 1,
          part: int = 0, asof: int = 1_000, names: list[str] | None = None) -> UpdateBatch:
    names = names or ["orders__1h", "orders__1d", "amount_mean__1h", "last_items__1h"]
    return UpdateBatch(ids, names, [[row.get(n) for row in rows] for n in names], asof,
                       version(gen, part, offset))


@pytest.mark.parametrize("slab", [1, 1_000, 8_000])  # texts made a chunk, two, or all at once
def test_a_batch_stores_what_the_same_updates_store(
    redis_url: str, r: redis.Redis, unique_id: str, slab: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_sink, "_SLAB_ENTITIES", slab)
    rng = random.Random(5)
    a, b = make_topology(f"{unique_id}-a"), make_topology(f"{unique_id}-b")
    ids = [f"e{i}" for i in range(1_200)]  # several chunks
    rows = [{"orders__1h": rng.randrange(5), "orders__1d": rng.choice([0, 7, 2**60]),
             "amount_mean__1h": rng.choice([None, 0.1, 12.0, 1e-7, math.nan, rng.random()]),
             "last_items__1h": rng.choice([None, [], ["x", 1.5], [2.0]])} for _ in ids]
    one = batch(ids, 7, rows, asof=1_700_000_000_000)
    with RedisSink(redis_url, a) as sa, RedisSink(redis_url, b) as sb:
        sa.write([up(f"e{i}", 1, {"orders__1h": 99, "amount_mean__1h": 5.0}) for i in range(9)])
        sb.write([up(f"e{i}", 1, {"orders__1h": 99, "amount_mean__1h": 5.0}) for i in range(9)])
        assert sa.write([one]) == WriteResult(applied=1_200)
        assert sb.write(one.updates()) == WriteResult(applied=1_200)
    for e in ids:
        ha, hb = stored(r, a, e), stored(r, b, e)
        ha.pop("_updated"), hb.pop("_updated")
        assert ha == hb
    absent = [i for i in range(9) if encode_value(rows[i]["amount_mean__1h"]) is None]
    assert absent  # the seed gives some: fields written before are deleted by the batch
    assert all("amount_mean__1h" not in stored(r, a, f"e{i}") for i in absent)


def test_a_batch_deletes_absent_fields_and_respects_versions(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    full = {"orders__1h": 2, "orders__1d": 3, "amount_mean__1h": 1.5, "last_items__1h": ["a"]}
    assert sink.write([batch(["u1", "u2"], 5, [full, full])]).applied == 2
    result = sink.write([
        batch(["u1"], 4, [{**full, "orders__1h": 9}]),  # stale
        batch(["u2"], 6, [{"orders__1h": 1, "orders__1d": 1}]),  # newer: mean and list absent
    ])
    assert (result.applied, result.stale, result.rejected_ids) == (1, 1, ("u1",))
    assert result.stale_ids == ("u1",)
    assert sink.stored_version("u1") == (1, 0, 5)  # what refused it
    assert sink.stored_version("u2") == (1, 0, 6) and sink.stored_version("nobody") is None
    assert stored(r, topology, "u1")["orders__1h"] == "2"
    h = stored(r, topology, "u2")
    assert "amount_mean__1h" not in h and "last_items__1h" not in h
    assert (h["orders__1h"], h["_v"]) == ("1", version(1, 0, 6))


def test_a_batch_and_single_updates_mix_in_order(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    full = {"orders__1h": 2, "orders__1d": 3}
    result = sink.write([up("u1", 1, {"orders__1h": 1}), batch(["u1"], 2, [full]),
                         up("u1", 3, {"orders__1d": 30})])
    assert result.applied == 3
    h = stored(r, topology, "u1")
    assert (h["orders__1h"], h["orders__1d"], h["_v"]) == ("2", "30", version(1, 0, 3))


@pytest.mark.parametrize(("make", "match"), [
    (lambda: batch(["u1"], 1, [{}], names=["orders__1h", "nope__1h"]), "not a field"),
    (lambda: UpdateBatch(["u1"], ["orders__1h", "orders__1h"], [[1], [2]], 0,
                         version(1, 0, 1)), "twice"),
    (lambda: UpdateBatch(["u1"], ["orders__1h"], [[1]], 0, version(1, 0, 1),
                         deletes=["orders__1d"]), "cannot be deleted"),
    (lambda: UpdateBatch(["u1"], ["orders__1h"], [[1]], 0, version(1, 0, 1),
                         deletes=["_v"]), "cannot be deleted"),
    (lambda: UpdateBatch(["u1"], ["orders__1h", "orders__1d", "amount_mean__1h",
                                  "last_items__1h"], [[1], [1], [1.0], [[]]], 0, "v1"),
     "not in the form"),
    (lambda: UpdateBatch(["u1", "u2"], ["orders__1h", "orders__1d", "amount_mean__1h",
                                        "last_items__1h"], [[1], [1, 2], [1.0, 2.0], [[], []]],
                         0, version(1, 0, 1)), "has 1 values for 2"),
])
def test_invalid_batches_fail_before_touching_redis(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef, make: Any, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        sink.write([make()])
    assert not stored(r, topology, "u1")


def test_a_batch_naming_some_fields_leaves_the_others_and_deletes_retired_ones(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    """A definition change: fields still being recomputed are not named (left as stored);
    fields no longer declared are deleted."""
    r.hset(topology.redis_key("u1"), mapping={"orders__1d": "7", "gone__1h": "3"})
    sink.write([UpdateBatch(["u1"], ["orders__1h"], [[2]], 5, version(1, 0, 1),
                            deletes=["gone__1h"])])
    h = stored(r, topology, "u1")
    assert (h["orders__1h"], h["orders__1d"], h["_asof"]) == ("2", "7", "5")
    assert "gone__1h" not in h


def test_a_refresh_applies_at_an_equal_version_but_never_below(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    def write(v: int, value: int, *, refresh: bool) -> tuple[int, int, int]:
        res = sink.write([UpdateBatch(["u1"], ["orders__1h"], [[value]], 5, version(1, 0, v),
                                      refresh=refresh)])
        return res.applied, res.duplicate, res.stale

    assert write(4, 1, refresh=False) == (1, 0, 0)
    assert write(4, 2, refresh=False) == (0, 1, 0)  # the same version again: a duplicate
    assert write(4, 3, refresh=True) == (1, 0, 0)   # recomputed values of the same records
    assert stored(r, topology, "u1")["orders__1h"] == "3"
    assert write(3, 9, refresh=True) == (0, 0, 1)   # an older version stays refused
    assert stored(r, topology, "u1")["orders__1h"] == "3"


def test_partition_entities_lists_the_hashes_last_written_from_a_partition(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    """What a definition change rewrites: every entity Redis holds for the partition, by its
    ``_v``; odd ids (glob characters, unicode) included, other topologies' keys not."""
    ids = {0: ["a", "b*", "[c]", "é?"], 1: ["d", "e\\\\f"]}
    for p, entities in ids.items():
        sink.write([UpdateBatch(entities, ["orders__1h"], [[1] * len(entities)], 5,
                                version(1, p, 7))])
    r.hset(topology.redis_key("no-version"), "orders__1h", "1")
    other = RedisSink(sink._redis, make_topology(f"{topology.name}x"))
    other.write([UpdateBatch(["a"], ["orders__1h"], [[1]], 5, version(1, 0, 1))])
    try:
        for p, entities in ids.items():
            pages = list(sink.partition_entities(p, count=2))
            assert sorted(e for page in pages for e in page) == sorted(entities)
    finally:
        r.delete(other.topology.redis_key("a"))


def test_mark_history_keeps_one_mark_per_field_and_partition(
    sink: RedisSink, r: redis.Redis, topology: TopologyDef
) -> None:
    from streamfeat.sinks.redis import partial_key

    key = partial_key(topology.name)
    try:
        sink.mark_history(0, ["orders__1h", "orders__1d"], {"orders__1d": 1000})
        sink.mark_history(1, ["orders__1d"], {"orders__1d": 2000})
        assert r.hgetall(key) == {"orders__1d@0": "1000", "orders__1d@1": "2000"}
        sink.mark_history(0, ["orders__1d"], {})  # recomputed again, from a full history
        assert r.hgetall(key) == {"orders__1d@1": "2000"}
    finally:
        r.delete(key)
