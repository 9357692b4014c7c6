"""A replay's Parquet file is the same bytes whatever its batches and processes, and the same
as the worker's pipeline gives; the key check finds foreign keys in any batch.

The reference is the replay as it was before its fast paths: the worker's
:class:`PartitionPipeline` (values of the touched and due entities after every batch) at the
worker's batch size, then every entity's values as of the partition's final stream time from
``PartitionOperator.values`` (one dict per entity), written by the same writer.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamfeat.generator import OrderEvents
from streamfeat.pipeline import Acceptance, PartitionPipeline
from streamfeat.records import RawRecord, RecordBatch
from streamfeat.replay import replay
from streamfeat.replay.backfill import _write_final
from streamfeat.sinks import version
from streamfeat.snapshot import SnapshotWriter
from streamfeat.snapshot.reader import iter_files, snapshot_files
from streamfeat.topology import TopologyDef, load_topology, load_topology_text
from streamfeat.topology.definitions import ASOF_FIELD, VERSION_FIELD

ROOT = Path(__file__).resolve().parents[2]
STREAM: dict[str, Any] = {"entities": 40, "events_per_second": 0.5, "disorder_ms": 120_000,
                          "late_fraction": 0.02, "late_ms": 3_600_000,
                          "malformed_fraction": 0.01}
EVENTS = 2500
PARTITIONS = 3
TOPOLOGIES = {
    "orders": ROOT / "topologies" / "orders.yaml",
    "bench": ROOT / "benchmarks" / "peers" / "bench_topology.yaml",
}


def _topology(name: str) -> TopologyDef:
    text = TOPOLOGIES[name].read_text()
    return load_topology_text(text.replace("BENCH_NAME", "bench").replace("BENCH_TOPIC",
                                                                           "orders"))


def _snapshots(root: Path) -> None:
    parts: dict[int, list[RawRecord]] = {p: [] for p in range(PARTITIONS)}
    for ev in OrderEvents(seed=5, **STREAM).events(EVENTS):
        p = zlib.crc32(ev.key) % PARTITIONS
        parts[p].append(RawRecord(p, len(parts[p]), ev.ts, ev.key, ev.value))
    for p, records in parts.items():
        writer = SnapshotWriter(root, "orders", p)
        for i in range(0, len(records), 600):
            writer.append(records[i : i + 600])
            writer.flush()


def _reference(topology: TopologyDef, snap: Path, out: Path) -> bytes:
    """The final values as the worker's pipeline has them (see the module docstring)."""
    key = topology.source.key
    names = topology.redis_fields()
    parts = []
    for p in range(PARTITIONS):
        pipeline = PartitionPipeline(topology, p, generation=1)
        seen: set[str] = set()
        last = -1
        for batch in iter_files(snapshot_files(snap, "orders", p), batch_rows=97):
            for u in pipeline.process(batch).updates:
                seen.update(u.entity_ids)
            last = batch.offsets[-1]
        st_ = pipeline.stream_time
        assert st_ is not None
        values = pipeline.operator.values(sorted(seen), as_of=st_)
        cols: dict[str, list[Any]] = {key: [], ASOF_FIELD: [], VERSION_FIELD: [],
                                      **{n: [] for n in names}}
        for e in sorted(seen):
            cols[key].append(e)
            cols[ASOF_FIELD].append(st_)
            cols[VERSION_FIELD].append(version(1, p, last))
            for n in names:
                cols[n].append(values[e].get(n))
        parts.append(cols)
    _write_final(topology, parts, out)
    return out.read_bytes()


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batches") / "snap"
    _snapshots(root)
    return root


@pytest.fixture(scope="module")
def references(snap: Path) -> dict[str, bytes]:
    return {name: _reference(_topology(name), snap, snap.parent / f"{name}-ref.parquet")
            for name in TOPOLOGIES}


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_rows=st.integers(min_value=1, max_value=EVENTS + 10),
       name=st.sampled_from(sorted(TOPOLOGIES)))
@example(batch_rows=1, name="bench")
@example(batch_rows=100_000, name="orders")
def test_final_file_does_not_depend_on_batches(
    snap: Path, references: dict[str, bytes], batch_rows: int, name: str
) -> None:
    out = snap.parent / f"{name}-{batch_rows}.parquet"
    result = replay(_topology(name), snap, to_parquet=out, processes=1, progress=False,
                    batch_rows=batch_rows)
    assert result.records == EVENTS
    assert out.read_bytes() == references[name]


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_default_batches_and_two_processes_give_the_same_file(
    snap: Path, references: dict[str, bytes], name: str
) -> None:
    for processes in (1, 2):
        out = snap.parent / f"{name}-default-{processes}.parquet"
        replay(_topology(name), snap, to_parquet=out, processes=processes, progress=False)
        assert out.read_bytes() == references[name]


def test_the_worker_topologies_hold_late_and_malformed_records(snap: Path) -> None:
    """The stream above exercises what batch cuts could change: late and malformed records."""
    result = replay(load_topology(TOPOLOGIES["orders"]), snap,
                    to_parquet=snap.parent / "count.parquet", processes=1, progress=False)
    assert sum(p.late for p in result.partitions) > 0
    assert sum(p.malformed for p in result.partitions) > 0


# ----------------------------------------------------------------------------- foreign keys

KEYED = """\
version: 1
name: shop
owner: tests@example.com
source: {topic: shop, format: json, key: user_id, timestamp: ts, timestamp_unit: ms}
entity: user
lateness: 1h
features:
  - {name: orders, agg: count, windows: [5m]}
"""


def _foreign_reference(values: list[bytes], keys: list[bytes | None]) -> list[int]:
    """Positions whose record is well formed and keyed by something other than its user."""
    out = []
    for pos, (value, key) in enumerate(zip(values, keys, strict=True)):
        try:
            user = json.loads(value)["user_id"]
        except (ValueError, KeyError):
            continue
        if key is not None and key != str(user).encode():
            out.append(pos)
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "é", "a\x00", "\x00b", "\x00"]),
                          st.sampled_from(["same", "none", "other", "nul", "malformed"])),
                min_size=1, max_size=12))
def test_foreign_keys_are_found_in_any_batch(rows: list[tuple[str, str]]) -> None:
    values: list[bytes] = []
    keys: list[bytes | None] = []
    for user, kind in rows:
        values.append(b"{not json" if kind == "malformed"
                      else json.dumps({"user_id": user, "ts": 1000}).encode())
        keys.append(None if kind == "none" else b"zz" if kind == "other"
                    else user.encode() + b"\x00" if kind == "nul" else user.encode())
    n = len(rows)
    batch = RecordBatch(0, list(range(n)), [10_000] * n, keys, values)
    verdict = Acceptance(load_topology_text(KEYED), 0).judge(batch)
    foreign = [pos for pos, reason in verdict.decoded.errors if reason.startswith("key:")]
    assert foreign == _foreign_reference(values, keys)
    assert sorted(verdict.decoded.positions + [p for p, _ in verdict.decoded.errors]) == \
        list(range(n))
    assert verdict.decoded.keys == [rows[p][0] for p in verdict.decoded.positions]
