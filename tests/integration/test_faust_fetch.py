"""The faust runtime's columnar fetch hands over exactly what aiokafka's own fetcher returns.

A real topic holds what a fetch can meet: uncompressed and lz4 batches, records without a
key or value, committed and aborted transactions (their control batches included). Two
aiokafka consumers read it, one through ``Fetcher.fetched_records`` (the reference) and one
through :func:`fetched_batches`, with a small ``max_records`` so that batches are cut and
resumed, under both isolation levels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]
from confluent_kafka import Producer

from streamfeat.runtime.consumers.faust_fetch import fetched_batches

Row = tuple[int, int, int, bytes | None, bytes | None]  # partition, offset, ts, key, value


def _fill(bootstrap: str, topic: str, unique_id: str) -> int:
    """Write a mixed log to ``topic`` (2 partitions); returns how many records were sent."""
    sent = 0
    for compression in ("none", "lz4"):
        plain = Producer({"bootstrap.servers": bootstrap, "compression.type": compression,
                          "linger.ms": 20})
        for i in range(300):
            key = None if i % 37 == 0 else f"k{i % 11}".encode()
            value = None if i % 53 == 0 else f'{{"i": {i}, "c": "{compression}"}}'.encode()
            plain.produce(topic, value, key, partition=i % 2, timestamp=1_700_000_000_000 + i)
            sent += 1
        plain.flush(30)
    tx = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{unique_id}",
                   "compression.type": "lz4"})
    tx.init_transactions(30)
    for round_ in range(4):
        tx.begin_transaction()
        for i in range(50):
            tx.produce(topic, f"tx{round_}-{i}".encode(), b"t", partition=i % 2)
            sent += 1
        tx.flush(30)  # in the log before the end marker (an abort purges unsent records)
        if round_ % 2:
            tx.abort_transaction(30)
        else:
            tx.commit_transaction(30)
    after = Producer({"bootstrap.servers": bootstrap})
    for i in range(40):
        after.produce(topic, f"after{i}".encode(), b"a", partition=i % 2)
        sent += 1
    after.flush(30)
    return sent


async def _read(bootstrap: str, topic: str, isolation: str, columnar: bool,
                want: int) -> list[Row]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                                enable_auto_commit=False, max_poll_records=23)
    await consumer.start()
    rows: list[Row] = []
    try:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        await consumer.seek_to_beginning()
        fetcher = consumer._fetcher
        idle = 0
        while idle < 6:
            partitions = consumer._subscription.assigned_partitions()
            if columnar:
                with fetcher._subscriptions.fetch_context():
                    got = await fetched_batches(fetcher, partitions, 0.5, 23)
                assert all(len(b) <= 23 + 200 for b in got.values())
                for tp, batch in got.items():
                    assert batch.partition == tp.partition
                    rows += [(tp.partition, r.offset, r.kafka_ts, r.key, r.value)
                             for r in batch]
            else:
                with fetcher._subscriptions.fetch_context():
                    got = await fetcher.fetched_records(partitions, 0.5, 23)
                for tp, records in got.items():
                    rows += [(tp.partition, r.offset, r.timestamp, r.key, r.value)
                             for r in records]
            idle = 0 if got else idle + 1
            if len(rows) >= want and not got:
                break
        return rows
    finally:
        await consumer.stop()


@pytest.mark.parametrize("isolation", ["read_uncommitted", "read_committed"])
def test_columnar_fetch_equals_aiokafka(kafka_bootstrap: str, new_topic: Callable[..., str],
                                        unique_id: str, isolation: str) -> None:
    topic = new_topic("fetch", partitions=2)
    sent = _fill(kafka_bootstrap, topic, unique_id)
    aborted = 2 * 50
    want = sent - aborted if isolation == "read_committed" else sent
    reference = asyncio.run(_read(kafka_bootstrap, topic, isolation, False, want))
    columnar = asyncio.run(_read(kafka_bootstrap, topic, isolation, True, want))
    assert len(reference) == want
    # the partitions' turns depend on fetch timing; each partition's sequence does not
    for p in (0, 1):
        assert [r for r in columnar if r[0] == p] == [r for r in reference if r[0] == p]
        offsets = [r[1] for r in columnar if r[0] == p]
        assert offsets == sorted(set(offsets))  # in offset order, each record once
    values = {r[4] for r in columnar}
    assert (b"tx1-0" in values) is (isolation == "read_uncommitted")
    assert b"tx2-0" in values and b"after39" in values
