"""Topologies: YAML files -> validated, frozen definitions (pure, no I/O beyond reading the file)."""

from __future__ import annotations

from streamfeat.topology.definitions import (
    AggKind,
    FeatureDef,
    SourceDef,
    TopologyDef,
    WindowDef,
    WindowKind,
    default_hop_ms,
    format_duration,
)

__all__ = [
    "AggKind",
    "FeatureDef",
    "SourceDef",
    "TopologyDef",
    "WindowDef",
    "WindowKind",
    "default_hop_ms",
    "format_duration",
]
