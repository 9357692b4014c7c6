"""One topology on one partition: raw records in, Redis updates and dead letters out.

No Kafka and no Redis here, so the worker and the replay drive the very same code:
acceptance (decode, late rule) -> operators -> (values of touched and expired entities)
-> updates.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from streamfeat.operators import EMPTY_STATE, PartitionOperator
from streamfeat.pipeline.acceptance import Acceptance, DeadLetter, Verdict
from streamfeat.pipeline.cache import EntityCache, StateBudget
from streamfeat.pipeline.evolution import Recomputation, compare
from streamfeat.records import RawRecord, RecordBatch, as_batch
from streamfeat.sinks.updates import UpdateBatch
from streamfeat.sinks.values import version
from streamfeat.state import PartitionStore
from streamfeat.topology import TopologyDef

__all__ = ["BatchOutcome", "PartitionPipeline"]


@dataclass(slots=True)
class BatchOutcome:
    updates: list[UpdateBatch] = field(default_factory=list)  # none or one per batch
    dead: list[DeadLetter] = field(default_factory=list)
    consumed: int = 0
    aggregated: int = 0
    late: int = 0
    malformed: int = 0
    duplicates: int = 0  # re-keyed stream: records the first stage wrote twice, dropped


class PartitionPipeline:
    """Drives a :class:`PartitionOperator` over batches of one partition's raw records."""

    def __init__(
        self,
        topology: TopologyDef,
        partition: int,
        *,
        generation: int = 0,
        store: PartitionStore | None = None,
        budget: StateBudget | None = None,
    ) -> None:
        """``budget``: hold only what fits in its share in memory, the rest in ``store``
        (:mod:`~streamfeat.pipeline.cache`); without one, every entity is held."""
        self.topology = topology
        self.partition = partition
        self.generation = generation
        self.store = store
        self.next_offset: int | None = None
        self.new_entities_per_record = 1.0
        """Entities the last batch brought into memory (read back from the store, or seen
        for the first time) per record it aggregated: sizes the next batch
        (:meth:`record_room`)."""
        self.split_batches = False
        """Whether :meth:`process` may aggregate only the first part of a batch, when the
        rest would bring more entities into memory than the state budget allows at once
        (:meth:`EntityCache.entity_room`); :attr:`next_offset` then says where the rest
        starts, and the caller hands it again after a commit (the worker does)."""
        self.keep_dead_letters = True
        """Whether :meth:`process` lists the refused records (a replay, which writes none,
        sets it off: each is a :class:`DeadLetter` built with its reason)."""
        self.acceptance = Acceptance(topology, partition)
        checkpoint = store.committed() if store is not None else None
        stored = None
        if store is not None and checkpoint is not None and checkpoint.meta is not None:
            stored = (PartitionOperator.stored_catalog(checkpoint.meta)
                      or _catalog_of_older_state(topology, store))
        self.change = compare(topology, stored)
        """What the stored state lacks or holds in excess (contract section 10)."""
        self.operator = PartitionOperator(
            topology, partition, slots=self.change.ready if self.change.pending else None)
        self._stored_fields = stored[1] if stored is not None and self.change.needs_refresh \
            else None
        self.cache = (EntityCache(self.operator, store, budget)
                      if store is not None and budget is not None and budget.bounded else None)
        if store is not None and checkpoint is not None:
            if checkpoint.meta is not None:
                self.operator.load_meta(checkpoint.meta)
                if self.cache is not None:
                    self.cache.open()
                else:
                    self.operator.load_entities(store.entities())
            self.next_offset = checkpoint.next_offset
            if checkpoint.origins is not None:
                self.acceptance.origins_seen = msgspec.msgpack.decode(
                    checkpoint.origins, type=dict[int, int])

    # -- definition changes ---------------------------------------------------

    @property
    def pending(self) -> frozenset[str]:
        """Slots still to be computed from history (none once adopted)."""
        return frozenset(self.operator.held_back)

    @property
    def refresh_pending(self) -> bool:
        """Whether every entity must still be written with the new definition's fields."""
        return self._stored_fields is not None

    def recomputation(self) -> Recomputation:
        """A recomputation of the pending slots, to feed with this partition's history."""
        return Recomputation(self.topology, self.partition, self.pending)

    def adopt(self, recomputation: Recomputation) -> list[str]:
        """Take the recomputed slots over (``recomputation`` has reached :attr:`next_offset`);
        returns the entities it saw."""
        if recomputation.next_offset != self.next_offset:
            raise ValueError(
                f"partition {self.partition}: the recomputation stands at offset "
                f"{recomputation.next_offset}, the pipeline at {self.next_offset}; feed it up "
                "to the pipeline's position first")
        if self.cache is not None:  # the adopted slots join each entity's whole state
            self.cache.ensure(recomputation.operator.entity_ids())
        return self.operator.adopt(recomputation.operator)

    def refresh(self, entity_ids: Sequence[str]) -> list[UpdateBatch]:
        """Every field of ``entity_ids`` as of stream time, at the version already written,
        deleting fields no longer declared: what a definition change leaves to write once
        its slots are ready. Call :meth:`refreshed` once it is submitted."""
        st = self.operator.stream_time
        if self.pending:
            raise ValueError("refresh() before the pending slots were adopted")
        if not entity_ids or st is None or self.next_offset is None or self.next_offset < 1:
            return []
        ids = sorted(set(entity_ids))
        v = version(self.generation, self.partition, self.next_offset - 1)
        pieces = self.cache.chunks(ids) if self.cache is not None else [ids]
        return [UpdateBatch(piece, self.operator.field_names,
                            self.operator.value_columns(piece, as_of=st), st, v,
                            deletes=self.change.deleted_fields, refresh=True)
                for piece in pieces]

    def entity_ids(self) -> list[str]:
        """Every entity with state on this partition (in memory or, with a budget, stored)."""
        if self.cache is not None:
            return self.cache.entity_ids()
        return self.operator.entity_ids()

    def refreshed(self) -> None:
        """The refresh is submitted: the next commit records the new fields as served."""
        self._stored_fields = None

    @property
    def stream_time(self) -> int | None:
        return self.operator.stream_time

    def process(self, records: RecordBatch | Sequence[RawRecord],
                emit: Callable[[list[UpdateBatch]], None] | None = None) -> BatchOutcome:
        """Aggregate one batch (in offset order) and return what must be written.

        ``emit``: takes the values of evicted entities that expire in this batch as they
        are read, a chunk at a time (the worker submits them to the sink at once, so that
        memory stays bounded when a million of them expire together); without it they are
        in the outcome's updates. With :attr:`split_batches`, it may aggregate only the
        batch's first records (``consumed`` of them; :attr:`next_offset` is the rest's)."""
        if not records:
            return BatchOutcome()
        records = as_batch(records, self.partition)
        # The operators own the stream time (it is restored with their state); judging from
        # theirs, the acceptance marks late exactly the events the operators skip.
        self.acceptance.stream_time = self.operator.stream_time
        splits = self.split_batches and self.cache is not None
        # a re-keyed batch cut below is judged again from the source offsets seen before it
        seen = dict(self.acceptance.origins_seen) if splits and records.origins is not None \
            else None
        verdict = self.acceptance.judge(records)
        missing: list[str] | None = None
        if self.cache is not None and verdict.stream_time is not None:
            missing = self.operator.missing(verdict.decoded.keys)
            cut = _cut(self.cache, records, verdict, missing) if splits else None
            if cut is not None:  # judged again, from where it stood, up to the cut
                records = records[:cut]
                self.acceptance.stream_time = self.operator.stream_time
                if seen is not None:
                    self.acceptance.origins_seen = seen
                verdict = self.acceptance.judge(records)
                missing = self.operator.missing(verdict.decoded.keys)
        last = records.offsets[-1]
        out = BatchOutcome(consumed=len(records))
        out.duplicates = len(records) - len(verdict.batch)
        if not verdict.batch:  # nothing but records the first stage wrote twice
            self.next_offset = last + 1
            return out
        decoded = verdict.decoded
        expired: list[UpdateBatch] = []
        if self.cache is not None and verdict.stream_time is not None:
            # before the stream time moves: evicted entities come back as they were
            brought = self.cache.ensure(decoded.keys, missing)
            if verdict.accepted_count:
                self.new_entities_per_record = brought / verdict.accepted_count
            expired = _expired(self.cache, self.operator, verdict.stream_time,
                               set(decoded.keys),
                               version(self.generation, self.partition, last), emit)
        result = self.operator.process(decoded.keys, verdict.ts, decoded.records, decoded.fields)
        if self.keep_dead_letters:
            out.dead = verdict.dead_letters()
        out.malformed = verdict.malformed
        out.late = verdict.late_count
        out.aggregated = verdict.accepted_count
        self.next_offset = last + 1
        if verdict.stream_time is not None:
            out.updates = [*expired, *self.updates(result.touched, verdict.stream_time, last)]
        return out

    def record_room(self) -> int | None:
        """Records a batch may bring to this partition within the state budget (``None``:
        no bound): :meth:`EntityCache.record_room`."""
        return (None if self.cache is None
                else self.cache.record_room(self.new_entities_per_record))

    def updates(self, touched: set[str], stream_time: int, offset: int) -> list[UpdateBatch]:
        """Values of touched entities and of entities whose windows expired, as of stream time."""
        entities = set(touched)
        entities |= self.operator.due(stream_time)
        if not entities:
            return []
        ids = sorted(entities)
        columns = self.operator.value_columns(ids, as_of=stream_time)
        v = version(self.generation, self.partition, offset)
        return [UpdateBatch(ids, self.operator.field_names, columns, stream_time, v)]

    def commit(self) -> None:
        """Store changed state with the resume offset, atomically (after the sink accepted)."""
        if self.store is None or self.next_offset is None:
            return
        # entities an expiry emptied while evicted: deleted as the state held deletes them
        emptied = [] if self.cache is None else self.cache.take_emptied()
        dirty = self.operator.take_dirty()
        changed = [item for item in dirty if item[1] != EMPTY_STATE]
        gone = [] if len(changed) == len(dirty) else [
            entity for entity, data in dirty if data == EMPTY_STATE]
        gone += emptied
        seen = self.acceptance.origins_seen
        origins = msgspec.msgpack.encode(seen) if seen else None
        meta = self.operator.meta(fields=self._stored_fields)
        self.store.commit(self.next_offset, meta, changed, gone, origins=origins)
        if self.cache is not None:
            self.cache.trim()

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        if self.store is not None:
            self.store.close()


