"""Serving: ``streamfeat serve``, the HTTP feature server for models not written in Python.

Owns the server (Starlette on uvicorn, :mod:`streamfeat.serving.app`), its topology
catalogue, its non-blocking Redis reads and its own Prometheus registry. It reads through
the client's read path (:func:`streamfeat.client.plan_read`: the same script calls, the same
decoding, the same defaults and nulls), so a value served over HTTP is the value
:class:`streamfeat.client.Client` returns.

Must not import the runtime or replay (the layer contract in pyproject.toml keeps the
engines apart), nor the pipeline or operators: it is a reader of the online store and needs
only the topology definitions, the client's read path and the Redis helpers below it.
"""

from __future__ import annotations

import typing

from streamfeat.lazy import exports as _exports
from streamfeat.serving.config import IO_MODES, ServeConfig

if typing.TYPE_CHECKING:
    from streamfeat.serving.app import build_app
    from streamfeat.serving.server import serve

# The app and the server (Starlette, uvicorn, the client) on first use: every streamfeat
# command's parser reads ServeConfig's defaults.
__getattr__, __dir__ = _exports(__name__, {
    "build_app": "streamfeat.serving.app",
    "serve": "streamfeat.serving.server",
})

__all__ = ["IO_MODES", "ServeConfig", "build_app", "serve"]
