"""The timing and the entities of synthetic events: :class:`EventStream`.

Skewed entity popularity (Zipf-like), event times mostly increasing with some disorder, a
fraction of late events and, on request, malformed records; deterministic for a seed.
Subclasses say what an event holds (:meth:`EventStream.value`).
"""

from __future__ import annotations

import bisect
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["EventStream", "GeneratedEvent"]


@dataclass(frozen=True, slots=True)
class GeneratedEvent:
    key: bytes
    value: bytes
    ts: int  # event time, ms (also used as the Kafka timestamp)


class EventStream:
    """Events of ``entities`` entities (entity ``i`` about ``1 / (i + 1) ** skew`` as often
    as the first), ``events_per_second`` of event time apart, each up to ``disorder_ms``
    early; ``late_fraction`` of them ``late_ms`` earlier still, ``malformed_fraction``
    malformed (as :meth:`value` makes them). ``start_ms``: the first event's time (default:
    so that the n-th event is about now)."""

    def __init__(
        self,
        *,
        entities: int = 10_000,
        start_ms: int | None = None,
        events_per_second: float = 200.0,
        disorder_ms: int = 30_000,
        late_fraction: float = 0.002,
        late_ms: int = 3_600_000,
        malformed_fraction: float = 0.0,
        skew: float = 1.1,
        seed: int = 7,
    ) -> None:
        self.entities = entities
        self.start_ms = start_ms
        self.step_ms = 1000.0 / events_per_second
        self.disorder_ms = disorder_ms
        self.late_fraction = late_fraction
        self.late_ms = late_ms
        self.malformed_fraction = malformed_fraction
        self.rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
        weights = [1.0 / (i + 1) ** skew for i in range(entities)]
        total = sum(weights)
        self._cum = []
        acc = 0.0
        for w in weights:
            acc += w / total
            self._cum.append(acc)

    def entity_id(self, index: int) -> str:
        """The id of the ``index``-th entity (the record's key, as text)."""
        return str(index)

    def value(self, entity: str, ts: int) -> bytes:
        """The record value of one event of ``entity`` at ``ts``; malformed for
        ``malformed_fraction`` of the calls."""
        raise NotImplementedError

    def _entity(self) -> int:
        return min(bisect.bisect_left(self._cum, self.rng.random()), self.entities - 1)

    def __iter__(self) -> Iterator[GeneratedEvent]:
        return self.events()

    def events(self, n: int | None = None) -> Iterator[GeneratedEvent]:
        rng = self.rng
        i = 0
        if self.start_ms is not None:
            clock = float(self.start_ms)
        else:  # end near the present, so the served features look current
            span = self.step_ms * (n if n is not None else 0)
            clock = float(int(time.time() * 1000) - span)
        while n is None or i < n:
            clock += self.step_ms
            ts = int(clock) - rng.randint(0, self.disorder_ms)
            if rng.random() < self.late_fraction:
                ts -= self.late_ms
            entity = self.entity_id(self._entity())
            yield GeneratedEvent(entity.encode(), self.value(entity, ts), max(ts, 0))
            i += 1
