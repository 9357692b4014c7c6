"""streamfeat against Quix Streams, Faust, Bytewax and PyFlink on one topic (benchmarks/README.md).

    .venv/bin/python benchmarks/harness.py [--events 1000000] [--entities 10000]
        [--only streamfeat,quix,faust,bytewax,pyflink] [--quix-sliding hopping|exact]
        [--bytewax-processes 1,2] [--flink-parallelism 1,2] [--profile]
        [--format json|avro|json,avro]

Produces N skewed order events (streamfeat.generator.OrderEvents) into a fresh topic,
then runs each engine on it as a subprocess until it has consumed all N: the streamfeat
worker (``--stop-at-end``, Redis sink, snapshots), the Quix Streams, Faust and Bytewax
apps of benchmarks/peers/ (from the separate venv .venv-peers, created from
benchmarks/requirements-peers.txt when missing) and the Flink SQL job of
benchmarks/peers/pyflink_app.py (from .venv-flink, created from
benchmarks/requirements-flink.txt, with the Kafka connector jar fetched by Maven).
Each engine is timed from its start to its exit; the peak RSS of its process tree is
sampled from /proc. The figures, with
``uname -a``, the CPU model and the date, are printed and appended to
benchmarks/results/<date>-harness.md. Topics and Redis keys of the run are deleted at
the end (``--keep`` keeps them).

``--format avro`` produces the same events as Avro records (``AvroOrders``, the schema of
``topologies/orders.avsc``) into a topic of their own and runs streamfeat on it
(``streamfeat-<runtime>-avro``); ``--format json,avro`` runs both, in the same minutes,
for a side-by-side figure. The peers read JSON only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from memcgroup import MemoryCgroup  # benchmarks/memcgroup.py

from streamfeat.config import resolve_kafka, resolve_redis
from streamfeat.generator import ORDER_AVRO_SCHEMA, AvroOrders, OrderEvents, produce_events

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
PEERS = BENCH / "peers"
PEERS_VENV = ROOT / ".venv-peers"
FLINK_VENV = ROOT / ".venv-flink"  # apache-flink pins versions Quix and Faust do not share
# the Kafka SQL connector built for the apache-flink of requirements-flink.txt
FLINK_KAFKA_JAR = "org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2"
TOPOLOGY = PEERS / "bench_topology.yaml"
ENGINES = ("streamfeat", "streamfeat-rekeyed", "quix-tumbling", "quix-sliding", "faust",
           "bytewax", "pyflink")
ALIASES = {"quix": ("quix-tumbling", "quix-sliding")}


# --------------------------------------------------------------------------- environment
def peers_python(venv: Path = PEERS_VENV, requirements: str = "requirements-peers.txt"
                 ) -> Path:
    """The peers venv's python, creating the venv from requirements-peers.txt if missing."""
    python = venv / "bin" / "python"
    stamp = venv / ".requirements"
    wanted = (BENCH / requirements).read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"installing the peers into {venv} (once) ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        (venv / ".gitignore").write_text("*\n")  # keep the venv out of git
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r",
                    str(BENCH / requirements)], check=True)
    stamp.write_text(wanted)
    return python


def flink_python() -> Path:
    """The PyFlink venv's python (requirements-flink.txt), created if missing."""
    return peers_python(FLINK_VENV, "requirements-flink.txt")


def flink_kafka_jar() -> Path:
    """The Flink Kafka SQL connector jar, fetched once with Maven into .venv-flink/jars."""
    _group, artifact, version = FLINK_KAFKA_JAR.split(":")
    jar = FLINK_VENV / "jars" / f"{artifact}-{version}.jar"
    if not jar.exists():
        if shutil.which("mvn") is None:
            raise SystemExit(f"pyflink needs {jar}: install Maven (mvn) to fetch "
                             f"{FLINK_KAFKA_JAR}, or put the jar there")
        print(f"fetching {FLINK_KAFKA_JAR} into {jar.parent} (once) ...", flush=True)
        subprocess.run(["mvn", "-q", "dependency:copy", f"-Dartifact={FLINK_KAFKA_JAR}:jar",
                        f"-DoutputDirectory={jar.parent}"], check=True)
    return jar


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "uname": " ".join(platform.uname()),
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- Kafka
def create_topic(admin: AdminClient, topic: str, partitions: int) -> None:
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(60)


