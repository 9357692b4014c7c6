"""Workers stopped hard or softly mid-stream, on real Kafka and Redis: kill -9 at random
points, one of two workers killed, SIGTERM then a restart, and a state directory lost
between runs. Every stream carries the hostile records of ``harness.hostile_values``; every
test ends as an uninterrupted run would (``harness.assert_survived``).
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import (
    BIG_RECORDS,
    COMMIT_OFTEN,
    DEFAULT_RUNTIME,
    GroupProgress,
    LiveStream,
    VersionWatch,
    Workers,
    assert_survived,
    kill_at_random_points,
    make_topology,
    run_to_end,
    worker_cmd,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]

BOTH = ["faust", "kafka"]
SHORT = [DEFAULT_RUNTIME]


@pytest.mark.fault_cases("runtime,kills", short=[(DEFAULT_RUNTIME, 4)],
                         long=[("faust", 8), ("kafka", 8)])
def test_worker_killed_at_random_points_equals_uninterrupted(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path, fault_rng: random.Random, runtime: str, kills: int,
) -> None:
    topic = new_topic("orders", partitions=2, config=BIG_RECORDS)
    topology, path = make_topology(unique_id, topic, tmp_path)
    # each restart waits out the killed member's 10 s session: ~12 s a kill
    stream = LiveStream(kafka_bootstrap, topic, 30_000, fault_rng, seconds=20 * kills)
    state, snaps = tmp_path / "state", tmp_path / "snapshots"
    runtime_args = ("--runtime", runtime, "--snapshot-dir", str(snaps))
    with (stream, VersionWatch.sample(redis_url, topology, stream, fault_rng) as versions,
          Workers(tmp_path, worker_env(kafka_bootstrap, redis_url)) as workers,
          GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
        mid_stream = kill_at_random_points(
            workers, group, worker_cmd(path, state, *runtime_args, "--batch-size", "500",
                                       *COMMIT_OFTEN), rng=fault_rng, runs=kills, live=stream)
        assert mid_stream == kills, f"{kills - mid_stream} kills came after the stream"
        stream.finish()
        run_to_end(path, state, kafka_bootstrap, redis_url, *runtime_args)
        print(assert_survived(kafka_bootstrap, redis_url, topology, versions=versions,
                              snapshot_dir=snaps, hostile=stream.hostile))


@pytest.mark.fault_cases("runtime", short=SHORT, long=BOTH)
def test_two_workers_one_killed_mid_stream(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path, fault_rng: random.Random, runtime: str,
) -> None:
    topic = new_topic("orders", partitions=4, config=BIG_RECORDS)
    topology, path = make_topology(unique_id, topic, tmp_path)
    stream = LiveStream(kafka_bootstrap, topic, 30_000, fault_rng, seconds=60)
    snaps = tmp_path / "snapshots"

    def cmd(state: str) -> list[str]:
        return worker_cmd(path, tmp_path / state, "--runtime", runtime, "--snapshot-dir",
                          str(snaps), "--batch-size", "300", *COMMIT_OFTEN)

    with (stream, VersionWatch.sample(redis_url, topology, stream, fault_rng) as versions,
          Workers(tmp_path, worker_env(kafka_bootstrap, redis_url)) as workers,
          GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
        workers.start("a", cmd("a"))
        workers.start("b", cmd("b"))
        group.wait(workers=workers)
        time.sleep(fault_rng.uniform(0.0, 5.0))
        assert stream.running, "the kill must come mid-stream"
        workers.kill("a")  # its partitions move to b after the session timeout
        killed = time.time()
        stream.finish()
        group.wait_end(workers=workers)
        print(f"recovery[{runtime}] one of two workers killed: b at the end "
              f"{time.time() - killed:.1f} s after the kill")
        assert workers.stop("b") == 0, workers.log("b")
        print(assert_survived(kafka_bootstrap, redis_url, topology, versions=versions,
                              snapshot_dir=snaps, hostile=stream.hostile))


@pytest.mark.fault_cases("runtime", short=SHORT, long=BOTH)
def test_sigterm_mid_stream_then_restart(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path, fault_rng: random.Random, runtime: str,
) -> None:
    """SIGTERM mid-stream: the worker stops soon (state, Redis, dead letters and snapshots
    flushed) with status 0; a restart carries on from there."""
    topic = new_topic("orders", partitions=2, config=BIG_RECORDS)
    topology, path = make_topology(unique_id, topic, tmp_path)
    stream = LiveStream(kafka_bootstrap, topic, 20_000, fault_rng, seconds=40)
    state, snaps = tmp_path / "state", tmp_path / "snapshots"
    runtime_args = ("--runtime", runtime, "--snapshot-dir", str(snaps))
    with (stream, VersionWatch.sample(redis_url, topology, stream, fault_rng) as versions,
          Workers(tmp_path, worker_env(kafka_bootstrap, redis_url)) as workers,
          GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
        workers.start("worker", worker_cmd(path, state, *runtime_args, "--batch-size", "300"))
        group.wait(workers=workers)
        time.sleep(fault_rng.uniform(0.0, 5.0))
        assert stream.running, "SIGTERM must come mid-stream"
        asked = time.time()
        assert workers.stop("worker", timeout_s=30) == 0, workers.log("worker")
        stopped = time.time() - asked
        done, total = group.done()
        print(f"recovery[{runtime}] SIGTERM mid-stream: exit 0 after {stopped:.1f} s, "
              f"{done} of {total} records committed")
        stream.finish()
        run_to_end(path, state, kafka_bootstrap, redis_url, *runtime_args)
        print(assert_survived(kafka_bootstrap, redis_url, topology, versions=versions,
                              snapshot_dir=snaps, hostile=stream.hostile))


@pytest.mark.fault_cases("runtime", short=SHORT, long=BOTH)
def test_state_directory_lost_between_runs(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path, fault_rng: random.Random, runtime: str,
) -> None:
    """Killed mid-stream, then its state directory is gone (a new host, a lost disk): the
    worker rebuilds the state from the topic; Redis never goes back, no dead letter or
    snapshot record comes twice."""
    topic = new_topic("orders", partitions=2, config=BIG_RECORDS)
    topology, path = make_topology(unique_id, topic, tmp_path)
    stream = LiveStream(kafka_bootstrap, topic, 20_000, fault_rng, seconds=40)
    state, snaps = tmp_path / "state", tmp_path / "snapshots"
    runtime_args = ("--runtime", runtime, "--snapshot-dir", str(snaps))
    with (stream, VersionWatch.sample(redis_url, topology, stream, fault_rng) as versions,
          Workers(tmp_path, worker_env(kafka_bootstrap, redis_url)) as workers,
          GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
        workers.start("worker", worker_cmd(path, state, *runtime_args, "--batch-size", "300",
                                           *COMMIT_OFTEN))
        group.wait(workers=workers)
        time.sleep(fault_rng.uniform(0.0, 5.0))
        assert stream.running, "the kill must come mid-stream"
        workers.kill("worker")
        assert any(state.iterdir()), "the worker kept no state to lose"
        shutil.rmtree(state)
        stream.finish()
        run_to_end(path, state, kafka_bootstrap, redis_url, *runtime_args)
        print(assert_survived(kafka_bootstrap, redis_url, topology, versions=versions,
                              snapshot_dir=snaps, hostile=stream.hostile))
