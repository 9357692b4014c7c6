"""Avro and Protobuf sources end to end (contract section 12), on the real Kafka and Redis:
a worker over order events in the binary format, malformed records among them, ends with
every Redis value equal to the reference, each malformed or late record once in the DLQ,
and a replay of its snapshots (raw bytes, decoded again) verifies 100 %.

The reference reads the topic with its own decoders (fastavro and protobuf directly, not
streamfeat's): each record becomes the JSON object it holds, or a malformed marker."""

from __future__ import annotations

import io
import json
import random
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from streamfeat.generator import ORDER_AVRO_SCHEMA, AvroOrders
from streamfeat.replay import verify
from streamfeat.topology import TopologyDef, load_topology

from harness import (
    ROOT,
    STREAM,
    assert_cells,
    count_topic,
    produce,
    read_topic,
    run_to_end,
)
from reference import expected_final

pytestmark = pytest.mark.integration

MALFORMED = b"{malformed"
EVENTS = 2500


def binary_topology(name: str, topic: str, tmp_path: Path, source: str) -> tuple[
        TopologyDef, Path]:
    """topologies/orders.yaml under a test-unique name and topic, in another format."""
    text = (ROOT / "topologies" / "orders.yaml").read_text()
    text = text.replace("name: orders ", f"name: {name} ", 1).replace(
        "topic: orders", f"topic: {topic}", 1).replace("  format: json ", source + "  #", 1)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    topology = load_topology(path)
    assert topology.source.schema is not None
    return topology, path


def check_run(kafka: str, redis_url: str, topology: TopologyDef, path: Path, tmp_path: Path,
              to_json: Callable[[bytes | None], bytes | None]) -> None:
    snaps = tmp_path / "snapshots"
    run_to_end(path, tmp_path / "state", kafka, redis_url, "--snapshot-dir", str(snaps))
    partitions = {p: [to_json(v) for v in values]
                  for p, values in read_topic(kafka, topology.source.topic).items()}
    expected, late, malformed = expected_final(topology, partitions)
    assert len(expected) > 50 and late > 0 and malformed > 5
    assert_cells(redis_url, topology, expected)
    assert count_topic(kafka, f"{topology.source.topic}.dlq") == late + malformed
    report = verify(topology, snaps, redis_url)
    assert report.checked == len(expected)
    assert report.match_rate == 1.0, report.mismatches[:5]


def test_avro_confluent_framed_end_to_end(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=2)
    shutil.copy(ROOT / "topologies" / "orders.avsc", tmp_path / "orders.avsc")
    topology, path = binary_topology(unique_id, topic, tmp_path, (
        "  format: avro\n  schema: orders.avsc\n  framing: confluent\n  schema_ids: [5]\n"))
    produce(kafka_bootstrap, topic, EVENTS, seed=3, encoding=AvroOrders(schema_id=5),
            **{**STREAM, "malformed_fraction": 0.02})
    schema = fastavro.parse_schema(ORDER_AVRO_SCHEMA)

    def to_json(value: bytes | None) -> bytes | None:
        if value is None or len(value) < 5 or value[0] != 0:
            return MALFORMED
        if struct.unpack(">I", value[1:5])[0] != 5:
            return MALFORMED
        buf = io.BytesIO(value[5:])
        try:
            record = fastavro.schemaless_reader(buf, schema)
        except Exception:  # any failure to read is a malformed record
            return MALFORMED
        if buf.tell() != len(value) - 5:
            return MALFORMED
        return json.dumps(record).encode()

    check_run(kafka_bootstrap, redis_url, topology, path, tmp_path, to_json)


def _order_message() -> Any:
    fd = descriptor_pb2.FileDescriptorProto(name="e2e_orders.proto", package="demo",
                                            syntax="proto3")
    order = fd.message_type.add(name="Order")
    kinds = descriptor_pb2.FieldDescriptorProto
    for number, (name, kind) in enumerate([
            ("user_id", kinds.TYPE_STRING), ("ts", kinds.TYPE_INT64),
            ("amount", kinds.TYPE_DOUBLE), ("merchant_id", kinds.TYPE_STRING),
            ("status", kinds.TYPE_STRING)], start=1):
        order.field.add(name=name, number=number, type=kind, label=kinds.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    files = descriptor_pb2.FileDescriptorSet(file=[fd])
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("demo.Order")), files


class ProtobufOrders:
    """The generator's events as protobuf messages; malformed: truncated or garbled."""

    def __init__(self, message: Any) -> None:
        self.message = message

    def encode(self, event: dict[str, Any]) -> bytes:
        return bytes(self.message(**event).SerializeToString())

    def malformed(self, rng: random.Random, user: str, ts: int) -> bytes:
        good = self.encode({"user_id": user, "ts": ts, "amount": 3.0, "merchant_id": "m1",
                            "status": "completed"})
        return rng.choice([good[:5], b"\xff" + good, good + b"\x0a\x05ab"])


def test_protobuf_end_to_end(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=2)
    message, files = _order_message()
    (tmp_path / "orders.desc").write_bytes(files.SerializeToString())
    topology, path = binary_topology(unique_id, topic, tmp_path, (
        "  format: protobuf\n  descriptor: orders.desc\n  message: demo.Order\n"))
    produce(kafka_bootstrap, topic, EVENTS, seed=4, encoding=ProtobufOrders(message),
            **{**STREAM, "malformed_fraction": 0.02})
    names = ("user_id", "ts", "amount", "merchant_id", "status")

    def to_json(value: bytes | None) -> bytes | None:
        if value is None:
            return MALFORMED
        try:
            m = message.FromString(value)
        except DecodeError:
            return MALFORMED
        return json.dumps({n: getattr(m, n) for n in names}).encode()

    check_run(kafka_bootstrap, redis_url, topology, path, tmp_path, to_json)
