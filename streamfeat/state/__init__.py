"""Window state on disk: one RocksDB per (topology, topic, partition), offsets with the state."""

from __future__ import annotations

from streamfeat.state.store import Checkpoint, PartitionStore

__all__ = ["Checkpoint", "PartitionStore"]
