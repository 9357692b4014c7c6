"""What is stored when: :class:`Checkpoint`, the rule that no offset is stored before its effects.

Each batch's effects are, in order: values to the sink and re-keyed records to the
repartition topic (both acknowledged in the background), dead letters (acknowledged before
the batch ends). Its stages are then *pending*: their
in-memory state is ahead of RocksDB. :meth:`Checkpoint.commit` first waits until every
effect submitted so far is acknowledged (``settle``), then stores each pending pipeline's
changed state with its next offset in one RocksDB write batch. So:

* a crash before a commit redoes the batches since the last one, with the same values and
  versions (the sink refuses what it already holds; dead letters are deduplicated);
* an offset is never stored before the writes and dead letters of the records before it;
* after a batch failed half-way (:meth:`batch` exited by an exception), or a background
  write failed (``settle`` raises), the in-memory state holds effects that never reached
  the sink: nothing more is committed; the restart redoes it.

Commits happen every ``every_s`` (a crash only redoes more; the result is the same), when
idle, at revocation and at shutdown. A timed commit stores one partition per call
(:meth:`Checkpoint.commit_step`), so that the loop handles records between them: storing
every partition's state at once held each record arriving meanwhile for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

from streamfeat.runtime.consumers import TP

__all__ = ["Checkpoint", "Stage"]


class Stage(Protocol):
    """What the checkpoint stores: a pipeline or a first stage of one partition."""

    def commit(self) -> None:
        """Store its changed state with its next offset, atomically."""
        ...


class Checkpoint:
    """Tracks pipelines whose state is ahead of their store; commits them safely."""

    def __init__(self, settle: Callable[[], None], *, every_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._settle = settle
        self.every_s = every_s
        self.clock = clock
        self._pending: dict[int, tuple[TP, Stage]] = {}
        self._broken = False
        self._last = clock()
        self._round: list[TP] | None = None  # a timed commit's partitions still to store

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    @property
    def broken(self) -> bool:
        """A batch failed after changing state: nothing may be committed any more."""
        return self._broken

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Around one batch: its pipelines' effects are submitted inside, or it breaks."""
        broken = True
        try:
            yield
            broken = False
        finally:
            if broken:
                self._broken = True

    def track(self, stages: Iterable[tuple[TP, Stage]]) -> None:
        """These stages processed a batch whose effects were all submitted."""
        for tp, stage in stages:
            self._pending[id(stage)] = (tp, stage)

    def due(self) -> bool:
        return self._round is not None or self.clock() - self._last >= self.every_s

    def commit_step(self) -> set[TP]:
        """One step of a timed commit: the first call takes the partitions pending then,
        each call stores the next of them (:meth:`commit` of one); once the last is stored,
        the next timed commit is due ``every_s`` later. Returns the partitions stored."""
        if self._round is None:
            self._round = sorted({tp for tp, _stage in self._pending.values()})
        done: set[TP] = set()
        while self._round and not done:
            done = self.commit({self._round.pop(0)})
        if not self._round:
            self._round = None
            self._last = self.clock()
        return done

    def commit(self, only: set[TP] | None = None) -> set[TP]:
        """Store pending state (of ``only`` these partitions); returns the partitions stored.

        Waits for every submitted effect first; raises if one failed or a batch broke.
        """
        if self._broken:
            raise RuntimeError("a batch failed half-way: its state must not be committed")
        self._settle()
        done: set[TP] = set()
        for key, (tp, stage) in list(self._pending.items()):
            if only is not None and tp not in only:
                continue
            stage.commit()
            del self._pending[key]
            done.add(tp)
        if only is None:
            self._last = self.clock()
            self._round = None
        return done
