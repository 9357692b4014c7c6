"""The topologies a server answers for, by name, and what a request may ask of each."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from streamfeat.client import ReadPlan, plan_read, resolve_fields
from streamfeat.errors import ConfigError
from streamfeat.topology import TopologyDef, load_topology

__all__ = ["Catalog", "UnknownTopology"]


class UnknownTopology(LookupError):
    """A request named a topology this server does not serve; the message names those it does."""


class Catalog:
    """Topologies by ``name``, each with its Redis fields and defaults (from the YAML)."""

    def __init__(self, topologies: Iterable[TopologyDef]) -> None:
        self._by_name: dict[str, TopologyDef] = {}
        for topo in topologies:
            other = self._by_name.get(topo.name)
            if other is not None:
                raise ConfigError(
                    f"two topologies are named {topo.name!r} ({other.path or '?'} and "
                    f"{topo.path or '?'}); a server answers for each name once: serve them "
                    "from two servers or rename one")
            self._by_name[topo.name] = topo

    @classmethod
    def load(cls, paths: Sequence[str]) -> Catalog:
        """Every topology file loaded and validated (a bad one: its file:line errors)."""
        return cls(load_topology(p) for p in paths)

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[TopologyDef]:
        return iter([self._by_name[name] for name in self.names])

    def get(self, name: str) -> TopologyDef:
        """The topology called ``name``; :class:`UnknownTopology` naming the known ones."""
        topo = self._by_name.get(name)
        if topo is None:
            raise UnknownTopology(
                f"no topology {name!r} is served here; topologies: {', '.join(self.names)}")
        return topo

    @staticmethod
    def plan(topology: TopologyDef, entity_ids: Sequence[str | int],
             features: Sequence[str] | None) -> ReadPlan:
        """The client's read of these entities and features (:func:`plan_read`); a feature
        the topology lacks raises :class:`ConfigError` naming its features."""
        return plan_read(topology, entity_ids, features)

    @staticmethod
    def describe(topology: TopologyDef) -> dict[str, Any]:
        """What ``GET /topologies`` shows of one topology."""
        return {
            "name": topology.name,
            "entity": topology.entity,
            "owner": topology.owner,
            "description": topology.description,
            "features": {f.name: [f.redis_field(w) for w in f.windows]
                         for f in topology.features},
            "fields": resolve_fields(topology, None),
            "defaults": dict(topology.defaults),
        }
