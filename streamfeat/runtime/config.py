"""``WorkerConfig``: what one ``streamfeat worker`` process is told to do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamfeat.config import DEFAULT_BATCH_SECONDS, DEFAULT_STATE_CACHE_MB
from streamfeat.topology import TopologyDef

__all__ = ["WorkerConfig"]


@dataclass
class WorkerConfig:
    topologies: Sequence[TopologyDef]
    kafka: str
    redis: str
    state_dir: Path
    snapshot_dir: str | Path | None = None  # a path or an object-store URL (s3://bucket/prefix)
    metrics_port: int | None = None
    stop_at_end: bool = False
    group_id: str | None = None
    batch_size: int = 250_000  # records per poll at most (streamfeat.runtime.batching)
    batch_seconds: float = DEFAULT_BATCH_SECONDS  # while behind, batches grow toward this
    poll_timeout_s: float = 0.005  # the longest a poll waits when no record is ready
    commit_every_s: float = 5.0
    generation: int = 0
    snapshot_every_s: float = 60.0
    snapshot_max_rows: int = 100_000  # per partition: bounds the memory of the buffer
    kafka_config: dict[str, Any] = field(default_factory=dict)  # --kafka-config's properties
    kafka_config_file: str | None = None  # where they came from (for messages)
    runtime: str = "faust"  # one of streamfeat.runtime.consumers.RUNTIMES
    unhealthy_after_s: float = 10.0  # a dependency failing this long: /health unhealthy
    instance_id: str | None = None  # Kafka static group membership (group.instance.id)
    checkpoint_dir: str | None = None  # durable state: a path or an object-store URL
    monitor: bool = True  # sketch the values written, per interval (--no-monitor: off)
    monitor_interval_s: float = 60.0  # --monitor-interval
    recompute_max_rate: float | None = None  # history records/s per partition, at most
    state_cache_mb: float | None = DEFAULT_STATE_CACHE_MB  # window state held in memory;
    # None or 0: every entity held (streamfeat.pipeline.cache)

    @property
    def group(self) -> str:
        """The consumer group: ``--group``, else one named after the topologies."""
        names = "+".join(sorted(t.name for t in self.topologies))
        return self.group_id or f"streamfeat.{names}"
