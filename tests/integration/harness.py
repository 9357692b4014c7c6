"""Helpers of the worker's end-to-end tests: real Kafka, real Redis, a real worker process."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamfeat.client import Client
from streamfeat.generator import OrderEvents, produce_events
from streamfeat.runtime.deadletters import DLQ_OFFSET, DLQ_PARTITION
from streamfeat.sinks.values import parse_version
from streamfeat.snapshot.reader import iter_files, partitions, snapshot_files
from streamfeat.topology import AggKind, TopologyDef, load_topology
from streamfeat.topology.definitions import VERSION_FIELD

from reference import Expected, close, expected_final, expected_run

ROOT = Path(__file__).resolve().parents[2]

# Slow event time (one event every ~2 s on average) so that a few thousand events span hours:
# windows fill, slide, close and expire during a test. Out-of-order, late and malformed too.
STREAM = {"entities": 200, "events_per_second": 0.5, "disorder_ms": 120_000,
          "late_fraction": 0.01, "late_ms": 3_600_000, "malformed_fraction": 0.005}

#: The runtime of a fault test's short (CI) run: ``STREAMFEAT_RUNTIME``, else the default.
DEFAULT_RUNTIME = os.environ.get("STREAMFEAT_RUNTIME") or "faust"

#: Worker options for tests that kill or cut off a worker mid-stream: commit state often
#: (default every 5 s) so that the kill lands between commits, after real progress.
COMMIT_OFTEN = ("--commit-every", "0.2")


def make_topology(name: str, topic: str, tmp_path: Path) -> tuple[TopologyDef, Path]:
    """topologies/orders.yaml under a test-unique name and topic."""
    text = (ROOT / "topologies" / "orders.yaml").read_text()
    text = text.replace("name: orders ", f"name: {name} ", 1).replace(
        "topic: orders", f"topic: {topic}", 1
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    topology = load_topology(path)
    assert topology.name == name and topology.source.topic == topic
    return topology, path


def produce(kafka: str, topic: str, n: int, **generator: Any) -> None:
    producer = Producer({"bootstrap.servers": kafka, "linger.ms": 10, "enable.idempotence": True})
    assert produce_events(producer, topic, OrderEvents(**generator).events(n)) == 0


def read_messages(kafka: str, topic: str, **config: Any) -> dict[int, list[Message]]:
    """Every record of the topic (headers and all), per partition, in offset order.

    ``config``: more consumer properties (e.g. ``fetch.max.bytes`` for large records)."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"{topic}-check",
                         "enable.auto.commit": False, **config})
    try:
        meta = consumer.list_topics(topic, timeout=30)
        parts = sorted(meta.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                for p in parts}
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _hi) in ends.items()])
        out: dict[int, list[Message]] = defaultdict(list)
        total = sum(hi - lo for lo, hi in ends.values())
        seen = 0
        deadline = time.time() + 120
        while seen < total and time.time() < deadline:
            for m in consumer.consume(10_000, 1.0):
                assert m.error() is None, m.error()
                out[cast(int, m.partition())].append(m)
                seen += 1
        assert seen == total, f"read {seen} of {total} records of {topic}"
        return {p: out[p] for p in parts}
    finally:
        consumer.close()


def read_topic(kafka: str, topic: str) -> dict[int, list[bytes | None]]:
    """Every record's value of the topic, per partition, in offset order."""
    return {p: [m.value() for m in ms] for p, ms in read_messages(kafka, topic).items()}


def count_topic(kafka: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"{topic}-count"})
    try:
        meta = consumer.list_topics(topic, timeout=30)
        total = 0
        for p in meta.topics[topic].partitions:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            total += hi - lo
        return total
    finally:
        consumer.close()


