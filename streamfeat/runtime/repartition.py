"""The first stage of a re-keyed topology: source records -> ``<topology>.repartition``.

When a topic is not keyed by a topology's entity (``source.keyed_by_entity: false``), an
entity's events are spread over every partition. :class:`Repartitioner` reads one source
partition, decodes each record with the topology's own decoder (a malformed record is a
dead letter here, with its source coordinates, and never reaches the repartition topic),
and writes each well-formed record to the repartition topic keyed by its entity id, with
its value, its Kafka timestamp and its source partition and offset (headers). The second
stage is an ordinary :class:`~streamfeat.pipeline.PartitionPipeline` over the repartition
topic's partitions.

Exactly once between the stages, without Kafka transactions: the first stage stores its
next source offset only after the repartition topic has acknowledged every record before
it (the checkpoint waits for :meth:`RepartitionOutput.settle`); after a crash it writes
again from there, and the second stage drops a record whose source offset is at or below
the highest it took from that source partition (a source partition's records reach each
repartition partition in order, from an idempotent producer). The second stage stores
those offsets with its state, so the rule holds across its own restarts too. This works
the same with either consumer runtime (a transactional producer would need the consumer's
group metadata, which Faust does not expose), and the repartition topic stays readable by
any consumer.
"""

from __future__ import annotations

import logging
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamfeat.errors import StreamfeatError
from streamfeat.pipeline import DeadLetter
from streamfeat.pipeline.rekey import repartition_topic
from streamfeat.records import (
    ORIGIN_OFFSET_HEADER,
    ORIGIN_PARTITION_HEADER,
    Decoder,
    RecordBatch,
)
from streamfeat.runtime.consumers import ConsumerSettings, MemoryLog
from streamfeat.state import PartitionStore
from streamfeat.topology import TopologyDef

__all__ = [
    "KafkaRepartition",
    "MemoryRepartition",
    "Outgoing",
    "RekeyOutcome",
    "RepartitionOutput",
    "Repartitioner",
    "release_in_time_order",
]

log = logging.getLogger("streamfeat.worker")


class RepartitionOutput(Protocol):
    """Where the first stage writes: the repartition topics."""

    def prepare(self, partitions: Mapping[str, int]) -> None:
        """Make sure each repartition topic exists, with its number of partitions."""
        ...

    def send_many(self, records: Iterable[Outgoing]) -> None:
        """Queue records in this order (blocks while the producer's queue is full)."""
        ...

    def settle(self) -> None:
        """Wait until every record sent is acknowledged; raises if one cannot be."""
        ...

    def close(self) -> None: ...


Outgoing = tuple[int, bytes, bytes | None, int, int, str]
"""A record for the repartition topic: Kafka timestamp, entity id, value, source partition,
source offset, repartition topic."""


@dataclass(slots=True)
class RekeyOutcome:
    consumed: int = 0
    forwarded: int = 0  # well-formed records, held for the repartition topic
    dead: list[DeadLetter] = field(default_factory=list)

    @property
    def malformed(self) -> int:
        return len(self.dead)


@dataclass(slots=True)
class _Run:
    """Well-formed records of one batch of one source partition, held as columns."""

    ts: npt.NDArray[np.int64]
    order: npt.NDArray[np.int64]  # running maximum of ts over the partition: the merge key
    keys: list[bytes]
    values: list[bytes | None]
    offsets: list[int]
    start: int = 0  # records before it were sent

    def __len__(self) -> int:
        return len(self.offsets) - self.start


_Slice = tuple["Repartitioner", _Run, int, int]


