"""``/health`` on real Kafka and Redis: a frozen Redis turns an idle worker red, and green
again; a worker restarted after SIGKILL with its ``--instance-id`` gets its partitions back
at once (static membership), without it after the dead member's session times out.

(A Kafka outage of an idle worker is tested over the in-memory consumer, in
``tests/runtime/test_health.py``: the shared broker cannot be stopped, and a TCP proxy in
front of it would be bypassed, since Kafka clients connect to the broker's advertised
address learnt from metadata.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import (
    GroupProgress,
    PrivateRedis,
    Workers,
    free_port,
    make_topology,
    produce,
    wait_for_health,
    worker_cmd,
    worker_env,
)

pytestmark = pytest.mark.integration


def test_idle_worker_with_frozen_redis_turns_unhealthy_then_healthy(
    kafka_bootstrap: str, new_topic: Callable[..., str], unique_id: str, tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=2)
    _topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 500, seed=31, entities=50)
    port = free_port()
    with (PrivateRedis(tmp_path) as redis,
          Workers(tmp_path, worker_env(kafka_bootstrap, redis.url)) as workers,
          GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
        workers.start("worker", worker_cmd(path, tmp_path / "state", "--metrics-port",
                                           str(port), "--commit-every", "0.5"))
        group.wait_end(timeout_s=50, workers=workers)  # everything read: idle from now on
        wait_for_health(port, lambda code, body: code == 200 and body["ready"],
                        path="/health/ready", workers=workers)
        redis.freeze()
        frozen = time.time()
        red, body = wait_for_health(port, lambda code, _b: code == 503, timeout_s=25,
                                    workers=workers)
        print(f"frozen Redis: /health unhealthy after {red - frozen:.1f} s")
        assert red - frozen < 20
        assert set(body["failing"]) == {"redis"}, body
        assert body["failing"]["redis"]["unhealthy"] is True
        assert body["healthy"] is False and body["ready"] is False and body["live"] is True
        assert abs(body["retrying_since"] - body["failing"]["redis"]["since"]) < 0.01
        assert wait_for_health(port, lambda code, _b: code == 503, path="/health/ready")
        assert wait_for_health(port, lambda code, _b: code == 200, path="/health/live")
        redis.thaw()
        thawed = time.time()
        green, body = wait_for_health(port, lambda code, _b: code == 200, timeout_s=15,
                                      workers=workers)
        print(f"thawed Redis: /health healthy after {green - thawed:.1f} s")
        assert body["failing"] == {} and body["ready"] is True
        assert workers.stop("worker") == 0, workers.log("worker")


def _restart_after_kill(kafka: str, redis_url: str, path: Path, tmp_path: Path,
                        name: str, *extra: str) -> float:
    """Seconds from starting a worker, after SIGKILL of the one before it, to its having
    every partition again (both with the same arguments and state)."""
    port = free_port()
    state = tmp_path / f"state-{name}"
    cmd = [*worker_cmd(path, state, "--metrics-port", str(port), *extra), "--runtime", "kafka"]
    with Workers(tmp_path, worker_env(kafka, redis_url)) as workers:
        workers.start(f"{name}-1", cmd)
        wait_for_health(port, lambda _c, body: len(body.get("assigned", [])) == 2,
                        timeout_s=40, workers=workers)
        workers.kill(f"{name}-1")
        started = time.time()
        workers.start(f"{name}-2", cmd)
        back, _body = wait_for_health(port, lambda _c, body: len(body.get("assigned", [])) == 2,
                                      timeout_s=40, workers=workers)
        assert workers.stop(f"{name}-2") == 0, workers.log(f"{name}-2")
    return back - started


def test_static_membership_gives_a_killed_worker_its_partitions_back_at_once(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=2)
    _topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 200, seed=32, entities=20)
    static = _restart_after_kill(kafka_bootstrap, redis_url, path, tmp_path, "static",
                                 "--instance-id", f"{unique_id}-0", "--group", f"{unique_id}-s")
    dynamic = _restart_after_kill(kafka_bootstrap, redis_url, path, tmp_path, "dynamic",
                                  "--group", f"{unique_id}-d")
    print(f"partitions back after SIGKILL + restart: {static:.1f} s with --instance-id, "
          f"{dynamic:.1f} s without")
    assert static < 6.0, static  # process start and join; no wait for the old session
    assert dynamic > static + 4.0, (static, dynamic)  # the 10 s session timeout