def worker_cmd(path: Path | Sequence[Path], state_dir: Path, *extra: str) -> list[str]:
    """The worker command (one topology or several); ``STREAMFEAT_RUNTIME=faust|kafka``
    picks the runtime under test."""
    runtime = os.environ.get("STREAMFEAT_RUNTIME")
    chosen = ("--runtime", runtime) if runtime else ()
    paths = [str(path)] if isinstance(path, Path) else [str(p) for p in path]
    return [sys.executable, "-m", "streamfeat.cli", "worker", *paths,
            "--state-dir", str(state_dir), *chosen, *extra]


def worker_env(kafka: str, redis_url: str) -> dict[str, str]:
    return {**os.environ, "STREAMFEAT_KAFKA": kafka, "STREAMFEAT_REDIS": redis_url}


class Workers:
    """Worker processes of one test, each logging to its own file; all stopped on exit.

    ``with Workers(tmp_path, env) as workers: a = workers.start("a", cmd)``: whatever happens
    in the block, every worker still running at its end gets SIGTERM, then SIGKILL, so a
    failing test leaves no process behind. Logs go to files (not pipes, which a chatty worker
    could fill and block on) and are shown by :meth:`log`.
    """

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.dir = tmp_path / "logs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        with (self.dir / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def stop(self, name: str, timeout_s: float = 60) -> int:
        """SIGTERM, then the exit status (SIGKILL and an AssertionError after ``timeout_s``)."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            raise AssertionError(f"worker {name} ignored SIGTERM for {timeout_s}s:\n"
                                 + self.log(name)) from None

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""


def _logs(workers: Workers | None) -> str:
    """The tail of every worker's log, for an assertion message."""
    if workers is None:
        return ""
    return "\n".join(f"--- {name}:\n{workers.log(name)}" for name in workers.procs)


class GroupProgress:
    """What a consumer group has committed of a topic (the workers' advisory commits), against
    the topic's end offsets at the time of asking (a live stream's grow)."""

    def __init__(self, kafka: str, group: str, topic: str) -> None:
        self.group, self.topic = group, topic
        self.consumer = Consumer({"bootstrap.servers": kafka, "group.id": group})
        self.partitions = sorted(
            self.consumer.list_topics(topic, timeout=30).topics[topic].partitions)

    def __enter__(self) -> GroupProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.consumer.close()

    def ends(self) -> dict[int, tuple[int, int]]:
        """(low, high) offsets of each partition, now."""
        return {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30)
                for p in self.partitions}

    def per_partition(self, ends: dict[int, tuple[int, int]] | None = None) -> dict[int, int]:
        """Records committed per partition (0 where nothing is)."""
        ends = ends if ends is not None else self.ends()
        deadline = time.monotonic() + 60
        while True:
            try:
                got = self.consumer.committed(
                    [TopicPartition(self.topic, p) for p in self.partitions], timeout=30)
                break
            except KafkaException as e:
                # A broker just (re)started answers NOT_COORDINATOR / COORDINATOR_LOAD_IN_
                # PROGRESS until it has loaded the offsets topic (seen in CI on a loaded host).
                error = e.args[0]
                if time.monotonic() > deadline or not (
                        error.retriable() or error.code() in _COORDINATOR_NOT_READY):
                    raise
                time.sleep(0.2)
        return {tp.partition: max(tp.offset - ends[tp.partition][0], 0) for tp in got}

    def done(self) -> tuple[int, int]:
        """(records the group has committed, records in the topic)."""
        ends = self.ends()
        return (sum(self.per_partition(ends).values()),
                sum(hi - lo for lo, hi in ends.values()))

    def wait(self, above: int = 0, timeout_s: float = 120,
             workers: Workers | None = None) -> tuple[int, int]:
        """Wait until more than ``above`` records are committed; returns (committed, total).

        A kill or an outage that follows comes after real progress, however long the runtime
        takes to start and join the group.
        """
        deadline = time.time() + timeout_s
        while True:
            done, total = self.done()
            if done > above:
                return done, total
            if time.time() > deadline:
                raise AssertionError(
                    f"group {self.group} committed {done} of {total} records of {self.topic} "
                    f"(waited for more than {above}) in {timeout_s}s\n{_logs(workers)}"
                )
            time.sleep(0.1)

    def wait_end(self, timeout_s: float = 180, workers: Workers | None = None) -> None:
        """Wait until every partition is committed up to its end offset."""
        deadline = time.time() + timeout_s
        while True:
            ends = self.ends()
            per = self.per_partition(ends)
            if all(per[p] >= hi - lo for p, (lo, hi) in ends.items()):
                return
            if time.time() > deadline:
                raise AssertionError(
                    f"group {self.group} did not catch up with {self.topic} in {timeout_s}s: "
                    f"{per} of {ends}\n{_logs(workers)}"
                )
            time.sleep(0.5)


