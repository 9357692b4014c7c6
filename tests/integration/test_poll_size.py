"""Each runtime hands over at most what the worker asks for at each poll (issue #18: the
worker's batch size moves, ``streamfeat.runtime.batching``), give or take the rest of one
producer batch (the ``faust`` runtime hands over whole fetched record batches)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streamfeat.runtime.batching import START_RECORDS
from streamfeat.runtime.consumers import RUNTIMES, ConsumerSettings, open_consumer

pytestmark = pytest.mark.integration

RECORDS = 3000
PRODUCER_BATCH = 10  # records per producer batch at most: the slack a hand-over may have


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_poll_takes_at_most_what_the_worker_asks(
    kafka_bootstrap: str, new_topic: Callable[..., str], unique_id: str, tmp_path: Path,
    runtime: str,
) -> None:
    topic = new_topic("asked", partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5,
                         "batch.num.messages": PRODUCER_BATCH})
    for i in range(RECORDS):
        producer.produce(topic, b"{}", f"k{i}".encode(), partition=i % 2)
    producer.flush(30)
    # The configured size (the most any poll may take) is far above what is asked.
    settings = ConsumerSettings(bootstrap=kafka_bootstrap, group_id=f"g-{unique_id}",
                                batch_size=100_000, work_dir=tmp_path)
    consumer = open_consumer(runtime, settings)
    consumer.subscribe([topic], lambda tps: dict.fromkeys(tps, 0), lambda tps: None)
    asks = [40, 400, 90, 1000, 25]
    got: list[tuple[int, int]] = []  # (asked, handed over)
    deadline = time.monotonic() + 90
    try:
        while sum(n for _a, n in got) < RECORDS and time.monotonic() < deadline:
            ask = asks[len(got) % len(asks)]
            n = sum(map(len, consumer.poll(ask, 0.5).values()))
            if n:
                got.append((ask, n))
    finally:
        consumer.close()
    assert sum(n for _a, n in got) == RECORDS
    first = got[0][1]
    if runtime == "faust":  # fetched as the partitions were assigned, before any poll
        assert first <= START_RECORDS + PRODUCER_BATCH
        got = got[1:]
    assert all(n <= ask + PRODUCER_BATCH for ask, n in got), got
    assert any(n > asks[0] + PRODUCER_BATCH for _a, n in got), got  # larger asks honoured
