"""The feature server's HTTP API, app-level (Starlette's TestClient), on the real Redis:
every value it serves is the Python client's, errors say what to do, metrics count."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from streamfeat.client import Client
from streamfeat.errors import ConfigError, TopologyError
from streamfeat.serving import IO_MODES, ServeConfig, build_app
from streamfeat.sinks import version

from .conftest import Served, free_port, orders_topology

pytestmark = pytest.mark.integration


def app_client(paths: list[Path], redis_url: str, **settings: Any) -> TestClient:
    config = ServeConfig(topologies=tuple(str(p) for p in paths), redis=redis_url, **settings)
    return TestClient(build_app(config), raise_server_exceptions=True)


@pytest.fixture(params=IO_MODES)
def http(request: pytest.FixtureRequest, served: Served, redis_url: str) -> Iterator[TestClient]:
    """The app serving ``served``'s topology, with each way of waiting for Redis."""
    with app_client([served.path], redis_url, io=request.param) as c:
        yield c


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    with Client(redis_url) as c:
        yield c


def post(http: TestClient, topology: str, body: Any) -> Any:
    r = http.post(f"/features/{topology}", content=msgspec.json.encode(body))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def test_batch_equals_the_client_with_defaults_and_nulls(
    http: TestClient, served: Served, client: Client
) -> None:
    topo = served.topology
    # stored entities, never-seen ones (ints and text), duplicates: as the client reads them
    asked: list[str | int] = [*served.stored, "nobody", 12345, "e1", 7, "e0"]
    got = post(http, topo.name, {"entities": asked})
    expected = client.get(topo, asked)
    assert got == {"topology": topo.name, "entities": expected}
    assert list(got["entities"]) == list(expected)  # request order, each id once
    # the fixture's data has every kind, so the comparison is not vacuous
    e3, e7, unseen = got["entities"]["e3"], got["entities"]["e7"], got["entities"]["nobody"]
    assert 2**70 in e3.values()
    assert e7["orders__5m"] is None and topo.defaults["orders__5m"] == 0  # absent: null
    assert unseen["orders__5m"] == 0 and unseen["last_amounts__lifetime"] == []
    assert unseen["amount_p95__1h"] is None  # no default: null
    kinds = {type(v) for values in got["entities"].values() for v in values.values()}
    assert kinds == {int, float, str, list, type(None)}


@pytest.mark.parametrize("features", [
    ["orders"],                                   # a feature: every window of it
    ["amount_sum__1h", "orders__7d"],             # fields, in the order asked
    ["orders__1h", "orders", "last_amounts"],     # both, overlapping: each field once
    [],                                           # nothing but the entity
])
def test_feature_subsets_equal_the_client(
    http: TestClient, served: Served, client: Client, features: list[str]
) -> None:
    ids = ["e2", "e5", "missing"]
    got = post(http, served.topology.name, {"entities": ids, "features": features})
    expected = client.get(served.topology, ids, features)
    assert got["entities"] == expected
    assert [list(v) for v in got["entities"].values()] == [list(v) for v in expected.values()]


def test_meta_equals_get_with_meta(http: TestClient, served: Served, client: Client) -> None:
    ids = ["e4", "ghost"]
    got = post(http, served.topology.name,
               {"entities": ids, "features": ["orders"], "meta": True})
    expected = client.get_with_meta(served.topology, ids, ["orders"])
    assert got["entities"] == {eid: e.values for eid, e in expected.items()}
    assert got["meta"] == {eid: {"found": e.found, "asof_ms": e.asof_ms,
                                 "updated_ms": e.updated_ms, "version": e.version}
                           for eid, e in expected.items()}
    assert got["meta"]["e4"]["version"] == version(0, 0, 4)
    assert got["meta"]["ghost"] == {"found": False, "asof_ms": None, "updated_ms": None,
                                    "version": None}


def test_many_entities_take_several_script_calls(
    http: TestClient, served: Served, client: Client, redis_url: str
) -> None:
    """Over 1000 entities the client sends one script call per 1000, pipelined."""
    ids = [f"x{i}" for i in range(2500)] + served.stored
    got = post(http, served.topology.name, {"entities": ids, "features": ["orders", "merchants"]})
    assert got["entities"] == client.get(served.topology, ids, ["orders", "merchants"])


def test_get_one_entity_equals_post(http: TestClient, served: Served, client: Client) -> None:
    name = served.topology.name
    r = http.get(f"/features/{name}/e6?features=orders,last_status&features=amount_sum__1h")
    assert r.status_code == 200, r.text
    wanted = ["orders", "last_status", "amount_sum__1h"]
    assert r.json() == {"topology": name, "entities": client.get(served.topology, ["e6"], wanted)}
    full = http.get(f"/features/{name}/e6?meta=true").json()
    assert full["entities"] == client.get(served.topology, ["e6"])
    assert full["meta"]["e6"]["found"] is True
    # ids with a slash, a space, non-ASCII: percent-encoded in the path
    assert http.get(f"/features/{name}/a%2Fb%20%C3%BC").json()["entities"] == \
        client.get(served.topology, ["a/b ü"])


