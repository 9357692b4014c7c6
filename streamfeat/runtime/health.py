"""What ``/health`` says: :class:`Health`, fed by the worker's retries and fences.

A dependency being retried is normal for a moment (a Redis failover, a broker restart); a
worker retrying for longer than :data:`UNHEALTHY_AFTER_S` is reported unhealthy so that an
orchestrator can act. A worker fenced by a backfill's higher generation is unhealthy until
restarted with that generation (its writes are refused).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from streamfeat.metrics import Metrics

__all__ = ["UNHEALTHY_AFTER_S", "Health"]

UNHEALTHY_AFTER_S = 30.0

log = logging.getLogger("streamfeat.worker")


class Health:
    """Retry and fence status of one worker, read by the metrics server's ``/health``."""

    def __init__(self, metrics: Metrics, *, clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.clock = clock
        self.retrying_since: float | None = None
        self.fenced: dict[str, int] = {}  # topology -> higher generation found in Redis

    def retrying(self, dependency: str, attempt: int, exc: BaseException) -> None:
        """One failed call to ``dependency`` is about to be retried (attempt 0, 1, ...)."""
        if self.retrying_since is None:
            self.retrying_since = self.clock()
        self.metrics.retries.labels(dependency).inc()
        if attempt % 10 == 0:
            log.warning("%s unavailable (%s); retrying, consumption paused", dependency, exc)

    def recovered(self) -> None:
        self.retrying_since = None

    def fence(self, topology: str, generation: int) -> None:
        self.fenced[topology] = generation
        self.metrics.fenced_generation.labels(topology).set(generation)

    def report(self, assigned: list[str], last_batch: float) -> dict[str, Any]:
        now = self.clock()
        retrying = (self.retrying_since is not None
                    and now - self.retrying_since > UNHEALTHY_AFTER_S)
        return {
            "healthy": not retrying and not self.fenced,
            "retrying_since": self.retrying_since,
            "fenced_by_generation": dict(self.fenced),
            "assigned": assigned,
            "last_batch_age_s": round(now - last_batch, 3),
        }
