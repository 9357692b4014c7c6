"""The HTTP API of ``streamfeat serve`` (docs/serving.md), as a Starlette application.

- ``POST /features/{topology}`` with ``{"entities": [...], "features": [...], "meta": false}``
  and ``GET /features/{topology}/{entity}?features=a,b&meta=true``: ``{"topology": name,
  "entities": {id: {field: value}}}``, plus ``"meta": {id: {found, asof_ms, updated_ms,
  version}}`` when asked. Values, defaults and nulls are :meth:`Client.get_with_meta`'s.
- Either read may name the model reading (query parameter ``model=fraud-v3``, or the header
  ``X-Streamfeat-Model``): its reads are counted for the registry's model dependencies as
  :class:`~streamfeat.client.Client`'s ``model=`` counts them (in memory, flushed in one batch
  at most every 10 s and at shutdown, off the event loop: ``streamfeat registry --model``).
- ``GET /topologies``: what each served topology has (features, fields, defaults).
- ``GET /health``: 200 when Redis answers a PING, 503 otherwise.
- ``GET /metrics``: Prometheus text (:mod:`streamfeat.serving.metrics`).

Every error is ``{"error": "what went wrong; what to do"}`` with its status: 400 (a bad
body, a feature the topology lacks), 404 (a topology not served, a path that is no route),
413 (too many entities, too large a body), 500 (a stored value streamfeat did not write),
503 (Redis failed), 504 (Redis too slow).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from streamfeat.client import EntityFeatures
from streamfeat.connections import parse_redis_url
from streamfeat.errors import ConfigError, SinkError
from streamfeat.redact import redact
from streamfeat.registry.usage import UsageRecorder, check_model
from streamfeat.serving.catalog import Catalog, UnknownTopology
from streamfeat.serving.config import ServeConfig
from streamfeat.serving.metrics import CONTENT_TYPE, UNKNOWN_TOPOLOGY, ServeMetrics
from streamfeat.serving.store import ReadTimeout, RedisFailed, Store, open_store
from streamfeat.sinks.redis import connect
from streamfeat.topology import TopologyDef

__all__ = ["ROUTES", "FeatureRequest", "build_app"]

log = logging.getLogger("streamfeat.serving")

ROUTES = ("POST /features/{topology}", "GET /features/{topology}/{entity}",
          "GET /topologies", "GET /health", "GET /metrics")
_JSON = "application/json"
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "")
MODEL_HEADER = "x-streamfeat-model"


class FeatureRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /features/{topology}``."""

    entities: list[str | int]
    features: list[str] | None = None
    meta: bool = False


_decode_request = msgspec.json.Decoder(FeatureRequest).decode
_encode = msgspec.json.Encoder().encode


