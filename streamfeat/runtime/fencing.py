"""Noticing that a backfill fenced this worker off: :class:`FenceWatch`.

A refused write is usually harmless (a restarted worker re-sending what it wrote before);
one refused because Redis holds a *higher generation* means every write of this worker to
those entities is lost until it is restarted with that generation. On a refused write the
watch reads the stored version (at most every :data:`CHECK_EVERY_S` per topology) and, if a
backfill's generation is above ours, says so: an error log naming the generation to restart
with, ``streamfeat_fenced_generation``, and an unhealthy ``/health``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from streamfeat.errors import SinkError
from streamfeat.runtime.health import Health

__all__ = ["CHECK_EVERY_S", "FenceWatch", "VersionReader"]

CHECK_EVERY_S = 30.0

log = logging.getLogger("streamfeat.worker")


class VersionReader(Protocol):
    def stored_version(self, entity_id: str) -> tuple[int, int, int] | None:
        """(generation, partition, offset) of the entity's stored values, if any."""
        ...


class FenceWatch:
    """Checks refused writes for a higher generation; reports it through :class:`Health`."""

    def __init__(self, generation: int, health: Health, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.generation = generation
        self.health = health
        self.clock = clock
        self._last_check: dict[str, float] = {}

    def check(self, topology: str, sink: VersionReader, entity_id: str) -> None:
        """A write of ``topology`` to ``entity_id`` was refused as stale."""
        now = self.clock()
        if now - self._last_check.get(topology, float("-inf")) < CHECK_EVERY_S:
            return
        self._last_check[topology] = now
        try:
            stored = sink.stored_version(entity_id)
        except SinkError:
            return  # Redis trouble shows in the next write; checked again then
        if stored is None or stored[0] <= self.generation:
            return
        self.health.fence(topology, stored[0])
        log.error("Redis holds values of topology %r at generation %d (written by a backfill), "
                  "above this worker's generation %d: its writes to those entities are refused. "
                  "Restart the workers with --generation %d.",
                  topology, stored[0], self.generation, stored[0])
