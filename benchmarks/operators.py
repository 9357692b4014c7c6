"""Throughput of PartitionOperator on one core.

1M events over 10k entities (Zipf-ish skew), mostly in event-time order with
some disorder, spanning a few hours; count, sum and mean over 5m, 1h and 1d
sliding windows (default hops). Prints events/s of ``process`` alone and of
``process`` + ``values(touched)``, and the mean serialized state per entity.
``--all-families`` adds the per-event window kinds (exact and session windows;
``count_distinct``, ``percentile``, ``last``, ``last_k``, ``top_k``), which loop
in Python: use fewer events with it.

    .venv/bin/python benchmarks/operators.py [--events N] [--batch B] [--all-families]
        [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from typing import Any

import numpy as np

from streamfeat.operators import PartitionOperator
from streamfeat.topology.definitions import (
    AggKind,
    FeatureDef,
    SourceDef,
    TopologyDef,
    WindowDef,
    WindowKind,
    default_hop_ms,
)

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def topology(all_families: bool = False) -> TopologyDef:
    windows = tuple(
        WindowDef(WindowKind.SLIDING, size, default_hop_ms(size), label)
        for size, label in ((5 * MINUTE, "5m"), (HOUR, "1h"), (DAY, "1d"))
    )
    features: tuple[FeatureDef, ...] = (
        FeatureDef("orders", AggKind.COUNT, windows),
        FeatureDef("amount_sum", AggKind.SUM, windows, field="amount"),
        FeatureDef("amount_mean", AggKind.MEAN, windows, field="amount"),
    )
    if all_families:
        exact = WindowDef(WindowKind.SLIDING, 10 * MINUTE, None, "10m_exact", exact=True)
        session = WindowDef(WindowKind.SESSION, 30 * MINUTE, None, "session")
        features += (
            FeatureDef("amount_max", AggKind.MAX, (exact, session), field="amount"),
            FeatureDef("statuses", AggKind.COUNT_DISTINCT, windows[:2], field="status"),
            FeatureDef("amount_p90", AggKind.PERCENTILE, windows[1:2], field="amount", q=0.9),
            FeatureDef("last_status", AggKind.LAST, (windows[0], session), field="status"),
            FeatureDef("recent", AggKind.LAST_K, windows[:1], field="amount", k=3),
            FeatureDef("top_status", AggKind.TOP_K, windows[1:2], field="status", k=1),
        )
    return TopologyDef(name="orders", source=SourceDef(topic="orders", key="user_id"),
                       features=features, lateness_ms=5 * MINUTE)


def generate(n: int, entities: int, seed: int = 7) -> tuple[list[str], np.ndarray, list[Any]]:
    rng = np.random.default_rng(seed)
    ranks = rng.zipf(1.3, size=n)
    ids = (ranks - 1) % entities
    names = [f"user-{i}" for i in range(entities)]
    keys = [names[i] for i in ids.tolist()]
    span = 3 * HOUR
    base = 1_700_000_000_000 + np.sort(rng.integers(0, span, size=n))
    jitter = np.where(rng.random(n) < 0.1, rng.integers(-2 * MINUTE, 0, size=n), 0)
    ts = (base + jitter).astype(np.int64)
    amounts = np.round(rng.gamma(2.0, 20.0, size=n), 2).tolist()
    status = rng.choice(["completed", "pending"], size=n).tolist()
    records = [{"user_id": k, "amount": a, "status": s}
               for k, a, s in zip(keys, amounts, status, strict=True)]
    return keys, ts, records


def run(keys: list[str], ts: np.ndarray, records: list[Any], batch: int,
        with_values: bool, all_families: bool) -> tuple[float, PartitionOperator]:
    op = PartitionOperator(topology(all_families), 0)
    start = time.perf_counter()
    for lo in range(0, len(keys), batch):
        hi = lo + batch
        result = op.process(keys[lo:hi], ts[lo:hi], records[lo:hi])
        if with_values:
            op.values(result.touched)
            op.due(int(ts[min(hi, len(keys)) - 1]))
    return time.perf_counter() - start, op


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--all-families", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    keys, ts, records = generate(args.events, args.entities)
    n = len(keys)
    print(f"{n} events, {len(set(keys))} entities, batch {args.batch}"
          + (", all families" if args.all_families else ""))
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(keys, ts, records, args.batch, True, args.all_families)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        return
    best_p = min(run(keys, ts, records, args.batch, False, args.all_families)[0] for _ in range(3))
    print(f"process:          {n / best_p:>12,.0f} events/s ({best_p:.3f} s)")
    best_v = float("inf")
    op = None
    for _ in range(3):
        took, op = run(keys, ts, records, args.batch, True, args.all_families)
        best_v = min(best_v, took)
    print(f"process + values: {n / best_v:>12,.0f} events/s ({best_v:.3f} s)")
    assert op is not None
    start = time.perf_counter()
    dumped = op.dump_all()
    took = time.perf_counter() - start
    sizes = [len(b) for _, b in dumped]
    print(f"memory: {op.approx_state_bytes() / len(dumped):.0f} bytes/entity in RAM "
          f"(numpy rings and cell tables, {len(dumped)} entities)")
    print(f"state: {np.mean(sizes):.0f} bytes/entity mean, {np.median(sizes):.0f} median, "
          f"{max(sizes)} max; serializing {len(dumped)} entities took {took:.3f} s")


if __name__ == "__main__":
    main()