def kill_at_random_points(workers: Workers, group: GroupProgress, cmd: list[str], *,
                          rng: random.Random, runs: int = 4, max_delay_s: float = 1.0,
                          live: LiveStream | None = None) -> int:
    """Start ``cmd`` ``runs`` times; each run gets somewhere (the group commits progress),
    then is killed with SIGKILL at a random instant. Returns how many kills came mid-stream
    (``live``: while it was still being produced; else before the group had it all)."""
    mid_stream = 0
    done, total = group.done()
    for run in range(runs):
        name = f"run{run}"
        workers.start(name, cmd)
        if done < total or live is not None:
            group.wait(above=done, workers=workers)
        time.sleep(rng.uniform(0.0, max_delay_s))
        flowing = live is not None and live.running
        workers.kill(name)
        done, total = group.done()
        mid_stream += flowing if live is not None else done < total
    return mid_stream


def run_to_end(path: Path | Sequence[Path], state_dir: Path, kafka: str, redis_url: str,
               *extra: str) -> Path:
    """Run a worker with ``--stop-at-end``; it must exit 0 within 10 minutes. Returns its log."""
    logs = state_dir.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"run-to-end-{len(list(logs.glob('run-to-end-*.log')))}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            worker_cmd(path, state_dir, "--stop-at-end", *extra), env=worker_env(kafka, redis_url),
            stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            status = proc.wait(600)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            raise AssertionError(
                f"--stop-at-end did not finish in 600 s:\n{log_path.read_text()[-4000:]}"
            ) from None
    assert status == 0, log_path.read_text(errors="replace")[-4000:]
    return log_path


def assert_redis_matches_reference(
    kafka: str, redis_url: str, topology: TopologyDef
) -> tuple[int, int, int]:
    """Every Redis value equals the naive reference; returns (entities, late, malformed)."""
    partitions = read_topic(kafka, topology.source.topic)
    expected, late, malformed = expected_final(topology, partitions)
    assert_cells(redis_url, topology, expected)
    return len(expected), late, malformed


def assert_cells(redis_url: str, topology: TopologyDef,
                  expected: dict[str, dict[str, Any]]) -> None:
    """Every Redis cell of every entity equals ``expected`` (percentiles within the
    sketch's 1 %)."""
    assert expected, "the reference found no entities"
    actual = Client(redis_url).get(topology, sorted(expected))
    sketchy = {f.redis_field(w) for f in topology.features if f.agg is AggKind.PERCENTILE
               for w in f.windows}
    mismatches = []
    for entity, want in expected.items():
        got = actual[entity]
        for name, value in want.items():
            rel = 0.0101 if name in sketchy else 1e-9
            if not close(got.get(name), value, rel):
                mismatches.append(f"{entity}.{name}: redis={got.get(name)!r} reference={value!r}")
    assert not mismatches, f"{len(mismatches)} mismatches, e.g.:\n" + "\n".join(mismatches[:20])


# --------------------------------------------------------------------------- fault runs
#: Records that once stopped a worker or moved stream time, mixed into every fault test's
#: stream (issue "survive anything"); each must end as exactly one dead letter.
HUGE = 5 * 1024 * 1024  # a 5 MiB value that is not JSON
YEAR_2100_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z: far beyond any max_future
#: Topic config for fault streams: the 5 MiB record must fit (the broker's default is 1 MiB).
BIG_RECORDS = {"max.message.bytes": str(8 * 2**20)}
_READ_BIG = {"fetch.max.bytes": 64 * 2**20}


