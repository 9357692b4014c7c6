"""Versions of a topology as the shared catalog records them, and what changed between two.

A *version document* is what the catalog keeps of one deployed version of a topology: its
topology entry (:func:`~streamfeat.registry.catalog.topology_entries`, plus the source's key
and time field, the settings, the defaults and the declared models) and one feature entry
per Redis field (:func:`~streamfeat.registry.catalog.feature_entries`, each with its
feature-window's definition hash, ``version``). Two digests name it:

- ``definition`` (:func:`definition_digest`): of what determines the values served: each
  field's definition hash, the source (topic, key, time field and unit, format, schema,
  keying), ``lateness``, ``max_future`` and the ``defaults``. Two versions with one
  definition serve the same values; a training set records it (:mod:`.lineage`);
- ``digest`` (:func:`document_digest`): of the whole document but where it was loaded from
  (file paths and lines differ between hosts and edits): a new owner, description, tag or
  declared model makes a new version too, with the same definition.

No I/O here.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from streamfeat.pipeline.evolution import FieldStatus, field_changes
from streamfeat.registry.catalog import feature_entries, topology_entries
from streamfeat.topology import TopologyDef

__all__ = [
    "change_summary",
    "definition_digest",
    "diff_versions",
    "document_digest",
    "field_versions",
    "version_document",
]

_DIGEST_CHARS = 12

#: Feature-entry keys that make its definition hash (a change here is a redefinition).
DEFINITION_KEYS = ("agg", "input", "where", "q", "k", "exact_up_to", "window")
#: Feature-entry keys for people and tools only.
METADATA_KEYS = ("feature", "description", "tags", "models")
#: Topology-entry keys compared between versions.
TOPOLOGY_KEYS = ("owner", "entity", "description", "source", "format", "key", "timestamp",
                 "timestamp_unit", "keyed_by_entity", "schema", "lateness_ms", "max_future_ms",
                 "ttl_ms", "freshness_ms", "defaults", "models")


def _hash(doc: Any) -> str:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]


def _schema(topology: TopologyDef) -> dict[str, Any] | None:
    schema = topology.source.schema
    if schema is None:
        return None
    return {"sha256": hashlib.sha256(schema.content).hexdigest()[:16], "message": schema.message,
            "framing": schema.framing, "schema_ids": list(schema.schema_ids)}


def definition_digest(topology: TopologyDef) -> str:
    """The digest of what determines ``topology``'s served values (module docstring)."""
    src = topology.source
    return _hash({
        "fields": {f.redis_field(w): f.state_hash(w) for f in topology.features
                   for w in f.windows},
        "source": {"topic": src.topic, "key": src.key, "format": src.format,
                   "timestamp": src.timestamp, "timestamp_unit": src.timestamp_unit,
                   "keyed_by_entity": src.keyed_by_entity, "schema": _schema(topology)},
        "lateness_ms": topology.lateness_ms, "max_future_ms": topology.max_future_ms,
        "defaults": topology.defaults,
    })


def version_document(topology: TopologyDef) -> dict[str, Any]:
    """``{"topology": entry, "features": [entry, ...]}``: what the catalog records of a
    version of ``topology`` (module docstring). JSON-ready."""
    src = topology.source
    about = topology_entries([topology])[0]
    about.update({
        "key": src.key, "timestamp": src.timestamp, "timestamp_unit": src.timestamp_unit,
        "keyed_by_entity": src.keyed_by_entity, "schema": _schema(topology),
        "lateness_ms": topology.lateness_ms, "max_future_ms": topology.max_future_ms,
        "ttl_ms": topology.ttl_ms, "freshness_ms": topology.freshness_ms,
        "defaults": dict(topology.defaults), "definition": definition_digest(topology),
    })
    return {"topology": about, "features": feature_entries([topology])}


def document_digest(document: Mapping[str, Any]) -> str:
    """The digest of a version document but its ``file`` keys (module docstring)."""
    doc = copy.deepcopy(dict(document))
    doc.get("topology", {}).pop("file", None)
    for entry in doc.get("features", []):
        entry.pop("file", None)
    return _hash(doc)


def field_versions(document: Mapping[str, Any]) -> dict[str, str]:
    """Redis field -> definition hash, in declaration order."""
    return {e["field"]: e["version"] for e in document["features"]}


def diff_versions(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What changed from the version document ``before`` to ``after``:

    ``fields``: one row per feature-window of either, by the worker's rule
    (:func:`~streamfeat.pipeline.evolution.field_changes`: unchanged, redefined, renamed
    with ``was``, added, removed), with both definition hashes and ``changed``: key ->
    ``[before, after]`` of the entry keys that differ (what redefined it, or its new
    description, tags or models); ``settings``: key -> ``[before, after]`` of the topology
    settings that differ (owner, source, models, defaults, ...)."""
    old = {e["field"]: e for e in before["features"]}
    new = {e["field"]: e for e in after["features"]}
    rows: list[dict[str, Any]] = []
    for change in field_changes(field_versions(before), field_versions(after)):
        a = old.get(change.was or change.name)  # None for an added field
        b = new.get(change.name)  # None for a removed one
        changed = {} if a is None or b is None else {
            k: [a.get(k), b.get(k)] for k in (*DEFINITION_KEYS, *METADATA_KEYS)
            if a.get(k) != b.get(k)}
        rows.append({"field": change.name, "status": change.status.value, "was": change.was,
                     "topology": (b or a or {}).get("topology"),
                     "before": None if a is None else a["version"],
                     "after": None if b is None else b["version"], "changed": changed})
    ta, tb = before["topology"], after["topology"]
    return {"fields": rows, "settings": {k: [ta.get(k), tb.get(k)] for k in TOPOLOGY_KEYS
                                         if ta.get(k) != tb.get(k)}}


def change_summary(diff: Mapping[str, Any]) -> str:
    """One line for a :func:`diff_versions` result: ``1 added, 1 redefined; owner, models
    changed`` (``no change`` when nothing did)."""
    counts: dict[str, int] = {}
    described = 0
    for row in diff["fields"]:
        if row["status"] != FieldStatus.UNCHANGED.value:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        elif row["changed"]:
            described += 1
    parts = [", ".join(f"{n} {status}" for status, n in counts.items())] if counts else []
    settings = list(diff["settings"])
    if described:
        settings.append(f"metadata of {described} field{'s' if described > 1 else ''}")
    if settings:
        parts.append(", ".join(settings) + " changed")
    return "; ".join(parts) or "no change"
