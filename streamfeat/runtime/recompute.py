"""A definition change on one partition, applied while the worker runs: :class:`Recomputer`.

When a partition's stored state lacks slots of the topology (features added or redefined,
contract section 10), the pipeline starts without them and a
:class:`~streamfeat.pipeline.evolution.Recomputation` computes them from the partition's
history: its snapshots, then the topic from where they end (or from its earliest record
when the snapshots do not reach it). The worker gives it a slice of time between batches,
so the other features keep being served; it chases the live pipeline's position and, once
there, the pipeline adopts its state. Then every entity of the partition (those in state,
those the history saw, those Redis holds for the partition) is written with the new
definition's fields, at the version already written (a *refresh*), fields no longer
declared deleted. Until then Redis keeps no value of a new definition.

Nothing here is committed before it is complete: a crash, or the partition moving to
another worker, starts the recomputation again from history on the next owner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from streamfeat.pipeline import PartitionPipeline
from streamfeat.pipeline.evolution import Recomputation
from streamfeat.records import RecordBatch
from streamfeat.runtime.consumers import TP, TopicHistory
from streamfeat.sinks import UpdateBatch
from streamfeat.snapshot.reader import iter_files, snapshot_files

__all__ = ["EntityLister", "HistoryPlan", "Recomputer"]

log = logging.getLogger("streamfeat.worker")

READ_RECORDS = 5_000
"""Records read from the topic per call (session windows slow down with larger batches)."""
PROGRESS_EVERY_S = 10.0
"""The least time between two progress lines of one recomputation (records read / planned)."""


class EntityLister(Protocol):
    def partition_entities(self, partition: int) -> Iterator[list[str]]:
        """Entity ids whose stored values were last written from ``partition``."""
        ...

    def mark_history(self, partition: int, recomputed: Sequence[str],
                     partial: Mapping[str, int]) -> None:
        """Record which recomputed fields of ``partition`` are partial, since when."""
        ...


@dataclass(frozen=True)
class HistoryPlan:
    """Where a partition's history comes from, and whether it reaches its first record."""

    snapshots: tuple[int, int] | None
    """``[first, end)`` offsets of the snapshots read, if any are."""
    topic_low: int
    """The topic's earliest available offset."""

    @property
    def topic_from(self) -> int:
        """The topic is read from here: where the snapshots end, or its earliest record."""
        return self.topic_low if self.snapshots is None else max(self.snapshots[1],
                                                                 self.topic_low)

    @property
    def complete(self) -> bool:
        """Whether the history starts at the partition's first record, without a hole."""
        if self.snapshots is None:
            return self.topic_low == 0
        first, end = self.snapshots
        return first == 0 and end >= self.topic_low

    def describe(self) -> str:
        topic = f"the topic from offset {self.topic_from}"
        if self.snapshots is None:
            return topic
        return f"snapshots of offsets [{self.snapshots[0]}, {self.snapshots[1]}), then {topic}"


def plan_history(history: TopicHistory, snapshot_dir: str | None, tp: TP) -> HistoryPlan:
    """Snapshots first, then the topic from where they end, when the snapshots reach back as
    far as the topic (or further); else the topic alone."""
    low, _high = history.bounds(tp)
    if snapshot_dir is not None:
        files = snapshot_files(snapshot_dir, tp[0], tp[1])
        if files and files[0].first_offset <= low:
            return HistoryPlan((files[0].first_offset,
                                max(f.last_offset for f in files) + 1), low)
    return HistoryPlan(None, low)


