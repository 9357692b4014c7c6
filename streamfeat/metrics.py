"""Prometheus metrics of the worker (contract section 9) and its HTTP endpoint.

Everything lives in a registry owned by :class:`Metrics`, not the global default one, so
that several workers (or tests) in one process never collide.

Every metric of a topology's work is labelled ``topology`` (and ``partition`` where it is
per partition), so that one dashboard and one set of alerts serve every topology
(``deploy/grafana``, ``deploy/prometheus``; the names are listed in docs/operations.md).
Times are in seconds. Malformed records are counted per ``reason``, one of the small fixed
set :data:`MALFORMED_REASONS` (:func:`malformed_reason` sorts a dead letter's text into
it): never the text itself, whose values are unbounded.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import threading
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from streamfeat.redact import redact

__all__ = ["MALFORMED_REASONS", "Metrics", "MetricsServer", "malformed_reason"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_FRESHNESS_BUCKETS = (*_LATENCY_BUCKETS, 60, 120, 300, 600, 1800, 3600)
"""Event to Redis: up to an hour, so that a p99 can be compared with any topology's
``freshness`` bound up to that (a quantile past the last finite bucket reads as its bound)."""

MALFORMED_REASONS = (
    "undecodable", "tombstone", "not_object", "framing", "key", "key_mismatch", "timestamp",
    "too_far_future", "type", "other",
)
"""The ``reason`` label of ``streamfeat_events_malformed_total``, as the decoder tells them
apart (streamfeat/records/decode.py, avro.py, protobuf.py; pipeline/acceptance.py):

- ``undecodable``: not valid JSON, msgpack, Avro or Protobuf of the schema;
- ``tombstone``: a record without a value;
- ``not_object``: decodes, but not as one object of event fields;
- ``framing``: not Confluent-framed, or a schema id or message index not the topology's;
- ``key``: the entity key field missing, empty, or neither a string nor an integer;
- ``key_mismatch``: the record's Kafka key is not its entity id (topic not keyed by entity);
- ``timestamp``: the event time missing, unparseable, negative or past year 9999;
- ``too_far_future``: the event time later than the record's Kafka timestamp by more than
  ``max_future`` (or no Kafka timestamp to check it against);
- ``type``: a field an aggregation reads has the wrong type (or a non-finite number);
- ``other``: none of these (a reason written after this list; never expected).
"""

_REASON_PREFIXES = (
    ("undecodable:", "undecodable"),
    ("record has no value", "tombstone"),
    ("expected an object", "not_object"),
    ("not Confluent-framed", "framing"),
    ("schema id ", "framing"),
    ("message indexes ", "framing"),
    ("key field ", "key"),
    ("key: ", "key_mismatch"),
    ("timestamp field ", "timestamp"),
    ("Kafka timestamp ", "timestamp"),
    ("future: ", "too_far_future"),
    ("field ", "type"),
)


def malformed_reason(text: str) -> str:
    """The ``reason`` label (one of :data:`MALFORMED_REASONS`) of a dead letter's reason."""
    for prefix, label in _REASON_PREFIXES:
        if text.startswith(prefix):
            return label
    return "other"


