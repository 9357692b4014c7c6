"""``/health`` on real Kafka and Redis: a frozen Redis turns an idle worker red, and green
again; a worker restarted after SIGKILL with its ``--instance-id`` gets its partitions back
at once (static membership), without it after the dead member's session times out.

(A Kafka outage of an idle worker is tested over the in-memory consumer, in
``tests/runtime/test_health.py``: the shared broker cannot be stopped, and a TCP proxy in
front of it would be bypassed, since Kafka clients connect to the broker's advertised
address learnt from metadata.)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamfeat.runtime.health import PROBE_EVERY_S, UNHEALTHY_AFTER_S

from harness import (
    BIG_RECORDS,
    DEFAULT_RUNTIME,
    GroupProgress,
    PrivateRedis,
    VersionWatch,
    Workers,
    assert_survived,
    free_port,
    make_topology,
    produce_fault_stream,
    wait_for_health,
    worker_cmd,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.mark.fault_cases("runtime", short=[DEFAULT_RUNTIME], long=["faust", "kafka"])
def test_idle_worker_with_frozen_redis_turns_unhealthy_then_healthy(
    kafka_bootstrap: str, new_topic: Callable[..., str], unique_id: str, tmp_path: Path,
    fault_rng: random.Random, runtime: str,
) -> None:
    topic = new_topic("orders", partitions=2, config=BIG_RECORDS)
    topology, path = make_topology(unique_id, topic, tmp_path)
    stream = produce_fault_stream(kafka_bootstrap, topic, 2000, fault_rng, entities=50)
    port = free_port()
    with (PrivateRedis(tmp_path) as redis,
          VersionWatch.sample(redis.url, topology, stream, fault_rng, moving=False) as versions,
          Workers(tmp_path, worker_env(kafka_bootstrap, redis.url)) as workers,
          GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
        workers.start("worker", worker_cmd(path, tmp_path / "state", "--runtime", runtime,
                                           "--metrics-port", str(port), "--commit-every", "0.5"))
        group.wait_end(timeout_s=50, workers=workers)  # everything read: idle from now on
        wait_for_health(port, lambda code, body: code == 200 and body["ready"],
                        path="/health/ready", workers=workers)
        redis.freeze()
        frozen = time.time()
        red, body = wait_for_health(port, lambda code, _b: code == 503, timeout_s=25,
                                    workers=workers)
        print(f"recovery[{runtime}] Redis frozen, idle worker: /health 503 after "
              f"{red - frozen:.1f} s")
        # the threshold from the first unanswered PING (one every 3 s when idle), + slack
        assert red - frozen < UNHEALTHY_AFTER_S + PROBE_EVERY_S + 1.5, red - frozen
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
        print(f"recovery[{runtime}] Redis thawed: /health 200 after {green - thawed:.1f} s")
        assert body["failing"] == {} and body["ready"] is True
        assert workers.stop("worker") == 0, workers.log("worker")
        print(assert_survived(kafka_bootstrap, redis.url, topology, versions=versions,
                              hostile=stream.hostile))


def _restart_after_kill(kafka: str, redis_url: str, path: Path, tmp_path: Path, topic: str,
                        name: str, *extra: str) -> float:
    """Seconds from starting a worker, after SIGKILL of the one before it, to its having
    every partition again (both with the same arguments and state, in group ``name``); the
    second reads to the end."""
    port = free_port()
    state = tmp_path / f"state-{name}"
    cmd = worker_cmd(path, state, "--metrics-port", str(port), "--group", name, *extra)
    with Workers(tmp_path, worker_env(kafka, redis_url)) as workers:
        workers.start(f"{name}-1", cmd)
        wait_for_health(port, lambda _c, body: len(body.get("assigned", [])) == 2,
                        timeout_s=40, workers=workers)
        workers.kill(f"{name}-1")
        started = time.time()
        workers.start(f"{name}-2", cmd)
        back, _body = wait_for_health(port, lambda _c, body: len(body.get("assigned", [])) == 2,
                                      timeout_s=40, workers=workers)
        with GroupProgress(kafka, name, topic) as group:
            group.wait_end(workers=workers)
        assert workers.stop(f"{name}-2") == 0, workers.log(f"{name}-2")
    return back - started


@pytest.mark.fault_cases("runtime", short=["kafka"], long=["faust", "kafka"])
def test_static_membership_gives_a_killed_worker_its_partitions_back_at_once(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path, fault_rng: random.Random, runtime: str,
) -> None:
    topic = new_topic("orders", partitions=2, config=BIG_RECORDS)
    topology, path = make_topology(unique_id, topic, tmp_path)
    stream = produce_fault_stream(kafka_bootstrap, topic, 1000, fault_rng, entities=40)
    with VersionWatch.sample(redis_url, topology, stream, fault_rng,
                             moving=False) as versions:  # a backlog read at once
        static = _restart_after_kill(kafka_bootstrap, redis_url, path, tmp_path, topic,
                                     f"{unique_id}-s", "--runtime", runtime,
                                     "--instance-id", f"{unique_id}-0")
        dynamic = _restart_after_kill(kafka_bootstrap, redis_url, path, tmp_path, topic,
                                      f"{unique_id}-d", "--runtime", runtime)
        print(f"recovery[{runtime}] restart after kill -9: partitions back after "
              f"{static:.1f} s with --instance-id, {dynamic:.1f} s without")
        assert static < 6.0, static  # process start and join; no wait for the old session
        assert dynamic > static + 4.0, (static, dynamic)  # the 10 s session timeout
        print(assert_survived(kafka_bootstrap, redis_url, topology, versions=versions,
                              hostile=stream.hostile))
