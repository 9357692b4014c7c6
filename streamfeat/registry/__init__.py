"""The feature registry: what the topologies declare, as people and tools look it up.

Owns ``streamfeat registry`` (:mod:`~streamfeat.registry.catalog`: one entry per Redis
field with its owner, entity, source, lineage and version; :mod:`~streamfeat.registry.render`:
the table and the JSON document), the lookups of a feature or a topology by name with the
errors that list what exists, and the partial-history marks a definition change left in
Redis (:mod:`~streamfeat.registry.marks`).

May import: topology, pipeline (how a topology reaches its events), sinks (the marks),
errors, redact. Must not import the runtime, the offline commands or the CLI.
"""

from __future__ import annotations

from streamfeat.registry.catalog import (
    check_features,
    feature_entries,
    find_topology,
    path_of,
    select,
    topology_entries,
)
from streamfeat.registry.marks import partial_marks
from streamfeat.registry.render import render_json, render_table

__all__ = [
    "check_features",
    "feature_entries",
    "find_topology",
    "partial_marks",
    "path_of",
    "render_json",
    "render_table",
    "select",
    "topology_entries",
]