class Metrics:
    """The worker's metrics; labels are ``topology`` and ``partition`` where they apply."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.topologies: tuple[str, ...] = ()  # the worker's, once described
        r = self.registry
        tp = ["topology", "partition"]
        self.consumed = Counter("streamfeat_events_consumed", "Records consumed", tp, registry=r)
        self.aggregated = Counter(
            "streamfeat_events_aggregated", "Events aggregated into windows", tp, registry=r
        )
        self.late = Counter(
            "streamfeat_events_late", "Late events (sent to the DLQ)", tp, registry=r
        )
        self.malformed = Counter(
            "streamfeat_events_malformed",
            "Malformed records (sent to the DLQ), by reason (one of a fixed set: undecodable, "
            "tombstone, not_object, framing, key, key_mismatch, timestamp, too_far_future, "
            "type, other)", [*tp, "reason"], registry=r)
        self.repartitioned = Counter(
            "streamfeat_events_repartitioned",
            "Records a re-keyed topology's first stage wrote to its repartition topic "
            "(partition: the source partition)", tp, registry=r)
        self.duplicates = Counter(
            "streamfeat_events_duplicate",
            "Re-keyed records the first stage wrote twice (after a crash), dropped by the "
            "second stage", tp, registry=r)
        self.key_mismatch = Counter(
            "streamfeat_key_mismatch",
            "Records whose key is not the entity id of a topology declared keyed by entity "
            "(sent to the DLQ; set source.keyed_by_entity: false)", tp, registry=r)
        self.lag = Gauge(
            "streamfeat_consumer_lag",
            "Records behind the end of the partition (topic: the one consumed, a re-keyed "
            "topology's source or repartition topic)",
            ["topology", "topic", "partition"], registry=r)
        self.event_to_redis = Histogram(
            "streamfeat_event_to_redis_seconds",
            "Time from a record's Kafka timestamp to its features being written to Redis",
            ["topology"], buckets=_FRESHNESS_BUCKETS, registry=r,
        )
        self.freshness_bound = Gauge(
            "streamfeat_freshness_bound_seconds",
            "The topology's declared freshness (its freshness: key): the bound event to "
            "Redis is held to", ["topology"], registry=r)
        self.redis_write = Histogram(
            "streamfeat_redis_write_seconds", "Latency of one pipelined Redis write",
            ["topology"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.redis_rejected = Counter(
            "streamfeat_redis_writes_rejected",
            "Writes the compare-and-set refused because Redis already held a newer version",
            ["topology"], registry=r,
        )
        self.fenced_generation = Gauge(
            "streamfeat_fenced_generation",
            "Generation of values Redis holds above this worker's own (a backfill wrote them; "
            "the worker's writes to those entities are refused until it runs with "
            "--generation at least this); 0 when not fenced",
            ["topology"], registry=r,
        )
        self.retries = Counter(
            "streamfeat_retries", "Retries after an unavailable dependency", ["dependency"],
            registry=r,
        )
        self.poll_records = Gauge(
            "streamfeat_poll_records",
            "Records the worker asks for at each poll: more while it is behind, up to "
            "--batch-size, toward --batch-seconds of work per batch", registry=r)
        self.batch_rests = Counter(
            "streamfeat_batch_rests",
            "Times the rest of a batch waited for a commit: its new entities were more than "
            "the state budget takes at once (--state-cache-mb)", registry=r)
        self.entities = Gauge("streamfeat_state_entities", "Entities held in window state", tp,
                              registry=r)
        self.state_bytes = Gauge("streamfeat_state_bytes",
                                 "Approximate in-memory size of the window state", tp, registry=r)
        self.state_budget = Gauge(
            "streamfeat_state_budget_bytes",
            "Window state this worker process may hold in memory, shared by its partitions "
            "(--state-cache-mb; with auto, what the container's memory limit gave); 0: no "
            "bound",
            registry=r)
        self.state_evictions = Counter(
            "streamfeat_state_evictions",
            "Entities whose window state left memory for the state store (--state-cache-mb)",
            ["topology"], registry=r)
        self.state_loads = Counter(
            "streamfeat_state_loads",
            "Entities whose window state was read back from the state store into memory "
            "(an event or a window expiry for an evicted entity)", ["topology"], registry=r)
        self.stream_time = Gauge(
            "streamfeat_stream_time_seconds",
            "Stream time of the partition (the largest event time seen), Unix seconds", tp,
            registry=r)
        self.staleness = Gauge(
            "streamfeat_feature_staleness_seconds",
            "Wall clock minus the stream time the served values are as of", tp, registry=r,
        )
        store = ["topology", "store", "partition"]  # store: the topology's, or <topology>.rekey
        self.restore_seconds = Gauge(
            "streamfeat_state_restore_seconds",
            "Time the last restore of the partition's state from its checkpoints took", store,
            registry=r)
        self.restore_bytes = Gauge(
            "streamfeat_state_restore_bytes", "Bytes of checkpoints read by the last restore",
            store, registry=r)
        self.durable_offset = Gauge(
            "streamfeat_state_durable_offset",
            "Next offset of the partition's last durable checkpoint", store, registry=r)
        self.durable_age = Gauge(
            "streamfeat_state_checkpoint_age_seconds",
            "Seconds since the partition's state was last made durable", store, registry=r)
        self.recomputing = Gauge(
            "streamfeat_recompute_pending",
            "1 while a definition change is applied on the partition (feature-windows computed "
            "from history, then every entity rewritten)",
            tp, registry=r)
        self.recomputed = Counter(
            "streamfeat_recompute_records", "Records of history read to compute changed "
            "feature-windows", tp, registry=r)
        self.partial_since = Gauge(
            "streamfeat_feature_partial_since_ms",
            "Event time the history of a recomputed feature-window starts at, when its window "
            "reaches before it (its values miss older events)", ["topology", "partition", "field"],
            registry=r)
        self.snapshot_lag = Gauge(
            "streamfeat_snapshot_lag_seconds",
            "Age of the oldest consumed record not yet in a Parquet snapshot",
            ["topology", "topic", "partition"], registry=r,
        )
        self.build_info = Gauge(
            "streamfeat_build_info", "1, labelled with the worker's version, Python and runtime",
            ["version", "python", "runtime"], registry=r)
        self.healthy = Gauge(
            "streamfeat_healthy",
            "1 when the worker running the topology is healthy (/health answers 200), else 0",
            ["topology"], registry=r)
        self.ready = Gauge(
            "streamfeat_ready",
            "1 when the worker running the topology is ready (/health/ready answers 200: "
            "joined its group, every dependency healthy, not fenced), else 0",
            ["topology"], registry=r)
        self.failing = Gauge(
            "streamfeat_dependency_failing_seconds",
            "How long the dependency (kafka, redis, snapshots) has been failing; 0 when it "
            "works", ["topology", "dependency"], registry=r)

    # ------------------------------------------------------------------ set by the worker
    def describe(self, topologies: Iterable[tuple[str, int]], runtime: str) -> None:
        """The worker's constants: build info, and each topology's freshness bound
        (``(name, freshness in ms)``); the health gauges are labelled by these names."""
        self.build_info.labels(_version(), platform.python_version(), runtime).set(1)
        names = []
        for name, freshness_ms in topologies:
            self.freshness_bound.labels(name).set(freshness_ms / 1000)
            names.append(name)
        self.topologies = tuple(names)

    def count_malformed(self, topology: str, partition: int,
                        reasons: Sequence[str]) -> None:
        """Count malformed records by the label of their reasons."""
        counts: dict[str, int] = {}
        for text in reasons:
            label = malformed_reason(text)
            counts[label] = counts.get(label, 0) + 1
        for label, n in counts.items():
            self.malformed.labels(topology, str(partition), label).inc(n)

    def forget_partition(self, topic: str, partition: int, pipelines: Sequence[str] = (),
                         rekeyed: Sequence[str] = ()) -> None:
        """Drop the gauges of a partition no longer owned (its next owner reports them; a
        value left behind would be summed with the new owner's): the lags of ``topic``'s
        partition, and the state gauges of the topologies whose pipelines (``pipelines``)
        or first stages (``rekeyed``, store ``<name>.rekey``) ran on it. Kept: what
        happened once and is not reported again by the next owner (the last restore, the
        partial history of a recomputed feature-window)."""
        part = str(partition)
        tp = ("topology", "partition")
        by_topic = ("topology", "topic", "partition")
        stores = {*((n, n) for n in pipelines), *((n, f"{n}.rekey") for n in rekeyed)}
        for gauge, names in (
                (self.lag, by_topic), (self.snapshot_lag, by_topic),
                (self.entities, tp), (self.state_bytes, tp), (self.stream_time, tp),
                (self.staleness, tp), (self.recomputing, tp),
                (self.durable_offset, ("topology", "store", "partition")),
                (self.durable_age, ("topology", "store", "partition"))):
            for metric in gauge.collect():
                for sample in metric.samples:
                    labels = sample.labels
                    if labels["partition"] != part:
                        continue
                    if "topic" in labels:
                        gone = labels["topic"] == topic
                    elif "store" in labels:
                        gone = (labels["topology"], labels["store"]) in stores
                    else:
                        gone = labels["topology"] in pipelines
                    if gone:
                        gauge.remove(*(labels[n] for n in names))

    def observe_health(self, status: dict[str, Any]) -> None:
        """Health gauges from the ``/health`` body (set when scraped, so a stuck worker
        loop still shows as not live)."""
        failing = status.get("failing") or {}
        for name in self.topologies:
            self.healthy.labels(name).set(1 if status.get("healthy") else 0)
            self.ready.labels(name).set(1 if status.get("ready") else 0)
            for dependency in _DEPENDENCIES:
                seconds = (failing.get(dependency) or {}).get("for_s", 0.0)
                self.failing.labels(name, dependency).set(float(seconds))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _version() -> str:
    """streamfeat's installed version (``unknown`` when run from a tree never installed)."""
    try:
        return importlib.metadata.version("streamfeat")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_DEPENDENCIES = ("kafka", "redis", "snapshots")
"""As :data:`streamfeat.runtime.health.DEPENDENCIES` (the runtime is a layer above)."""


_HEALTH_VIEWS = {"/health": "healthy", "/health/live": "live", "/health/ready": "ready"}
"""Each health endpoint and the key of the status body that decides its 200 or 503."""


class MetricsServer:
    """Serves ``/metrics`` (Prometheus text) and the health views (JSON) on a background thread.

    ``health()`` returns the status body; ``/health`` answers 200 when its ``healthy`` is
    true, ``/health/live`` when ``live`` is, ``/health/ready`` when ``ready`` is (a missing
    key counts as false), 503 otherwise. Every view returns the whole body.
    """

    def __init__(self, metrics: Metrics, port: int, health: Callable[[], dict[str, Any]]) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                if path.startswith("/metrics"):
                    metrics.observe_health(health())
                    body = redact(metrics.exposition().decode()).encode()
                    ctype, code = CONTENT_TYPE_LATEST, 200
                elif path.startswith("/health"):
                    key = _HEALTH_VIEWS.get(path, "healthy")
                    status = health()
                    body = redact(json.dumps(status)).encode()
                    ctype = "application/json"
                    code = 200 if status.get(key) else 503
                else:
                    body = b"see /metrics, /health, /health/live and /health/ready\n"
                    ctype, code = "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104 - scraped by Prometheus
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=outer._server.serve_forever, daemon=True,
                                        name="streamfeat-metrics")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
