"""``streamfeat monitor verify``: online values against a replay, again and again, as metrics.

:class:`VerifyJob` runs a check every ``every_s`` (the CLI gives it
:func:`streamfeat.replay.verify` over a fresh random sample of entities each run) and
exports its outcome to a Prometheus registry; this module only schedules and exports, so it
does not depend on the replay (a layer above it).

The consistency ratio is the share of the checked entities whose every field equals the
replay (``VerifyReport.match_rate``). A run that checked no entity (none of the sampled
entities' offsets is in the snapshots yet) leaves the ratio as it was and counts as
``outcome="empty"``: a ratio of 0 there would be an alarm about nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from streamfeat.redact import redact

__all__ = ["CheckReport", "VerifyJob"]

log = logging.getLogger("streamfeat.monitoring")


class CheckReport(Protocol):
    """What one check answers (:class:`streamfeat.replay.VerifyReport` is one)."""

    @property
    def match_rate(self) -> float: ...

    @property
    def checked(self) -> int: ...

    @property
    def skipped(self) -> int: ...

    @property
    def mismatches(self) -> Sequence[Any]: ...


class VerifyJob:
    """Runs ``check(run)`` (``run``: 0, 1, ...; a seed for the sample) every ``every_s`` and
    exports the outcome in ``registry``."""

    def __init__(self, topology: str, check: Callable[[int], CheckReport],
                 registry: CollectorRegistry, *, every_s: float) -> None:
        if not every_s > 0:
            raise ValueError(f"--every must be above 0 seconds, got {every_s}")
        self.topology = topology
        self.check = check
        self.every_s = float(every_s)
        self.runs = 0
        t = ["topology"]
        r = registry
        self.ratio = Gauge("streamfeat_verify_consistency_ratio",
                           "Share of the checked entities whose every Redis field equals a "
                           "replay of the snapshots (last run that checked any)", t, registry=r)
        self.checked = Gauge("streamfeat_verify_checked_entities",
                             "Entities compared by the last run", t, registry=r)
        self.skipped = Gauge("streamfeat_verify_skipped_entities",
                             "Sampled entities of the last run whose offset is not in the "
                             "snapshots yet", t, registry=r)
        self.mismatched = Gauge("streamfeat_verify_mismatched_fields",
                                "Fields that differed in the last run", t, registry=r)
        self.duration = Gauge("streamfeat_verify_duration_seconds",
                              "How long the last run took", t, registry=r)
        self.last_success = Gauge("streamfeat_verify_last_success_timestamp_seconds",
                                  "When the last run that checked entities ended", t,
                                  registry=r)
        self.outcomes = Counter("streamfeat_verify_runs",
                                "Runs, by outcome: ok (entities checked), empty (none could "
                                "be), error (the run failed)", ["topology", "outcome"],
                                registry=r)

    def run_once(self) -> CheckReport | None:
        """One check, exported; ``None`` when it failed (logged, counted)."""
        started = time.perf_counter()
        run, self.runs = self.runs, self.runs + 1
        try:
            report = self.check(run)
        except Exception as e:  # a run that fails is reported; the next one tries again
            log.error("%s: verify run %d failed: %s", self.topology, run, redact(e))
            self.outcomes.labels(self.topology, "error").inc()
            return None
        finally:
            self.duration.labels(self.topology).set(time.perf_counter() - started)
        labels = (self.topology,)
        self.checked.labels(*labels).set(report.checked)
        self.skipped.labels(*labels).set(report.skipped)
        self.mismatched.labels(*labels).set(len(report.mismatches))
        if report.checked:
            self.ratio.labels(*labels).set(report.match_rate)
            self.last_success.labels(*labels).set(time.time())
            self.outcomes.labels(self.topology, "ok").inc()
        else:
            self.outcomes.labels(self.topology, "empty").inc()
        log.info("%s: verify run %d: %d checked, consistency %.6f, %d skipped, %d fields "
                 "differ", self.topology, run, report.checked, report.match_rate,
                 report.skipped, len(report.mismatches))
        return report

    def run(self, stop: threading.Event, runs: int | None = None) -> None:
        """Run every ``every_s`` (from the start of one run to the next) until ``stop`` is
        set or ``runs`` runs are done."""
        started = time.monotonic()
        done = 0
        while not stop.is_set() and (runs is None or done < runs):
            self.run_once()
            done += 1
            if runs is not None and done >= runs:
                return
            stop.wait(max(0.0, started + done * self.every_s - time.monotonic()))
