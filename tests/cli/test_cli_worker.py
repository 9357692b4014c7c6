"""A worker's run as a user sees it: a start without the Kafka clients' noise, a summary
line at the end from the worker's own counters, JSON lines on request, and exit status 4
when it stopped fenced off by a backfill's generation."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from streamfeat.runtime.summary import EXIT_FENCED
from streamfeat.sinks import RedisSink
from streamfeat.sinks.redis import Update
from streamfeat.sinks.values import version

from harness import make_topology, produce, read_topic, worker_cmd, worker_env
from reference import expected_final

pytestmark = pytest.mark.integration

SUMMARY = re.compile(
    r"summary: consumed (?P<consumed>[\d,]+) records \((?P<aggregated>[\d,]+) aggregated, "
    r"(?P<late>[\d,]+) late, (?P<malformed>[\d,]+) malformed\), (?P<written>[\d,]+) entity "
    r"writes applied to Redis \((?P<refused>[\d,]+) refused as not newer\), in "
    r"(?P<seconds>[\d.]+) s \([\d,]+ records/s\)")


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def _summary(stderr: str) -> dict[str, float]:
    found = SUMMARY.findall(stderr)
    assert len(found) == 1, stderr[-3000:]
    match = SUMMARY.search(stderr)
    assert match is not None
    return {k: float(v.replace(",", "")) for k, v in match.groupdict().items()}


def test_a_quiet_start_and_a_summary_of_the_run(
        kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
        tmp_path: Path) -> None:
    topic = new_topic("orders", partitions=2)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 1500, seed=3, entities=50, malformed_fraction=0.02,
            late_fraction=0.02, late_ms=3_600_000, events_per_second=0.5)
    _expected, late, malformed = expected_final(topology, read_topic(kafka_bootstrap, topic))
    assert late > 0 and malformed > 0
    env = worker_env(kafka_bootstrap, redis_url)
    cmd = worker_cmd(path, tmp_path / "state", "--runtime", "faust", "--stop-at-end")
    first = _run(cmd, env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Missing sensor state" not in first.stderr, first.stderr
    got = _summary(first.stderr)
    assert (got["consumed"], got["late"], got["malformed"]) == (1500, late, malformed)
    assert got["aggregated"] == 1500 - late - malformed
    assert got["written"] >= 50 and got["refused"] == 0  # every batch's entities, all new
    assert 0 < got["seconds"] < 300

    again = _run([*cmd, "--log-format", "json"], env)  # nothing new: a summary of nothing
    assert again.returncode == 0, again.stderr[-3000:]
    lines = [json.loads(line) for line in again.stderr.splitlines() if line.strip()]
    assert all(set(e) >= {"ts", "level", "logger", "message"} for e in lines)
    (summary,) = [e["message"] for e in lines if e["message"].startswith("summary:")]
    assert _summary(summary)["consumed"] == 0


def test_a_worker_stopped_while_fenced_exits_4(
        kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
        tmp_path: Path) -> None:
    topic = new_topic("orders", partitions=1)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 500, seed=5, entities=10, events_per_second=0.5)
    with RedisSink(redis_url, topology) as sink:  # what a backfill at generation 3 leaves
        sink.write([Update(f"u{i}", {"orders__1h": -1}, 0, version(3, 0, 0))
                    for i in range(10)])
    env = worker_env(kafka_bootstrap, redis_url)
    ran = _run(worker_cmd(path, tmp_path / "gen0", "--stop-at-end"), env)
    assert ran.returncode == EXIT_FENCED == 4, ran.stderr[-3000:]
    assert "stopped fenced off by generation 3" in ran.stderr
    assert "exit status 4. Restart the workers with --generation 3" in ran.stderr
    assert _summary(ran.stderr)["refused"] > 0

    ok = _run(worker_cmd(path, tmp_path / "gen3", "--stop-at-end", "--generation", "3"), env)
    assert ok.returncode == 0, ok.stderr[-3000:]  # at the backfill's generation: not fenced
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"sf:{unique_id}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.mark.parametrize("runtime", ["kafka", "faust"])
def test_a_repeated_sigterm_while_stopping_still_exits_0(
        kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
        tmp_path: Path, runtime: str) -> None:
    """A supervisor that sends SIGTERM again while the worker stops: the worker finishes its
    stop and exits 0. One arriving while Python shut down (it restores the default action)
    killed the exiting process with status -15 (seen in CI, test_snapshot_store_e2e)."""
    import signal
    import time

    topic = new_topic("orders", partitions=1)
    _topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 300, seed=9, entities=10, events_per_second=0.5)
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(worker_cmd(path, tmp_path / "state", "--runtime", runtime),
                                env=worker_env(kafka_bootstrap, redis_url), stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while "assigned" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "assigned" in log.read_text(), log.read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)
            while proc.poll() is None and time.monotonic() < deadline:  # and again, and again
                time.sleep(0.005)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    _summary(log.read_text())
