"""Raw Kafka records as the worker and the replay carry them: :class:`RecordBatch`.

Millions of records a minute go from the consumer to the operators and the snapshot
writer. Building one Python object per record cost more than everything the operators do
(measured: 1.5 µs a record for a named tuple, 0.25 µs for the four columns below), so a
batch is kept as columns, one list per field. :class:`RawRecord` is still what one record
looks like where one record is needed (dead letters, tests): indexing a batch builds it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from typing import Any, NamedTuple, overload

__all__ = [
    "ORIGIN_OFFSET_HEADER",
    "ORIGIN_PARTITION_HEADER",
    "Origins",
    "RawRecord",
    "RecordBatch",
    "as_batch",
]

ORIGIN_PARTITION_HEADER = "streamfeat-origin-partition"
"""Header of a re-keyed record: the source partition it was first written to."""
ORIGIN_OFFSET_HEADER = "streamfeat-origin-offset"
"""Header of a re-keyed record: its offset in the source partition."""


class RawRecord(NamedTuple):
    """One Kafka record as consumed (or as read back from a snapshot)."""

    partition: int
    offset: int
    kafka_ts: int
    key: bytes | None
    value: bytes | None


class RecordBatch(Sequence[RawRecord]):
    """Records of one partition in offset order, stored as columns.

    A read-only sequence of :class:`RawRecord` (indexing and iterating build them); the hot
    path reads the columns. Slicing returns a batch. The columns are shared, never copied,
    by whoever receives the batch: treat them as read-only.
    """

    __slots__ = ("kafka_ts", "keys", "offsets", "origins", "partition", "values")

    def __init__(
        self,
        partition: int,
        offsets: list[int],
        kafka_ts: list[int],
        keys: list[bytes | None],
        values: list[bytes | None],
        origins: Origins | None = None,
    ) -> None:
        n = len(offsets)
        if len(kafka_ts) != n or len(keys) != n or len(values) != n or (
                origins is not None and len(origins) != n):
            raise ValueError(
                f"RecordBatch columns differ in length: {n} offsets, {len(kafka_ts)} "
                f"timestamps, {len(keys)} keys, {len(values)} values"
            )
        self.partition = partition
        self.offsets = offsets
        self.kafka_ts = kafka_ts
        self.keys = keys
        self.values = values
        self.origins = origins
        """Where each record was first written, for a re-keyed stream (``None`` otherwise)."""

    @classmethod
    def empty(cls, partition: int) -> RecordBatch:
        return cls(partition, [], [], [], [])

    @classmethod
    def of(cls, records: Iterable[RawRecord], partition: int | None = None) -> RecordBatch:
        """A batch of records of one partition (``partition`` is needed when there are none)."""
        rows = list(records)
        if not rows:
            if partition is None:
                raise ValueError("RecordBatch.of() needs a partition when there are no records")
            return cls.empty(partition)
        p = rows[0].partition if partition is None else partition
        for r in rows:
            if r.partition != p:
                raise ValueError(
                    f"a RecordBatch holds one partition; got records of {p} and {r.partition}"
                )
        _parts, offsets, kafka_ts, keys, values = (list(c) for c in zip(*rows, strict=True))
        return cls(p, offsets, kafka_ts, keys, values)

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, index: int) -> RawRecord: ...

    @overload
    def __getitem__(self, index: slice) -> RecordBatch: ...

    def __getitem__(self, index: int | slice) -> RawRecord | RecordBatch:
        if isinstance(index, slice):
            origins = None if self.origins is None else self.origins[index]
            return RecordBatch(self.partition, self.offsets[index], self.kafka_ts[index],
                               self.keys[index], self.values[index], origins)
        return RawRecord(self.partition, self.offsets[index], self.kafka_ts[index],
                         self.keys[index], self.values[index])

    def __iter__(self) -> Iterator[RawRecord]:
        return map(RawRecord, repeat(self.partition), self.offsets, self.kafka_ts,
                   self.keys, self.values)

    def __repr__(self) -> str:
        if not self.offsets:
            return f"RecordBatch(partition={self.partition}, empty)"
        return (f"RecordBatch(partition={self.partition}, offsets {self.offsets[0]}.."
                f"{self.offsets[-1]}, {len(self.offsets)} records)")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordBatch):
            return (self.partition == other.partition and self.offsets == other.offsets
                    and self.kafka_ts == other.kafka_ts and self.keys == other.keys
                    and self.values == other.values and self.origins == other.origins)
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable columns: not hashable

    def since(self, offset: int) -> RecordBatch:
        """The records at ``offset`` or later (all of them, without a copy, in the usual case)."""
        offsets = self.offsets
        if not offsets or offsets[0] >= offset:
            return self
        return self[bisect_left(offsets, offset):]

    def extend(self, other: RecordBatch) -> None:
        """Append ``other``'s records (same partition, later offsets) to this batch."""
        if other.partition != self.partition:
            raise ValueError(
                f"cannot extend a batch of partition {self.partition} with partition "
                f"{other.partition}"
            )
        if not other.offsets:
            return
        if not self.offsets:  # an empty batch takes the other's kind
            self.origins = None if other.origins is None else Origins([], [])
        if (self.origins is None) != (other.origins is None):
            raise ValueError("cannot mix re-keyed records (with origins) and records without")
        if self.origins is not None and other.origins is not None:
            self.origins.extend(other.origins)
        self.offsets.extend(other.offsets)
        self.kafka_ts.extend(other.kafka_ts)
        self.keys.extend(other.keys)
        self.values.extend(other.values)

    def take(self, positions: Sequence[int]) -> RecordBatch:
        """The records at ``positions`` (in that order)."""
        o, t, k, v = self.offsets, self.kafka_ts, self.keys, self.values
        origins = None if self.origins is None else self.origins.take(positions)
        return RecordBatch(self.partition, [o[i] for i in positions], [t[i] for i in positions],
                           [k[i] for i in positions], [v[i] for i in positions], origins)

    def origin(self, index: int) -> tuple[int, int] | None:
        """(partition, offset) where record ``index`` was first written, if re-keyed."""
        if self.origins is None:
            return None
        return self.origins.partitions[index], self.origins.offsets[index]