def _cut(cache: EntityCache, records: RecordBatch, verdict: Verdict, missing: list[str]
     ) -> int | None:
    """Where to cut the batch so that its first part brings at most the cache's
    :meth:`~EntityCache.entity_room` entities into memory (the records before the
    first event of the one past it); ``None``: it all fits."""
    room = cache.entity_room()
    if room is None or len(missing) <= room:
        return None
    decoded = verdict.decoded
    first = decoded.keys.index(missing[room])  # missing is in first-seen order
    return bisect_left(records.offsets, verdict.batch.offsets[decoded.positions[first]])


def _expired(cache: EntityCache, operator: PartitionOperator, stream_time: int,
             skip: set[str], v: str, emit: Callable[[list[UpdateBatch]], None] | None,
             ) -> list[UpdateBatch]:
    """Values of the evicted entities (not among ``skip``) that change by time alone at or
    before ``stream_time``, read a chunk at a time (:meth:`EntityCache.expired`): given to
    ``emit`` chunk by chunk, else returned."""
    out: list[UpdateBatch] = []
    for ids in cache.expired(stream_time, skip):
        if ids:
            ids.sort()
            columns = operator.value_columns(ids, as_of=stream_time)
            chunk = UpdateBatch(ids, operator.field_names, columns, stream_time, v)
            if emit is not None:
                emit([chunk])
            else:
                out.append(chunk)
    return out


def _catalog_of_older_state(topology: TopologyDef, store: PartitionStore
                            ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """What a state written before streamfeat recorded its catalog holds: the slots found
    in its entities, and the fields of ``topology`` those serve (the names of fields
    since removed were not recorded: they stay in Redis until their keys expire)."""
    slots: dict[str, list[str]] = {}
    for _entity, data in store.entities():
        try:
            _version, payload = msgspec.msgpack.decode(data)
        except (msgspec.DecodeError, TypeError, ValueError):
            continue  # load_entities reports it
        for key, (hashes, _obj) in payload.items():
            slots.setdefault(key, list(hashes))
    probe = PartitionOperator(topology, 0)
    served = set(probe.fields_of(slots))
    fields = {f.redis_field(w): f.state_hash(w) for f in topology.features for w in f.windows
              if f.redis_field(w) in served}
    return slots, fields
