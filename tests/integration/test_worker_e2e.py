"""The worker end to end, on real Kafka and Redis: every Redis value equals the reference.

(The same under faults, kill -9 and the rest: ``tests/faults``.)"""

from __future__ import annotations

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
