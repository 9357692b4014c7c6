"""Where the worker's records come from: consumer group members, behind one seam.

Owns: the :class:`GroupConsumer` protocol, :class:`ConsumerSettings`, and
:func:`open_consumer`, the one place a runtime is chosen. Implementations: ``faust`` (the
default; faust-streaming, in :mod:`.faust_app` and :mod:`.faust_fetch`, the only modules
that import Faust or aiokafka), ``kafka`` (confluent-kafka, :mod:`.kafka`), and the
in-memory :class:`MemoryConsumer` for tests and embedding.

Must not import: the worker (:mod:`streamfeat.runtime.worker`), sinks, state, the pipeline.
"""

from __future__ import annotations

from streamfeat.config import RUNTIMES
from streamfeat.runtime.consumers.base import (
    TP,
    ConsumerSettings,
    GroupConsumer,
    OnAssign,
    OnRevoke,
)
from streamfeat.runtime.consumers.history import KafkaHistory, MemoryHistory, TopicHistory
from streamfeat.runtime.consumers.memory import MemoryConsumer, MemoryLog

__all__ = [
    "RUNTIMES",
    "TP",
    "ConsumerSettings",
    "GroupConsumer",
    "KafkaHistory",
    "MemoryConsumer",
    "MemoryHistory",
    "MemoryLog",
    "OnAssign",
    "OnRevoke",
    "TopicHistory",
    "open_consumer",
]


def open_consumer(kind: str, settings: ConsumerSettings) -> GroupConsumer:
    """A consumer group member of runtime ``kind`` (one of :data:`RUNTIMES`)."""
    if kind == "faust":
        from streamfeat.runtime.consumers.faust_app import FaustConsumer

        return FaustConsumer(settings)
    if kind == "kafka":
        from streamfeat.runtime.consumers.kafka import KafkaConsumer

        return KafkaConsumer(settings)
    raise ValueError(f"unknown runtime {kind!r}: use one of {', '.join(RUNTIMES)}")
