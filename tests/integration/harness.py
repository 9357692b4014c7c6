"""Helpers of the worker's end-to-end tests: real Kafka, real Redis, a real worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from streamfeat.client import Client
from streamfeat.generator import OrderEvents
from streamfeat.topology import AggKind, TopologyDef, load_topology

from reference import close, expected_final

ROOT = Path(__file__).resolve().parents[2]


def make_topology(name: str, topic: str, tmp_path: Path) -> tuple[TopologyDef, Path]:
    """topologies/orders.yaml under a test-unique name and topic."""
    text = (ROOT / "topologies" / "orders.yaml").read_text()
    text = text.replace("name: orders ", f"name: {name} ", 1).replace(
        "topic: orders", f"topic: {topic}", 1
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    topology = load_topology(path)
    assert topology.name == name and topology.source.topic == topic
    return topology, path


def produce(kafka: str, topic: str, n: int, **generator: Any) -> None:
    producer = Producer({"bootstrap.servers": kafka, "linger.ms": 10, "enable.idempotence": True})
    for event in OrderEvents(**generator).events(n):
        while True:
            try:
                producer.produce(topic, key=event.key, value=event.value, timestamp=event.ts)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def read_topic(kafka: str, topic: str) -> dict[int, list[bytes | None]]:
    """Every record of the topic, per partition, in offset order."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"{topic}-check",
                         "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=30)
        parts = sorted(meta.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                for p in parts}
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _hi) in ends.items()])
        out: dict[int, list[bytes | None]] = defaultdict(list)
        total = sum(hi - lo for lo, hi in ends.values())
        seen = 0
        deadline = time.time() + 120
        while seen < total and time.time() < deadline:
            for m in consumer.consume(10_000, 1.0):
                assert m.error() is None, m.error()
                out[m.partition()].append(m.value())
                seen += 1
        assert seen == total, f"read {seen} of {total} records of {topic}"
        return {p: out[p] for p in parts}
    finally:
        consumer.close()


def count_topic(kafka: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"{topic}-count"})
    try:
        meta = consumer.list_topics(topic, timeout=30)
        total = 0
        for p in meta.topics[topic].partitions:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            total += hi - lo
        return total
    finally:
        consumer.close()


def worker_cmd(path: Path, state_dir: Path, *extra: str) -> list[str]:
    """The worker command; ``STREAMFEAT_RUNTIME=faust|kafka`` picks the runtime under test."""
    runtime = os.environ.get("STREAMFEAT_RUNTIME")
    chosen = ("--runtime", runtime) if runtime else ()
    return [sys.executable, "-m", "streamfeat.cli", "worker", str(path),
            "--state-dir", str(state_dir), *chosen, *extra]


def worker_env(kafka: str, redis_url: str) -> dict[str, str]:
    return {**os.environ, "STREAMFEAT_KAFKA": kafka, "STREAMFEAT_REDIS": redis_url}


def run_to_end(path: Path, state_dir: Path, kafka: str, redis_url: str, *extra: str) -> None:
    done = subprocess.run(
        worker_cmd(path, state_dir, "--stop-at-end", *extra), env=worker_env(kafka, redis_url),
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]


def assert_redis_matches_reference(
    kafka: str, redis_url: str, topology: TopologyDef
) -> tuple[int, int, int]:
    """Every Redis value equals the naive reference; returns (entities, late, malformed)."""
    partitions = read_topic(kafka, topology.source.topic)
    expected, late, malformed = expected_final(topology, partitions)
    assert expected, "the reference found no entities"
    actual = Client(redis_url).get(topology, sorted(expected))
    sketchy = {f.redis_field(w) for f in topology.features if f.agg is AggKind.PERCENTILE
               for w in f.windows}
    mismatches = []
    for entity, want in expected.items():
        got = actual[entity]
        for name, value in want.items():
            rel = 0.0101 if name in sketchy else 1e-9
            if not close(got.get(name), value, rel):
                mismatches.append(f"{entity}.{name}: redis={got.get(name)!r} reference={value!r}")
    assert not mismatches, f"{len(mismatches)} mismatches, e.g.:\n" + "\n".join(mismatches[:20])
    return len(expected), late, malformed
