"""The partitions this worker owns right now: :class:`Assignment`.

Each consumed topic has a plan (:func:`plan_stages`): a source topic feeds the pipelines of
the topologies keyed by its records' key and the first stage
(:class:`~streamfeat.runtime.repartition.Repartitioner`) of those that are not; a topology's
``<name>.repartition`` topic feeds that topology's pipeline. For each assigned partition
the assignment holds those stages, each with its state opened from the partition's
RocksDB store, and, with snapshots on, the partition's
:class:`~streamfeat.snapshot.SnapshotWriter`. Opening a partition answers the offset it
must be read from: the lowest of the stages' stored next offsets and the snapshot's
(records consumed before a crash but not yet in a snapshot are read again, for the
snapshot only: each stage skips what its state already holds).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamfeat.pipeline import PartitionPipeline
from streamfeat.pipeline.cache import StateBudget
from streamfeat.pipeline.rekey import consumed_topic, is_rekeyed
from streamfeat.runtime.consumers import TP
from streamfeat.runtime.repartition import Repartitioner, RepartitionOutput
from streamfeat.snapshot import SnapshotWriter
from streamfeat.state import PartitionStore
from streamfeat.state.durable import Checkpoints, DurableStore
from streamfeat.topology import TopologyDef

__all__ = ["Assignment", "SnapshotFactory", "TopicPlan", "plan_stages"]

log = logging.getLogger("streamfeat.worker")

SnapshotFactory = Callable[[str, int], SnapshotWriter]
"""Opens the snapshot writer of (topic, partition)."""


@dataclass
class TopicPlan:
    """What runs on each partition of one consumed topic."""

    pipelines: list[TopologyDef] = field(default_factory=list)
    rekeyed: list[TopologyDef] = field(default_factory=list)  # first stages


def plan_stages(topologies: Sequence[TopologyDef]) -> dict[str, TopicPlan]:
    """Consumed topic -> the stages its partitions run (source and repartition topics)."""
    plans: dict[str, TopicPlan] = defaultdict(TopicPlan)
    for topology in topologies:
        plans[consumed_topic(topology)].pipelines.append(topology)
        if is_rekeyed(topology):
            plans[topology.source.topic].rekeyed.append(topology)
    return dict(plans)


class Assignment:
    """Stages and snapshot writers of the assigned partitions."""

    def __init__(self, plans: dict[str, TopicPlan], state_dir: Path, generation: int,
                 snapshots: SnapshotFactory | None, rekey: RepartitionOutput | None,
                 checkpoints: Checkpoints | None = None,
                 budget: StateBudget | None = None) -> None:
        self.plans = plans
        self.budget = budget
        """Memory for the window state of every partition held (``--state-cache-mb``)."""
        self.state_dir = state_dir
        self.checkpoints = checkpoints
        self.generation = generation
        self._new_snapshot = snapshots
        self._rekey = rekey
        self.pipelines: dict[TP, list[PartitionPipeline]] = {}
        self.rekeyers: dict[TP, list[Repartitioner]] = {}
        self.snapshots: dict[TP, SnapshotWriter] = {}

    def __contains__(self, tp: object) -> bool:
        return tp in self.pipelines

    def __iter__(self) -> Iterator[TP]:
        return iter(self.pipelines)

    def state_pressed(self) -> bool:
        """Whether a partition holds well over its share of the state budget."""
        return any(p.cache is not None and p.cache.pressed()
                   for stages in self.pipelines.values() for p in stages)

    def record_room(self) -> int | None:
        """Records a batch may bring within the state budget, over every partition held
        (each its pipelines' least; ``None``: no bound known)."""
        total, bounded = 0, False
        for stages in self.pipelines.values():
            rooms = [r for r in (p.record_room() for p in stages) if r is not None]
            if rooms:
                total += min(rooms)
                bounded = True
        return total if bounded else None

    def labels(self) -> list[str]:
        return sorted(f"{t}[{p}]" for t, p in self.pipelines)

    def open(self, tp: TP) -> int:
        """Open a newly assigned partition; returns the offset to read it from."""
        topic, partition = tp
        plan = self.plans[topic]
        self.pipelines[tp] = [
            PartitionPipeline(topology, partition, generation=self.generation,
                              store=self._store(topology.name, topic, partition),
                              budget=self.budget)
            for topology in plan.pipelines]
        for pipeline in self.pipelines[tp]:
            pipeline.split_batches = True  # the worker hands the rest again (Worker._carry)
        rekeyers = []
        for topology in plan.rekeyed:
            if self._rekey is None:
                raise RuntimeError("a re-keyed topology needs a repartition output")
            store = self._store(f"{topology.name}.rekey", topic, partition)
            rekeyers.append(Repartitioner(topology, partition, self._rekey, store))
        self.rekeyers[tp] = rekeyers
        start = self.position(tp)
        if self._new_snapshot is not None:
            writer = self._new_snapshot(topic, partition)
            self.snapshots[tp] = writer
            start = min(start, writer.next_offset or 0)
        log.info("assigned %s[%d] from offset %d", topic, partition, start)
        return start

    def _store(self, name: str, topic: str, partition: int) -> PartitionStore:
        """The partition's local state; with checkpoints, made durable at every commit and
        restored from them when they are ahead (another host had the partition)."""
        if self.checkpoints is None:
            return PartitionStore(self.state_dir, name, topic, partition)
        return DurableStore(self.state_dir, name, topic, partition,
                            checkpoints=self.checkpoints)

    def durable_stores(self) -> Iterator[tuple[TP, str, DurableStore]]:
        """The durable stores of the assigned partitions, with their topologies' names (for
        the metrics)."""
        for tp in self.pipelines:
            for stage in self.stages(tp):
                if isinstance(stage.store, DurableStore):
                    yield tp, stage.topology.name, stage.store

    def stages(self, tp: TP) -> list[PartitionPipeline | Repartitioner]:
        return [*self.pipelines.get(tp, []), *self.rekeyers.get(tp, [])]

    def position(self, tp: TP) -> int:
        """The next offset every stage of the partition has processed up to."""
        return min((s.next_offset or 0) for s in self.stages(tp)) if tp in self else 0

    def close(self, tp: TP) -> None:
        """Close a partition's stores and snapshot writer (state committed before)."""
        for stage in self.stages(tp):
            stage.close()
        self.pipelines.pop(tp, None)
        self.rekeyers.pop(tp, None)
        writer = self.snapshots.pop(tp, None)
        if writer is not None:
            writer.close()

    def close_all(self) -> None:
        """Close what is still open (after the consumer's own revocation, or a crash)."""
        for writer in list(self.snapshots.values()):
            writer.close()
        self.snapshots.clear()
        for tp in list(self.pipelines):
            for stage in self.stages(tp):
                stage.close()
        self.pipelines.clear()
        self.rekeyers.clear()
