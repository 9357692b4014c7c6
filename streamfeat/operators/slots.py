"""What the partition operator asks of a window kind: the :class:`Slot` protocol.

A *slot* holds, for every entity of a partition, the state of one or more
feature-windows that can share it (same window, ``where`` and field, and one
aggregation family). Entities are small integers (*rows*) handed out by the
operator. Every window kind (:class:`~streamfeat.operators.rings.MomentsRing`,
:class:`~streamfeat.operators.windows.BucketSlot`,
:class:`~streamfeat.operators.windows.SessionSlot`,
:class:`~streamfeat.operators.windows.ExactSlot`) answers the same calls, so the
operator never asks which kind it holds.

A slot is fed a whole micro-batch at a time (:class:`Batch`), never one event:
the moments ring is updated with a few numpy calls per batch, and the other kinds
loop over the events inside one call instead of paying a call per event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from itertools import repeat
from operator import is_not, methodcaller
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from streamfeat.topology.definitions import FeatureDef

__all__ = ["NEVER", "Batch", "Dumped", "Slot"]

NEVER = np.iinfo(np.int64).max
"""Next-change time of a state that never changes without new events. No time of data
can equal it: event times are at most ``MAX_EVENT_TIME_MS`` (below 2**48) and durations
at most ``MAX_DURATION_MS``, so every real next-change time is below ``LATEST_QUERY_MS``
(:mod:`streamfeat.operators.partition`), far below int64's maximum."""

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

Dumped = bytes | list[Any]
"""One row's state in one slot as stored (msgpack-able): packed cells for the moments
rings, a list for the other kinds (it holds the events' values, which are any JSON-able
value)."""


_PLAIN_NUMBERS = frozenset({float, int, bool, type(None)})


def _floats(values: list[Any]) -> tuple[F64, B]:
    """Numbers as float64 and a validity mask (missing, None, NaN, non-numbers invalid)."""
    if not values:
        x = np.zeros(0)
    elif set(map(type, values)) <= _PLAIN_NUMBERS:
        # numpy converts each as float() does, None to NaN (6x the loop below on a column
        # with a null); never with a str among them (it would parse "1.5")
        x = np.array(values, dtype=np.float64)
    else:
        x = np.array(
            [float(v) if isinstance(v, int | float) else np.nan for v in values],
            dtype=np.float64,
        )
    valid = ~np.isnan(x)
    return x, valid


def msgpack_header(n: int, fix: int, wide16: bytes, wide32: bytes) -> bytes:
    """msgpack's header of a container of ``n`` items: ``fix | n`` below 16, else ``wide16``
    or ``wide32`` and the count (a map: ``0x80``, ``0xde``, ``0xdf``; an array: ``0x90``,
    ``0xdc``, ``0xdd``). The stored state is joined from encoded pieces under such
    headers (``PartitionOperator._dump``, ``FastBucketSlot.dump_encoded``)."""
    if n < 16:
        return bytes((fix | n,))
    if n < 1 << 16:
        return wide16 + n.to_bytes(2, "big")
    return wide32 + n.to_bytes(4, "big")


