"""The worker end to end, on real Kafka and Redis: every Redis value equals the reference."""

from __future__ import annotations

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