def delete_topics(admin: AdminClient, run_id: str) -> None:
    names = [t for t in admin.list_topics(timeout=30).topics if run_id in t]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            try:
                future.result(60)
            except Exception as exc:  # already gone, or still being created
                print(f"  could not delete a topic: {exc}", file=sys.stderr)


def produce(kafka: str, topic: str, events: int, entities: int, seed: int,
            event_rate: float = 200.0, fmt: str = "json", skew: float = 1.1) -> float:
    """Produce the events; returns the seconds it took (generation included)."""
    producer = Producer({"bootstrap.servers": kafka, "linger.ms": 20,
                         "compression.type": "lz4", "enable.idempotence": True})
    started = time.perf_counter()
    left = produce_events(producer, topic,
                          OrderEvents(entities=entities, seed=seed, skew=skew,
                                      events_per_second=event_rate,
                                      encoding=AvroOrders() if fmt == "avro" else None,
                                      ).events(events),
                          flush_timeout_s=120)
    if left:
        raise SystemExit(f"{left} events were not delivered to {topic}")
    return time.perf_counter() - started


# --------------------------------------------------------------------------- processes
def run_worker(topology: Path, state: Path, log: Path, *extra: str) -> float:
    """``streamfeat worker TOPOLOGY --state-dir STATE --stop-at-end EXTRA...`` to its exit,
    logging to ``log``; the seconds it took (a failed run stops the benchmark)."""
    started = time.perf_counter()
    with log.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", "streamfeat.cli", "worker", str(topology), "--state-dir",
             str(state), "--stop-at-end", *extra], stdout=out, stderr=subprocess.STDOUT,
            check=False, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({done.returncode}):\n{log.read_text()[-3000:]}")
    return time.perf_counter() - started


def tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


