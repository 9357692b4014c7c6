"""The worker's metrics (streamfeat/metrics.py), no broker: malformed records counted by a
small fixed set of reasons that the decoder's own texts sort into, build info, freshness
bounds, the health gauges set when scraped, and the gauges of a partition let go."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records.formats import avro_encode, avro_good, avro_topology  # tests/records/formats.py
from records.hostile import TOPOLOGIES, streams  # tests/records/hostile.py

from streamfeat.metrics import MALFORMED_REASONS, Metrics, MetricsServer, malformed_reason
from streamfeat.pipeline import Acceptance
from streamfeat.records import RawRecord
from streamfeat.topology.loader import load_topology_text

KAFKA_TS = 1_800_000_000_000
TOPOLOGY = load_topology_text("""
version: 1
name: shop
freshness: 2s
source: {topic: orders, key: user_id, timestamp: ts}
features:
  - {name: spend, agg: sum, field: amount, windows: [1h]}
""")
GOOD = {"user_id": "u1", "ts": KAFKA_TS - 1000, "amount": 2.5}


def j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def reasons_of(values: list[tuple[bytes | None, bytes | None]], topology: Any = TOPOLOGY,
               ) -> list[str]:
    """The dead letters' reasons the acceptance gives these (key, value) records."""
    batch = [RawRecord(0, i, KAFKA_TS, key, value) for i, (key, value) in enumerate(values)]
    return [d.reason for d in Acceptance(topology, 0).judge(batch).dead_letters()]


@pytest.mark.parametrize(("key", "value", "label"), [
    (None, b"{not json", "undecodable"),
    (None, None, "tombstone"),
    (None, b"[1, 2]", "not_object"),
    (None, j({**GOOD, "user_id": None}), "key"),
    (None, j({**GOOD, "user_id": ""}), "key"),
    (None, j({**GOOD, "user_id": [1]}), "key"),
    (b"u2", j(GOOD), "key_mismatch"),
    (None, j({k: v for k, v in GOOD.items() if k != "ts"}), "timestamp"),
    (None, j({**GOOD, "ts": "yesterday"}), "timestamp"),
    (None, j({**GOOD, "ts": -5}), "timestamp"),
    (None, j({**GOOD, "ts": KAFKA_TS + 2 * 3_600_000}), "too_far_future"),
    (None, j({**GOOD, "amount": "12"}), "type"),
    (None, j({**GOOD, "amount": 2**70}), "type"),
])
def test_each_malformed_kind_has_its_reason_label(key: bytes | None, value: bytes | None,
                                                  label: str) -> None:
    (reason,) = reasons_of([(key, value)])
    assert malformed_reason(reason) == label, reason
    assert label in MALFORMED_REASONS


def test_confluent_framing_errors_are_framing(tmp_path: Path) -> None:
    topology = avro_topology(tmp_path, framing="confluent", ids="[7]")
    good = avro_encode(avro_good(), schema_id=7)
    reasons = reasons_of([(None, b"\x00\x00"), (None, b"\x01" + good[1:]),
                          (None, avro_encode(avro_good(), schema_id=8)), (None, good[:-3])],
                         topology)
    assert [malformed_reason(r) for r in reasons] == [
        "framing", "framing", "framing", "undecodable"], reasons


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_reason_of_a_hostile_stream_is_other(data: st.DataObject) -> None:
    """Whatever the bytes, keys and timestamps, every malformed record's reason is one the
    fixed set names: ``other`` would mean a reason text the label set does not know."""
    topology = data.draw(st.sampled_from(sorted(TOPOLOGIES.items())))[1]
    stream = data.draw(streams(topology))
    batch = [RawRecord(0, i, r.kafka_ts, r.key, r.value) for i, r in enumerate(stream)]
    for letter in Acceptance(topology, 0).judge(batch).dead_letters():
        if letter.kind == "malformed":
            assert malformed_reason(letter.reason) != "other", letter.reason


