"""The per-partition pipeline that every engine runs: raw records -> values and dead letters.

Owns: decoding a batch (:mod:`streamfeat.records`), the late decision, the operators
(:mod:`streamfeat.operators`), the values of touched and expired entities as
:class:`~streamfeat.sinks.UpdateBatch`, and the state it keeps in a
:class:`~streamfeat.state.PartitionStore`. The worker (:mod:`streamfeat.runtime`) and the
offline commands (:mod:`streamfeat.replay`: replay, training sets, verify) drive this very
code, which is why a replay equals the stream.

Must not import: Kafka or Faust clients, :mod:`streamfeat.runtime`, :mod:`streamfeat.replay`,
the CLI. It performs no network I/O.
"""

from __future__ import annotations

from streamfeat.pipeline.partition import BatchOutcome, DeadLetter, PartitionPipeline

__all__ = ["BatchOutcome", "DeadLetter", "PartitionPipeline"]
