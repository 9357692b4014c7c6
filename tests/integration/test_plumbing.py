"""The foundation works: a real broker round-trips records, a real Redis round-trips a hash."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from confluent_kafka import Consumer, Producer

pytestmark = pytest.mark.integration


def test_kafka_produce_and_consume(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic("plumbing", partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    sent = {f"user-{i}".encode(): f'{{"n": {i}}}'.encode() for i in range(100)}
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    consumer = Consumer({
        "bootstrap.servers": kafka_bootstrap,
        "group.id": f"{topic}-reader",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    received: dict[bytes, bytes] = {}
    partitions: set[int] = set()
    try:
        for _ in range(60):
            for message in consumer.consume(num_messages=500, timeout=1.0):
                assert message.error() is None, message.error()
                received[message.key()] = message.value()
                partitions.add(message.partition())
            if len(received) == len(sent):
                break
    finally:
        consumer.close()
    assert received == sent
    assert partitions == {0, 1}


def test_redis_hash_round_trip(redis_url: str, unique_id: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"sf:{unique_id}:user-1"
    try:
        client.hset(key, mapping={"orders__1h": "3", "amount_sum__1d": "12.5"})
        client.pexpire(key, 60_000)
        assert client.hgetall(key) == {b"orders__1h": b"3", b"amount_sum__1d": b"12.5"}
        assert 0 < client.pttl(key) <= 60_000
    finally:
        client.delete(key)
