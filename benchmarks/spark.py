"""The Spark engine against the local one (issue #19): records/s of ``replay --to-parquet``.

    .venv/bin/python benchmarks/spark.py [--events 10000000] [--small 10000] [--partitions 4]
        [--cores 1,2] [--topology PATH] [--cache DIR] [--rounds 1] [--training-rows N]

No Kafka or Redis: the events (``OrderEvents``, the harness's seed and rates) are written as
Parquet snapshots directly, once, and kept under ``--cache`` (default
``$TMPDIR/streamfeat-spark-bench``) for later runs with the same arguments. Then, on those
snapshots, each round times:

1. the local engine (``streamfeat.replay.replay``, one process per partition, at most one
   per core: ``--processes`` 1 and 2);
2. the Spark engine (``streamfeat.spark.replay``) on ``local[N]`` for each ``--cores`` N:
   N executor cores in one JVM on this machine, a fresh session each (its start-up timed
   apart, not in the rate);

and the same on ``--small`` events, where Spark's fixed cost per job (planning, task
launch, Python workers, the Parquet parts) shows. Every Spark output is checked against the
local engine's file (sorted by key) before a figure is printed. ``--training-rows N`` also
times a training set of N spine rows on each engine (event time, no slicing).

``--slices N`` instead times a training set of ``--training-rows`` rows over ``N`` events
in ONE partition (event rate 20/s: about 14 h per million events) of a topology of 5m and
1h windows, on ``local[2]``: unsliced (one task: the partition) against ``--slice-seconds``
(default 14400: a task per 4 h of event time, each after a warm-up of 1 h 1 min), outputs
checked equal: what time slicing buys when there are more cores than partitions.

The machine is shared: ``uptime``'s load average is printed with each figure.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from replay import load_average, write_order_snapshots  # benchmarks/replay.py

ROOT = Path(__file__).resolve().parents[1]
BENCH_TOPOLOGY = ROOT / "benchmarks" / "peers" / "bench_topology.yaml"


def snapshots(cache: Path, topology_text: str, events: int, partitions: int, entities: int,
              seed: int, rate: float) -> Path:
    """Snapshots of ``events`` order events, written once per set of arguments."""
    snap = cache / f"e{events}-p{partitions}-n{entities}-s{seed}-r{rate:g}"
    done = snap / "_complete"
    if done.exists():
        return snap
    shutil.rmtree(snap, ignore_errors=True)
    started = time.perf_counter()
    write_order_snapshots(snap, "bench.spark", events, partitions, entities, seed, rate,
                          file_rows=200_000)
    done.write_text(topology_text)
    print(f"snapshotted {events:,} events over {partitions} partitions in "
          f"{time.perf_counter() - started:.1f} s -> {snap}", flush=True)
    return snap


def sorted_plain(table: pa.Table, key: str) -> pa.Table:
    return table.sort_by(key).replace_schema_metadata(None)


def run(args: argparse.Namespace) -> None:
    from streamfeat.replay import replay, training_set
    from streamfeat.replay.coverage import coverage
    from streamfeat.snapshot.reader import snapshot_files
    from streamfeat.spark import replay as spark_replay
    from streamfeat.spark import spark_session
    from streamfeat.spark import training_set as spark_training_set
    from streamfeat.topology import load_topology

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args.cache.mkdir(parents=True, exist_ok=True)
    text = args.topology.read_text().replace("BENCH_NAME", "spark_bench").replace(
        "BENCH_TOPIC", "bench.spark")
    topo_path = args.cache / "topology.yaml"
    topo_path.write_text(text)
    topology = load_topology(topo_path)
    cores = [int(c) for c in args.cores.split(",")]
    rows: list[tuple[str, str, int, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for n in [args.small, args.events]:
            snap = snapshots(args.cache, text, n, args.partitions, args.entities, args.seed,
                             args.event_rate)
            spine = None
            if args.training_rows:  # rows spread over the records' time span
                span = coverage({p: snapshot_files(str(snap), "bench.spark", p)
                                 for p in range(args.partitions)})
                assert span is not None
                k = args.training_rows
                step = (span.last_ms - span.first_ms) / k
                spine = pa.table({
                    "user_id": [f"u{(i * 7919) % args.entities}" for i in range(k)],
                    "ts": pa.array([span.first_ms + int(i * step) for i in range(k)],
                                   pa.int64())})
            for _ in range(args.rounds):
                for processes in (1, 2):
                    t0 = time.perf_counter()
                    result = replay(topology, snap, to_parquet=out / "local.parquet",
                                    processes=processes, progress=False)
                    s = time.perf_counter() - t0
                    rows.append((f"{n:,}", f"local, {processes} process(es)", result.records,
                                 s, load_average()))
                    print(rows[-1], flush=True)
                want = sorted_plain(pq.read_table(out / "local.parquet"), "user_id")
                for c in cores:
                    t0 = time.perf_counter()
                    spark = spark_session(f"local[{c}]", app_name="streamfeat-bench",
                                          config={"spark.driver.memory": "2g"})
                    spark.sparkContext.setLogLevel("ERROR")
                    start_s = time.perf_counter() - t0
                    for attempt in ("cold", "warm"):
                        shutil.rmtree(out / "spark", ignore_errors=True)
                        t0 = time.perf_counter()
                        result = spark_replay(topology, snap, spark=spark,
                                              to_parquet=out / "spark", progress=False)
                        s = time.perf_counter() - t0
                        got = sorted_plain(pq.read_table(out / "spark"), "user_id")
                        assert got.equals(want), "Spark output differs from the local engine's"
                        rows.append((f"{n:,}", f"Spark local[{c}], {attempt} (session start "
                                     f"{start_s:.1f} s apart)", result.records, s,
                                     load_average()))
                        print(rows[-1], flush=True)
                    if spine is not None:
                        t0 = time.perf_counter()
                        local_ts = training_set(topology, snap, spine, None, progress=False)
                        ls = time.perf_counter() - t0
                        t0 = time.perf_counter()
                        frame = spark_training_set(topology, snap, spine, out / f"ts{c}",
                                                   spark=spark, progress=False)
                        ss = time.perf_counter() - t0
                        del frame
                        got = pq.read_table(out / f"ts{c}")
                        keys = [("user_id", "ascending"), ("ts", "ascending")]
                        assert got.sort_by(keys).replace_schema_metadata(None).equals(
                            local_ts.sort_by(keys).replace_schema_metadata(None))
                        print(f"training set of {len(spine):,} rows over {n:,} records: local "
                              f"{ls:.1f} s, Spark local[{c}] {ss:.1f} s", flush=True)
                    spark.stop()
    print("\n| records | engine | records replayed | seconds | records/s | load average |")
    print("|---:|---|---:|---:|---:|---|")
    for size, what, records, s, load in rows:
        print(f"| {size} | {what} | {records:,} | {s:.2f} | {records / s:,.0f} | {load} |")


BOUNDED = """\
version: 1
name: spark_bench_bounded
owner: benchmarks@example.com
source: {topic: bench.spark, format: json, key: user_id, timestamp: ts, timestamp_unit: ms}
entity: user
lateness: 5m
ttl: 1d
features:
  - {name: orders, agg: count, windows: [5m, 1h]}
  - {name: amount_sum, agg: sum, field: amount, windows: [5m, 1h]}
  - {name: amount_mean, agg: mean, field: amount, windows: [5m, 1h]}
  - {name: orders_hourly, agg: count, windows: [{size: 1h, type: tumbling}]}
