"""What ``/health`` says: :class:`Health`, fed by the worker's calls, retries, probes and fences.

Each dependency (``kafka``, ``redis``, ``snapshots``) is tracked on its own: whether it is
failing, since when and with which error. Several sources can report one dependency (Redis:
the writes and a PING; Kafka: the client's errors and metadata probe, the dead-letter and
repartition producers); a source's success clears only what that source reported, so a
PING that answers does not hide writes that keep failing, and a Redis write that succeeds
does not hide a Kafka outage.

A dependency failing for a moment is normal (a Redis failover, a broker restart); one failing
for longer than ``unhealthy_after_s`` (default :data:`UNHEALTHY_AFTER_S`, ``--unhealthy-after``)
makes the worker unhealthy so that an orchestrator can act. A worker fenced by a backfill's
higher generation is unhealthy until restarted with that generation (its writes are refused).

Three views, served by the metrics server: ``/health`` (combined, as before), ``/health/live``
(the worker loop is not stuck: it went round, or waited on a dependency it is retrying,
within :data:`STUCK_AFTER_S`) and ``/health/ready`` (joined the group, every dependency
healthy, not fenced).

:class:`Probe` runs a cheap check of one dependency when the worker is idle (no batch handled
for :data:`IDLE_AFTER_S`), at most every :data:`PROBE_EVERY_S`: when records flow, the
writes and fetches themselves say whether the dependencies work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamfeat.metrics import Metrics
from streamfeat.redact import redact

__all__ = [
    "DEPENDENCIES",
    "IDLE_AFTER_S",
    "PROBE_EVERY_S",
    "STUCK_AFTER_S",
    "UNHEALTHY_AFTER_S",
    "Failure",
    "Health",
    "Probe",
    "ProbeThread",
]

DEPENDENCIES = ("kafka", "redis", "snapshots")
UNHEALTHY_AFTER_S = 10.0
"""Default: a dependency failing for longer than this makes the worker unhealthy."""
STUCK_AFTER_S = 60.0
"""``/health/live`` fails when the worker loop has not gone round for this long."""
IDLE_AFTER_S = 2.0
"""Probes run only when no batch was handled for this long."""
PROBE_EVERY_S = 3.0
"""The least time between two probes of one dependency."""

log = logging.getLogger("streamfeat.worker")


@dataclass(frozen=True)
class Failure:
    """A dependency failing as seen by one source: since when, and the last error."""

    since: float
    error: str


class Health:
    """Per-dependency failure clocks, liveness and fences of one worker.

    Thread-safe: the worker loop, the sink's background writer, the probe thread and the
    metrics server's request threads all use it.
    """

    def __init__(self, metrics: Metrics, *, unhealthy_after_s: float = UNHEALTHY_AFTER_S,
                 stuck_after_s: float = STUCK_AFTER_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.unhealthy_after_s = unhealthy_after_s
        self.stuck_after_s = stuck_after_s
        self.clock = clock
        self.fenced: dict[str, int] = {}  # topology -> higher generation found in Redis
        self._lock = threading.Lock()
        self._failing: dict[tuple[str, str], Failure] = {}  # (dependency, source) -> failure
        self._alive = clock()  # the loop went round, or a retry attempt was made

    # ------------------------------------------------------------------ reports in
    def failed(self, dependency: str, error: BaseException | str, *, source: str = "",
               since: float | None = None) -> None:
        """``source`` saw ``dependency`` fail; its clock starts now (or at ``since``, when the
        failed call began: a call that timed out proves no answer from its start) unless
        already running."""
        text = redact(error) or type(error).__name__
        start = self.clock() if since is None else since
        with self._lock:
            old = self._failing.get((dependency, source))
            self._failing[(dependency, source)] = Failure(start if old is None else old.since,
                                                          text)

    def ok(self, dependency: str, *, source: str = "", announce: bool = True) -> None:
        """``source`` saw ``dependency`` work: clears what that source reported, only
        (logged unless ``announce`` is false)."""
        if (dependency, source) not in self._failing:  # the common case, without the lock
            return
        with self._lock:
            if self._failing.pop((dependency, source), None) is not None and announce:
                log.info("%s available again", dependency)

    def retrying(self, dependency: str, attempt: int, exc: BaseException, *,
                 source: str = "") -> None:
        """One failed call to ``dependency`` is about to be retried (attempt 0, 1, ...)."""
        self.failed(dependency, exc, source=source)
        self.beat()  # waiting on a dependency that is retried is not being stuck
        self.metrics.retries.labels(dependency).inc()
        if attempt % 10 == 0:
            log.warning("%s unavailable (%s); retrying, consumption paused", dependency, exc)

    def beat(self) -> None:
        """The worker loop went round (or is waiting on a retried dependency)."""
        self._alive = self.clock()

    def fence(self, topology: str, generation: int) -> None:
        self.fenced[topology] = generation
        self.metrics.fenced_generation.labels(topology).set(generation)

    # ------------------------------------------------------------------ views out
    def failing(self) -> dict[str, Failure]:
        """Each failing dependency: since its earliest failing source, with the latest error."""
        with self._lock:
            items = list(self._failing.items())
        out: dict[str, Failure] = {}
        for (dependency, _source), f in sorted(items, key=lambda kv: kv[1].since):
            first = out.get(dependency)
            out[dependency] = f if first is None else Failure(first.since, f.error)
        return out

    @property
    def retrying_since(self) -> float | None:
        """When the longest-failing dependency started failing (``None``: none is)."""
        return min((f.since for f in self.failing().values()), default=None)

    def unhealthy(self) -> list[str]:
        """Dependencies failing for longer than the threshold."""
        now = self.clock()
        return sorted(d for d, f in self.failing().items()
                      if now - f.since > self.unhealthy_after_s)

    def live(self) -> bool:
        """Whether the worker loop went round (or retried a dependency) recently."""
        return self.clock() - self._alive <= self.stuck_after_s

    def healthy(self) -> bool:
        return self.live() and not self.unhealthy() and not self.fenced

    def ready(self, joined: bool) -> bool:
        """Joined the group (an assignment was received), every dependency healthy."""
        return joined and self.healthy()

    def report(self, assigned: list[str], last_batch: float, *,
               joined: bool = False) -> dict[str, Any]:
        """The body of ``/health``: every key of the three views."""
        now = self.clock()
        failing = self.failing()
        unhealthy = self.unhealthy()
        live = self.live()
        healthy = live and not unhealthy and not self.fenced
        return {
            "healthy": healthy,
            "live": live,
            "ready": healthy and joined,
            "failing": {
                d: {"since": round(f.since, 3), "for_s": round(now - f.since, 3),
                    "error": f.error, "unhealthy": d in unhealthy}
                for d, f in failing.items()
            },
            "unhealthy_after_s": self.unhealthy_after_s,
            "retrying_since": min((f.since for f in failing.values()), default=None),
            "fenced_by_generation": dict(self.fenced),
            "joined": joined,
            "assigned": assigned,
            "last_batch_age_s": round(now - last_batch, 3),
            "last_loop_age_s": round(now - self._alive, 3),
        }


class Probe:
    """A cheap check of one dependency, run when the worker is idle, at most every so often.

    ``check()`` raises when the dependency does not answer (within its own short timeout);
    the outcome goes to :class:`Health` as ``source`` of ``dependency`` (the Kafka probe
    shares its source with the client's error callback, which has no success to report).
    """

    def __init__(self, health: Health, dependency: str, check: Callable[[], object], *,
                 source: str = "probe", every_s: float = PROBE_EVERY_S,
                 idle_after_s: float = IDLE_AFTER_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.health = health
        self.dependency = dependency
        self.source = source
        self.check = check
        self.every_s = every_s
        self.idle_after_s = idle_after_s
        self.clock = clock
        self._last = float("-inf")

    def due(self, last_batch: float) -> bool:
        now = self.clock()
        return now - last_batch > self.idle_after_s and now - self._last >= self.every_s

    def run_if_due(self, last_batch: float) -> bool:
        """Probe if idle since ``last_batch`` and not probed lately; returns whether it ran."""
        if not self.due(last_batch):
            return False
        self._last = started = self.clock()
        try:
            self.check()
        except Exception as exc:  # unanswered since it was asked (a timeout takes seconds)
            self.health.failed(self.dependency, exc, source=self.source, since=started)
            log.debug("%s probe failed: %r", self.dependency, exc)
        else:
            self.health.ok(self.dependency, source=self.source)
        return True


class ProbeThread:
    """Runs a :class:`Probe` on a daemon thread, so it also runs while the loop is blocked
    (a hung dependency holds the loop in a write for as long as the client's timeout)."""

    def __init__(self, probe: Probe, last_batch: Callable[[], float], *,
                 tick_s: float = 0.5) -> None:
        self.probe = probe
        self.last_batch = last_batch
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"streamfeat-probe-{probe.dependency}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.probe.run_if_due(self.last_batch())
