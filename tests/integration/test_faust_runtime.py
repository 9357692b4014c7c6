"""The ``faust`` runtime resumes from the offsets stored with the state, never the group's.

(The other end-to-end tests run on either runtime: ``STREAMFEAT_RUNTIME=faust|kafka``.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness import assert_redis_matches_reference, make_topology, produce, run_to_end

pytestmark = pytest.mark.integration

STREAM = {"entities": 100, "events_per_second": 0.5, "disorder_ms": 60_000,
          "late_fraction": 0.01, "late_ms": 3_600_000, "malformed_fraction": 0.005}


def _other_db(url: str) -> str:
    base, _, db = url.rpartition("/")
    return f"{base}/{(int(db or 0) + 2) % 16}"


@pytest.mark.parametrize("runtime", ["faust", "kafka"])
def test_new_host_rebuilds_from_the_topic_although_the_group_committed_the_end(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path, runtime: str,
) -> None:
    """A worker on another host (empty state) must re-read the partitions from the start even
    though the group's committed offsets say everything was done: with Faust, its own "seek
    to committed" after the rebalance must not win."""
    topic = new_topic("orders", partitions=2)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 3000, seed=21, **STREAM)
    run_to_end(path, tmp_path / "host-a", kafka_bootstrap, redis_url, "--runtime", runtime)
    other = _other_db(redis_url)
    # Same group, empty state dir, empty Redis: every value must come from this run.
    run_to_end(path, tmp_path / "host-b", kafka_bootstrap, other, "--runtime", runtime)
    entities, _late, _malformed = assert_redis_matches_reference(kafka_bootstrap, other, topology)
    assert entities > 50
    import redis

    client = redis.Redis.from_url(other)
    keys = list(client.scan_iter(match=f"sf:{unique_id}:*", count=1000))
    if keys:
        client.delete(*keys)
