"""The runtime: the worker that consumes Kafka and drives the operators, sinks and state."""

from __future__ import annotations

from streamfeat.runtime.config import WorkerConfig
from streamfeat.runtime.worker import Worker

__all__ = ["Worker", "WorkerConfig"]
