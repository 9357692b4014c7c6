"""What one worker run did, from its own counters: :class:`RunTotals`, and the line the
worker logs when it stops (``--stop-at-end`` runs above all: a job's log ends with it).

Counted where the work is done, not read back from the Prometheus metrics: records taken
by the pipelines (and the first stage of a re-keyed topology), late and malformed ones, and
the entity writes Redis applied (counted by :class:`CountingSink` around each sink).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from streamfeat.runtime.publish import FeatureSink
from streamfeat.sinks import UpdateBatch, WriteResult

__all__ = ["EXIT_FENCED", "CountingSink", "RunTotals"]

EXIT_FENCED = 4
"""The worker's exit status when it stopped while fenced off by a backfill's higher
generation (its writes to the backfilled entities were refused): restart it with
``--generation N``. 1 is a failure, 2 a bad setting or a dependency unreachable at start."""


@dataclass
class RunTotals:
    """Counters of one run; the writes are counted on the sink's thread, the rest on the
    worker's loop."""

    started: float = field(default_factory=time.monotonic)
    consumed: int = 0
    aggregated: int = 0
    late: int = 0
    malformed: int = 0
    written: int = 0
    refused: int = 0
    evicted: int = 0  # entities whose state left memory (--state-cache-mb)
    loaded: int = 0  # and came back from the state store
    batches: int = 0  # polls that brought records
    largest: int = 0  # records of the largest of them (runtime.batching)
    rests: int = 0  # times the rest of a batch waited for a commit (EntityCache.entity_room)

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.consumed / elapsed if elapsed > 0 else 0.0
        return (f"summary: consumed {self.consumed:,} records ({self.aggregated:,} aggregated, "
                f"{self.late:,} late, {self.malformed:,} malformed), {self.written:,} entity "
                f"writes applied to Redis ({self.refused:,} refused as not newer), in "
                f"{elapsed:.1f} s ({rate:,.0f} records/s)"
                + (f"; {self.batches:,} batches of up to {self.largest:,} records"
                   if self.batches else "")
                + (f"; state cache: {self.evicted:,} entities evicted to the state store, "
                   f"{self.loaded:,} read back" if self.evicted or self.loaded else "")
                + (f"; {self.rests:,} times the rest of a batch waited for a commit (too many "
                   "new entities at once for the state budget)" if self.rests else ""))


class CountingSink:
    """A :class:`~streamfeat.runtime.publish.FeatureSink` that counts what its sink applied
    and refused into ``totals``; everything else is the sink's."""

    def __init__(self, sink: FeatureSink, totals: RunTotals) -> None:
        self.sink = sink
        self.totals = totals

    def write(self, updates: Sequence[UpdateBatch]) -> WriteResult:
        result = self.sink.write(updates)
        self.totals.written += result.applied
        self.totals.refused += result.duplicate + result.stale
        return result

    def stored_version(self, entity_id: str) -> tuple[int, int, int] | None:
        return self.sink.stored_version(entity_id)

    def partition_entities(self, partition: int) -> Iterator[list[str]]:
        return self.sink.partition_entities(partition)

    def mark_history(self, partition: int, recomputed: Sequence[str],
                     partial: Mapping[str, int]) -> None:
        self.sink.mark_history(partition, recomputed, partial)

    def close(self) -> None:
        self.sink.close()
