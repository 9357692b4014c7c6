"""What a process pays before its first record: imports, resident memory, a short command.

    .venv/bin/python benchmarks/startup.py [--rounds 7] [--baseline DIR] [--worker]

Each measure runs ``--rounds`` times as a fresh process (from a temporary directory, so the
current directory shadows no package), and the median and minimum are printed:

- ``import streamfeat.client``: what a model server pays to read features (wall time of the
  import measured inside the process, its peak resident memory, the modules loaded);
- ``import streamfeat``: the package root;
- ``streamfeat validate topologies/orders.yaml``: a short command, start to exit;
- with ``--worker`` (Kafka and Redis from ``STREAMFEAT_KAFKA`` / ``STREAMFEAT_REDIS``):
  ``streamfeat worker --stop-at-end`` on a topic of 8 records, start to exit (imports,
  connection checks, the kernels' warm-up, joining the group, shutdown), a fresh group,
  topology name and state directory each time.

``--baseline DIR`` (a directory holding another tree's ``streamfeat/``, e.g.
``git worktree add /tmp/base <commit>``) runs every measure for it too, alternated with this
tree's in each round, through ``PYTHONPATH`` (found before the installed, editable one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
STREAMFEAT = ROOT / ".venv" / "bin" / "streamfeat"
TOPOLOGY = ROOT / "benchmarks" / "peers" / "bench_topology.yaml"

_IMPORT = """
import json, resource, sys, time
started = time.perf_counter()
import {module}
print(json.dumps({{"ms": (time.perf_counter() - started) * 1000,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "modules": len(sys.modules),
                  "numba": "numba" in sys.modules, "pyarrow": "pyarrow" in sys.modules}}))
"""


def _env(source: Path | None) -> dict[str, str]:
    env = {**os.environ}
    env.pop("PYTHONPATH", None)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return env


def import_of(module: str) -> Callable[[Path | None, Path], dict[str, float]]:
    def run(source: Path | None, work: Path) -> dict[str, float]:
        done = subprocess.run([str(PYTHON), "-c", _IMPORT.format(module=module)], cwd=work,
                              env=_env(source), capture_output=True, text=True, check=True)
        return dict(json.loads(done.stdout))
    return run


def _wall(cmd: list[str], source: Path | None, work: Path) -> dict[str, float]:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, env=_env(source), capture_output=True, text=True,
                          check=False)
    ms = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return {"ms": ms}


def validate(source: Path | None, work: Path) -> dict[str, float]:
    return _wall([str(STREAMFEAT), "validate", str(ROOT / "topologies" / "orders.yaml")],
                 source, work)


def worker_on(topic: str, kafka: str, redis_url: str) -> Callable[
        [Path | None, Path], dict[str, float]]:
    def run(source: Path | None, work: Path) -> dict[str, float]:
        name = f"startup{uuid.uuid4().hex[:10]}"
        topology = work / f"{name}.yaml"
        text = TOPOLOGY.read_text().replace("name: BENCH_NAME", f"name: {name}")
        topology.write_text(text.replace("topic: BENCH_TOPIC", f"topic: {topic}"))
        return _wall([str(STREAMFEAT), "worker", str(topology), "--kafka", kafka, "--redis",
                      redis_url, "--stop-at-end", "--state-dir", str(work / f"{name}-state"),
                      "--group", f"sf-{name}"], source, work)
    return run


def _topic(kafka: str) -> str:
    """A fresh topic of 8 records (4 partitions)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"startup.{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": kafka})  # (held until the topic exists)
    for future in admin.create_topics([NewTopic(topic, 4, 1)]).values():
        future.result()
    producer = Producer({"bootstrap.servers": kafka})
    for i in range(8):
        producer.produce(topic, key=f"u{i}", value=json.dumps(
            {"user_id": f"u{i}", "ts": 1_700_000_000_000 + i, "amount": 1.0}))
    producer.flush(30)
    return topic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR")
    parser.add_argument("--worker", action="store_true",
                        help="also a worker on an 8-record topic (needs Kafka and Redis)")
    args = parser.parse_args()
    sources: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.baseline is not None:
        base = args.baseline.resolve()
        if not (base / "streamfeat" / "__init__.py").exists():
            parser.error(f"--baseline {base} holds no streamfeat/ package")
        sources.insert(0, (f"{base}", base))
    measures: dict[str, Callable[[Path | None, Path], dict[str, float]]] = {
        "import streamfeat.client": import_of("streamfeat.client"),
        "import streamfeat": import_of("streamfeat"),
        "streamfeat validate": validate,
    }
    topic = None
    if args.worker:
        from streamfeat.config import resolve_kafka, resolve_redis

        kafka, redis_url = resolve_kafka(None), resolve_redis(None)
        topic = _topic(kafka)
        measures["streamfeat worker (8 records)"] = worker_on(topic, kafka, redis_url)
    uname = os.uname()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; {uname.sysname} "
          f"{uname.release} {uname.machine}; {os.cpu_count()} CPUs; Python "
          f"{sys.version.split()[0]}; {args.rounds} rounds, medians (min)")
    print("| measure | tree | ms | peak RSS MiB | modules | numba | pyarrow |")
    print("|---|---|---:|---:|---:|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, measure in measures.items():
            got: dict[str, list[dict[str, float]]] = {name: [] for name, _ in sources}
            for _ in range(args.rounds):
                for name, source in sources:  # alternated: the load moves both alike
                    got[name].append(measure(source, work))
            for name, _ in sources:
                runs = got[name]
                ms = [r["ms"] for r in runs]
                first = runs[0]
                rss = f"{statistics.median(r['rss_mib'] for r in runs):.0f}" \
                    if "rss_mib" in first else ""
                print(f"| {label} | {name} | {statistics.median(ms):,.0f} ({min(ms):,.0f}) | "
                      f"{rss} | {first.get('modules', '')} | {first.get('numba', '')} | "
                      f"{first.get('pyarrow', '')} |", flush=True)
    if topic is not None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": kafka})
        for future in admin.delete_topics([topic, f"{topic}.dlq"]).values():
            future.exception()  # (the dead-letter topic may not exist)


if __name__ == "__main__":
    main()
