"""Records that once stopped a worker for good, on real Kafka and Redis (issue: survive
anything). Each ends as a dead letter, and the records after it are aggregated as usual.

(Every other fault test's stream carries such records too: ``harness.hostile_values``.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streamfeat.client import Client
from streamfeat.runtime.deadletters import DLQ_OFFSET, DLQ_REASON, DLQ_TRUNCATED

from harness import HUGE, assert_survived, make_topology, read_messages, run_to_end

pytestmark = [pytest.mark.integration, pytest.mark.fault]
T0 = 1_700_000_000_000


def _produce(kafka: str, topic: str, records: list[tuple[bytes, bytes, int]]) -> None:
    producer = Producer({"bootstrap.servers": kafka, "message.max.bytes": 16 * 1024 * 1024,
                         "enable.idempotence": True})
    for key, value, ts in records:
        producer.produce(topic, value, key, timestamp=ts)
        producer.flush(30)
    assert producer.flush(30) == 0


def _dead_letters(kafka: str, topic: str) -> list[tuple[dict[str, bytes], int]]:
    return [(dict(m.headers() or []), len(m.value() or b""))
            for ms in read_messages(kafka, topic, **{"fetch.max.bytes": 64 * 2**20}).values()
            for m in ms]


def _events(n: int, start: int) -> list[tuple[bytes, bytes, int]]:
    return [(b"u1", json.dumps({"user_id": "u1", "ts": T0 + i, "amount": 1.0,
                                "merchant_id": "m1", "status": "completed"}).encode(), T0 + i)
            for i in range(start, start + n)]


@pytest.mark.parametrize("dlq_limit", [None, 1_048_576], ids=["fits-whole", "truncated"])
def test_a_5_mib_record_that_is_not_json_becomes_a_dead_letter(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path, dlq_limit: int | None,
) -> None:
    topic = new_topic("orders", partitions=1, config={"max.message.bytes": str(8 * 2**20)})
    if dlq_limit is not None:  # a DLQ made earlier, with the broker's default limit
        new_topic("orders.dlq", partitions=1, config={"max.message.bytes": str(dlq_limit)})
    topology, path = make_topology(unique_id, topic, tmp_path)
    _produce(kafka_bootstrap, topic,
             [*_events(10, 0), (b"u1", b"x" * HUGE, T0 + 10), *_events(10, 11)])
    run_to_end(path, tmp_path / "state", kafka_bootstrap, redis_url)
    got = Client(redis_url).get(topology, ["u1"])["u1"]
    assert got["orders__7d"] == 20  # every event before and after the huge record
    [(headers, size)] = _dead_letters(kafka_bootstrap, f"{topic}.dlq")
    assert headers[DLQ_OFFSET] == b"10"
    assert headers[DLQ_REASON].startswith(b"undecodable: JSON is malformed")
    if dlq_limit is None:
        assert size == HUGE and DLQ_TRUNCATED not in headers
    else:
        assert size < dlq_limit and headers[DLQ_TRUNCATED] == str(HUGE).encode()
    assert_survived(kafka_bootstrap, redis_url, topology, versions=None, hostile=1)
