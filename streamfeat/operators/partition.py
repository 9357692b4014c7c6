"""All features of one topology on one Kafka partition: :class:`PartitionOperator`.

Per micro-batch (records in offset order) the operator decides lateness with a
running maximum, evaluates each ``where`` once, and feeds the batch to each
*slot* (state shared by feature-windows with the same window, ``where``, field
and aggregation family; see :mod:`streamfeat.operators.slots`). The plan
(:meth:`PartitionOperator._plan`) picks each slot's window kind; from then on
the operator talks to every slot through the :class:`~.slots.Slot` protocol.
The moments family on bucketed windows is updated with numpy, once per
``(entity, bucket)`` group; the other families loop over their events.

Times are bounded so that no arithmetic overflows int64 and no time equals the "never"
sentinel (:data:`~.slots.NEVER`, int64's maximum): event times are in
``0 .. MAX_EVENT_TIME_MS`` (the decoder rejects others; :meth:`PartitionOperator.process`
refuses them with ``ValueError``), durations at most ``MAX_DURATION_MS`` (the topology
loader), and a query time beyond the reach of every window is answered as of
:data:`LATEST_QUERY_MS`, which gives the same values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from streamfeat.errors import StateError
from streamfeat.operators import kernels
from streamfeat.operators.aggregations import Family, family_of
from streamfeat.operators.eventtime import late_mask
from streamfeat.operators.rings import MomentsRing
from streamfeat.operators.slots import NEVER, Batch, Slot, msgpack_header
from streamfeat.operators.vector import FastBucketSlot, FastExactSlot, FastSessionSlot
from streamfeat.operators.windows import BucketSlot, ExactSlot, SessionSlot, Span
from streamfeat.topology.definitions import (
    DAY,
    MAX_DURATION_MS,
    MAX_EVENT_TIME_MS,
    TOP_K_EXACT_UP_TO,
    AggKind,
    FeatureDef,
    TopologyDef,
    WindowDef,
    WindowKind,
)

__all__ = [
    "EMPTY_STATE",
    "LATEST_QUERY_MS",
    "STATE_FORMAT_VERSION",
    "PartitionOperator",
    "ProcessResult",
]

LATEST_QUERY_MS = MAX_EVENT_TIME_MS + 2 * MAX_DURATION_MS + DAY
"""A query time (``values(as_of=...)``) after which no window can change: every event is
at or before ``MAX_EVENT_TIME_MS``, every window (twice its size for ``emit: final``, plus
a hop) reaches back less than this far. Later query times are answered as of it."""

STATE_FORMAT_VERSION = 3
"""Version of the bytes of :meth:`PartitionOperator.take_dirty` and ``meta``.

2: moments cells carry their own shift ``[b, c, n, K, s1, s2(, min, max)]``
(1 kept one shift per entity, which lost variance precision when data drifted).
"""

EMPTY_STATE = msgspec.msgpack.encode([STATE_FORMAT_VERSION, {}])
"""The bytes :meth:`PartitionOperator.take_dirty` gives an entity left with no state: the
store deletes it."""

Predicate = Callable[[Mapping[str, Any]], bool]
"""A compiled ``where``: does a record pass it (records hold any JSON-able values)."""
WhereCompiler = Callable[[str], Predicate]

_EVICT_POOL = 4
"""evict() picks among this many times as many of the least recently used entities (at most
the less recently used half of them: a hot set stays) those next due to change by time the
latest: an entity evicted before its window expiry is read back for it."""

ROW_OVERHEAD_BYTES = 360
"""Memory an entity holding a row costs beside its slots' own count of their state
(measured: resident memory grows by about 460 bytes per entity of the benchmark topology
held, from 200k to 600k, of which the rings count about 90: the id string, its index entry
and slot of ``keys_by_row`` (about 130), the per-row arrays, the set of rows changed since
the last commit, and the slack of tables grown by doubling)."""

_MINMAX = (AggKind.MIN, AggKind.MAX)
_BUCKETED = (WindowKind.SLIDING, WindowKind.HOPPING, WindowKind.TUMBLING, WindowKind.LIFETIME)


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """What one batch did: ``late[i]`` for each record, entities whose state changed."""

    late: npt.NDArray[np.bool_]
    touched: set[str]


@dataclass(slots=True)
class _Member:
    """One feature-window served by a slot."""

    feature: FeatureDef
    window: WindowDef
    name: str  # Redis field
    state_hash: str


@dataclass(slots=True)
class _Planned:
    """A slot while it is planned: the feature-windows that share it."""

    key: str
    family: Family
    window: WindowDef
    where: str | None
    source: str | None  # the aggregated field
    members: list[_Member] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Slot:
    """A planned slot and its state: what the operator iterates over."""

    key: str
    """Digest of the slot's definition: the key of its state in an entity's bytes."""
    where: str | None
    source: str | None
    """The aggregated field (``None`` for a slot of counts only)."""
    members: tuple[_Member, ...]
    features: tuple[FeatureDef, ...]
    """The members' features, in the order :meth:`Slot.values` answers them."""
    state_hashes: list[str]
    """Stored next to the slot's state (``[state_hashes, state]``)."""
    impl: Slot


