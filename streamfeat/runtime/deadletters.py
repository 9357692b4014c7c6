"""The dead-letter queue: every malformed or late record sent to ``<topic>.dlq`` exactly once.

:class:`DeadLetterQueue` is the rule; a :class:`DeadLetterOutput` carries the letters
(:class:`KafkaDeadLetters` in a worker, an in-memory one in unit tests).

* A letter is identified by (topology, source topic, partition, offset). The queue keeps
  the highest offset sent per (topology, topic, partition); a letter at or below it was sent
  before (by this worker before a crash, or by the partition's previous owner) and is not
  sent again. On assignment the queue learns those offsets by reading the end of the DLQ
  back (:meth:`DeadLetterOutput.sent`), so a restart or a takeover does not resend.
* A re-keyed topology's late letters are found in its repartition topic's partitions: they
  go to the *source* topic's ``<topic>.dlq`` with the record's source partition and offset
  in the usual headers (what a person looks for), and with ``streamfeat-via`` naming the
  repartition partition and offset they were consumed at (what the dedupe counts by).
* A letter too large for its DLQ topic is not allowed to stop the worker: each
  ``<topic>.dlq`` is created with its source topic's ``max.message.bytes`` (so a record
  the source accepted fits whole), and a letter still too large (a DLQ created earlier
  with a smaller limit) is sent truncated, with ``streamfeat-truncated`` holding the
  original value's size in bytes.
* :meth:`DeadLetterQueue.send` returns only when every letter is acknowledged by Kafka;
  only letters whose delivery *failed* are produced again (a letter still queued in the
  producer during an outage is waited for, never duplicated). The batch's offsets are
  stored after that, never before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from streamfeat.pipeline import DeadLetter
from streamfeat.retry import backoff_s, call_with_retry
from streamfeat.runtime.consumers import TP, ConsumerSettings

__all__ = [
    "DLQ_KIND",
    "DLQ_OFFSET",
    "DLQ_PARTITION",
    "DLQ_REASON",
    "DLQ_TOPIC",
    "DLQ_TOPOLOGY",
    "DLQ_TRUNCATED",
    "DLQ_VIA",
    "DeadLetterOutput",
    "DeadLetterQueue",
    "KafkaDeadLetters",
    "Letter",
    "SentKey",
]

log = logging.getLogger("streamfeat.worker")

DLQ_REASON = "streamfeat-reason"
DLQ_KIND = "streamfeat-kind"
DLQ_TOPOLOGY = "streamfeat-topology"
DLQ_TOPIC = "streamfeat-topic"
DLQ_PARTITION = "streamfeat-partition"
DLQ_OFFSET = "streamfeat-offset"
DLQ_VIA = "streamfeat-via"  # "<consumed topic>/<partition>/<offset>" of a re-keyed record
DLQ_TRUNCATED = "streamfeat-truncated"  # the original value's size, when sent truncated
_TRUNCATED_BYTES = 256 * 1024  # what is kept of a letter too large for its DLQ
_MAX_MESSAGE_BYTES = 1_000_000_000  # librdkafka's upper bound for message.max.bytes
_TAIL = 5000  # dead letters read back per partition on assignment

Letter = tuple[str, DeadLetter]
"""A dead letter and the source topic its record came from."""
SentKey = tuple[str, str, int]
"""(topology, source topic, partition): the highest offset sent is kept per key."""
OnWait = Callable[[int, BaseException], None]


def _key(letter: Letter) -> SentKey:
    topic, d = letter
    return d.topology, topic, d.record.partition


class DeadLetterOutput(Protocol):
    """Carries dead letters to ``<topic>.dlq`` and reads back what was sent."""

    def prepare(self, topics: Sequence[str]) -> None:
        """Make sure the dead-letter topics of these source topics exist."""
        ...

    def deliver(self, letters: Sequence[Letter], on_wait: OnWait) -> list[Letter]:
        """Send ``letters``; wait until each is acknowledged or failed; return the failed.

        ``on_wait`` is called while acknowledgements are outstanding (it may raise to stop).
        """
        ...

    def sent(self, partitions: Sequence[TP]) -> dict[SentKey, int]:
        """The highest offset already in the DLQ per key, for these source partitions."""
        ...

    def close(self) -> None: ...


class DeadLetterQueue:
    """Sends each dead letter once: dedupe by offset, resend only failed deliveries."""

    def __init__(self, output: DeadLetterOutput, on_retry: OnWait,
                 *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.output = output
        self.on_retry = on_retry
        self.sleep = sleep
        self.sent: dict[SentKey, int] = {}

    def learn(self, partitions: Sequence[TP]) -> None:
        """Read back what was already sent for these partitions (on assignment)."""
        for key, offset in self.output.sent(partitions).items():
            self.sent[key] = max(self.sent.get(key, -1), offset)

    def send(self, letters: Sequence[Letter]) -> None:
        """Deliver the letters not sent before; returns when all are acknowledged."""
        pending = [x for x in letters if x[1].record.offset > self.sent.get(_key(x), -1)]
        attempt = 0
        while pending:
            pending = self.output.deliver(pending, self.on_retry)
            if pending:
                self.on_retry(attempt, RuntimeError(f"{len(pending)} dead letters failed"))
                self.sleep(backoff_s(attempt))
                attempt += 1
        for x in letters:
            key = _key(x)
            self.sent[key] = max(self.sent.get(key, -1), x[1].record.offset)


class KafkaDeadLetters:
    """:class:`DeadLetterOutput` to Kafka: an idempotent producer and a tail reader.

    ``sources`` maps each repartition topic consumed to its source topic, whose DLQ its
    letters go to.
    """

    def __init__(self, settings: ConsumerSettings,
                 sources: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.sources = dict(sources or {})
        self._dlq_partitions: dict[str, int] = {}
        base = settings.librdkafka()
        # As large as a record can be: the topics' own limits decide (see prepare()).
        self.producer = Producer({**base, "enable.idempotence": True, "linger.ms": 5,
                                  "message.max.bytes": _MAX_MESSAGE_BYTES})
        self.admin = AdminClient(base)
        self._reader: Consumer | None = None

    def prepare(self, topics: Sequence[str]) -> None:
        meta = self.admin.list_topics(timeout=30)
        wanted = []
        for topic in topics:
            src = meta.topics.get(topic)
            if src is None or src.error is not None:
                self.admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
                meta = self.admin.list_topics(timeout=30)
                src = meta.topics[topic]
            dlq = f"{topic}.dlq"
            self._dlq_partitions[dlq] = len(src.partitions)
            if dlq not in meta.topics:
                # a record the source topic accepted must fit whole in its dead letter
                limit = self._max_message_bytes(topic)
                config = {} if limit is None else {"max.message.bytes": str(limit + 65_536)}
                wanted.append(NewTopic(dlq, len(src.partitions), 1, config=config))
        for topic, future in self.admin.create_topics(wanted).items() if wanted else []:
            try:
                future.result(30)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
            log.info("created dead-letter topic %s", topic)

    def _max_message_bytes(self, topic: str) -> int | None:
        try:
            resource = ConfigResource(ResourceType.TOPIC, topic)
            entries = self.admin.describe_configs([resource])[resource].result(30)
            return int(entries["max.message.bytes"].value)
        except Exception as exc:  # not allowed to describe it: the broker's default then
            log.debug("max.message.bytes of %s: %s", topic, exc)
            return None

    def deliver(self, letters: Sequence[Letter], on_wait: OnWait) -> list[Letter]:
        failed: list[Letter] = []
        too_large: list[Letter] = []
        self._produce_all(letters, failed, too_large, truncate=False)
        self._wait(on_wait)
        if too_large:  # the DLQ topic's limit is below the record: keep what fits
            self._produce_all(too_large, failed, [], truncate=True)
            self._wait(on_wait)
        return failed

    def _wait(self, on_wait: OnWait) -> None:
        attempt = 0
        # Letters still queued are neither delivered nor failed yet: wait for their
        # outcome (librdkafka retries them until message.timeout.ms), never produce twice.
        while (remaining := self.producer.flush(1)) > 0:  # health hears of it within a second
            on_wait(attempt, RuntimeError(f"{remaining} dead letters not yet acknowledged"))
            attempt += 1

    def _produce_all(self, letters: Sequence[Letter], failed: list[Letter],
                     too_large: list[Letter], *, truncate: bool) -> None:
        def on_delivery(err: KafkaError | None, _msg: Message, letter: Letter) -> None:
            if err is None:
                return
            if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and not truncate:
                too_large.append(letter)
            else:
                failed.append(letter)

        for letter in letters:
            topic, d = letter
            r = d.record
            source, partition, offset = topic, r.partition, r.offset
            dlq, dlq_partition = f"{topic}.dlq", r.partition
            if d.origin is not None:  # consumed from a repartition topic
                source = self.sources[topic]
                partition, offset = d.origin
                dlq = f"{source}.dlq"
                dlq_partition = r.partition % self._partitions_of(dlq)
            headers: list[tuple[str, str | bytes | None]] = [
                (DLQ_REASON, d.reason.encode()),
                (DLQ_KIND, d.kind.encode()),
                (DLQ_TOPOLOGY, d.topology.encode()),
                (DLQ_TOPIC, source.encode()),
                (DLQ_PARTITION, str(partition).encode()),
                (DLQ_OFFSET, str(offset).encode()),
            ]
            if d.origin is not None:
                headers.append((DLQ_VIA, f"{topic}/{r.partition}/{r.offset}".encode()))
            key, value = r.key, r.value
            if truncate:
                headers.append((DLQ_TRUNCATED, str(len(value or b"")).encode()))
                key = None if key is None else key[:_TRUNCATED_BYTES // 4]
                value = None if value is None else value[:_TRUNCATED_BYTES]
            callback = _bind(on_delivery, letter)
            while True:
                try:
                    self.producer.produce(dlq, key=key, value=value,
                                          partition=dlq_partition, headers=headers,
                                          on_delivery=callback)
                    break
                except BufferError:
                    self.producer.poll(0.1)
                except KafkaException as exc:  # refused before sending: too large here
                    if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE or truncate:
                        raise
                    too_large.append(letter)
                    break

    def sent(self, partitions: Sequence[TP]) -> dict[SentKey, int]:
        """Reads the last records of each ``<topic>.dlq`` partition, all in one pass.

        One long-lived reader: a consumer per partition costs about a second.
        """
        found: dict[SentKey, int] = {}
        if self._reader is None:
            self._reader = Consumer({
                **self.settings.librdkafka(), "group.id": f"{self.settings.group_id}.dlq-tail",
                "enable.auto.commit": False,
            })
        reader = self._reader
        todo: dict[tuple[str, int], int] = {}  # dlq partition -> last offset to read
        starts = []
        for topic, partition in partitions:
            if topic in self.sources:
                dlq = f"{self.sources[topic]}.dlq"
                partition = partition % self._partitions_of(dlq)
            else:
                dlq = f"{topic}.dlq"
            if (dlq, partition) in todo:
                continue
            low, high = _watermarks(reader, TopicPartition(dlq, partition))
            if high > low:
                todo[(dlq, partition)] = high - 1
                starts.append(TopicPartition(dlq, partition, max(low, high - _TAIL)))
        if not todo:
            return found
        reader.assign(starts)
        deadline = time.time() + 60
        try:
            while todo and time.time() < deadline:
                for m in reader.consume(10_000, 0.5):
                    if m.error() is not None:
                        continue
                    dlq_tp = (cast(str, m.topic()), cast(int, m.partition()))
                    offset = cast(int, m.offset())
                    if offset >= todo.get(dlq_tp, offset + 1):
                        del todo[dlq_tp]
                    h = dict(m.headers() or [])
                    via = _text(h.get(DLQ_VIA))
                    if via:  # re-keyed: counted by where it was consumed
                        via_topic, via_partition, via_offset = via.rsplit("/", 2)
                        key = (_text(h.get(DLQ_TOPOLOGY)), via_topic, int(via_partition))
                        off = int(via_offset)
                    else:
                        key = (_text(h.get(DLQ_TOPOLOGY)), _text(h.get(DLQ_TOPIC)),
                               int(_text(h.get(DLQ_PARTITION)) or dlq_tp[1]))
                        off = int(_text(h.get(DLQ_OFFSET)) or -1)
                    found[key] = max(found.get(key, -1), off)
        finally:
            reader.unassign()
        if todo:
            log.warning("could not read the end of %s within 60 s; a dead letter sent before "
                        "a crash may be sent again", sorted(todo))
        return found

    def _partitions_of(self, dlq: str) -> int:
        if dlq not in self._dlq_partitions:
            meta = self.admin.list_topics(dlq, timeout=30)
            self._dlq_partitions[dlq] = len(meta.topics[dlq].partitions)
        return self._dlq_partitions[dlq]

    def close(self) -> None:
        self.producer.flush(10)
        if self._reader is not None:
            self._reader.close()


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _bind(fn: Callable[[KafkaError | None, Message, Any], None], item: Any,
          ) -> Callable[[KafkaError | None, Message], None]:
    return lambda err, msg: fn(err, msg, item)


def _watermarks(reader: Consumer, tp: TopicPartition, *, within_s: float = 60.0
                ) -> tuple[int, int]:
    """``get_watermark_offsets``, again while the error is retriable: a dead-letter topic
    created a moment ago may have no leader yet (NOT_LEADER_FOR_PARTITION, seen on a
    starved broker); that must not stop the worker in the middle of an assignment."""
    deadline = time.monotonic() + within_s

    def again(_attempt: int, exc: BaseException) -> None:
        err = exc.args[0] if exc.args else None
        retriable = isinstance(err, KafkaError) and (
            err.retriable() or err.code() in _NO_LEADER_YET)
        if not retriable or time.monotonic() >= deadline:
            raise exc
        log.info("offsets of %s[%d] not readable yet (%s); again", tp.topic, tp.partition, err)

    low, high = call_with_retry(lambda: reader.get_watermark_offsets(tp, timeout=30),
                                retry_on=KafkaException, on_retry=again)
    return int(low), int(high)


_NO_LEADER_YET = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION,
})
