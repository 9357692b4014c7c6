"""The worker end to end, on real Kafka and Redis: every Redis value equals the reference.

(The same under faults, kill -9 and the rest: ``tests/faults``.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import (
    STREAM,
    assert_redis_matches_reference,
    count_topic,
    make_topology,
    produce,
    run_to_end,
)

pytestmark = pytest.mark.integration


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


def test_a_state_budget_far_below_the_state_gives_the_same_values(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    """``--state-cache-mb`` holding a few entities (of hundreds) per partition: entities
    leave memory at every commit and come back for their events and window expiries; a
    restart in the middle opens the state without loading it all. Same values, same dead
    letters."""
    topic = new_topic("orders", partitions=2)
    topology, path = make_topology(unique_id, topic, tmp_path)
    tiny = ("--state-cache-mb", "0.02", "--commit-every", "0.1", "--batch-size", "300")
    half = int(3000 / STREAM["events_per_second"] * 1000)  # the event time 3000 events span
    start = int(time.time() * 1000) - 2 * half
    produce(kafka_bootstrap, topic, 3000, seed=2, start_ms=start, **STREAM)
    first = run_to_end(path, tmp_path / "state", kafka_bootstrap, redis_url, *tiny)
    produce(kafka_bootstrap, topic, 3000, seed=3, start_ms=start + half, **STREAM)
    second = run_to_end(path, tmp_path / "state", kafka_bootstrap, redis_url, *tiny)
    entities, late, malformed = assert_redis_matches_reference(kafka_bootstrap, redis_url, topology)
    assert entities > 100 and late > 0 and malformed > 0
    assert count_topic(kafka_bootstrap, f"{topic}.dlq") == late + malformed
    for log in (first, second):
        summary = [line for line in log.read_text().splitlines() if "summary:" in line][-1]
        assert "entities evicted to the state store" in summary, summary
        # hundreds of entities in batches of 300: more new ones than the state budget
        # takes at once, so batches are taken in parts with a commit between
        assert "times the rest of a batch waited for a commit" in summary, summary
