"""``/health`` tells the truth: per-dependency clocks, thresholds, live and ready; no broker."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from memory import Journal, MemoryDeadLetters, MemoryRedis

from streamfeat.metrics import Metrics, MetricsServer
from streamfeat.runtime import WorkerConfig
from streamfeat.runtime.consumers import MemoryConsumer, MemoryLog
from streamfeat.runtime.health import Health, Probe
from streamfeat.runtime.worker import Worker
from streamfeat.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def health(clock: Clock, **kw: Any) -> Health:
    return Health(Metrics(), clock=clock, **kw)


def test_a_dependency_is_unhealthy_only_after_the_threshold() -> None:
    clock = Clock()
    h = health(clock)
    h.failed("kafka", "all brokers down", source="client")
    clock.now += 10.0
    assert h.healthy() and h.unhealthy() == []
    clock.now += 0.5
    assert not h.healthy() and h.unhealthy() == ["kafka"]
    h.ok("kafka", source="client")
    assert h.healthy() and h.failing() == {}


def test_the_clock_runs_from_the_first_failure_not_the_last() -> None:
    clock = Clock()
    h = health(clock, unhealthy_after_s=5)
    for _ in range(7):
        h.failed("redis", "timeout", source="probe")
        clock.now += 1
    assert h.failing()["redis"].since == 1_000.0
    assert h.unhealthy() == ["redis"]


def test_a_redis_success_does_not_clear_kafka() -> None:
    clock = Clock()
    h = health(clock)
    h.failed("kafka", "broker down", source="client")
    h.failed("redis", "connection refused", source="write")
    clock.now += 11
    h.ok("redis", source="write")
    assert h.unhealthy() == ["kafka"]
    assert set(h.failing()) == {"kafka"}
    assert h.retrying_since == 1_000.0


def test_a_ping_that_answers_does_not_hide_writes_that_fail() -> None:
    clock = Clock()
    h = health(clock)
    h.failed("redis", "READONLY You can't write against a read only replica", source="write")
    clock.now += 6
    h.ok("redis", source="probe")  # PING answers: Redis is up, yet writes fail
    clock.now += 6
    assert h.unhealthy() == ["redis"]
    assert h.failing()["redis"].since == 1_000.0
    h.ok("redis", source="write")
    assert h.healthy()


def test_one_dependency_failing_from_two_sources_counts_from_the_earliest() -> None:
    clock = Clock()
    h = health(clock)
    h.failed("kafka", "dlq delivery failed", source="dlq")
    clock.now += 4
    h.failed("kafka", "metadata timed out", source="client")
    failure = h.failing()["kafka"]
    assert failure.since == 1_000.0 and failure.error == "metadata timed out"
    h.ok("kafka", source="dlq")
    assert h.failing()["kafka"].since == 1_004.0


def test_retrying_counts_and_keeps_the_loop_live() -> None:
    clock = Clock()
    h = health(clock, stuck_after_s=60)
    clock.now += 59
    assert h.live()
    clock.now += 2
    assert not h.live() and not h.healthy()
    h.retrying("redis", 0, ConnectionError("refused"), source="write")  # waiting, not stuck
    assert h.live()
    assert h.metrics.retries.labels("redis")._value.get() == 1
    clock.now += 61
    assert not h.live()
    h.beat()
    assert h.live()


def test_ready_needs_a_join_and_healthy_dependencies_and_no_fence() -> None:
    clock = Clock()
    h = health(clock)
    assert not h.ready(joined=False)
    assert h.ready(joined=True)
    h.failed("snapshots", "disk full", source="orders[0]")
    assert h.ready(joined=True)  # not yet failing for long
    clock.now += 11
    assert not h.ready(joined=True)
    h.ok("snapshots", source="orders[0]")
    h.fence("orders", 3)
    assert not h.ready(joined=True) and not h.healthy()


def test_report_names_the_failing_dependency_and_keeps_the_old_keys() -> None:
    clock = Clock()
    h = health(clock)
    h.failed("kafka", KafkaException("_TRANSPORT: all brokers down"), source="client")
    clock.now += 12.5
    body = h.report(["orders[0]"], last_batch=990.0, joined=True)
    json.dumps(body)  # served as JSON
    assert body["healthy"] is False and body["live"] is True and body["ready"] is False
    assert body["failing"] == {"kafka": {
        "since": 1_000.0, "for_s": 12.5, "error": "_TRANSPORT: all brokers down",
        "unhealthy": True}}
    assert body["retrying_since"] == 1_000.0
    assert body["fenced_by_generation"] == {}
    assert body["assigned"] == ["orders[0]"]
    assert body["last_batch_age_s"] == 22.5
    h.ok("kafka", source="client")
    body = h.report([], last_batch=990.0, joined=True)
    assert body["healthy"] is True and body["ready"] is True
    assert body["failing"] == {} and body["retrying_since"] is None


def test_a_probe_runs_only_when_idle_and_not_too_often() -> None:
    clock = Clock()
    h = health(clock)
    calls: list[float] = []
    fail = [True]

    def check() -> None:
        calls.append(clock.now)
        if fail[0]:
            raise TimeoutError("no answer")

    probe = Probe(h, "redis", check, every_s=3.0, idle_after_s=2.0, clock=clock)
    assert not probe.run_if_due(last_batch=clock.now - 1)  # a batch a second ago: busy
    assert probe.run_if_due(last_batch=clock.now - 2.5)
    assert h.failing()["redis"].error == "no answer"
    clock.now += 1
    assert not probe.run_if_due(last_batch=0.0)  # probed a second ago
    clock.now += 2
    fail[0] = False
    assert probe.run_if_due(last_batch=0.0)
    assert calls == [1_000.0, 1_003.0]
    assert h.failing() == {}


def test_a_probe_that_times_out_counts_from_when_it_was_sent() -> None:
    """A PING unanswered for its 2 s timeout: Redis has not answered since the PING was sent,
    so the threshold runs from then (a 10 s threshold is not 12 s)."""
    clock = Clock()
    h = health(clock, unhealthy_after_s=10)

    def check() -> None:
        clock.now += 2.0  # the probe's timeout
        raise TimeoutError("no answer")

    probe = Probe(h, "redis", check, every_s=3.0, idle_after_s=2.0, clock=clock)
    assert probe.run_if_due(last_batch=clock.now - 2.5)
    assert h.failing()["redis"].since == 1_000.0
    clock.now = 1_010.5
    assert h.unhealthy() == ["redis"]


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_three_endpoints_answer_by_their_own_key() -> None:
    status: dict[str, Any] = {"healthy": True, "live": True, "ready": False}
    server = MetricsServer(Metrics(), 0, lambda: status)
    server.start()
    try:
        assert _get(server.port, "/health")[0] == 200
        assert _get(server.port, "/health/live")[0] == 200
        code, body = _get(server.port, "/health/ready")
        assert code == 503 and body == status
        status.update(healthy=False, live=False, ready=True)
        assert _get(server.port, "/health")[0] == 503
        assert _get(server.port, "/health/live/")[0] == 503
        assert _get(server.port, "/health/ready?verbose=1")[0] == 200
    finally:
        server.stop()


def test_an_idle_worker_whose_broker_is_unreachable_turns_unhealthy(tmp_path: Path) -> None:
    """The probe logic of the worker loop, over the in-memory consumer: records stop, the
    probe fails, /health names kafka after the threshold, and clears when it answers."""
    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    log = MemoryLog()
    log.create(topology.source.topic, 2)
    consumer = MemoryConsumer(log)
    journal = Journal()
    redis = MemoryRedis(journal)
    config = WorkerConfig(topologies=[topology], kafka="memory", redis="memory",
                          state_dir=tmp_path / "state", unhealthy_after_s=0.3,
                          poll_timeout_s=0.01)
    worker = Worker(config, consumer=consumer, sinks={topology.name: redis.sink(topology.name)},
                    dead_letters=MemoryDeadLetters(journal))
    worker.kafka_probe.every_s = 0.05
    worker.kafka_probe.idle_after_s = 0.1
    seen: list[dict[str, Any]] = []
    red: list[dict[str, Any]] = []

    def watch() -> None:
        deadline = time.time() + 20
        while time.time() < deadline and not worker._stopping:
            seen.append(worker._health())
            time.sleep(0.02)

    def scenario() -> None:
        # first a member of the group (a loaded host may take longer than the 0.3 s after
        # which a worker not yet assigned is unhealthy for that reason), then Kafka goes
        deadline = time.time() + 10
        while time.time() < deadline and not worker._health()["joined"]:
            time.sleep(0.02)
        time.sleep(0.3)
        seen.clear()
        consumer.unreachable = KafkaException("_TRANSPORT: Connection refused")
        deadline = time.time() + 10
        while time.time() < deadline and "kafka" not in worker.health.unhealthy():
            time.sleep(0.02)
        red.append(worker._health())  # what /health answers now (the watcher, on a loaded
        time.sleep(0.3)               # host, may sample too rarely to see it)
        consumer.unreachable = None
        deadline = time.time() + 10
        while time.time() < deadline and worker.health.failing():
            time.sleep(0.02)
        worker.stop()

    threads = [threading.Thread(target=watch), threading.Thread(target=scenario)]
    for t in threads:
        t.start()
    signal_safe_run(worker)
    for t in threads:
        t.join(30)
    assert red and not red[0]["healthy"], f"never unhealthy: {red}"
    assert red[0]["failing"]["kafka"]["error"] == "_TRANSPORT: Connection refused"
    assert red[0]["ready"] is False and red[0]["joined"] is True
    watched = [s for s in seen if not s["healthy"]]
    assert all(s["failing"]["kafka"]["error"] == "_TRANSPORT: Connection refused"
               for s in watched), watched
    after = seen[seen.index(watched[0]):] if watched else seen
    assert worker.health.failing() == {}
    assert any(s["healthy"] and s["failing"] == {} for s in after) or worker.health.healthy()


def signal_safe_run(worker: Worker) -> None:
    """``Worker.run`` off the main thread would fail at ``signal.signal``: run it here (the
    test runs on the main thread) with the handlers restored afterwards."""
    import signal

    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        assert worker.run() == 0
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])


@pytest.mark.parametrize("path", ["/metrics", "/nothing"])
def test_other_paths_are_unchanged(path: str) -> None:
    server = MetricsServer(Metrics(), 0, lambda: {"healthy": True})
    server.start()
    try:
        try:
            code = urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}",
                                          timeout=5).status
        except urllib.error.HTTPError as e:
            code = e.code
        assert code == (200 if path == "/metrics" else 404)
    finally:
        server.stop()