def hostile_values(user: str, rng: random.Random) -> list[bytes]:
    """The bad records of a fault stream, as record values of entity ``user``; all but the
    first are otherwise good orders, so one taken as an event would change the values."""

    def order(ts: object) -> bytes:
        return json.dumps({"user_id": user, "ts": ts, "amount": round(rng.uniform(1, 500), 2),
                           "merchant_id": "m1", "status": "completed"}).encode()

    return [b"x" * HUGE, order(1e23), order(2**63 - 1), order(YEAR_2100_MS)]


class LiveStream:
    """A fault stream, produced on a thread while the faults happen (records flow throughout,
    and a fault is mid-stream by construction): ``n`` order events of :data:`STREAM` (late and
    malformed ones included) with the :func:`hostile_values` at random places among the first
    tenth, each keyed by its entity and stamped (Kafka timestamp) like the event after it.

    Produced evenly over ``seconds`` (0: at once); :meth:`finish` produces the rest at once
    and checks that every record was delivered. The generator's seed and the places come
    from ``rng``. The topic must take 5 MiB records (:data:`BIG_RECORDS`), unless
    ``hostile`` is false (then the stream is the generator's alone).
    """

    def __init__(self, kafka: str, topic: str, n: int, rng: random.Random, *,
                 seconds: float = 0.0, hostile: bool = True, **generator: Any) -> None:
        stream = {**STREAM, **generator}
        self.seed = rng.randrange(2**31)
        self.entities = [f"u{i}" for i in range(stream["entities"])]
        user = rng.choice(self.entities[:20])  # a popular entity: its partition is busy
        bad = hostile_values(user, rng) if hostile else []
        places = sorted(rng.sample(range(n // 100, n // 10), len(bad)))
        self.records: list[tuple[bytes, bytes, int]] = []
        todo = list(zip(places, bad, strict=True))
        for i, event in enumerate(OrderEvents(seed=self.seed, **stream).events(n)):
            while todo and todo[0][0] == i:
                self.records.append((user.encode(), todo.pop(0)[1], event.ts))
            self.records.append((event.key, event.value, event.ts))
        self.hostile = len(bad)
        self.topic, self.seconds = topic, seconds
        self.producer = Producer({"bootstrap.servers": kafka, "linger.ms": 10,
                                  "enable.idempotence": True, "message.max.bytes": 16 * 2**20})
        self.errors: list[str] = []
        self._hurry = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-stream", daemon=True)
        self._undelivered = -1
        print(f"stream: {n} events (generator seed {self.seed}) and {len(bad)} bad records "
              f"at {places}, over {seconds:.0f} s")

    def __enter__(self) -> LiveStream:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._hurry.set()
        self._thread.join(30)  # a daemon: a test failing with the broker away does not wait

    @property
    def running(self) -> bool:
        """Still producing at its pace (not finished, not hurried)."""
        return self._thread.is_alive() and not self._hurry.is_set()

    def finish(self, timeout_s: float = 300) -> None:
        """Produce what is left at once; every record must have been delivered."""
        self._hurry.set()
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"the stream was not produced in {timeout_s} s"
        assert not self.errors, f"{len(self.errors)} records not delivered: {self.errors[:5]}"
        assert self._undelivered == 0, f"{self._undelivered} records still queued"

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def _run(self) -> None:
        start = time.time()
        rate = len(self.records) / self.seconds if self.seconds > 0 else 0.0
        for i, (key, value, ts) in enumerate(self.records):
            if rate and i % 25 == 0 and not self._hurry.is_set():
                ahead = start + i / rate - time.time()
                if ahead > 0:
                    self._hurry.wait(ahead)
            _produce_one(self.producer, self.topic, key, value, ts, self._delivered)
        self._undelivered = int(self.producer.flush(300))


def produce_fault_stream(kafka: str, topic: str, n: int, rng: random.Random,
                         **generator: Any) -> LiveStream:
    """A :class:`LiveStream` produced at once."""
    with LiveStream(kafka, topic, n, rng, **generator) as stream:
        stream.finish()
    return stream


def _produce_one(producer: Producer, topic: str, key: bytes, value: bytes, ts: int,
                 on_delivery: Callable[[Any, Any], None]) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value, timestamp=ts, on_delivery=on_delivery)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.1)


class VersionWatch:
    """Polls ``_v`` of a sample of entities in Redis on a thread while faults happen, and
    records every time one goes backwards (contract section 4: no restart, replay,
    rebalance or pause may move a feature back) or vanishes.

    Redis down or frozen is waited out (short timeouts, then the next round).
    """

    def __init__(self, redis_url: str, topology: TopologyDef, entities: Sequence[str],
                 every_s: float = 0.05, *, moving: bool = True) -> None:
        import redis as redis_lib

        self.moving = moving  # the values must change while watched (a live stream)
        self.keys = [topology.redis_key(e) for e in entities]
        self.every_s = every_s
        self.client = redis_lib.Redis.from_url(redis_url, socket_timeout=1.0,
                                               socket_connect_timeout=1.0)
        self.last: dict[str, tuple[int, int, int]] = {}
        self.backwards: list[str] = []
        self.rounds = self.moves = self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="version-watch", daemon=True)

    @classmethod
    def sample(cls, redis_url: str, topology: TopologyDef, stream: LiveStream,
               rng: random.Random, n: int = 40, *, moving: bool = True) -> VersionWatch:
        """Watch the 20 most active entities of the stream and ``n - 20`` others at random."""
        hot = stream.entities[:20]
        return cls(redis_url, topology, [*hot, *rng.sample(stream.entities[20:], n - 20)],
                   moving=moving)

    def __enter__(self) -> VersionWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _run(self) -> None:
        import redis as redis_lib

        while not self._stop.is_set():
            try:
                pipe = self.client.pipeline(transaction=False)
                for key in self.keys:
                    pipe.hget(key, VERSION_FIELD)
                got = pipe.execute()
            except redis_lib.RedisError:
                self.errors += 1
                self._stop.wait(0.2)
                continue
            self.rounds += 1
            for key, raw in zip(self.keys, got, strict=True):
                before = self.last.get(key)
                if raw is None:
                    if before is not None:
                        self.backwards.append(f"{key}: _v {before} vanished")
                        del self.last[key]
                    continue
                now = parse_version(raw)
                if before is not None and now < before:
                    self.backwards.append(f"{key}: _v {before} -> {now}")
                elif before is not None and now > before:
                    self.moves += 1
                self.last[key] = now
            self._stop.wait(self.every_s)

    def assert_monotonic(self) -> None:
        self.stop()
        assert not self.backwards, (f"{len(self.backwards)} writes went backwards:\n"
                                    + "\n".join(self.backwards[:20]))
        # a watch that saw nothing would pass whatever the worker did
        assert self.rounds >= 10 and self.last and (self.moves > 0 or not self.moving), (
            f"the version watch saw too little: {self.rounds} rounds, {self.moves} moves, "
            f"{len(self.last)} keys")


