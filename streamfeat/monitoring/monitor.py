"""The worker's value monitor: the distribution of the values it writes, per interval.

The worker hands every batch of values it submits to Redis to :meth:`ValueMonitor.observe`
(on its loop thread: one vectorised sketch update per column, no loop over the values).
Every ``interval_s`` a thread of the monitor closes the interval: it reloads the
topology's baseline from Redis (a new one takes effect at the next close, no restart),
compares each field's sketch with it (PSI, quantile distance), publishes the results to
the worker's Prometheus registry (:class:`MonitorCollector`: one consistent interval per
scrape) and stores the interval's summary in Redis for ``streamfeat monitor show`` and
other hosts. Redis failing is logged and retried at the next close; it never slows the
worker's loop.

Values monitored are those of the live batches: a definition change's refresh (values
already written, rewritten under the new definition) is not counted again.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamfeat.errors import ConfigError, SinkError
from streamfeat.monitoring.drift import Reference
from streamfeat.monitoring.sketch import ValueKind, ValueSketch, field_kinds
from streamfeat.monitoring.store import (
    Baseline,
    FieldSummary,
    IntervalSummary,
    read_baseline,
    write_summary,
)
from streamfeat.redact import redact
from streamfeat.sinks.redis import connect
from streamfeat.sinks.updates import UpdateBatch
from streamfeat.topology import TopologyDef

__all__ = [
    "DEFAULT_INTERVAL_S",
    "QUANTILES",
    "FieldReport",
    "IntervalReport",
    "MonitorCollector",
    "MonitorSettings",
    "NullMonitor",
    "ValueMonitor",
    "open_monitor",
    "worker_id",
]

log = logging.getLogger("streamfeat.monitoring")

DEFAULT_INTERVAL_S = 60.0
QUANTILES = (0.5, 0.9, 0.99)
"""The quantiles exported per field (label ``quantile``)."""
SKETCH_EVERY = 4096
"""Values of a field gathered before they are sketched (and at the interval's close)."""


def worker_id() -> str:
    """This process, as named in the Redis summaries: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class FieldReport:
    """One field over one closed interval."""

    sketch: ValueSketch
    psi: float | None = None
    quantile_distance: float | None = None
    baseline_null_rate: float | None = None


@dataclass(frozen=True, slots=True)
class IntervalReport:
    """One topology over one closed interval (what a scrape shows until the next close)."""

    topology: str
    seq: int
    start_s: float
    end_s: float
    asof_min_ms: int | None
    asof_max_ms: int | None
    baseline_created_ms: int | None
    fields: Mapping[str, FieldReport]

    def summary(self, worker: str) -> IntervalSummary:
        return IntervalSummary(
            worker, self.seq, int(self.start_s * 1000), int(self.end_s * 1000),
            self.asof_min_ms, self.asof_max_ms, self.baseline_created_ms,
            {name: FieldSummary(f.sketch.state(), f.psi, f.quantile_distance)
             for name, f in self.fields.items()}, heard_ms=int(self.end_s * 1000))


@dataclass(slots=True)
class _Open:
    """The interval being filled. Numbers wait in ``pending`` (references to the batches'
    values, one list per field) until :data:`SKETCH_EVERY` of them are there: a sketch
    update costs some twenty NumPy calls whatever its size, which small batches (a worker
    keeping up takes a few records at a time) would pay per batch and field."""

    start_s: float
    sketches: dict[str, ValueSketch] = field(default_factory=dict)
    pending: dict[str, list[Any]] = field(default_factory=dict)
    asof_min: int | None = None
    asof_max: int | None = None

    def sketch(self, name: str) -> ValueSketch:
        found = self.sketches.get(name)
        if found is None:
            found = self.sketches[name] = ValueSketch()
        return found

    def settle(self, kinds: Mapping[str, ValueKind]) -> None:
        """Sketch every value still pending."""
        for name, values in self.pending.items():
            if values:
                self.sketch(name).add(values, kinds[name])
        self.pending.clear()


@dataclass(frozen=True, slots=True)
class _Baseline:
    created_ms: int
    references: dict[str, Reference]
    null_rates: dict[str, float | None]


class ValueMonitor:
    """Sketches of the values written, per topology and field, closed every ``interval_s``.

    ``redis_url``: where baselines are read and summaries written (``None``: neither, the
    metrics only). ``registry``: where :class:`MonitorCollector` is registered (``None``:
    nowhere; :attr:`last` still holds the results).
    """

    def __init__(self, topologies: Sequence[TopologyDef], registry: CollectorRegistry | None,
                 *, interval_s: float = DEFAULT_INTERVAL_S, redis_url: str | None = None,
                 worker: str | None = None) -> None:
        if not interval_s > 0:
            raise ValueError(f"the monitoring interval must be above 0 s, got {interval_s}")
        self.interval_s = float(interval_s)
        self.worker = worker or worker_id()
        self._kinds = {t.name: field_kinds(t) for t in topologies}
        now = time.time()
        self._open = {name: _Open(now) for name in self._kinds}
        self._lock = threading.Lock()
        self._seq = dict.fromkeys(self._kinds, 0)
        self._kept: dict[str, IntervalSummary] = {}
        """Per topology, the last interval with values, as stored."""
        self._baselines: dict[str, _Baseline] = {}
        self.last: dict[str, IntervalReport] = {}
        """The last closed interval of each topology (replaced whole at each close)."""
        self.cost_s = dict.fromkeys(self._kinds, 0.0)
        """Time spent in :meth:`observe`, per topology (what monitoring costs the loop)."""
        self._values = dict.fromkeys(self._kinds, 0)  # values sketched over the run
        self._observe_failed: set[str] = set()
        self._redis_url = redis_url
        self._client: redis.Redis | None = None
        self._redis_ok = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if registry is not None:
            registry.register(MonitorCollector(self))

    # -- the worker's loop -------------------------------------------------------------

    def observe(self, topology: str, batches: Sequence[UpdateBatch]) -> None:
        """Add the values of ``batches`` (one topology's, as submitted to the sink)."""
        started = time.perf_counter()
        try:
            with self._lock:
                self._observe(self._open[topology], self._kinds[topology], batches)
        except Exception:  # monitoring must never stop the worker: said once, then quiet
            if topology not in self._observe_failed:
                self._observe_failed.add(topology)
                log.exception("value monitoring of %s failed on a batch; its intervals may "
                              "miss values from now on", topology)
        self.cost_s[topology] += time.perf_counter() - started

    @staticmethod
    def _observe(interval: _Open, kinds: Mapping[str, ValueKind],
                 batches: Sequence[UpdateBatch]) -> None:
        pending = interval.pending
        for batch in batches:
            if batch.refresh or not batch.entity_ids:
                continue
            asof = int(batch.asof_ms)
            if interval.asof_min is None or asof < interval.asof_min:
                interval.asof_min = asof
            if interval.asof_max is None or asof > interval.asof_max:
                interval.asof_max = asof
            for name, column in zip(batch.names, batch.columns, strict=True):
                kind = kinds.get(name)
                if kind is None:
                    continue
                if kind is ValueKind.OTHER:  # counted at once, nothing to wait for
                    interval.sketch(name).add(column, kind)
                    continue
                values = pending.get(name)
                if values is None:
                    values = pending[name] = []
                values.extend(column)
                if len(values) >= SKETCH_EVERY:
                    interval.sketch(name).add(values, kind)
                    pending[name] = []

    def start(self) -> None:
        """Close an interval every ``interval_s`` on a thread of its own until :meth:`stop`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="streamfeat-monitor",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop closing intervals; the interval in progress is closed (and stored) when it
        holds values, so that a short run (``--stop-at-end``) leaves its summary too."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
            if any(o.sketches or o.pending for o in self._open.values()):
                # a Redis that failed the last time is not waited for again while stopping
                self.close_interval(store=self._redis_ok)
            for name, seconds in self.cost_s.items():
                log.info("value monitoring of %s: %d values in %d intervals, %.2f s spent "
                         "sketching them", name, self._values.get(name, 0), self._seq[name],
                         seconds)
        if self._client is not None:
            self._client.close()
            self._client = None

    def _run(self) -> None:
        self.reload_baselines()
        started = time.monotonic()
        closes = 0
        while True:
            closes += 1
            wait = started + closes * self.interval_s - time.monotonic()
            if self._stop.wait(max(0.0, wait)):
                return
            try:
                self.close_interval()
            except Exception:  # never take the worker down; try again at the next close
                log.exception("closing the monitoring interval failed")

    # -- closing an interval -----------------------------------------------------------

    def close_interval(self, now_s: float | None = None, *,
                       store: bool = True) -> dict[str, IntervalReport]:
        """Close every topology's interval now: baselines reloaded, drift computed, results
        published (:attr:`last`) and stored in Redis (``store``: try Redis). Returns the
        reports."""
        store = store and self._redis_url is not None
        if store:
            self.reload_baselines()
        now = time.time() if now_s is None else now_s
        with self._lock:
            closed, self._open = self._open, {name: _Open(now) for name in self._kinds}
        reports: dict[str, IntervalReport] = {}
        for name, interval in closed.items():
            interval.settle(self._kinds[name])
            self._seq[name] += 1
            reports[name] = self._report(name, interval, now)
            self._values[name] += sum(f.sketch.count for f in reports[name].fields.values())
        self.last = {**self.last, **reports}
        if store:
            for name, report in reports.items():
                self._store(name, report)
        return reports

    def _report(self, topology: str, interval: _Open, now: float) -> IntervalReport:
        baseline = self._baselines.get(topology)
        fields: dict[str, FieldReport] = {}
        for name in self._kinds[topology]:
            sketch = interval.sketches.get(name) or ValueSketch()
            ref = baseline.references.get(name) if baseline is not None else None
            fields[name] = FieldReport(
                sketch,
                None if ref is None else ref.psi(sketch),
                None if ref is None else ref.quantile_distance(sketch),
                None if baseline is None else baseline.null_rates.get(name))
        return IntervalReport(topology, self._seq[topology], interval.start_s, now,
                              interval.asof_min, interval.asof_max,
                              None if baseline is None else baseline.created_ms, fields)

    # -- Redis -------------------------------------------------------------------------

    def _redis(self) -> redis.Redis:
        if self._client is None:
            if self._redis_url is None:
                raise SinkError("value monitoring was given no Redis")
            self._client = connect(self._redis_url, timeout_s=2.0, socket_timeout_s=5.0,
                                   retries=0)
        return self._client

    def _redis_failed(self, what: str, exc: Exception) -> None:
        if self._redis_ok:
            log.warning("value monitoring: %s: %s; trying again at the next interval",
                        what, redact(exc))
        self._redis_ok = False

    def reload_baselines(self) -> None:
        """Read each topology's baseline from Redis (a changed one replaces the one in use;
        one deleted stops the drift metrics)."""
        if self._redis_url is None:
            return
        for name in self._kinds:
            try:
                stored = read_baseline(self._redis(), name)
            except SinkError as e:
                self._redis_failed("reading the baseline", e)
                return
            except ValueError as e:
                log.error("%s: %s", name, e)
                self._baselines.pop(name, None)
                continue
            if stored is None:
                if self._baselines.pop(name, None) is not None:
                    log.info("%s: the baseline was deleted; no drift metrics", name)
                continue
            held = self._baselines.get(name)
            if held is None or held.created_ms != stored.created_ms:
                try:
                    self._baselines[name] = _prepare(stored)
                except ValueError as e:
                    log.error("%s: the stored baseline cannot be used: %s", name, e)
                    self._baselines.pop(name, None)
                    continue
                log.info("%s: baseline of %s loaded (%s)", name, _utc(stored.created_ms),
                         stored.source)

    def set_baseline(self, baseline: Baseline) -> None:
        """Use ``baseline`` for its topology (without Redis: tests, embedding)."""
        self._baselines[baseline.topology] = _prepare(baseline)

    def _store(self, topology: str, report: IntervalReport) -> None:
        summary = report.summary(self.worker)
        kept = self._kept.get(topology)
        if kept is not None and not any(f.sketch.count for f in report.fields.values()):
            # idle: the last interval with values stays stored (what `monitor show` merges),
            # marked as heard of now
            summary = msgspec.structs.replace(kept, heard_ms=summary.end_ms,
                                              idle_intervals=summary.seq - kept.seq)
        else:
            self._kept[topology] = summary
        try:
            write_summary(self._redis(), topology, summary)
        except SinkError as e:
            self._redis_failed("storing the interval summary", e)
            return
        if not self._redis_ok:
            log.info("value monitoring: Redis answers again")
        self._redis_ok = True


def _prepare(baseline: Baseline) -> _Baseline:
    sketches = {name: ValueSketch.from_state(state) for name, state in baseline.fields.items()}
    return _Baseline(baseline.created_ms,
                     {name: Reference(s) for name, s in sketches.items()},
                     {name: s.null_rate for name, s in sketches.items()})


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


# ------------------------------------------------------------------------------ metrics


class MonitorCollector(Collector):
    """The monitor's last closed intervals as Prometheus metrics (read at scrape time, one
    interval per topology: a scrape never mixes two)."""

    def __init__(self, monitor: ValueMonitor) -> None:
        self.monitor = monitor

    def describe(self) -> Iterator[Metric]:
        return iter(_Families().all())

    def collect(self) -> Iterator[Metric]:
        m = _Families()
        for topology, report in self.monitor.last.items():
            m.intervals.add_metric([topology], report.seq)
            m.end.add_metric([topology], report.end_s)
            if report.asof_min_ms is not None and report.asof_max_ms is not None:
                m.asof.add_metric([topology, "min"], report.asof_min_ms / 1000)
                m.asof.add_metric([topology, "max"], report.asof_max_ms / 1000)
            if report.baseline_created_ms is not None:
                m.baseline_at.add_metric([topology], report.baseline_created_ms / 1000)
            for name, f in report.fields.items():
                labels = [topology, name]
                s = f.sketch
                m.count.add_metric(labels, s.count)
                _maybe(m.nulls, labels, s.null_rate)
                _maybe(m.baseline_nulls, labels, f.baseline_null_rate)
                if s.n:
                    m.mean.add_metric(labels, s.mean)
                    _maybe(m.stddev, labels, s.stddev)
                    for q, v in zip(QUANTILES, s.quantiles(QUANTILES), strict=True):
                        m.quantile.add_metric([*labels, str(q)], v)
                _maybe(m.psi, labels, f.psi)
                _maybe(m.quantile_distance, labels, f.quantile_distance)
        for topology, seconds in self.monitor.cost_s.items():
            m.cost.add_metric([topology], seconds)
        return iter(m.all())


class _Families:
    """The metric families of one scrape."""

    def __init__(self) -> None:
        tf = ["topology", "field"]
        t = ["topology"]
        self.count = GaugeMetricFamily(
            "streamfeat_value_count", "Values of the field written to Redis in the last "
            "interval", labels=tf)
        self.nulls = GaugeMetricFamily(
            "streamfeat_value_null_ratio", "Share of those values served as absent (None, "
            "NaN: the default)", labels=tf)
        self.mean = GaugeMetricFamily(
            "streamfeat_value_mean", "Mean of the numeric values written in the last interval",
            labels=tf)
        self.stddev = GaugeMetricFamily(
            "streamfeat_value_stddev", "Standard deviation (population) of those values",
            labels=tf)
        self.quantile = GaugeMetricFamily(
            "streamfeat_value_quantile", "Lower quantile of those values (1 % relative error)",
            labels=[*tf, "quantile"])
        self.psi = GaugeMetricFamily(
            "streamfeat_value_psi", "Population stability index of the last interval's values "
            "against the baseline's deciles (> 0.2: drift)", labels=tf)
        self.quantile_distance = GaugeMetricFamily(
            "streamfeat_value_quantile_distance", "Mean |difference| of the 5..95 % quantiles "
            "from the baseline's, in baseline IQRs", labels=tf)
        self.baseline_nulls = GaugeMetricFamily(
            "streamfeat_value_baseline_null_ratio", "Null ratio of the baseline", labels=tf)
        self.intervals = CounterMetricFamily(
            "streamfeat_value_intervals", "Monitoring intervals closed", labels=t)
        self.end = GaugeMetricFamily(
            "streamfeat_value_interval_end_timestamp_seconds",
            "Wall clock at the close of the last interval", labels=t)
        self.asof = GaugeMetricFamily(
            "streamfeat_value_interval_asof_seconds", "Event time the last interval's values "
            "are as of: earliest (bound=min) and latest (bound=max)", labels=[*t, "bound"])
        self.baseline_at = GaugeMetricFamily(
            "streamfeat_value_baseline_timestamp_seconds",
            "When the baseline in use was created", labels=t)
        self.cost = CounterMetricFamily(
            "streamfeat_value_monitor_seconds", "Time the worker's loop spent sketching "
            "values", labels=t)

    def all(self) -> list[Metric]:
        return [self.count, self.nulls, self.mean, self.stddev, self.quantile, self.psi,
                self.quantile_distance, self.baseline_nulls, self.intervals, self.end,
                self.asof, self.baseline_at, self.cost]


def _maybe(family: GaugeMetricFamily, labels: list[str], value: float | None) -> None:
    if value is not None and math.isfinite(value):
        family.add_metric(labels, value)


# ------------------------------------------------------------------------------ the worker


class MonitorSettings(Protocol):
    """What :func:`open_monitor` reads of the worker's configuration."""

    @property
    def topologies(self) -> Sequence[TopologyDef]: ...

    @property
    def redis(self) -> str: ...

    @property
    def monitor(self) -> bool: ...

    @property
    def monitor_interval_s(self) -> float: ...


class NullMonitor:
    """Monitoring turned off (``--no-monitor``): every call does nothing."""

    def observe(self, topology: str, batches: Sequence[UpdateBatch]) -> None:
        return

    def start(self) -> None:
        return

    def stop(self) -> None:
        return


def open_monitor(config: MonitorSettings, registry: CollectorRegistry,
                 store: bool = True) -> ValueMonitor | NullMonitor:
    """The worker's monitor as configured (``store``: baselines and summaries in the
    worker's Redis; off when the worker writes elsewhere, as unit tests' workers do).
    Raises :class:`ConfigError` for an interval that is not above 0."""
    if not config.monitor:
        return NullMonitor()
    if not config.monitor_interval_s > 0:
        raise ConfigError(f"--monitor-interval must be above 0 seconds, got "
                          f"{config.monitor_interval_s}")
    return ValueMonitor(config.topologies, registry, interval_s=config.monitor_interval_s,
                        redis_url=config.redis if store else None)
