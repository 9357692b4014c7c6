"""Realistic order events for demos, tests and benchmarks (``topologies/orders.yaml``).

Their timing and entities are :class:`~streamfeat.generator.stream.EventStream`'s.

Encoded as JSON by default; :class:`AvroOrders` encodes the same events as Avro records
(plain or Confluent-framed) of :data:`ORDER_AVRO_SCHEMA`, with malformed records of its
own kinds (truncated, trailing bytes, wrong magic byte, unknown schema id).
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from streamfeat.generator.stream import EventStream, GeneratedEvent

if TYPE_CHECKING:
    from confluent_kafka import Producer

__all__ = [
    "ORDER_AVRO_SCHEMA",
    "AvroOrders",
    "Encoding",
    "GeneratedEvent",
    "JsonOrders",
    "OrderEvents",
    "produce_events",
]

_STATUSES = ("completed", "completed", "completed", "pending", "cancelled")

ORDER_AVRO_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "Order", "namespace": "streamfeat.demo",
    "fields": [
        {"name": "user_id", "type": "string"},
        {"name": "ts", "type": "long"},
        {"name": "amount", "type": "double"},
        {"name": "merchant_id", "type": "string"},
        {"name": "status", "type": "string"},
    ],
}
"""The Avro schema of the order events (``topologies/orders.avsc`` holds the same)."""


class Encoding(Protocol):
    """How order events become record values."""

    def encode(self, event: dict[str, Any]) -> bytes: ...

    def malformed(self, rng: random.Random, user: str, ts: int) -> bytes:
        """A record the topology must refuse (for ``malformed_fraction``)."""
        ...


class JsonOrders:
    """Order events as JSON objects."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()

    def encode(self, event: dict[str, Any]) -> bytes:
        return self._encoder.encode(event)

    def malformed(self, rng: random.Random, user: str, ts: int) -> bytes:
        return rng.choice([
            b"{not json",
            self._encoder.encode({"ts": ts, "amount": 1.0}),  # no key
            self._encoder.encode({"user_id": user, "amount": 2.0}),  # no time
            self._encoder.encode({"user_id": user, "ts": ts, "amount": "12"}),
        ])


class AvroOrders:
    """Order events as Avro records of :data:`ORDER_AVRO_SCHEMA`; with ``schema_id``,
    Confluent-framed (magic byte 0, the id as 4 big-endian bytes, the record)."""

    def __init__(self, schema_id: int | None = None) -> None:
        import fastavro

        self._schema = fastavro.parse_schema(ORDER_AVRO_SCHEMA)
        self._write = fastavro.schemaless_writer
        self._header = b"" if schema_id is None else b"\x00" + struct.pack(">I", schema_id)
        self.schema_id = schema_id

    def encode(self, event: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(self._header)
        self._write(out, self._schema, event)
        return out.getvalue()

    def malformed(self, rng: random.Random, user: str, ts: int) -> bytes:
        good = self.encode({"user_id": user, "ts": ts, "amount": 2.0, "merchant_id": "m1",
                            "status": "completed"})
        kinds = [good[:-3], good + b"\x00", self.encode(
            {"user_id": "", "ts": ts, "amount": 1.0, "merchant_id": "m1", "status": "pending"})]
        if self.schema_id is not None:
            kinds += [b"\x01" + good[1:],  # not the magic byte
                      good[:1] + struct.pack(">I", self.schema_id + 1) + good[5:]]  # unknown id
        return rng.choice(kinds)


class OrderEvents(EventStream):
    """Order events: ``{"user_id", "ts", "amount", "merchant_id", "status"}``, as JSON
    unless ``encoding`` says otherwise (the other arguments: :class:`EventStream`)."""

    def __init__(
        self,
        *,
        entities: int = 10_000,
        start_ms: int | None = None,  # default: so that the n-th event is about now
        events_per_second: float = 200.0,
        disorder_ms: int = 30_000,
        late_fraction: float = 0.002,
        late_ms: int = 3_600_000,
        malformed_fraction: float = 0.0,
        skew: float = 1.1,
        seed: int = 7,
        encoding: Encoding | None = None,
    ) -> None:
        super().__init__(entities=entities, start_ms=start_ms,
                         events_per_second=events_per_second, disorder_ms=disorder_ms,
                         late_fraction=late_fraction, late_ms=late_ms,
                         malformed_fraction=malformed_fraction, skew=skew, seed=seed)
        self.encoding: Encoding = encoding if encoding is not None else JsonOrders()

    def entity_id(self, index: int) -> str:
        return f"u{index}"

    def value(self, entity: str, ts: int) -> bytes:
        rng = self.rng
        if rng.random() < self.malformed_fraction:
            return self.encoding.malformed(rng, entity, ts)
        return self.encoding.encode({
            "user_id": entity,
            "ts": ts,
            "amount": round(rng.lognormvariate(3.0, 1.0), 2),
            "merchant_id": f"m{rng.randint(0, 499)}",
            "status": rng.choice(_STATUSES),
        })


def produce_events(
    producer: Producer, topic: str, events: Iterable[GeneratedEvent], *,
    flush_timeout_s: float = 60.0,
) -> int:
    """Produce events keyed by entity with their event time as the Kafka timestamp, waiting
    when the producer's queue is full; returns how many were still undelivered at the end."""
    for i, event in enumerate(events):
        while True:
            try:
                producer.produce(topic, key=event.key, value=event.value, timestamp=event.ts)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    return int(producer.flush(flush_timeout_s))
