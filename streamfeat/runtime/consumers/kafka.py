"""Runtime ``kafka``: a confluent-kafka (librdkafka) batch consumer, :class:`KafkaConsumer`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamfeat.logs import KAFKA_LOGGER
from streamfeat.records import Origins, RecordBatch
from streamfeat.runtime.consumers.base import TP, ConsumerSettings, OnAssign, OnRevoke

__all__ = ["KafkaConsumer"]

log = logging.getLogger("streamfeat.worker")
client_log = logging.getLogger(KAFKA_LOGGER)  # the client's errors: rate limited by the CLI


class KafkaConsumer:
    """confluent-kafka batch consumer (librdkafka): the ``kafka`` runtime."""

    def __init__(self, settings: ConsumerSettings) -> None:
        self._on_error = settings.on_error
        static = ({"group.instance.id": settings.instance_id}
                  if settings.instance_id is not None else {})
        self.consumer = Consumer({
            **settings.librdkafka(),
            "group.id": settings.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            "max.poll.interval.ms": 900_000,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            # Prefetch enough to fill large batches, but bounded: memory must not grow
            # with the backlog (librdkafka's default queue is 64 MiB per partition).
            # (Measured here: 170k records/s with the defaults, 250k with these.)
            "fetch.max.bytes": 64 * 1024 * 1024,
            "queued.min.messages": 200_000,
            "queued.max.messages.kbytes": 32 * 1024,
            # Client-level errors (all brokers down, authentication...), served by consume().
            "error_cb": self._client_error,
            **static,
        })
        self._rekeyed = settings.rekeyed_topics
        self._topics: list[str] = []
        self._fatal: KafkaError | None = None  # the client cannot go on (error_cb)

    def subscribe(self, topics: Sequence[str], on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        self._topics = list(topics)

        def assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            starts = on_assign([(tp.topic, tp.partition) for tp in partitions])
            for tp in partitions:
                start = starts.get((tp.topic, tp.partition), 0)
                tp.offset = start if start > 0 else OFFSET_BEGINNING
            consumer.assign(partitions)

        def revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            on_revoke([(tp.topic, tp.partition) for tp in partitions])
            try:
                consumer.unassign()
            except Exception as exc:
                log.debug("unassign: %s", exc)

        self.consumer.subscribe(list(topics), on_assign=assign, on_revoke=revoke, on_lost=revoke)

    def poll(self, max_records: int, timeout_s: float) -> dict[TP, RecordBatch]:
        if self._fatal is not None:  # fail the worker (a restart recovers) rather than hang
            raise KafkaException(self._fatal)
        # What is ready, at once; else the first record within timeout_s and what is ready
        # with it. (consume(n, timeout) waits out the timeout unless n records come: every
        # record waited for records behind it, 5 ms each at modest rates.)
        msgs = self.consumer.consume(max_records, 0)
        if not msgs and timeout_s > 0:
            msgs = self.consumer.consume(1, timeout_s)
            if msgs and max_records > 1:
                msgs.extend(self.consumer.consume(max_records - 1, 0))
        if not msgs:
            return {}
        if any([m.error() is not None for m in msgs]):
            msgs = self._drop_errors(msgs)
        # librdkafka hands over one fetched run of records per partition after another:
        # find the runs, then build each partition's columns in one pass per field.
        topic = self._topics[0] if len(self._topics) == 1 else None
        keys: list[Any] = (
            [m.partition() for m in msgs] if topic is not None
            else [(m.topic(), m.partition()) for m in msgs]
        )
        groups: dict[TP, list[Message]] = {}
        start, n = 0, len(keys)
        while start < n:
            first = keys[start]
            end = start + 1
            while end < n and keys[end] == first:
                end += 1
            tp: TP = (topic, first) if topic is not None else first
            run = msgs[start:end]
            got = groups.get(tp)
            if got is None:
                groups[tp] = run
            else:
                got.extend(run)
            start = end
        return {
            tp: RecordBatch(tp[1], cast(list[int], [m.offset() for m in run]),
                            [m.timestamp()[1] for m in run],
                            [m.key() for m in run], [m.value() for m in run],
                            Origins.from_headers([m.headers() for m in run])
                            if tp[0] in self._rekeyed else None)
            for tp, run in groups.items()
        }

    def _drop_errors(self, msgs: list[Message]) -> list[Message]:
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(m)
            elif err.code() != KafkaError._PARTITION_EOF:
                client_log.warning("Kafka: %s", err.str())
                if self._on_error is not None:
                    self._on_error(str(err))
        return out

    def _client_error(self, err: KafkaError) -> None:
        client_log.warning("Kafka: %s", err.str())
        if err.fatal():
            self._fatal = err
        if self._on_error is not None:
            self._on_error(str(err))

    def commit(self, offsets: Mapping[TP, int]) -> None:
        # A member whose session timed out (a broker away longer than session.timeout.ms)
        # has no member id until it joins again; librdkafka would send this commit with an
        # empty member id, which the coordinator answers a static member (--instance-id)
        # with FENCED_INSTANCE_ID: a fatal error, the end of the consumer. These commits are
        # advisory (lag, --stop-at-end): the next one after the rejoin says the same.
        if not self.consumer.memberid():
            log.debug("not a group member (session timed out): commit skipped")
            return
        self.consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=True
        )

    def committed(self, partitions: Sequence[TP]) -> dict[TP, int]:
        got = self.consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in got}

    def watermarks(self, tp: TP, *, cached: bool = False) -> tuple[int, int]:
        part = TopicPartition(*tp)
        if cached:
            return self.consumer.get_watermark_offsets(part, cached=True)
        return self.consumer.get_watermark_offsets(part, timeout=30)

    def partitions(self, topic: str) -> list[int]:
        meta = self.consumer.list_topics(topic, timeout=30)
        return sorted(meta.topics[topic].partitions)

    def probe(self, timeout_s: float) -> None:
        self.consumer.list_topics(self._topics[0] if self._topics else None, timeout=timeout_s)

    def close(self) -> None:
        self.consumer.close()  # revokes: the worker closes its partition stores