class Origins:
    """Where the records of a re-keyed stream were first written: source partition and
    offset per record (the source topic is the topology's). Carried in the repartition
    topic's headers, kept in snapshots, used to drop a record the first stage wrote twice
    and to name the original record in a dead letter."""

    __slots__ = ("offsets", "partitions")

    def __init__(self, partitions: list[int], offsets: list[int]) -> None:
        if len(partitions) != len(offsets):
            raise ValueError("Origins columns differ in length")
        self.partitions = partitions
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: slice) -> Origins:
        return Origins(self.partitions[index], self.offsets[index])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Origins):
            return NotImplemented
        return self.partitions == other.partitions and self.offsets == other.offsets

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_headers(cls, headers: Sequence[Any]) -> Origins:
        """Origins read from each record's headers (a record without them: ``-1``)."""
        partitions: list[int] = []
        offsets: list[int] = []
        ph, oh = ORIGIN_PARTITION_HEADER, ORIGIN_OFFSET_HEADER
        for record_headers in headers:
            if (record_headers and len(record_headers) == 2  # as the first stage writes them
                    and record_headers[0][0] == ph and record_headers[1][0] == oh):
                partitions.append(int(record_headers[0][1]))
                offsets.append(int(record_headers[1][1]))
                continue
            p = o = -1
            for name, value in record_headers or ():
                if name == ORIGIN_PARTITION_HEADER and value is not None:
                    p = int(value)
                elif name == ORIGIN_OFFSET_HEADER and value is not None:
                    o = int(value)
            partitions.append(p)
            offsets.append(o)
        return cls(partitions, offsets)

    def extend(self, other: Origins) -> None:
        self.partitions.extend(other.partitions)
        self.offsets.extend(other.offsets)

    def take(self, positions: Sequence[int]) -> Origins:
        p, o = self.partitions, self.offsets
        return Origins([p[i] for i in positions], [o[i] for i in positions])


def as_batch(records: Sequence[RawRecord], partition: int | None = None) -> RecordBatch:
    """``records`` as a :class:`RecordBatch` (itself when it already is one)."""
    if isinstance(records, RecordBatch):
        return records
    return RecordBatch.of(records, partition)
