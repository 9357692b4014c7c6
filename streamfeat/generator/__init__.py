"""Realistic events for demos, tests and benchmarks: ``streamfeat generate``.

Skewed entity popularity (Zipf-like), event times mostly increasing with some disorder, a
fraction of late events and, on request, malformed records. Deterministic for a seed.

* :mod:`~streamfeat.generator.orders`: the demo's order events (``topologies/orders.yaml``),
  as JSON or Avro (:class:`OrderEvents`, :class:`JsonOrders`, :class:`AvroOrders`);
* :mod:`~streamfeat.generator.topology`: events for any topology's source, made from its
  definition (:class:`TopologyEvents`);
* :func:`produce_events`: either to a Kafka topic.
"""

from __future__ import annotations

from streamfeat.generator.orders import (
    ORDER_AVRO_SCHEMA,
    AvroOrders,
    Encoding,
    GeneratedEvent,
    JsonOrders,
    OrderEvents,
    produce_events,
)
from streamfeat.generator.topology import TopologyEvents, plan_fields

__all__ = [
    "ORDER_AVRO_SCHEMA",
    "AvroOrders",
    "Encoding",
    "GeneratedEvent",
    "JsonOrders",
    "OrderEvents",
    "TopologyEvents",
    "plan_fields",
    "produce_events",
]
