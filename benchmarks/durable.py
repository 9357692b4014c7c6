"""What durable state costs and how fast a new host restores it (issue #14).

    .venv/bin/python benchmarks/durable.py [--events 1000000] [--entities 100000,1000000]
        [--partitions 4] [--checkpoint-dir PATH|URL] [--keep]

For each entity count: produces N events of the standard benchmark topology
(benchmarks/peers/bench_topology.yaml) into a fresh topic; runs the worker to the end twice,
on fresh state, with ``--checkpoint-dir none`` (local state only, today's figure) and with
checkpoints (default: a local folder; an ``s3://`` URL measures a real object store), the
runs alternating so that both see the same machine; then starts a "new host" (empty
``--state-dir``, same checkpoints) and reads its restore times from its log. Prints the rates,
the slowdown, the checkpoint bytes written per second, and the restore time and size;
appends them to benchmarks/results/<date>-durable.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from streamfeat.config import resolve_kafka, resolve_redis

from harness import (
    BENCH,
    TOPOLOGY,
    create_topic,
    delete_topics,
    machine,
    produce,
    run_worker,
)

_RESTORED = re.compile(r"restored from .* \((\d+) objects, ([\d.]+) MB\) in ([\d.]+) s")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", default="100000,1000000")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode, alternating")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="where checkpoints go (default: a local temporary folder)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    kafka, redis_url = resolve_kafka(None), resolve_redis(None)
    admin = AdminClient({"bootstrap.servers": kafka})
    info = machine()
    lines = [f"## Durable state: cost and restore — {info['date']}", "",
             f"- machine: {info['cpu']}; {info['uname']}; Python {info['python']}",
             f"- {args.events:,} events, {args.partitions} partitions, benchmark topology; "
             f"checkpoints in {args.checkpoint_dir or 'a local folder'}", "",
             "| entities | local only (ev/s) | with checkpoints (ev/s) | slower by | "
             "checkpoint MB written (MB/s) | restore: objects, MB, seconds (all partitions) |",
             "|---|---|---|---|---|---|"]
    for entities in (int(x) for x in args.entities.split(",")):
        run_id = f"dur{uuid.uuid4().hex[:8]}"
        work = Path(tempfile.mkdtemp(prefix="streamfeat-durable-"))
        try:
            topic = f"{run_id}-orders"
            topology = work / "t.yaml"
            topology.write_text(TOPOLOGY.read_text().replace("BENCH_NAME", run_id)
                                .replace("BENCH_TOPIC", topic))
            create_topic(admin, topic, args.partitions)
            print(f"{entities:,} entities: producing {args.events:,} events ...", flush=True)
            produce(kafka, topic, args.events, entities, seed=13)
            rates: dict[str, list[float]] = {"none": [], "durable": []}
            written = 0.0
            store = ""
            for r in range(args.rounds):
                for mode in ("none", "durable"):
                    store = (args.checkpoint_dir.rstrip("/") + f"/{run_id}-{r}"
                             if args.checkpoint_dir else str(work / f"ckpt-{r}"))
                    flag = "none" if mode == "none" else store
                    seconds = run_worker(topology, work / f"state-{mode}-{r}",
                                         work / f"{mode}-{r}.log", "--checkpoint-dir", flag,
                                         "--group", f"{run_id}-{mode}-{r}", "--kafka", kafka,
                                         "--redis", redis_url)
                    rates[mode].append(args.events / seconds)
                    print(f"  {mode}: {args.events / seconds:,.0f} ev/s", flush=True)
                    if mode == "durable" and not args.checkpoint_dir:
                        written = folder_bytes(Path(store)) / seconds
            log = work / "restore.log"
            run_worker(topology, work / "new-host", log, "--checkpoint-dir", store,
                       "--group", f"{run_id}-restore", "--kafka", kafka, "--redis", redis_url)
            objects = size = seconds_total = 0.0
            for m in _RESTORED.finditer(log.read_text()):
                objects += int(m[1])
                size += float(m[2])
                seconds_total += float(m[3])
            best_none, best_durable = max(rates["none"]), max(rates["durable"])
            slower = 1 - best_durable / best_none
            mb_s = f"{written / 1e6:.1f}" if written else "n/a (remote)"
            lines.append(f"| {entities:,} | {best_none:,.0f} | {best_durable:,.0f} | "
                         f"{slower:.0%} | {mb_s} | {objects:.0f}, {size:.1f}, "
                         f"{seconds_total:.1f} |")
            print(lines[-1], flush=True)
        finally:
            if not args.keep:
                delete_topics(admin, run_id)
                shutil.rmtree(work, ignore_errors=True)
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    out = BENCH / "results" / f"{info['date'][:10]}-durable.md"
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as f:
        f.write(report + "\n")
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