@dataclass
class RunResult:
    engine: str
    events: int
    seconds: float
    peak_rss: int
    rss_half: int  # RSS at half the run: with peak, shows whether memory grows with events
    exit_code: int
    keys: int = 0
    note: str = ""
    killed: bool = False  # stopped by the harness (time or memory): rated on its progress
    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def run_measured(engine: str, cmd: Sequence[str], events: int, log: Path,
                 profile: Path | None = None, timeout: float = 3600,
                 max_rss: int = 8 << 30) -> RunResult:
    """Run ``cmd`` to its exit, sampling its tree's RSS; optionally under py-spy.

    A run over ``timeout`` seconds or ``max_rss`` bytes is killed (the machine is shared);
    its events/s is then taken from the last ``{"progress": n, "seconds": t}`` line it
    printed, and the note says so.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = ""
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        spy = None
        if profile is not None:
            spy = subprocess.Popen(
                [str(PEERS_VENV / "bin" / "py-spy"), "record", "--pid", str(proc.pid),
                 "--rate", "50", "--format", "raw", "-o", str(profile), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            nonlocal killed
            while not stop.is_set():
                rss = tree_rss(proc.pid)
                samples.append((time.perf_counter() - started, rss))
                if rss > max_rss and not killed:
                    killed = f"killed at {rss / 2**30:.1f} GiB RSS"
                    _kill_tree(proc.pid)
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            killed = f"killed after {timeout:.0f} s"
            _kill_tree(proc.pid)
            code = proc.wait()
        took = time.perf_counter() - started
        stop.set()
        sampler.join()
        if spy is not None:
            spy.wait(30)
    peak = max((r for _, r in samples), default=0)
    half = min(samples, key=lambda s: abs(s[0] - took / 2))[1] if samples else 0
    result = RunResult(engine, events, took, peak, half, code, samples=samples)
    if killed:
        result.killed = True
        result.note = killed
        progress = _last_progress(log)
        if progress is not None:
            result.events, result.seconds = progress
            result.note += f" (rate over the first {result.events:,} events)"
        else:
            result.events = 0
    return result


def _kill_tree(pid: int) -> None:
    with contextlib.suppress(OSError):  # already gone
        os.killpg(pid, signal.SIGKILL)


def _last_progress(log: Path) -> tuple[int, float] | None:
    last = None
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith('{"progress"'):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            last = (int(data["progress"]), float(data["seconds"]))
    return last


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO streamfeat\.worker: "
                       r"(assigned|caught up)")


def _steady_seconds(log: Path) -> float | None:
    """Seconds from the first partition assigned to the last worker caught up (its log).

    The run's wall time also holds start-up (imports, group join) and the final flush;
    this is the part where records flow.
    """
    first = last = None
    for line in log.read_text(errors="replace").splitlines():
        m = _LOG_TIME.match(line)
        if m is None:
            continue
        t = dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if m[2] == "assigned" and first is None:
            first = t
        elif m[2] == "caught up":
            last = t
    return last - first if first is not None and last is not None and last > first else None


def count_keys(client: redis.Redis, name: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"sf:{name}:*", count=5000))


def delete_keys(client: redis.Redis, name: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"sf:{name}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


# --------------------------------------------------------------------------- engines
def run_streamfeat(args: argparse.Namespace, topic: str, name: str, work: Path,
                   engine: str, *, rekeyed: bool = False, fmt: str = "json") -> RunResult:
    topology = work / f"{name}.yaml"
    text = TOPOLOGY.read_text() if args.topology is None else args.topology.read_text()
    # the run's own name and topic (a topology other than the benchmark's has its own)
    text = re.sub(r"(?m)^name: .*$", f"name: {name}", text)
    text = re.sub(r"(?m)^  topic: .*$", f"  topic: {topic}", text)
    if fmt == "avro":
        (work / "orders.avsc").write_text(json.dumps(ORDER_AVRO_SCHEMA))
        text = text.replace("  format: json\n", "  format: avro\n  schema: orders.avsc\n")
    if rekeyed:  # the same features per merchant: the topic is keyed by user
        text = text.replace("  key: user_id\n", "  key: merchant_id\n  keyed_by_entity: false\n"
                            ).replace("entity: user", "entity: merchant")
    topology.write_text(text)
    cmd = [str(ROOT / ".venv" / "bin" / "streamfeat"), "worker", str(topology),
           "--kafka", args.kafka, "--redis", args.redis, "--stop-at-end",
           "--state-dir", str(work / f"{engine}-state"), "--group", f"sf-{name}"]
    note = f"{args.sf_processes} process(es)"
    if args.topology is not None:
        note += f"; topology {args.topology.name}"
    cmd += ["--runtime", args.sf_runtime, "--processes", str(args.sf_processes)]
    if args.sf_args:
        cmd += args.sf_args.split()
        note += f"; {args.sf_args}"
    if not args.no_snapshots:
        # its own directory: a second run on the same topic would find every offset
        # already snapshotted and skip that work
        cmd += ["--snapshot-dir", str(work / f"{engine}-snapshots")]
    profile = BENCH / "results" / f"{name}.pyspy.txt" if args.profile else None
    log = work / f"{engine}.log"
    cgroup = None
    if args.sf_memory_limit_mb is not None:  # as in a container with that limit
        cgroup = MemoryCgroup.make(args.sf_memory_limit_mb)
        if cgroup is None:
            raise SystemExit("--sf-memory-limit-mb: no memory cgroup can be made here "
                             "(needs root and a writable memory controller)")
        cmd = cgroup.wrap(cmd)
    try:
        result = run_measured(engine, cmd, args.events, log, profile)
    finally:
        if cgroup is not None:
            note += (f"; in a {args.sf_memory_limit_mb:g} MiB memory cgroup: its peak "
                     f"{cgroup.peak_mb() or 0:,.0f} MiB (with page cache), limit reached "
                     f"{cgroup.limit_hits()} times")
            cgroup.close()
    steady = _steady_seconds(log)
    if steady is not None and result.exit_code == 0:
        note += (f"; {args.events / steady:,.0f} events/s from the first partition "
                 f"assigned to caught up ({steady:.1f} s)")
    text = log.read_text(errors="replace")
    budget = re.search(r"state budget ([\d.]+) MiB per worker process, sized from the "
                       r"container's memory limit of ([\d.]+) MiB", text)
    if budget is not None:  # --state-cache-mb auto, in a container with a limit
        note += f"; state budget {budget[1]} MiB from a {budget[2]} MiB memory limit"
    written = re.search(r"([\d,]+) entity writes applied to Redis", text)
    if written is not None:  # the worker's summary: hashes written (events and expiries)
        note += f"; {written[1]} entity writes to Redis"
    batches = re.search(r"([\d,]+) batches of up to ([\d,]+) records", text)
    if batches is not None:  # the worker's summary (its batch size moves: runtime.batching)
        note += f"; {batches[1]} batches of up to {batches[2]} records"
    cache = re.search(r"state cache: ([\d,]+) entities evicted to the state store, ([\d,]+) "
                      r"read back(?:; ([\d,]+) times the rest of a batch waited)?", text)
    if cache is not None:  # the worker's summary: entities beyond --state-cache-mb
        note += f"; {cache[1]} entities evicted, {cache[2]} read back"
        if cache[3]:
            note += f", {cache[3]} batch rests after a commit"
    snapshots = list((work / f"{engine}-snapshots").rglob("*.parquet"))
    if not args.no_snapshots:
        note += "; " + (f"{len(snapshots)} snapshot files" if snapshots
                        else "no snapshot files written")
    result.note = (result.note + "; " + note).strip("; ")
    if profile is not None and profile.exists():
        result.note += f"; profile {profile.relative_to(ROOT)}"
        print(summarize_profile(profile))
    return result


def run_quix(args: argparse.Namespace, topic: str, name: str, work: Path,
             windows: str) -> RunResult:
    engine = f"quix-{windows}"
    cmd = [str(peers_python()), str(PEERS / "quix_app.py"), "--topic", topic,
           "--events", str(args.peer_events), "--name", name, "--kafka", args.kafka,
           "--redis", args.redis, "--state-dir", str(work / f"{engine}-state"),
           "--group", f"quix-{name}", "--windows", windows, "--sliding", args.quix_sliding]
    result = run_measured(engine, cmd, args.peer_events, work / f"{engine}.log",
                          timeout=args.peer_timeout, max_rss=args.max_rss_gib << 30)
    if windows == "sliding":
        result.note += f"; sliding as Quix {args.quix_sliding} windows"
    else:
        result.note += "; every window tumbling"
    result.note = result.note.strip("; ")
    return result


def run_quix_tumbling(args: argparse.Namespace, topic: str, name: str, work: Path) -> RunResult:
    return run_quix(args, topic, name, work, "tumbling")


def run_quix_sliding(args: argparse.Namespace, topic: str, name: str, work: Path) -> RunResult:
    return run_quix(args, topic, name, work, "sliding")


def run_faust(args: argparse.Namespace, topic: str, name: str, work: Path) -> RunResult:
    cmd = [str(peers_python()), str(PEERS / "faust_app.py"), "--topic", topic,
           "--events", str(args.peer_events), "--name", name, "--kafka", args.kafka,
           "--redis", args.redis, "--state-dir", str(work / "faust-state"),
           "--group", f"faust-{name}", "--partitions", str(args.partitions)]
    result = run_measured("faust", cmd, args.peer_events, work / "faust.log",
                          timeout=args.peer_timeout, max_rss=args.max_rss_gib << 30)
    result.note = (result.note + "; sliding as Faust hopping tables").strip("; ")
    return result


def _peer_summary(log: Path) -> dict[str, float]:
    """The last ``{"peer": ...}`` line a peer printed (its own timings), or {}."""
    found: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith('{"peer"'):
            with contextlib.suppress(ValueError):
                found = json.loads(line)
    return found


def _config(engine: str, base: str) -> int:
    """The configuration in an engine's name: ``bytewax-p2`` -> 2; ``bytewax`` -> 0."""
    return int(engine.rsplit("-p", 1)[1]) if engine.startswith(f"{base}-p") else 0


