"""Where to find Kafka and Redis: flags, then environment, then defaults (contract section 7)."""

from __future__ import annotations

import os

__all__ = ["DEFAULT_BATCH_SECONDS", "DEFAULT_KAFKA", "DEFAULT_REDIS", "DEFAULT_STATE_CACHE_MB",
           "RUNTIMES", "resolve_kafka", "resolve_redis"]

DEFAULT_KAFKA = "localhost:9092"
DEFAULT_REDIS = "redis://localhost:6379/0"
RUNTIMES = ("faust", "kafka")
"""The runtimes ``streamfeat worker --runtime`` accepts; the first is the default."""
DEFAULT_STATE_CACHE_MB = 128
"""The worker's default ``--state-cache-mb`` (``auto`` sizes it from the container's memory
limit instead: :mod:`streamfeat.runtime.sizing`), and ``WorkerConfig``'s: the
window state one worker process holds in memory, shared by its partitions
(:mod:`streamfeat.pipeline.cache`). The budget counts the state's own bytes; what it costs
in resident memory (array slack, the entity index, Python objects) comes on top: with 128
MiB a million-user worker stays within 1 GiB (benchmarks/RESULTS.md, "State larger than
memory" and "A million users within 1 GiB")."""

DEFAULT_BATCH_SECONDS = 4.0
"""The worker's default ``--batch-seconds``: while it is behind, its batches grow toward this
much work each (:mod:`streamfeat.runtime.batching`). 4 s, not 2 (issue #18, sixteenth
session): a rich topology's batch of 250,000 records takes about 3 s, and with 2 s the
sizer cut the batches that followed to about 170,000, so a catch-up took more batches,
each paying its entities' values, windows and writes again; the rich and orders
topologies caught up 6-25 % faster at 4 s (benchmarks/RESULTS.md). A worker that keeps
up is not concerned: its polls bring what is ready."""


def resolve_kafka(flag: str | None = None, from_file: str | None = None) -> str:
    """Bootstrap servers: ``--kafka``, then ``STREAMFEAT_KAFKA``, then ``bootstrap.servers``
    of the ``--kafka-config`` file (``from_file``), then ``localhost:9092``."""
    return flag or os.environ.get("STREAMFEAT_KAFKA") or from_file or DEFAULT_KAFKA


def resolve_redis(flag: str | None = None) -> str:
    """Redis URL: ``--redis``, then ``STREAMFEAT_REDIS``, then ``redis://localhost:6379/0``."""
    return flag or os.environ.get("STREAMFEAT_REDIS") or DEFAULT_REDIS