@dataclass(frozen=True)
class Survived:
    """What :func:`assert_survived` checked."""

    entities: int
    late: int
    malformed: int
    letters: int
    snapshotted: int | None
    version_reads: int  # rounds of the version watch
    version_moves: int  # times it saw a _v move forward


def dead_letter_origins(kafka: str, topic: str) -> list[tuple[int, int]]:
    """(partition, offset) of the original record of every dead letter, duplicates kept."""
    out = []
    for messages in read_messages(kafka, f"{topic}.dlq", **_READ_BIG).values():
        for m in messages:
            h = dict(m.headers() or [])
            out.append((int(h[DLQ_PARTITION]), int(h[DLQ_OFFSET])))
    return out


def snapshot_offsets(snapshot_dir: Path, topic: str) -> Counter[tuple[int, int]]:
    """How many times each (partition, offset) is in the Parquet snapshots of ``topic``
    (each file read on its own: the reader's skipping of overlaps must not hide one)."""
    seen: Counter[tuple[int, int]] = Counter()
    for p in partitions(snapshot_dir, topic):
        for f in snapshot_files(snapshot_dir, topic, p):
            offsets = [o for batch in iter_files([f]) for o in batch.offsets]
            assert (offsets[0], offsets[-1]) == (f.first_offset, f.last_offset), f.path
            seen.update((p, o) for o in offsets)
    return seen