@dataclass
class Recomputer:
    """Applies a definition change to one pipeline of one partition, a slice at a time."""

    tp: TP
    pipeline: PartitionPipeline
    history: TopicHistory
    snapshot_dir: str | None
    entities: EntityLister
    max_rate: float | None = None
    """Records of history per second at most (``--recompute-max-rate``); None: no limit."""
    recomputation: Recomputation | None = None
    plan: HistoryPlan | None = None
    partial: dict[str, int] = field(default_factory=dict)
    """Recomputed fields whose window reaches before the history: field -> its start."""
    started: float = field(default_factory=time.monotonic)
    records: int = 0
    """Records of history fed so far."""
    _snapshots: Iterator[RecordBatch] | None = None
    _refresh_ids: set[str] = field(default_factory=set)
    _listing: Iterator[list[str]] | None = None
    _recomputed: list[str] | None = None
    """Fields recomputed, until their history is recorded (:meth:`EntityLister.mark_history`)."""
    done: bool = False

    _last_progress: float = field(default_factory=time.monotonic)

    @property
    def label(self) -> str:
        return f"{self.pipeline.topology.name} {self.tp[0]}[{self.tp[1]}]"

    def planned(self, target: int) -> int:
        """Records of history to read up to ``target`` (an upper bound: offsets may have
        gaps)."""
        plan = self.plan
        if plan is None:
            return 0
        first = plan.snapshots[0] if plan.snapshots is not None else plan.topic_from
        return max(0, target - first)

    def _report(self, target: int) -> None:
        """A progress line every :data:`PROGRESS_EVERY_S`: records read of those planned."""
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        planned = self.planned(target)
        pct = f" ({100.0 * self.records / planned:.0f}%)" if planned else ""
        rate = self.records / max(now - self.started, 1e-9)
        log.info("%s: recomputing from history: %s of %s records read%s, %s records/s",
                 self.label, f"{self.records:,}", f"{planned:,}", pct, f"{rate:,.0f}")

    def step(self, deadline: float) -> list[UpdateBatch]:
        """Work until ``deadline`` (``time.monotonic()``); returns the refresh to write once
        everything is ready (then :attr:`done`), else nothing."""
        if self.done:
            return []
        if self.pipeline.pending and not self._recompute(deadline):
            return []
        return self._refresh(deadline)

    # -- recomputing the pending slots ----------------------------------------------

    def _recompute(self, deadline: float) -> bool:
        """Feed history until the pipeline's position; adopt. Whether it is adopted."""
        if self.recomputation is None:
            self.recomputation = self.pipeline.recomputation()
            self.plan = plan_history(self.history, self.snapshot_dir, self.tp)
            log.info("%s: computing %s from history: %s", self.label,
                     ", ".join(sorted(self.pipeline.operator.fields_of(self.pipeline.pending))),
                     self.plan.describe())
            if self.plan.snapshots is not None and self.snapshot_dir is not None:
                self._snapshots = iter_files(
                    snapshot_files(self.snapshot_dir, self.tp[0], self.tp[1]), batch_rows=5000)
        rec, plan = self.recomputation, self.plan
        if plan is None:  # pragma: no cover - set with the recomputation above
            raise RuntimeError("internal error: a recomputation without a history plan")
        while True:
            target = self.pipeline.next_offset or 0
            position = rec.next_offset if rec.next_offset is not None else 0
            if position >= target:
                break
            if self._throttled():
                return False
            self._read(rec, plan, position, target)
            self.records = rec.records
            self._report(target)
            if time.monotonic() >= deadline:
                return False
        self.history.done(self.tp)
        rec.next_offset = self.pipeline.next_offset  # past the end: nothing left to read
        self.partial = rec.partial_fields(self.pipeline.stream_time, plan.complete)
        self._recomputed = list(rec.operator.field_names)
        seen = self.pipeline.adopt(rec)
        self._refresh_ids.update(seen)
        log.info("%s: %d records of history in %.1f s; %s ready", self.label, rec.records,
                 time.monotonic() - self.started,
                 ", ".join(sorted(f for f in self.pipeline.operator.field_names)))
        if self.partial:
            log.warning("%s: history starts at event time %d (offset %s), after the start of "
                        "%s: partial until their windows have filled", self.label,
                        min(self.partial.values()), rec.first_offset,
                        ", ".join(sorted(self.partial)))
        self.recomputation = None
        return True

    def _throttled(self) -> bool:
        """Whether the history read so far is ahead of ``max_rate`` (then the slice ends)."""
        if self.max_rate is None:
            return False
        return self.records >= self.max_rate * (time.monotonic() - self.started)

    def _read(self, rec: Recomputation, plan: HistoryPlan, position: int, target: int) -> None:
        """Feed one batch of history below ``target``: snapshots first, then the topic."""
        if self._snapshots is not None:
            batch = next(self._snapshots, None)
            if batch is not None:
                batch = _before(batch, target)
            if batch:
                rec.feed(batch)
                return
            self._snapshots = None  # read, or going on past the pipeline's position
        start = max(position, plan.topic_from)
        if start >= target:  # nothing left to read before the pipeline's position
            rec.next_offset = target
            return
        batch = self.history.read(self.tp, start, target, READ_RECORDS)
        if batch:
            rec.feed(batch)

    # -- writing every entity with the new definition -------------------------------

    def _refresh(self, deadline: float) -> list[UpdateBatch]:
        if self._recomputed is not None:
            self.entities.mark_history(self.pipeline.partition, self._recomputed, self.partial)
            self._recomputed = None
        if not self.pipeline.refresh_pending:
            self.done = True
            return []
        if self._listing is None:
            self._refresh_ids.update(self.pipeline.entity_ids())
            self._listing = self.entities.partition_entities(self.pipeline.partition)
        for page in self._listing:
            self._refresh_ids.update(page)
            if time.monotonic() >= deadline:
                return []
        updates = self.pipeline.refresh(sorted(self._refresh_ids))
        log.info("%s: definition change applied; %d entities rewritten (%s)", self.label,
                 len(self._refresh_ids), self.pipeline.change.summary())
        self.done = True
        return updates


def _before(batch: RecordBatch, end: int) -> RecordBatch:
    """The records of ``batch`` with offsets below ``end``."""
    if not batch or batch.offsets[-1] < end:
        return batch
    k = 0
    while k < len(batch) and batch.offsets[k] < end:
        k += 1
    return batch[:k]
