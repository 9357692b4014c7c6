"""The worker end to end, on real Kafka and Redis: every Redis value equals the reference."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import (
    assert_redis_matches_reference,
    count_topic,
    make_topology,
    produce,
    run_to_end,
    worker_cmd,
    worker_env,
)

pytestmark = pytest.mark.integration

# Slow event time (one event every ~2 s on average) so that a few thousand events span hours:
# windows fill, slide, close and expire during the test.
STREAM = {"entities": 200, "events_per_second": 0.5, "disorder_ms": 120_000,
          "late_fraction": 0.01, "late_ms": 3_600_000, "malformed_fraction": 0.005}


def test_worker_values_equal_reference(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=3)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 6000, seed=1, **STREAM)
    run_to_end(path, tmp_path / "state", kafka_bootstrap, redis_url)
    entities, late, malformed = assert_redis_matches_reference(kafka_bootstrap, redis_url, topology)
    assert entities > 100 and late > 0 and malformed > 0
    assert count_topic(kafka_bootstrap, f"{topic}.dlq") == late + malformed


def test_worker_killed_at_random_points_equals_uninterrupted(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=2)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 30_000, seed=2, **STREAM)
    rng = random.Random(3)
    state = tmp_path / "state"
    env = worker_env(kafka_bootstrap, redis_url)
    for _ in range(4):
        proc = subprocess.Popen(worker_cmd(path, state, "--batch-size", "500"), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    run_to_end(path, state, kafka_bootstrap, redis_url)
    _entities, late, malformed = assert_redis_matches_reference(
        kafka_bootstrap, redis_url, topology
    )
    assert count_topic(kafka_bootstrap, f"{topic}.dlq") == late + malformed


def _committed(kafka: str, group: str, topic: str) -> tuple[int, int]:
    """(records the group has committed, records in the topic)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": kafka, "group.id": group})
    try:
        parts = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in parts}
        got = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=30)
        return sum(max(tp.offset, 0) for tp in got), sum(ends.values())
    finally:
        consumer.close()


def _wait_committed(kafka: str, group: str, topic: str, timeout_s: float = 180) -> None:
    """Wait until the group has committed every partition of the topic up to its end."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": kafka, "group.id": group})
    try:
        parts = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in parts}
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            got = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=30)
            if all(tp.offset >= ends[tp.partition] for tp in got):
                return
            time.sleep(0.5)
        raise AssertionError(f"group {group} did not catch up with {topic} in {timeout_s}s")
    finally:
        consumer.close()


def test_two_workers_one_killed_mid_stream(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=4)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 30_000, seed=4, **STREAM)
    env = worker_env(kafka_bootstrap, redis_url)
    a = subprocess.Popen(worker_cmd(path, tmp_path / "a", "--batch-size", "300"), env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b = subprocess.Popen(worker_cmd(path, tmp_path / "b", "--batch-size", "300"), env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(4)
        done, total = _committed(kafka_bootstrap, f"streamfeat.{unique_id}", topic)
        assert 0 < done < total, f"kill must come mid-stream: {done} of {total} committed"
        a.send_signal(signal.SIGKILL)  # its partitions move to b after the session timeout
        a.wait(30)
        _wait_committed(kafka_bootstrap, f"streamfeat.{unique_id}", topic)
    finally:
        b.send_signal(signal.SIGTERM)
        _out, err = b.communicate(timeout=60)
    assert b.returncode == 0, err[-3000:]
    _entities, late, malformed = assert_redis_matches_reference(
        kafka_bootstrap, redis_url, topology
    )
    assert count_topic(kafka_bootstrap, f"{topic}.dlq") == late + malformed


def test_redis_down_for_ten_seconds_mid_stream(
    kafka_bootstrap: str, new_topic: Callable[..., str], unique_id: str, tmp_path: Path,
) -> None:
    import shutil
    import socket

    server = shutil.which("redis-server")
    assert server, "redis-server is needed for this test; deploy/local/up installs it"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    private = f"redis://127.0.0.1:{port}/0"

    def start_redis() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis as redis_lib

        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if redis_lib.Redis.from_url(private).ping():
                    return proc
            except redis_lib.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("private redis-server did not start")

    topic = new_topic("orders", partitions=2)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 30_000, seed=5, **STREAM)
    redis_proc = start_redis()
    # Keep Redis's data across the outage: it is the online store, its loss is not the test.
    import redis as redis_lib

    worker = subprocess.Popen(worker_cmd(path, tmp_path / "state", "--batch-size", "300"),
                              env=worker_env(kafka_bootstrap, private),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(2)
        done, total = _committed(kafka_bootstrap, f"streamfeat.{unique_id}", topic)
        assert 0 < done < total, f"the outage must come mid-stream: {done} of {total} committed"
        # SHUTDOWN SAVE: Redis writes dump.rdb (in --dir) and exits; the restart loads it.
        with contextlib.suppress(redis_lib.ConnectionError):
            redis_lib.Redis.from_url(private).shutdown(save=True)
        redis_proc.wait(30)
        time.sleep(10)
        assert worker.poll() is None, "the worker must wait for Redis, not die"
        redis_proc = start_redis()
        _wait_committed(kafka_bootstrap, f"streamfeat.{unique_id}", topic)
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=60)
        try:
            _entities, late, malformed = assert_redis_matches_reference(
                kafka_bootstrap, private, topology
            )
        finally:
            redis_proc.terminate()
            redis_proc.wait(30)
    assert worker.returncode == 0, err.decode()[-3000:]
    assert count_topic(kafka_bootstrap, f"{topic}.dlq") == late + malformed
