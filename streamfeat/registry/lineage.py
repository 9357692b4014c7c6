"""Lineage of training sets: what a Parquet file written by ``streamfeat training-set`` was
computed from, kept in the file itself, and how it relates to the deployed versions.

The file's schema metadata holds, under the key ``streamfeat`` (:data:`LINEAGE_KEY`), one
JSON document (:func:`training_lineage`): the topology (name, owner, entity, source topic,
the topic its snapshots are of), its version (``definition`` and ``digest``, as the shared
catalog names versions: :mod:`~streamfeat.registry.versions`), each column's definition hash,
the mode (event time or as served), the snapshots read (location, the dates asked and those
found, per partition the first and last offset of the files read, the span of their Kafka
timestamps) and the spine (rows, columns, the span of its times). With the same snapshots
and that definition, ``streamfeat training-set`` rebuilds the same rows; ``streamfeat
registry --lineage FILE`` prints it and, given the shared catalog, the deployed versions
that served those very definitions (:func:`served_by`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streamfeat.errors import ConfigError
from streamfeat.pipeline.evolution import FieldStatus, field_changes
from streamfeat.pipeline.rekey import consumed_topic
from streamfeat.redact import redact
from streamfeat.registry.shared import TopologyHistory
from streamfeat.registry.versions import (
    definition_digest,
    document_digest,
    field_versions,
    version_document,
)
from streamfeat.snapshot.reader import SnapshotFile
from streamfeat.topology import TopologyDef

__all__ = ["LINEAGE_KEY", "read_lineage", "served_by", "training_lineage", "with_lineage"]

LINEAGE_KEY = b"streamfeat"
"""The schema metadata key of a training set's lineage (JSON)."""


def _streamfeat_version() -> str:
    try:
        return package_version("streamfeat")
    except PackageNotFoundError:
        return "unknown"


def training_lineage(
    topology: TopologyDef, fields: Sequence[str], *, snapshot_dir: str,
    files: Mapping[int, Sequence[SnapshotFile]], kafka_ts: tuple[int, int] | None,
    date_from: str | None, date_to: str | None, as_served: bool, spine_rows: int,
    entity_column: str, timestamp_column: str, spine_times: Sequence[int | None],
) -> dict[str, Any]:
    """The lineage document of a training set of ``fields`` of ``topology``, computed from
    the snapshot ``files`` (partition -> files read, in offset order) whose records' Kafka
    timestamps span ``kafka_ts``, for a spine of ``spine_rows`` rows (module docstring)."""
    hashes = {f.redis_field(w): f.state_hash(w) for f in topology.features for w in f.windows}
    read = [f for fs in files.values() for f in fs]
    dates = sorted({f.date for f in read})
    times = [t for t in spine_times if t is not None]
    return {
        "kind": "training-set",
        "streamfeat": _streamfeat_version(),
        "created_ms": int(time.time() * 1000),
        "topology": topology.name,
        "owner": topology.owner,
        "entity": topology.entity,
        "source": topology.source.topic,
        "definition": definition_digest(topology),
        "digest": document_digest(version_document(topology)),
        "fields": {f: hashes[f] for f in fields},
        "mode": "as_served" if as_served else "event_time",
        "snapshots": {
            "location": redact(snapshot_dir),
            "topic": consumed_topic(topology),
            "from": date_from, "to": date_to,
            "first_date": dates[0] if dates else None,
            "last_date": dates[-1] if dates else None,
            "files": len(read),
            "partitions": {str(p): {"first_offset": fs[0].first_offset,
                                    "last_offset": fs[-1].last_offset, "files": len(fs)}
                           for p, fs in sorted(files.items()) if fs},
            "kafka_ts": None if kafka_ts is None else {"first_ms": kafka_ts[0],
                                                       "last_ms": kafka_ts[1]},
        },
        "spine": {"rows": spine_rows, "entity_column": entity_column,
                  "timestamp_column": timestamp_column,
                  "first_ms": min(times) if times else None,
                  "last_ms": max(times) if times else None},
    }


def with_lineage(table: pa.Table, lineage: Mapping[str, Any]) -> pa.Table:
    """``table`` with ``lineage`` in its schema metadata (its other metadata kept)."""
    meta = dict(table.schema.metadata or {})
    meta[LINEAGE_KEY] = json.dumps(lineage).encode()  # the columns in their order
    return table.replace_schema_metadata(meta)


def read_lineage(path: str | Path) -> dict[str, Any]:
    """The lineage document of the Parquet file at ``path`` (its footer only is read); a
    :class:`ConfigError` when it cannot be read or holds none."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as e:
        raise ConfigError(f"cannot read the Parquet file {str(path)!r}: {e}") from None
    raw = meta.get(LINEAGE_KEY)
    if raw is None:
        raise ConfigError(f"{path} holds no streamfeat lineage (schema metadata key "
                          "'streamfeat'): it was not written by streamfeat training-set, or "
                          "by one older than the registry (issue #17); write it again")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{path}: the streamfeat lineage in its metadata is not JSON") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the streamfeat lineage in its metadata is not an object")
    return doc


def served_by(lineage: Mapping[str, Any], history: TopologyHistory) -> dict[str, Any]:
    """How a training set relates to its topology's deployed versions: ``versions``, the
    numbers of those that serve every one of its columns with its definition (its values
    are what they served); ``current``: the version started last, and ``fields``: how each
    column stands in it (unchanged, redefined, renamed, removed)."""
    wanted: dict[str, str] = dict(lineage.get("fields", {}))
    matching = [v.version for v in history.versions
                if all(field_versions(v.document).get(f) == h for f, h in wanted.items())]
    current = field_versions(history.latest.document)
    status: dict[str, str] = {}
    for change in field_changes(wanted, current):
        if change.status is FieldStatus.REMOVED:
            status[change.name] = change.status.value
        elif change.status is FieldStatus.RENAMED and change.was is not None:
            status[change.was] = f"renamed to {change.name}"
        elif change.name in wanted:
            status[change.name] = change.status.value
    return {"versions": matching, "current": history.latest.version,
            "fields": {f: status.get(f, "removed") for f in wanted}}