class _Refused(Exception):
    """A request the server will not read: its status and the message saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> Response:
    return Response(_encode({"error": message}), status, media_type=_JSON)


def _json(doc: Any, status: int = 200) -> Response:
    return Response(_encode(doc), status, media_type=_JSON)


class _Server:
    """The handlers, with what they share: the catalogue, the store and the metrics."""

    def __init__(self, config: ServeConfig, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self.metrics = ServeMetrics(catalog.names)
        self.url = parse_redis_url(config.redis)  # a bad URL is named before the server starts
        self.store: Store | None = None
        self.usage: UsageRecorder | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        c = self.config
        self.store = open_store(c.io, self.url, pool=c.redis_pool, timeout_s=c.timeout_s)
        await self.store.start()
        usage_redis = connect(self.url)  # the model reads' counts: flushed by their thread
        self.usage = UsageRecorder(usage_redis)
        try:
            yield
        finally:
            store, self.store = self.store, None
            usage, self.usage = self.usage, None
            await store.close()
            await asyncio.to_thread(usage.close)  # the last counts
            usage_redis.close()

    # -- feature reads ---------------------------------------------------------

    async def post_features(self, request: Request) -> Response:
        started = time.perf_counter()
        label = UNKNOWN_TOPOLOGY
        try:
            topology = self.catalog.get(request.path_params["topology"])
            label = topology.name
            body = await self._body(request)
            try:
                req = _decode_request(body)
            except msgspec.DecodeError as e:  # ValidationError too: says where ($.entities[2])
                raise _Refused(400, f"bad request body: {e}; send "
                               '{"entities": ["u1", 42], "features": ["orders", '
                               '"amount_sum__1h"], "meta": false} (features and meta '
                               "optional)") from None
            response, n = await self._read(topology, req.entities, req.features, req.meta,
                                           _model(request))
        except Exception as e:
            response, n = self._failure(e, label), None
        self.metrics.observe(label, response.status_code, time.perf_counter() - started, n)
        return response

    async def get_features(self, request: Request) -> Response:
        started = time.perf_counter()
        label = UNKNOWN_TOPOLOGY
        try:
            topology = self.catalog.get(request.path_params["topology"])
            label = topology.name
            query = request.query_params
            given = query.getlist("features")
            features = ([f for text in given for f in text.split(",") if f]
                        if given else None)
            meta = query.get("meta", "").lower()
            if meta not in _TRUE and meta not in _FALSE:
                raise _Refused(400, f"meta={query.get('meta')!r}: use meta=true or meta=false")
            response, n = await self._read(topology, [request.path_params["entity"]],
                                           features, meta in _TRUE, _model(request))
        except Exception as e:
            response, n = self._failure(e, label), None
        self.metrics.observe(label, response.status_code, time.perf_counter() - started, n)
        return response

    async def _read(self, topology: TopologyDef, entities: Sequence[str | int],
                    features: Sequence[str] | None, meta: bool,
                    model: str | None = None) -> tuple[Response, int]:
        if len(entities) > self.config.max_entities:
            raise _Refused(413, f"{len(entities)} entities in one request; at most "
                           f"{self.config.max_entities} (--max-entities): split the request")
        plan = self.catalog.plan(topology, entities, features)
        store = self.store
        if store is None:
            raise RedisFailed("the server is starting or stopping; try again")
        found = await store.read(plan) if plan.ids else {}
        if model is not None and plan.ids and self.usage is not None:
            self.usage.record(topology.name, model, plan.fields)  # memory only
        return _json(_document(topology.name, found, meta)), len(plan.ids)

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        too_large = _Refused(413, f"request body over {limit} bytes (--max-body-bytes): "
                                  "ask for fewer entities per request")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def _failure(self, exc: Exception, topology: str) -> Response:
        if isinstance(exc, _Refused):
            return _error(exc.status, str(exc))
        if isinstance(exc, UnknownTopology):
            return _error(404, str(exc))
        if isinstance(exc, ReadTimeout):
            self.metrics.redis_error(topology, "timeout")
            return _error(504, redact(exc))
        if isinstance(exc, RedisFailed):
            self.metrics.redis_error(topology, "error")
            return _error(503, redact(exc))
        if isinstance(exc, SinkError):  # a stored value streamfeat did not write
            log.error("%s", redact(exc))
            return _error(500, redact(exc))
        if isinstance(exc, ConfigError):  # a feature the topology lacks: names its features
            return _error(400, str(exc))
        log.exception("feature request failed")
        return _error(500, f"internal error ({type(exc).__name__}); the server's log has the "
                           "traceback: please report it")

    # -- the rest --------------------------------------------------------------

    async def topologies(self, request: Request) -> Response:
        return _json({"topologies": [Catalog.describe(t) for t in self.catalog]})

    async def health(self, request: Request) -> Response:
        store = self.store
        try:
            if store is None:
                raise SinkError("the server is starting or stopping")
            await store.ping(self.config.timeout_s)
        except SinkError as e:
            return _json({"status": "unavailable", "redis": redact(e),
                          "topologies": self.catalog.names}, 503)
        return _json({"status": "ok", "redis": "ok", "topologies": self.catalog.names})

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def no_route(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        what = "no route" if status == 404 else f"HTTP {status} for"
        return _error(status, f"{what} {request.method} {request.url.path}; routes: "
                              f"{', '.join(ROUTES)}")


def _model(request: Request) -> str | None:
    """The model a request names (``model`` query parameter, else the header), checked."""
    name = request.query_params.get("model") or request.headers.get(MODEL_HEADER)
    if name is None:
        return None
    try:
        return check_model(name)
    except ConfigError as e:
        raise _Refused(400, f"{e} (the model parameter or X-Streamfeat-Model header)") from None


def _document(topology: str, found: dict[str, EntityFeatures], meta: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {"topology": topology,
                           "entities": {eid: e.values for eid, e in found.items()}}
    if meta:
        doc["meta"] = {eid: {"found": e.found, "asof_ms": e.asof_ms, "updated_ms": e.updated_ms,
                             "version": e.version} for eid, e in found.items()}
    return doc


def build_app(config: ServeConfig, catalog: Catalog | None = None) -> Starlette:
    """The server's ASGI application (its Redis pool opens with the app's lifespan).

    ``catalog``: the topologies served; default: ``config.topologies`` loaded.
    ``app.state``: ``metrics`` (its :class:`ServeMetrics`), ``catalog_names`` and
    ``redis_display`` (the Redis URL, password masked).
    Raises :class:`~streamfeat.errors.TopologyError` for a bad topology file (every
    ``file:line: reason``) and :class:`ConfigError` for a bad setting or Redis URL.
    """
    config.check()
    server = _Server(config, catalog if catalog is not None else Catalog.load(config.topologies))
    app = Starlette(
        routes=[
            Route("/features/{topology}", server.post_features, methods=["POST"]),
            Route("/features/{topology}/{entity:path}", server.get_features, methods=["GET"]),
            Route("/topologies", server.topologies, methods=["GET"]),
            Route("/health", server.health, methods=["GET"]),
            Route("/metrics", server.metrics_text, methods=["GET"]),
        ],
        exception_handlers={404: server.no_route, 405: server.no_route},
        lifespan=server.lifespan,
    )
    app.state.metrics = server.metrics
    app.state.catalog_names = server.catalog.names
    app.state.redis_display = server.url.display
    return app
