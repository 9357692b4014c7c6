"""The runtime: the worker that consumes Kafka and drives the operators, sinks and state."""

from __future__ import annotations

from streamfeat.runtime.worker import Worker, WorkerConfig

__all__ = ["Worker", "WorkerConfig"]