class Batch:
    """One micro-batch, in the forms the window kinds read.

    Events are addressed by *position* (index in the batch, offset order). Every
    form but the arrays given is built on first use and then shared by all slots:
    a field read out of the records once serves every slot aggregating it, one sort
    by entity serves every moments ring, the Python lists serve the per-event kinds.
    """

    def __init__(
        self,
        rows: I64,
        ts: I64,
        accepted: I64,
        first_seq: int,
        stream_time: int,
        records: Sequence[Mapping[str, Any]],
        fields: Mapping[str, list[Any]] | None,
        passing: Mapping[str | None, B],
    ) -> None:
        self.rows = rows
        """Row of the entity of each event."""
        self.ts = ts
        """Event time of each event."""
        self.accepted = accepted
        """Positions of the events that are not late, ascending."""
        self.first_seq = first_seq
        """Sequence number of position 0 in the partition (orders events of equal ``ts``)."""
        self.stream_time = stream_time
        """Stream time after the batch: what no later query can be before."""
        self._records = records
        self._columns: dict[str | None, list[Any]] = {}
        if fields:
            self._columns.update(fields)
        self._numbers: dict[str | None, tuple[F64, B]] = {}
        self._present: dict[str | None, B] = {}
        self._passing = passing
        self._groups: dict[tuple[str | None, int, int], tuple[I64, list[Any]]] = {}

    @property
    def size(self) -> int:
        return len(self._records)

    def passes(self, where: str | None) -> B:
        """By position: accepted and passing ``where`` (``None``: accepted)."""
        return self._passing[where]

    def column(self, field: str | None) -> list[Any]:
        """By position: the value of ``field`` (``None`` where missing; all ``None`` for
        no field, as for ``count``)."""
        got = self._columns.get(field)
        if got is None:
            if field is None:
                got = [None] * self.size
            else:
                got = list(map(methodcaller("get", field), self._records))
            self._columns[field] = got
        return got

    def present(self, field: str | None) -> B:
        """By position: whether ``field`` has a value (is not ``None`` or missing)."""
        got = self._present.get(field)
        if got is None:
            column = self.column(field)
            got = self._present[field] = np.fromiter(
                map(is_not, column, repeat(None)), dtype=np.bool_, count=len(column))
        return got

    def numbers(self, field: str | None) -> tuple[F64, B]:
        """By position: ``field`` as float64 and whether it is a number (not NaN)."""
        got = self._numbers.get(field)
        if got is None:
            if field is None:
                got = (np.zeros(self.size), np.zeros(self.size, dtype=np.bool_))
            else:
                got = _floats(self.column(field))
            self._numbers[field] = got
        return got

    def bucket_groups(self, where: str | None, hop: int,
                      keep: int) -> tuple[I64, list[tuple[int, int, int, int]]]:
        """The positions passing ``where`` whose bucket (``ts // hop``; ``0`` for ``hop``
        ``0``) is at least ``keep``, ordered by ``(row, bucket, position)``, and their
        groups ``(row, bucket, lo, hi)``: ``positions[lo:hi]`` are the group's events in
        offset order. Shared by the bucketed slots of one ``where``, hop and first kept
        bucket; not to be modified."""
        key = (where, hop, keep)
        got = self._groups.get(key)
        if got is not None:
            return got
        pos = np.flatnonzero(self.passes(where))
        buckets = self.ts[pos] // hop if hop else np.zeros(pos.size, dtype=np.int64)
        live = buckets >= keep
        pos, buckets = pos[live], buckets[live]
        groups: list[tuple[int, int, int, int]] = []
        if pos.size:
            # a stable sort: a group's events stay in offset order
            rows = self.rows[pos]
            order = np.lexsort((buckets, rows))
            pos, buckets, rows = pos[order], buckets[order], rows[order]
            cut = np.flatnonzero((rows[1:] != rows[:-1]) | (buckets[1:] != buckets[:-1]))
            bounds = np.r_[0, cut + 1, pos.size].tolist()
            groups = list(zip(rows[bounds[:-1]].tolist(), buckets[bounds[:-1]].tolist(),
                              bounds[:-1], bounds[1:], strict=True))
        got = self._groups[key] = (pos, groups)
        return got

    @cached_property
    def by_entity(self) -> I64:
        """Accepted positions sorted by ``(row, ts, position)``."""
        accepted = self.accepted
        rows, ts = self.rows[accepted], self.ts[accepted]
        tmin = int(ts.min())
        span = int(ts.max()) - tmin + 1
        if int(rows.max()) * span < 2**62:
            order = np.argsort(rows * span + (ts - tmin), kind="stable")
        else:
            order = np.lexsort((ts, rows))
        sorted_positions: I64 = accepted[order]
        return sorted_positions

    @cached_property
    def row_list(self) -> list[int]:
        """:attr:`rows` as a list (the per-event kinds index it by position)."""
        return self.rows.tolist()  # type: ignore[no-any-return]

    @cached_property
    def ts_list(self) -> list[int]:
        """:attr:`ts` as a list."""
        return self.ts.tolist()  # type: ignore[no-any-return]

    @cached_property
    def accepted_list(self) -> list[int]:
        """:attr:`accepted` as a list."""
        return self.accepted.tolist()  # type: ignore[no-any-return]

    @cached_property
    def touched_rows(self) -> set[int]:
        """Rows with an accepted event in the batch."""
        return set(self.rows[self.accepted].tolist())


class Slot(Protocol):
    """The state of the feature-windows sharing one slot, for every row (see module doc).

    ``features`` are those of the slot's feature-windows, in a fixed order; ``field``
    and ``where`` those they share. Queries (``values``, ``dump``) are never before
    stream time, which is what lets a slot drop what no such query can read.
    """

    def reserve(self, rows: int) -> None:
        """Make room for rows ``0 .. rows - 1`` (the operator grows its rows in steps)."""
        ...

    def add(self, batch: Batch, field: str | None, where: str | None) -> None:
        """Aggregate the accepted events of ``batch``: those passing ``where`` (all of
        them, for the session boundaries) with their value of ``field``."""
        ...

    def values(
        self, rows: I64, t: int, features: Sequence[FeatureDef]
    ) -> tuple[list[list[Any]], I64]:
        """Each feature's values for ``rows`` (which may repeat; row 0 is an empty row)
        as of ``t``, one list per feature, and each row's next change time after ``t``
        by time alone (:data:`NEVER` if none)."""
        ...

    def dump(self, rows: list[int], st: int) -> Sequence[Dumped | None]:
        """Each row's state (distinct rows), ``None`` when the row holds nothing here;
        drops first what no query at or after stream time ``st`` can read."""
        ...

    def load(self, row: int, obj: object) -> None:
        """Restore what :meth:`dump` gave for a row (``obj`` is as decoded by msgpack)."""
        ...

    def clear(self, row: int) -> None:
        """Drop the row's state (its row is released or about to be restored)."""
        ...

    def approx_bytes(self) -> int:
        """Rough memory held by the state, for the state-size metric."""
        ...
