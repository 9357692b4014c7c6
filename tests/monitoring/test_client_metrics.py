"""Client(metrics=registry): every read timed into a histogram, failures counted (real Redis)."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry

from streamfeat.client import Client
from streamfeat.errors import SinkError
from streamfeat.sinks import RedisSink, Update, version
from streamfeat.topology import TopologyDef, load_topology_text

pytestmark = pytest.mark.integration


def topology(name: str) -> TopologyDef:
    return load_topology_text(f"""
version: 1
name: {name}
source: {{topic: t, key: user_id, timestamp: ts}}
entity: user
features:
  - {{name: orders, agg: count, windows: [1h]}}
defaults: {{orders: 0}}
""")


def test_reads_are_timed_and_failures_counted(redis_url: str, unique_id: str) -> None:
    topo = topology(unique_id)
    with RedisSink(redis_url, topo) as sink:
        sink.write([Update("u1", {"orders__1h": 3}, 1000, version(0, 0, 1))])
    registry = CollectorRegistry()
    labels = {"topology": unique_id}
    with Client(redis_url, metrics=registry) as a, Client(redis_url, metrics=registry) as b:
        assert a.get(topo, ["u1", "u2"]) == {"u1": {"orders__1h": 3}, "u2": {"orders__1h": 0}}
        b.get(topo, ["u1"])
        a.get(topo, [])  # nothing read, nothing timed
    count = registry.get_sample_value("streamfeat_client_fetch_seconds_count", labels)
    total = registry.get_sample_value("streamfeat_client_fetch_seconds_sum", labels)
    assert count == 2  # both clients into the one histogram
    assert total is not None and 0 < total < 5
    assert registry.get_sample_value("streamfeat_client_fetch_errors_total", labels) in (None, 0)

    with socket.socket() as s:  # a port nothing listens on: the read fails at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"redis://127.0.0.1:{port}/0", metrics=registry) as down, \
            pytest.raises(SinkError):
        down.get(topo, ["u1"])
    assert registry.get_sample_value("streamfeat_client_fetch_errors_total", labels) == 1
    assert registry.get_sample_value("streamfeat_client_fetch_seconds_count", labels) == 2

    plain = Client(redis_url)  # no metrics: nothing registered anywhere
    assert plain.get(topo, ["u1"]) == {"u1": {"orders__1h": 3}}
    plain.close()
