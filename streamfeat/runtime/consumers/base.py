"""What the worker needs from a consumer group member: :class:`GroupConsumer`.

Join the group for some topics; be told which partitions it gains (answering with the
offset each must be read from: the one stored with the state) and loses; receive batches of
raw records grouped by partition in offset order; and a few offsets for lag and stop-at-end.

Contract of every implementation: ``on_assign`` and ``on_revoke`` run on the thread that
calls :meth:`GroupConsumer.poll`, never while a batch returned by the previous ``poll`` is
being handled, so a revocation is acknowledged only after the batch's effects are stored;
and no record of an assigned partition is returned before ``on_assign`` has answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from streamfeat.logs import KAFKA_LOG
from streamfeat.records import RecordBatch

__all__ = ["TP", "ConsumerSettings", "GroupConsumer", "OnAssign", "OnRevoke"]

TP = tuple[str, int]
"""A topic partition: ``(topic, partition)``."""
OnAssign = Callable[[list[TP]], dict[TP, int]]
"""Called with newly assigned partitions; returns the offset to read each from (0: first)."""
OnRevoke = Callable[[list[TP]], None]
"""Called with partitions taken away (rebalance, lost membership, close)."""


@dataclass(frozen=True)
class ConsumerSettings:
    """Everything any runtime's consumer is built from (one place, whatever the runtime)."""

    bootstrap: str
    """Kafka bootstrap servers, ``host:port[,host:port...]``."""
    group_id: str
    client_config: Mapping[str, Any] = field(default_factory=dict)
    """Extra librdkafka properties for every Kafka client (security, timeouts...): the
    ``--kafka-config`` file's (carried over to Faust's client by
    :func:`~streamfeat.runtime.consumers.faust_settings.aiokafka_settings`)."""
    batch_size: int = 20_000
    """The most records one :meth:`GroupConsumer.poll` hands over."""
    work_dir: Path = Path(".")
    """A directory the consumer may keep files in (the Faust app's data directory)."""
    on_error: Callable[[str], None] | None = None
    """Called with each error the Kafka client reports (the worker counts them and reports
    Kafka failing in ``/health`` until a batch or a :meth:`GroupConsumer.probe` succeeds)."""
    instance_id: str | None = None
    """Static group membership (``group.instance.id``): a member restarted with the same id
    gets its partitions back at once, without waiting for its old session to expire; a
    member stopped does not leave the group (its partitions move after the session timeout).
    ``None``: dynamic membership."""
    rekeyed_topics: frozenset[str] = frozenset()
    """Repartition topics: their records' origins are read from headers into the batch."""

    def librdkafka(self) -> dict[str, Any]:
        """The librdkafka properties of a client of this group's cluster; its log lines go
        to the ``streamfeat.kafka`` logger (:data:`streamfeat.logs.KAFKA_LOG`)."""
        return {"bootstrap.servers": self.bootstrap, "logger": KAFKA_LOG, **self.client_config}


class GroupConsumer(Protocol):
    """A consumer group member handing over whole batches of raw records."""

    def subscribe(self, topics: Sequence[str], on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        """Join the group for ``topics``; assignment changes arrive through the callbacks."""
        ...

    def poll(self, max_records: int, timeout_s: float) -> dict[TP, RecordBatch]:
        """Up to ``max_records`` records, a batch per partition, in offset order ({}: timeout)."""
        ...

    def commit(self, offsets: Mapping[TP, int]) -> None:
        """Commit next offsets to the group, asynchronously (advisory: lag, stop-at-end)."""
        ...

    def committed(self, partitions: Sequence[TP]) -> dict[TP, int]:
        """The group's committed next offsets (-1 or below: none); raises if unavailable."""
        ...

    def watermarks(self, tp: TP, *, cached: bool = False) -> tuple[int, int]:
        """(low, high) offsets of a partition."""
        ...

    def partitions(self, topic: str) -> list[int]:
        """Partition numbers of a topic."""
        ...

    def probe(self, timeout_s: float) -> None:
        """Ask the cluster for metadata; raises if no broker answers within ``timeout_s``
        (``/health``'s check of Kafka when no records arrive)."""
        ...

    def close(self) -> None:
        """Leave the group (revoking what is assigned) and release the connections."""
        ...
