"""Entries of the registry, and lookups by name that say what exists when a name is wrong.

A *feature entry* describes one Redis field (a feature in one window): the keys
``streamfeat registry`` has always printed (``field``, ``topology``, ``owner``, ``entity``,
``source``, ``agg``, ``input``, ``where``, ``window``, ``version``, ``file``, ``consumes``,
``path``, and with ``--redis`` ``partial_since_ms``) plus ``feature``, ``q``, ``k``,
``exact_up_to``, ``description``, ``tags`` and ``models`` (the models declared as reading
it: the topology's ``models`` and the feature's). A *topology entry* describes a topology
file (or, in the shared catalog, a deployed version of one:
:mod:`~streamfeat.registry.versions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from streamfeat.errors import ConfigError, TopologyError
from streamfeat.pipeline.rekey import consumed_topic, is_rekeyed, repartition_topic
from streamfeat.topology import TopologyDef, load_topology

__all__ = [
    "check_features",
    "feature_entries",
    "find_topology",
    "path_of",
    "select",
    "topology_entries",
]

_YAML = (".yaml", ".yml")


def path_of(topology: TopologyDef) -> str:
    """How the worker reaches the topology's events, in words (validate, registry)."""
    src = topology.source
    if is_rekeyed(topology):
        return (f"re-keyed by {src.key} through {repartition_topic(topology)}: "
                f"{src.topic} is not keyed by the entity")
    return f"aggregated from {src.topic} directly: its records are keyed by {src.key}"


def topology_entries(topologies: Iterable[TopologyDef]) -> list[dict[str, Any]]:
    """One entry per topology: name, file, owner, entity, description, source, path."""
    return [{
        "topology": t.name, "file": t.path, "owner": t.owner, "entity": t.entity,
        "description": t.description, "source": t.source.topic, "format": t.source.format,
        "consumes": consumed_topic(t), "path": path_of(t),
        "features": len(t.features), "fields": len(t.redis_fields()),
        "models": list(t.models),
    } for t in topologies]


def feature_entries(
    topologies: Iterable[TopologyDef],
    partial: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
) -> list[dict[str, Any]]:
    """One entry per Redis field of each topology, in declaration order. ``partial``:
    topology -> field -> {partition: event time its history starts at}, from
    :func:`~streamfeat.registry.marks.partial_marks` (``partial_since_ms`` is shown only
    when given)."""
    out: list[dict[str, Any]] = []
    for t in topologies:
        marks = None if partial is None else partial.get(t.name, {})
        for f in t.features:
            for w in f.windows:
                entry: dict[str, Any] = {
                    "field": f.redis_field(w), "feature": f.name, "topology": t.name,
                    "owner": t.owner, "entity": t.entity, "source": t.source.topic,
                    "agg": f.agg.value, "input": f.field, "where": f.where, "q": f.q, "k": f.k,
                    "exact_up_to": f.exact_up_to, "window": w.canonical(),
                    "version": f.state_hash(w), "file": f"{t.path}:{f.line}",
                    "consumes": consumed_topic(t), "path": path_of(t),
                    "description": f.description, "tags": list(f.tags),
                    "models": list(t.models_of(f)),
                }
                if marks is not None:
                    entry["partial_since_ms"] = dict(marks.get(f.redis_field(w), {}))
                out.append(entry)
    return out


def _where(topologies: Sequence[TopologyDef]) -> str:
    return ", ".join(t.path or t.name for t in topologies)


def _known(topologies: Sequence[TopologyDef]) -> str:
    names = list(dict.fromkeys(f.name for t in topologies for f in t.features))
    example = next((t.redis_fields()[0] for t in topologies if t.features), None)
    field = f" (or one field of a feature, e.g. {example})" if example else ""
    return ", ".join(names) + field


def select(entries: list[dict[str, Any]], name: str | None,
           topologies: Sequence[TopologyDef]) -> list[dict[str, Any]]:
    """The entries of feature or field ``name`` (all when ``None``); a name that matches
    none is a :class:`ConfigError` listing the features there are."""
    if name is None:
        return entries
    chosen = [e for e in entries if name in (e["feature"], e["field"])]
    if not chosen:
        raise ConfigError(f"no feature {name!r} in {_where(topologies)}; known: "
                          f"{_known(topologies)}")
    return chosen


def check_features(topology: TopologyDef, names: Iterable[str]) -> None:
    """Raise a :class:`ConfigError` listing the features there are when one of ``names`` is
    neither a feature nor a field of ``topology``."""
    known = {f.name for f in topology.features} | set(topology.redis_fields())
    missing = [n for n in names if n not in known]
    if missing:
        some = ", ".join(repr(n) for n in missing)
        raise ConfigError(f"no feature {some} in {_where([topology])}; known: "
                          f"{_known([topology])}")


def find_topology(ref: str, directory: str | Path) -> TopologyDef:
    """The topology ``ref`` names: a YAML file, or a bare topology name (its ``name:``)
    looked up among the ``*.yaml``/``*.yml`` files of ``directory`` (a file named after it
    first). A name found nowhere is a :class:`ConfigError` listing the names there are."""
    path = Path(ref)
    if path.suffix in _YAML or "/" in ref or path.is_file():
        return load_topology(path)
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(
            f"{ref!r} is no topology file, and there is no directory {str(root)!r} to look "
            "for a topology of that name in; give the YAML path, or --topologies-dir DIR "
            "(env STREAMFEAT_TOPOLOGIES)")
    files = sorted({*root.glob("*.yaml"), *root.glob("*.yml")},
                   key=lambda c: (c.stem != ref, c.name))
    names: list[str] = []
    broken: list[str] = []
    for candidate in files:
        try:
            topology = load_topology(candidate)
        except TopologyError:
            broken.append(candidate.name)
            continue
        if topology.name == ref:
            return topology
        names.append(topology.name)
    invalid = f"; not valid, so not searched: {', '.join(broken)}" if broken else ""
    raise ConfigError(
        f"no topology named {ref!r} in {root}/ (known: {', '.join(sorted(names)) or 'none'}"
        f"{invalid}); give its YAML path, or --topologies-dir DIR (env STREAMFEAT_TOPOLOGIES)")
