"""State larger than memory, in-process: events/s and peak RSS as live entities grow.

    .venv/bin/python benchmarks/cache.py [--users 1000000,2000000,4000000]
        [--events-per-user 2] [--budget-mb 256,0] [--commit-every 5]
        [--batch 20000] [--hot-first 10000] [--no-split]

Drives one partition's :class:`~streamfeat.pipeline.PartitionPipeline` like the worker does
(batches of 20,000 records, the values of touched and due entities, a state commit every
``--commit-every`` batches, or sooner when the state held is over its budget as the worker
does), with uniform keys (every user about equally often), over the benchmark topology
(count, sum, mean over 5m, 1h, 1d sliding windows and a 1h tumbling one) and event times 10
per second apart so that every user's 1d window holds its events. No Kafka, no Redis: the
figures are the state's cost alone. Each configuration runs in a process of its own; its
peak RSS (``ru_maxrss``), events/s and CPU time per event are printed, with the entities
held in memory and stored at the end. Making each batch's records (JSON: 8 % of a py-spy
profile at a million users) is left out of the time, not of the memory. ``--budget-mb 0``:
every entity held, no eviction (the previous design).

``--hot-first N``: the first half of the events over N users only, the second half uniform
(a shift in the key mix: a worker whose batches grew on a hot set, at ``--batch`` records,
meets keys it does not hold). The pipeline takes a batch of too many new entities in parts
with a commit between, as the worker does (``--no-split``: whole, as before); the peak of
entities held is printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
T0 = 1_700_000_000_000
BATCH = 20_000


def run_one(users: int, events: int, budget_mb: float, commit_every: int, topology: Path,
            batch: int = BATCH, hot: int = 0, split: bool = True) -> dict[str, float]:
    from streamfeat.pipeline import PartitionPipeline
    from streamfeat.pipeline.cache import StateBudget
    from streamfeat.records import RecordBatch
    from streamfeat.state import PartitionStore
    from streamfeat.topology import load_topology

    topo = load_topology(topology)
    key, ts_field = topo.source.key, topo.source.timestamp or "ts"
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        store = PartitionStore(tmp, topo.name, topo.source.topic, 0)
        budget = StateBudget.of_mb(budget_mb) if budget_mb else None
        proc = PartitionPipeline(topo, 0, store=store, budget=budget)
        proc.split_batches = split
        peak_held = parts = 0
        started = time.perf_counter()
        cpu_started = time.process_time()
        offset = 0
        making = making_cpu = 0.0  # making the records: not the pipeline's time
        for batches, start in enumerate(range(0, events, batch), start=1):
            made, made_cpu = time.perf_counter(), time.process_time()
            n = min(batch, events - start)
            among = hot if hot and start < events // 2 else users
            ids = [f"u{rng.randrange(among)}" for _ in range(n)]
            times = [T0 + 100 * (start + i) for i in range(n)]
            values = [json.dumps({key: u, ts_field: t, "amount": 12.5}).encode()
                      for u, t in zip(ids, times, strict=True)]
            making += time.perf_counter() - made
            making_cpu += time.process_time() - made_cpu
            rest = RecordBatch(0, list(range(offset, offset + n)), times,
                               [u.encode() for u in ids], values)
            while rest:
                taken = proc.process(rest).consumed
                peak_held = max(peak_held, proc.operator.entity_count)
                rest = rest[taken:]
                if rest:  # the worker's carry: the rest after a commit
                    proc.commit()
                    parts += 1
            offset += n
            cache = proc.cache
            if batches % commit_every == 0 or (cache is not None and cache.pressed()):
                proc.commit()
        proc.commit()
        seconds = time.perf_counter() - started - making
        cpu = time.process_time() - cpu_started - making_cpu
        held = proc.operator.entity_count
        stored = sum(1 for _ in store.entity_ids())
        proc.close()
    return {"events_per_s": events / seconds, "seconds": seconds,
            "cpu_us_per_event": 1e6 * cpu / events, "held": held,
            "stored": stored, "peak_held": peak_held, "parts": parts,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", default="1000000,2000000,4000000")
    parser.add_argument("--events-per-user", type=float, default=2.0)
    parser.add_argument("--budget-mb", default="256,0")
    parser.add_argument("--commit-every", type=int, default=5, metavar="BATCHES")
    parser.add_argument("--topology", type=Path, default=HERE / "peers" / "bench_topology.yaml")
    parser.add_argument("--batch", type=int, default=BATCH, metavar="RECORDS")
    parser.add_argument("--hot-first", type=int, default=0, metavar="USERS")
    parser.add_argument("--no-split", action="store_true")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # users,budget (child)
    args = parser.parse_args()
    if args.one is not None:
        users, budget = args.one.split(",")
        out = run_one(int(users), int(int(users) * args.events_per_user), float(budget),
                      args.commit_every, args.topology, args.batch, args.hot_first,
                      not args.no_split)
        print(json.dumps(out))
        return
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    mix = (f"the first half over {args.hot_first:,} users, then uniform" if args.hot_first
           else "uniform users")
    print(f"# state cache: {mix}, {args.events_per_user:g} events per user, batches of "
          f"{args.batch:,}{' (not split)' if args.no_split else ''}, {args.topology.name}; "
          f"{platform.node()} {platform.machine()}, {now}")
    print("| users | --state-cache-mb | events/s | CPU µs/event | peak RSS MiB | held in memory "
          "| peak held | parts after a commit | stored |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for users in [int(u) for u in args.users.split(",")]:
        for budget in [float(b) for b in args.budget_mb.split(",")]:
            done = subprocess.run(
                [sys.executable, __file__, "--one", f"{users},{budget:g}",
                 "--events-per-user", str(args.events_per_user),
                 "--commit-every", str(args.commit_every), "--topology", str(args.topology),
                 "--batch", str(args.batch), "--hot-first", str(args.hot_first),
                 *(["--no-split"] if args.no_split else [])],
                capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"| {users:,} | {budget:g} | failed: {done.stderr.strip()[-300:]} |")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {users:,} | {budget:g}{' (all held)' if not budget else ''} | "
                  f"{r['events_per_s']:,.0f} | {r['cpu_us_per_event']:.1f} | "
                  f"{r['peak_rss_mib']:,.0f} | {r['held']:,} | {r['peak_held']:,} | "
                  f"{r['parts']:,} | {r['stored']:,} |", flush=True)


if __name__ == "__main__":
    main()
