"""Questions to the registry: the deployed topologies' entries, filters, and which models
read which feature-windows (declared in the topologies, observed by the readers).

Pure functions over entries (:mod:`~streamfeat.registry.catalog`), recorded versions
(:mod:`~streamfeat.registry.shared`) and model reads (:mod:`~streamfeat.registry.usage`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamfeat.errors import ConfigError
from streamfeat.registry.shared import Deployment, SharedCatalog
from streamfeat.registry.usage import ModelRead

__all__ = [
    "Filters",
    "deployed_entries",
    "filter_entries",
    "model_rows",
    "models_by_field",
    "models_reading",
]


def deployed_entries(latest: Mapping[str, tuple[Deployment, int]]
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The topology and feature entries of the version of each topology started last
    (:meth:`SharedCatalog.latest`); the topology entries also say which version that is
    (``version``, ``digest``, ``definition``, ``first_deployed_ms``, ``last_deployed_ms``,
    ``starts``, ``generation``, ``host``) and how many there are (``versions``)."""
    about: list[dict[str, Any]] = []
    features: list[dict[str, Any]] = []
    for name in sorted(latest):
        v, count = latest[name]
        entry = dict(v.document["topology"])
        entry.update({"version": v.version, "digest": v.digest, "definition": v.definition,
                      "first_deployed_ms": v.first_ms, "last_deployed_ms": v.last_ms,
                      "starts": v.starts, "generation": v.generation, "host": v.host,
                      "versions": count})
        about.append(entry)
        features += [dict(e) for e in v.document["features"]]
    return about, features


def model_rows(features: Sequence[Mapping[str, Any]], usage: Iterable[ModelRead]
               ) -> list[dict[str, Any]]:
    """One row per (model, topology, field) declared in ``features``' ``models`` or seen in
    ``usage``: ``model``, ``topology``, ``field``, ``feature`` (``None`` for a field no
    entry has: read but not in the version shown), ``declared``, ``reads`` and
    ``last_seen_ms`` (``0`` and ``None`` when never seen)."""
    feature_of = {(e["topology"], e["field"]): e["feature"] for e in features}
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in features:
        for model in e.get("models", []):
            rows[(model, e["topology"], e["field"])] = {
                "model": model, "topology": e["topology"], "field": e["field"],
                "feature": e["feature"], "declared": True, "reads": 0, "last_seen_ms": None}
    for r in usage:
        row = rows.setdefault((r.model, r.topology, r.field), {
            "model": r.model, "topology": r.topology, "field": r.field,
            "feature": feature_of.get((r.topology, r.field)), "declared": False})
        row["reads"], row["last_seen_ms"] = r.reads, r.last_seen_ms
    return [rows[k] for k in sorted(rows)]


def models_by_field(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """topology -> field -> the models reading it (declared or observed), sorted."""
    out: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        names = out.setdefault(row["topology"], {}).setdefault(row["field"], [])
        if row["model"] not in names:
            names.append(row["model"])
    for fields in out.values():
        for names in fields.values():
            names.sort()
    return out


def models_reading(catalog: SharedCatalog, topologies: Iterable[str]
                   ) -> dict[str, dict[str, list[str]]]:
    """topology -> field -> the models reading it: declared by the version of the topology
    started last, or seen reading it (``streamfeat plan``'s models)."""
    names = list(dict.fromkeys(topologies))
    _about, features = deployed_entries(catalog.latest(names))
    return models_by_field(model_rows(features, catalog.usage(names)))


@dataclass(frozen=True)
class Filters:
    """What ``streamfeat registry`` was asked to show (``None``: any)."""

    owner: str | None = None
    entity: str | None = None
    source: str | None = None
    tag: str | None = None
    model: str | None = None
    feature: str | None = None
    """A feature or field name, or ``TOPOLOGY:NAME``."""

    def describe(self) -> str:
        return " ".join(f"--{k} {v}" for k, v in vars(self).items() if v is not None)


def _known(values: Iterable[Any]) -> str:
    names = sorted({str(v) for v in values if v})
    return ", ".join(names) if names else "none"


def _feature_matches(entry: Mapping[str, Any], ref: str) -> bool:
    topology, _, name = ref.rpartition(":")
    if topology and entry["topology"] != topology:
        return False
    return name in (entry["feature"], entry["field"])


def filter_entries(features: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]],
                   filters: Filters, where: str
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The feature entries and model rows that ``filters`` select. A filter that matches
    nothing at all is a :class:`ConfigError` listing what there is (``where``: what was
    searched, for the message); filters that each match but not together select nothing,
    without an error."""
    checks: list[tuple[str | None, Any, str, str]] = [
        (filters.owner, lambda e: e["owner"] == filters.owner, "owner", "owners"),
        (filters.entity, lambda e: e["entity"] == filters.entity, "entity", "entities"),
        (filters.source, lambda e: filters.source in (e["source"], e["consumes"]),
         "source topic", "source topics"),
        (filters.tag, lambda e: filters.tag in e["tags"], "tag", "tags"),
    ]
    known_values = {
        "owner": (e["owner"] for e in features), "entity": (e["entity"] for e in features),
        "source topic": (e["source"] for e in features),
        "tag": (t for e in features for t in e["tags"]),
    }
    chosen = list(features)
    for value, test, what, plural in checks:
        if value is None:
            continue
        if not any(test(e) for e in features):
            raise ConfigError(f"no feature with {what} {value!r} in {where}; {plural}: "
                              f"{_known(known_values[what])}")
        chosen = [e for e in chosen if test(e)]
    if filters.feature is not None:
        if not any(_feature_matches(e, filters.feature) for e in features):
            example = f" (or one field of a feature, e.g. {features[0]['field']}; or " \
                      "TOPOLOGY:NAME)" if features else ""
            raise ConfigError(
                f"no feature {filters.feature!r} in {where}; known: "
                f"{_known(e['feature'] for e in features)}{example}")
        chosen = [e for e in chosen if _feature_matches(e, filters.feature)]
    if filters.model is not None:
        if not any(r["model"] == filters.model for r in rows):
            raise ConfigError(f"no model {filters.model!r} is declared by a topology or was "
                              f"seen reading one in {where}; models: "
                              f"{_known(r['model'] for r in rows)}")
        read = {(r["topology"], r["field"]) for r in rows if r["model"] == filters.model}
        chosen = [e for e in chosen if (e["topology"], e["field"]) in read]
    keep = {(e["topology"], e["field"]) for e in chosen}
    shown = [r for r in rows if (r["topology"], r["field"]) in keep
             and (filters.model is None or r["model"] == filters.model)]
    if filters.model is not None and filters == Filters(model=filters.model):
        known = {(e["topology"], e["field"]) for e in features}  # read, not in a version shown
        shown += [r for r in rows if r["model"] == filters.model
                  and (r["topology"], r["field"]) not in known]
    return chosen, shown
