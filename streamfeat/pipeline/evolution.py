"""Definitions that change (contract section 10): what changed, and recomputing it.

A partition's state records what it holds: its slots (state shared by feature-windows, keyed
by a digest of everything that determines it) and the Redis field of each feature-window
with its definition hash. :func:`compare` sets that against a topology:

* a slot the state holds and the topology plans is *ready*: it continues;
* a slot the topology plans and the state lacks is *pending*: it must be computed from
  history (:class:`Recomputation`) before any of its fields is written;
* a stored slot the topology no longer plans is dropped, and Redis fields no longer declared
  are deleted.

No I/O here: the worker feeds a :class:`Recomputation` with the partition's history
(snapshots, then the topic) and, once it has reached the live pipeline's position, the
pipeline adopts its state (:meth:`PartitionPipeline.adopt`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from streamfeat.operators import PartitionOperator
from streamfeat.pipeline.acceptance import Acceptance
from streamfeat.records import RecordBatch
from streamfeat.topology import TopologyDef, WindowKind

__all__ = [
    "DefinitionChange",
    "FieldChange",
    "FieldStatus",
    "Recomputation",
    "compare",
    "field_changes",
    "partial_fields",
]


class FieldStatus(StrEnum):
    UNCHANGED = "unchanged"
    ADDED = "added"
    REDEFINED = "redefined"
    RENAMED = "renamed"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One feature-window (Redis field) between the stored state and the topology."""

    name: str
    status: FieldStatus
    recompute: bool = False
    """Whether its state is computed from history first (its slot is pending)."""
    was: str | None = None
    """For a rename: the field's stored name."""


@dataclass(frozen=True)
class DefinitionChange:
    """What a partition's stored state lacks, holds in excess, or names differently."""

    ready: frozenset[str]
    pending: frozenset[str]
    dropped: frozenset[str]
    fields: tuple[FieldChange, ...]
    first_run: bool = False
    """The state holds nothing yet (a new partition): nothing to compare."""

    @property
    def unchanged(self) -> bool:
        return not self.pending and not self.dropped and all(
            f.status is FieldStatus.UNCHANGED for f in self.fields)

    @property
    def deleted_fields(self) -> tuple[str, ...]:
        """Stored Redis fields the topology no longer declares (removed or renamed away)."""
        gone = [f.name for f in self.fields if f.status is FieldStatus.REMOVED]
        gone += [f.was for f in self.fields if f.status is FieldStatus.RENAMED and f.was]
        return tuple(sorted(set(gone)))

    @property
    def needs_refresh(self) -> bool:
        """Whether every entity must be written again once the pending slots are ready:
        fields appear, change meaning, move or go."""
        return not self.first_run and not self.unchanged

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for f in self.fields:
            counts[f.status.value] = counts.get(f.status.value, 0) + 1
        text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        recompute = sorted(f.name for f in self.fields if f.recompute)
        if recompute:
            text += f"; recomputed from history: {', '.join(recompute)}"
        return text


def compare(topology: TopologyDef,
            stored: tuple[Mapping[str, list[str]], Mapping[str, str]] | None
            ) -> DefinitionChange:
    """What changes when a partition whose state holds ``stored`` (slots, fields: see
    :meth:`PartitionOperator.stored_catalog`) runs ``topology``. ``None``: a state that
    holds nothing yet (every slot starts empty with the stream, nothing to recompute)."""
    planned = PartitionOperator.catalog_of(topology)
    probe = PartitionOperator(topology, 0)
    hashes = {f.redis_field(w): f.state_hash(w) for f in topology.features for w in f.windows}
    if stored is None:
        return DefinitionChange(
            ready=frozenset(planned), pending=frozenset(), dropped=frozenset(),
            fields=tuple(FieldChange(n, FieldStatus.UNCHANGED) for n in hashes),
            first_run=True)
    slots, fields = stored
    pending = frozenset(k for k in planned if k not in slots)
    return DefinitionChange(
        ready=frozenset(k for k in planned if k in slots), pending=pending,
        dropped=frozenset(k for k in slots if k not in planned),
        fields=field_changes(fields, hashes, set(probe.fields_of(pending))))


