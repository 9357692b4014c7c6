"""Topologies: YAML files -> validated, frozen definitions (pure; no I/O but reading the file).

Owns what the user declared: ``load_topology`` validates a file and reports every problem
at once (file:line: reason; fix); ``compile_where`` turns a feature's ``where`` into a safe,
fast predicate (parsed, never eval'd); the reserved Redis field names.

Must not import any other streamfeat package but :mod:`streamfeat.errors`: it is the bottom
layer, and everything else is built from its definitions.
"""

from __future__ import annotations

from streamfeat.topology.definitions import (
    AggKind,
    FeatureDef,
    SchemaDef,
    SourceDef,
    TopologyDef,
    WindowDef,
    WindowKind,
    default_hop_ms,
    format_duration,
)
from streamfeat.topology.expressions import (
    ExpressionError,
    FieldUse,
    Predicate,
    canonical_where,
    compile_where,
    field_uses,
    fields_of,
)
from streamfeat.topology.loader import load_topology, load_topology_text, parse_duration

__all__ = [
    "AggKind",
    "ExpressionError",
    "FeatureDef",
    "FieldUse",
    "Predicate",
    "SchemaDef",
    "SourceDef",
    "TopologyDef",
    "WindowDef",
    "WindowKind",
    "canonical_where",
    "compile_where",
    "default_hop_ms",
    "field_uses",
    "fields_of",
    "format_duration",
    "load_topology",
    "load_topology_text",
    "parse_duration",
]
