"""Replay against the worker on the same records (issue #18): events/s of each, and the ratio.

    .venv/bin/python benchmarks/replay.py [--topology PATH] [--events 1000000] [--rounds 3]
        [--replay-processes 1,2] [--runtime faust|kafka] [--profile] [--baseline DIR]
    .venv/bin/python benchmarks/replay.py --no-worker [--topology PATH] [--processes N]

With Kafka and Redis (``STREAMFEAT_KAFKA`` / ``STREAMFEAT_REDIS``, as ``deploy/local/up``
prints them): produces ``--events`` order events (``OrderEvents``, the harness's seed and
rates) into a fresh topic of 4 partitions once, then, ``--rounds`` times, in turn:

1. the real worker, ``streamfeat worker --stop-at-end --snapshot-dir ...`` (Redis sink on,
   fresh group, state and snapshot directory, a topology name of its own), as
   ``benchmarks/harness.py`` runs it; timed from its start to its exit, and from its first
   partition assigned to caught up (its log): start-up and the final flush excluded;
2. ``streamfeat replay --to-parquet`` over the snapshots that worker run just wrote, once per
   ``--replay-processes`` value; timed from its start to its exit, and by its own summary
   line (the partitions' run: start-up, listing and the final Parquet file excluded).

Both are also given their CPU time (user + system of their processes, start to exit), which
the load of a shared machine moves less than wall time: CPU µs per record, and the worker's
over replay's.

So both engines see the same records on the same machine in the same minutes. Prints each
round and the medians, with the two ratios: replay's rate over the worker's with start-up
excluded on both sides, and with everything included on both sides (``uptime``'s load
average before and after each round: the machine is shared). ``--profile`` records the
1-process replay of the last round with py-spy and prints where its time went.
``--baseline DIR`` also runs, in each round, the replay of another source tree (a directory
holding ``streamfeat/``, e.g. ``git archive <commit> streamfeat | tar -x -C DIR``) over the
same snapshots: a before/after in the same minutes.

``--no-worker`` (no Kafka or Redis needed): the events are written as Parquet snapshots
directly (``SnapshotWriter``, keyed to partitions by crc32 of the key), then replayed in this
process, e.g. ``--no-worker --topology topologies/orders.yaml`` for the rich topology.

Default topology: the benchmark topology of the harness (``peers/bench_topology.yaml``:
count, sum and mean of ``amount`` over 5m/1h/1d sliding windows, a count over 1h tumbling).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STREAMFEAT = Path(sys.executable).parent / "streamfeat"
BENCH_TOPOLOGY = ROOT / "benchmarks" / "peers" / "bench_topology.yaml"
# replay's summary line (streamfeat.replay.backfill.replay, logged at INFO)
_SUMMARY = re.compile(r"replay \S+: ([\d,]+) records of \d+ partitions, ([\d,]+) entities in "
                      r"[\d.]+ s \(([\d,]+) records/s\)")


def load_average() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def write_order_snapshots(snap: Path, topic: str, events: int, partitions: int,
                          entities: int, seed: int, rate: float,
                          file_rows: int = 100_000) -> list[int]:
    """``events`` order events (``OrderEvents``) as the worker's Parquet snapshots of
    ``topic``, keyed to partitions as Kafka's hash would (crc32 of the key), a file per
    ``file_rows`` records of a partition; returns the records per partition."""
    from streamfeat.generator import OrderEvents
    from streamfeat.records import RawRecord
    from streamfeat.snapshot import SnapshotWriter

    writers = [SnapshotWriter(snap, topic, p) for p in range(partitions)]
    offsets = [0] * partitions
    buffers: list[list[RawRecord]] = [[] for _ in range(partitions)]
    for ev in OrderEvents(entities=entities, seed=seed, events_per_second=rate).events(events):
        p = zlib.crc32(ev.key) % partitions
        buffers[p].append(RawRecord(p, offsets[p], ev.ts, ev.key, ev.value))
        offsets[p] += 1
        if len(buffers[p]) >= file_rows:
            writers[p].append(buffers[p])
            writers[p].flush()
            buffers[p] = []
    for w, buf in zip(writers, buffers, strict=True):
        w.append(buf)
        w.close()
    return offsets


def own_topology(source: Path, name: str, topic: str) -> str:
    """``source``'s text with its name and topic replaced (as the harness does per run)."""
    text = source.read_text()
    text = re.sub(r"(?m)^name: .*$", f"name: {name}", text)
    return re.sub(r"(?m)^  topic: .*$", f"  topic: {topic}", text)


