"""The dead-letter queue: every malformed or late record sent to ``<topic>.dlq`` exactly once.

:class:`DeadLetterQueue` is the rule; a :class:`DeadLetterOutput` carries the letters
(:class:`KafkaDeadLetters` in a worker, an in-memory one in unit tests).

* A letter is identified by (topology, source topic, partition, offset). The queue keeps
  the highest offset sent per (topology, topic, partition); a letter at or below it was sent
  before (by this worker before a crash, or by the partition's previous owner) and is not
  sent again. On assignment the queue learns those offsets by reading the end of the DLQ
  back (:meth:`DeadLetterOutput.sent`), so a restart or a takeover does not resend.
* :meth:`DeadLetterQueue.send` returns only when every letter is acknowledged by Kafka;
  only letters whose delivery *failed* are produced again (a letter still queued in the
  producer during an outage is waited for, never duplicated). The batch's offsets are
  stored after that, never before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamfeat.pipeline import DeadLetter
from streamfeat.retry import backoff_s
from streamfeat.runtime.consumers import TP, ConsumerSettings

__all__ = [
    "DLQ_KIND",
    "DLQ_OFFSET",
    "DLQ_PARTITION",
    "DLQ_REASON",
    "DLQ_TOPIC",
    "DLQ_TOPOLOGY",
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
    """:class:`DeadLetterOutput` to Kafka: an idempotent producer and a tail reader."""

    def __init__(self, settings: ConsumerSettings) -> None:
        self.settings = settings
        base = settings.librdkafka()
        self.producer = Producer({**base, "enable.idempotence": True, "linger.ms": 5})
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
            if dlq not in meta.topics:
                wanted.append(NewTopic(dlq, len(src.partitions), 1))
        for topic, future in self.admin.create_topics(wanted).items() if wanted else []:
            try:
                future.result(30)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
            log.info("created dead-letter topic %s", topic)

    def deliver(self, letters: Sequence[Letter], on_wait: OnWait) -> list[Letter]:
        failed: list[Letter] = []

        def on_delivery(err: KafkaError | None, _msg: Message, letter: Letter) -> None:
            if err is not None:
                failed.append(letter)

        for letter in letters:
            topic, d = letter
            r = d.record
            headers: list[tuple[str, str | bytes | None]] = [
                (DLQ_REASON, d.reason.encode()),
                (DLQ_KIND, d.kind.encode()),
                (DLQ_TOPOLOGY, d.topology.encode()),
                (DLQ_TOPIC, topic.encode()),
                (DLQ_PARTITION, str(r.partition).encode()),
                (DLQ_OFFSET, str(r.offset).encode()),
            ]
            callback = _bind(on_delivery, letter)
            while True:
                try:
                    self.producer.produce(f"{topic}.dlq", key=r.key, value=r.value,
                                          partition=r.partition, headers=headers,
                                          on_delivery=callback)
                    break
                except BufferError:
                    self.producer.poll(0.1)
        attempt = 0
        # Letters still queued are neither delivered nor failed yet: wait for their
        # outcome (librdkafka retries them until message.timeout.ms), never produce twice.
        while (remaining := self.producer.flush(30)) > 0:
            on_wait(attempt, RuntimeError(f"{remaining} dead letters not yet acknowledged"))
            attempt += 1
        return failed

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
            dlq = f"{topic}.dlq"
            low, high = reader.get_watermark_offsets(TopicPartition(dlq, partition), timeout=30)
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
                    key = (_text(h.get(DLQ_TOPOLOGY)), _text(h.get(DLQ_TOPIC)), dlq_tp[1])
                    off = int(_text(h.get(DLQ_OFFSET)) or -1)
                    found[key] = max(found.get(key, -1), off)
        finally:
            reader.unassign()
        if todo:
            log.warning("could not read the end of %s within 60 s; a dead letter sent before "
                        "a crash may be sent again", sorted(todo))
        return found

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
