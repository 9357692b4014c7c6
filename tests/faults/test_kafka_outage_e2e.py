"""The broker goes away mid-stream, on a broker of this test alone, while records flow.

The worker must wait, not die; say so in ``/health``; resume when the broker is back; and
end as an uninterrupted run would (``harness.assert_survived``: the independent fault run
once found duplicate dead letters after outages of about 30 s: letters still queued in the
producer were produced again).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from harness import (
    BIG_RECORDS,
    COMMIT_OFTEN,
    GroupProgress,
    LiveStream,
    PrivateKafka,
    VersionWatch,
    Workers,
    assert_survived,
    free_port,
    get_health,
    make_topology,
    wait_for_health,
    worker_cmd,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]

UNHEALTHY_AFTER_S = 5.0


@pytest.fixture
def private_kafka(tmp_path: Path, redis_url: str) -> Iterator[PrivateKafka]:
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    with PrivateKafka(tmp_path, port) as kafka:
        yield kafka


@pytest.mark.fault_cases(
    "runtime,outage_s,membership", short=[("faust", 30, "dynamic")],
    long=[("faust", 30, "dynamic"), ("faust", 120, "dynamic"), ("kafka", 30, "dynamic"),
          ("kafka", 120, "dynamic"), ("kafka", 30, "static")])
def test_broker_down_mid_stream(
    private_kafka: PrivateKafka, redis_url: str, unique_id: str, tmp_path: Path,
    fault_rng: random.Random, runtime: str, outage_s: int, membership: str,
) -> None:
    """``membership``: ``static`` runs the worker with ``--instance-id``. (The kafka runtime
    resumes ~10 s after the broker returns without it: librdkafka drops its member id when
    its session times out during the outage, and the restarted coordinator, which reloads the
    old member, waits out that member's 10 s session before the new one gets partitions.)"""
    kafka = private_kafka.bootstrap
    topic = f"{unique_id}-orders"
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(topic, 3, 1, config=BIG_RECORDS)])[topic].result(30)
    topology, path = make_topology(unique_id, topic, tmp_path)
    stream = LiveStream(kafka, topic, 40_000, fault_rng, seconds=outage_s + 60)
    port = free_port()
    static = ("--instance-id", f"{unique_id}-0") if membership == "static" else ()
    with (stream, VersionWatch.sample(redis_url, topology, stream, fault_rng) as versions,
          Workers(tmp_path, worker_env(kafka, redis_url)) as workers):
        worker = workers.start("worker", worker_cmd(
            path, tmp_path / "state", "--runtime", runtime, "--batch-size", "200",
            "--metrics-port", str(port), "--unhealthy-after", str(UNHEALTHY_AFTER_S),
            *static, *COMMIT_OFTEN))
        with GroupProgress(kafka, f"streamfeat.{unique_id}", topic) as group:
            group.wait(workers=workers)
            time.sleep(fault_rng.uniform(0.0, 5.0))
            assert stream.running, "the outage must come mid-stream"
            stalled, _total = group.done()
        private_kafka.stop()
        down = time.time()
        red, body = wait_for_health(port, lambda code, b: code == 503,
                                    timeout_s=UNHEALTHY_AFTER_S + 20, workers=workers)
        assert "kafka" in body.get("failing", {}), body
        time.sleep(max(0.0, outage_s - (time.time() - down)))
        assert worker.poll() is None, "the worker must wait for Kafka, not die:\n" + (
            workers.log("worker"))
        private_kafka.start()
        back = time.time()
        green, _body = wait_for_health(port, lambda code, b: code == 200, timeout_s=120,
                                       workers=workers)
        with GroupProgress(kafka, f"streamfeat.{unique_id}", topic) as group:
            before = max(group.done()[0], stalled)
            group.wait(above=before, timeout_s=120, workers=workers)
            resumed = time.time()
            print(f"recovery[{runtime}] broker down {outage_s} s ({membership} membership): "
                  f"/health 503 after "
                  f"{red - down:.1f} s; back: /health 200 after {green - back:.1f} s, "
                  f"progress after {resumed - back:.1f} s")
            stream.finish()
            group.wait_end(workers=workers)
        assert workers.stop("worker") == 0, workers.log("worker")
        assert get_health(port)[0] == 0  # the worker is gone
        print(assert_survived(kafka, redis_url, topology, versions=versions,
                              hostile=stream.hostile))
