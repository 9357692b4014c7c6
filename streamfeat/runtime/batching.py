"""How many records the worker asks for at each poll (issue #18).

Most of what a batch costs is per entity it touches, not per record: each touched
entity's values are computed and written, its state stored, its windows moved. The more
events of one entity a batch holds, the cheaper each event (the rich topology of
``benchmarks/`` ran at 25k events/s in batches of 20,000 and 37k in batches of 100,000).
So while the worker is behind (every poll comes back full), :class:`BatchSizer` grows the
batch toward what the worker handles in ``target_s`` (``--batch-seconds``), up to
``ceiling`` (``--batch-size``), and shrinks it back when batches take longer, never below
the start (:data:`START_RECORDS`, the worker's fixed size before). Once it has caught
up, a poll returns what is ready, fewer records than asked whatever is asked: the size
does not touch the freshness of a worker that keeps up.

With a state budget (``--state-cache-mb``), the size is also kept within what the budget
can take: the entities of a batch are held until the next commit stores them, so a batch
of a million distinct users would hold them all, whatever the budget.
:meth:`~streamfeat.pipeline.cache.EntityCache.record_room` gives that bound.
"""

from __future__ import annotations

__all__ = ["START_RECORDS", "BatchSizer", "first_size"]

START_RECORDS = 20_000
"""The first polls' size (the worker's fixed size before the sizer)."""

def first_size(ceiling: int) -> int:
    """What the worker's first poll asks for, with ``--batch-size`` ``ceiling``."""
    return min(ceiling, START_RECORDS)


_LEAST = 1_000  # the least asked for, whatever the room
_FULL = 0.9  # a poll that brought this share of what was asked: the worker is behind
_MOST_GROWTH = 4  # at most this many times larger at a step (2 until the sixteenth session:
# 20k, 40k, 80k, 160k, then 250k; orders caught up 23-30 % faster growing by 4, in two
# alternated pairs of runs: benchmarks/RESULTS.md)


class BatchSizer:
    """Records to ask for at the next poll: see the module doc."""

    def __init__(self, ceiling: int, target_s: float) -> None:
        if ceiling < 1:
            raise ValueError(f"a batch holds at least one record, not {ceiling}")
        if target_s <= 0:
            raise ValueError(f"the time a batch may take must be above 0 s, not {target_s}")
        self.ceiling = ceiling
        self.target_s = target_s
        self.size = first_size(ceiling)
        """What the next poll asks for."""

    def observe(self, records: int, seconds: float, room: int | None = None) -> int:
        """After a batch of ``records`` handled in ``seconds``: the next size, moved toward
        the rate times the target (at most 4 times larger or half as large at a step: a
        catch-up reaches large batches in a few polls, the first ones being the dearest
        per event, and one slow batch does not swing it), grown only while polls come
        back full, and kept within ``room`` (records the state budget can take; ``None``:
        no bound)."""
        size = float(self.size)
        full = records >= _FULL * self.size
        if records > 0 and seconds > 0 and (full or seconds > self.target_s):
            want = records / seconds * self.target_s
            if not full:
                want = min(want, size)  # a short poll says nothing of a larger batch
            size = min(max(want, size / 2), size * _MOST_GROWTH)
        size = max(size, START_RECORDS)  # slow batches shrink it back, not below the start
        if room is not None:
            size = min(size, room)
        self.size = int(max(min(_LEAST, self.ceiling), min(self.ceiling, size)))
        return self.size