def test_unknown_text_is_other_and_labels_stay_few() -> None:
    assert malformed_reason("something new") == "other"
    metrics = Metrics()
    metrics.count_malformed("shop", 3, ["undecodable: x", "field 'a' is a str", "?", "?"])
    got = {s.labels["reason"]: s.value for m in metrics.registry.collect() for s in m.samples
           if s.name == "streamfeat_events_malformed_total"}
    assert got == {"undecodable": 1, "type": 1, "other": 2}


def test_build_info_and_freshness_bound() -> None:
    metrics = Metrics()
    metrics.describe([("shop", TOPOLOGY.freshness_ms), ("other", 60_000)], "kafka")
    r = metrics.registry
    assert r.get_sample_value("streamfeat_build_info", {
        "version": importlib.metadata.version("streamfeat"),
        "python": platform.python_version(), "runtime": "kafka"}) == 1
    assert r.get_sample_value("streamfeat_freshness_bound_seconds", {"topology": "shop"}) == 2
    assert r.get_sample_value("streamfeat_freshness_bound_seconds", {"topology": "other"}) == 60


def test_a_partition_let_go_leaves_no_gauge_behind() -> None:
    metrics = Metrics()
    for p in ("0", "1"):
        metrics.lag.labels("shop", "orders", p).set(10)
        metrics.snapshot_lag.labels("shop", "orders", p).set(5)
        metrics.entities.labels("shop", p).set(100)
        metrics.stream_time.labels("shop", p).set(1.5e9)
        metrics.durable_age.labels("shop", "shop", p).set(3)
        metrics.durable_age.labels("byshop", "byshop.rekey", p).set(3)
        metrics.durable_age.labels("byshop", "byshop", p).set(3)  # its repartition topic
        metrics.partial_since.labels("shop", p, "orders__7d").set(1)  # kept: said once
    metrics.lag.labels("shop", "other", "0").set(7)
    metrics.entities.labels("elsewhere", "0").set(1)
    metrics.forget_partition("orders", 0, ["shop"], ["byshop"])
    left = {(m.name, tuple(sorted(s.labels.items()))) for m in metrics.registry.collect()
            for s in m.samples if s.labels.get("partition") == "0"}
    assert left == {
        ("streamfeat_consumer_lag",
         (("partition", "0"), ("topic", "other"), ("topology", "shop"))),
        ("streamfeat_state_entities", (("partition", "0"), ("topology", "elsewhere"))),
        ("streamfeat_state_checkpoint_age_seconds",
         (("partition", "0"), ("store", "byshop"), ("topology", "byshop"))),
        ("streamfeat_feature_partial_since_ms",
         (("field", "orders__7d"), ("partition", "0"), ("topology", "shop"))),
    }
    assert sum(1 for m in metrics.registry.collect() for s in m.samples
               if s.labels.get("partition") == "1") == 8  # the other partition's, untouched


def _scrape(port: int) -> dict[tuple[str, str], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(("streamfeat_healthy", "streamfeat_ready",
                            "streamfeat_dependency_failing_seconds")):
            series, value = line.rsplit(" ", 1)
            out[(series.split("{")[0], series.split("{")[1].rstrip("}"))] = float(value)
    return out


def test_health_gauges_follow_the_status_when_scraped() -> None:
    metrics = Metrics()
    metrics.describe([("shop", 1000)], "faust")
    status: dict[str, Any] = {"healthy": True, "ready": False, "failing": {}}
    server = MetricsServer(metrics, 0, lambda: status)
    server.start()
    try:
        got = _scrape(server.port)
        assert got[("streamfeat_healthy", 'topology="shop"')] == 1
        assert got[("streamfeat_ready", 'topology="shop"')] == 0
        assert got[("streamfeat_dependency_failing_seconds",
                    'dependency="redis",topology="shop"')] == 0
        status.update(healthy=False, ready=False,
                      failing={"redis": {"for_s": 12.5, "unhealthy": True}})
        got = _scrape(server.port)
        assert got[("streamfeat_healthy", 'topology="shop"')] == 0
        assert got[("streamfeat_dependency_failing_seconds",
                    'dependency="redis",topology="shop"')] == 12.5
        assert got[("streamfeat_dependency_failing_seconds",
                    'dependency="kafka",topology="shop"')] == 0
    finally:
        server.stop()
