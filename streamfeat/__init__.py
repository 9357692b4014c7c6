"""streamfeat: define windowed ML features once; serve them fresh, replay them exactly."""

from __future__ import annotations

from streamfeat.errors import (
    ConfigError,
    DecodeError,
    SinkError,
    StateError,
    StreamfeatError,
    TopologyError,
)

__all__ = [
    "ConfigError",
    "DecodeError",
    "SinkError",
    "StateError",
    "StreamfeatError",
    "TopologyError",
]

__version__ = "0.1.0"
