"""What ships for operating streamfeat holds together (issue #16):

- the alerts and the scrape configuration pass ``promtool check``, and the alerts' unit tests
  (deploy/prometheus/alerts_test.yml) pass ``promtool test rules``: each alert fires on its
  series and not on the near misses;
- a real Prometheus (Debian's package, through deploy/local/prometheus) scrapes a real
  worker with the shipped prometheus.yml (only the target rewritten): the worker's series
  answer through Prometheus's HTTP API, every alert rule and every dashboard query
  evaluates there without error, and every metric name they use is one the worker exports;
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
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from streamfeat.cli import build_parser
from streamfeat.metrics import MALFORMED_REASONS, Metrics, MetricsServer
from streamfeat.topology import load_topology
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
    assert "SUCCESS: 8 rules found" in subprocess.run(
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
    assert len(rules) == 8
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
        with contextlib.suppress(OSError, AssertionError, KeyError, ValueError):
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
"""
EVENTS = 3000


def produce_orders(kafka: str, topic: str, n: int) -> None:
    """``n`` order events over 50 users, one every 0.5 s of event time ending now; about
    2 % late (10 minutes behind, beyond the topology's 1 m lateness) and 3 % malformed of
    three kinds (not JSON, no key, an amount that is not a number)."""
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


@pytest.fixture
def worker(kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str],
           unique_id: str, tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A real worker over a small topic of its own (late and malformed records in it),
    caught up; yields its metrics port and topology name."""
    topic = new_topic("orders", partitions=2)
    path = tmp_path / f"{unique_id}.yaml"
    path.write_text(TOPOLOGY.format(name=unique_id, topic=topic))
    load_topology(path)
    produce_orders(kafka_bootstrap, topic, EVENTS)
    port = _free_port()
    runtime = os.environ.get("STREAMFEAT_RUNTIME")
    cmd = [sys.executable, "-m", "streamfeat.cli", "worker", str(path),
           "--state-dir", str(tmp_path / "state"), "--snapshot-dir", str(tmp_path / "snap"),
           "--snapshot-every", "1", "--metrics-port", str(port),
           *(["--runtime", runtime] if runtime else [])]
    env = {**os.environ, "STREAMFEAT_KAFKA": kafka_bootstrap, "STREAMFEAT_REDIS": redis_url}
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait("the worker consumed every record", lambda: _total(
            _metrics_text(port), "streamfeat_events_consumed_total") == EVENTS, 120)
        yield port, unique_id
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert proc.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]


@pytest.fixture
def prometheus(worker: tuple[int, str], tmp_path: Path) -> Iterator[str]:
    """deploy/prometheus/prometheus.yml (the worker's address put in place of the target)
    and alerts.yml, run by Debian's Prometheus on loopback; yields its host:port."""
    shipped = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    assert shipped.count('"worker:9100"') == 1
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "prometheus.yml").write_text(
        shipped.replace('"worker:9100"', f'"127.0.0.1:{worker[0]}"'))
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


@pytest.mark.integration
def test_prometheus_scrapes_a_worker_and_every_name_used_is_exported(
        worker: tuple[int, str], prometheus: str) -> None:
    port, topology = worker
    t = f'topology="{topology}"'
    up = _wait("Prometheus scraped the worker", lambda: [
        s for s in _query(prometheus, 'up{job="streamfeat"}') if s["value"][1] == "1"])
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{port}"
    consumed = _query(prometheus, f"sum(streamfeat_events_consumed_total{{{t}}})")
    assert float(consumed[0]["value"][1]) == EVENTS
    bound = _query(prometheus, f"streamfeat_freshness_bound_seconds{{{t}}}")
    assert [float(s["value"][1]) for s in bound] == [2.0]
    lag = _wait("the lag gauges", lambda: _query(prometheus, f"streamfeat_consumer_lag{{{t}}}"))
    assert sorted(s["metric"]["partition"] for s in lag) == ["0", "1"]
    assert all(float(s["value"][1]) == 0 for s in lag)
    assert _query(prometheus, f"streamfeat_healthy{{{t}}}")[0]["value"][1] == "1"
    assert _query(prometheus, 'streamfeat_build_info{runtime=~"faust|kafka"}')
    # malformed records by reason: a known reason each, the worker's own total
    by_reason = _query(prometheus, f"sum by (reason) (streamfeat_events_malformed_total{{{t}}})")
    reasons = {s["metric"]["reason"] for s in by_reason}
    assert reasons and reasons <= set(MALFORMED_REASONS) - {"other"}, reasons
    text = _metrics_text(port)
    assert sum(float(s["value"][1]) for s in by_reason) == _total(
        text, "streamfeat_events_malformed_total") > 0

    # every metric the alerts and the dashboard name is one the worker exports
    exported = exported_names(text)
    missing = {name: sorted(where) for name, where in used_names().items()
               if name not in exported}
    assert not missing, f"not exported by the worker: {missing}"

    # every dashboard query evaluates on the real series (syntax, matching): none errs
    for expr in dashboard_exprs():
        grafana = re.fullmatch(r"label_values\((.+), *(\w+)\)", expr)  # Grafana's, not PromQL
        if grafana is not None:
            found = _query(prometheus, grafana[1])
            assert topology in {s["metric"].get(grafana[2]) for s in found}, expr
            continue
        _query(prometheus, expr.replace("$__rate_interval", "1m").replace("$topology", topology))
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
    assert set(used) <= names, set(used) - names  # as declared; the e2e test scrapes a worker


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
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            # per topology, but for the per-process series (targets, versions)
            assert 'topology=~"$topology"' in expr or panel["title"] in {
                "Targets up", "Versions"}, (panel["title"], expr)
    shown = " ".join(dashboard_exprs())
    for needed in ("streamfeat_consumer_lag", "streamfeat_event_to_redis_seconds_bucket",
                   "streamfeat_freshness_bound_seconds", "streamfeat_events_malformed_total",
                   "streamfeat_events_late_total", "streamfeat_redis_write_seconds_bucket",
                   "streamfeat_redis_writes_rejected_total", "streamfeat_state_entities",
                   "streamfeat_state_bytes", "streamfeat_snapshot_lag_seconds",
                   "streamfeat_fenced_generation", "streamfeat_recompute_pending",
                   "streamfeat_recompute_records_total", "streamfeat_state_restore_seconds",
                   "streamfeat_retries_total", "streamfeat_healthy"):
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
