"""Prometheus metrics of ``streamfeat serve``, in a registry of their own (``/metrics``).

Labels are bounded: ``topology`` is a served topology's name, or ``unknown`` for a request
naming none of them (never the requested text, which anyone can vary); ``status`` is the
HTTP status code. Times are in seconds.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "UNKNOWN_TOPOLOGY", "ServeMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNKNOWN_TOPOLOGY = "unknown"
"""The ``topology`` label of requests that name no served topology."""

#: Sub-millisecond first: a read of 100 entities takes about a millisecond end to end.
_LATENCY_BUCKETS = (0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_ENTITY_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class ServeMetrics:
    """The server's counters and histograms; :meth:`render` is the ``/metrics`` body."""

    def __init__(self, topologies: list[str]) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "streamfeat_serve_requests_total",
            "Feature requests answered, by topology and HTTP status",
            ["topology", "status"], registry=r)
        self.latency = Histogram(
            "streamfeat_serve_request_seconds",
            "Time to answer a feature request, from its headers parsed to its response built "
            "(body read, Redis read, values decoded, JSON encoded)",
            ["topology"], buckets=_LATENCY_BUCKETS, registry=r)
        self.entities = Histogram(
            "streamfeat_serve_entities_per_request",
            "Entities asked for in one feature request (answered ones)",
            ["topology"], buckets=_ENTITY_BUCKETS, registry=r)
        self.redis_errors = Counter(
            "streamfeat_serve_redis_errors_total",
            "Feature reads that Redis failed: kind error (unreachable, refused) or timeout "
            "(no answer within --timeout)",
            ["topology", "kind"], registry=r)
        # Children made now: a series exists (at 0) before its first event, and a request
        # does not pay for the label lookup.
        self._latency = {t: self.latency.labels(t) for t in topologies}
        self._entities = {t: self.entities.labels(t) for t in topologies}
        for t in topologies:
            for kind in ("error", "timeout"):
                self.redis_errors.labels(t, kind)

    def observe(self, topology: str, status: int, seconds: float, entities: int | None) -> None:
        """One request answered: ``entities`` when it was read (a 200)."""
        self.requests.labels(topology, str(status)).inc()
        latency = self._latency.get(topology)
        if latency is None:
            latency = self.latency.labels(topology)
        latency.observe(seconds)
        if entities is not None:
            hist = self._entities.get(topology)
            if hist is not None:
                hist.observe(entities)

    def redis_error(self, topology: str, kind: str) -> None:
        self.redis_errors.labels(topology, kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