def run_bytewax(args: argparse.Namespace, topic: str, name: str, work: Path,
                engine: str = "bytewax") -> RunResult:
    processes = _config(engine, "bytewax") or int(args.bytewax_processes.split(",")[0])
    cmd = [str(peers_python()), str(PEERS / "bytewax_app.py"), "--topic", topic,
           "--events", str(args.peer_events), "--name", name, "--kafka", args.kafka,
           "--redis", args.redis, "--processes", str(processes),
           "--workers", str(args.bytewax_workers), "--batch-size", str(args.bytewax_batch),
           "--epoch-interval", str(args.bytewax_epoch)]
    log = work / f"{engine}.log"
    result = run_measured(engine, cmd, args.peer_events, log,
                          timeout=args.peer_timeout, max_rss=args.max_rss_gib << 30)
    note = (f"{processes} process(es) x {args.bytewax_workers} worker(s), KafkaSource "
            f"batch_size {args.bytewax_batch}, epoch {args.bytewax_epoch:g} s, unordered "
            f"fold_window")
    first = _peer_summary(log).get("first_record_s")
    if first and result.exit_code == 0:
        note += (f"; {result.events / first:,.0f} events/s from its first record to its "
                 f"end ({first:.1f} s)")
    result.note = (result.note + "; " + note).strip("; ")
    return result


