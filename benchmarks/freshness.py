"""Freshness: from producing a record to its effect being readable in Redis.

    .venv/bin/python benchmarks/freshness.py [--seconds 20] [--rates 1000,10000]
        [--max-rate EVENTS_PER_S] [--runtime kafka|faust] [--worker-arg ARG ...]

Starts a ``streamfeat worker`` (running, not ``--stop-at-end``) on the benchmark topology
(benchmarks/peers/bench_topology.yaml) over a fresh topic, then produces order events at
each fixed rate for ``--seconds`` (event time = wall clock) and, for a sample of records
(``--samples`` per rate), measures the time from the ``produce()`` call to the moment the
entity's hash in Redis reflects the record: its ``_v`` (partition, offset of the last
record its values reflect) reaches the record's offset. A poller thread reads the pending
entities' ``_v`` every millisecond, so the figures carry about 1 ms of resolution.
``--max-rate`` (e.g. the worker's events/s from benchmarks/harness.py) adds a run at half
that rate. Prints p50 / p99 / max per rate; the topic and keys are deleted at the end.

Kafka's own part, in the same minutes: before each rate's run, the same rate goes for
``--floor-seconds`` to a second topic that the worker does not read, where a plain consumer
(confluent-kafka, ``fetch.wait.max.ms`` 5, reading with a 1 ms timeout) notes when each
sampled record arrives: the floor under any consumer's freshness on this machine at that
moment (the "kafka alone" columns). It is paused while the worker is measured: on a
2-core host, a second consumer of 10k records/s beside the worker took half a core from it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamfeat.config import resolve_kafka, resolve_redis
from streamfeat.generator import OrderEvents
from streamfeat.sinks.values import parse_version

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "benchmarks" / "peers" / "bench_topology.yaml"


@dataclass
class Sample:
    key: str
    produced: float  # time.time() at produce()
    partition: int = -1
    offset: int = -1
    visible: float | None = None


class Poller(threading.Thread):
    """Polls the ``_v`` of sampled entities until each reflects its record."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.prefix = f"sf:{name}:"
        self.pending: list[Sample] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.pending.append(sample)

    def run(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                todo = [s for s in self.pending if s.offset >= 0]
            if todo:
                pipe = self.client.pipeline(transaction=False)
                for s in todo:
                    pipe.hget(self.prefix + s.key, "_v")
                replies = pipe.execute()
                now = time.time()
                done = set()
                for s, v in zip(todo, replies, strict=True):
                    if v is None:
                        continue
                    _gen, partition, offset = parse_version(v)
                    if partition == s.partition and offset >= s.offset:
                        s.visible = now
                        done.add(id(s))
                if done:
                    with self.lock:
                        self.pending = [s for s in self.pending if id(s) not in done]
            time.sleep(0.001)


class KafkaFloor(threading.Thread):
    """A plain consumer of the floor topic: when each sampled record (by partition and
    offset) reached a consumer that does nothing else."""

    def __init__(self, kafka: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"floor-{topic}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 5})
        self.assigned = threading.Event()
        self.consumer.subscribe([topic], on_assign=lambda _c, _ps: self.assigned.set())
        self.received: dict[tuple[int, int], float] = {}
        self.pending: list[Sample] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.paused = threading.Event()

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.pending.append(sample)

    def pause(self) -> None:
        """Stop reading (while the worker is measured): the thread sleeps."""
        self.paused.set()

    def resume(self) -> None:
        self.paused.clear()

    def run(self) -> None:
        while not self.stopping.is_set():
            if self.paused.is_set():
                time.sleep(0.05)
                continue
            # consume() returns once it has 10,000 records or the timeout passed: a longer
            # timeout would be waited out at 10k/s (sessions 7-10 read 30-40 ms here that
            # were this wait, not Kafka's: p50 1.4 ms with a poll() loop on the same host)
            messages = self.consumer.consume(10_000, 0.001)
            now = time.time()
            for m in messages:
                if m.error() is None:
                    self.received[(int(m.partition() or 0), int(m.offset() or 0))] = now
            with self.lock:
                for sample in self.pending:
                    if sample.visible is None:
                        sample.visible = self.received.get((sample.partition, sample.offset))
        self.consumer.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_rate(producer: Producer, watcher: Poller | KafkaFloor, topic: str, rate: float,
             seconds: float, n_samples: int, entities: int, wait: float) -> dict[str, float]:
    """Produce ``rate`` events/s to ``topic`` for ``seconds``; p50/p99/max of the sampled
    records' time from ``produce()`` to ``watcher`` seeing them (Redis, or Kafka alone)."""
    n = int(rate * seconds)
    gen = OrderEvents(entities=entities, start_ms=int(time.time() * 1000),
                      events_per_second=rate, late_fraction=0.0, disorder_ms=0,
                      seed=int(rate))
    events = list(gen.events(n))  # generated up front: the generator is not what we time
    every = max(1, n // n_samples)
    samples: list[Sample] = []

    def delivered(sample: Sample) -> object:
        def callback(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                sample.partition = int(msg.partition() or 0)
                sample.offset = int(msg.offset() or 0)
        return callback

    started = time.time()
    for i, event in enumerate(events):
        due = started + i / rate
        delay = due - time.time()
        if delay > 0.0005:
            producer.poll(0)
            time.sleep(delay)
        callback = None
        if i % every == 0:
            sample = Sample(event.key.decode(), time.time())
            samples.append(sample)
            watcher.add(sample)
            callback = delivered(sample)
        while True:
            try:
                producer.produce(topic, key=event.key, value=event.value,
                                 timestamp=int(time.time() * 1000), on_delivery=callback)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(30)
    achieved = n / (time.time() - started)
    deadline = time.time() + wait
    while time.time() < deadline and any(s.visible is None for s in samples):
        time.sleep(0.05)
    lat = [(s.visible - s.produced) * 1000 for s in samples if s.visible is not None]
    out = {"rate": rate, "achieved": achieved, "samples": len(samples),
           "missing": len(samples) - len(lat)}
    if lat:
        out |= {"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "max": max(lat)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,10000", help="events/s, comma-separated")
    parser.add_argument("--max-rate", type=float, default=None,
                        help="the worker's measured maximum events/s; adds a run at half of it")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--floor-seconds", type=float, default=10.0,
                        help="seconds of Kafka alone per rate (before the worker's run)")
    parser.add_argument("--samples", type=int, default=500, help="sampled records per rate")
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--wait", type=float, default=30.0,
                        help="seconds to wait for the last samples to show up")
    parser.add_argument("--runtime", choices=("faust", "kafka"), default=None,
                        help="the worker's runtime (default: the worker's default, faust)")
    parser.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                        help="an argument for the worker (repeat it), e.g. "
                             "--worker-arg=--commit-every --worker-arg=20")
    parser.add_argument("--kafka", default=None, help="bootstrap servers (env STREAMFEAT_KAFKA)")
    parser.add_argument("--redis", default=None, help="Redis URL (env STREAMFEAT_REDIS)")
    args = parser.parse_args()
    kafka, redis_url = resolve_kafka(args.kafka), resolve_redis(args.redis)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.max_rate:
        rates.append(args.max_rate / 2)

    run_id = dt.datetime.now(dt.UTC).strftime("f%Y%m%d%H%M%S")
    topic, name = f"bench.{run_id}", f"{run_id}_fresh"
    floor_topic = f"{topic}.floor"  # Kafka alone: a topic the worker does not read
    admin = AdminClient({"bootstrap.servers": kafka})
    for created in admin.create_topics([NewTopic(t, args.partitions, 1)
                                        for t in (topic, floor_topic)]).values():
        created.result(60)
    client = redis.Redis.from_url(redis_url)
    work = Path(tempfile.mkdtemp(prefix=f"streamfeat-{run_id}-"))
    topology = work / "topology.yaml"
    topology.write_text(TOPOLOGY.read_text().replace("BENCH_NAME", name)
                        .replace("BENCH_TOPIC", topic))
    log = (work / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "streamfeat"), "worker", str(topology), "--kafka", kafka,
         "--redis", redis_url, "--state-dir", str(work / "state"), "--group", f"sf-{name}",
         *(["--runtime", args.runtime] if args.runtime else []), *args.worker_arg],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    producer = Producer({"bootstrap.servers": kafka, "linger.ms": 1, "enable.idempotence": True})
    poller = Poller(client, name)
    poller.start()
    floor = KafkaFloor(kafka, floor_topic)
    floor.start()
    results = []
    try:
        print(f"worker pid {worker.pid} on {topic}; warming up ...", flush=True)
        if not floor.assigned.wait(60):
            raise SystemExit("the floor consumer got no partitions in 60 s")
        run_rate(producer, floor, floor_topic, 100, 2, 20, args.entities, 60)
        warm = run_rate(producer, poller, topic, 100, 2, 20, args.entities, 60)
        if warm["missing"]:
            raise SystemExit(f"the worker did not catch up; see {work / 'worker.log'}")
        for rate in rates:
            # Kafka alone first (the worker idle), then the worker with no other consumer:
            # on a small host a consumer beside the worker takes the CPU it measures.
            print(f"producing {rate:,.0f} events/s for {args.floor_seconds:.0f} s to "
                  f"{floor_topic} (Kafka alone) ...", flush=True)
            alone = run_rate(producer, floor, floor_topic, rate, args.floor_seconds,
                             args.samples, args.entities, args.wait)
            floor.pause()
            print(f"producing {rate:,.0f} events/s for {args.seconds:.0f} s ...", flush=True)
            r = run_rate(producer, poller, topic, rate, args.seconds, args.samples,
                         args.entities, args.wait)
            floor.resume()
            if "p50" in alone:
                r |= {"kafka_p50": alone["p50"], "kafka_p99": alone["p99"]}
            results.append(r)
            line = (f"  achieved {r['achieved']:,.0f}/s, {r['samples'] - r['missing']}"
                    f"/{r['samples']} samples seen")
            if "p50" in r:
                line += (f"; produce->Redis p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, "
                         f"max {r['max']:.1f} ms")
            if "kafka_p50" in r:
                line += (f"; kafka alone p50 {r['kafka_p50']:.1f} ms, "
                         f"p99 {r['kafka_p99']:.1f} ms")
            print(line, flush=True)
    finally:
        poller.stopping.set()
        floor.stopping.set()
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
        for future in admin.delete_topics([topic, floor_topic, f"{topic}.dlq"],
                                          operation_timeout=30).values():
            try:
                future.result(60)
            except Exception as exc:  # the DLQ topic may not exist
                print(f"  topic cleanup: {exc}")
        keys = list(client.scan_iter(match=f"sf:{name}:*", count=5000))
        for i in range(0, len(keys), 5000):
            client.unlink(*keys[i : i + 5000])
    print("\n| rate target/s | achieved/s | samples | p50 ms | p99 ms | max ms "
          "| kafka alone p50 ms | kafka alone p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        cells = [f"{r.get(k, float('nan')):.1f}"
                 for k in ("p50", "p99", "max", "kafka_p50", "kafka_p99")]
        print(f"| {r['rate']:,.0f} | {r['achieved']:,.0f} | {r['samples'] - r['missing']}"
              f"/{r['samples']} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
