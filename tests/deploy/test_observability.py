"""What ships for operating streamfeat holds together (issues #16, #17):

- the alerts and the scrape configuration pass ``promtool check``, and the alerts' unit tests
  (deploy/prometheus/alerts_test.yml) pass ``promtool test rules``: each alert fires on its
  series and not on the near misses;
- a real Prometheus (Debian's package, through deploy/local/prometheus) scrapes, with the
  shipped prometheus.yml (only the targets and the intervals rewritten), every process it
  has a job for: a real worker (value monitoring every second, against a baseline stored
  with ``streamfeat monitor baseline``, fed a trickle of orders), ``streamfeat serve``,
  ``streamfeat monitor verify`` and a model server's registry holding a ``Client``'s fetch
  metrics. Their series answer through Prometheus's HTTP API; every alert rule and every
  dashboard query evaluates there without error (the queries of value monitoring,
  consistency and serving with series); every metric name they use is one its process
  exports; the drift, null and serve-error alerts go pending on real series, and the
  monitoring-stopped, consistency and verify-stale ones stay quiet;
- the Dockerfile, compose file and Kubernetes manifests: every ``streamfeat`` command line
  in them parses with the CLI's own parser, the YAML parses, probes ask paths the metrics
  server serves, and the ports agree from one file to the next;
- where a Docker engine answers, the image builds and runs (skipped elsewhere: the machines
  of this project have no engine).

promtool and prometheus are installed by ``deploy/local/prometheus install`` when missing
(never skipped for their absence).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
import yaml
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from streamfeat.cli import build_parser
from streamfeat.client import Client
from streamfeat.errors import SinkError
from streamfeat.metrics import MALFORMED_REASONS, Metrics, MetricsServer
from streamfeat.monitoring import ValueMonitor, VerifyJob
from streamfeat.serving.metrics import ServeMetrics
from streamfeat.sinks import version
from streamfeat.topology import TopologyDef, load_topology
from streamfeat.topology.loader import load_topology_text

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
SCRIPT = str(DEPLOY / "local" / "prometheus")
DASHBOARD = DEPLOY / "grafana" / "streamfeat.json"
OPERATIONS = ROOT / "docs" / "operations.md"
METRIC = re.compile(r"\bstreamfeat_[a-z0-9_]+\b")


# --------------------------------------------------------------------------- helpers

@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian's prometheus package, installed when missing."""
    done = subprocess.run([SCRIPT, "install"], capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, done.stderr
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return found["PROMTOOL"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    """Every query of the dashboard (panels, rows' panels and template variables)."""
    board = json.loads(DASHBOARD.read_text())
    panels = [*board["panels"], *(p for row in board["panels"] for p in row.get("panels", []))]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def exported_names(exposition: str) -> set[str]:
    """The series names a worker's /metrics declares, by type: a counter ``x`` is stored
    as ``x_total``, a histogram as ``x_bucket``, ``x_sum`` and ``x_count``, a gauge as
    itself. Families without a sample yet count (declared with ``# TYPE``)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _hash, _type, name, kind = line.split()
            if kind == "counter":
                names.add(name if name.endswith("_total") else f"{name}_total")
            elif kind == "histogram":
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            else:
                names.add(name)
    return names


def used_names() -> dict[str, set[str]]:
    """Metric name -> where it is used (alert names, dashboard expressions)."""
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in METRIC.findall(rule["expr"]):
            used.setdefault(name, set()).add(rule["alert"])
    for expr in dashboard_exprs():
        for name in METRIC.findall(expr):
            used.setdefault(name, set()).add("dashboard")
    return used


# --------------------------------------------------------------------------- promtool

def test_promtool_checks_the_rules_and_the_config(promtool: str) -> None:
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]):
        done = subprocess.run([promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 16 rules found" in subprocess.run(
        [promtool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS_DIR, capture_output=True,
        text=True, timeout=60, check=True).stdout


def test_the_alerts_unit_tests_pass(promtool: str) -> None:
    done = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS_DIR,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_silent_and_has_a_runbook() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in OPERATIONS.read_text().splitlines() if line.startswith("#")}
    rules = alert_rules()
    assert len(rules) == 16
    for rule in rules:
        name = rule["alert"]
        assert name in fired and name in silent, f"{name}: not tested both ways"
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["for"], name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        assert notes["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert name.lower() in headings, f"docs/operations.md has no runbook heading {name}"


# --------------------------------------------------------------------------- real servers

def _query(address: str, promql: str) -> list[dict[str, Any]]:
    """An instant query through Prometheus's HTTP API at ``host:port`` (raises on an error
    answer)."""
    full = f"http://{address}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(full, timeout=10) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{promql}: {e.code} {e.read().decode()}") from e
    assert body["status"] == "success", (promql, body)
    return list(body["data"]["result"])


def _wait(what: str, done: Callable[[], Any], timeout_s: float = 90) -> Any:
    deadline = time.time() + timeout_s
    last: Any = None
    while time.time() < deadline:
        with contextlib.suppress(OSError, AssertionError, IndexError, KeyError, ValueError):
            last = done()
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


def _metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def _total(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((f"{name}{{", f"{name} ")))


TOPOLOGY = """\
version: 1
name: {name}
source: {{topic: {topic}, key: user_id, timestamp: ts}}
lateness: 1m
freshness: 2s
features:
  - {{name: orders, agg: count, windows: [5m, 1h]}}
  - {{name: amount_sum, agg: sum, field: amount, windows: [1h]}}
  - {{name: tip_mean, agg: mean, field: tip, windows: [5m]}}
"""
EVENTS = 3000
MONITOR_INTERVAL_S = 1
TRICKLE_RATE = 400  # orders a second once caught up: over 200 values in each 1 s interval
# The shipped scrape jobs (prometheus.yml) and their placeholder targets.
TARGETS = {"streamfeat": "worker:9100", "streamfeat-serve": "serve:8000",
           "streamfeat-verify": "verify:9101", "model": "model:8080"}
# Which process exports a metric family, by its name's prefix (the worker: the rest).
EXPORTERS = {"streamfeat_serve_": "serve", "streamfeat_verify_": "verify",
             "streamfeat_client_": "client"}
# The value monitoring series that carry a field label (the dashboard filters them by $field).
PER_FIELD = re.compile(r"\bstreamfeat_value_(?:count|null_ratio|mean|stddev|quantile|psi|"
                       r"quantile_distance|baseline_null_ratio)\b")
# The families of value monitoring, consistency and serving (issues #16, #17): each name of
# them used must answer through Prometheus with a series of the test's topologies.
NEW_FAMILIES = re.compile(r"streamfeat_(value|verify|serve|client)_")


def exporter(name: str) -> str:
    return next((who for prefix, who in EXPORTERS.items() if name.startswith(prefix)),
                "worker")


def produce_orders(kafka: str, topic: str, n: int) -> None:
    """``n`` order events over 50 users, one every 0.5 s of event time ending now; about
    2 % late (10 minutes behind, beyond the topology's 1 m lateness) and 3 % malformed of
    three kinds (not JSON, no key, an amount that is not a number). No event has a tip:
    ``tip_mean`` is written as absent (null)."""
    rng = random.Random(16)
    producer = Producer({"bootstrap.servers": kafka, "linger.ms": 10})
    start = int(time.time() * 1000) - n * 500
    for i in range(n):
        user = f"u{rng.randrange(50)}"
        ts = start + i * 500
        if rng.random() < 0.02:
            ts -= 600_000
        event: dict[str, Any] = {"user_id": user, "ts": ts, "amount": rng.randint(1, 500)}
        value = json.dumps(event).encode()
        if rng.random() < 0.03:
            value = rng.choice([b"{not json", json.dumps({"ts": ts}).encode(),
                                json.dumps({**event, "amount": "12"}).encode()])
        producer.produce(topic, key=user.encode(), value=value, timestamp=max(ts, 0))
        producer.poll(0)
    assert producer.flush(60) == 0


class Trickle:
    """Orders of 400 other users (``n0`` ...), stamped now, at ``rate`` a second on a thread
    while the block runs: a caught-up worker's monitoring intervals hold values (without
    new events they would be empty, and its value gauges with them)."""

    def __init__(self, kafka: str, topic: str, rate: float) -> None:
        self.kafka, self.topic, self.rate = kafka, topic, rate
        self.produced = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trickle", daemon=True)
        self._failed: BaseException | None = None

    def __enter__(self) -> Trickle:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        if self._failed is not None:
            raise AssertionError("the trickle of orders failed") from self._failed

    def _run(self) -> None:
        try:
            producer = Producer({"bootstrap.servers": self.kafka, "linger.ms": 5})
            rng = random.Random(17)
            started = time.monotonic()
            while not self._stop.wait(0.05):
                due = int((time.monotonic() - started) * self.rate)
                now = int(time.time() * 1000)
                for _ in range(due - self.produced):
                    user = f"n{rng.randrange(400)}"
                    event = {"user_id": user, "ts": now, "amount": rng.randint(1, 500)}
                    producer.produce(self.topic, key=user.encode(),
                                     value=json.dumps(event).encode(), timestamp=now)
                    self.produced += 1
                producer.poll(0)
            assert producer.flush(30) == 0
        except BaseException as e:  # said by __exit__, in the test's thread
            self._failed = e


def write_training_set(path: Path) -> None:
    """A baseline far from what the worker writes: sums of amounts of 0-10 (theirs are
    hundreds), tips always present (the orders have none). No column for the order counts:
    they get no baseline, hence no drift metrics."""
    rng = random.Random(3)
    pq.write_table(pa.table({"amount_sum__1h": [rng.uniform(0, 10) for _ in range(1000)],
                             "tip_mean__5m": [rng.uniform(0, 5) for _ in range(1000)]}), path)


class Processes:
    """``streamfeat`` commands as subprocesses, each logging to a file; on leaving, those
    still running get SIGTERM, and every one must have exited 0."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str | Path) -> None:
        with (self.folder / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "streamfeat.cli", *map(str, args)], env=self.env,
                stdout=log, stderr=subprocess.STDOUT)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]

    def wait(self, name: str, timeout_s: float = 120) -> None:
        assert self.procs[name].wait(timeout_s) == 0, self.log(name)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_exc: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        failed = {name: self.log(name) for name, proc in self.procs.items()
                  if proc.returncode != 0}
        assert not failed, failed


