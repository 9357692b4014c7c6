"""Memory under entity churn: cohorts of new entities replace old ones, whose state expires.

    .venv/bin/python benchmarks/churn.py [--cohorts 4] [--entities 100000] [--topology FILE]

Drives one partition's :class:`~streamfeat.pipeline.PartitionPipeline` the way
the worker does (batches of 10,000 records, the values of touched and due entities, a state
commit to RocksDB after every batch). Every cohort is ``--entities`` new entities, each with
one event, two days after the previous cohort: by then every window but ``lifetime`` has
left the previous cohort behind. Prints, per cohort, the entities holding state, the state's
in-memory size (``approx_state_bytes``), the Python heap growth (tracemalloc) and the
entities stored in RocksDB. Flat figures mean memory follows the live entities, not every
entity ever seen. The default topology is the benchmark's (count, sum, mean over 5m, 1h,
1d sliding and a 1h tumbling window).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path

from streamfeat.pipeline import PartitionPipeline
from streamfeat.records import RecordBatch
from streamfeat.state import PartitionStore
from streamfeat.topology import load_topology

HERE = Path(__file__).parent
DAY = 86_400_000
T0 = 1_700_000_000_000
BATCH = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cohorts", type=int, default=4)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--topology", type=Path, default=HERE / "peers" / "bench_topology.yaml")
    args = parser.parse_args()
    topology = load_topology(args.topology)
    key, ts = topology.source.key, topology.source.timestamp or "ts"
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# churn: {args.cohorts} cohorts of {args.entities:,} entities, topology "
          f"{args.topology.name}; {platform.node()}, {now}")
    with tempfile.TemporaryDirectory() as tmp:
        store = PartitionStore(tmp, topology.name, topology.source.topic, 0)
        proc = PartitionPipeline(topology, 0, store=store)
        tracemalloc.start()
        offset = 0
        print("| cohort | entities with state | state MiB | Python heap MiB | in RocksDB |")
        print("|---:|---:|---:|---:|---:|")
        for cohort in range(args.cohorts):
            t = T0 + cohort * 2 * DAY
            for start in range(0, args.entities, BATCH):
                ids = [f"c{cohort}-{i}" for i in range(start, min(args.entities, start + BATCH))]
                values = [json.dumps({key: e, ts: t, "amount": 12.5}).encode() for e in ids]
                n = len(ids)
                proc.process(RecordBatch(0, list(range(offset, offset + n)), [t] * n,
                                         [e.encode() for e in ids], values))
                offset += n
                proc.commit()
            heap, _peak = tracemalloc.get_traced_memory()
            stored = sum(1 for _ in store.entities())
            print(f"| {cohort + 1} | {proc.operator.entity_count:,} | "
                  f"{proc.operator.approx_state_bytes() / 2**20:,.1f} | {heap / 2**20:,.1f} | "
                  f"{stored:,} |")
        proc.close()


if __name__ == "__main__":
    main()
