"""Micro-benchmark of the Redis sink and client.

    STREAMFEAT_REDIS=redis://127.0.0.1:6379/0 python benchmarks/redis_sink.py

Prints writes/s for 10k entities x 10 fields with one EVALSHA per chunk of
100, 500 (the default) and 2000 entities and with one EVALSHA per entity (all
pipelined in one round trip), with the CPU time each write costs this process
and, when the Redis server runs on this machine, the server (its /proc stat:
the script's compare-and-set runs there), and Client.get latency p50/p99 for 1 entity and
for 100 entities x 20 features, next to a plain pipeline of HMGET for
comparison. Uses its own keys and deletes them afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from streamfeat.client import Client
from streamfeat.sinks import RedisSink, Update, decode_value, version
from streamfeat.topology.definitions import (
    AggKind,
    FeatureDef,
    SourceDef,
    TopologyDef,
    WindowDef,
    WindowKind,
)


def topology(name: str, n_features: int) -> TopologyDef:
    w = WindowDef(WindowKind.SLIDING, 3_600_000, 60_000, "1h")
    return TopologyDef(
        name=name,
        source=SourceDef(topic="bench", key="id"),
        features=tuple(
            FeatureDef(f"f{i}", AggKind.SUM, (w,), field="x") for i in range(n_features)
        ),
        ttl_ms=3_600_000,
    )


def batch(topo: TopologyDef, n: int, offset: int) -> list[Update]:
    fields = topo.redis_fields()
    rnd = random.Random(offset)
    return [
        Update(
            str(e),
            {
                f: (rnd.randint(0, 1000) if j % 2 else rnd.random() * 1000)
                for j, f in enumerate(fields)
            },
            1_700_000_000_000 + offset,
            version(1, 0, offset * n + e),
        )
        for e in range(n)
    ]


def server_cpu(url: str) -> Callable[[], float] | None:
    """The Redis server's CPU seconds so far (user + system), if it runs on this machine."""
    conn = redis.Redis.from_url(url)
    pid = conn.info("server").get("process_id")
    conn.close()
    stat, comm = Path(f"/proc/{pid}/stat"), Path(f"/proc/{pid}/comm")
    # a server in a container reports its own namespace's pid: here that may be another
    # process, so the pid counts only when it names a Redis server
    if not comm.exists() or not comm.read_text().startswith("redis-server"):
        return None
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:  # fields 14 and 15: utime and stime, after the name's ")"
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    return read


def bench_writes(url: str, topo: TopologyDef, chunk_size: int, rounds: int
                 ) -> tuple[list[float], float, float | None]:
    """Writes/s of each round, and the CPU µs per write over all rounds in this process
    and in the server (``None``: not on this machine). The server's CPU is read in clock
    ticks (10 ms: 1 µs a write in a round of 10k), hence over all rounds."""
    n = 10_000
    rates: list[float] = []
    client = server = 0.0
    server_now = server_cpu(url)
    with RedisSink(url, topo, chunk_size=chunk_size) as sink:
        sink.write(batch(topo, 10, 0))  # warm up: connect, load the script
        for r in range(1, rounds + 1):
            updates = batch(topo, n, r)
            s0 = server_now() if server_now else 0.0
            c0, t0 = time.process_time(), time.perf_counter()
            result = sink.write(updates)
            elapsed = time.perf_counter() - t0
            client += time.process_time() - c0
            if server_now:
                server += server_now() - s0
            assert result.applied == n, result
            rates.append(n / elapsed)
    writes = n * rounds
    return rates, 1e6 * client / writes, 1e6 * server / writes if server_now else None


def percentiles(samples: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return qs[49], qs[98]


def bench_reads(
    url: str, topo: TopologyDef, n_entities: int, iterations: int
) -> tuple[float, float]:
    ids = [str(i) for i in range(n_entities)]
    samples = []
    with Client(url) as client:
        client.get(topo, ids)  # warm up
        for _ in range(iterations):
            t0 = time.perf_counter()
            got = client.get(topo, ids)
            samples.append((time.perf_counter() - t0) * 1000)
            assert len(got) == n_entities
    return percentiles(samples)


def bench_pipeline_reads(
    url: str, topo: TopologyDef, n_entities: int, iterations: int
) -> tuple[float, float]:
    """The alternative Client.get does not use: a pipeline of one HMGET per entity."""
    keys = [topo.redis_key(str(i)) for i in range(n_entities)]
    fields = [*topo.redis_fields(), "_v", "_asof", "_updated"]
    conn = redis.Redis.from_url(url)

    def read() -> list[list[object]]:
        pipe = conn.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, fields)
        return [[None if x is None else decode_value(x) for x in row[:-3]]
                for row in pipe.execute()]

    read()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        read()
        samples.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis", default=os.environ.get("STREAMFEAT_REDIS", "redis://localhost:6379/0")
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    topos = []
    try:
        for label, chunk in (
            ("EVALSHA per 500-entity chunk", 500),
            ("EVALSHA per 100-entity chunk", 100),
            ("EVALSHA per 2000-entity chunk", 2000),
            ("EVALSHA per entity", 1),
        ):
            topo = topology(f"bench{run}c{chunk}", 10)
            topos.append(topo)
            rates, client, server = bench_writes(args.redis, topo, chunk, args.rounds)
            cpu = f"; CPU per write {client:.1f} µs here"
            cpu += (f", {server:.1f} µs in the server" if server is not None
                    else " (the server's: not on this machine)")
            print(f"write 10k entities x 10 fields, {label:>28}: "
                  f"median {statistics.median(rates):>9,.0f} writes/s, best {max(rates):>9,.0f}"
                  + cpu)
        topo20 = topology(f"bench{run}r", 20)
        topos.append(topo20)
        with RedisSink(args.redis, topo20) as sink:
            sink.write(batch(topo20, 100, 1))
        for n in (1, 100):
            p50, p99 = bench_reads(args.redis, topo20, n, args.reads)
            print(f"Client.get {n:>3} entities x 20 features: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        for n in (1, 100):
            p50, p99 = bench_pipeline_reads(args.redis, topo20, n, args.reads)
            print(f"(pipeline of HMGET, {n:>3} entities x 20: p50 {p50:.3f} ms, p99 {p99:.3f} ms)")
    finally:
        conn = redis.Redis.from_url(args.redis)
        for topo in topos:
            keys = list(conn.scan_iter(match=f"sf:{topo.name}:*", count=5000))
            for i in range(0, len(keys), 5000):
                conn.unlink(*keys[i : i + 5000])
        conn.close()


if __name__ == "__main__":
    main()