def test_unknown_topology_is_404_naming_the_served_ones(
    http: TestClient, served: Served
) -> None:
    for r in (http.post("/features/nope", json={"entities": ["u1"]}),
              http.get("/features/nope/u1")):
        assert r.status_code == 404
        assert r.json() == {"error": f"no topology 'nope' is served here; topologies: "
                                     f"{served.topology.name}"}


def test_unknown_feature_is_400_naming_the_features(http: TestClient, served: Served) -> None:
    r = http.post(f"/features/{served.topology.name}",
                  json={"entities": ["e1"], "features": ["orders", "ordres"]})
    assert r.status_code == 400
    error = r.json()["error"]
    assert "no feature or field 'ordres'" in error
    assert "features: amount_max, amount_mean_completed" in error and "orders" in error
    r = http.get(f"/features/{served.topology.name}/e1?features=orders__2h")
    assert r.status_code == 400 and "'orders__2h'" in r.json()["error"]


@pytest.mark.parametrize(("body", "says"), [
    (b"{", "bad request body: Input data was truncated"),
    (b"{]", "bad request body: JSON is malformed"),
    (b'{"entities": "e1"}', "Expected `array`, got `str` - at `$.entities`"),
    (b'{"entities": [1.5]}', "got `float` - at `$.entities[0]`"),
    (b'{"entities": [null]}', "got `null` - at `$.entities[0]`"),
    (b'{"features": ["orders"]}', "missing required field `entities`"),
    (b'{"entities": [], "feature": ["orders"]}', "unknown field `feature`"),
])
def test_bad_bodies_are_400_saying_where_and_the_shape(
    http: TestClient, served: Served, body: bytes, says: str
) -> None:
    r = http.post(f"/features/{served.topology.name}", content=body)
    assert r.status_code == 400
    assert says in r.json()["error"]
    assert '{"entities": ["u1", 42], "features": ["orders"' in r.json()["error"]


def test_bad_meta_parameter_is_400(http: TestClient, served: Served) -> None:
    r = http.get(f"/features/{served.topology.name}/e1?meta=perhaps")
    assert r.status_code == 400 and "meta=true or meta=false" in r.json()["error"]


def test_limits_are_413(served: Served, redis_url: str) -> None:
    with app_client([served.path], redis_url, max_entities=3, max_body_bytes=200) as http:
        name = served.topology.name
        r = http.post(f"/features/{name}", json={"entities": ["a", "b", "c", "d"]})
        assert r.status_code == 413
        assert "4 entities in one request; at most 3 (--max-entities)" in r.json()["error"]
        r = http.post(f"/features/{name}", json={"entities": ["x" * 300]})
        assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]
        assert http.post(f"/features/{name}", json={"entities": ["a", "b", "c"]}).status_code \
            == 200


def test_unknown_route_and_method_answer_json(http: TestClient) -> None:
    r = http.get("/feature/x")
    assert r.status_code == 404
    assert r.json()["error"].startswith("no route GET /feature/x; routes: POST /features/")
    r = http.delete("/health")
    assert r.status_code == 405 and "GET /health" in r.json()["error"]


def test_topologies_lists_fields_and_defaults(http: TestClient, served: Served) -> None:
    (only,) = http.get("/topologies").json()["topologies"]
    topo = served.topology
    assert only["name"] == topo.name and only["entity"] == "user"
    assert only["fields"] == topo.redis_fields()
    assert only["features"]["orders"] == ["orders__5m", "orders__1h", "orders__7d"]
    assert only["defaults"] == topo.defaults


def test_health_is_200_with_redis_and_503_without(served: Served, redis_url: str) -> None:
    with app_client([served.path], redis_url) as http:
        r = http.get("/health")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "redis": "ok", "topologies": [served.topology.name]}
    nothing = f"redis://:secret@127.0.0.1:{free_port()}/0"  # a port no server listens on
    with app_client([served.path], nothing, timeout_s=0.5) as http:
        r = http.get("/health")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable" and "PING" in r.json()["redis"]
        r = http.post(f"/features/{served.topology.name}", json={"entities": ["e1"]})
        assert r.status_code == 503
        assert "Check that Redis is reachable" in r.json()["error"]
        assert "secret" not in r.text


def metric(http: TestClient, name: str, **labels: str) -> float:
    text = http.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