def release_in_time_order(output: RepartitionOutput, rekeyers: Sequence[Repartitioner],
                          now: float, *, idle_s: float = 0.5,
                          max_held: int = 500_000) -> list[Repartitioner]:
    """Send what the first stages hold, as far as every busy source partition has reached.

    Each source partition is read at its own pace (fetches, rebalances, a backlog), so the
    repartition topic would interleave them by reading order, and a partition read ahead
    would push the second stage's stream time forward and make the others' events late.
    So a first stage holds its records until every partition that is still delivering has
    reached their Kafka timestamps (a partition silent for ``idle_s`` does not hold the
    others back), and the released records of all partitions are sent merged by
    timestamp; a partition's own records keep their offset order (the second stage's
    dedupe relies on it): the merge key is each partition's running maximum of
    timestamps, which never decreases within a partition, so a stable sort by it merges
    without reordering any partition. Beyond ``max_held`` records the longest queue is
    released. Returns the stages that sent records (their stored offsets moved).
    """
    active = [r.latest_ts for r in rekeyers
              if r.latest_ts is not None and now - r.last_delivery < idle_s]
    frontier = min(active) if active else None
    held = sum(r.held_count for r in rekeyers)
    slices: list[_Slice] = []
    moved = []
    for r in sorted(rekeyers, key=lambda r: -r.held_count):
        overflow = held > max_held
        taken = r.take_until(None if overflow else frontier)
        if taken:
            held -= sum(end - start for _run, start, end in taken)
            slices.extend((r, run, start, end) for run, start, end in taken)
            moved.append(r)
    if slices:
        output.send_many(_merged(slices))
    return moved


def _merged(slices: list[_Slice]) -> Iterator[Outgoing]:
    if len({id(r) for r, _run, _s, _e in slices}) == 1:
        order: Iterable[tuple[int, int]] = ((k, i) for k, (_r, _run, s, e) in enumerate(slices)
                                            for i in range(s, e))
    else:
        keys = np.concatenate([run.order[s:e] for _r, run, s, e in slices])
        which = np.concatenate([np.full(e - s, k, dtype=np.int64)
                                for k, (_r, _run, s, e) in enumerate(slices)])
        where = np.concatenate([np.arange(s, e, dtype=np.int64) for _r, _run, s, e in slices])
        ranks = np.argsort(keys, kind="stable")
        order = zip(which[ranks].tolist(), where[ranks].tolist(), strict=True)
    columns = [(r.target, r.partition, run.ts.tolist(), run.keys, run.values, run.offsets)
               for r, run, _s, _e in slices]
    for k, i in order:
        topic, partition, ts, keys_, values, offsets = columns[k]
        yield ts[i], keys_[i], values[i], partition, offsets[i], topic


class Repartitioner:
    """One re-keyed topology on one source partition: the first stage."""

    def __init__(self, topology: TopologyDef, partition: int, output: RepartitionOutput,
                 store: PartitionStore | None = None) -> None:
        self.topology = topology
        self.partition = partition
        self.output = output
        self.store = store
        self.target = repartition_topic(topology)
        self.decoder = Decoder(topology)
        self.read_offset: int | None = None
        """The next source offset to read (records before it were processed)."""
        if store is not None:
            self.read_offset = store.committed().next_offset
        self.held: deque[_Run] = deque()
        """Records read but not yet sent (see :func:`release_in_time_order`)."""
        self.latest_ts: int | None = None
        self.last_delivery = float("-inf")

    @property
    def held_count(self) -> int:
        return sum(len(run) for run in self.held)

    @property
    def next_offset(self) -> int | None:
        """The offset to resume from: the first record held, else the next to read."""
        if self.held:
            run = self.held[0]
            return run.offsets[run.start]
        return self.read_offset

    def take_until(self, frontier: int | None) -> list[tuple[_Run, int, int]]:
        """Remove and return the held records up to the first one after ``frontier``, as
        (run, start, end) slices."""
        out = []
        held = self.held
        while held:
            run = held[0]
            end = len(run.offsets)
            if frontier is not None:
                after = np.flatnonzero(run.ts[run.start:] > frontier)
                if after.size:
                    end = run.start + int(after[0])
            if end > run.start:
                out.append((run, run.start, end))
            if end < len(run.offsets):
                run.start = end
                break
            held.popleft()
        return out

    def process(self, records: RecordBatch, now: float) -> RekeyOutcome:
        """Decode a batch: its well-formed records are held for
        :func:`release_in_time_order`; the malformed ones are dead letters."""
        out = RekeyOutcome(consumed=len(records))
        if not records:
            return out
        decoded = self.decoder.decode(records.values, records.kafka_ts)
        offsets, stamps, values = records.offsets, records.kafka_ts, records.values
        name = self.topology.name
        out.dead = [DeadLetter(records[pos], reason, "malformed", name)
                    for pos, reason in decoded.errors]
        if decoded.errors:
            kept = decoded.positions
            offsets = [offsets[i] for i in kept]
            stamps = [stamps[i] for i in kept]
            values = [values[i] for i in kept]
        out.forwarded = len(offsets)
        if offsets:
            ts = np.asarray(stamps, dtype=np.int64)
            order = np.maximum.accumulate(ts)
            if self.latest_ts is not None:
                order = np.maximum(order, self.latest_ts)
            self.held.append(_Run(ts, order, [k.encode() for k in decoded.keys], values,
                                  offsets))
            self.latest_ts = int(order[-1])
        self.last_delivery = now
        self.read_offset = records.offsets[-1] + 1
        return out

    def commit(self) -> None:
        """Store the next source offset (after the repartition topic acknowledged)."""
        if self.store is not None and self.next_offset is not None:
            self.store.commit(self.next_offset, b"", [])

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


