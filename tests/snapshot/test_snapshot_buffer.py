"""The snapshot writer's buffer: records held as Arrow columns come out as they went in."""

from __future__ import annotations

import pyarrow as pa
import pytest

from streamfeat.records import RecordBatch
from streamfeat.records.records import Origins
from streamfeat.snapshot.buffer import RecordBuffer


def _batch(start: int, n: int, origins: bool = False) -> RecordBatch:
    offsets = list(range(start, start + n))
    return RecordBatch(
        3, offsets, [1_000 + (o * 7919) % 101 for o in offsets],
        [None if o % 5 == 0 else f"k{o}".encode() for o in offsets],
        [None if o % 7 == 0 else b"v" * (o % 13) for o in offsets],
        Origins([o % 2 for o in offsets], [o * 10 for o in offsets]) if origins else None)


def _rows(table: pa.Table) -> list[tuple[object, ...]]:
    return list(zip(*(table.column(i).to_pylist() for i in range(table.num_columns)),
                    strict=True))


def _expected(batch: RecordBatch) -> list[tuple[object, ...]]:
    cols: list[list[object]] = [list(batch.offsets), list(batch.kafka_ts), list(batch.keys),
                                list(batch.values)]
    if batch.origins is not None:
        cols += [list(batch.origins.partitions), list(batch.origins.offsets)]
    return list(zip(*cols, strict=True))


@pytest.mark.parametrize("origins", [False, True])
def test_many_small_appends_a_write_remainder_put_back_and_a_cut(origins: bool) -> None:
    buffer = RecordBuffer()
    whole = _batch(100, 0, origins)
    start = 100
    for n in [1, 3, 0, 2] * 60:  # more chunks than are merged at a time
        part = _batch(start, n, origins)
        buffer.append(part)
        whole.extend(part)
        start += n
    assert len(buffer) == len(whole) == 360
    assert buffer.oldest_ts() == min(whole.kafka_ts)
    table = buffer.cut()
    assert not buffer and buffer.oldest_ts() is None
    assert _rows(table) == _expected(whole)
    # a write made the first 100 durable: the rest goes back in front of newer records
    later = _batch(start, 10, origins)
    buffer.append(later)
    buffer.prepend(table.slice(100))
    assert len(buffer) == 270
    rest = whole[100:]
    rest.extend(later)
    assert _rows(buffer.cut()) == _expected(rest)


def test_records_with_and_without_origins_do_not_mix() -> None:
    buffer = RecordBuffer()
    buffer.append(_batch(0, 3))
    with pytest.raises(ValueError, match="cannot mix"):
        buffer.append(_batch(3, 3, origins=True))
    table = buffer.cut()
    buffer.append(_batch(3, 3, origins=True))  # an empty buffer takes either kind
    with pytest.raises(ValueError, match="cannot mix"):
        buffer.prepend(table)
