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

import typing

from streamfeat.errors import (
    ConfigError,
    DecodeError,
    SinkError,
    StateError,
    StreamfeatError,
    TopologyError,
)
from streamfeat.lazy import exports as _exports

if typing.TYPE_CHECKING:
    from streamfeat.client import Client, EntityFeatures
    from streamfeat.replay import ReplayResult, VerifyReport, replay, training_set, verify
    from streamfeat.topology import TopologyDef, load_topology

# Imported on first use: a model server importing the client does not import the pipeline,
# the operators or Arrow (tests/test_public_api.py: what ``import streamfeat.client`` loads).
__getattr__, __dir__ = _exports(__name__, {
    "Client": "streamfeat.client",
    "EntityFeatures": "streamfeat.client",
    "ReplayResult": "streamfeat.replay.backfill",
    "TopologyDef": "streamfeat.topology",
    "VerifyReport": "streamfeat.replay.verification",
    "load_topology": "streamfeat.topology",
    "replay": "streamfeat.replay.backfill",
    "training_set": "streamfeat.replay.training",
    "verify": "streamfeat.replay.verification",
})

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
