"""Window state on disk: one RocksDB per (topology, topic, partition), offsets with the state.

Owns :class:`PartitionStore`: the changed entities' state and the partition's next offset
go in one write batch, so state and offset never disagree after a crash.

Must not import: operators, pipeline, runtime, replay, Kafka or Redis clients.
"""

from __future__ import annotations

from streamfeat.state.store import Committed, PartitionStore

__all__ = ["Committed", "PartitionStore"]
