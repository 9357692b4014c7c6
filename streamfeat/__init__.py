"""streamfeat: define windowed ML features once; serve them fresh, replay them exactly.

The public API is what this module exports; everything else is internal and may change
between releases (each subpackage's docstring says what it owns):

- :func:`load_topology`: a YAML topology file -> a validated, frozen :class:`TopologyDef`;
- :class:`Client`: read features of many entities from Redis in one round trip;
- :func:`replay`, :func:`training_set`, :func:`verify`: backfills, point-in-time training
  sets and online/offline checks from Parquet snapshots, through the worker's own code;
- the exceptions, all under :class:`StreamfeatError`.

The worker runs as the ``streamfeat worker`` command.
"""

from __future__ import annotations

from streamfeat.client import Client, EntityFeatures
from streamfeat.errors import (
    ConfigError,
    DecodeError,
    SinkError,
    StateError,
    StreamfeatError,
    TopologyError,
)
from streamfeat.replay import ReplayResult, VerifyReport, replay, training_set, verify
from streamfeat.topology import TopologyDef, load_topology

__all__ = [
    "Client",
    "ConfigError",
    "DecodeError",
    "EntityFeatures",
    "ReplayResult",
    "SinkError",
    "StateError",
    "StreamfeatError",
    "TopologyDef",
    "TopologyError",
    "VerifyReport",
    "load_topology",
    "replay",
    "training_set",
    "verify",
]

__version__ = "0.1.0"
