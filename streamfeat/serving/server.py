"""Running the server: uvicorn (httptools, uvloop where installed) on one event loop.

SIGTERM or SIGINT: uvicorn stops accepting connections, closes the idle ones, lets the
requests in flight finish (up to ``shutdown_timeout_s``, then cuts them), and the app's
lifespan closes the Redis pool; :func:`serve` then returns 0. A second signal during the
drain stops at once.
"""

from __future__ import annotations

import gc
import logging
import signal
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from streamfeat.serving.app import build_app
from streamfeat.serving.config import ServeConfig

__all__ = ["serve"]

log = logging.getLogger("streamfeat.serving")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _drained(signum: int, frame: FrameType | None) -> None:
    """Handler in place once uvicorn is done: it re-raises the signal that stopped it, which
    must then end nothing more (uvicorn has already drained and stopped)."""


def serve(config: ServeConfig, app: Starlette | None = None) -> int:
    """Serve until SIGTERM or SIGINT; 0 after a graceful stop.

    ``app``: :func:`build_app` of ``config``, when already built. Raises
    :class:`~streamfeat.errors.ConfigError` for a bad setting or topology file before
    binding the port.
    """
    if app is None:
        app = build_app(config)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, http="httptools", loop="auto",
        lifespan="on", log_config=None, access_log=config.access_log,
        timeout_keep_alive=max(1, round(config.keep_alive_s)),
        timeout_graceful_shutdown=round(config.shutdown_timeout_s),
        limit_concurrency=config.max_concurrency, server_header=False,
    ))
    log.info("serving %s from Redis at %s (--io %s, pool %d, timeout %g s)",
             ", ".join(app.state.catalog_names), app.state.redis_display, config.io,
             config.redis_pool, config.timeout_s)
    # uvicorn re-raises the stopping signal once it has stopped, under the handler found at
    # its start: make that one a no-op, so a graceful stop ends with status 0.
    previous = {sig: signal.signal(sig, _drained) for sig in _STOP_SIGNALS}
    # What is loaded by now lives as long as the process: out of the collector's sight, a
    # full collection (10 ms over these ~60k objects) costs ~0 instead of stalling requests.
    gc.freeze()
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if server.started:
        log.info("stopped")
        return 0
    return 1  # could not bind the port or start (uvicorn logged why)
