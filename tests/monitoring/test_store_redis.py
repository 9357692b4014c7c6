"""Baselines and interval summaries in the real Redis; a worker's monitor reloading its
baseline; ``streamfeat monitor baseline --training-set`` and ``show``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis as redis_lib

from streamfeat.monitoring import (
    Baseline,
    ValueMonitor,
    ValueSketch,
    baseline_key,
    monitor_key,
    read_baseline,
    read_summaries,
    write_baseline,
)
from streamfeat.monitoring.store import delete_baseline, write_summary
from streamfeat.sinks import UpdateBatch, version
from streamfeat.topology import TopologyDef, load_topology_text

pytestmark = pytest.mark.integration


TOPOLOGY_TEXT = """
version: 1
name: {name}
source: {{topic: t, key: user_id, timestamp: ts}}
entity: user
features:
  - {{name: orders, agg: count, windows: [1h]}}
  - {{name: amount_mean, agg: mean, field: amount, windows: [1h]}}
  - {{name: recent, agg: last_k, k: 2, field: amount, windows: [1h]}}
"""


def topology(name: str) -> TopologyDef:
    return load_topology_text(TOPOLOGY_TEXT.format(name=name))


@pytest.fixture
def client(redis_url: str, unique_id: str) -> Iterator[redis_lib.Redis]:
    c = redis_lib.Redis.from_url(redis_url)
    yield c
    c.delete(baseline_key(unique_id), monitor_key(unique_id), monitor_key(unique_id) + ":seen")
    c.close()


def monitor_cli(path: Path, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``streamfeat monitor ARGS TOPOLOGY --redis URL`` in a process of its own."""
    return subprocess.run([sys.executable, "-m", "streamfeat.cli", "monitor", *args,
                           str(path), "--redis", redis_url], capture_output=True,
                          text=True, timeout=120, check=False)


def sketch(values: list[float | None]) -> ValueSketch:
    s = ValueSketch()
    s.add(values)
    return s


def test_a_baseline_round_trips_and_garbage_is_refused(client: redis_lib.Redis,
                                                       unique_id: str) -> None:
    assert read_baseline(client, unique_id) is None
    stored = Baseline(unique_id, 123, "test", {"orders__1h": sketch([1, 2, None]).state()})
    write_baseline(client, stored)
    assert read_baseline(client, unique_id) == stored
    client.set(baseline_key(unique_id), b"not msgpack of a baseline")
    with pytest.raises(ValueError, match="monitor baseline"):
        read_baseline(client, unique_id)
    assert delete_baseline(client, unique_id) and not delete_baseline(client, unique_id)


def test_summaries_of_gone_workers_are_forgotten(client: redis_lib.Redis, unique_id: str,
                                                 redis_url: str) -> None:
    topo = topology(unique_id)
    a = ValueMonitor([topo], None, redis_url=redis_url, worker="host-a:1")
    b = ValueMonitor([topo], None, redis_url=redis_url, worker="host-b:2")
    for m in (a, b):
        m.observe(unique_id, [UpdateBatch(["u1", "u2"], ["orders__1h"], [[1, 2]], 5,
                                          version(0, 0, 5))])
        m.close_interval()
    got = read_summaries(client, unique_id)
    assert [s.worker for s in got] == ["host-a:1", "host-b:2"]
    assert got[0].fields["orders__1h"].sketch.count == 2
    assert client.pttl(monitor_key(unique_id)) > 0  # expires when every worker is gone
    # a day later only host-b writes: host-a is forgotten
    later = got[1]
    assert write_summary(client, unique_id, later, now_s=2e9, forget_after_s=60) == 1
    assert [s.worker for s in read_summaries(client, unique_id)] == ["host-b:2"]
    a.stop()
    b.stop()


def test_a_worker_takes_a_new_baseline_at_the_next_interval(client: redis_lib.Redis,
                                                            unique_id: str,
                                                            redis_url: str) -> None:
    topo = topology(unique_id)
    rng = np.random.default_rng(2)
    monitor = ValueMonitor([topo], None, redis_url=redis_url)
    values = rng.normal(100, 10, 3000).tolist()
    batch = UpdateBatch([f"u{i}" for i in range(3000)], ["amount_mean__1h"], [values], 5,
                        version(0, 0, 5))
    monitor.observe(unique_id, [batch])
    first = monitor.close_interval()[unique_id]
    assert first.baseline_created_ms is None and first.fields["amount_mean__1h"].psi is None

    write_baseline(client, Baseline(unique_id, 1, "same", {
        "amount_mean__1h": sketch(rng.normal(100, 10, 3000).tolist()).state()}))
    monitor.observe(unique_id, [batch])
    second = monitor.close_interval()[unique_id]
    assert second.baseline_created_ms == 1
    assert second.fields["amount_mean__1h"].psi < 0.05

    write_baseline(client, Baseline(unique_id, 2, "shifted", {
        "amount_mean__1h": sketch(rng.normal(130, 10, 3000).tolist()).state()}))
    monitor.observe(unique_id, [batch])
    third = monitor.close_interval()[unique_id]
    assert third.baseline_created_ms == 2 and third.fields["amount_mean__1h"].psi > 1

    delete_baseline(client, unique_id)
    monitor.observe(unique_id, [batch])
    assert monitor.close_interval()[unique_id].fields["amount_mean__1h"].psi is None
    stored = read_summaries(client, unique_id)
    assert len(stored) == 1 and stored[0].seq == 4
    monitor.stop()


