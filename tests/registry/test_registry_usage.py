"""Model reads counted by the readers (issue #17): in memory, flushed in one batch every
interval and at close, never a Redis write per read (counted by a private redis-server's own
INFO commandstats); a flush that fails is logged once, keeps its counts and never fails a
read."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis as redis_lib

from streamfeat.client import Client
from streamfeat.errors import ConfigError
from streamfeat.registry import READ_SET, ModelRead, SharedCatalog, usage_key
from streamfeat.topology import TopologyDef, load_topology_text

from harness import PrivateRedis

pytestmark = pytest.mark.integration

SHOP: TopologyDef = load_topology_text("""\
name: shop
source: {topic: shop, key: user_id, timestamp: ts}
features:
  - {name: spend, agg: sum, field: amount, windows: [1h, 1d]}
  - {name: visits, agg: count, windows: [1h]}
defaults: {visits: 0}
""")


def _calls(conn: redis_lib.Redis) -> dict[str, int]:
    """Calls per command since the server started (``INFO commandstats``)."""
    return {name.removeprefix("cmdstat_"): int(stat["calls"])
            for name, stat in conn.info("commandstats").items()}


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


def _wait(check: Callable[[], bool], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)


def test_reads_are_counted_in_memory_and_sent_in_one_batch(tmp_path: Path) -> None:
    with PrivateRedis(tmp_path) as server:
        conn = redis_lib.Redis.from_url(server.url)
        conn.hset("sf:shop:u1", mapping={"spend__1h": "12.5", "visits__1h": "3", "_v": "x",
                                          "_asof": "1", "_updated": "1"})
        fraud = Client(server.url, model="fraud-v3", usage_every_s=3600)
        plain = Client(server.url)  # no model: records nothing, as before
        before = _calls(conn)
        started = time.time()
        for i in range(500):
            assert fraud.get(SHOP, ["u1", "u2"], ["spend"])["u1"]["spend__1h"] == 12.5
            if i % 5 == 0:
                assert fraud.get(SHOP, ["u2"], ["visits__1h"]) == {"u2": {"visits__1h": 0}}
            plain.get(SHOP, ["u1"])
        during = _delta(_calls(conn), before)
        # one script call per read, and nothing written
        assert during.get("evalsha") == 500 + 100 + 500, during
        for write in ("hincrby", "hset", "sadd", "multi", "exec"):
            assert during.get(write, 0) == 0, during
        assert conn.exists(usage_key("shop")) == 0
        at_close = _calls(conn)
        fraud.close()
        plain.close()
        ended = time.time()
        sent = _delta(_calls(conn), at_close)
        # one MULTI/EXEC: an HINCRBY and an HSET per field read, whatever the reads
        assert (sent.get("multi"), sent.get("exec"), sent.get("hincrby"), sent.get("hset"),
                sent.get("sadd")) == (1, 1, 3, 3, 1), sent
        stored = {k.decode(): v.decode() for k, v in conn.hgetall(usage_key("shop")).items()}
        counts = {k: int(v) for k, v in stored.items() if k.startswith("n|")}
        assert counts == {"n|fraud-v3|spend__1h": 500, "n|fraud-v3|spend__1d": 500,
                          "n|fraud-v3|visits__1h": 100}
        for field in ("spend__1h", "spend__1d", "visits__1h"):
            assert started * 1000 <= int(stored[f"t|fraud-v3|{field}"]) <= ended * 1000
        assert conn.sismember(READ_SET, "shop")
        with SharedCatalog(server.url) as catalog:
            reads = catalog.usage()
        assert [(r.model, r.topology, r.field, r.reads) for r in reads] == [
            ("fraud-v3", "shop", "spend__1d", 500), ("fraud-v3", "shop", "spend__1h", 500),
            ("fraud-v3", "shop", "visits__1h", 100)]
        assert all(isinstance(r, ModelRead) and r.last_seen_ms for r in reads)
        conn.close()


def test_counts_are_sent_every_interval_while_the_client_reads(tmp_path: Path) -> None:
    with PrivateRedis(tmp_path) as server, \
            Client(server.url, model="churn_v1", usage_every_s=0.3) as client:
        conn = redis_lib.Redis.from_url(server.url)

        def reads() -> int:
            return int(conn.hget(usage_key("shop"), "n|churn_v1|visits__1h") or 0)

        for _ in range(10):
            client.get(SHOP, ["u1"], ["visits"])
        _wait(lambda: reads() == 10)  # not closed: the interval sent them
        for _ in range(5):
            client.get(SHOP, ["u1"], ["visits"])
        _wait(lambda: reads() == 15)
        conn.close()


def test_a_failed_flush_is_logged_once_and_never_fails_a_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamfeat.registry")
    with PrivateRedis(tmp_path) as server:
        admin = redis_lib.Redis.from_url(server.url)
        # a user that may read features but write nothing: every flush is refused (NOPERM)
        admin.acl_setuser("reader", enabled=True, passwords=["+pw"], keys=["~*"],
                          categories=["+@read", "+@connection"],
                          commands=["+evalsha", "+script|load"])
        admin.hset("sf:shop:u1", mapping={"visits__1h": "3", "_v": "x"})
        url = f"redis://reader:pw@127.0.0.1:{server.port}/0"
        with Client(url, model="fraud-v3", usage_every_s=0.1) as client:
            for _ in range(20):  # through several failing flushes
                assert client.get(SHOP, ["u1"], ["visits"]) == {"u1": {"visits__1h": 3}}
                time.sleep(0.05)
            failures = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(failures) == 1, caplog.text  # once, not per flush
            assert "recording which models read which features failed" in \
                failures[0].getMessage()
            assert "no permissions" in failures[0].getMessage()
            assert admin.exists(usage_key("shop")) == 0
            admin.acl_setuser("reader", enabled=True, categories=["+@write", "+@transaction"])

            def stored() -> int:
                return int(admin.hget(usage_key("shop"), "n|fraud-v3|visits__1h") or 0)

            _wait(lambda: stored() == 20)  # the counts kept through the failures
            assert client.get(SHOP, ["u1"], ["visits"])["u1"]["visits__1h"] == 3
        assert stored() == 21  # and the last one at close
        assert "works again" in caplog.text
        admin.close()


@pytest.mark.parametrize("name", ["has space", "a|b", "", "-x", "m" * 201])
def test_a_model_name_is_checked(name: str) -> None:
    with pytest.raises(ConfigError, match="is not a model name"):
        Client("redis://127.0.0.1:1/0", model=name)
