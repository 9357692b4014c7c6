"""The per-partition pipeline that every engine runs: raw records -> values and dead letters.

Owns: which events a partition accepts (decoding with :mod:`streamfeat.records`, then the
late rule), the operators (:mod:`streamfeat.operators`), the values of touched and expired
entities as :class:`~streamfeat.sinks.UpdateBatch`, and the state it keeps in a
:class:`~streamfeat.state.PartitionStore`. The worker (:mod:`streamfeat.runtime`) and the
offline commands (:mod:`streamfeat.replay`: replay, training sets, verify) drive this very
code, which is why a replay equals the stream: :class:`PartitionPipeline` for the values,
:class:`Acceptance` for code that needs only the accepted events.

Must not import: Kafka or Faust clients, :mod:`streamfeat.runtime`, :mod:`streamfeat.replay`,
the CLI. It performs no network I/O.
"""

from __future__ import annotations

from streamfeat.pipeline.acceptance import Acceptance, AcceptedEvents, DeadLetter, Verdict
from streamfeat.pipeline.evolution import (
    DefinitionChange,
    FieldChange,
    FieldStatus,
    Recomputation,
    compare,
)
from streamfeat.pipeline.partition import BatchOutcome, PartitionPipeline

__all__ = [
    "Acceptance",
    "AcceptedEvents",
    "BatchOutcome",
    "DeadLetter",
    "DefinitionChange",
    "FieldChange",
    "FieldStatus",
    "PartitionPipeline",
    "Recomputation",
    "Verdict",
    "compare",
]
