"""Snapshot files: round trip, layout, atomic writes, no duplicates, pruning."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamfeat.errors import StateError
from streamfeat.records import RawRecord
from streamfeat.snapshot import SnapshotFile, SnapshotWriter, iter_partition, partitions, reader
from streamfeat.storage import LocalStore, objects

DAY = 86_400_000
JAN1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def records(partition: int, first: int, n: int, start_ms: int, step_ms: int = 1000,
            ) -> list[RawRecord]:
    return [RawRecord(partition, first + i, start_ms + i * step_ms, f"k{i}".encode(),
                      f'{{"i": {first + i}}}'.encode() if i % 7 else None)
            for i in range(n)]


def read_all(root: Path, topic: str, partition: int, **kw: Any) -> list[RawRecord]:
    return [r for batch in iter_partition(root, topic, partition, **kw) for r in batch]


def test_round_trip_and_layout(tmp_path: Path) -> None:
    w = SnapshotWriter(tmp_path, "orders", 3)
    assert w.next_offset is None
    data = records(3, 0, 250, JAN1 - 100_000, step_ms=1000)  # spans midnight
    w.append(data[:100])
    assert w.oldest_unflushed_kafka_ts == JAN1 - 100_000
    w.flush()
    w.append(data[100:])
    w.close()
    assert w.next_offset == 250 and w.oldest_unflushed_kafka_ts is None
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "orders/date=2025-12-31/partition=3/00000000000000000000-00000000000000000099.parquet",
        "orders/date=2026-01-01/partition=3/00000000000000000100-00000000000000000249.parquet",
    ]
    f = pq.ParquetFile(tmp_path / files[0])
    assert f.schema_arrow.field("partition").type == pa.int32()
    assert f.schema_arrow.field("offset").type == pa.int64()
    assert f.schema_arrow.field("kafka_ts").type == pa.int64()
    assert f.schema_arrow.field("key").type == pa.binary()
    assert f.schema_arrow.field("value").type == pa.binary()
    assert f.metadata.row_group(0).column(0).compression == "ZSTD"
    assert read_all(tmp_path, "orders", 3, batch_rows=33) == data
    assert [len(b) for b in iter_partition(tmp_path, "orders", 3, batch_rows=60)][:2] == [60, 60]
    assert partitions(tmp_path, "orders") == [3]


def test_buffer_spanning_dates_is_split_per_date(tmp_path: Path) -> None:
    w = SnapshotWriter(tmp_path, "t", 0)
    data = records(0, 0, 30, JAN1 - 10 * 1000, step_ms=DAY // 10)
    w.append(data)
    w.flush()
    dates = sorted(p.parent.parent.name for p in tmp_path.rglob("*.parquet"))
    assert dates == ["date=2025-12-31", "date=2026-01-01", "date=2026-01-02", "date=2026-01-03"]
    assert read_all(tmp_path, "t", 0) == data
    assert read_all(tmp_path, "t", 0, date_from="2026-01-01", date_to="2026-01-02") == [
        r for r in data if JAN1 <= r.kafka_ts < JAN1 + 2 * DAY
    ]


def test_reappend_never_duplicates(tmp_path: Path) -> None:
    data = records(0, 0, 100, JAN1)
    w = SnapshotWriter(tmp_path, "t", 0)
    w.append(data[:60])
    w.append(data[:70])  # overlap with the buffer
    w.flush()
    assert w.next_offset == 70
    again = SnapshotWriter(tmp_path, "t", 0)  # a restarted worker, seeking back
    assert again.next_offset == 70
    again.append(data)
    again.close()
    assert read_all(tmp_path, "t", 0) == data


def test_reader_skips_overlapping_files(tmp_path: Path) -> None:
    data = records(0, 0, 50, JAN1)
    for n, (lo, hi) in enumerate(((0, 30), (20, 50), (10, 25))):  # e.g. copied by hand
        w = SnapshotWriter(tmp_path / str(n), "t", 0)
        w.append(data[lo:hi])
        w.close()
        for f in (tmp_path / str(n)).rglob("*.parquet"):
            dest = tmp_path / "all" / f.relative_to(tmp_path / str(n))
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dest)
    assert len(list((tmp_path / "all").rglob("*.parquet"))) == 3
    assert read_all(tmp_path / "all", "t", 0) == data


def test_failed_rename_leaves_no_visible_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              ) -> None:
    data = records(0, 0, 40, JAN1)
    w = SnapshotWriter(tmp_path, "t", 0)
    w.append(data[:20])
    w.flush()

    def crash(*_: object) -> None:
        raise OSError("disk pulled out")

    monkeypatch.setattr(objects.os, "replace", crash)  # the local store's rename
    w.append(data[20:])
    with pytest.raises(StateError, match="snapshot-dir"):
        w.flush()
    monkeypatch.undo()
    assert w.next_offset == 20 and w.buffered == 20  # nothing lost, retried on next flush
    assert not list(tmp_path.rglob("*.tmp"))
    assert read_all(tmp_path, "t", 0) == data[:20]
    w.flush()
    assert read_all(tmp_path, "t", 0) == data


def test_crash_mid_write_is_invisible_and_cleaned(tmp_path: Path) -> None:
    """A process killed between writing the temp file and renaming it."""
    script = f"""
