"""The runtime: ``streamfeat worker``, consuming Kafka and driving the pipelines.

Owns the worker (:class:`Worker`, a loop over small objects: see
:mod:`streamfeat.runtime.worker`), its consumers (:mod:`streamfeat.runtime.consumers`, the
only place Faust lives), the dead-letter queue, the checkpoint, health and fencing.

Must not import: :mod:`streamfeat.replay` or the CLI. Internal: the public way to run a
worker is the ``streamfeat worker`` command.
"""

from __future__ import annotations

from streamfeat.runtime.config import WorkerConfig
from streamfeat.runtime.worker import Worker

__all__ = ["Worker", "WorkerConfig"]
