"""The worker end to end, on real Kafka and Redis: every Redis value equals the reference."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import (
    COMMIT_OFTEN,
    STREAM,
    GroupProgress,
    Workers,
    assert_redis_matches_reference,
    count_topic,
    kill_at_random_points,
    make_topology,
    produce,
    run_to_end,
    worker_cmd,
    worker_env,
)

pytestmark = pytest.mark.integration



def test_worker_killed_at_random_points_equals_uninterrupted(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=2)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 30_000, seed=2, **STREAM)
    state = tmp_path / "state"
    with (Workers(tmp_path, worker_env(kafka_bootstrap, redis_url)) as workers,
          GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
        mid_stream = kill_at_random_points(
            workers, group, worker_cmd(path, state, "--batch-size", "500", *COMMIT_OFTEN))
    assert mid_stream > 0, "no kill came mid-stream"
    run_to_end(path, state, kafka_bootstrap, redis_url)
    _entities, late, malformed = assert_redis_matches_reference(
        kafka_bootstrap, redis_url, topology
    )
    assert count_topic(kafka_bootstrap, f"{topic}.dlq") == late + malformed


def test_two_workers_one_killed_mid_stream(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=4)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 30_000, seed=4, **STREAM)
    with (Workers(tmp_path, worker_env(kafka_bootstrap, redis_url)) as workers,
          GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
        workers.start("a", worker_cmd(path, tmp_path / "a", "--batch-size", "300", *COMMIT_OFTEN))
        workers.start("b", worker_cmd(path, tmp_path / "b", "--batch-size", "300", *COMMIT_OFTEN))
        done, total = group.wait(workers=workers)
        assert 0 < done < total, f"kill must come mid-stream: {done} of {total} committed"
        workers.kill("a")  # its partitions move to b after the session timeout
        group.wait_end(workers=workers)
        status = workers.stop("b")
        assert status == 0, workers.log("b")
    _entities, late, malformed = assert_redis_matches_reference(
        kafka_bootstrap, redis_url, topology
    )
    assert count_topic(kafka_bootstrap, f"{topic}.dlq") == late + malformed


def test_redis_down_for_ten_seconds_mid_stream(
    kafka_bootstrap: str, new_topic: Callable[..., str], unique_id: str, tmp_path: Path,
) -> None:
    import shutil
    import socket

    import redis as redis_lib

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
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if redis_lib.Redis.from_url(private).ping():
                    return proc
            except redis_lib.ConnectionError:
                time.sleep(0.1)
        proc.kill()
        proc.wait(30)
        raise AssertionError("private redis-server did not start")

    topic = new_topic("orders", partitions=2)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 30_000, seed=5, **STREAM)
    redis_proc = start_redis()
    try:
        with (Workers(tmp_path, worker_env(kafka_bootstrap, private)) as workers,
              GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
            worker = workers.start(
                "worker", worker_cmd(path, tmp_path / "state", "--batch-size", "300", *COMMIT_OFTEN)
            )
            done, total = group.wait(workers=workers)
            assert 0 < done < total, (
                f"the outage must come mid-stream: {done} of {total} committed"
            )
            # SHUTDOWN SAVE: Redis writes dump.rdb (in --dir) and exits; the restart loads it.
            # Keep Redis's data across the outage: it is the online store, its loss is not
            # the test.
            with contextlib.suppress(redis_lib.ConnectionError):
                redis_lib.Redis.from_url(private).shutdown(save=True)
            redis_proc.wait(30)
            stalled, _total = group.done()
            assert stalled < total, "the outage must come mid-stream: the group finished"
            time.sleep(10)
            assert worker.poll() is None, "the worker must wait for Redis, not die:\n" + (
                workers.log("worker")
            )
            redis_proc = start_redis()
            group.wait_end(workers=workers)
            status = workers.stop("worker")
            assert status == 0, workers.log("worker")
        _entities, late, malformed = assert_redis_matches_reference(
            kafka_bootstrap, private, topology
        )
    finally:
        redis_proc.terminate()
        redis_proc.wait(30)
    assert count_topic(kafka_bootstrap, f"{topic}.dlq") == late + malformed
