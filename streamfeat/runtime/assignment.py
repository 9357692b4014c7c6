"""The partitions this worker owns right now: :class:`Assignment`.

For each assigned source partition: one :class:`~streamfeat.pipeline.PartitionPipeline` per
topology reading that topic (its window state opened from the partition's RocksDB store) and,
with snapshots on, the partition's :class:`~streamfeat.snapshot.SnapshotWriter`. Opening a
partition answers the offset it must be read from: the lowest of the pipelines' stored next
offsets and the snapshot's (records consumed before a crash but not yet in a snapshot are
read again, for the snapshot only: each pipeline skips what its state already holds).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from streamfeat.pipeline import PartitionPipeline
from streamfeat.runtime.consumers import TP
from streamfeat.snapshot import SnapshotWriter
from streamfeat.state import PartitionStore
from streamfeat.topology import TopologyDef

__all__ = ["Assignment", "SnapshotFactory"]

log = logging.getLogger("streamfeat.worker")

SnapshotFactory = Callable[[str, int], SnapshotWriter]
"""Opens the snapshot writer of (topic, partition)."""


class Assignment:
    """Pipelines and snapshot writers of the assigned partitions."""

    def __init__(self, by_topic: Mapping[str, Sequence[TopologyDef]], state_dir: Path,
                 generation: int, snapshots: SnapshotFactory | None) -> None:
        self.by_topic = by_topic
        self.state_dir = state_dir
        self.generation = generation
        self._new_snapshot = snapshots
        self.pipelines: dict[TP, list[PartitionPipeline]] = {}
        self.snapshots: dict[TP, SnapshotWriter] = {}

    def __contains__(self, tp: object) -> bool:
        return tp in self.pipelines

    def __iter__(self) -> Iterator[TP]:
        return iter(self.pipelines)

    def labels(self) -> list[str]:
        return sorted(f"{t}[{p}]" for t, p in self.pipelines)

    def open(self, tp: TP) -> int:
        """Open a newly assigned partition; returns the offset to read it from."""
        topic, partition = tp
        pipelines = []
        for topology in self.by_topic[topic]:
            store = PartitionStore(self.state_dir, topology.name, topic, partition)
            pipelines.append(PartitionPipeline(topology, partition, generation=self.generation,
                                               store=store))
        self.pipelines[tp] = pipelines
        start = self.position(tp)
        if self._new_snapshot is not None:
            writer = self._new_snapshot(topic, partition)
            self.snapshots[tp] = writer
            start = min(start, writer.next_offset or 0)
        log.info("assigned %s[%d] from offset %d", topic, partition, start)
        return start

    def position(self, tp: TP) -> int:
        """The next offset every pipeline of the partition has processed up to."""
        return min((p.next_offset or 0) for p in self.pipelines.get(tp, []))

    def close(self, tp: TP) -> None:
        """Close a partition's stores and snapshot writer (state committed before)."""
        for pipeline in self.pipelines.pop(tp, []):
            pipeline.close()
        writer = self.snapshots.pop(tp, None)
        if writer is not None:
            writer.close()

    def close_all(self) -> None:
        """Close what is still open (after the consumer's own revocation, or a crash)."""
        for writer in list(self.snapshots.values()):
            writer.close()
        self.snapshots.clear()
        for pipelines in list(self.pipelines.values()):
            for pipeline in pipelines:
                pipeline.close()
        self.pipelines.clear()