def run_pyflink(args: argparse.Namespace, topic: str, name: str, work: Path,
                engine: str = "pyflink") -> RunResult:
    parallelism = _config(engine, "pyflink") or int(args.flink_parallelism.split(",")[0])
    cmd = [str(flink_python()), str(PEERS / "pyflink_app.py"), "--topic", topic,
           "--events", str(args.peer_events), "--jar", str(flink_kafka_jar()),
           "--kafka", args.kafka, "--group", f"pyflink-{name}",
           "--parallelism", str(parallelism)]
    log = work / f"{engine}.log"
    result = run_measured(engine, cmd, args.peer_events, log,
                          timeout=args.peer_timeout, max_rss=args.max_rss_gib << 30)
    note = f"parallelism {parallelism}, no checkpoints, blackhole sink (no Redis writes)"
    job = _peer_summary(log).get("job_seconds")
    if job and result.exit_code == 0:
        note += f"; {result.events / job:,.0f} events/s over the Flink job's run time ({job:.1f} s)"
    result.note = (result.note + "; " + note).strip("; ")
    return result


PEER_RUNNERS = {"quix-tumbling": run_quix_tumbling, "quix-sliding": run_quix_sliding,
                "faust": run_faust}  # streamfeat runs once per --sf-runtime


def run_peer(args: argparse.Namespace, engine: str, topic: str, name: str,
             work: Path) -> RunResult:
    """The peer named ``engine`` (``bytewax-p2``: Bytewax with 2 processes; ``pyflink-p2``:
    Flink with parallelism 2)."""
    if engine.startswith("bytewax"):
        return run_bytewax(args, topic, name, work, engine)
    if engine.startswith("pyflink"):
        return run_pyflink(args, topic, name, work, engine)
    return PEER_RUNNERS[engine](args, topic, name, work)


