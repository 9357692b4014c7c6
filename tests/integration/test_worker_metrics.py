"""The worker's Prometheus metrics and health endpoint count what happened, exactly."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from streamfeat.config import DEFAULT_STATE_CACHE_MB

from harness import (
    free_port,
    make_topology,
    produce,
    read_topic,
    wait_for_metrics,
    worker_cmd,
    worker_env,
)
from reference import expected_final

pytestmark = pytest.mark.integration


def test_metrics_count_consumed_late_and_malformed(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=2)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 5000, seed=21, entities=100, events_per_second=0.5,
            late_fraction=0.02, malformed_fraction=0.01)
    _values, late, malformed = expected_final(topology, read_topic(kafka_bootstrap, topic))
    port = free_port()
    proc = subprocess.Popen(worker_cmd(path, tmp_path / "state", "--metrics-port", str(port)),
                            env=worker_env(kafka_bootstrap, redis_url),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # counters move when a batch is processed, histograms once its effects are stored
        # (gauges of state size and lag are refreshed every 5 s, so a refresh taken
        # while one partition was still being read shows part of the entities)
        metrics = wait_for_metrics(port, lambda m: (
            m.get("streamfeat_events_consumed_total") == 5000
            and m.get("streamfeat_event_to_redis_seconds_count", 0) > 0
            and m.get("streamfeat_state_entities", 0) >= len(_values)
            and m.get("streamfeat_consumer_lag") == 0))
        assert metrics.get("streamfeat_events_consumed_total") == 5000, metrics
        assert metrics["streamfeat_events_late_total"] == late > 0
        assert metrics["streamfeat_events_malformed_total"] == malformed > 0
        assert metrics["streamfeat_events_aggregated_total"] == 5000 - late - malformed
        assert metrics["streamfeat_event_to_redis_seconds_count"] > 0
        assert metrics["streamfeat_redis_write_seconds_count"] > 0
        assert metrics["streamfeat_state_entities"] >= len(_values)
        assert metrics["streamfeat_state_bytes"] > 0
        assert metrics["streamfeat_state_budget_bytes"] == DEFAULT_STATE_CACHE_MB * 2**20
        assert metrics.get("streamfeat_consumer_lag") == 0  # from the fetched high watermarks
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
        status = json.loads(health.read())
        assert health.status == 200 and status["healthy"] is True
        assert len(status["assigned"]) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