"""


def slices(args: argparse.Namespace) -> None:
    from streamfeat.replay.coverage import coverage
    from streamfeat.snapshot.reader import snapshot_files
    from streamfeat.spark import spark_session
    from streamfeat.spark import training_set as spark_training_set
    from streamfeat.topology import load_topology

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args.cache.mkdir(parents=True, exist_ok=True)
    path = args.cache / "bounded.yaml"
    path.write_text(BOUNDED)
    topology = load_topology(path)
    snap = snapshots(args.cache, BOUNDED, args.slices, 1, args.entities, args.seed, 20.0)
    span = coverage({0: snapshot_files(str(snap), "bench.spark", 0)})
    assert span is not None
    k = args.training_rows or 100_000
    step = (span.last_ms - span.first_ms) / k
    spine = pa.table({"user_id": [f"u{(i * 7919) % args.entities}" for i in range(k)],
                      "ts": pa.array([span.first_ms + int(i * step) for i in range(k)],
                                     pa.int64())})
    spark = spark_session("local[2]", app_name="streamfeat-bench",
                          config={"spark.driver.memory": "2g"})
    spark.sparkContext.setLogLevel("ERROR")
    keys = [("user_id", "ascending"), ("ts", "ascending")]
    with tempfile.TemporaryDirectory() as tmp:
        outs = {}
        sliced = f"--slice {args.slice_seconds:g}"
        for label, slice_s in (("warm-up run (not timed)", None), ("unsliced", None),
                               (sliced, args.slice_seconds)):
            t0 = time.perf_counter()
            spark_training_set(topology, snap, spine, Path(tmp) / label, spark=spark,
                               slice_seconds=slice_s, progress=False)
            s = time.perf_counter() - t0
            outs[label] = pq.read_table(Path(tmp) / label).sort_by(keys).replace_schema_metadata(
                None)
            print(f"training set, {k:,} rows over {args.slices:,} records in 1 partition "
                  f"({(span.last_ms - span.first_ms) / 3_600_000:.1f} h), Spark local[2], "
                  f"{label}: {s:.1f} s; load average {load_average()}", flush=True)
        assert outs["unsliced"].equals(outs[sliced]), "sliced output differs"
    spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--event-rate", type=float, default=200.0,
                        help="events per second of event time (the harness's default)")
    parser.add_argument("--cores", default="1,2", help="Spark local[N] runs, one per N")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--training-rows", type=int, default=0)
    parser.add_argument("--slices", type=int, default=0, metavar="N",
                        help="time slicing instead: a training set over N events in one "
                             "partition, unsliced against --slice-seconds")
    parser.add_argument("--slice-seconds", type=float, default=14_400.0)
    parser.add_argument("--topology", type=Path, default=BENCH_TOPOLOGY)
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "streamfeat-spark-bench")
    args = parser.parse_args()
    print(f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load_average()}")
    if args.slices:
        slices(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
