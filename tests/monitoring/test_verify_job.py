"""``monitor verify``: the existing verify, run periodically, its consistency as a gauge
(real Kafka, Redis, worker and snapshots)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis as redis_lib
from prometheus_client import CollectorRegistry

from streamfeat.monitoring import VerifyJob
from streamfeat.replay import verify

from harness import free_port, make_topology, produce, run_to_end, scrape_metrics

pytestmark = pytest.mark.integration


def test_the_consistency_ratio_is_exported_and_falls_with_a_wrong_value(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=2)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 2000, seed=5, entities=50, events_per_second=0.5)
    snaps = tmp_path / "snapshots"
    run_to_end(path, tmp_path / "state", kafka_bootstrap, redis_url, "--snapshot-dir",
               str(snaps))

    registry = CollectorRegistry()
    samples: list[int | None] = [None, None]  # run 0: every entity; run 1: every entity
    job = VerifyJob(unique_id, lambda run: verify(topology, snaps, redis_url,
                                                  sample=samples[run], seed=run),
                    registry, every_s=0.01)
    labels = {"topology": unique_id}

    def gauge(name: str) -> float | None:
        return registry.get_sample_value(name, labels)

    report = job.run_once()
    assert report is not None and report.checked == 50
    assert gauge("streamfeat_verify_consistency_ratio") == 1.0
    assert gauge("streamfeat_verify_checked_entities") == 50
    assert gauge("streamfeat_verify_mismatched_fields") == 0

    key = topology.redis_key(sorted(f"u{i}" for i in range(50))[0])
    client = redis_lib.Redis.from_url(redis_url)
    client.hset(key, "orders__1h", "987654")  # a value no replay gives
    client.close()
    job.run_once()
    assert gauge("streamfeat_verify_consistency_ratio") == pytest.approx(49 / 50)
    assert gauge("streamfeat_verify_mismatched_fields") == 1
    assert registry.get_sample_value("streamfeat_verify_runs_total",
                                     {**labels, "outcome": "ok"}) == 2

    # a run that could check nothing (no snapshots there), and one that failed (no Redis
    # there), are counted as such and set no ratio: 0 would be an alarm about nothing
    other = CollectorRegistry()
    port = free_port()
    urls = [redis_url, f"redis://127.0.0.1:{port}/0"]
    odd = VerifyJob(unique_id, lambda run: verify(topology, tmp_path / "none", urls[run]),
                    other, every_s=1)
    empty = odd.run_once()
    assert empty is not None and empty.checked == 0 and empty.skipped == 50
    assert odd.run_once() is None
    for outcome in ("empty", "error"):
        assert other.get_sample_value("streamfeat_verify_runs_total",
                                      {**labels, "outcome": outcome}) == 1
    assert other.get_sample_value("streamfeat_verify_consistency_ratio", labels) is None

    # the command: two runs one second apart, scraped while it runs
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamfeat.cli", "monitor", "verify", str(path),
         "--snapshot-dir", str(snaps), "--every", "1", "--sample", "20", "--runs", "3",
         "--metrics-port", str(port), "--redis", redis_url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[str, float] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                seen.update(scrape_metrics(port))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = proc.communicate(timeout=120)
    stop.set()
    watcher.join(10)
    assert proc.returncode == 0, out
    assert seen.get("streamfeat_verify_checked_entities") == 20, (seen, out)
    # 1 wrong entity among 50: a sample of 20 holds it or not
    assert seen.get("streamfeat_verify_consistency_ratio") in (1.0, 19 / 20), (seen, out)
