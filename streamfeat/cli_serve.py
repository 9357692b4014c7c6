"""``streamfeat serve``: the HTTP feature server (docs/serving.md).

``streamfeat.cli`` calls :func:`add_serve_command` with its sub-parsers. The server lives
in :mod:`streamfeat.serving`; this module turns flags into a :class:`ServeConfig`, checks
Redis like the worker does (10 s, then one line saying what to check, exit 2) and runs it.
"""

from __future__ import annotations

import argparse

from streamfeat.cli_common import ignore_stop_signals
from streamfeat.config import resolve_redis

__all__ = ["add_serve_command"]


def _serve(args: argparse.Namespace) -> int:
    from streamfeat.serving import ServeConfig, build_app, serve
    from streamfeat.sinks.redis import check

    config = ServeConfig(
        topologies=tuple(args.topologies), redis=resolve_redis(args.redis), host=args.host,
        port=args.port, timeout_s=args.timeout, redis_pool=args.redis_pool,
        max_entities=args.max_entities, max_body_bytes=args.max_body_bytes,
        max_concurrency=args.max_concurrency, keep_alive_s=args.keep_alive,
        shutdown_timeout_s=args.shutdown_timeout, io=args.io, access_log=args.access_log,
    )
    app = build_app(config)  # every topology, setting and the URL checked before Redis is
    check(config.redis)
    status = serve(config, app)
    ignore_stop_signals()
    return status


def add_serve_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the ``streamfeat`` sub-commands."""
    from streamfeat.serving.config import IO_MODES, ServeConfig

    d = ServeConfig(topologies=())
    p = sub.add_parser(
        "serve", help="HTTP feature server: features of many entities in one request, "
                      "for models not written in Python (docs/serving.md)",
        description="Serve the features of TOPOLOGY files over HTTP: POST /features/{name} "
                    "{\"entities\": [...], \"features\": [...]}, GET /features/{name}/{id}, "
                    "GET /topologies, /health, /metrics. Values, defaults and nulls are the "
                    "Python client's. SIGTERM: finish the requests in flight, exit 0.")
    p.add_argument("topologies", nargs="+", metavar="TOPOLOGY",
                   help="topology YAML files; each is served under its name")
    p.add_argument("--host", default=d.host,
                   help=f"address to listen on (default {d.host}; 0.0.0.0 for every "
                        "interface, e.g. in a container)")
    p.add_argument("--port", type=int, default=d.port, help=f"TCP port (default {d.port})")
    p.add_argument("--redis", help="Redis URL: redis:// or rediss:// (TLS), user:password@, "
                   "TLS files as ?ssl_ca_certs=... (env STREAMFEAT_REDIS; default "
                   "redis://localhost:6379/0)")
    p.add_argument("--timeout", type=float, default=d.timeout_s, metavar="SECONDS",
                   help="budget of one request's Redis read, waiting for a connection "
                        f"included; past it the answer is 504 (default {d.timeout_s:g})")
    p.add_argument("--redis-pool", type=int, default=d.redis_pool, metavar="N",
                   help="connections to Redis at most; requests beyond wait for one within "
                        f"--timeout (default {d.redis_pool})")
    p.add_argument("--max-entities", type=int, default=d.max_entities, metavar="N",
                   help=f"entities in one request at most; more: 413 (default {d.max_entities})")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, metavar="BYTES",
                   help=f"request body size at most; more: 413 (default {d.max_body_bytes})")
    p.add_argument("--max-concurrency", type=int, default=d.max_concurrency, metavar="N",
                   help="connections and requests in flight at most; more are answered 503 "
                        f"at once (default {d.max_concurrency})")
    p.add_argument("--keep-alive", type=float, default=d.keep_alive_s, metavar="SECONDS",
                   help="how long an idle keep-alive connection stays open; keep it above "
                        f"your load balancer's idle timeout (default {d.keep_alive_s:g})")
    p.add_argument("--shutdown-timeout", type=float, default=d.shutdown_timeout_s,
                   metavar="SECONDS",
                   help="on SIGTERM, how long requests in flight may take to finish before "
                        f"they are cut (default {d.shutdown_timeout_s:g})")
    p.add_argument("--io", choices=IO_MODES, default=d.io,
                   help="how to wait for Redis without blocking the event loop: asyncio "
                        "(redis.asyncio) or threads (the client's read in a thread pool); "
                        f"default {d.io}, the faster in benchmarks/serve.py")
    p.add_argument("--access-log", action="store_true",
                   help="log one line per request (off by default: it costs latency)")
    p.set_defaults(run=_serve)
