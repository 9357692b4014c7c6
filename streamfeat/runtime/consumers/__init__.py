"""Where the worker's records come from: consumer group members, behind one seam.

Owns: the :class:`GroupConsumer` protocol, :class:`ConsumerSettings`, and
:func:`open_consumer`, the one place a runtime is chosen. Implementations: ``faust`` (the
default; faust-streaming, in :mod:`.faust_app` and :mod:`.faust_fetch`, the only modules
that import Faust or aiokafka), ``kafka`` (confluent-kafka, :mod:`.kafka`), and the
in-memory :class:`MemoryConsumer` for tests and embedding.

:func:`check_connection` is the start-up check of a runtime's Kafka clients
(:mod:`.check`; for ``faust``, Faust's own client too, with the settings carried over by
:mod:`.faust_settings`).

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
    "check_connection",
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


def check_connection(kind: str, settings: ConsumerSettings, *, timeout_s: float = 10.0,
                     config_file: str | None = None) -> None:
    """Before a worker of runtime ``kind`` starts: Kafka answers every client it will open,
    with the ``--kafka-config`` settings, within ``timeout_s`` (a
    :class:`~streamfeat.errors.ConnectError` otherwise, naming what to check). For
    ``faust``, the settings are first carried over to aiokafka (a
    :class:`~streamfeat.errors.ConfigError` names each property that cannot be)."""
    if kind == "faust":
        from streamfeat.runtime.consumers.faust_settings import aiokafka_settings

        source = f"--kafka-config {config_file}" if config_file else "--kafka-config"
        aiokafka_settings(settings.client_config, source=source)
    from streamfeat.runtime.consumers.check import check_kafka

    check_kafka(settings, timeout_s=timeout_s, config_file=config_file)
    if kind == "faust":
        from streamfeat.runtime.consumers.faust_app import check_connection as check_faust

        check_faust(settings, timeout_s)
