"""Snapshots in an object store (a real S3-compatible server): the layout, the writer's
position found by listing what any host wrote, pruning by listing only the folders needed,
and the offline commands reading a URL (in spawned processes too)."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from streamfeat.errors import ConfigError
from streamfeat.generator import OrderEvents
from streamfeat.records import RawRecord
from streamfeat.replay import replay, training_set
from streamfeat.snapshot import (
    SnapshotFile,
    SnapshotWriter,
    iter_partition,
    partitions,
    reader,
    snapshot_files,
)
from streamfeat.storage import ArrowStore
from streamfeat.topology import load_topology

from objectstore import S3

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400_000
JAN1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def records(partition: int, first: int, n: int, start_ms: int, step_ms: int = 1000,
            ) -> list[RawRecord]:
    return [RawRecord(partition, first + i, start_ms + i * step_ms, f"k{i}".encode(),
                      f'{{"i": {first + i}}}'.encode()) for i in range(n)]


def orders(n: int, partitions: int) -> dict[int, list[RawRecord]]:
    """``n`` order events (late and malformed ones too) over ``partitions``."""
    parts: dict[int, list[RawRecord]] = {p: [] for p in range(partitions)}
    for ev in OrderEvents(seed=21, entities=60, events_per_second=0.5, disorder_ms=120_000,
                          late_fraction=0.01, late_ms=3_600_000,
                          malformed_fraction=0.005).events(n):
        p = zlib.crc32(ev.key) % partitions
        parts[p].append(RawRecord(p, len(parts[p]), ev.ts, ev.key, ev.value))
    return parts


def write(root: str | Path, parts: dict[int, list[RawRecord]]) -> None:
    for p, rs in parts.items():
        writer = SnapshotWriter(root, "orders", p)
        for i in range(0, len(rs), 700):
            writer.append(rs[i : i + 700])
            writer.flush()


def read_all(root: str, topic: str, partition: int, **kw: Any) -> list[RawRecord]:
    return [r for batch in iter_partition(root, topic, partition, **kw) for r in batch]


def test_writer_and_reader_on_a_bucket(s3: S3, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/snaps"
    data = records(2, 0, 300, JAN1 - 100_000)  # spans midnight
    w = SnapshotWriter(url, "orders", 2)
    assert w.next_offset is None
    w.append(data[:100])
    w.flush()
    w.append(data[100:200])
    w.flush(wait=False)  # in the background, as the worker does
    w.close()
    keys = sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys == [
        "snaps/orders/date=2025-12-31/partition=2/00000000000000000000-00000000000000000099.parquet",
        "snaps/orders/date=2026-01-01/partition=2/00000000000000000100-00000000000000000199.parquet",
    ]
    # another host's writer of the partition finds where the bucket stands
    other = SnapshotWriter(url, "orders", 2)
    assert other.next_offset == 200
    other.append(data[150:])  # re-fed from an older offset: nothing twice
    other.close()
    assert read_all(url, "orders", 2) == data
    assert partitions(url, "orders") == [2]
    files = snapshot_files(url, "orders", 2, date_from="2026-01-01")
    assert [(f.first_offset, f.last_offset) for f in files] == [(100, 199), (200, 299)]
    assert files[0].path == f"{url}/{files[0].key}"
    assert reader.open_file(files[0]).metadata.num_rows == 100


def test_pruning_lists_and_opens_only_what_is_asked(s3_bucket: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"s3://{s3_bucket}"
    for p in range(3):
        w = SnapshotWriter(url, "t", p)
        for day in range(3):
            w.append(records(p, day * 10, 10, JAN1 + day * DAY))
            w.flush()
    listed: list[str] = []
    opened: list[str] = []
    for method in ("list", "folders"):
        real = getattr(ArrowStore, method)

        def spy(self: ArrowStore, prefix: str, real: Any = real) -> Any:
            listed.append(prefix)
            return real(self, prefix)

        monkeypatch.setattr(ArrowStore, method, spy)
    real_open = reader._open

    def open_spy(f: SnapshotFile) -> Any:
        opened.append(f.key)
        return real_open(f)

    monkeypatch.setattr(reader, "_open", open_spy)
    got = read_all(url, "t", 1, date_from="2026-01-02", date_to="2026-01-02")
    assert [r.offset for r in got] == list(range(10, 20))
    assert listed == ["t", "t/date=2026-01-02/partition=1"]
    assert opened == ["t/date=2026-01-02/partition=1/00000000000000000010-00000000000000000019"
                      ".parquet"]


def test_replay_from_a_bucket_equals_replay_from_a_directory(s3_bucket: str,
                                                             tmp_path: Path) -> None:
    """Two spawned processes read the bucket (each opens the store from the URL)."""
    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    url = f"s3://{s3_bucket}/snaps/"
    parts = orders(2000, 2)
    write(tmp_path / "snap", parts)
    write(url, parts)
    local, remote = tmp_path / "local.parquet", tmp_path / "remote.parquet"
    replay(topology, tmp_path / "snap", to_parquet=local, processes=1, progress=False)
    result = replay(topology, url, to_parquet=remote, processes=2, progress=False)
    assert result.records == 2000 and len(result.partitions) == 2
    order = [("user_id", "ascending")]
    assert pq.read_table(remote).sort_by(order).equals(pq.read_table(local).sort_by(order))


def test_training_set_from_a_bucket_equals_one_from_a_directory(s3_bucket: str,
                                                                 tmp_path: Path) -> None:
    import pyarrow as pa

    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    parts = orders(1500, 2)
    write(tmp_path / "snap", parts)
    write(f"s3://{s3_bucket}/snaps", parts)
    values = [r for rs in parts.values() for r in rs][::50]
    users = [f"u{i % 60}" for i in range(len(values))]
    spine = pa.table({"user_id": users, "ts": [r.kafka_ts for r in values]})
    local = training_set(topology, tmp_path / "snap", spine, None, processes=1)
    remote = training_set(topology, f"s3://{s3_bucket}/snaps", spine, None, processes=2)
    assert remote.equals(local) and remote.num_rows == len(values)
    assert sum(1 for v in local.column("orders__1h").to_pylist() if v) > len(values) // 4


def test_a_missing_bucket_is_named(s3: S3, tmp_path: Path) -> None:
    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    with pytest.raises(ConfigError, match="bucket 'sf-not-there' does not exist"):
        replay(topology, "s3://sf-not-there/snaps", to_parquet=tmp_path / "o.parquet",
               progress=False)
    with pytest.raises(ConfigError, match="bucket 'sf-not-there' does not exist"):
        SnapshotWriter("s3://sf-not-there/snaps", "orders", 0)