def test_metrics_count_requests_latency_entities_and_redis_errors(
    served: Served, redis_url: str
) -> None:
    name = served.topology.name
    with app_client([served.path], redis_url) as http:
        r = http.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert metric(http, "streamfeat_serve_redis_errors_total", topology=name,
                      kind="error") == 0  # every series exists before its first event
        for _ in range(3):
            post(http, name, {"entities": ["e1", "e2", "nobody"]})
        http.get(f"/features/{name}/e1")
        http.post(f"/features/{name}", json={"entities": ["e1"], "features": ["bogus"]})
        http.post("/features/elsewhere", json={"entities": ["e1"]})
        assert metric(http, "streamfeat_serve_requests_total", topology=name, status="200") == 4
        assert metric(http, "streamfeat_serve_requests_total", topology=name, status="400") == 1
        assert metric(http, "streamfeat_serve_requests_total", topology="unknown",
                      status="404") == 1
        assert metric(http, "streamfeat_serve_request_seconds_count", topology=name) == 5
        assert metric(http, "streamfeat_serve_request_seconds_sum", topology=name) > 0
        assert metric(http, "streamfeat_serve_entities_per_request_sum", topology=name) == 10
        assert metric(http, "streamfeat_serve_entities_per_request_bucket", topology=name,
                      le="2.0") == 1
    with app_client([served.path], f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5) as http:
        assert http.post(f"/features/{name}", json={"entities": ["e1"]}).status_code == 503
        assert metric(http, "streamfeat_serve_redis_errors_total", topology=name,
                      kind="error") == 1
        assert metric(http, "streamfeat_serve_requests_total", topology=name, status="503") == 1


@pytest.mark.parametrize("io", IO_MODES)
def test_a_slow_redis_is_504_within_the_budget(
    served: Served, private_redis: str, io: str
) -> None:
    """A real Redis busy for 2 s (DEBUG SLEEP): the request ends at --timeout with 504, the
    event loop still answers meanwhile, and the next request is served."""
    with app_client([served.path], private_redis, timeout_s=0.4, io=io) as http:
        name = served.topology.name
        assert post(http, name, {"entities": ["e1"]})["entities"]["e1"]["orders__5m"] == 0
        sleeper = threading.Thread(target=lambda: redis.Redis.from_url(private_redis)
                                   .execute_command("DEBUG", "SLEEP", "2"))
        sleeper.start()
        time.sleep(0.2)
        started = time.monotonic()
        r = http.post(f"/features/{name}", json={"entities": ["e1"]})
        took = time.monotonic() - started
        assert r.status_code == 504, r.text
        assert "within 0.4 s (--timeout)" in r.json()["error"]
        assert 0.3 < took < 1.5
        assert http.get("/metrics").status_code == 200  # the loop was never blocked
        sleeper.join()
        assert metric(http, "streamfeat_serve_redis_errors_total", topology=name,
                      kind="timeout") == 1
        assert post(http, name, {"entities": ["e1"]})["entities"]["e1"]["orders__5m"] == 0


@pytest.mark.parametrize("io", IO_MODES)
def test_read_script_is_reloaded_after_script_flush(
    served: Served, private_redis: str, io: str
) -> None:
    with app_client([served.path], private_redis, io=io) as http:
        name = served.topology.name
        with redis.Redis.from_url(private_redis) as conn:
            conn.hset(f"sf:{name}:k", mapping={"_v": version(0, 0, 1), "orders__5m": "5"})
            first = post(http, name, {"entities": ["k"], "features": ["orders__5m"]})
            conn.script_flush()
        assert post(http, name, {"entities": ["k"], "features": ["orders__5m"]}) == first
        assert first["entities"] == {"k": {"orders__5m": 5}}


def test_stored_text_from_another_tool_is_500_saying_so(
    http: TestClient, served: Served, redis_url: str
) -> None:
    with redis.Redis.from_url(redis_url) as conn:
        conn.hset(served.topology.redis_key("odd"),
                  mapping={"_v": version(0, 0, 0), "orders__5m": "n/a"})
    r = http.post(f"/features/{served.topology.name}", json={"entities": ["odd"]})
    assert r.status_code == 500
    assert "not streamfeat text" in r.json()["error"]


def test_several_topologies_and_config_errors(
    served: Served, redis_url: str, tmp_path: Path, unique_id: str
) -> None:
    other, other_path = orders_topology(f"{unique_id}-other", tmp_path)
    with app_client([served.path, other_path], redis_url) as http:
        names = [t["name"] for t in http.get("/topologies").json()["topologies"]]
        assert names == sorted([served.topology.name, other.name])
        assert post(http, other.name, {"entities": ["e1"], "features": ["orders"]}) == \
            {"topology": other.name, "entities": {"e1": {"orders__5m": 0, "orders__1h": 0,
                                                         "orders__7d": 0}}}
    with pytest.raises(ConfigError, match="two topologies are named"):
        app_client([served.path, served.path], redis_url)
    with pytest.raises(ConfigError, match="--timeout must be above 0"):
        app_client([served.path], redis_url, timeout_s=0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nsource: {topic: t, key: k}\nfeatures:\n"
                   "  - {name: n, agg: cnt, windows: [5m]}\n")
    with pytest.raises(TopologyError, match=rf"{bad}:5: feature 'n': unknown aggregation"):
        app_client([bad], redis_url)