# --------------------------------------------------------------------------- replay alone
def replay_alone(args: argparse.Namespace) -> None:
    """Snapshots written directly, then replayed in this process (no Kafka, no Redis)."""
    from streamfeat.replay import replay
    from streamfeat.topology import load_topology

    # replay() reports its progress on the streamfeat.replay logger
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "topology.yaml"
        path.write_text(own_topology(args.topology, "replay_bench", "bench.replay"))
        topology = load_topology(path)
        snap = Path(tmp) / "snap"
        started = time.perf_counter()
        offsets = write_order_snapshots(snap, topology.source.topic, args.events,
                                        args.partitions, args.entities, args.seed,
                                        args.event_rate)
        files = len(list(snap.rglob("*.parquet")))
        print(f"snapshotted {args.events:,} events in {files} files "
              f"({time.perf_counter() - started:.1f} s); per partition {offsets}")
        print(f"load average {load_average()}")
        for _ in range(args.rounds):
            started = time.perf_counter()
            result = replay(topology, snap, to_parquet=Path(tmp) / "final.parquet",
                            processes=args.processes, progress=True)
            seconds = time.perf_counter() - started
            print(f"replay: {result.records:,} events, {result.entities:,} entities in "
                  f"{seconds:.2f} s -> {result.records / seconds:,.0f} events/s "
                  f"({len(result.partitions)} partitions); load average {load_average()}")


# --------------------------------------------------------------------------- against the worker
@dataclass
class Timing:
    what: str
    seconds: float  # start to exit
    steady: float | None  # the part where records flow (see the module docstring)
    records: int
    cpu: float | None = None  # CPU seconds of the command's processes (user + system)

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def steady_rate(self) -> float | None:
        return self.records / self.steady if self.steady else None

    @property
    def cpu_us(self) -> float | None:
        """CPU microseconds per record."""
        return self.cpu / self.records * 1e6 if self.cpu else None


