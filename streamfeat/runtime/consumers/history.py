"""Reading a partition's past, outside the group: :class:`TopicHistory`.

A definition change recomputes new feature-windows from the partition's history (contract
section 10): snapshots first, then the topic from where they end. This is the topic part:
a range of offsets of one partition, read by a consumer that joins no group (so the
group's assignment and the worker's own reading are untouched). :class:`KafkaHistory`
reads Kafka with confluent-kafka whatever the runtime; :class:`MemoryHistory` reads a
:class:`~.memory.MemoryLog`.
"""

from __future__ import annotations

from typing import Protocol, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamfeat.errors import SourceError
from streamfeat.records import Origins, RecordBatch
from streamfeat.runtime.consumers.base import TP, ConsumerSettings
from streamfeat.runtime.consumers.memory import MemoryLog

__all__ = ["KafkaHistory", "MemoryHistory", "TopicHistory"]


class TopicHistory(Protocol):
    """Ranges of a partition's records, read outside the consumer group."""

    def bounds(self, tp: TP) -> tuple[int, int]:
        """The partition's earliest available offset and its end (next offset written)."""
        ...

    def read(self, tp: TP, start: int, end: int, max_records: int) -> RecordBatch:
        """Records with ``start <= offset < end``, in order, from the first available at or
        after ``start``: up to ``max_records``, possibly fewer (none when nothing came in
        time; call again)."""
        ...

    def done(self, tp: TP) -> None:
        """Nothing more will be read from ``tp`` (release what reading it holds)."""
        ...

    def close(self) -> None: ...


class KafkaHistory:
    """:class:`TopicHistory` over Kafka: one assign-only consumer per partition read."""

    def __init__(self, settings: ConsumerSettings, *, poll_s: float = 0.2) -> None:
        self._settings = settings
        self._poll_s = poll_s
        self._readers: dict[TP, tuple[Consumer, int]] = {}  # consumer, next offset

    def _consumer(self) -> Consumer:
        return Consumer({
            **self._settings.librdkafka(),
            "group.id": f"{self._settings.group_id}.history",  # never joined: assign only
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",  # retention moved past the start: go on from there
            "fetch.max.bytes": 32 * 1024 * 1024,
            "queued.max.messages.kbytes": 16 * 1024,
        })

    def bounds(self, tp: TP) -> tuple[int, int]:
        reader = self._readers.get(tp)
        consumer = reader[0] if reader is not None else self._consumer()
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(*tp), timeout=30)
        except KafkaException as exc:
            raise SourceError(f"the offsets of {tp[0]}[{tp[1]}]: {exc}") from exc
        finally:
            if reader is None:
                consumer.close()
        return int(low), int(high)

    def read(self, tp: TP, start: int, end: int, max_records: int) -> RecordBatch:
        reader = self._readers.get(tp)
        if reader is None or reader[1] != start:
            consumer = reader[0] if reader is not None else self._consumer()
            consumer.assign([TopicPartition(tp[0], tp[1], start)])
            reader = (consumer, start)
            self._readers[tp] = reader
        consumer = reader[0]
        want = max(1, min(max_records, end - start))
        try:
            msgs = consumer.consume(want, self._poll_s)
        except KafkaException as exc:
            raise SourceError(f"reading {tp[0]}[{tp[1]}] from offset {start}: {exc}") from exc
        kept = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise SourceError(f"reading {tp[0]}[{tp[1]}] from offset {start}: {err}")
            if cast(int, m.offset()) < end:
                kept.append(m)
        if kept:
            self._readers[tp] = (consumer, cast(int, kept[-1].offset()) + 1)
        if len(kept) < len(msgs):  # read past the end: start again from where asked
            self._readers[tp] = (consumer, -1)
        return RecordBatch(
            tp[1], cast(list[int], [m.offset() for m in kept]),
            [m.timestamp()[1] for m in kept], [m.key() for m in kept],
            [m.value() for m in kept],
            Origins.from_headers([m.headers() for m in kept])
            if tp[0] in self._settings.rekeyed_topics else None)

    def done(self, tp: TP) -> None:
        reader = self._readers.pop(tp, None)
        if reader is not None:
            reader[0].close()

    def close(self) -> None:
        for tp in list(self._readers):
            self.done(tp)


class MemoryHistory:
    """:class:`TopicHistory` over a :class:`~.memory.MemoryLog`. ``retained_from``: the first
    offset still available per partition (a topic whose retention dropped older records)."""

    def __init__(self, log: MemoryLog, retained_from: dict[TP, int] | None = None) -> None:
        self.log = log
        self.retained_from = dict(retained_from or {})

    def bounds(self, tp: TP) -> tuple[int, int]:
        return self.retained_from.get(tp, 0), len(self.log.records.get(tp, []))

    def read(self, tp: TP, start: int, end: int, max_records: int) -> RecordBatch:
        start = max(start, self.retained_from.get(tp, 0))
        run = self.log.records.get(tp, [])[start:min(end, start + max_records)]
        batch = RecordBatch.of(run, tp[1])
        origins = self.log.origins.get(tp)
        if origins is not None and run:
            taken = origins[start:start + len(run)]
            batch.origins = Origins([p for p, _o in taken], [o for _p, o in taken])
        return batch

    def done(self, tp: TP) -> None:
        pass

    def close(self) -> None:
        pass
