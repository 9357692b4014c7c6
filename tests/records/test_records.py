"""RecordBatch: the columnar batch behaves as the sequence of RawRecords it stands for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamfeat.records import RawRecord, RecordBatch, as_batch


def rows(partition: int, offsets: list[int]) -> list[RawRecord]:
    return [RawRecord(partition, o, 1_000 + o, None if o % 3 else b"k%d" % o,
                      None if o % 5 == 4 else b"v%d" % o) for o in offsets]


@given(st.lists(st.integers(0, 10**6), unique=True).map(sorted), st.integers(-3, 10**6 + 3))
def test_sequence_slicing_and_since(offsets: list[int], cut: int) -> None:
    records = rows(2, offsets)
    batch = RecordBatch.of(records, 2)
    assert len(batch) == len(records) and list(batch) == records and batch == records
    for i in range(len(records)):
        assert batch[i] == records[i] and batch[i - len(records)] == records[i]
    assert list(batch[1:-1]) == records[1:-1] and isinstance(batch[1:], RecordBatch)
    assert list(batch.since(cut)) == [r for r in records if r.offset >= cut]
    picks = list(range(0, len(records), 2))
    assert list(batch.take(picks)) == [records[i] for i in picks]


def test_since_without_a_copy_and_extend() -> None:
    batch = RecordBatch.of(rows(0, [5, 6, 7]))
    assert batch.since(5) is batch and batch.since(0) is batch
    more = RecordBatch.of(rows(0, [8, 9]))
    batch.extend(more)
    assert batch.offsets == [5, 6, 7, 8, 9] and list(batch)[3:] == list(more)
    assert as_batch(batch) is batch and as_batch(rows(0, [1])) == rows(0, [1])


def test_mistakes_are_refused() -> None:
    with pytest.raises(ValueError, match="one partition"):
        RecordBatch.of([*rows(0, [1]), *rows(1, [2])])
    with pytest.raises(ValueError, match="needs a partition"):
        RecordBatch.of([])
    with pytest.raises(ValueError, match="differ in length"):
        RecordBatch(0, [1, 2], [1], [None], [None])
    with pytest.raises(ValueError, match="cannot extend"):
        RecordBatch.empty(0).extend(RecordBatch.of(rows(1, [1])))
    assert repr(RecordBatch.empty(3)) == "RecordBatch(partition=3, empty)"
