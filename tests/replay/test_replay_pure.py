"""replay(..., to_parquet=...) equals the naive reference's final values; pruning by partition."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from streamfeat.errors import ConfigError
from streamfeat.generator import OrderEvents
from streamfeat.records import RawRecord
from streamfeat.replay import replay
from streamfeat.sinks import parse_version
from streamfeat.snapshot import SnapshotWriter
from streamfeat.topology import AggKind, TopologyDef, load_topology
from streamfeat.topology.definitions import ASOF_FIELD, VERSION_FIELD

from reference import close, expected_final

ROOT = Path(__file__).resolve().parents[2]
STREAM: dict[str, Any] = {"entities": 60, "events_per_second": 0.5, "disorder_ms": 120_000,
                          "late_fraction": 0.01, "late_ms": 3_600_000,
                          "malformed_fraction": 0.005}


def snapshots(root: Path, topic: str, n: int, partitions: int) -> dict[int, list[RawRecord]]:
    parts: dict[int, list[RawRecord]] = {p: [] for p in range(partitions)}
    for ev in OrderEvents(seed=21, **STREAM).events(n):
        p = zlib.crc32(ev.key) % partitions
        parts[p].append(RawRecord(p, len(parts[p]), ev.ts, ev.key, ev.value))
    for p, records in parts.items():
        writer = SnapshotWriter(root, topic, p)
        for i in range(0, len(records), 700):
            writer.append(records[i : i + 700])
            writer.flush()
    return parts


def check(topology: TopologyDef, rows: list[dict[str, Any]],
          expected: dict[str, dict[str, Any]]) -> None:
    sketchy = {f.redis_field(w) for f in topology.features if f.agg is AggKind.PERCENTILE
               for w in f.windows}
    listy = {f.redis_field(w) for f in topology.features
             if f.agg in (AggKind.LAST_K, AggKind.TOP_K) for w in f.windows}
    assert sorted(r["user_id"] for r in rows) == sorted(expected)
    bad = []
    for row in rows:
        for name, want in expected[row["user_id"]].items():
            got = row[name]
            if name in listy and got is not None:
                got = json.loads(got)
            if not close(got, want, 0.0101 if name in sketchy else 1e-9):
                bad.append(f"{row['user_id']}.{name}: replay={got!r} reference={want!r}")
    assert not bad, "\n".join(bad[:20])


@pytest.mark.parametrize("processes", [1, 2])
def test_replay_to_parquet_equals_reference(tmp_path: Path, processes: int) -> None:
    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    parts = snapshots(tmp_path / "snap", "orders", 3000, 3)
    out = tmp_path / "final.parquet"
    result = replay(topology, tmp_path / "snap", to_parquet=out, processes=processes,
                    progress=False, batch_rows=777)
    assert result.records == 3000
    expected, late, malformed = expected_final(
        topology, {p: [r.value for r in rs] for p, rs in parts.items()})
    assert sum(s.late for s in result.partitions) == late > 0
    assert sum(s.malformed for s in result.partitions) == malformed > 0
    table = pq.read_table(out)
    assert table.column_names[:3] == ["user_id", ASOF_FIELD, VERSION_FIELD]
    assert table.column_names[3:] == topology.redis_fields()
    rows = table.to_pylist()
    check(topology, rows, expected)
    for row in rows:  # final stream time and last offset of the entity's partition
        _g, p, offset = parse_version(row[VERSION_FIELD])
        assert offset == len(parts[p]) - 1
        assert row[ASOF_FIELD] == next(s.stream_time for s in result.partitions if s.partition == p)


def test_replay_only_the_partitions_asked_for(tmp_path: Path) -> None:
    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    parts = snapshots(tmp_path / "snap", "orders", 1500, 3)
    out = tmp_path / "p1.parquet"
    replay(topology, tmp_path / "snap", partitions=[1], to_parquet=out, progress=False)
    expected, _, _ = expected_final(topology, {1: [r.value for r in parts[1]]})
    check(topology, pq.read_table(out).to_pylist(), expected)


def test_replay_needs_an_output(tmp_path: Path) -> None:
    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    with pytest.raises(ConfigError, match="--to-redis"):
        replay(topology, tmp_path)
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        replay(topology, tmp_path, to_parquet=tmp_path / "x.parquet", date_from="yesterday")
