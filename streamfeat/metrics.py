"""Prometheus metrics of the worker (contract section 9) and its HTTP endpoint.

Everything lives in a registry owned by :class:`Metrics`, not the global default one, so
that several workers (or tests) in one process never collide.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
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

__all__ = ["Metrics", "MetricsServer"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The worker's metrics; labels are ``topology`` and ``partition`` where they apply."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            "streamfeat_events_malformed", "Malformed records (sent to the DLQ)", tp, registry=r
        )
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
        self.lag = Gauge("streamfeat_consumer_lag", "Records behind the end of the partition",
                         ["topic", "partition"], registry=r)
        self.event_to_redis = Histogram(
            "streamfeat_event_to_redis_seconds",
            "Time from a record's Kafka timestamp to its features being written to Redis",
            ["topology"], buckets=_LATENCY_BUCKETS, registry=r,
        )
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
        self.entities = Gauge("streamfeat_state_entities", "Entities held in window state", tp,
                              registry=r)
        self.state_bytes = Gauge("streamfeat_state_bytes",
                                 "Approximate in-memory size of the window state", tp, registry=r)
        self.stream_time = Gauge("streamfeat_stream_time_ms", "Stream time of the partition", tp,
                                 registry=r)
        self.staleness = Gauge(
            "streamfeat_feature_staleness_seconds",
            "Wall clock minus the stream time the served values are as of", tp, registry=r,
        )
        store = ["store", "partition"]
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
            "Age of the oldest consumed record not yet in a Parquet snapshot", ["topic"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


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
