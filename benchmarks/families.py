"""Throughput of PartitionOperator per aggregation family, in-process (no Kafka or Redis).

The harness's order events (``streamfeat.generator.OrderEvents``: 10k users with Zipf-like
popularity, 200 events per second of event time, 30 s disorder, 0.2 % late by an hour),
decoded once, then fed to one operator per family in batches of ``--batch`` (the worker's
default 20,000), each batch followed by ``value_columns(touched)`` and ``due(batch end)``
as the worker does (before session 13 it read ``values``, which builds a dict per entity
the worker never builds: 3-5 % of a run). Each family runs alone on a topology of its
features from ``benchmarks/topologies/rich.yaml`` (``rich`` is all of them together, ``orders`` is
``topologies/orders.yaml``, ``bench`` the harness's benchmark topology). Prints events/s
per family (CPU time, best of ``--repeat``) and, with ``--profile``, a cProfile of each.
Python's collector runs at the worker's thresholds (``streamfeat.memory``); ``--gc
default`` runs it at the interpreter's defaults instead (the worker before session 9), and
``--gc both`` alternates the two per topology, printing both rates and the gain.

    .venv/bin/python benchmarks/families.py [--events N] [--batch B] [--only a,b]
        [--repeat R] [--commit-every BATCHES] [--profile] [--pure]
        [--gc worker|default|both]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import gc
import pstats
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from streamfeat.generator import OrderEvents
from streamfeat.memory import fewer_collections
from streamfeat.operators import PartitionOperator
from streamfeat.topology import load_topology
from streamfeat.topology.definitions import TopologyDef

ROOT = Path(__file__).resolve().parent.parent
RICH = ROOT / "benchmarks" / "topologies" / "rich.yaml"
ORDERS = ROOT / "topologies" / "orders.yaml"
BENCH = ROOT / "benchmarks" / "peers" / "bench_topology.yaml"

FAMILIES = {  # family -> features of rich.yaml
    "count_distinct": ("merchants",),
    "percentile": ("amount_p95",),
    "top_k": ("top_merchants",),
    "session": ("session_orders", "session_amount"),
    "last_k": ("last_amounts",),
    "exact_stddev": ("amount_stddev",),
}


def topologies() -> dict[str, TopologyDef]:
    rich = load_topology(RICH)
    out = {name: dataclasses.replace(rich, features=tuple(
        f for f in rich.features if f.name in names)) for name, names in FAMILIES.items()}
    out["rich"] = rich
    out["orders"] = load_topology(ORDERS)
    out["bench"] = load_topology(BENCH)
    return out


def events(n: int) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    decode = msgspec.json.decode
    keys, ts, records = [], [], []
    for ev in OrderEvents(entities=10_000, seed=7, start_ms=1_700_000_000_000).events(n):
        keys.append(ev.key.decode())
        ts.append(ev.ts)
        records.append(decode(ev.value))
    return keys, np.asarray(ts, dtype=np.int64), records


def run(topology: TopologyDef, keys: list[str], ts: np.ndarray, records: list[Any],
        batch: int, pure: bool = False, commit_every: int = 10) -> float:
    op = PartitionOperator(topology, 0, pure=pure)
    start = time.process_time()  # CPU time: the machine is shared
    for lo in range(0, len(keys), batch):
        hi = min(lo + batch, len(keys))
        result = op.process(keys[lo:hi], ts[lo:hi], records[lo:hi])
        op.value_columns(list(result.touched))  # the worker's read: columns, no dicts
        due = op.due(int(op.stream_time or 0))
        if due:
            op.value_columns(list(due))
        if (lo // batch) % commit_every == commit_every - 1:
            op.take_dirty()  # a commit (every 5 s in the worker)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join([*FAMILIES, "rich", "orders", "bench"]))
    parser.add_argument("--commit-every", type=int, default=10, metavar="BATCHES",
                        help="take the changed state (a commit) every BATCHES batches; the "
                             "worker commits every 5 s: at 50k events/s and batches of "
                             "100k, every 2")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--pure", action="store_true",
                        help="the reference window kinds (the code before issue #18's fast paths)")
    parser.add_argument("--gc", choices=("worker", "default", "both"), default="worker",
                        help="the collector's thresholds: the worker's (streamfeat.memory), "
                             "the interpreter's, or both alternated")
    args = parser.parse_args()
    tops = topologies()
    keys, ts, records = events(args.events)
    n = len(keys)
    print(f"{n:,} events, {len(set(keys)):,} entities, batch {args.batch:,}, a commit every "
          f"{args.commit_every} batches"
          + (", pure (reference) kinds" if args.pure else ""))
    for name in args.only.split(","):
        topology = tops[name]
        if args.profile:
            prof = cProfile.Profile()
            with _collector("default" if args.gc == "default" else "worker"):
                prof.enable()
                run(topology, keys, ts, records, args.batch, args.pure, args.commit_every)
                prof.disable()
            print(f"--- {name}")
            pstats.Stats(prof).sort_stats("tottime").print_stats(14)
            continue
        modes = ["worker", "default"] if args.gc == "both" else [args.gc]
        best = dict.fromkeys(modes, float("inf"))
        for _ in range(args.repeat):
            for mode in modes:  # alternated: the machine's load moves both alike
                with _collector(mode):
                    best[mode] = min(best[mode], run(topology, keys, ts, records, args.batch,
                                                     args.pure, args.commit_every))
        rates = "  ".join(f"{n / best[m]:>10,.0f} events/s ({best[m]:.2f} s, {m} gc)"
                          for m in modes)
        gain = (f"  worker/default {best['default'] / best['worker']:.2f}x"
                if args.gc == "both" else "")
        print(f"{name:>15}: {rates}{gain}", flush=True)


@contextlib.contextmanager
def _collector(mode: str) -> Iterator[None]:
    """The worker's collector thresholds, or the interpreter's defaults (700, 10, 10),
    within the block; the thresholds there were after it."""
    if mode == "worker":
        with fewer_collections():
            yield
        return
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*before)


if __name__ == "__main__":
    main()