def assert_survived(kafka: str, redis_url: str, topology: TopologyDef, *,
                    versions: VersionWatch | None, snapshot_dir: Path | None = None,
                    hostile: int = 0) -> Survived:
    """The end state of a fault test: exactly what an uninterrupted run gives.

    - every Redis cell equals the naive reference over the whole topic;
    - each late or malformed record (by the reference, ``max_future`` included) is exactly
      one dead letter, named by its partition and offset, and nothing else is;
    - ``_v`` never went backwards while the faults happened (``versions``);
    - with ``snapshot_dir``: every record of the topic is in the snapshots exactly once (the
      writer stores every record consumed, good or bad);
    - ``hostile``: at least that many records were malformed (the bad records mixed in).
    """
    topic = topology.source.topic
    messages = read_messages(kafka, topic, **_READ_BIG)
    run: Expected = expected_run(
        topology, {p: [m.value() for m in ms] for p, ms in messages.items()},
        {p: [m.timestamp()[1] for m in ms] for p, ms in messages.items()})
    assert run.malformed >= hostile, (run.malformed, hostile)
    assert_cells(redis_url, topology, run.values)
    letters = Counter(dead_letter_origins(kafka, topic))
    twice = {origin: n for origin, n in letters.items() if n > 1}
    assert not twice, f"{len(twice)} dead letters sent more than once, e.g. {list(twice)[:10]}"
    want = {(p, cast(int, messages[p][seq].offset())) for p, seqs in run.dead.items()
            for seq in seqs}
    assert set(letters) == want, (
        f"dead letters of records the reference took: {sorted(set(letters) - want)[:10]}; "
        f"missing: {sorted(want - set(letters))[:10]}")
    assert len(letters) == run.late + run.malformed
    reads = moves = 0
    if versions is not None:
        versions.assert_monotonic()
        reads, moves = versions.rounds, versions.moves
    snapshotted = None
    if snapshot_dir is not None:
        seen = snapshot_offsets(snapshot_dir, topic)
        again = {tp: n for tp, n in seen.items() if n > 1}
        assert not again, f"{len(again)} records snapshotted twice, e.g. {list(again)[:10]}"
        every = {(p, cast(int, m.offset())) for p, ms in messages.items() for m in ms}
        assert set(seen) == every, (f"snapshots miss {sorted(every - set(seen))[:10]}, "
                                    f"hold unknown {sorted(set(seen) - every)[:10]}")
        snapshotted = len(seen)
    return Survived(len(run.values), run.late, run.malformed, len(letters), snapshotted, reads,
                    moves)


_COORDINATOR_NOT_READY = frozenset({
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT, KafkaError._TRANSPORT})
"""Errors of a group coordinator not ready yet (a broker just started or restarted)."""


