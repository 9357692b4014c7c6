"""Helpers of the worker's end-to-end tests: real Kafka, real Redis, a real worker process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streamfeat.client import Client
from streamfeat.generator import OrderEvents, produce_events
from streamfeat.topology import AggKind, TopologyDef, load_topology

from reference import close, expected_final

ROOT = Path(__file__).resolve().parents[2]

# Slow event time (one event every ~2 s on average) so that a few thousand events span hours:
# windows fill, slide, close and expire during a test. Out-of-order, late and malformed too.
STREAM = {"entities": 200, "events_per_second": 0.5, "disorder_ms": 120_000,
          "late_fraction": 0.01, "late_ms": 3_600_000, "malformed_fraction": 0.005}

#: Worker options for tests that kill or cut off a worker mid-stream: commit state often
#: (default every 5 s) so that the kill lands between commits, after real progress.
COMMIT_OFTEN = ("--commit-every", "0.2")


def make_topology(name: str, topic: str, tmp_path: Path) -> tuple[TopologyDef, Path]:
    """topologies/orders.yaml under a test-unique name and topic."""
    text = (ROOT / "topologies" / "orders.yaml").read_text()
    text = text.replace("name: orders ", f"name: {name} ", 1).replace(
        "topic: orders", f"topic: {topic}", 1
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    topology = load_topology(path)
    assert topology.name == name and topology.source.topic == topic
    return topology, path


def produce(kafka: str, topic: str, n: int, **generator: Any) -> None:
    producer = Producer({"bootstrap.servers": kafka, "linger.ms": 10, "enable.idempotence": True})
    assert produce_events(producer, topic, OrderEvents(**generator).events(n)) == 0


def read_messages(kafka: str, topic: str, **config: Any) -> dict[int, list[Message]]:
    """Every record of the topic (headers and all), per partition, in offset order.

    ``config``: more consumer properties (e.g. ``fetch.max.bytes`` for large records)."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"{topic}-check",
                         "enable.auto.commit": False, **config})
    try:
        meta = consumer.list_topics(topic, timeout=30)
        parts = sorted(meta.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                for p in parts}
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _hi) in ends.items()])
        out: dict[int, list[Message]] = defaultdict(list)
        total = sum(hi - lo for lo, hi in ends.values())
        seen = 0
        deadline = time.time() + 120
        while seen < total and time.time() < deadline:
            for m in consumer.consume(10_000, 1.0):
                assert m.error() is None, m.error()
                out[cast(int, m.partition())].append(m)
                seen += 1
        assert seen == total, f"read {seen} of {total} records of {topic}"
        return {p: out[p] for p in parts}
    finally:
        consumer.close()


def read_topic(kafka: str, topic: str) -> dict[int, list[bytes | None]]:
    """Every record's value of the topic, per partition, in offset order."""
    return {p: [m.value() for m in ms] for p, ms in read_messages(kafka, topic).items()}


def count_topic(kafka: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"{topic}-count"})
    try:
        meta = consumer.list_topics(topic, timeout=30)
        total = 0
        for p in meta.topics[topic].partitions:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            total += hi - lo
        return total
    finally:
        consumer.close()


def worker_cmd(path: Path | Sequence[Path], state_dir: Path, *extra: str) -> list[str]:
    """The worker command (one topology or several); ``STREAMFEAT_RUNTIME=faust|kafka``
    picks the runtime under test."""
    runtime = os.environ.get("STREAMFEAT_RUNTIME")
    chosen = ("--runtime", runtime) if runtime else ()
    paths = [str(path)] if isinstance(path, Path) else [str(p) for p in path]
    return [sys.executable, "-m", "streamfeat.cli", "worker", *paths,
            "--state-dir", str(state_dir), *chosen, *extra]


def worker_env(kafka: str, redis_url: str) -> dict[str, str]:
    return {**os.environ, "STREAMFEAT_KAFKA": kafka, "STREAMFEAT_REDIS": redis_url}


class Workers:
    """Worker processes of one test, each logging to its own file; all stopped on exit.

    ``with Workers(tmp_path, env) as workers: a = workers.start("a", cmd)``: whatever happens
    in the block, every worker still running at its end gets SIGTERM, then SIGKILL, so a
    failing test leaves no process behind. Logs go to files (not pipes, which a chatty worker
    could fill and block on) and are shown by :meth:`log`.
    """

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.dir = tmp_path / "logs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        with (self.dir / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def stop(self, name: str, timeout_s: float = 60) -> int:
        """SIGTERM, then the exit status (SIGKILL and an AssertionError after ``timeout_s``)."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            raise AssertionError(f"worker {name} ignored SIGTERM for {timeout_s}s:\n"
                                 + self.log(name)) from None

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""


def _logs(workers: Workers | None) -> str:
    """The tail of every worker's log, for an assertion message."""
    if workers is None:
        return ""
    return "\n".join(f"--- {name}:\n{workers.log(name)}" for name in workers.procs)