def expand_configs(engines: list[str], args: argparse.Namespace) -> list[str]:
    """One engine per configuration to try: ``bytewax`` with ``--bytewax-processes 1,2``
    becomes ``bytewax-p1`` and ``bytewax-p2``; ``pyflink`` with ``--flink-parallelism``."""
    lists = {"bytewax": args.bytewax_processes, "pyflink": args.flink_parallelism}
    out = []
    for engine in engines:
        values = [v.strip() for v in lists.get(engine, "").split(",") if v.strip()]
        out += [f"{engine}-p{int(v)}" for v in values] if len(values) > 1 else [engine]
    return out


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        total += n
        frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")")
                  for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not total:
        return "profile: no samples"
    lines = [f"py-spy: {total} samples; top by self time:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in sorted(own.items(), key=lambda x: -x[1])[:top]]
    lines.append("top by inclusive time:")
    lines += [f"  {n / total:6.1%}  {f}"
              for f, n in sorted(incl.items(), key=lambda x: -x[1])[:top]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- report
def report(args: argparse.Namespace, info: dict[str, str], produce_s: float,
           results: list[RunResult]) -> str:
    mib = 1024 * 1024
    lines = [
        f"## {info['date']}: {args.events:,} events, {args.entities:,} entities, "
        f"{args.partitions} partitions" + (f", key skew {args.skew:g}" if args.skew != 1.1 else ""),
        "",
        f"- machine: `{info['uname']}`",
        f"- CPU: {info['cpu']}; Python {info['python']}",
        f"- command: `{' '.join(sys.argv)}`",
        f"- produce: {args.events / produce_s:,.0f} events/s ({produce_s:.1f} s)",
        "",
        "| engine | events/s | seconds | peak RSS MiB | RSS at half MiB | Redis keys "
        "| exit | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.engine} | {r.rate:,.0f} | {r.seconds:.1f} | {r.peak_rss / mib:,.0f} "
            f"| {r.rss_half / mib:,.0f} | {r.keys:,} | {r.exit_code} | {r.note} |"
        )
    for sf in results:
        if not sf.engine.startswith("streamfeat") or sf.exit_code != 0:
            continue
        for r in results:
            if (not r.engine.startswith("streamfeat") and (r.exit_code == 0 or r.killed)
                    and r.rate):
                lines.append(f"\n{sf.engine} / {r.engine}: {sf.rate / r.rate:.1f}x")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--only", default="streamfeat,quix,faust",
                        help="comma-separated engines: streamfeat, quix (= quix-tumbling and "
                        "quix-sliding), quix-tumbling, quix-sliding, faust, bytewax, pyflink")
    parser.add_argument("--bytewax-processes", default="1",
                        help="Bytewax processes; a list (1,2) runs Bytewax once per value")
    parser.add_argument("--bytewax-workers", type=int, default=1,
                        help="Bytewax workers (threads) per process")
    parser.add_argument("--bytewax-batch", type=int, default=1000,
                        help="records per poll of Bytewax's KafkaSource (its default: 1000)")
    parser.add_argument("--bytewax-epoch", type=float, default=10.0,
                        help="seconds of a Bytewax epoch (its default: 10); each epoch ends "
                        "with a deep copy of the touched keys' window state")
    parser.add_argument("--flink-parallelism", default="1",
                        help="Flink's parallelism.default; a list (1,2) runs Flink once per "
                        "value")
    parser.add_argument("--peer-events", type=int, default=None,
                        help="the peers stop after this many events (default: all); their "
                        "events/s is then over that first part of the topic")
    parser.add_argument("--quix-sliding", choices=("hopping", "exact"), default="hopping",
                        help="Quix's equivalent of a sliding window (see peers/quix_app.py)")
    parser.add_argument("--no-snapshots", action="store_true",
                        help="run the streamfeat worker without --snapshot-dir")
    parser.add_argument("--profile", action="store_true",
                        help="record the streamfeat worker with py-spy (peers venv)")
    parser.add_argument("--peer-timeout", type=float, default=1800,
                        help="stop a peer after this many seconds and rate it on its progress")
    parser.add_argument("--max-rss-gib", type=int, default=8,
                        help="stop a peer whose processes hold more memory than this")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skew", type=float, default=1.1,
                        help="key skew: entity i is 1/(i+1)**skew as frequent as the first "
                        "(0: uniform keys, every entity about equally often)")
    parser.add_argument("--sf-args", default="", metavar="'ARGS'",
                        help="more arguments for the streamfeat worker, e.g. "
                        "'--state-cache-mb 0' (split on spaces)")
    parser.add_argument("--sf-memory-limit-mb", type=float, default=None, metavar="MB",
                        help="run the streamfeat worker in a memory cgroup of this limit (as "
                        "in a container; needs root), so that it sizes its state budget "
                        "from it; the note gives the cgroup's peak")
    parser.add_argument("--event-rate", type=float, default=200.0,
                        help="events per second of event time (200: 1M events span 1.4 h; "
                        "10: 1M span 28 h, so the 1d windows are full, for memory runs)")
    parser.add_argument("--sf-runtime", default="faust,kafka",
                        help="streamfeat worker runtime(s), each run in turn: faust (the "
                        "worker's default), kafka, or faust,kafka (default: both)")
    parser.add_argument("--sf-processes", type=int, default=1,
                        help="streamfeat worker processes (one group; one core each)")
    parser.add_argument("--format", default="json",
                        help="record format(s) of the streamfeat runs: json, avro, or json,avro "
                        "(each on a topic of its own, same events); the peers read json")
    parser.add_argument("--topology", type=Path, default=None, metavar="PATH",
                        help="streamfeat runs on this topology (its name and source topic "
                        "are replaced per run) instead of peers/bench_topology.yaml; the "
                        "peers are unchanged")
    parser.add_argument("--keep", action="store_true", help="keep the run's topics and keys")
    parser.add_argument("--kafka", default=None, help="bootstrap servers (env STREAMFEAT_KAFKA)")
    parser.add_argument("--redis", default=None, help="Redis URL (env STREAMFEAT_REDIS)")
    args = parser.parse_args()
    args.kafka = resolve_kafka(args.kafka)
    args.redis = resolve_redis(args.redis)
    if args.peer_events is None or args.peer_events > args.events:
        args.peer_events = args.events
    engines = [x for e in args.only.split(",") if e.strip()
               for x in ALIASES.get(e.strip(), (e.strip(),))]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    engines = expand_configs(engines, args)
    runtimes = [r.strip() for r in args.sf_runtime.split(",") if r.strip()]
    if not runtimes or set(runtimes) - {"faust", "kafka"}:
        parser.error(f"--sf-runtime takes faust, kafka or both (faust,kafka), not "
                     f"{args.sf_runtime!r}")
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if not formats or set(formats) - {"json", "avro"}:
        parser.error(f"--format takes json, avro or json,avro, not {args.format!r}")
    if "json" not in formats and any(not e.startswith("streamfeat") for e in engines):
        parser.error("the peers read json only: add json to --format, or --only streamfeat")
    if args.profile or any(not e.startswith(("streamfeat", "pyflink")) for e in engines):
        peers_python()
    if any(e.startswith("pyflink") for e in engines):
        flink_python()
        flink_kafka_jar()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on a kill too
    run_id = dt.datetime.now(dt.UTC).strftime("b%Y%m%d%H%M%S")
    topic = f"bench.{run_id}"
    info = machine()
    admin = AdminClient({"bootstrap.servers": args.kafka})
    client = redis.Redis.from_url(args.redis)
    work = Path(tempfile.mkdtemp(prefix=f"streamfeat-{run_id}-"))
    results: list[RunResult] = []
    topics = {fmt: topic if fmt == "json" else f"{topic}.{fmt}" for fmt in formats}
    try:
        produce_s = 0.0
        for fmt, fmt_topic in topics.items():
            create_topic(admin, fmt_topic, args.partitions)
            print(f"producing {args.events:,} {fmt} events to {fmt_topic} ...", flush=True)
            seconds = produce(args.kafka, fmt_topic, args.events, args.entities, args.seed,
                              args.event_rate, fmt, args.skew)
            produce_s = produce_s or seconds  # the report's figure: the first format's
            print(f"  {args.events / seconds:,.0f} events/s", flush=True)
        own = ("streamfeat", "streamfeat-rekeyed")
        runs = [(f"{e}-{rt}" + ("" if fmt == "json" else f"-{fmt}"), rt, fmt)
                if e in own else (e, "", "json") for e in engines
                for rt in (runtimes if e in own else ("",))
                for fmt in (formats if e in own else ("json",))]
        for engine, runtime, fmt in runs:
            name = f"{run_id}_{engine.replace('-', '_')}"
            print(f"running {engine} ...", flush=True)
            if runtime:
                result = run_streamfeat(argparse.Namespace(**{**vars(args),
                                                               "sf_runtime": runtime}),
                                        topics[fmt], name, work, engine,
                                        rekeyed=engine.startswith("streamfeat-rekeyed"),
                                        fmt=fmt)
            else:
                result = run_peer(args, engine, topic, name, work)
            result.keys = count_keys(client, name)
            if result.exit_code != 0 and not result.killed:
                kept = BENCH / "results" / f"{name}.log"
                kept.parent.mkdir(exist_ok=True)
                shutil.copy(work / f"{engine}.log", kept)
                result.note += f" FAILED (log: {kept.relative_to(ROOT)})"
                print(kept.read_text(errors="replace")[-2000:], file=sys.stderr)
            print(f"  {result.rate:,.0f} events/s, {result.seconds:.1f} s, peak RSS "
                  f"{result.peak_rss / 2**20:,.0f} MiB, {result.keys:,} keys", flush=True)
            results.append(result)
            if not args.keep:
                delete_keys(client, name)
    finally:
        if not args.keep:
            delete_topics(admin, run_id)
            shutil.rmtree(work, ignore_errors=True)
    text = report(args, info, produce_s, results)
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"{dt.date.today().isoformat()}-harness.md"
    with out.open("a") as fh:
        fh.write(text + "\n")
    print("\n" + text)
    print(f"appended to {out.relative_to(ROOT)}")
    print(json.dumps({r.engine: round(r.rate) for r in results}))


if __name__ == "__main__":
    main()