import os, signal
from streamfeat.snapshot import SnapshotWriter
from streamfeat.storage import objects
from streamfeat.records import RawRecord
w = SnapshotWriter({str(tmp_path)!r}, "t", 0)
w.append([RawRecord(0, i, {JAN1} + i, b"k", b"v") for i in range(10)])
w.flush()
w.append([RawRecord(0, i, {JAN1} + i, b"k", b"v") for i in range(10, 20)])
objects.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
w.flush()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == -9, done.stderr
    tmps = list(tmp_path.rglob("*.tmp"))
    assert len(tmps) == 1 and tmps[0].stat().st_size > 0  # the half-done write
    assert [r.offset for r in read_all(tmp_path, "t", 0)] == list(range(10))
    w = SnapshotWriter(tmp_path, "t", 0)  # the restart
    assert w.next_offset == 10
    assert not list(tmp_path.rglob("*.tmp"))


def test_pruning_opens_only_the_needed_files(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for p in range(3):
        w = SnapshotWriter(tmp_path, "t", p)
        for day in range(4):
            w.append(records(p, day * 10, 10, JAN1 + day * DAY))
            w.flush()
    opened: list[str] = []
    real = reader._open

    def spy(f: SnapshotFile) -> Any:
        opened.append(f.key)
        return real(f)

    monkeypatch.setattr(reader, "_open", spy)
    got = read_all(tmp_path, "t", 1, date_from="2026-01-02", date_to="2026-01-03")
    assert [r.offset for r in got] == list(range(10, 30))
    assert sorted(opened) == [
        "t/date=2026-01-02/partition=1/00000000000000000010-00000000000000000019.parquet",
        "t/date=2026-01-03/partition=1/00000000000000000020-00000000000000000029.parquet",
    ]
    listed: list[str] = []
    for method in ("list", "folders"):
        real_method = getattr(LocalStore, method)

        def listing_spy(self: LocalStore, prefix: str, real_method: Any = real_method) -> Any:
            listed.append(prefix)
            return real_method(self, prefix)

        monkeypatch.setattr(LocalStore, method, listing_spy)
    read_all(tmp_path, "t", 1, date_from="2026-01-02", date_to="2026-01-02")
    assert listed == ["t", "t/date=2026-01-02/partition=1"]


def test_due(tmp_path: Path) -> None:
    w = SnapshotWriter(tmp_path, "t", 0, every_s=10, max_rows=5)
    assert not w.due(1e12)
    w.append(records(0, 0, 2, JAN1))
    now = time.time()
    assert not w.due(now) and w.due(now + 11)
    w.append(records(0, 2, 3, JAN1))
    assert w.due(now)


# ------------------------------------------------------------------ background writes

def test_background_flush_writes_the_same_files(tmp_path: Path) -> None:
    data = records(0, 0, 300, JAN1 - 100_000)  # spans midnight
    sync, bg = SnapshotWriter(tmp_path / "sync", "t", 0), SnapshotWriter(tmp_path / "bg", "t", 0)
    for lo in range(0, 300, 50):
        sync.append(data[lo:lo + 50])
        sync.flush()
        bg.append(data[lo:lo + 50])
        bg.flush(wait=False)  # a write may still be in flight: the buffer keeps filling
        assert (bg.next_offset or 0) + bg.buffered == lo + 50
    bg.close()
    sync.close()
    assert bg.next_offset == 300 and bg.buffered == 0 and bg.oldest_unflushed_kafka_ts is None
    assert read_all(tmp_path / "bg", "t", 0) == read_all(tmp_path / "sync", "t", 0) == data


def test_failed_background_write_keeps_the_records(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = records(0, 0, 40, JAN1)
    w = SnapshotWriter(tmp_path, "t", 0)

    def crash(*_: object) -> None:
        raise OSError("disk pulled out")

    monkeypatch.setattr(objects.os, "replace", crash)
    w.append(data[:20])
    w.flush(wait=False)
    w.append(data[20:30])  # arrives while the write fails in the background
    assert w.buffered == 30 and w.oldest_unflushed_kafka_ts == JAN1
    with pytest.raises(StateError, match="snapshot-dir"):
        for _ in range(500):
            w.poll()
            time.sleep(0.01)
    monkeypatch.undo()
    assert w.next_offset is None and w.buffered == 30  # nothing lost, in order
    assert w.oldest_unflushed_kafka_ts == JAN1
    w.append(data[30:])
    w.close()
    assert read_all(tmp_path, "t", 0) == data
