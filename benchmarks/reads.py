"""Online reads through ``streamfeat.Client.get``: latency for 1 and for 100 entities.

    .venv/bin/python benchmarks/reads.py [--entities 10000] [--iterations 5000]

Writes ``--entities`` entities of topologies/orders.yaml (23 fields, under a unique
topology name) to Redis through the worker's RedisSink, then times
``Client.get(topology, ids, features)`` for one entity with every field and for 100
random entities with 20 fields each, and prints p50 / p99 / max. The keys are deleted at
the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from streamfeat.client import Client
from streamfeat.config import resolve_redis
from streamfeat.sinks import RedisSink, Update, version
from streamfeat.topology import load_topology
from streamfeat.topology.definitions import AggKind, TopologyDef

ROOT = Path(__file__).resolve().parent.parent
ORDERS = ROOT / "topologies" / "orders.yaml"


def value_for(agg: AggKind, rnd: random.Random) -> Any:
    if agg in (AggKind.LAST_K, AggKind.TOP_K):
        return [round(rnd.uniform(1, 500), 2) for _ in range(3)]
    if agg in (AggKind.FIRST, AggKind.LAST):
        return rnd.choice(["completed", "pending", "cancelled"])
    if agg in (AggKind.COUNT, AggKind.COUNT_DISTINCT):
        return rnd.randint(0, 500)
    return round(rnd.uniform(0, 5000), 4)


def fill(topology: TopologyDef, redis_url: str, entities: int) -> None:
    rnd = random.Random(7)
    fields = [(f.redis_field(w), f.agg) for f in topology.features for w in f.windows]
    now = int(time.time() * 1000)
    sink = RedisSink(redis_url, topology)
    try:
        for lo in range(0, entities, 2000):
            batch = [
                Update(f"u{i}", {name: value_for(agg, rnd) for name, agg in fields}, now,
                       version(0, 0, i))
                for i in range(lo, min(entities, lo + 2000))
            ]
            sink.write(batch)
    finally:
        sink.close()


def timed(fn: Any, iterations: int) -> list[float]:
    out = []
    for _ in range(iterations):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return sorted(out)


def describe(label: str, lat: list[float]) -> str:
    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, round(q * (len(lat) - 1)))]

    return (f"| {label} | {len(lat)} | {pct(0.5):.3f} | {pct(0.99):.3f} | {lat[-1]:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=10_000, help="entities written")
    parser.add_argument("--iterations", type=int, default=5_000, help="reads per case")
    parser.add_argument("--redis", default=None, help="Redis URL (env STREAMFEAT_REDIS)")
    args = parser.parse_args()
    redis_url = resolve_redis(args.redis)

    name = dt.datetime.now(dt.UTC).strftime("r%Y%m%d%H%M%S_reads")
    text = ORDERS.read_text().replace("name: orders ", f"name: {name} ", 1)
    path = Path(tempfile.mkdtemp(prefix="streamfeat-reads-")) / f"{name}.yaml"
    path.write_text(text)
    topology = load_topology(path)
    if topology.name != name:
        raise SystemExit(f"could not rename {ORDERS}; got topology name {topology.name!r}")
    fields = topology.redis_fields()
    twenty = fields[:20]
    print(f"writing {args.entities:,} entities x {len(fields)} fields of {ORDERS.name} ...")
    fill(topology, redis_url, args.entities)
    rnd = random.Random(11)
    client = Client(redis_url)
    try:
        client.get(topology, ["u0"])  # loads the read script
        one = timed(lambda: client.get(topology, [f"u{rnd.randrange(args.entities)}"]),
                    args.iterations)
        hundred = timed(
            lambda: client.get(topology, [f"u{i}" for i in rnd.sample(range(args.entities), 100)],
                               twenty),
            args.iterations,
        )
        print("\n| read | n | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|")
        print(describe(f"1 entity x {len(fields)} fields", one))
        print(describe("100 entities x 20 fields", hundred))
    finally:
        client.close()
        path.unlink(missing_ok=True)
        path.parent.rmdir()
        r = redis.Redis.from_url(redis_url)
        keys = list(r.scan_iter(match=f"sf:{name}:*", count=5000))
        for i in range(0, len(keys), 5000):
            r.unlink(*keys[i : i + 5000])


if __name__ == "__main__":
    main()
