"""The benchmark topology as a Bytewax dataflow (bytewax 0.21, run from the peers venv).

Per user, count / sum / mean of ``amount`` over 5m, 1h and 1d sliding windows with
streamfeat's default hops (Bytewax ``SlidingWindower(length=W, offset=H)``, H = 5s, 1m,
10m, aligned to the epoch like streamfeat's and Quix's hops) and the count over a 1h
``TumblingWindower``; event time from ``ts`` (``EventClock``, waiting 5m: the topology's
lateness; later events go to the operator's ``late`` stream and are dropped). One
``fold_window`` per window size keeps ``[count, sum, newest ts]`` (the mean is sum / count), so each
event updates W/H accumulators (60, 60 and 144) plus the hourly one, as in Quix's hopping
windows and Faust's hopping tables.

Bytewax emits a window's result once it closes (the watermark, newest event time less
5m, passes its end) and every still-open window at the end of the input. A ``DynamicSink``
writes them to Redis, one hash per entity (``sf:{name}:{user}``, fields named like
streamfeat's ``orders__1h``, ``amount_sum__1h``, ``amount_mean__1h``,
``orders_hourly__1h``), one pipeline per batch Bytewax hands it. Each accumulator also keeps
its newest event time; of the windows of one size the sink writes, per entity, the one
holding the entity's newest event and, of those, the oldest (the most history up to that
event: the value streamfeat serves, and Quix's first window per message).

Input: Bytewax's own ``KafkaSource`` (confluent-kafka, one partition reader per Kafka
partition, ``batch_size`` records per poll), reading from the beginning, with each
partition's reader stopped at an end offset: the topic's first ``--events`` records,
split over the partitions in proportion to their sizes (all of them when ``--events`` is
the topic's size). The dataflow ends when every partition is done; the process exits.

``--epoch-interval`` sets Bytewax's epoch (default 10 s, Bytewax's own): at the end of
each epoch every stateful step deep-copies the state of each key it touched (its
snapshot), whether or not recovery is configured (it is not here); with 264 open windows
per hot key, that copy is most of the work at 10 s epochs.

``--workers`` runs that many Bytewax workers (threads) in one process; ``--processes``
that many processes (``bytewax.run``'s cluster mode: this script starts them, and they
exchange keyed data over local TCP), each with ``--workers`` workers. Every 5,000 input
records the script prints ``{"progress": n, "seconds": t}`` (all processes summed), and
at the end ``{"peer": "bytewax", "events": n, "seconds": t, "first_record_s": f}``.

    .venv-peers/bin/python benchmarks/peers/bytewax_app.py --topic T --events N --name NAME
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from bytewax import operators as op
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.inputs import StatefulSourcePartition
from bytewax.operators.windowing import (
    EventClock,
    SlidingWindower,
    TumblingWindower,
    fold_window,
)
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Consumer, TopicPartition

# (label, size, streamfeat's default hop for that size)
SLIDING = (("5m", timedelta(minutes=5), timedelta(seconds=5)),
           ("1h", timedelta(hours=1), timedelta(minutes=1)),
           ("1d", timedelta(days=1), timedelta(minutes=10)))
LATENESS = timedelta(minutes=5)
ALIGN = datetime(1970, 1, 1, tzinfo=UTC)
PROGRESS_EVERY = 5000
# a window's result on its way to Redis: (window size label, rank, fields)
Result = tuple[str, tuple[float, int], dict[str, str]]


# --------------------------------------------------------------------------- input
def end_offsets(kafka: str, topic: str, events: int) -> dict[int, tuple[int, int]]:
    """Per partition (low, end): the topic's first ``events`` records, split over the
    partitions in proportion to their sizes (the remainder to the largest)."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": "bytewax-bench-offsets"})
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                 for p in sorted(meta.partitions)}
    finally:
        consumer.close()
    total = sum(high - low for low, high in marks.values())
    if events >= total:
        return {p: (low, high) for p, (low, high) in marks.items()}
    share = {p: (high - low) * events // total for p, (low, high) in marks.items()}
    largest = max(marks, key=lambda p: marks[p][1] - marks[p][0])
    share[largest] += events - sum(share.values())
    return {p: (low, low + share[p]) for p, (low, _high) in marks.items()}


class _BoundedPartition(StatefulSourcePartition[Any, Any]):
    """Bytewax's Kafka partition reader, stopped at an end offset."""

    def __init__(self, inner: StatefulSourcePartition[Any, Any], end: int, start: int) -> None:
        self._inner = inner
        self._end = end
        self._done = start >= end

    def next_batch(self) -> list[Any]:
        if self._done:
            raise StopIteration()
        batch = self._inner.next_batch()
        kept = [m for m in batch if m.offset < self._end]
        if len(kept) < len(batch) or (batch and batch[-1].offset >= self._end - 1):
            self._done = True
        return kept

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class BoundedKafkaSource(KafkaSource):
    """``KafkaSource(tail=False)`` whose partitions stop at the given end offsets."""

    def __init__(self, kafka: str, topic: str, ends: dict[int, tuple[int, int]],
                 batch_size: int) -> None:
        super().__init__([kafka], [topic], tail=False, batch_size=batch_size)
        self._ends = ends

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> Any:
        inner = super().build_part(step_id, for_part, resume_state)
        low, end = self._ends[int(for_part.split("-", 1)[0])]
        return _BoundedPartition(inner, end, low)


# --------------------------------------------------------------------------- output
class _RedisPartition(StatelessSinkPartition[tuple[str, Result]]):
    def __init__(self, url: str, name: str) -> None:
        self._redis = redis.Redis.from_url(url)
        self._prefix = f"sf:{name}:"
        # (entity, label) -> (newest event time in it, -window id) of the window written
        self._best: dict[tuple[str, str], tuple[float, int]] = {}

    def write_batch(self, items: list[tuple[str, Result]]) -> None:
        # per entity and window size, the window holding the entity's newest event and,
        # of those, the oldest (the most history up to it: the value streamfeat serves)
        hashes: dict[str, dict[str, str]] = {}
        best = self._best
        for user, (label, rank, fields) in items:
            mark = (user, label)
            have = best.get(mark)
            if have is not None and have > rank:
                continue
            best[mark] = rank
            hashes.setdefault(user, {}).update(fields)
        if not hashes:
            return
        now = str(int(time.time() * 1000))
        pipe = self._redis.pipeline(transaction=False)
        for user, mapping in hashes.items():
            mapping["_updated"] = now
            pipe.hset(self._prefix + user, mapping=mapping)
        pipe.execute()

    def close(self) -> None:
        self._redis.close()


class RedisHashSink(DynamicSink[tuple[str, Result]]):
    def __init__(self, url: str, name: str) -> None:
        self._url = url
        self._name = name

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return _RedisPartition(self._url, self._name)


# --------------------------------------------------------------------------- dataflow
def _fold(acc: list[float], value: tuple[datetime, float, float]) -> list[float]:
    acc[0] += 1
    acc[1] += value[1]
    if value[2] > acc[2]:
        acc[2] = value[2]
    return acc


def _merge(a: list[float], b: list[float]) -> list[float]:
    return [a[0] + b[0], a[1] + b[1], max(a[2], b[2])]


def _empty() -> list[float]:
    return [0, 0.0, float("-inf")]  # count, sum, newest event time (ms)


def _event_time(value: tuple[datetime, float, float]) -> datetime:
    return value[0]


def build_flow(args: argparse.Namespace) -> tuple[Dataflow, dict[str, Any]]:
    """The dataflow, and its counters: ``seen`` input records, ``first`` record's time."""
    ends = end_offsets(args.kafka, args.topic, args.events)
    flow = Dataflow(f"bytewax-{args.name}")
    messages = op.input("kafka", flow, BoundedKafkaSource(args.kafka, args.topic, ends,
                                                          args.batch_size))
    lock = threading.Lock()
    run: dict[str, Any] = {"seen": 0, "first": None, "started": time.perf_counter()}
    key = "progress" if args.proc_id is None else "part_progress"  # summed by run_cluster

    def decode(batch: list[Any]) -> list[tuple[str, tuple[datetime, float]]]:
        out = []
        for msg in batch:
            try:
                order = json.loads(msg.value)
                ts = float(order["ts"])
                out.append((str(order["user_id"]),
                            (datetime.fromtimestamp(ts / 1000, tz=UTC),
                             float(order["amount"]), ts)))
            except (ValueError, KeyError, TypeError):
                continue  # a malformed record: skipped, as the other engines do
        with lock:
            if run["first"] is None and batch:
                run["first"] = time.perf_counter()
            before = run["seen"]
            run["seen"] += len(batch)
            if run["seen"] // PROGRESS_EVERY != before // PROGRESS_EVERY:
                print(json.dumps({key: run["seen"], "seconds":
                                  round(time.perf_counter() - run["started"], 3)}), flush=True)
        return out

    events = op.flat_map_batch("decode", messages, decode)
    clock = EventClock(_event_time, wait_for_system_duration=LATENESS)
    results = []
    for label, size, hop in SLIDING:
        window = fold_window(f"sliding_{label}", events, clock,
                             SlidingWindower(length=size, offset=hop, align_to=ALIGN),
                             _empty, _fold, _merge, ordered=args.ordered)
        results.append(op.map(f"fields_{label}", window.down, _fields(label)))
    hourly = fold_window("tumbling_1h", events, clock,
                         TumblingWindower(length=timedelta(hours=1), align_to=ALIGN),
                         _empty, _fold, _merge, ordered=args.ordered)
    results.append(op.map("fields_hourly", hourly.down, _hourly_fields))
    op.output("redis", op.merge("all", *results), RedisHashSink(args.redis, args.name))
    return flow, run


def _fields(label: str) -> Any:
    def fields(item: tuple[str, tuple[int, list[float]]]) -> tuple[str, Result]:
        user, (window_id, (n, total, newest)) = item
        return user, (label, (newest, -window_id), {
            f"orders__{label}": str(int(n)), f"amount_sum__{label}": repr(total),
            f"amount_mean__{label}": repr(total / n) if n else ""})
    return fields


def _hourly_fields(item: tuple[str, tuple[int, list[float]]]) -> tuple[str, Result]:
    user, (window_id, (n, _total, newest)) = item
    return user, ("hourly", (newest, window_id), {"orders_hourly__1h": str(int(n))})


# --------------------------------------------------------------------------- processes
def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_cluster(args: argparse.Namespace, argv: list[str]) -> int:
    """Start ``--processes`` copies of this script as one Bytewax cluster; sum their
    progress lines; exit with the first failure's code."""
    addresses = ",".join(f"127.0.0.1:{p}" for p in _free_ports(args.processes))
    started = time.perf_counter()
    children = [subprocess.Popen(
        [sys.executable, __file__, *argv, "--proc-id", str(i), "--addresses", addresses],
        stdout=subprocess.PIPE, text=True) for i in range(args.processes)]
    parts = [0] * len(children)
    firsts: list[float] = []
    lock = threading.Lock()

    def relay(i: int, child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith('{"part_progress"'):
                with lock:
                    parts[i] = json.loads(line)["part_progress"]
                    print(json.dumps({"progress": sum(parts), "seconds":
                                      round(time.perf_counter() - started, 3)}), flush=True)
            elif line.startswith('{"peer"'):
                with lock:
                    firsts.append(json.loads(line).get("first_record_s") or 0.0)
                    parts[i] = json.loads(line)["events"]
            else:
                print(line, end="", flush=True)

    relays = [threading.Thread(target=relay, args=(i, c)) for i, c in enumerate(children)]
    for t in relays:
        t.start()
    codes = [c.wait() for c in children]
    for t in relays:
        t.join()
    took = time.perf_counter() - started
    print(json.dumps({"peer": "bytewax", "events": sum(parts), "seconds": round(took, 3),
                      "first_record_s": max(firsts, default=None)}), flush=True)
    return next((c for c in codes if c), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True, help="the topic's first N")
    parser.add_argument("--name", required=True, help="Redis key prefix sf:{name}:")
    parser.add_argument("--workers", type=int, default=1, help="Bytewax workers per process")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="KafkaSource batch_size: records per poll")
    parser.add_argument("--epoch-interval", type=float, default=10.0,
                        help="seconds of a Bytewax epoch (its default: 10); at each epoch's "
                        "end every stateful step snapshots (deep-copies) the state of the "
                        "keys it touched, recovery configured or not")
    parser.add_argument("--ordered", action="store_true",
                        help="fold in timestamp order (Bytewax's default; sum and count do "
                        "not need it, so off by default)")
    parser.add_argument("--proc-id", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--addresses", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--kafka", default=os.environ.get("STREAMFEAT_KAFKA", "localhost:9092"))
    parser.add_argument("--redis",
                        default=os.environ.get("STREAMFEAT_REDIS", "redis://localhost:6379/0"))
    args = parser.parse_args()
    if args.processes > 1 and args.proc_id is None:
        raise SystemExit(run_cluster(args, sys.argv[1:]))

    from bytewax.run import cli_main  # type: ignore[attr-defined]

    flow, run = build_flow(args)
    cli_main(flow, workers_per_process=args.workers, process_id=args.proc_id,
             addresses=args.addresses.split(",") if args.addresses else None,
             epoch_interval=timedelta(seconds=args.epoch_interval))
    ended = time.perf_counter()
    print(json.dumps({"peer": "bytewax", "events": run["seen"],
                      "seconds": round(ended - run["started"], 3),
                      "first_record_s": round(ended - run["first"], 3) if run["first"]
                      else None}), flush=True)


if __name__ == "__main__":
    main()
