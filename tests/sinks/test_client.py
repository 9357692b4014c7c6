"""Client.get against a real Redis, with values written by RedisSink."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from streamfeat.client import DEFAULT_REDIS_URL, Client, EntityFeatures
from streamfeat.errors import ConfigError, SinkError
from streamfeat.sinks import RedisSink, Update, version
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
D7 = WindowDef(WindowKind.SLIDING, 7 * 86_400_000, 3_600_000, "7d")
LIFE = WindowDef(WindowKind.LIFETIME, None, None, "lifetime")


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
    return TopologyDef(
        name=f"{unique_id}-orders",
        source=SourceDef(topic="orders", key="user_id"),
        features=(
            FeatureDef("orders", AggKind.COUNT, (H1, D7)),
            FeatureDef("amount_sum", AggKind.SUM, (H1,), field="amount"),
            FeatureDef("amount_max", AggKind.MAX, (H1,), field="amount"),
            FeatureDef("recent", AggKind.LAST_K, (LIFE,), field="item", k=2),
        ),
        ttl_ms=60_000,
        defaults={"orders__1h": 0, "orders__7d": 0, "amount_sum__1h": 0},
    )


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    with Client(redis_url) as c:
        yield c


@pytest.fixture
def written(redis_url: str, topology: TopologyDef) -> None:
    with RedisSink(redis_url, topology) as sink:
        sink.write([
            Update("u1", {"orders__1h": 2, "orders__7d": 9, "amount_sum__1h": 30.5,
                          "amount_max__1h": 20, "recent__lifetime": ["a", "b"]},
                   1_700_000_000_000, version(1, 0, 41)),
            Update("42", {"orders__1h": 1, "orders__7d": 1}, 1_700_000_000_500, version(1, 1, 7)),
        ])


@pytest.mark.usefixtures("written")
def test_get_decodes_stored_values(client: Client, topology: TopologyDef) -> None:
    got = client.get(topology, ["u1"])
    assert got == {"u1": {"orders__1h": 2, "orders__7d": 9, "amount_sum__1h": 30.5,
                          "amount_max__1h": 20, "recent__lifetime": ["a", "b"]}}


@pytest.mark.usefixtures("written")
def test_unseen_entities_get_defaults_and_absent_fields_are_none(
    client: Client, topology: TopologyDef
) -> None:
    got = client.get(topology, ["never", 42])
    assert got["never"] == {"orders__1h": 0, "orders__7d": 0, "amount_sum__1h": 0,
                            "amount_max__1h": None, "recent__lifetime": None}
    # entity 42 exists: a field it lacks is absent (None), even where a default exists
    assert got["42"] == {"orders__1h": 1, "orders__7d": 1, "amount_sum__1h": None,
                         "amount_max__1h": None, "recent__lifetime": None}


@pytest.mark.usefixtures("written")
def test_features_by_field_or_by_feature_name(client: Client, topology: TopologyDef) -> None:
    got = client.get(topology, ["u1"], ["orders", "amount_max__1h", "orders__1h"])
    assert got == {"u1": {"orders__1h": 2, "orders__7d": 9, "amount_max__1h": 20}}
    assert list(got["u1"]) == ["orders__1h", "orders__7d", "amount_max__1h"]


def test_unknown_feature_is_a_config_error(client: Client, topology: TopologyDef) -> None:
    with pytest.raises(ConfigError, match="no feature or field 'orders__2h'"):
        client.get(topology, ["u1"], ["orders__2h"])


@pytest.mark.usefixtures("written")
def test_get_with_meta(client: Client, topology: TopologyDef) -> None:
    got = client.get_with_meta(topology, ["42", "nobody"], ["orders__1h"])
    e42 = got["42"]
    assert e42.found
    assert e42.values == {"orders__1h": 1}
    assert e42.asof_ms == 1_700_000_000_500
    assert e42.version == version(1, 1, 7)
    assert e42.updated_ms is not None and e42.updated_ms > 1_700_000_000_000
    assert got["nobody"] == EntityFeatures("nobody", {"orders__1h": 0}, found=False)


def test_many_entities_in_one_round_trip(
    redis_url: str, topology: TopologyDef
) -> None:
    with RedisSink(redis_url, topology) as sink:
        sink.write([Update(f"e{i}", {"orders__1h": i}, 0, version(1, 0, i)) for i in range(100)])
    trips = RoundTrips(redis_url)
    client = Client(connection=trips.client)
    got = client.get(topology, [f"e{i}" for i in range(150)])
    assert trips.count == 1
    assert [got[f"e{i}"]["orders__1h"] for i in range(0, 150, 30)] == [0, 30, 60, 90, 0]
    client.get(topology, ["e1"])
    assert trips.count == 2
    assert client.get(topology, []) == {}
    assert trips.count == 2
    many = client.get(topology, [f"e{i}" for i in range(2_500)])  # three script calls
    assert trips.count == 3
    assert many["e99"]["orders__1h"] == 99
    assert many["e2499"]["orders__1h"] == 0
    trips.client.close()


@pytest.mark.usefixtures("written")
def test_read_script_is_reloaded_after_script_flush(
    client: Client, topology: TopologyDef, redis_url: str
) -> None:
    assert client.get(topology, ["u1"], ["orders__1h"]) == {"u1": {"orders__1h": 2}}
    with redis.Redis.from_url(redis_url) as conn:
        conn.script_flush()
    assert client.get(topology, ["u1"], ["orders__1h"]) == {"u1": {"orders__1h": 2}}


def test_stored_text_from_another_tool_is_a_sink_error(
    client: Client, topology: TopologyDef, redis_url: str
) -> None:
    with redis.Redis.from_url(redis_url) as conn:
        conn.hset(topology.redis_key("odd"), mapping={"_v": version(1, 0, 0), "orders__1h": "n/a"})
    with pytest.raises(SinkError, match="not streamfeat text"):
        client.get(topology, ["odd"])


def test_decode_responses_clients_work_too(
    redis_url: str, topology: TopologyDef, written: None
) -> None:
    with redis.Redis.from_url(redis_url, decode_responses=True) as conn:
        got = Client(connection=conn).get_with_meta(topology, ["u1"], ["amount_sum", "recent"])
    assert got["u1"].values == {"amount_sum__1h": 30.5, "recent__lifetime": ["a", "b"]}
    assert got["u1"].version == version(1, 0, 41)


def test_url_from_environment(monkeypatch: pytest.MonkeyPatch, redis_url: str,
                              topology: TopologyDef) -> None:
    monkeypatch.setenv("STREAMFEAT_REDIS", redis_url)
    with Client() as c:
        assert c.get(topology, ["x"], ["orders__1h"]) == {"x": {"orders__1h": 0}}
    monkeypatch.delenv("STREAMFEAT_REDIS")
    assert DEFAULT_REDIS_URL == "redis://localhost:6379/0"


def test_unreachable_redis_raises_sink_error(topology: TopologyDef) -> None:
    with Client("redis://127.0.0.1:1/0") as c, pytest.raises(SinkError, match="reachable"):
        c.get(topology, ["u1"])


def test_missing_topology_file_is_a_config_error(client: Client, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read topology"):
        client.get(tmp_path / "nope.yaml", ["u1"])