class KafkaRepartition:
    """:class:`RepartitionOutput` to Kafka: an idempotent producer that never gives up.

    Records are partitioned like Kafka's Java clients do (murmur2 of the key), so any
    other producer keyed by entity id agrees on an entity's partition. A broker outage
    holds records in the producer (``message.timeout.ms`` infinite) and, once its queue is
    full, pauses the stage: back-pressure, never a dropped record.
    """

    def __init__(self, settings: ConsumerSettings,
                 on_wait: Callable[[int, BaseException], None] | None = None) -> None:
        base = settings.librdkafka()
        self.producer = Producer({
            **base, "enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4",
            "partitioner": "murmur2_random", "message.timeout.ms": 0,
            "queue.buffering.max.kbytes": 256 * 1024,
            "on_delivery": self._delivered,  # one callback for all: none to pass per record
        })
        self.admin = AdminClient(base)
        self.on_wait = on_wait
        self._failed: list[str] = []

    def prepare(self, partitions: Mapping[str, int]) -> None:
        meta = self.admin.list_topics(timeout=30)
        wanted = [NewTopic(topic, n, 1) for topic, n in partitions.items()
                  if topic not in meta.topics]
        for topic, future in self.admin.create_topics(wanted).items() if wanted else []:
            try:
                future.result(30)
                log.info("created repartition topic %s (%d partitions)", topic,
                         partitions[topic])
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failed.append(str(err))

    def send_many(self, records: Iterable[Outgoing]) -> None:
        produce, oh = self.producer.produce, ORIGIN_OFFSET_HEADER
        partition_headers: dict[int, tuple[str, str | bytes | None]] = {}
        for ts, key, value, partition, offset, topic in records:
            ph = partition_headers.get(partition)
            if ph is None:
                ph = partition_headers[partition] = (ORIGIN_PARTITION_HEADER,
                                                     b"%d" % partition)
            headers: list[tuple[str, str | bytes | None]] = [ph, (oh, b"%d" % offset)]
            while True:
                try:
                    produce(topic, value, key, timestamp=ts, headers=headers)
                    break
                except BufferError:  # the queue is full: wait for the broker (back-pressure)
                    self.producer.poll(0.1)

    def settle(self) -> None:
        attempt = 0
        while (remaining := self.producer.flush(1)) > 0:  # health hears of it within a second
            if self.on_wait is not None:
                self.on_wait(attempt, RuntimeError(
                    f"{remaining} re-keyed records not yet acknowledged"))
            attempt += 1
        if self._failed:
            failed, self._failed = self._failed, []
            raise StreamfeatError(
                f"{len(failed)} records could not be written to the repartition topic "
                f"({failed[0]}); the worker stops and its restart writes them again")

    def close(self) -> None:
        self.producer.flush(10)


class MemoryRepartition:
    """:class:`RepartitionOutput` into a :class:`MemoryLog` (unit tests, embedding)."""

    def __init__(self, log: MemoryLog) -> None:
        self.log = log
        self.partitions: dict[str, int] = {}

    def prepare(self, partitions: Mapping[str, int]) -> None:
        for topic, n in partitions.items():
            self.partitions[topic] = n
            self.log.create(topic, n)

    def send_many(self, records: Iterable[Outgoing]) -> None:
        for ts, key, value, origin_partition, origin_offset, topic in records:
            partition = zlib.crc32(key) % self.partitions[topic]
            self.log.append(topic, partition, key, value, ts,
                            origin=(origin_partition, origin_offset))

    def settle(self) -> None:
        pass

    def close(self) -> None:
        pass