@dataclass(frozen=True)
class System:
    """What the observability test runs: a worker (caught up on :data:`EVENTS` orders, value
    monitoring every second against a baseline), ``streamfeat serve`` of its topology and of
    ``broken`` (a topology served only), ``streamfeat monitor verify`` of it, and a model
    server's registry (``Client(metrics=registry)``, served over HTTP)."""

    topology: TopologyDef
    broken: TopologyDef
    kafka: str
    topic: str
    ports: dict[str, int]  # by scrape job
    registry: CollectorRegistry


@pytest.fixture
def ports() -> dict[str, int]:
    """A free port for each scrape job's process."""
    return {job: _free_port() for job in TARGETS}


@pytest.fixture
def system(kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str],
           unique_id: str, tmp_path: Path, ports: dict[str, int]) -> Iterator[System]:
    """The processes of :class:`System`, started once the worker has caught up and the
    baseline is stored; each must exit 0 on SIGTERM at the end. Their Redis keys are
    deleted after."""
    topic = new_topic("orders", partitions=2)
    path = tmp_path / f"{unique_id}.yaml"
    path.write_text(TOPOLOGY.format(name=unique_id, topic=topic))
    broken_path = tmp_path / f"{unique_id}b.yaml"
    broken_path.write_text(TOPOLOGY.format(name=f"{unique_id}b", topic=f"{topic}b"))
    topology, broken = load_topology(path), load_topology(broken_path)
    training = tmp_path / "training.parquet"
    write_training_set(training)
    snapshots = tmp_path / "snap"
    runtime = os.environ.get("STREAMFEAT_RUNTIME")
    env = {**os.environ, "STREAMFEAT_KAFKA": kafka_bootstrap, "STREAMFEAT_REDIS": redis_url}
    registry = CollectorRegistry()
    try:
        with Processes(tmp_path, env) as procs:
            procs.start("baseline", "monitor", "baseline", path, "--training-set", training)
            procs.start("serve", "serve", path, broken_path, "--port",
                        str(ports["streamfeat-serve"]))
            produce_orders(kafka_bootstrap, topic, EVENTS)
            procs.start("worker", "worker", path, "--state-dir", tmp_path / "state",
                        "--snapshot-dir", snapshots, "--snapshot-every", "1",
                        "--monitor-interval", str(MONITOR_INTERVAL_S),
                        "--metrics-port", str(ports["streamfeat"]),
                        *(["--runtime", runtime] if runtime else []))
            model, _thread = start_http_server(ports["model"], addr="127.0.0.1",
                                               registry=registry)
            try:
                _wait("the worker consumed every record", lambda: _total(
                    _metrics_text(ports["streamfeat"]), "streamfeat_events_consumed_total")
                    == EVENTS, 120)
                procs.wait("baseline")
                procs.start("verify", "monitor", "verify", path, "--snapshot-dir", snapshots,
                            "--every", "2", "--metrics-port", str(ports["streamfeat-verify"]))
                yield System(topology, broken, kafka_bootstrap, topic, ports, registry)
            finally:
                model.shutdown()
                model.server_close()
    finally:
        with redis.Redis.from_url(redis_url) as conn:
            for name in (topology.name, broken.name):
                keys = [*conn.scan_iter(match=f"sf:{name}:*", count=1000),
                        *conn.scan_iter(match=f"sfmeta:{name}:*", count=1000)]
                if keys:
                    conn.unlink(*keys)


