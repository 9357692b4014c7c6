"""Replay snapshots through the worker's operators: backfills, training sets, verification."""

from streamfeat.replay.replay import PartitionStats, ReplayResult, replay

__all__ = ["PartitionStats", "ReplayResult", "replay"]
