"""Redis away mid-stream, on a redis-server of the test's own: shut down (its data saved)
for a while, or frozen (SIGSTOP: connections hang, nothing answers) while records flow.

The worker must wait, not die; say so in ``/health`` within its threshold; resume when Redis
is back; and end as an uninterrupted run would (``harness.assert_survived``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamfeat.runtime.health import IDLE_AFTER_S
from streamfeat.runtime.health import UNHEALTHY_AFTER_S as DEFAULT_THRESHOLD_S

from harness import (
    BIG_RECORDS,
    COMMIT_OFTEN,
    DEFAULT_RUNTIME,
    GroupProgress,
    LiveStream,
    PrivateRedis,
    VersionWatch,
    Workers,
    assert_survived,
    free_port,
    make_topology,
    wait_for_health,
    worker_cmd,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]

UNHEALTHY_AFTER_S = 5.0


@pytest.mark.fault_cases("runtime,outage_s", short=[(DEFAULT_RUNTIME, 10)],
                         long=[("faust", 10), ("faust", 60), ("kafka", 10), ("kafka", 60)])
def test_redis_shut_down_mid_stream(
    kafka_bootstrap: str, new_topic: Callable[..., str], unique_id: str, tmp_path: Path,
    fault_rng: random.Random, runtime: str, outage_s: int,
) -> None:
    topic = new_topic("orders", partitions=2, config=BIG_RECORDS)
    topology, path = make_topology(unique_id, topic, tmp_path)
    stream = LiveStream(kafka_bootstrap, topic, 30_000, fault_rng, seconds=outage_s + 40)
    port = free_port()
    with (PrivateRedis(tmp_path) as redis, stream,
          VersionWatch.sample(redis.url, topology, stream, fault_rng) as versions,
          Workers(tmp_path, worker_env(kafka_bootstrap, redis.url)) as workers,
          GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
        worker = workers.start("worker", worker_cmd(
            path, tmp_path / "state", "--runtime", runtime, "--batch-size", "300",
            "--metrics-port", str(port), "--unhealthy-after", str(UNHEALTHY_AFTER_S),
            *COMMIT_OFTEN))
        group.wait(workers=workers)
        time.sleep(fault_rng.uniform(0.0, 5.0))
        assert stream.running, "the outage must come mid-stream"
        redis.shutdown()
        down = time.time()
        red, body = wait_for_health(port, lambda code, _b: code == 503,
                                    timeout_s=UNHEALTHY_AFTER_S + 10, workers=workers)
        assert "redis" in body["failing"], body
        time.sleep(max(0.0, outage_s - (time.time() - down)))
        assert worker.poll() is None, "the worker must wait for Redis, not die:\n" + (
            workers.log("worker"))
        stalled, _total = group.done()
        redis.start()
        back = time.time()
        green, _body = wait_for_health(port, lambda code, _b: code == 200, timeout_s=60,
                                       workers=workers)
        group.wait(above=stalled, workers=workers)
        resumed = time.time()
        print(f"recovery[{runtime}] Redis shut down {outage_s} s: /health 503 after "
              f"{red - down:.1f} s; back: /health 200 after {green - back:.1f} s, progress "
              f"after {resumed - back:.1f} s")
        stream.finish()
        group.wait_end(workers=workers)
        assert workers.stop("worker") == 0, workers.log("worker")
        print(assert_survived(kafka_bootstrap, redis.url, topology, versions=versions,
                              hostile=stream.hostile))


@pytest.mark.fault_cases("runtime,freeze_s", short=[], long=[("faust", 40), ("kafka", 40)])
def test_redis_frozen_mid_stream(
    kafka_bootstrap: str, new_topic: Callable[..., str], unique_id: str, tmp_path: Path,
    fault_rng: random.Random, runtime: str, freeze_s: int,
) -> None:
    """Redis frozen 40 s while records flow (the issue's case: /health never turned red):
    red within the default threshold (10 s) once the worker is seen stuck (idle 2 s: the PING
    probe runs) plus polling slack, and all exact after."""
    topic = new_topic("orders", partitions=2, config=BIG_RECORDS)
    topology, path = make_topology(unique_id, topic, tmp_path)
    stream = LiveStream(kafka_bootstrap, topic, 30_000, fault_rng, seconds=freeze_s + 40)
    port = free_port()
    with (PrivateRedis(tmp_path) as redis, stream,
          VersionWatch.sample(redis.url, topology, stream, fault_rng) as versions,
          Workers(tmp_path, worker_env(kafka_bootstrap, redis.url)) as workers,
          GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
        workers.start("worker", worker_cmd(
            path, tmp_path / "state", "--runtime", runtime, "--batch-size", "300",
            "--metrics-port", str(port), *COMMIT_OFTEN))
        group.wait(workers=workers)
        wait_for_health(port, lambda code, _b: code == 200, workers=workers)
        time.sleep(fault_rng.uniform(0.0, 5.0))
        assert stream.running, "the freeze must come mid-stream"
        redis.freeze()
        frozen = time.time()
        red, body = wait_for_health(port, lambda code, _b: code == 503, timeout_s=freeze_s,
                                    workers=workers)
        assert set(body["failing"]) == {"redis"}, body
        assert red - frozen < DEFAULT_THRESHOLD_S + IDLE_AFTER_S + 1.5, red - frozen
        time.sleep(max(0.0, freeze_s - (time.time() - frozen)))
        stalled, _total = group.done()
        redis.thaw()
        thawed = time.time()
        green, _body = wait_for_health(port, lambda code, _b: code == 200, timeout_s=60,
                                       workers=workers)
        group.wait(above=stalled, workers=workers)
        resumed = time.time()
        print(f"recovery[{runtime}] Redis frozen {freeze_s} s mid-stream: /health 503 after "
              f"{red - frozen:.1f} s; thawed: /health 200 after {green - thawed:.1f} s, "
              f"progress after {resumed - thawed:.1f} s")
        stream.finish()
        group.wait_end(workers=workers)
        assert workers.stop("worker") == 0, workers.log("worker")
        print(assert_survived(kafka_bootstrap, redis.url, topology, versions=versions,
                              hostile=stream.hostile))