@pytest.fixture
def prometheus(ports: dict[str, int], tmp_path: Path) -> Iterator[str]:
    """deploy/prometheus/prometheus.yml and alerts.yml, run by Debian's Prometheus on
    loopback, with each job's placeholder target replaced by the address of the test's
    process (``ports``), and the scrape and evaluation intervals of 15 s made 1 s (the test
    would wait for them); yields its host:port. Started before the processes: it takes a few
    seconds to scrape its first targets."""
    shipped = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    jobs = {job["job_name"]: job["static_configs"][0]["targets"]
            for job in yaml.safe_load(shipped)["scrape_configs"]}
    assert jobs == {job: [target] for job, target in TARGETS.items()}
    config = shipped
    for job, target in TARGETS.items():
        assert config.count(f'"{target}"') == 1, target
        config = config.replace(f'"{target}"', f'"127.0.0.1:{ports[job]}"')
    for key in ("scrape_interval", "evaluation_interval"):
        assert config.count(f"{key}: 15s") == 1, key
        config = config.replace(f"{key}: 15s", f"{key}: 1s")
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "prometheus.yml").write_text(config)
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", folder / "alerts.yml")
    port = _free_port()
    env = {**os.environ, "STREAMFEAT_LOCAL_DIR": str(tmp_path / "local")}
    done = subprocess.run([SCRIPT, "start", str(folder / "prometheus.yml"), str(port)], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    pid_file = tmp_path / "local" / "run" / f"prometheus-{port}.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    try:
        assert done.returncode == 0, done.stderr
        assert f"PROMETHEUS_URL=http://127.0.0.1:{port}" in done.stdout
        again = subprocess.run([SCRIPT, "start", str(folder / "prometheus.yml"), str(port)],
                               env=env, capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 0 and "already running" in again.stderr, again.stderr
        yield f"127.0.0.1:{port}"
    finally:
        stop = subprocess.run([SCRIPT, "stop", str(port)], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        if pid is not None and _running(pid):  # never leave it behind, whatever the script did
            os.kill(pid, signal.SIGKILL)
        assert stop.returncode == 0, stop.stderr
        assert pid is not None and not pid_file.exists()


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not reaped, does not)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _http(port: int, path: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    """GET ``path`` (POST ``body`` as JSON) on 127.0.0.1:``port``: status and body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310 - loopback
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _alerts(address: str, topology: str) -> dict[str, dict[str, str]]:
    """The alerts of ``topology`` pending or firing: alert name -> {its ``field`` label (""
    for an alert without one): state}."""
    with urllib.request.urlopen(f"http://{address}/api/v1/alerts", timeout=10) as r:
        alerts = json.loads(r.read())["data"]["alerts"]
    out: dict[str, dict[str, str]] = {}
    for a in alerts:
        labels = a["labels"]
        if labels.get("topology") == topology:
            out.setdefault(labels["alertname"], {})[labels.get("field", "")] = a["state"]
    return out


@pytest.mark.integration
def test_prometheus_scrapes_every_process_and_every_name_used_is_exported(
        prometheus: str, system: System, redis_url: str) -> None:
    ports = system.ports
    topology = system.topology.name
    broken = system.broken.name
    t = f'topology="{topology}"'
    up = _wait("Prometheus scraped the worker", lambda: [
        s for s in _query(prometheus, 'up{job="streamfeat"}') if s["value"][1] == "1"])
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{ports['streamfeat']}"
    # the worker has caught up, but Prometheus's latest scrape may be from before (a second
    # ago at most): the count reaches every event, then it stays there (none counted twice)
    def consumed() -> float:
        return float(_query(prometheus, f"sum(streamfeat_events_consumed_total{{{t}}})")
                     [0]["value"][1])
    _wait(f"Prometheus has all {EVENTS} events consumed", lambda: consumed() >= EVENTS, 30)
    assert consumed() == EVENTS
    bound = _query(prometheus, f"streamfeat_freshness_bound_seconds{{{t}}}")
    assert [float(s["value"][1]) for s in bound] == [2.0]
    def caught_up() -> list[str]:  # the partitions whose lag Prometheus has at 0
        return sorted(s["metric"]["partition"] for s in _query(
            prometheus, f"streamfeat_consumer_lag{{{t}}}") if float(s["value"][1]) == 0)
    _wait("the lag gauges of both partitions at 0", lambda: caught_up() == ["0", "1"], 30)
    assert _query(prometheus, f"streamfeat_healthy{{{t}}}")[0]["value"][1] == "1"
    assert _query(prometheus, 'streamfeat_build_info{runtime=~"faust|kafka"}')
    # malformed records by reason: a known reason each, the worker's own total
    by_reason = _query(prometheus, f"sum by (reason) (streamfeat_events_malformed_total{{{t}}})")
    reasons = {s["metric"]["reason"] for s in by_reason}
    assert reasons and reasons <= set(MALFORMED_REASONS) - {"other"}, reasons
    assert sum(float(s["value"][1]) for s in by_reason) == _total(
        _metrics_text(ports["streamfeat"]), "streamfeat_events_malformed_total") > 0

    # the feature server answers 200s, and 500 for a value no worker wrote (twice: a rate
    # needs the series before the increase); the model server's client reads, one fails
    serve = ports["streamfeat-serve"]
    _wait("streamfeat serve answering", lambda: _http(serve, "/health")[0] == 200, 60)
    users = [f"u{i}" for i in range(10)]
    assert _http(serve, f"/features/{topology}", {"entities": users})[0] == 200
    assert _http(serve, f"/features/{topology}/u1")[0] == 200
    with redis.Redis.from_url(redis_url) as conn:
        conn.hset(system.broken.redis_key("odd"),
                  mapping={"_v": version(0, 0, 0), "amount_sum__1h": "n/a"})
    assert _http(serve, f"/features/{broken}/odd")[0] == 500
    with Client(redis_url, metrics=system.registry) as client:
        for n in range(1, 6):
            assert set(client.get(system.topology, users[:n * 2])) == set(users[:n * 2])
    with Client(f"redis://127.0.0.1:{_free_port()}/0", metrics=system.registry) as down, \
            pytest.raises(SinkError):
        down.get(system.topology, users)
    _wait("Prometheus has the 500", lambda: _query(
        prometheus, f'streamfeat_serve_requests_total{{topology="{broken}",status="500"}}'))
    assert _http(serve, f"/features/{broken}/odd")[0] == 500

    with Trickle(system.kafka, system.topic, TRICKLE_RATE):
        # real series make the alerts that should fire go pending (their `for:` is minutes)
        def active() -> dict[str, dict[str, str]] | None:
            found = _alerts(prometheus, topology)
            return found if {"StreamfeatFeatureDrift", "StreamfeatNullRatioJump"} <= set(
                found) else None
        alerts = _wait("the drift and null alerts pending", active, 60)
        assert "amount_sum__1h" in alerts["StreamfeatFeatureDrift"], alerts
        assert "tip_mean__5m" not in alerts["StreamfeatFeatureDrift"], alerts  # no numbers
        assert set(alerts["StreamfeatNullRatioJump"]) == {"tip_mean__5m"}, alerts
        _wait("StreamfeatServeErrors pending for the broken topology",
              lambda: "StreamfeatServeErrors" in _alerts(prometheus, broken), 30)
        _wait("a verify run that checked entities", lambda: _query(
            prometheus, f"streamfeat_verify_last_success_timestamp_seconds{{{t}}}"), 60)
        # ... and not those that should not
        time.sleep(2)  # evaluated after the verify run's figures were scraped
        quiet = set(_alerts(prometheus, topology)) & {
            "StreamfeatValueMonitoringStopped", "StreamfeatConsistencyLow",
            "StreamfeatVerifyStale", "StreamfeatWorkerUnhealthy"}
        assert not quiet, (quiet, _query(prometheus, "streamfeat_verify_consistency_ratio"))

        # every metric the alerts and the dashboard name is one its process exports ...
        texts = {"worker": _metrics_text(ports["streamfeat"]),
                 "serve": _metrics_text(serve),
                 "verify": _metrics_text(ports["streamfeat-verify"]),
                 "client": generate_latest(system.registry).decode()}
        exported = {who: exported_names(text) for who, text in texts.items()}
        used = used_names()
        missing = {name: (exporter(name), sorted(where)) for name, where in used.items()
                   if name not in exported[exporter(name)]}
        assert not missing, f"not exported by the process named: {missing}"
        # ... and those of the new families have series of the test's topologies
        these = f"{topology}|{broken}"
        series = {s["metric"]["__name__"] for s in _query(
            prometheus, 'group by (__name__) ({__name__=~"streamfeat_(value|verify|serve|'
                        f'client)_.+", topology=~"{these}"}})')}
        new = {name for name in used if NEW_FAMILIES.match(name)}
        assert len(new) >= 20 and new <= series, sorted(new - series)

        # every dashboard query evaluates on the real series (syntax, matching): none errs,
        # and those of the new families answer
        for expr in dashboard_exprs():
            query = (expr.replace("$__rate_interval", "1m").replace("$topology", these)
                     .replace("$field", ".+"))
            grafana = re.fullmatch(r"label_values\((.+), *(\w+)\)", query)  # Grafana's
            if grafana is not None:
                values = {s["metric"].get(grafana[2]) for s in _query(prometheus, grafana[1])}
                expected = {"topology": {topology},
                            "field": set(system.topology.redis_fields())}[grafana[2]]
                assert expected <= values, (expr, values)
                continue
            answer = _query(prometheus, query)
            assert answer or not NEW_FAMILIES.search(expr), f"no series: {query}"
        # ... and so does every alert rule, as Prometheus itself evaluated it
        def rules_evaluated() -> list[dict[str, Any]]:
            with urllib.request.urlopen(f"http://{prometheus}/api/v1/rules", timeout=10) as r:
                groups = json.loads(r.read())["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return rules if rules and all(rule.get("lastEvaluation", "").startswith("2")
                                          and not rule["lastEvaluation"].startswith("0001")
                                          for rule in rules) else []
        rules = _wait("every alert rule evaluated", rules_evaluated)
        assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError"))
                                                         for r in rules if r["health"] != "ok"]


def test_names_are_parsed_with_their_type_suffixes() -> None:
    """The name check itself: a counter is only known with _total, a histogram only with
    its series' suffixes, and a name used bare where Prometheus stores a suffix is caught."""
    metrics = Metrics()
    ValueMonitor([], metrics.registry)  # its families, as a worker's registry has them
    names = exported_names(metrics.exposition().decode())
    assert "streamfeat_events_consumed_total" in names
    assert "streamfeat_events_consumed" not in names
    assert {"streamfeat_event_to_redis_seconds_bucket", "streamfeat_event_to_redis_seconds_sum",
            "streamfeat_event_to_redis_seconds_count"} <= names
    assert "streamfeat_event_to_redis_seconds" not in names
    assert "streamfeat_stream_time_seconds" in names and "streamfeat_stream_time_ms" not in names
    used = used_names()
    assert {"streamfeat_event_to_redis_seconds_bucket", "streamfeat_consumer_lag",
            "streamfeat_healthy", "streamfeat_freshness_bound_seconds"} <= set(used)
    # as declared by each process; the e2e test scrapes them
    serve = ServeMetrics(["orders"]).render().decode()
    verify = CollectorRegistry()
    VerifyJob("orders", lambda run: pytest.fail("never run"), verify, every_s=1)
    client = CollectorRegistry()
    Client("redis://127.0.0.1:9/0", metrics=client).close()  # connects at its first read only
    declared = {"worker": names, "serve": exported_names(serve),
                "verify": exported_names(generate_latest(verify).decode()),
                "client": exported_names(generate_latest(client).decode())}
    assert "streamfeat_value_psi" in names and "streamfeat_value_intervals_total" in names
    assert "streamfeat_client_fetch_errors_total" in declared["client"]
    undeclared = {name: exporter(name) for name in used
                  if name not in declared[exporter(name)]}
    assert not undeclared, undeclared


# --------------------------------------------------------------------------- deploy files

def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/docker/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "docker" / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _parse_cli(argv: list[str], where: str) -> Any:
    """``argv`` (starting with ``streamfeat``) through the CLI's own parser."""
    assert argv[0] == "streamfeat", (where, argv)
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        raise AssertionError(f"{where}: {shlex.join(argv)} does not parse") from exc


def _served(paths: list[str]) -> dict[str, int]:
    """The status the metrics server answers for each path (404: not served)."""
    server = MetricsServer(Metrics(), 0, lambda: {"healthy": True, "live": True,
                                                  "ready": True})
    server.start()
    out = {}
    try:
        for path in paths:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}",
                                            timeout=5) as r:
                    out[path] = r.status
            except urllib.error.HTTPError as e:
                out[path] = e.code
    finally:
        server.stop()
    return out


def test_the_dockerfile() -> None:
    steps = _dockerfile()
    args = dict(steps)
    assert re.fullmatch(r"\$\{PYTHON_IMAGE\}( AS build)?", args["FROM"])
    assert "ARG" in args and args["ARG"].startswith("PYTHON_IMAGE=python:3.11-slim")
    assert sum(1 for w, _ in steps if w == "FROM") == 2  # a wheel stage, a runtime stage
    assert args["USER"].split(":")[0] not in {"0", "root"}
    entrypoint, cmd = json.loads(args["ENTRYPOINT"]), json.loads(args["CMD"])
    ns = _parse_cli([*entrypoint, *cmd], "Dockerfile ENTRYPOINT + CMD")
    assert ns.command == "worker"
    assert args["EXPOSE"] == str(ns.metrics_port)
    health = re.search(r"http://127\.0\.0\.1:(\d+)(/[a-z/]+)", args["HEALTHCHECK"])
    assert health is not None
    assert int(health[1]) == ns.metrics_port
    assert _served([health[2]]) == {health[2]: 200}
    # what the image copies exists, and the ignore file lets it in
    for word, rest in steps:
        if word == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert {"!pyproject.toml", "!README.md", "!streamfeat", "!topologies"} <= set(ignore)


def test_the_build_stage_makes_a_whole_wheel_from_what_it_copies(tmp_path: Path) -> None:
    """Without a Docker engine, the image's first stage as far as it can be run: a wheel
    built from exactly the files the stage copies holds the package data and the
    ``streamfeat`` command the second stage's ENTRYPOINT runs."""
    steps = _dockerfile()
    build = steps[:[i for i, (w, _) in enumerate(steps) if w == "FROM"][1]]
    src = tmp_path / "src"
    src.mkdir()
    for word, rest in build:
        if word == "COPY":
            *sources, dest = rest.split()
            for source in sources:
                target = src / (Path(dest) / Path(source).name if dest.endswith("/")
                                or len(sources) > 1 else dest)
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target,
                                    ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / source, target)
    assert any(w == "RUN" and rest.startswith("pip wheel") for w, rest in build)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "--wheel-dir", str(tmp_path / "out"), "."], cwd=src,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp_path / "out").glob("streamfeat-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"streamfeat/py.typed", "streamfeat/sinks/cas.lua", "streamfeat/cli.py"} <= names
    assert "streamfeat = streamfeat.cli:main" in entry
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "streamfeat").rglob("*.py")}
    assert sources <= names, sorted(sources - names)[:5]