def field_changes(before: Mapping[str, str], after: Mapping[str, str],
                  recomputed: Collection[str] = ()) -> tuple[FieldChange, ...]:
    """Each Redis field of ``after`` against ``before`` (both field -> definition hash,
    :meth:`~streamfeat.topology.FeatureDef.state_hash`), in ``after``'s order: unchanged
    (same name, same hash), redefined (same name, another hash), renamed (a new name whose
    hash a field of ``before`` that ``after`` no longer names had: ``was``) or added; then
    the fields of ``before`` no longer there, removed. ``recomputed``: the fields marked
    :attr:`FieldChange.recompute`. The worker's rule (:func:`compare`), and the registry's
    between two deployed versions."""
    by_hash: dict[str, list[str]] = {}
    for name, h in before.items():
        if name not in after:
            by_hash.setdefault(h, []).append(name)
    changes: list[FieldChange] = []
    for name, h in after.items():
        again = name in recomputed
        if before.get(name) == h:
            changes.append(FieldChange(name, FieldStatus.UNCHANGED, again))
        elif name in before:
            changes.append(FieldChange(name, FieldStatus.REDEFINED, again))
        elif by_hash.get(h):
            changes.append(FieldChange(name, FieldStatus.RENAMED, again, was=by_hash[h].pop(0)))
        else:
            changes.append(FieldChange(name, FieldStatus.ADDED, again))
    renamed_from = {c.was for c in changes if c.was}
    changes += [FieldChange(name, FieldStatus.REMOVED) for name in before
                if name not in after and name not in renamed_from]
    return tuple(changes)


@dataclass
class Recomputation:
    """The pending slots of one partition, computed from its history.

    Feed it the partition's records in offset order from the earliest available
    (:meth:`feed`), exactly as the live pipeline was fed; its operator then holds what
    a worker that ran the topology from that record would hold in those slots. Nothing
    leaves it: no dead letters (the live pipeline sent them), no writes.
    """

    topology: TopologyDef
    partition: int
    pending: frozenset[str]
    operator: PartitionOperator = field(init=False)
    acceptance: Acceptance = field(init=False)
    next_offset: int | None = None
    """The next offset to feed (``None`` before the first record)."""
    first_offset: int | None = None
    first_event_ms: int | None = None
    """Event time of the earliest accepted record fed: where the history starts."""
    records: int = 0

    def __post_init__(self) -> None:
        self.operator = PartitionOperator(self.topology, self.partition, slots=self.pending)
        self.acceptance = Acceptance(self.topology, self.partition)

    def feed(self, records: RecordBatch) -> None:
        """Aggregate a batch of the partition's history (in offset order, after the last)."""
        if self.next_offset is not None:
            records = records.since(self.next_offset)
        if not records:
            return
        if self.first_offset is None:
            self.first_offset = records.offsets[0]
        self.acceptance.stream_time = self.operator.stream_time
        verdict = self.acceptance.judge(records)
        self.next_offset = records.offsets[-1] + 1
        self.records += len(records)
        if not verdict.batch:
            return
        decoded = verdict.decoded
        self.operator.process(decoded.keys, verdict.ts, decoded.records, decoded.fields)
        if self.first_event_ms is None and len(verdict.ts):
            self.first_event_ms = int(min(verdict.ts))

    def partial_fields(self, stream_time: int | None, complete: bool) -> dict[str, int]:
        """Recomputed fields whose window reaches before the history fed (see
        :func:`partial_fields`)."""
        return partial_fields(self.topology, self.operator.field_names, self.first_event_ms,
                              stream_time, complete)


def partial_fields(topology: TopologyDef, recomputed: Collection[str],
                   first_event_ms: int | None, stream_time: int | None, complete: bool
                   ) -> dict[str, int]:
    """Of the ``recomputed`` fields of ``topology``, those whose window reaches before the
    history they are computed from (field -> the event time the history starts at): a
    lifetime or session window always, a sized one when its reach (size, hop, and the
    previous window of an ``emit_final`` one) from ``stream_time`` goes back past the
    history's first event time (``first_event_ms``) plus the lateness. Empty when the
    history is ``complete`` (it starts at the partition's first record). The worker
    (:meth:`Recomputation.partial_fields`) and ``streamfeat plan`` share this rule."""
    if complete:
        return {}
    start = first_event_ms if first_event_ms is not None else (stream_time or 0)
    now = stream_time if stream_time is not None else start
    wanted = set(recomputed)
    out: dict[str, int] = {}
    for f in topology.features:
        for w in f.windows:
            name = f.redis_field(w)
            if name not in wanted:
                continue
            if w.kind in (WindowKind.LIFETIME, WindowKind.SESSION):
                out[name] = start
                continue
            size = int(w.size_ms or 0)
            reach = size + int(w.hop_ms or 0) + (size if w.emit_final else 0)
            if now - reach < start + topology.lateness_ms:
                out[name] = start
    return out