class GroupProgress:
    """What a consumer group has committed of a topic (the workers' advisory commits)."""

    def __init__(self, kafka: str, group: str, topic: str) -> None:
        self.group, self.topic = group, topic
        self.consumer = Consumer({"bootstrap.servers": kafka, "group.id": group})
        parts = sorted(self.consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        self.ends = {p: self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                     for p in parts}

    def __enter__(self) -> GroupProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.consumer.close()

    def per_partition(self) -> dict[int, int]:
        """Records committed per partition (0 where nothing is)."""
        got = self.consumer.committed(
            [TopicPartition(self.topic, p) for p in self.ends], timeout=30
        )
        return {tp.partition: max(tp.offset - self.ends[tp.partition][0], 0) for tp in got}

    def done(self) -> tuple[int, int]:
        """(records the group has committed, records in the topic)."""
        return (sum(self.per_partition().values()),
                sum(hi - lo for lo, hi in self.ends.values()))

    def wait(self, above: int = 0, timeout_s: float = 120,
             workers: Workers | None = None) -> tuple[int, int]:
        """Wait until more than ``above`` records are committed; returns (committed, total).

        A kill or an outage that follows comes after real progress, however long the runtime
        takes to start and join the group.
        """
        deadline = time.time() + timeout_s
        while True:
            done, total = self.done()
            if done > above:
                return done, total
            if time.time() > deadline:
                raise AssertionError(
                    f"group {self.group} committed {done} of {total} records of {self.topic} "
                    f"(waited for more than {above}) in {timeout_s}s\n{_logs(workers)}"
                )
            time.sleep(0.1)

    def wait_end(self, timeout_s: float = 180, workers: Workers | None = None) -> None:
        """Wait until every partition is committed up to its end offset."""
        deadline = time.time() + timeout_s
        while True:
            per = self.per_partition()
            if all(per[p] >= hi - lo for p, (lo, hi) in self.ends.items()):
                return
            if time.time() > deadline:
                raise AssertionError(
                    f"group {self.group} did not catch up with {self.topic} in {timeout_s}s: "
                    f"{per} of {self.ends}\n{_logs(workers)}"
                )
            time.sleep(0.5)


def kill_at_random_points(workers: Workers, group: GroupProgress, cmd: list[str], *,
                          runs: int = 4, seed: int = 3, max_delay_s: float = 1.0) -> int:
    """Start ``cmd`` ``runs`` times; each run gets somewhere (the group commits progress),
    then is killed with SIGKILL at a random instant. Returns how many kills came mid-stream."""
    import random

    rng = random.Random(seed)
    mid_stream = 0
    done, total = group.done()
    for run in range(runs):
        name = f"run{run}"
        workers.start(name, cmd)
        if done < total:
            group.wait(above=done, workers=workers)
        time.sleep(rng.uniform(0.0, max_delay_s))
        workers.kill(name)
        done, total = group.done()
        mid_stream += done < total
    return mid_stream


def run_to_end(path: Path | Sequence[Path], state_dir: Path, kafka: str, redis_url: str,
               *extra: str) -> Path:
    """Run a worker with ``--stop-at-end``; it must exit 0 within 10 minutes. Returns its log."""
    logs = state_dir.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"run-to-end-{len(list(logs.glob('run-to-end-*.log')))}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            worker_cmd(path, state_dir, "--stop-at-end", *extra), env=worker_env(kafka, redis_url),
            stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            status = proc.wait(600)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            raise AssertionError(
                f"--stop-at-end did not finish in 600 s:\n{log_path.read_text()[-4000:]}"
            ) from None
    assert status == 0, log_path.read_text(errors="replace")[-4000:]
    return log_path


def assert_redis_matches_reference(
    kafka: str, redis_url: str, topology: TopologyDef
) -> tuple[int, int, int]:
    """Every Redis value equals the naive reference; returns (entities, late, malformed)."""
    partitions = read_topic(kafka, topology.source.topic)
    expected, late, malformed = expected_final(topology, partitions)
    assert expected, "the reference found no entities"
    actual = Client(redis_url).get(topology, sorted(expected))
    sketchy = {f.redis_field(w) for f in topology.features if f.agg is AggKind.PERCENTILE
               for w in f.windows}
    mismatches = []
    for entity, want in expected.items():
        got = actual[entity]
        for name, value in want.items():
            rel = 0.0101 if name in sketchy else 1e-9
            if not close(got.get(name), value, rel):
                mismatches.append(f"{entity}.{name}: redis={got.get(name)!r} reference={value!r}")
    assert not mismatches, f"{len(mismatches)} mismatches, e.g.:\n" + "\n".join(mismatches[:20])
    return len(expected), late, malformed


def free_port() -> int:
    """A TCP port free on this host (for a worker's --metrics-port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape_metrics(port: int) -> dict[str, float]:
    """A worker's Prometheus metrics, each summed over its labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def wait_for_metrics(port: int, done: Callable[[dict[str, float]], bool],
                     timeout_s: float = 120) -> dict[str, float]:
    """Scrape a worker's metrics until ``done`` says so or ``timeout_s`` passes; returns the
    last scrape (the caller asserts on it). A worker not yet listening is waited for."""
    deadline = time.time() + timeout_s
    metrics: dict[str, float] = {}
    while time.time() < deadline:
        with contextlib.suppress(OSError):
            metrics = scrape_metrics(port)
        if done(metrics):
            break
        time.sleep(0.3)
    return metrics


