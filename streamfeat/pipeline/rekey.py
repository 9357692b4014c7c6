"""Which stream a topology is aggregated from: its source topic, or its repartition topic.

A topology whose source is keyed by its entity (``source.keyed_by_entity``, the default)
is aggregated straight from the source topic's partitions. One that is not is re-keyed
first: the worker's first stage writes each well-formed record to
``<topology>.repartition`` keyed by the entity id (the source partition and offset in
headers), so every event of an entity lands in one partition, and the pipeline aggregates
that topic (contract section 3). Snapshots record what the pipeline consumed, so replays
read the repartition topic's snapshots for such a topology.
"""

from __future__ import annotations

from streamfeat.topology import TopologyDef

__all__ = ["consumed_topic", "is_rekeyed", "repartition_topic"]


def is_rekeyed(topology: TopologyDef) -> bool:
    """Whether the topology's events go through its repartition topic."""
    return not topology.source.keyed_by_entity


def repartition_topic(topology: TopologyDef) -> str:
    """``<topology>.repartition``: the topology's events keyed by entity id."""
    return f"{topology.name}.repartition"


def consumed_topic(topology: TopologyDef) -> str:
    """The topic whose partitions the topology's pipelines read (and snapshots record)."""
    return repartition_topic(topology) if is_rekeyed(topology) else topology.source.topic