def test_the_compose_file() -> None:
    folder = DEPLOY / "compose"
    compose = yaml.safe_load((folder / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker", "generator", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    docker = dict(_dockerfile())
    default_entry = json.loads(docker["ENTRYPOINT"])
    parsed = {}
    for name in ("worker", "generator"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert (folder / service["build"]["context"] / "deploy/docker/Dockerfile").exists()
        argv = [*service.get("entrypoint", default_entry), *service["command"]]
        parsed[name] = _parse_cli([str(a) for a in argv], f"compose service {name}")
    worker = parsed["worker"]
    assert worker.command == "worker" and parsed["generator"].command == "generate"
    # the feature server and the consistency job, at the targets prometheus.yml scrapes
    for name in ("serve", "verify"):
        service = services[name]
        argv = [*service.get("entrypoint", default_entry), *service["command"]]
        parsed[name] = _parse_cli([str(a) for a in argv], f"compose service {name}")
    serve, verify = parsed["serve"], parsed["verify"]
    assert serve.command == "serve" and serve.host == "0.0.0.0"  # noqa: S104 - in its container
    assert verify.command == "monitor" and verify.monitor_command == "verify"
    assert verify.snapshot_dir == worker.snapshot_dir
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in yaml.safe_load(
        (PROMETHEUS_DIR / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs["streamfeat-serve"] == [f"serve:{serve.port}"]
    assert jobs["streamfeat-verify"] == [f"verify:{verify.metrics_port}"]
    # the worker runs every topology of topologies/, mounted where its command reads them
    assert sorted(Path(p).name for p in worker.topologies) == sorted(
        p.name for p in (ROOT / "topologies").glob("*.yaml"))
    mounts = dict(v.rsplit(":", 2)[:2] for v in services["worker"]["volumes"]
                  if v.startswith("."))
    assert mounts["../../topologies"] == str(Path(worker.topologies[0]).parent)
    assert f"{worker.metrics_port}:{worker.metrics_port}" in services["worker"]["ports"]
    env = services["worker"]["environment"]
    assert env["STREAMFEAT_KAFKA"] == "kafka:9092"
    assert env["STREAMFEAT_REDIS"].startswith("redis://redis:6379/")
    # Prometheus scrapes the worker service at its metrics port, with the shipped files
    scrape = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (target,) = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert target == f"worker:{worker.metrics_port}"
    prom_mounts = dict(v.rsplit(":", 2)[:2] for v in services["prometheus"]["volumes"]
                       if v.startswith("."))
    assert (folder / "../prometheus").resolve() == PROMETHEUS_DIR
    assert prom_mounts["../prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    # Grafana gets the provisioning and the dashboard, whose data source is that Prometheus
    graf = dict(v.rsplit(":", 2)[:2] for v in services["grafana"]["volumes"] if v.startswith("."))
    for source in graf:
        assert (folder / source).exists(), source
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]
    boards = yaml.safe_load((provisioning / "dashboards" / "streamfeat.yaml").read_text())
    dash_dir = boards["providers"][0]["options"]["path"]
    assert graf["../grafana/streamfeat.json"] == f"{dash_dir}/streamfeat.json"


def _k8s() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def test_the_kubernetes_manifests() -> None:
    docs = _k8s()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    kustomization = by_kind["Kustomization"][0]
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).exists(), resource
    (sts,) = by_kind["StatefulSet"]
    (svc,) = by_kind["Service"]
    (pdb,) = by_kind["PodDisruptionBudget"]
    pod = sts["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ns = _parse_cli(["streamfeat", "worker", *container["args"]], "StatefulSet args")
    # static membership from the pod's name
    assert ns.instance_id == "$(POD_NAME)"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # the topology: the ConfigMap mounted where the args read it, equal to topologies/
    maps = {m["metadata"]["name"]: m for m in by_kind["ConfigMap"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    topology_map = maps[volumes["topology"]["configMap"]["name"]]
    (topology_path,) = ns.topologies
    folder, file = topology_path.rsplit("/", 1)
    assert mounts["topology"] == folder
    shipped = load_topology_text(topology_map["data"][file], file)  # a valid topology
    # a copy of the repository's (re-copied when that one changes): what the resource
    # names, the consumer group and the alerts' topology label are named after
    ours = load_topology(ROOT / "topologies" / file)
    assert (shipped.name, shipped.entity, shipped.source.topic) == (
        ours.name, ours.entity, ours.source.topic)
    assert sts["metadata"]["name"] == f"streamfeat-{shipped.name}"
    # $(SNAPSHOT_DIR) is one of the container's variables
    env_maps = [maps[e["configMapRef"]["name"]] for e in container["envFrom"]
                if "configMapRef" in e]
    assert ns.snapshot_dir == "$(SNAPSHOT_DIR)"
    assert any("SNAPSHOT_DIR" in m["data"] for m in env_maps)
    # probes ask what the metrics server serves, on the port the worker listens on
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == ns.metrics_port
    probes = {k: container[k]["httpGet"] for k in ("livenessProbe", "readinessProbe",
                                                   "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/health/live"
    assert probes["readinessProbe"]["path"] == "/health/ready"
    assert all(p["port"] in ("metrics", ns.metrics_port) for p in probes.values())
    assert set(_served([p["path"] for p in probes.values()]).values()) == {200}
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/port"] == str(ns.metrics_port)
    assert notes["prometheus.io/path"] == "/metrics"
    # a headless Service of the StatefulSet, and a disruption budget, on the pods' labels
    labels = pod["metadata"]["labels"]
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["targetPort"] in ("metrics", ns.metrics_port)
    # resources are set, the image's user is the pod's
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    docker_user = dict(_dockerfile())["USER"].split(":")[0]
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == docker_user
    # the PodMonitor scrapes the port by name, with the job the alerts expect
    (monitor,) = by_kind["PodMonitor"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert labels[monitor["spec"]["jobLabel"]] == "streamfeat"
    assert all('job="streamfeat"' in r["expr"] for r in alert_rules() if "up{" in r["expr"])


def test_the_dashboard() -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["topology"]["type"] == "query"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    taken: dict[tuple[int, int], str] = {}  # no panel over another, none past the 24 columns
    for panel in board["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for cell in ((x, y) for x in range(g["x"], g["x"] + g["w"])
                     for y in range(g["y"], g["y"] + g["h"])):
            assert cell not in taken, (panel["title"], taken[cell])
            taken[cell] = panel["title"]
    assert variables["field"]["type"] == "query"
    assert 'topology=~"$topology"' in variables["field"]["query"]["query"]
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel.get("repeat") in (None, *variables), panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            # per topology (the serving requests also those naming none), but for the
            # per-process series (targets, versions)
            assert re.search(r'topology=~"\$topology(\|unknown)?"', expr) or panel["title"] in {
                "Targets up", "Versions"}, (panel["title"], expr)
            # per field, for the series that have one
            for name in PER_FIELD.findall(expr):
                assert f'{name}{{topology=~"$topology", field=~"$field"' in expr, (
                    panel["title"], expr)
        # a threshold drawn is its alert's, as the panel's description names it
        steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
        if panel["fieldConfig"]["defaults"]["custom"].get("thresholdsStyle"):
            alert = re.search(r"Alert: (\w+)", panel["description"])
            assert alert is not None and alert[1] in rules, panel["title"]
            drawn = steps[-1]["value"]
            assert re.search(rf"> {re.escape(str(drawn))}\b", rules[alert[1]]["expr"]), (
                panel["title"], drawn, rules[alert[1]]["expr"])
    shown = " ".join(dashboard_exprs())
    for needed in ("streamfeat_consumer_lag", "streamfeat_event_to_redis_seconds_bucket",
                   "streamfeat_freshness_bound_seconds", "streamfeat_events_malformed_total",
                   "streamfeat_events_late_total", "streamfeat_redis_write_seconds_bucket",
                   "streamfeat_redis_writes_rejected_total", "streamfeat_state_entities",
                   "streamfeat_state_bytes", "streamfeat_snapshot_lag_seconds",
                   "streamfeat_fenced_generation", "streamfeat_recompute_pending",
                   "streamfeat_recompute_records_total", "streamfeat_state_restore_seconds",
                   "streamfeat_retries_total", "streamfeat_healthy",
                   # value monitoring, consistency, serving and the client (#16, #17)
                   "streamfeat_value_psi", "streamfeat_value_quantile_distance",
                   "streamfeat_value_null_ratio", "streamfeat_value_baseline_null_ratio",
                   "streamfeat_value_mean", "streamfeat_value_stddev",
                   "streamfeat_value_quantile", "streamfeat_value_count",
                   "streamfeat_value_interval_end_timestamp_seconds",
                   "streamfeat_value_interval_asof_seconds",
                   "streamfeat_value_baseline_timestamp_seconds",
                   "streamfeat_value_monitor_seconds_total",
                   "streamfeat_verify_consistency_ratio", "streamfeat_verify_checked_entities",
                   "streamfeat_verify_skipped_entities", "streamfeat_verify_mismatched_fields",
                   "streamfeat_verify_last_success_timestamp_seconds",
                   "streamfeat_verify_duration_seconds", "streamfeat_verify_runs_total",
                   "streamfeat_serve_requests_total", "streamfeat_serve_request_seconds_bucket",
                   "streamfeat_serve_entities_per_request_bucket",
                   "streamfeat_serve_redis_errors_total", "streamfeat_client_fetch_seconds_bucket",
                   "streamfeat_client_fetch_errors_total"):
        assert needed in shown, needed


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


@pytest.mark.skipif(not _docker_answers(), reason="no Docker engine answers here "
                    "(`docker info`): the image is built only where one does")
def test_the_image_builds_and_runs_as_its_user() -> None:
    tag = f"streamfeat-test:{os.getpid()}"
    build = subprocess.run(["docker", "build", "-f", "deploy/docker/Dockerfile", "-t", tag, "."],
                           cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        def run(*argv: str) -> str:
            done = subprocess.run(["docker", "run", "--rm", "--entrypoint", argv[0], tag,
                                   *argv[1:]], capture_output=True, text=True, timeout=300,
                                  check=False)
            assert done.returncode == 0, done.stderr
            return done.stdout
        assert run("id", "-u").strip() == "10001"
        assert "ok" in run("streamfeat", "validate", "/etc/streamfeat/topologies/orders.yaml")
        assert "--instance-id" in run("streamfeat", "worker", "--help")
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120,
                       check=False)