def get_health(port: int, path: str = "/health") -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of a worker's health view; (0, {}) while it is not listening."""
    import json
    import urllib.error

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return 0, {}


def wait_for_health(port: int, done: Callable[[int, dict[str, Any]], bool],
                    timeout_s: float = 60, path: str = "/health",
                    workers: Workers | None = None) -> tuple[float, dict[str, Any]]:
    """Poll a health view every 0.1 s until ``done(status, body)``; returns (when, body)."""
    deadline = time.time() + timeout_s
    code, body = 0, {}
    while time.time() < deadline:
        code, body = get_health(port, path)
        if done(code, body):
            return time.time(), body
        time.sleep(0.1)
    raise AssertionError(f"{path} never got there in {timeout_s}s: {code} {body}\n"
                         f"{_logs(workers)}")


class PrivateRedis:
    """A redis-server of this test alone on a free port, which it can freeze (SIGSTOP) and
    thaw (SIGCONT); stopped on exit."""

    def __init__(self, tmp_path: Path) -> None:
        import shutil

        server = shutil.which("redis-server")
        assert server, "redis-server is needed for this test; deploy/local/up installs it"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> PrivateRedis:
        import redis as redis_lib

        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if redis_lib.Redis.from_url(self.url).ping():
                    return self
            except redis_lib.ConnectionError:
                time.sleep(0.1)
        self.__exit__()
        raise AssertionError("private redis-server did not start")

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def __exit__(self, *_exc: object) -> None:
        self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


class PrivateKafka:
    """A Kafka broker of this test alone (``deploy/local/up`` in a directory of its own, on
    free ports), which the test can stop and start again with its data; stopped on exit.

    The jars are shared with the session's broker when it was started by ``deploy/local/up``
    (a link), else fetched by that script as usual. Redis stays the session's.
    """

    def __init__(self, tmp_path: Path, redis_port: int) -> None:
        self.dir = tmp_path / "private-kafka"
        self.env = {**os.environ, "STREAMFEAT_LOCAL_DIR": str(self.dir),
                    "KAFKA_PORT": str(free_port()), "KAFKA_CONTROLLER_PORT": str(free_port()),
                    "REDIS_PORT": str(redis_port)}
        self.bootstrap = f"127.0.0.1:{self.env['KAFKA_PORT']}"
        shared = ROOT / ".local" / "kafka"
        for libs in shared.glob("libs-*"):
            if (libs / ".complete").exists():
                (self.dir / "kafka").mkdir(parents=True, exist_ok=True)
                link = self.dir / "kafka" / libs.name
                if not link.exists():
                    link.symlink_to(libs)

    def start(self) -> None:
        done = subprocess.run([str(ROOT / "deploy" / "local" / "up")], env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]

    def stop(self) -> None:
        """Stop the broker (SIGTERM, as an operator's restart would); its data stays."""
        pidf = self.dir / "run" / "kafka.pid"
        if not pidf.exists():
            return
        pid = int(pidf.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        pidf.unlink()

    def __enter__(self) -> PrivateKafka:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