def children_cpu() -> float:
    """CPU seconds of the child processes waited for so far (and of their waited children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_replay(topology: Path, snapshots: Path, out: Path, processes: int, log: Path,
               profile: Path | None = None, source: Path | None = None) -> Timing:
    """``streamfeat replay --to-parquet`` as a subprocess (optionally under py-spy; from the
    streamfeat of ``source``, a source tree, instead of this one)."""
    cmd = [str(STREAMFEAT), "replay", str(topology), "--snapshot-dir", str(snapshots),
           "--to-parquet", str(out), "--processes", str(processes)]
    if profile is not None:
        cmd = [str(STREAMFEAT.parent / "py-spy"), "record", "--rate", "250", "--subprocesses",
               "--format", "raw", "-o", str(profile), "--", *cmd]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if source is not None:  # found before the installed (editable) streamfeat
        env["PYTHONPATH"] = str(source)
    started, cpu = time.perf_counter(), children_cpu()
    with log.open("wb") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False,
                              env=env, timeout=3600)
    seconds, cpu = time.perf_counter() - started, children_cpu() - cpu
    text = log.read_text(errors="replace")
    if done.returncode != 0:
        raise SystemExit(f"replay failed ({done.returncode}):\n{text[-3000:]}")
    m = _SUMMARY.search(text)
    if m is None:
        raise SystemExit(f"no summary line in the replay's log:\n{text[-3000:]}")
    records = int(m[1].replace(",", ""))
    steady = records / int(m[3].replace(",", ""))
    label = "replay" if source is None else f"replay of {source}"
    return Timing(f"{label}, {processes} process(es)", seconds, steady, records,
                  None if profile is not None else cpu)  # py-spy's own CPU is in it


def against_worker(args: argparse.Namespace) -> None:
    import redis
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    from streamfeat.config import resolve_kafka, resolve_redis

    from harness import (  # benchmarks/harness.py
        _steady_seconds,
        create_topic,
        delete_keys,
        delete_topics,
        machine,
        produce,
        run_measured,
        summarize_profile,
    )

    kafka, redis_url = resolve_kafka(args.kafka), resolve_redis(args.redis)
    run_id = dt.datetime.now(dt.UTC).strftime("r%Y%m%d%H%M%S")
    topic = f"bench.{run_id}"
    admin = AdminClient({"bootstrap.servers": kafka})
    client = redis.Redis.from_url(redis_url)
    work = Path(tempfile.mkdtemp(prefix=f"streamfeat-{run_id}-"))
    info = machine()
    processes = [int(p) for p in args.replay_processes.split(",") if p.strip()]
    rounds: list[list[Timing]] = []
    try:
        create_topic(admin, topic, args.partitions)
        print(f"producing {args.events:,} events to {topic} ...", flush=True)
        seconds = produce(kafka, topic, args.events, args.entities, args.seed, args.event_rate)
        print(f"  {args.events / seconds:,.0f} events/s", flush=True)
        for i in range(1, args.rounds + 1):
            name = f"{run_id}_{i}"
            topology = work / f"{name}.yaml"
            topology.write_text(own_topology(args.topology, name, topic))
            snapshots = work / f"{name}-snapshots"
            load_before = load_average()
            cmd = [str(STREAMFEAT), "worker", str(topology), "--kafka", kafka,
                   "--redis", redis_url, "--stop-at-end", "--state-dir",
                   str(work / f"{name}-state"), "--group", f"sf-{name}", "--runtime",
                   args.runtime, "--snapshot-dir", str(snapshots)]
            log = work / f"{name}-worker.log"
            print(f"round {i}: worker ...", flush=True)
            cpu = children_cpu()
            run = run_measured("worker", cmd, args.events, log)
            cpu = children_cpu() - cpu
            if run.exit_code != 0:
                raise SystemExit(f"worker failed ({run.exit_code}):\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
            timings = [Timing(f"worker ({args.runtime} runtime)", run.seconds,
                              _steady_seconds(log), args.events, cpu)]
            delete_keys(client, name)
            sources = [None] if args.baseline is None else [args.baseline, None]
            for p in processes:
                outs = []
                for source in sources:
                    print(f"round {i}: replay{'' if source is None else f' of {source}'}, "
                          f"{p} process(es) ...", flush=True)
                    profile = (work / "replay.pyspy.txt" if args.profile and p == 1
                               and i == args.rounds and source is None else None)
                    out = work / f"{name}-p{p}-{len(outs)}.parquet"
                    timing = run_replay(topology, snapshots, out, p,
                                        work / f"{name}-replay-p{p}.log", profile, source)
                    if timing.records != args.events:
                        raise SystemExit(f"replay read {timing.records:,} records of the "
                                         f"worker's snapshots, not {args.events:,}")
                    timings.append(timing)
                    outs.append(out.read_bytes())
                    if profile is not None and profile.exists():
                        print(summarize_profile(profile, top=30))
                if len(set(outs)) != 1:
                    raise SystemExit(f"the replays of {args.baseline} and of this tree wrote "
                                     "different Parquet files")
            shutil.rmtree(snapshots, ignore_errors=True)
            shutil.rmtree(work / f"{name}-state", ignore_errors=True)
            rounds.append(timings)
            print(table(timings, f"round {i} (load average {load_before} before, "
                                 f"{load_average()} after)"), flush=True)
    finally:
        delete_topics(admin, run_id)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{info['date']}; {info['uname']}; {info['cpu']}; Python {info['python']}")
    shown = args.topology.relative_to(ROOT) if args.topology.is_relative_to(ROOT) else args.topology
    print(f"{args.events:,} events, {args.entities:,} entities, {args.partitions} partitions; "
          f"topology {shown}; worker runtime {args.runtime}")
    medians = [Timing(rows[0].what, statistics.median(r.seconds for r in rows),
                      statistics.median(r.steady or 0.0 for r in rows) or None, rows[0].records,
                      statistics.median(r.cpu for r in rows if r.cpu) if any(r.cpu for r in rows)
                      else None)
               for rows in zip(*rounds, strict=True)]
    print(table(medians, f"medians of {len(rounds)} rounds"))


def table(timings: list[Timing], title: str) -> str:
    worker = timings[0]
    lines = [f"\n{title}",
             "| engine | events/s, start-up excluded | ratio | events/s, start to exit "
             "| ratio | CPU µs per record | worker's CPU / this |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for t in timings:
        steady, base = t.steady_rate, worker.steady_rate
        ratio = f"{steady / base:.2f}x" if steady and base else "-"
        cpu, cpu_base = t.cpu_us, worker.cpu_us
        lines.append(f"| {t.what} | {steady or 0:,.0f} | {ratio} | {t.rate:,.0f} "
                     f"| {t.rate / worker.rate:.2f}x | {f'{cpu:.2f}' if cpu else '-'} "
                     f"| {f'{cpu_base / cpu:.2f}x' if cpu and cpu_base else '-'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topology", type=Path, default=BENCH_TOPOLOGY,
                        help="topology of order events (its name and topic are replaced); "
                        "default: the harness's benchmark topology")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--event-rate", type=float, default=200.0,
                        help="events per second of event time (the harness's default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replay-processes", default="1,2",
                        help="replay runs once per value in each round (--processes)")
    parser.add_argument("--runtime", choices=("faust", "kafka"), default="faust",
                        help="the worker's runtime (default: faust, the worker's own)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the 1-process replay of the last round")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                        help="also replay with the streamfeat of this source tree, each round "
                        "(before/after in the same minutes; the two files must be equal)")
    parser.add_argument("--no-worker", action="store_true",
                        help="replay alone, in this process, over snapshots written directly")
    parser.add_argument("--processes", type=int, default=None,
                        help="--no-worker: replay processes (default: one per CPU)")
    parser.add_argument("--kafka", default=None, help="bootstrap servers (env STREAMFEAT_KAFKA)")
    parser.add_argument("--redis", default=None, help="Redis URL (env STREAMFEAT_REDIS)")
    args = parser.parse_args()
    args.topology = args.topology.resolve()
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if not (args.baseline / "streamfeat" / "__init__.py").exists():
            parser.error(f"--baseline {args.baseline} holds no streamfeat/ package")
    if args.no_worker:
        replay_alone(args)
    else:
        against_worker(args)


if __name__ == "__main__":
    main()
