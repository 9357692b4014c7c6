"""How long a definition change takes: a new 1d window computed from 1M records of history.

    .venv/bin/python benchmarks/evolution.py [--events 1000000] [--entities 10000]
        [--partitions 4] [--keep]

Produces N skewed order events into a fresh topic, runs the worker on the standard
benchmark topology (v1, benchmarks/peers/bench_topology.yaml) with ``--stop-at-end`` and
snapshots, then restarts it on v2 (v1 plus ``big_orders``: a count with a ``where`` over a
1d window, which shares no state with v1) twice, each on a copy of v1's state: once with
the snapshots (history read from Parquet) and once without (history read from the topic).
Printed: the worker's own rate on v1, the recomputation's rate (records of history per
second, from the worker's log), the time until the change was applied, and their ratio.
Figures are appended to benchmarks/results/<date>-evolution.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from streamfeat.config import resolve_kafka, resolve_redis

from harness import (  # benchmarks/harness.py
    BENCH,
    TOPOLOGY,
    create_topic,
    delete_topics,
    machine,
    produce,
    run_worker,
)

NEW_FEATURE = """\
  - name: big_orders
    agg: count
    where: "amount > 100"
    windows: [1d]
"""
_HISTORY = re.compile(r"(\d+) records of history in ([\d.]+) s")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def _at(line: str) -> float:
    m = _STAMP.match(line)
    if m is None:
        raise ValueError(f"no time stamp in {line!r}")
    return datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def change_figures(log: Path) -> tuple[int, float]:
    """Records of history read, and the seconds from the first partition's start of the
    recomputation to the last one's change applied (partitions are recomputed one after
    the other, between the live batches)."""
    lines = log.read_text().splitlines()
    records = sum(int(m[1]) for m in map(_HISTORY.search, lines) if m)
    starts = [_at(x) for x in lines if "from history:" in x and "computing" in x]
    ends = [_at(x) for x in lines if "definition change applied" in x]
    if not starts or not ends:
        raise SystemExit(f"no definition change in the log:\n{log.read_text()[-3000:]}")
    return records, max(ends) - min(starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the topic and the work dir")
    args = parser.parse_args()
    kafka, redis_url = resolve_kafka(None), resolve_redis(None)
    run_id = f"evo{uuid.uuid4().hex[:8]}"
    name, topic = run_id, f"{run_id}-orders"
    admin = AdminClient({"bootstrap.servers": kafka})
    work = Path(tempfile.mkdtemp(prefix="streamfeat-evolution-"))
    info = machine()
    try:
        text = TOPOLOGY.read_text().replace("BENCH_NAME", name).replace("BENCH_TOPIC", topic)
        v1, v2 = work / "v1.yaml", work / "v2.yaml"
        v1.write_text(text)
        v2.write_text(text.replace("defaults:", NEW_FEATURE + "defaults:") if "defaults:" in text
                      else text + NEW_FEATURE)
        create_topic(admin, topic, args.partitions)
        print(f"producing {args.events} events ...", flush=True)
        produce_s = produce(kafka, topic, args.events, args.entities, seed=11)
        snaps = work / "snapshots"
        print("v1: the worker over every record ...", flush=True)
        v1_s = run_worker(v1, work / "state-v1", work / "v1.log", "--snapshot-dir", str(snaps),
                          "--kafka", kafka, "--redis", redis_url)
        rows = []
        for label, extra in (("from snapshots", ["--snapshot-dir", str(snaps)]),
                             ("from the topic", [])):
            state = work / f"state-{len(rows)}"
            shutil.copytree(work / "state-v1", state)
            log = work / f"v2-{len(rows)}.log"
            print(f"v2 {label} ...", flush=True)
            wall = run_worker(v2, state, log, "--kafka", kafka, "--redis", redis_url,
                              "--group", f"{name}-{len(rows)}", *extra)
            records, applied = change_figures(log)
            rows.append((label, records, applied, wall))
        worker_rate = args.events / v1_s
        lines = [
            f"## Definition change: a new 1d window over {args.events:,} records — "
            f"{info['date']}",
            "",
            f"- machine: {info['cpu']}; {info['uname']}; Python {info['python']}",
            f"- {args.partitions} partitions, {args.entities:,} entities; produced in "
            f"{produce_s:.1f} s",
            f"- worker on v1 (every record, snapshots on): {v1_s:.1f} s, "
            f"{worker_rate:,.0f} records/s",
            "",
            "| history | records read | change applied after (s) | records/s | "
            "vs the worker's rate | v2 run, start to exit (s) |",
            "|---|---|---|---|---|---|",
        ]
        for label, records, applied, wall in rows:
            rate = records / applied if applied > 0 else float("inf")
            lines.append(f"| {label} | {records:,} | {applied:.1f} | {rate:,.0f} | "
                         f"{rate / worker_rate:.2f} | {wall:.1f} |")
        report = "\n".join(lines) + "\n"
        print("\n" + report)
        out = BENCH / "results" / f"{info['date'][:10]}-evolution.md"
        out.parent.mkdir(exist_ok=True)
        with out.open("a") as f:
            f.write(report + "\n")
        print(f"appended to {out}")
    finally:
        if not args.keep:
            delete_topics(admin, run_id)
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work} and topics {run_id}*")


if __name__ == "__main__":
    main()