def _event_times(ts: Sequence[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``ts`` as int64, after checking that every time is in ``0 .. MAX_EVENT_TIME_MS``."""
    try:
        tarr = np.asarray(ts, dtype=np.int64)
    except OverflowError:
        tarr = None
    if tarr is None or (tarr.size and (tarr.min() < 0 or tarr.max() > MAX_EVENT_TIME_MS)):
        raise ValueError(
            f"process() needs event times in 0 .. {MAX_EVENT_TIME_MS} (ms, up to "
            "9999-12-31T23:59:59.999Z); decode records with streamfeat.records.Decoder, "
            "which rejects other times as malformed"
        )
    return tarr


def _default_compiler(text: str) -> Predicate:
    from streamfeat.topology.expressions import compile_where

    return compile_where(text)


def _map_header(n: int) -> bytes:
    """msgpack's header of a map of ``n`` entries (fixmap, map 16 or map 32)."""
    return msgpack_header(n, 0x80, b"\xde", b"\xdf")


class _Index(dict[str, int]):
    """Entity id -> row (row 0 stays empty). A new id takes a released row if there is one,
    so rows, and the per-row arrays sized by them, follow the entities that hold state, not
    every entity ever seen."""

    def __init__(self) -> None:
        super().__init__()
        self.keys_by_row: list[str] = [""]
        self.free: list[int] = []

    def __missing__(self, key: str) -> int:
        if self.free:
            row = self.free.pop()
            self.keys_by_row[row] = key
        else:
            row = len(self.keys_by_row)
            self.keys_by_row.append(key)
        self[key] = row
        return row

    def release(self, row: int) -> None:
        del self[self.keys_by_row[row]]
        self.keys_by_row[row] = ""
        self.free.append(row)


def warm_kernels(topologies: Iterable[TopologyDef]) -> bool:
    """Load the compiled kernels now (compiled, or read from numba's cache) rather than in
    the first batch, if the operators of any of ``topologies`` call them (hold a moments
    ring: :attr:`PartitionOperator.calls_kernels`); a topology without rings never imports
    numba. Whether they are loaded; a second call finds them so."""
    if not kernels.COMPILED or not any(
            PartitionOperator(t, 0).calls_kernels for t in topologies):
        return False
    kernels.warm()
    return True


class PartitionOperator:
    """Window state and aggregations of every feature of ``topology`` on one partition.

    ``process`` takes micro-batches in offset order; ``values`` answers as of
    stream time or later; ``due`` lists entities whose values changed by time
    alone; ``take_dirty``/``meta`` and ``load_entities``/``load_meta`` persist
    and restore the state exactly.
    """

    def __init__(
        self,
        topology: TopologyDef,
        partition: int,
        *,
        where_compiler: WhereCompiler | None = None,
        slots: Collection[str] | None = None,
        pure: bool = False,
    ) -> None:
        self.topology = topology
        self.pure = pure
        """Reference window kinds (:mod:`~.windows`) instead of their fast paths
        (:mod:`~.vector`): the same state and values, slower (the property tests' reference)."""
        self.partition = partition
        self.lateness = int(topology.lateness_ms)
        self._compile = where_compiler or _default_compiler
        self._st: int | None = None
        self._seq = 0
        self._index = _Index()
        self._dirty: set[int] = set()
        self._armed = np.full(0, NEVER, dtype=np.int64)  # next change time by row
        self._used = np.zeros(0, dtype=np.int64)  # by row: the batch that last used it
        self._clock = 0  # batches processed or entities loaded: the recency of _used
        self._kept_empty: set[int] = set()  # rows stored empty but still armed
        self.dropped_slots = 0
        """Serialized slots dropped on load because their definition changed."""
        planned = self._plan(topology.features)
        unknown = sorted(set(slots or ()) - {s.key for s in planned})
        if unknown:
            raise ValueError(f"slots {unknown} are not slots of topology {topology.name!r}")
        self._order = {s.key: i for i, s in enumerate(planned)}
        self._slots = [s for s in planned if slots is None or s.key in slots]
        self._held_back = {s.key: s for s in planned if s not in self._slots}
        self._by_key = {s.key: s for s in self._slots}
        self._predicates: dict[str, Predicate] = {}
        self._field_names: tuple[str, ...] = ()
        self._index_slots()
        self._cap = 0
        self._ensure_capacity(1024)

    # -- planning -------------------------------------------------------------

    @staticmethod
    def catalog_of(topology: TopologyDef) -> dict[str, list[str]]:
        """Every slot key of ``topology`` -> the state hashes of its feature-windows.

        Two topologies hold interchangeable state in a slot exactly when they give it the
        same key: the key is a digest of everything that determines the slot's state.
        """
        return {s.key: list(s.state_hashes) for s in PartitionOperator(topology, 0)._slots}

    @property
    def catalog(self) -> dict[str, list[str]]:
        """The slots this operator holds state of (see :meth:`catalog_of`)."""
        return {s.key: list(s.state_hashes) for s in self._slots}

    @property
    def held_back(self) -> tuple[str, ...]:
        """Slot keys of the topology this operator does not hold (``slots=`` left them out)."""
        return tuple(self._held_back)

    def fields_of(self, slot_keys: Collection[str]) -> list[str]:
        """Redis fields served by the given slots (held or held back)."""
        every = [*self._slots, *self._held_back.values()]
        return [m.name for s in every if s.key in slot_keys for m in s.members]

    def _index_slots(self) -> None:
        """Predicates and Redis field names (in topology order) of the slots held."""
        held = {m.name for s in self._slots for m in s.members}
        for s in self._slots:
            if s.where is not None and s.where not in self._predicates:
                self._predicates[s.where] = self._compile(s.where)
        self._field_names = tuple(
            m.name for f in self.topology.features for m in self._members_of(f)
            if m.name in held)

    def _members_of(self, feature: FeatureDef) -> list[_Member]:
        return [
            _Member(feature, w, feature.redis_field(w), feature.state_hash(w))
            for w in feature.windows
        ]

    def _plan(self, features: Sequence[FeatureDef]) -> list[_Slot]:
        slots: dict[str, _Planned] = {}

        def share_key(fam: Family, f: FeatureDef, w: WindowDef, fld: str | None) -> str:
            params: list[int | None] = []
            if fam is Family.DISTINCT:
                params = [f.exact_up_to]
            elif fam is Family.RECENT:
                params = [f.k]
            elif fam is Family.FREQUENCIES:
                # the cap joined the key only when set: states of the default cap keep theirs
                params = [f.k] if f.exact_up_to == TOP_K_EXACT_UP_TO else [f.k, f.exact_up_to]
            text = json.dumps(
                [fam.value, w.canonical(), f.where, fld, params], sort_keys=True
            )
            return text

        ordered = sorted(features, key=lambda f: f.agg is AggKind.COUNT)  # counts join last
        for f in ordered:
            fam = family_of(f.agg)
            for member in self._members_of(f):
                w = member.window
                fld = f.field
                if f.agg is AggKind.COUNT:
                    fld = None
                    for s in slots.values():
                        if (s.family is Family.MOMENTS and s.window.canonical() == w.canonical()
                                and s.where == f.where):
                            fld = s.source
                            break
                key = share_key(fam, f, w, fld)
                slot = slots.get(key)
                if slot is None:
                    slot = slots[key] = _Planned(key, fam, w, f.where, fld)
                slot.members.append(member)
        out = []
        for text, plan in slots.items():
            minmax = any(m.feature.agg in _MINMAX for m in plan.members)
            first = plan.members[0].feature
            w = plan.window
            impl: Slot
            if plan.family is Family.MOMENTS and w.kind in _BUCKETED and not w.exact:
                impl = MomentsRing(Span.of(w), minmax, capacity=1)
            elif w.kind is WindowKind.SESSION:
                session = SessionSlot if self.pure else FastSessionSlot
                impl = session(int(w.size_ms or 0), self.lateness, plan.family, first)
            elif w.exact:
                exact = ExactSlot if self.pure else FastExactSlot
                impl = exact(int(w.size_ms or 0), plan.family, first)
            else:
                bucketed = BucketSlot if self.pure else FastBucketSlot
                impl = bucketed(Span.of(w), plan.family, first)
            digest = hashlib.sha256(f"{text}|{minmax}".encode()).hexdigest()[:16]
            members = tuple(plan.members)
            out.append(_Slot(
                key=digest, where=plan.where, source=plan.source, members=members,
                features=tuple(m.feature for m in members),
                state_hashes=[m.state_hash for m in members], impl=impl,
            ))
        return out

    def _ensure_capacity(self, rows: int) -> None:
        if rows > self._cap:
            # by a quarter, not double: the rows' arrays are most of an entity's memory, and
            # a state budget (streamfeat.pipeline.cache) counts the rows in use
            self._cap = max(rows, self._cap + self._cap // 4)
            armed = np.full(self._cap, NEVER, dtype=np.int64)
            armed[: self._armed.size] = self._armed
            self._armed = armed
            used = np.zeros(self._cap, dtype=np.int64)
            used[: self._used.size] = self._used
            self._used = used
            for s in self._slots:
                s.impl.reserve(self._cap)

    # -- processing -----------------------------------------------------------

    @property
    def stream_time(self) -> int | None:
        """Largest event time seen on this partition (``None`` before the first event)."""
        return self._st

    def process(
        self,
        keys: Sequence[str],
        ts: Sequence[int] | npt.NDArray[np.int64],
        records: Sequence[Mapping[str, Any]],
        fields: Mapping[str, list[Any]] | None = None,
    ) -> ProcessResult:
        """Aggregate one micro-batch (records in partition offset order).

        ``records`` need only ``.get(name)``; ``fields`` may hold aggregated fields as
        columns (one value per record), which saves reading them out of the records.
        """
        n = len(keys)
        if len(ts) != n or len(records) != n:
            raise ValueError(
                f"process() needs one key, timestamp and record per event; got {n} keys, "
                f"{len(ts)} timestamps and {len(records)} records"
            )
        tarr = _event_times(ts)
        late, st = late_mask(tarr, self._st, self.lateness)
        seq0 = self._seq
        self._seq += n
        if n == 0:
            return ProcessResult(late, set())
        if st is None:  # pragma: no cover - late_mask returns a time for a non-empty batch
            raise StateError("internal error: no stream time after a non-empty batch")
        self._st = st
        index = self._index
        rows = np.fromiter(map(index.__getitem__, keys), dtype=np.int64, count=n)
        self._ensure_capacity(len(index.keys_by_row))
        self._mark_used(rows)  # (late events' rows too: every row taken is used)
        all_ok = not late.any()
        accepted = np.flatnonzero(~late)
        if accepted.size == 0:
            return ProcessResult(late, set())

        passing: dict[str | None, npt.NDArray[np.bool_]] = {None: ~late}
        columns: dict[str, list[Any]] = dict(fields or {})  # read once for every where
        for text, pred in self._predicates.items():
            many = getattr(pred, "many", None)  # compile_where's: a batch at a time
            if many is not None:
                m = np.array(many(records, columns), dtype=np.bool_)
                if not all_ok:
                    m &= passing[None]
            else:
                m = np.zeros(n, dtype=np.bool_)
                if all_ok:
                    m[:] = [bool(pred(r)) for r in records]
                else:
                    m[accepted] = [bool(pred(records[i])) for i in accepted.tolist()]
            passing[text] = m
        batch = Batch(rows, tarr, accepted, seq0, st, records, fields, passing)
        for slot in self._slots:
            slot.impl.add(batch, slot.source, slot.where)

        touched_rows = np.unique(rows[accepted]).tolist()
        self._dirty.update(touched_rows)
        keys_by_row = index.keys_by_row
        return ProcessResult(late, {keys_by_row[r] for r in touched_rows})

    # -- reading --------------------------------------------------------------

    @property
    def field_names(self) -> tuple[str, ...]:
        """Redis field names of every feature-window, in the order of :meth:`value_columns`."""
        return self._field_names

    def values(
        self, entity_ids: Iterable[str], as_of: int | None = None
    ) -> dict[str, dict[str, Any]]:
        """Every feature-window of each entity as of ``as_of`` (default: stream time).

        Keys are Redis field names (``orders__5m``); an unknown entity gets the
        values of an empty window. ``as_of`` before stream time is not supported.
        """
        ids = list(entity_ids)
        columns = self.value_columns(ids, as_of)
        names = self._field_names
        if not columns:
            return {eid: {} for eid in ids}
        # every column has one value per id by construction; strict=True costs 30 % here
        return {eid: dict(zip(names, row, strict=False))
                for eid, row in zip(ids, zip(*columns, strict=False), strict=False)}

    def value_columns(
        self, entity_ids: Sequence[str], as_of: int | None = None
    ) -> list[list[Any]]:
        """:meth:`values` as columns: one list per name of :attr:`field_names`, one value
        per entity of ``entity_ids`` (the worker's hot path: no dict per entity)."""
        t = self._as_of(as_of)
        ids = entity_ids
        rows = np.fromiter(map(self._index.get, ids, repeat(0)), dtype=np.int64, count=len(ids))
        m = len(ids)
        columns: dict[str, list[Any]] = {}
        nxt = np.full(m, NEVER, dtype=np.int64)
        for slot in self._slots:
            values, slot_next = slot.impl.values(rows, t, slot.features)
            np.minimum(nxt, slot_next, out=nxt)
            for mem, column in zip(slot.members, values, strict=True):
                columns[mem.name] = column
        self._arm(rows, nxt)
        return [columns[name] for name in self._field_names]

    def _as_of(self, as_of: int | None) -> int:
        if as_of is None:
            return 0 if self._st is None else self._st
        if self._st is not None and as_of < self._st:
            raise ValueError(
                f"values() as of {as_of} is before the stream time {self._st} of partition "
                f"{self.partition}: state only answers as of stream time or later; replay "
                "the records up to that instant to query it"
            )
        # Outside 0 .. LATEST_QUERY_MS every window reads the same (all empty before the
        # first possible event, none changing after the last): keeps the arithmetic in int64.
        return min(max(int(as_of), -1), LATEST_QUERY_MS)

    def _arm_rows(self, rows: npt.NDArray[np.int64]) -> None:
        """Arm ``rows`` (held) with their next change time by time alone as of stream time:
        what :meth:`value_columns` arms, without making their values (a state cache loads
        entities a chunk at a time; most are read back for an event or an expiry that
        computes their values anyway)."""
        t = self._as_of(None)
        nxt = np.full(rows.size, NEVER, dtype=np.int64)
        for slot in self._slots:
            impl = slot.impl
            if isinstance(impl, MomentsRing):
                _, slot_next = impl.query(rows, t)  # (the moments, not the value columns)
            else:
                _, slot_next = impl.values(rows, t, slot.features)
            np.minimum(nxt, slot_next, out=nxt)
        self._arm(rows, nxt)

    def _arm(self, rows: npt.NDArray[np.int64], nxt: npt.NDArray[np.int64]) -> None:
        known = rows != 0
        self._armed[rows[known]] = nxt[known]

    def due(self, as_of: int) -> set[str]:
        """Entities whose values can have changed by time alone at or before ``as_of``.

        Each is returned once; it is re-armed when its values are next computed
        (relative to the ``as_of`` of that ``values()`` call). A vectorized scan
        of one next-change time per entity: no per-entity work until it is due.
        """
        armed = self._armed
        # Every time armed is below LATEST_QUERY_MS, and NEVER (int64's maximum) is above:
        # a later as_of (up to int64's maximum itself) must not take NEVER for a time.
        rows = np.flatnonzero(armed <= min(as_of, LATEST_QUERY_MS))
        if rows.size == 0:
            return set()
        armed[rows] = NEVER
        keys = self._index.keys_by_row
        due = rows.tolist()
        # Their state changes by time too (buckets fall out): stored again at the next
        # commit, which also releases the rows of those left with nothing.
        self._dirty.update(due)
        return {keys[r] for r in due}

    def entity_ids(self) -> list[str]:
        """Entities holding a row of state (see :attr:`entity_count`)."""
        return list(self._index)

    @property
    def calls_kernels(self) -> bool:
        """Whether a slot is a moments ring: only rings call the compiled kernels
        (:mod:`~.kernels`), so a topology without one never imports numba."""
        return any(isinstance(s.impl, MomentsRing) for s in self._slots)

    @property
    def entity_count(self) -> int:
        """Entities holding a row of state (released once their state is empty and stored)."""
        return len(self._index)

    def approx_state_bytes(self) -> int:
        """Rough in-memory size of the state (for the state-size metric).

        Exact for the numpy rings; other slots are estimated at 120 bytes per
        bucket, session or kept event.
        """
        return sum(slot.impl.approx_bytes() for slot in self._slots)

    # -- persistence ----------------------------------------------------------

    def _dump(self, rows: list[int], st: int | None = None) -> list[bytes]:
        """Each row's state bytes: ``msgpack([STATE_FORMAT_VERSION, {slot key: [state
        hashes, slot state]}])``, the slots in order, those without state left out.

        Built as msgpack lays it out, by joining encoded pieces (a value's encoding does not
        depend on what holds it): no dict or list per row and slot, one ``encode`` per slot
        state (this runs for every changed entity at every commit; with a million users
        nearly every event changes an entity of its own). ``st``: as of that stream time
        (default: the operator's)."""
        if st is None:
            st = 0 if self._st is None else self._st
        encode = msgspec.msgpack.encode
        columns: list[list[bytes | None]] = []
        for slot in self._slots:
            prefix = encode(slot.key) + b"\x92" + encode(slot.state_hashes)
            impl = slot.impl
            if isinstance(impl, FastBucketSlot):  # keeps its buckets' bytes between commits
                columns.append([None if data is None else prefix + data
                                for data in impl.dump_encoded(rows, st)])
                continue
            columns.append([None if obj is None else prefix + encode(obj)
                            for obj in impl.dump(rows, st)])
        if not columns:
            return [EMPTY_STATE] * len(rows)
        head = b"\x92" + encode(STATE_FORMAT_VERSION)
        full = head + _map_header(len(columns))
        out: list[bytes] = []
        append = out.append
        join = b"".join
        for entries in zip(*columns, strict=True):
            if None in entries:
                present = [e for e in entries if e is not None]
                append(head + _map_header(len(present)) + join(present))
            else:
                append(full + join(entries))
        return out

    def take_dirty(self) -> list[tuple[str, bytes]]:
        """Serialized state of each entity changed since the last call, by entity id.

        An entity whose state has become empty is included too (its bytes hold
        no slot), so the store can overwrite or delete it; its row is then released
        if no change by time alone is pending for it (its served values are already
        the empty ones), and the entity starts afresh if it comes back.
        """
        keys = self._index.keys_by_row
        rows = sorted(self._dirty)
        self._dirty.clear()
        data = self._dump(rows)
        out = list(zip([keys[r] for r in rows], data, strict=True))
        kept_empty = self._kept_empty
        if EMPTY_STATE not in data:  # the common case, without a step per row
            if kept_empty:
                kept_empty.difference_update(rows)
            return out
        released: list[int] = []
        for row, blob in zip(rows, data, strict=True):
            if blob != EMPTY_STATE:
                kept_empty.discard(row)
            elif self._armed[row] == NEVER:
                kept_empty.discard(row)
                released.append(row)
            else:
                kept_empty.add(row)
        self._release_rows(released)
        return out

    def dump_all(self) -> list[tuple[str, bytes]]:
        """Serialized state of every entity that has state (tests, full snapshots)."""
        keys = self._index.keys_by_row
        rows = sorted(self._index.values())
        return [(keys[r], data) for r, data in zip(rows, self._dump(rows), strict=True)
                if data != EMPTY_STATE]

    def meta(self, *, fields: Mapping[str, str] | None = None) -> bytes:
        """Partition-level state: format version, stream time, event sequence, and what the
        state holds: the slots (:attr:`catalog`) and the Redis field of each feature-window
        with its state hash (so that a later definition can tell what changed). ``fields``:
        record those instead (the fields Redis still serves while a definition change is
        being applied)."""
        return msgspec.msgpack.encode({
            "v": STATE_FORMAT_VERSION,
            "topology": self.topology.name,
            "partition": self.partition,
            "stream_time": self._st,
            "seq": self._seq,
            "slots": self.catalog,
            "fields": dict(fields) if fields is not None
            else {m.name: m.state_hash for s in self._slots for m in s.members},
        })

    @staticmethod
    def stored_catalog(meta: bytes) -> tuple[dict[str, list[str]], dict[str, str]] | None:
        """The slots and fields (name -> state hash) a :meth:`meta` says its state holds;
        ``None`` for meta written before streamfeat recorded them."""
        try:
            obj = msgspec.msgpack.decode(meta)
        except msgspec.DecodeError:
            return None
        if not isinstance(obj, dict) or "slots" not in obj or "fields" not in obj:
            return None
        return dict(obj["slots"]), dict(obj["fields"])

    def adopt(self, other: PartitionOperator) -> list[str]:
        """Take over the slots of ``other`` that this operator holds back.

        ``other`` ran the same topology with ``slots=`` some of this operator's held-back
        slots, over the same records of the partition (it recomputed them from history).
        Its state of those slots becomes this operator's, entity by entity, exactly as
        stored state would be loaded. Returns the entities ``other`` knows (every entity
        it saw); they are marked changed, and their timers re-armed.
        """
        moved = [s for s in other._slots if s.key in self._held_back]
        if not moved:
            return []
        index = self._index
        other_keys = other._index.keys_by_row
        other_rows = sorted(other._index.values())
        entities = [other_keys[r] for r in other_rows]
        rows = [index[e] for e in entities]
        self._ensure_capacity(len(index.keys_by_row))
        self._mark_used(np.asarray(rows, dtype=np.int64))
        st = 0 if other._st is None else other._st
        for theirs in moved:
            mine = self._held_back.pop(theirs.key)
            mine.impl.reserve(self._cap)
            for row, obj in zip(rows, theirs.impl.dump(other_rows, st), strict=True):
                if obj is not None:
                    mine.impl.load(row, obj)
            self._slots.append(mine)
            self._by_key[mine.key] = mine
        self._slots.sort(key=lambda s: self._order[s.key])
        self._index_slots()
        # Later events must order after every event the adopted state holds (ties by offset).
        self._seq = max(self._seq, other._seq)
        if self._st is None:
            self._st = other._st
        self._dirty.update(rows)
        if rows and self._st is not None:
            self.values(entities)  # arms the timers of the adopted state
        return entities

    def load_meta(self, data: bytes) -> None:
        """Restore what :meth:`meta` wrote (call before :meth:`load_entities`)."""
        try:
            obj = msgspec.msgpack.decode(data)
            version, st, seq = obj["v"], obj["stream_time"], obj["seq"]
        except (msgspec.DecodeError, KeyError, TypeError) as exc:
            raise StateError(
                f"partition {self.partition} state metadata is corrupt ({exc}); delete the "
                "partition's state and replay it from the snapshots"
            ) from exc
        if version != STATE_FORMAT_VERSION:
            raise StateError(
                f"partition {self.partition} state has format {version}, this streamfeat "
                f"reads {STATE_FORMAT_VERSION}; delete the state directory and replay"
            )
        self._st = None if st is None else int(st)
        self._seq = int(seq)

    def load_entities(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Restore entity states written by :meth:`take_dirty` (an entity given twice: the
        last state given).

        Slots whose definition changed (unknown key) are dropped and counted in
        :attr:`dropped_slots`; those feature-windows start empty.
        """
        index = self._index
        payloads: dict[str, dict[str, Any]] = {}
        for entity, data in items:
            try:
                version, payload = msgspec.msgpack.decode(data)
            except (msgspec.DecodeError, TypeError, ValueError) as exc:
                raise StateError(
                    f"state of entity {entity!r} on partition {self.partition} is corrupt "
                    f"({exc}); delete the partition's state and replay it"
                ) from exc
            if version != STATE_FORMAT_VERSION:
                raise StateError(
                    f"state of entity {entity!r} has format {version}, this streamfeat reads "
                    f"{STATE_FORMAT_VERSION}; delete the state directory and replay"
                )
            if payload:  # else nothing to restore (stored by an earlier version): no row
                payloads[entity] = payload
        if not payloads:
            return
        # rows of entities held already are cleared; a row taken now holds nothing in any
        # slot (rows are cleared before they are released: _release_rows)
        replaced = [index[entity] for entity in payloads if entity in index]
        rows = [index[entity] for entity in payloads]
        self._ensure_capacity(len(index.keys_by_row))
        by_slot: dict[str, tuple[list[int], list[object]]] = {}
        for row, payload in zip(rows, payloads.values(), strict=True):
            for key, (_members, obj) in payload.items():
                if key not in self._by_key:
                    self.dropped_slots += 1
                    continue
                got = by_slot.get(key)
                if got is None:
                    got = by_slot[key] = ([], [])
                got[0].append(row)
                got[1].append(obj)
        row_array = np.asarray(rows, dtype=np.int64)
        self._clear_rows(replaced)
        for slot in self._slots:
            impl = slot.impl
            slot_rows, objs = by_slot.get(slot.key, ([], []))
            if isinstance(impl, MomentsRing):
                impl.load_many(slot_rows, objs)
            else:
                for row, obj in zip(slot_rows, objs, strict=True):
                    impl.load(row, obj)
        self._mark_used(row_array)
        if self._st is not None:
            self._arm_rows(row_array)  # when each restored entity next changes by time

    # -- a working set under a memory budget (streamfeat.pipeline.cache) --------

    def missing(self, entity_ids: Iterable[str]) -> list[str]:
        """The distinct entities of ``entity_ids`` that hold no row here (in first-seen
        order): evicted ones, and ones never seen."""
        index = self._index
        return [e for e in dict.fromkeys(entity_ids) if e not in index]

    def due_among(self, entity_ids: Iterable[str], as_of: int) -> list[str]:
        """Those of ``entity_ids`` held here whose values change by time alone at or before
        ``as_of`` (they are not marked changed, unlike :meth:`due`)."""
        index = self._index
        armed = self._armed
        limit = min(as_of, LATEST_QUERY_MS)
        return [e for e in entity_ids if e in index and armed[index[e]] <= limit]

    def emptied(self, entity_ids: Iterable[str], as_of: int) -> list[str]:
        """Those of ``entity_ids`` held here whose state, as of ``as_of``, is empty: their
        values read as of ``as_of`` (what arms them) are those of empty windows, they next
        change by time never, and they store nothing (the bytes :meth:`take_dirty` would
        give at that stream time hold no slot). For entities about to be evicted (the
        state cache's expiry reads them before the batch moves the stream time): the
        check drops from their state the buckets no read at ``as_of`` can see."""
        index = self._index
        rows = [index[e] for e in entity_ids if e in index]
        armed = self._armed
        rows = [r for r in rows if armed[r] == NEVER]
        if not rows:
            return []
        keys = index.keys_by_row
        return [keys[r] for r, data in zip(rows, self._dump(rows, as_of), strict=True)
                if data == EMPTY_STATE]

    def unchanged(self, entity_ids: Iterable[str]) -> list[str]:
        """Those of ``entity_ids`` not changed since the last :meth:`take_dirty`: held with
        their state as last given, or not held at all."""
        index, dirty = self._index, self._dirty
        return [e for e in entity_ids if e not in index or index[e] not in dirty]

    def evictable(self) -> int:
        """Entities that :meth:`evict` could drop now: those with a row whose state is
        stored as it stands (not changed since the last :meth:`take_dirty`)."""
        return len(self._index) - len(self._dirty) - len(self._kept_empty)

    def evict(self, count: int, keep: Iterable[str] = ()) -> list[tuple[str, int]]:
        """Drop from memory the state of up to ``count`` entities, the least recently used
        first (never those of ``keep``), among those whose state the last :meth:`take_dirty`
        gave as it stands (so
        the store holds it exactly: :meth:`load_entities` brings it back). Entities stored
        empty but still due to change by time are kept. Returns each dropped entity with
        its next change time by time alone (:data:`NEVER` if none): the caller must make
        it due by then (it is not in :meth:`due` any more)."""
        if count <= 0:
            return []
        rows = self._clean(self._held_rows())
        index = self._index
        kept = np.array([index[e] for e in keep if e in index], dtype=np.int64)
        if kept.size and rows.size:
            rows = rows[~np.isin(rows, kept)]
        if count < rows.size:
            pool = max(count, min(_EVICT_POOL * count, rows.size // 2))
            if pool < rows.size:  # the least recently used
                rows = rows[np.argpartition(self._used[rows], pool - 1)[:pool]]
            if count < rows.size:  # of them, those next due to change by time the latest
                rows = rows[np.argpartition(-self._armed[rows], count - 1)[:count]]
        return self._evict_rows(rows)

    def _mark_used(self, rows: npt.NDArray[np.int64]) -> None:
        """``rows`` used now (the recency :meth:`evict` reads); every row taken is marked
        at once, so that :meth:`_held_rows` finds it."""
        self._clock += 1
        self._used[rows] = self._clock

    def _held_rows(self) -> npt.NDArray[np.int64]:
        """Every row an entity holds: those used since they were taken (a row is used, by
        :meth:`process`, :meth:`load_entities` or :meth:`adopt`, as soon as it is taken,
        and unused again when released), read from an array rather than the index."""
        return np.flatnonzero(self._used[: len(self._index.keys_by_row)])

    def evict_entities(self, entity_ids: Iterable[str]) -> list[tuple[str, int]]:
        """:meth:`evict` of the given entities (those it may drop; others are skipped)."""
        index = self._index
        rows = np.array([index[e] for e in dict.fromkeys(entity_ids) if e in index],
                        dtype=np.int64)
        return self._evict_rows(self._clean(rows))

    def _clean(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Those of ``rows`` whose state is stored as it stands."""
        if rows.size and (self._dirty or self._kept_empty):
            busy = np.fromiter(self._dirty | self._kept_empty, dtype=np.int64)
            rows = rows[~np.isin(rows, busy)]
        return rows

    def _evict_rows(self, rows: npt.NDArray[np.int64]) -> list[tuple[str, int]]:
        if rows.size == 0:
            return []
        armed = self._armed[rows].tolist()
        keys = self._index.keys_by_row
        out = [(keys[r], t) for r, t in zip(rows.tolist(), armed, strict=True)]
        self._armed[rows] = NEVER
        self._release_rows(rows.tolist())
        return out

    def _clear_rows(self, rows: list[int]) -> None:
        """Empty every slot's state of ``rows`` (a ring's in one call)."""
        if not rows:
            return
        row_array = np.asarray(rows, dtype=np.int64)
        for slot in self._slots:
            impl = slot.impl
            if isinstance(impl, MomentsRing):
                impl.clear_many(row_array)
            else:
                for row in rows:
                    impl.clear(row)

    def _release_rows(self, rows: list[int]) -> None:
        """Clear ``rows`` and give them back to the index (a new entity may take one: it
        finds them empty, which :meth:`load_entities` relies on)."""
        self._clear_rows(rows)
        release = self._index.release
        for row in rows:
            release(row)
        self._used[np.asarray(rows, dtype=np.int64)] = 0

    def state_bytes(self) -> int:
        """Rough memory of the state of the entities held: :meth:`approx_state_bytes` plus
        about :data:`ROW_OVERHEAD_BYTES` per entity (its id, index entry and row arrays)."""
        rows = len(self._index)
        held = 0
        for slot in self._slots:
            impl = slot.impl
            held += impl.live_bytes(rows) if isinstance(impl, MomentsRing) else impl.approx_bytes()
        return held + ROW_OVERHEAD_BYTES * rows