def test_baseline_from_a_training_set_then_show(client: redis_lib.Redis, unique_id: str,
                                                redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / f"{unique_id}.yaml"
    path.write_text(TOPOLOGY_TEXT.format(name=unique_id))
    rng = np.random.default_rng(9)
    amounts = rng.lognormal(3, 0.5, 1000)
    table = pa.table({
        "user_id": [f"u{i}" for i in range(1000)],
        "orders__1h": pa.array(rng.integers(0, 20, 1000), pa.int64()),
        "amount_mean__1h": pa.array([None if i % 4 == 0 else float(a)
                                     for i, a in enumerate(amounts)], pa.float64()),
        "recent__1h": pa.array([None if i % 2 else "[1,2]" for i in range(1000)], pa.string()),
    })
    pq.write_table(table, tmp_path / "train.parquet")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return monitor_cli(path, redis_url, *args)

    done = cli("baseline", "--training-set", str(tmp_path / "train.parquet"))
    assert done.returncode == 0, done.stderr
    assert "baseline stored" in done.stdout and "amount_mean__1h" in done.stdout
    baseline = read_baseline(client, unique_id)
    assert baseline is not None and baseline.source.startswith("training set train.parquet")
    mean = ValueSketch.from_state(baseline.fields["amount_mean__1h"])
    assert (mean.count, mean.nulls) == (1000, 250)
    assert mean.mean == pytest.approx(float(np.mean([a for i, a in enumerate(amounts)
                                                     if i % 4])))
    recent = ValueSketch.from_state(baseline.fields["recent__1h"])
    assert (recent.count, recent.nulls, recent.n) == (1000, 500, 0)

    shown = cli("show", "--json")
    assert shown.returncode == 0, shown.stderr
    out = json.loads(shown.stdout)
    assert out["baseline"]["fields"]["amount_mean__1h"]["null_rate"] == 0.25
    assert out["workers"] == [] and out["latest"] == {}

    # a bad invocation says what to give
    bad = cli("baseline", "--snapshot-dir", str(tmp_path))
    assert bad.returncode == 2 and "--start and --end" in bad.stderr
    missing = cli("baseline", "--training-set", str(tmp_path / "nope.parquet"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_idle_intervals_keep_the_last_values_stored(client: redis_lib.Redis, unique_id: str,
                                                    redis_url: str, tmp_path: Path) -> None:
    """A worker whose stream pauses keeps its last interval with values in Redis (what
    ``monitor show`` merges), marked as heard of at each idle close, until values come back."""
    topo = topology(unique_id)
    rng = np.random.default_rng(4)
    write_baseline(client, Baseline(unique_id, 1, "base", {
        "amount_mean__1h": sketch(rng.normal(100, 10, 3000).tolist()).state()}))
    monitor = ValueMonitor([topo], None, redis_url=redis_url)
    shifted = rng.normal(300, 10, 3000).tolist()
    batch = UpdateBatch([f"u{i}" for i in range(3000)], ["amount_mean__1h"], [shifted], 5,
                        version(0, 0, 5))
    monitor.observe(unique_id, [batch])
    monitor.close_interval(1000.0)
    monitor.close_interval(1002.0)
    idle = monitor.close_interval(1004.0)[unique_id]
    assert idle.seq == 3 and idle.fields["amount_mean__1h"].sketch.count == 0  # the metrics
    [stored] = read_summaries(client, unique_id)
    assert (stored.seq, stored.idle_intervals, stored.heard_ms) == (1, 2, 1_004_000)
    assert stored.fields["amount_mean__1h"].sketch.count == 3000
    assert stored.fields["amount_mean__1h"].psi is not None
    assert stored.fields["amount_mean__1h"].psi > 1

    path = tmp_path / f"{unique_id}.yaml"
    path.write_text(TOPOLOGY_TEXT.format(name=unique_id))
    # heard of 2 s ago with 2 s intervals: live though its values are 6 s old
    write_summary(client, unique_id, msgspec.structs.replace(
        stored, heard_ms=int(time.time() * 1000) - 2000, end_ms=int(time.time() * 1000) - 6000,
        start_ms=int(time.time() * 1000) - 8000))
    shown = monitor_cli(path, redis_url, "show", "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    [worker] = summary["workers"]
    assert worker["live"] and worker["idle_intervals"] == 2
    assert summary["latest"]["amount_mean__1h"]["psi"] > 1
    text = monitor_cli(path, redis_url, "show")
    assert text.returncode == 0, text.stderr
    assert "live); values as of" in text.stdout
    assert "then 2 interval(s) without values (the stream paused)" in text.stdout

    monitor.observe(unique_id, [batch])
    monitor.close_interval(1006.0)
    [stored] = read_summaries(client, unique_id)
    assert (stored.seq, stored.idle_intervals, stored.heard_ms) == (4, 0, 1_006_000)
    monitor.stop()
