"""``--stop-at-end``: the end offsets found at start, and whether the group has reached them.

A worker stops when every partition of its topics has been processed up to the end offset
it found at start: its own partitions judged by the offsets stored with their state (and the
snapshot's position), the others by the group's committed offsets (workers commit them after
each stored batch), so a worker does not stop while a dead member's partitions still wait
for reassignment.

Re-keyed topologies add a second phase: a repartition topic's end is only known once every
source partition's first stage is done (its records acknowledged, its offset stored and
committed to the group). Then the repartition topics' end offsets are taken, and the
second stage must reach them too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from streamfeat.runtime.assignment import Assignment
from streamfeat.runtime.consumers import TP, GroupConsumer

__all__ = ["EndOffsets"]

log = logging.getLogger("streamfeat.worker")


class EndOffsets:
    """End offsets captured at start (and, for repartition topics, once the sources end)."""

    def __init__(self, second_stage: Sequence[str] = (), *,
                 clock: Callable[[], float] = time.time) -> None:
        self.ends: dict[TP, int] = {}
        self.second_stage = list(second_stage)
        self._second_captured = not self.second_stage
        self.clock = clock
        self._last_group_check = float("-inf")

    def capture(self, consumer: GroupConsumer, topics: Sequence[str]) -> None:
        for topic in topics:
            for p in consumer.partitions(topic):
                low, high = consumer.watermarks((topic, p))
                # A partition whose records were all deleted (retention) has nothing to read.
                self.ends[(topic, p)] = high if high > low else 0

    def own_caught_up(self, assignment: Assignment) -> bool:
        """Every partition assigned here is processed (and snapshotted) up to its end."""
        for tp in assignment:
            end = self.ends.get(tp, 0)
            if any((s.next_offset or 0) < end for s in assignment.stages(tp)):
                return False
            writer = assignment.snapshots.get(tp)
            if writer is not None and (writer.next_offset or 0) + writer.buffered < end:
                return False
        return True

    def caught_up(self, assignment: Assignment, consumer: GroupConsumer) -> bool:
        """Every partition processed up to its end, by this worker or by the group."""
        if not self.own_caught_up(assignment):
            return False
        if not self._second_captured:
            # every source partition done group-wide (own ones too: their offsets reach
            # the group only after their re-keyed records are acknowledged)
            if not self._group_done(consumer, [tp for tp, end in self.ends.items() if end > 0]):
                return False
            self.capture(consumer, self.second_stage)
            self._second_captured = True
            log.info("sources done; the repartition topics end at %s",
                     {f"{t}[{p}]": e for (t, p), e in self.ends.items()
                      if t in self.second_stage})
            return False
        others = [tp for tp, end in self.ends.items() if end > 0 and tp not in assignment]
        return not others or self._group_done(consumer, others)

    def _group_done(self, consumer: GroupConsumer, tps: list[TP]) -> bool:
        if not tps:
            return True
        now = self.clock()
        if now - self._last_group_check < 1.0:
            return False
        self._last_group_check = now
        try:
            committed = consumer.committed(tps)
        except Exception as exc:  # the coordinator may be moving; ask again later
            log.debug("committed offsets: %s", exc)
            return False
        return all(committed.get(tp, -1) >= self.ends[tp] for tp in tps)