def free_port() -> int:
    """A TCP port free on this host (for a worker's --metrics-port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape_metrics(port: int) -> dict[str, float]:
    """A worker's Prometheus metrics, each summed over its labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def wait_for_metrics(port: int, done: Callable[[dict[str, float]], bool],
                     timeout_s: float = 120) -> dict[str, float]:
    """Scrape a worker's metrics until ``done`` says so or ``timeout_s`` passes; returns the
    last scrape (the caller asserts on it). A worker not yet listening is waited for."""
    deadline = time.time() + timeout_s
    metrics: dict[str, float] = {}
    while time.time() < deadline:
        with contextlib.suppress(OSError):
            metrics = scrape_metrics(port)
        if done(metrics):
            break
        time.sleep(0.3)
    return metrics


def get_health(port: int, path: str = "/health") -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of a worker's health view; (0, {}) while it is not listening."""
    import json
    import urllib.error

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return 0, {}


def wait_for_health(port: int, done: Callable[[int, dict[str, Any]], bool],
                    timeout_s: float = 60, path: str = "/health",
                    workers: Workers | None = None) -> tuple[float, dict[str, Any]]:
    """Poll a health view every 0.1 s until ``done(status, body)``; returns (when, body)."""
    deadline = time.time() + timeout_s
    code, body = 0, {}
    while time.time() < deadline:
        code, body = get_health(port, path)
        if done(code, body):
            return time.time(), body
        time.sleep(0.1)
    raise AssertionError(f"{path} never got there in {timeout_s}s: {code} {body}\n"
                         f"{_logs(workers)}")


class PrivateRedis:
    """A redis-server of this test alone on a free port, which it can freeze (SIGSTOP) and
    thaw (SIGCONT), or shut down (saving its data) and start again; stopped on exit."""

    def __init__(self, tmp_path: Path) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server is needed for this test; deploy/local/up installs it"
        self.server, self.dir = server, tmp_path
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (loading what :meth:`shutdown` saved) and wait for a PING."""
        import redis as redis_lib

        self.proc = subprocess.Popen(
            [self.server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if redis_lib.Redis.from_url(self.url).ping():
                    return
            except redis_lib.ConnectionError:
                time.sleep(0.1)
        self.__exit__()
        raise AssertionError("private redis-server did not start")

    def shutdown(self) -> None:
        """SHUTDOWN SAVE: Redis writes dump.rdb and exits; :meth:`start` loads it. (Redis is
        the online store: its data outlives an outage; losing it is another test.)"""
        import redis as redis_lib

        assert self.proc is not None
        with contextlib.suppress(redis_lib.ConnectionError):
            redis_lib.Redis.from_url(self.url).shutdown(save=True)
        self.proc.wait(30)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __exit__(self, *_exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


class PrivateKafka:
    """A Kafka broker of this test alone (``deploy/local/up`` in a directory of its own, on
    free ports), which the test can stop and start again with its data; stopped on exit.

    The jars are shared with the session's broker when it was started by ``deploy/local/up``
    (a link), else fetched by that script as usual. Redis stays the session's.
    """

    def __init__(self, tmp_path: Path, redis_port: int) -> None:
        self.dir = tmp_path / "private-kafka"
        self.env = {**os.environ, "STREAMFEAT_LOCAL_DIR": str(self.dir),
                    "KAFKA_PORT": str(free_port()), "KAFKA_CONTROLLER_PORT": str(free_port()),
                    "REDIS_PORT": str(redis_port)}
        self.bootstrap = f"127.0.0.1:{self.env['KAFKA_PORT']}"
        shared = ROOT / ".local" / "kafka"
        for libs in shared.glob("libs-*"):
            if (libs / ".complete").exists():
                (self.dir / "kafka").mkdir(parents=True, exist_ok=True)
                link = self.dir / "kafka" / libs.name
                if not link.exists():
                    link.symlink_to(libs)

    def start(self) -> None:
        done = subprocess.run([str(ROOT / "deploy" / "local" / "up")], env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]

    def stop(self) -> None:
        """Stop the broker (SIGTERM, as an operator's restart would); its data stays."""
        pidf = self.dir / "run" / "kafka.pid"
        if not pidf.exists():
            return
        pid = int(pidf.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        pidf.unlink()

    def __enter__(self) -> PrivateKafka:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
