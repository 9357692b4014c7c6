"""Replay throughput: events/s over snapshotted order events (4 partitions).

    .venv/bin/python benchmarks/replay.py [--events 1000000] [--processes N]

Generates the events with ``OrderEvents`` into Parquet snapshots with ``SnapshotWriter``
(keyed to partitions like Kafka's hash would: crc32 of the key), then times
``replay(..., to_parquet=...)`` through the worker's pipeline (:mod:`streamfeat.pipeline`),
and prints events/s.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import zlib
from pathlib import Path

from streamfeat.generator import OrderEvents
from streamfeat.records import RawRecord
from streamfeat.replay import replay
from streamfeat.snapshot import SnapshotWriter
from streamfeat.topology import load_topology

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--topology", default=str(ROOT / "topologies" / "orders.yaml"))
    args = parser.parse_args()
    # replay() reports its progress on the streamfeat.replay logger
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    topology = load_topology(Path(args.topology))
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / "snap"
        started = time.perf_counter()
        writers = [SnapshotWriter(snap, topology.source.topic, p)
                   for p in range(args.partitions)]
        offsets = [0] * args.partitions
        buffers: list[list[RawRecord]] = [[] for _ in range(args.partitions)]
        for ev in OrderEvents(entities=10_000, events_per_second=200.0).events(args.events):
            p = zlib.crc32(ev.key) % args.partitions
            buffers[p].append(RawRecord(p, offsets[p], ev.ts, ev.key, ev.value))
            offsets[p] += 1
            if len(buffers[p]) >= 100_000:
                writers[p].append(buffers[p])
                writers[p].flush()
                buffers[p] = []
        for w, buf in zip(writers, buffers, strict=True):
            w.append(buf)
            w.close()
        files = len(list(snap.rglob("*.parquet")))
        print(f"snapshotted {args.events:,} events in {files} files "
              f"({time.perf_counter() - started:.1f} s); per partition {offsets}")
        started = time.perf_counter()
        result = replay(topology, snap, to_parquet=Path(tmp) / "final.parquet",
                        processes=args.processes, progress=True)
        seconds = time.perf_counter() - started
        print(f"replay: {result.records:,} events, {result.entities:,} entities in "
              f"{seconds:.1f} s -> {result.records / seconds:,.0f} events/s "
              f"({len(result.partitions)} partitions)")


if __name__ == "__main__":
    main()
