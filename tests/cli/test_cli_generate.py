"""`streamfeat generate TOPOLOGY`: events of any topology's source, which the worker's own
decoder takes (and refuses, for the malformed ones), whose filters keep some and drop some."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Consumer, TopicPartition
from records.formats import write_avro_topology, write_proto_topology

from streamfeat.generator import TopologyEvents, plan_fields
from streamfeat.generator.topology import FieldPlan
from streamfeat.records.decode import Decoder
from streamfeat.topology import TopologyDef, compile_where, load_topology, load_topology_text

ROOT = Path(__file__).resolve().parents[2]

NESTED = """\
name: pay
source: {topic: pay, key: account, timestamp: at, timestamp_unit: UNIT, format: FORMAT}
lateness: 2m
features:
  - {name: spent, agg: sum, field: amount, windows: [1h]}
  - {name: cards, agg: count, windows: [1h], where: "payment.method in ['card', 'wallet']"}
  - {name: big, agg: count, windows: [1h], where: "amount * 2 > 500 and not refunded"}
  - {name: codes, agg: top_k, k: 3, field: code, windows: [1d]}
  - {name: tier, agg: last, field: tier, windows: [1d], where: "level >= 3"}
"""


def test_the_plan_follows_the_aggregations_and_the_filters() -> None:
    orders = plan_fields(load_topology(ROOT / "topologies" / "orders.yaml"))
    assert set(orders) == {("amount",), ("status",), ("merchant_id",)}  # no key, no time
    assert orders[("amount",)] == FieldPlan(("amount",), "number", (100,))
    assert orders[("status",)].kind == "string"
    assert set(orders[("status",)].choices) == {"completed", "cancelled", "pending"}
    assert orders[("merchant_id",)] == FieldPlan(("merchant_id",), "string", (), 300)

    pay = plan_fields(load_topology_text(NESTED.replace("UNIT", "ms").replace(
        "FORMAT", "json"), "pay.yaml"))
    assert pay[("payment", "method")] == FieldPlan(("payment", "method"), "string",
                                                   ("card", "wallet"))
    assert pay[("amount",)].kind == "number"
    assert pay[("refunded",)].kind == "boolean"
    assert pay[("code",)] == FieldPlan(("code",), "string", (), 20)
    assert pay[("level",)] == FieldPlan(("level",), "integer", (3,))
    assert pay[("tier",)].kind == "string"


def _topologies(folder: Path) -> list[TopologyDef]:
    out = []
    for unit in ("ms", "s", "iso8601"):
        for fmt in ("json", "msgpack"):
            text = NESTED.replace("UNIT", unit).replace("FORMAT", fmt)
            out.append(load_topology_text(text, f"pay-{fmt}-{unit}.yaml"))
    for write in (write_avro_topology, write_proto_topology):
        for framing, ids in (("plain", ""), ("confluent", "[7]")):
            sub = folder / f"{write.__name__}-{framing}"
            sub.mkdir()
            out.append(load_topology(write(sub, framing=framing, ids=ids)))
    out.append(load_topology(ROOT / "topologies" / "orders.yaml"))
    out.append(load_topology(ROOT / "topologies" / "merchants.yaml"))
    return out


def test_every_format_decodes_and_every_filter_keeps_some_and_drops_some(
        tmp_path: Path) -> None:
    for topology in _topologies(tmp_path):
        label = f"{topology.path} ({topology.source.format})"
        events = list(TopologyEvents(topology, entities=30, seed=3, malformed_fraction=0.1,
                                     late_fraction=0.0).events(1000))
        decoded = Decoder(topology).decode([e.value for e in events], [e.ts for e in events])
        malformed = {p for p, _reason in decoded.errors}
        assert 50 < len(malformed) < 150, (label, decoded.errors[:3])  # about a tenth
        assert len(decoded.keys) + len(malformed) == len(events), label
        for position, key, ts in zip(decoded.positions, decoded.keys, decoded.ts, strict=True):
            assert events[position].key.decode() == key, label  # keyed by the entity
            assert abs(events[position].ts - ts) < 1000, label  # the event time, in its unit
        assert len(set(decoded.keys)) > 10, label
        for f in topology.features:
            if f.where is None:
                continue
            keep = compile_where(f.where)
            kept = sum(1 for r in decoded.records if keep(r))
            assert kept > 0, (label, f.where)
            if topology.source.format == "protobuf" and f.where == "raw != null":
                continue  # a proto3 field without presence is never null: unset is b""
            assert kept < len(decoded.records), (label, f.where, kept)


def test_the_same_seed_gives_the_same_events_and_late_ones_are_late() -> None:
    topology = load_topology_text(NESTED.replace("UNIT", "ms").replace("FORMAT", "json"),
                                  "pay.yaml")

    def make(seed: int) -> list[tuple[bytes, bytes, int]]:
        return [(e.key, e.value, e.ts) for e in TopologyEvents(
            topology, start_ms=10**12, seed=seed, late_fraction=0.05).events(500)]

    assert make(1) == make(1) != make(2)
    times = [ts for _k, _v, ts in make(1)]
    late = [t for i, t in enumerate(times) if t < max(times[:i + 1]) - topology.lateness_ms]
    assert 5 < len(late) < 60  # about 5 %, each beyond the topology's lateness
    first = msgspec.json.decode(make(1)[0][1])
    assert set(first) == {"account", "at", "amount", "payment", "refunded", "code", "level",
                          "tier"} and set(first["payment"]) == {"method"}


def _count(kafka: str, topic: str) -> tuple[int, bytes]:
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"{topic}-count"})
    try:
        lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        consumer.assign([TopicPartition(topic, 0, lo)])
        message = consumer.poll(30)
        assert message is not None and message.error() is None
        return hi - lo, message.value()
    finally:
        consumer.close()


@pytest.mark.integration
def test_generate_produces_a_topologys_events_to_its_topic_and_orders_by_default(
        tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic("pay")
    path = tmp_path / "pay.yaml"
    path.write_text(NESTED.replace("UNIT", "iso8601").replace("FORMAT", "json").replace(
        "topic: pay", f"topic: {topic}"))
    done = subprocess.run(
        [sys.executable, "-m", "streamfeat.cli", "generate", str(path), "--events", "300",
         "--entities", "20", "--kafka", kafka_bootstrap],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"produced 300 events to {topic}"
    count, value = _count(kafka_bootstrap, topic)
    first = msgspec.json.decode(value)
    assert count == 300 and first["at"].endswith("Z") and "payment" in first

    orders = new_topic("orders")
    done = subprocess.run(
        [sys.executable, "-m", "streamfeat.cli", "generate", "--topic", orders, "--events",
         "50", "--kafka", kafka_bootstrap], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    count, value = _count(kafka_bootstrap, orders)
    assert count == 50 and set(msgspec.json.decode(value)) == {
        "user_id", "ts", "amount", "merchant_id", "status"}


@pytest.mark.integration
def test_span_spreads_the_event_times_over_it_ending_now(
        kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    import time

    orders = new_topic("orders")
    done = subprocess.run(
        [sys.executable, "-m", "streamfeat.cli", "generate", "--topic", orders, "--events",
         "400", "--late", "0", "--span", "2d", "--kafka", kafka_bootstrap],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{orders}-span",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(orders, 0, 0)])
        stamps = [m.timestamp()[1] for m in consumer.consume(400, timeout=20)]
    finally:
        consumer.close()
    now_ms = time.time() * 1000
    assert len(stamps) == 400
    # Two days wide (399 steps of 2d/400, give or take the disorder), ending about now.
    assert 2 * 86_400_000 * 0.99 <= max(stamps) - min(stamps) <= 2 * 86_400_000 + 60_000
    assert now_ms - 120_000 <= max(stamps) <= now_ms + 1000

    bad = subprocess.run([sys.executable, "-m", "streamfeat.cli", "generate", "--span", "2x",
                          "--kafka", kafka_bootstrap], capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 2 and "--span '2x': bad duration" in bad.stderr, bad.stderr
