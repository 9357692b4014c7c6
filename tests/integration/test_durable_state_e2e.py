"""Durable state (contract section 11), on real Kafka and Redis: a partition moves to a host
with an empty state directory after retention dropped the records its windows still need.

Host A runs to the end with ``--checkpoint-dir``; the old half of the topic is deleted
(``delete_records``, as retention would); more records come; host B, with an empty
``--state-dir`` and the same checkpoint store, runs to the end. Every Redis cell must equal
the reference over *all* records (read before the deletion), and each late or malformed
record must be one dead letter: B restored the window state, stream time and offsets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from streamfeat.state import PartitionStore

from harness import (
    STREAM,
    Workers,
    assert_cells,
    dead_letter_origins,
    expected_final,
    make_topology,
    produce,
    read_messages,
    run_to_end,
    worker_cmd,
    worker_env,
)

pytestmark = pytest.mark.integration


class History:
    """Every record of a topic ever read, by partition and offset (the topic may lose the
    oldest to retention; the reference must not)."""

    def __init__(self) -> None:
        self.values: dict[int, dict[int, bytes | None]] = {}

    def read(self, kafka: str, topic: str) -> None:
        for p, messages in read_messages(kafka, topic).items():
            kept = self.values.setdefault(p, {})
            for m in messages:
                kept[cast(int, m.offset())] = m.value()

    def partitions(self) -> dict[int, list[bytes | None]]:
        out = {}
        for p, by_offset in self.values.items():
            assert sorted(by_offset) == list(range(len(by_offset))), "a gap in the history"
            out[p] = [by_offset[o] for o in range(len(by_offset))]
        return out


def cut(kafka: str, topic: str, history: History) -> None:
    """Delete the older half of every partition's records, as retention would."""
    admin = AdminClient({"bootstrap.servers": kafka})
    tps = [TopicPartition(topic, p, len(values) // 2) for p, values in history.values.items()]
    for future in admin.delete_records(tps, operation_timeout=30).values():
        future.result(30)


def check(kafka: str, redis_url: str, topic: str, history: History, topology: object) -> None:
    expected, late, malformed = expected_final(topology, history.partitions())  # type: ignore[arg-type]
    assert_cells(redis_url, topology, expected)  # type: ignore[arg-type]
    letters = dead_letter_origins(kafka, topic)
    assert len(letters) == len(set(letters)), "a dead letter was sent twice"
    assert len(letters) == late + malformed


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_a_new_host_after_retention_dropped_old_records(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path, where: str, request: pytest.FixtureRequest,
) -> None:
    """``s3``: the checkpoints in a bucket of the S3-compatible server (tests/conftest.py)."""
    topic = new_topic("orders", partitions=3)
    topology, path = make_topology(unique_id, topic, tmp_path)
    store: Path | str = tmp_path / "bucket" / "checkpoints"
    if where == "s3":
        store = f"s3://{request.getfixturevalue('s3_bucket')}/checkpoints"
    produce(kafka_bootstrap, topic, 6000, seed=51, **STREAM)
    run_to_end(path, tmp_path / "host-a", kafka_bootstrap, redis_url,
               "--checkpoint-dir", str(store), "--commit-every", "0.5")
    history = History()
    history.read(kafka_bootstrap, topic)
    cut(kafka_bootstrap, topic, history)
    produce(kafka_bootstrap, topic, 3000, seed=52, **STREAM)
    history.read(kafka_bootstrap, topic)
    log = run_to_end(path, tmp_path / "host-b", kafka_bootstrap, redis_url,
                     "--checkpoint-dir", str(store)).read_text()
    assert log.count("restored from") == 3, log[-3000:]
    check(kafka_bootstrap, redis_url, topic, history, topology)


def test_a_new_host_killed_during_its_restore(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=2)
    topology, path = make_topology(unique_id, topic, tmp_path)
    store = tmp_path / "bucket" / "checkpoints"
    stream = {**STREAM, "entities": 40_000}  # a state that takes a while to restore
    produce(kafka_bootstrap, topic, 60_000, seed=53, **stream)
    run_to_end(path, tmp_path / "host-a", kafka_bootstrap, redis_url,
               "--checkpoint-dir", str(store))
    history = History()
    history.read(kafka_bootstrap, topic)
    cut(kafka_bootstrap, topic, history)
    produce(kafka_bootstrap, topic, 2000, seed=54, **stream)
    history.read(kafka_bootstrap, topic)
    host_b = tmp_path / "host-b"
    mid_restore = False
    with Workers(tmp_path, worker_env(kafka_bootstrap, redis_url)) as workers:
        for attempt in range(5):
            name = f"b{attempt}"
            workers.start(name, worker_cmd(path, host_b, "--checkpoint-dir", str(store)))
            deadline = time.time() + 60
            while "restoring from" not in workers.log(name, 10**6) and time.time() < deadline:
                time.sleep(0.005)
            workers.kill(name)
            text = workers.log(name, 10**6)
            # killed between the start of a partition's restore and its end
            mid_restore = text.count("restoring from") > text.count("restored from")
            if mid_restore:
                break
    assert mid_restore, "no kill landed during a restore"
    unfinished = 0
    for p in range(2):
        local = PartitionStore(host_b, topology.name, topic, p)
        unfinished += local.committed().next_offset is None
        local.close()
    assert unfinished, "a killed restore must leave no offset behind"
    log = run_to_end(path, host_b, kafka_bootstrap, redis_url,
                     "--checkpoint-dir", str(store)).read_text()
    assert "restored from" in log, log[-3000:]
    check(kafka_bootstrap, redis_url, topic, history, topology)
