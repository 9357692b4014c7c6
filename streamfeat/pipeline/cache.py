"""State larger than memory: a partition's working set in memory, the rest in its store.

The operator keeps the state of every entity it holds in memory; RocksDB has a copy of it
as of the last commit. :class:`EntityCache` keeps that copy as the only one for the
entities not used lately: after each commit, while the state held is over the partition's
share of the :class:`StateBudget`, it drops entities whose state is stored as it stands,
among the least recently used those next due to change by time the latest
(:meth:`PartitionOperator.evict`). They come back, a batch at a
time, when an event arrives for one (:meth:`EntityCache.ensure`) or when one is next due
to change by time alone (:meth:`EntityCache.expired`): an evicted entity leaves a *timer*
in the store (``t:{time}{entity}``) so that its window expiry still rewrites Redis in time,
without loading every entity every second; those that expire together (every entity of a
tumbling window, at its end) are read, written and evicted again a chunk at a time.

The values, the Redis updates, the dead letters and the state are those of the
all-in-memory state, whatever was evicted when (``tests/pipeline/test_cache.py`` proves it
for any eviction order): an evicted entity is loaded before the batch that would touch it
or make it due, at the stream time before that batch, where its next change time is the
one it had. The entities stored are the same too: one an expiry leaves with no state is
deleted by the next commit (:meth:`EntityCache.take_emptied`), as the all-in-memory state
deletes it, so dead entities do not stay on disk until they come back. One difference in
the stored bytes, none in what any read sees: an evicted entity whose windows partly
expired keeps its stored bytes (with the buckets the expiry dropped) until it is next
stored, where the all-in-memory state stores it again at once. A timer left by an entity
that came back meanwhile only reads it for nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from itertools import islice

from streamfeat.config import DEFAULT_STATE_CACHE_MB
from streamfeat.operators import PartitionOperator
from streamfeat.operators.slots import NEVER
from streamfeat.state import PartitionStore

__all__ = ["DEFAULT_STATE_CACHE_MB", "EntityCache", "StateBudget"]


_LOAD_CHUNK = 20_000  # entities read from the store at a time when opening
_LOW_WATER = 0.9  # a trim evicts down to this fraction of the share
_PRESSED = 1.25  # above this fraction of the share, the worker commits before it is due
_BATCH_SHARE = 0.2  # of the entities a share holds, those one batch may bring in
_BATCH_MOST = 1.0  # of them, those one batch brings in at most (the rest waits: entity_room)
_LEAST_ROOM = 64  # entities a batch may bring in whatever the share (it moves on)
_REMEASURE_EVERY = 16  # trims between two full measures of the bytes per entity


class StateBudget:
    """Memory for window state shared by the partitions one worker process holds."""

    def __init__(self, total_bytes: int | None) -> None:
        """``total_bytes``: ``None`` holds every entity in memory (no eviction)."""
        if total_bytes is not None and total_bytes <= 0:
            raise ValueError("a state budget needs a positive number of bytes (or None)")
        self.total_bytes = total_bytes
        self._members = 0
        self.evicted = 0
        """Entities evicted by every partition that shared the budget (a run's summary)."""
        self.loaded = 0
        """Entities read back by every partition that shared the budget."""

    @classmethod
    def of_mb(cls, mb: float | None) -> StateBudget:
        """``--state-cache-mb``: ``None`` or ``0`` for no limit."""
        return cls(None if not mb else int(mb * 1024 * 1024))

    @property
    def bounded(self) -> bool:
        return self.total_bytes is not None

    def join(self) -> None:
        self._members += 1

    def leave(self) -> None:
        self._members = max(0, self._members - 1)

    def share(self) -> int | None:
        """Bytes one partition may hold (the budget split evenly among those open)."""
        if self.total_bytes is None:
            return None
        return self.total_bytes // max(1, self._members)


class EntityCache:
    """Keeps ``operator``'s entities within its share of ``budget``, the rest in ``store``.

    The pipeline calls :meth:`open` once (instead of loading every stored entity),
    :meth:`ensure` and :meth:`expired` before each batch, and :meth:`trim` after each
    commit.
    """

    def __init__(self, operator: PartitionOperator, store: PartitionStore,
                 budget: StateBudget) -> None:
        self.operator = operator
        self.store = store
        self.budget = budget
        self.loaded = 0
        """Entities brought back from the store (a metric)."""
        self.evicted = 0
        """Entities dropped from memory (a metric)."""
        self._per_entity: float | None = None
        self._measured_at = 0
        self._trims = 0
        self._reported = (0, 0)
        self._emptied: set[str] = set()
        budget.join()

    def open(self) -> None:
        """Load the stored entities, keeping what fits (the state's meta is loaded):
        every stored entity's next change time is known from then on. Those stored with no
        state left as of the stored stream time (kept by a streamfeat before the expiry
        deleted them) are deleted by the first commit."""
        self.store.clear_timers()
        entities = self.store.entities()
        st = self.operator.stream_time
        while True:
            chunk = list(islice(entities, _LOAD_CHUNK))
            if not chunk:
                break
            self.operator.load_entities(chunk)
            if st is not None:
                self._emptied.update(self.operator.emptied([e for e, _ in chunk], st))
            self.trim()

    def ensure(self, entity_ids: Iterable[str], missing: list[str] | None = None) -> int:
        """Bring back the evicted entities among ``entity_ids`` (call before the batch
        that holds their events); returns how many of them were not held (evicted, or
        never seen): what the batch adds to the entities held. ``missing``: those not
        held, when the caller has found them already (:meth:`PartitionOperator.missing`)."""
        ids = list(entity_ids)
        if missing is None:
            missing = self.operator.missing(ids)
        if missing:
            self._load(missing, keep=ids)
        return len(missing)

    def expired(self, stream_time: int, skip: Collection[str]) -> Iterator[list[str]]:
        """The evicted entities whose values change by time alone at or before
        ``stream_time`` (those of ``skip``, the batch's, aside: :meth:`ensure` brought them
        back), a chunk at a time: each chunk is loaded (call before the batch moves the
        stream time, so that their next change times are the ones they had), the caller
        reads its values as of ``stream_time``, and the next step evicts it again. Memory
        stays bounded however many change at once (every entity of a tumbling window at
        its end). Their stored state is not rewritten: what the expiry dropped from it is
        dropped when they are next stored, and no read at or after ``stream_time`` sees it;
        those it left with no state are deleted by the next commit (:meth:`take_emptied`).
        """
        due = self.store.pop_timers(stream_time)
        if not due:
            return
        missing = [e for e in self.operator.missing(due) if e not in skip]
        for start in range(0, len(missing), _LOAD_CHUNK):
            chunk = missing[start:start + _LOAD_CHUNK]
            self._load(chunk, room=False)
            yield self.operator.due_among(chunk, stream_time)
            self._emptied.update(self.operator.emptied(chunk, stream_time))
            self._evicted(self.operator.evict_entities(chunk))

    def take_emptied(self) -> list[str]:
        """The stored entities an expiry left with no state since the last call, for the
        next commit to delete (call before the commit takes the changed state): those not
        changed since (held again or not); one changed meanwhile is stored as it now is."""
        if not self._emptied:
            return []
        gone = self.operator.unchanged(sorted(self._emptied))
        self._emptied.clear()
        return gone

    def _load(self, entity_ids: Sequence[str], keep: Collection[str] = (),
              room: bool = True) -> None:
        """Load the stored ones of ``entity_ids`` (none of them held), first evicting what
        would take the entities held beyond the share; never those of ``keep`` (the
        batch's, which may be held already and must stay until it is processed).
        ``room=False``: evict nothing for them (an expiry's chunk, evicted again at once:
        making room would only push out entities that may be used next)."""
        states = self.store.states(entity_ids)
        found = [(e, s) for e, s in zip(entity_ids, states, strict=True) if s is not None]
        if found:
            if room:
                self._make_room(len(found), keep)
            self.operator.load_entities(found)
            self.loaded += len(found)
            self.budget.loaded += len(found)

    def _make_room(self, incoming: int, keep: Collection[str]) -> None:
        """Evict enough not-changed entities (not of ``keep``) for ``incoming`` more to fit:
        the entities held, and so the rows the operators' arrays are sized for, stay near
        the share between commits too, not the share plus a batch (an expiry's chunk, at
        most ``_LOAD_CHUNK`` entities, is over it only while its values are read)."""
        share = self.budget.share()
        held = self.operator.entity_count
        if share is None or held == 0:
            return
        over = held + incoming - int(share / self._bytes_per_entity(held))
        if over > 0:
            self._evicted(self.operator.evict(over, keep))

    def trim(self) -> int:
        """Evict down to the budget's share (call right after a commit, when the state of
        every entity held is stored); returns the number evicted."""
        share = self.budget.share()
        if share is None:
            return 0
        held = self.operator.entity_count
        if held == 0:
            return 0
        self._trims += 1
        per_entity = self._bytes_per_entity(held)
        if held * per_entity <= share:
            return 0
        keep = int(_LOW_WATER * share / per_entity)
        return self._evicted(self.operator.evict(held - keep))

    def record_room(self, new_per_record: float) -> int | None:
        """Records one batch may bring to this partition: a fifth of the entities its
        share holds, at ``new_per_record`` entities brought into memory per record (a
        batch's entities stay held until the next commit stores them; those held already
        add nothing); ``None`` before the bytes per entity are known (under a thousand
        entities held)."""
        share = self.budget.share()
        if share is None:
            return None
        per_entity = self._known_bytes_per_entity(self.operator.entity_count)
        if per_entity is None:
            return None
        entities = _BATCH_SHARE * share / per_entity
        return int(entities / max(new_per_record, 0.01))

    def entity_room(self) -> int | None:
        """Entities one batch may bring into memory at most (evicted or never seen): as
        many as the share holds, at least a few (held then stays within about twice the
        share: those of the batch cannot leave before the commit that stores them).
        :meth:`record_room` sizes the batches from the last batch's rate of new entities;
        this bounds the batch after the key mix shifts (a worker grown to large batches on
        a hot set, whose keys turn uniform), or when one partition gets most of a poll: the
        pipeline aggregates such a batch up to its room, and the rest after a commit lets
        the cache evict (``PartitionPipeline.split_batches``). Before any entity was held
        to measure, the least room: the first part of a first batch, stored, gives the
        measure. ``None``: no budget."""
        share = self.budget.share()
        if share is None:
            return None
        held = self.operator.entity_count
        per_entity = self._known_bytes_per_entity(held)
        if per_entity is None:
            if held == 0:
                return _LEAST_ROOM
            per_entity = self._bytes_per_entity(held)
        return max(_LEAST_ROOM, int(_BATCH_MOST * share / per_entity))

    def take_counts(self) -> tuple[int, int]:
        """Entities evicted and loaded since the last call (for counters)."""
        out = (self.evicted - self._reported[0], self.loaded - self._reported[1])
        self._reported = (self.evicted, self.loaded)
        return out

    def pressed(self) -> bool:
        """Whether the state held is well over the share (by a quarter): the worker then
        commits early, since only stored state can be evicted."""
        share = self.budget.share()
        if share is None:
            return False
        held = self.operator.entity_count
        per_entity = self._known_bytes_per_entity(held)
        return per_entity is not None and held * per_entity > _PRESSED * share

    def evict(self, entity_ids: Iterable[str]) -> int:
        """Evict these entities now, those of them whose state is stored as it stands
        (the tests' way to choose the order); returns the number evicted."""
        return self._evicted(self.operator.evict_entities(entity_ids))

    def _evicted(self, gone: list[tuple[str, int]]) -> int:
        if gone:
            self.store.add_timers((e, t) for e, t in gone if t != NEVER)
            self.evicted += len(gone)
            self.budget.evicted += len(gone)
        return len(gone)

    def _known_bytes_per_entity(self, held: int) -> float | None:
        """The bytes per entity last measured, else measured now; ``None`` while fewer
        than a thousand entities are held (too few to measure)."""
        if self._per_entity is not None:
            return self._per_entity
        return None if held < 1000 else self._bytes_per_entity(held)

    def _bytes_per_entity(self, held: int) -> float:
        """Bytes per entity held, measured again every few trims or when the count moved
        by more than 5 % (a full measure walks every entity of some slots)."""
        per_entity = self._per_entity
        if (per_entity is None or self._trims % _REMEASURE_EVERY == 0
                or abs(held - self._measured_at) > 0.05 * max(held, self._measured_at)):
            per_entity = self._per_entity = max(1.0, self.operator.state_bytes() / held)
            self._measured_at = held
        return per_entity

    def entity_ids(self) -> list[str]:
        """Every entity with state: held in memory or stored."""
        return sorted(set(self.operator.entity_ids()) | set(self.store.entity_ids()))

    def chunks(self, entity_ids: Sequence[str]) -> Iterator[list[str]]:
        """``entity_ids`` in pieces small enough to hold, each brought back before it is
        given (the caller reads their values) and the previous one evicted again."""
        size = _LOAD_CHUNK
        for start in range(0, len(entity_ids), size):
            chunk = list(entity_ids[start:start + size])
            self.ensure(chunk)
            yield chunk
            self.trim()

    def close(self) -> None:
        self.budget.leave()
