"""What value monitoring costs the worker: its rate with monitoring on and off, same topic.

    .venv/bin/python benchmarks/monitoring.py [--events 1000000] [--entities 10000]
        [--partitions 4] [--pairs 3] [--runtime faust] [--interval 60] [--keep]
    .venv/bin/python benchmarks/monitoring.py --observe   # the monitor alone, no Kafka

Produces N skewed order events into a fresh topic once, then runs the worker on the
standard benchmark topology (benchmarks/peers/bench_topology.yaml: ten fields) with
``--stop-at-end`` and snapshots, ``--pairs`` times with monitoring on and off, alternating
which goes first (on/off, off/on, ...), so that a slow phase of a shared machine falls on
both modes. Each run has its own topology name (fresh Redis keys: no run's writes are
refused as already applied), consumer group, state and snapshot directories.

Printed, per run: the rate from the first partition assigned to caught up (the part where
records flow; the wall time also holds start-up and the final flush), the wall time, and
with monitoring on the time the worker's loop spent sketching (from its log). Figures are
appended to benchmarks/results/<date>-monitoring.md.

``--observe``: ``ValueMonitor.observe`` alone (no Kafka, no Redis, no worker) on batches of
the benchmark topology's ten fields, 1 to 20,000 entities a batch: its cost per batch and
per value, best of five (a worker keeping up with a stream writes a few entities a batch,
one catching up thousands).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import redis
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from streamfeat.config import resolve_kafka, resolve_redis
from streamfeat.monitoring import ValueMonitor
from streamfeat.sinks import UpdateBatch, version
from streamfeat.topology import load_topology

from harness import (  # benchmarks/harness.py
    BENCH,
    TOPOLOGY,
    _steady_seconds,
    create_topic,
    delete_keys,
    delete_topics,
    machine,
    produce,
    run_worker,
)


def observe_only() -> None:
    """The cost of ``ValueMonitor.observe`` per batch and per value (module docstring)."""
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(TOPOLOGY.read_text().replace("BENCH_NAME", "bench")
                        .replace("BENCH_TOPIC", "bench"))
        topology = load_topology(path)
    fields = topology.redis_fields()
    rng = random.Random(1)
    lines = [f"## ValueMonitor.observe alone — {info['date']}", "",
             f"- machine: {info['cpu']}; {info['uname']}; Python {info['python']}",
             f"- the benchmark topology's {len(fields)} fields (counts as ints, sums as "
             "floats, means as floats with 10 % None); best of 5", "",
             "| entities a batch | µs a batch | ns a value |", "|---:|---:|---:|"]
    for n in (1, 10, 50, 500, 5000, 20000):
        columns = [[rng.randrange(1, 50) for _ in range(n)] if f.startswith("orders")
                   else [None if rng.random() < 0.1 else rng.random() * 100 for _ in range(n)]
                   if "mean" in f else [rng.random() * 1000 for _ in range(n)]
                   for f in fields]
        batch = UpdateBatch([f"u{i}" for i in range(n)], fields, columns, 5, version(0, 0, 5))
        monitor = ValueMonitor([topology], None)
        reps = max(3, 400_000 // (n * len(fields)))
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(reps):
                monitor.observe("bench", [batch])
            best = min(best, (time.perf_counter() - started) / reps)
        monitor.close_interval()
        lines.append(f"| {n:,} | {best * 1e6:,.1f} | {best / (n * len(fields)) * 1e9:,.1f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    out = BENCH / "results" / f"{info['date'][:10]}-monitoring.md"
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as f:
        f.write(report + "\n")
    print(f"appended to {out}")


_COST = re.compile(r"value monitoring of \S+: (\d+) values in (\d+) intervals, ([\d.]+) s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--runtime", default="faust")
    parser.add_argument("--interval", type=float, default=60.0,
                        help="--monitor-interval of the runs with monitoring (default 60)")
    parser.add_argument("--keep", action="store_true", help="keep the topic and the work dir")
    parser.add_argument("--observe", action="store_true",
                        help="only time ValueMonitor.observe, without Kafka, Redis or a worker")
    args = parser.parse_args()
    if args.observe:
        observe_only()
        return
    kafka, redis_url = resolve_kafka(None), resolve_redis(None)
    run_id = f"mon{uuid.uuid4().hex[:8]}"
    topic = f"{run_id}-orders"
    admin = AdminClient({"bootstrap.servers": kafka})
    client = redis.Redis.from_url(redis_url)
    work = Path(tempfile.mkdtemp(prefix="streamfeat-monitoring-"))
    info = machine()
    rows: list[tuple[str, str, float, float, str]] = []
    try:
        create_topic(admin, topic, args.partitions)
        print(f"producing {args.events:,} events ...", flush=True)
        produce_s = produce(kafka, topic, args.events, args.entities, seed=13)
        for pair in range(args.pairs):
            modes = ("on", "off") if pair % 2 == 0 else ("off", "on")
            for mode in modes:
                name = f"{run_id}_{pair}_{mode}"
                path = work / f"{name}.yaml"
                path.write_text(TOPOLOGY.read_text().replace("BENCH_NAME", name)
                                .replace("BENCH_TOPIC", topic))
                log = work / f"{name}.log"
                extra = ["--monitor-interval", str(args.interval)] if mode == "on" \
                    else ["--no-monitor"]
                print(f"pair {pair + 1}, monitoring {mode} ...", flush=True)
                wall = run_worker(path, work / f"{name}-state", log, "--kafka", kafka,
                                  "--redis", redis_url, "--group", name, "--runtime",
                                  args.runtime, "--snapshot-dir",
                                  str(work / f"{name}-snapshots"), *extra)
                steady = _steady_seconds(log) or wall
                cost = ""
                m = _COST.search(log.read_text(errors="replace"))
                if m is not None:
                    cost = (f"{int(m[1]):,} values, {float(m[3]):.2f} s sketching "
                            f"({float(m[3]) / steady:.1%} of the steady time)")
                rows.append((f"{pair + 1}", mode, args.events / steady, wall, cost))
                print(f"  {args.events / steady:,.0f} events/s ({steady:.1f} s steady, "
                      f"{wall:.1f} s wall) {cost}", flush=True)
                delete_keys(client, name)
                shutil.rmtree(work / f"{name}-state", ignore_errors=True)
                shutil.rmtree(work / f"{name}-snapshots", ignore_errors=True)
        on = [r[2] for r in rows if r[1] == "on"]
        off = [r[2] for r in rows if r[1] == "off"]
        pairs = [(a[2], b[2]) for a in rows for b in rows if a[0] == b[0] and a[1] == "on"
                 and b[1] == "off"]
        change = [a / b - 1 for a, b in pairs]
        median = statistics.median(on) / statistics.median(off) - 1
        lines = [
            f"## Value monitoring on against off — {info['date']}",
            "",
            f"- machine: {info['cpu']}; {info['uname']}; Python {info['python']}",
            f"- {args.events:,} events, {args.entities:,} entities, {args.partitions} "
            f"partitions, produced in {produce_s:.1f} s; runtime {args.runtime}; the "
            f"benchmark topology (10 fields), snapshots on; --monitor-interval "
            f"{args.interval:g}",
            "",
            "| pair | monitoring | events/s (assigned → caught up) | wall (s) | sketching |",
            "|---|---|---:|---:|---|",
            *(f"| {p} | {mode} | {rate:,.0f} | {wall:.1f} | {cost} |"
              for p, mode, rate, wall, cost in rows),
            "",
            f"- median on {statistics.median(on):,.0f}, off {statistics.median(off):,.0f} "
            f"events/s: monitoring on {abs(median):.1%} {'faster' if median > 0 else 'slower'}"
            f"; on/off - 1 per pair: {', '.join(f'{c:+.1%}' for c in change)}",
        ]
        report = "\n".join(lines) + "\n"
        print("\n" + report)
        out = BENCH / "results" / f"{info['date'][:10]}-monitoring.md"
        out.parent.mkdir(exist_ok=True)
        with out.open("a") as f:
            f.write(report + "\n")
        print(f"appended to {out}")
    finally:
        client.close()
        if not args.keep:
            delete_topics(admin, run_id)
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work} and topic {topic}")


if __name__ == "__main__":
    main()
