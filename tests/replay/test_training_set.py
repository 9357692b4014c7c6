"""training_set against the naive reference of the contract: point in time, and as served."""

from __future__ import annotations

import json
import random
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from streamfeat.errors import ConfigError
from streamfeat.generator import OrderEvents
from streamfeat.records import RawRecord
from streamfeat.replay import training_set
from streamfeat.snapshot import SnapshotWriter
from streamfeat.topology import AggKind, TopologyDef, load_topology

from reference import Event, close, run_partition, values_as_of

ROOT = Path(__file__).resolve().parents[2]
STREAM = {"entities": 40, "events_per_second": 0.5, "disorder_ms": 120_000,
          "late_fraction": 0.01, "late_ms": 3_600_000, "malformed_fraction": 0.005}


def orders() -> TopologyDef:
    return load_topology(ROOT / "topologies" / "orders.yaml")


def write_snapshots(root: Path, topic: str, parts: dict[int, list[RawRecord]]) -> None:
    for p, records in parts.items():
        writer = SnapshotWriter(root, topic, p)
        for i in range(0, len(records), 500):
            writer.append(records[i : i + 500])
            writer.flush()
        writer.close()


def generated(n: int, partitions: int, seed: int) -> dict[int, list[RawRecord]]:
    parts: dict[int, list[RawRecord]] = {p: [] for p in range(partitions)}
    for ev in OrderEvents(seed=seed, **STREAM).events(n):  # type: ignore[arg-type]
        p = zlib.crc32(ev.key) % partitions
        parts[p].append(RawRecord(p, len(parts[p]), ev.ts, ev.key, ev.value))
    return parts


def events_by_entity(topology: TopologyDef, records: list[RawRecord]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for e in run_partition(topology, [r.value for r in records]).accepted:
        out[e.key].append(e)
    return out


def tolerance(topology: TopologyDef) -> dict[str, float]:
    return {f.redis_field(w): (0.0101 if f.agg is AggKind.PERCENTILE else 1e-9)
            for f in topology.features for w in f.windows}


def as_python(topology: TopologyDef, name: str, value: Any) -> Any:
    agg = {f.redis_field(w): f.agg for f in topology.features for w in f.windows}[name]
    if agg in (AggKind.LAST_K, AggKind.TOP_K) and value is not None:
        return json.loads(value)
    return value


def assert_rows_equal(topology: TopologyDef, got: list[dict[str, Any]],
                      want: list[dict[str, Any]]) -> None:
    rel = tolerance(topology)
    bad = []
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        for name, value in w.items():
            actual = as_python(topology, name, g[name])
            if not close(actual, value, rel.get(name, 1e-9)):
                bad.append(f"row {i} {name}: got {actual!r} want {value!r}")
    assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:20])


def test_event_time_equals_reference(tmp_path: Path) -> None:
    topology = orders()
    parts = generated(2500, 3, seed=11)
    write_snapshots(tmp_path / "snap", topology.source.topic, parts)
    by_entity: dict[str, list[Event]] = {}
    for records in parts.values():
        by_entity.update(events_by_entity(topology, records))
    rng = random.Random(5)
    all_ts = sorted(e.ts for evs in by_entity.values() for e in evs)
    entities = sorted(by_entity)
    spine_e: list[str] = []
    spine_t: list[int] = []
    for _ in range(400):
        e = rng.choice([*entities, "never-seen"])
        events = by_entity.get(e) or [Event(e, rng.choice(all_ts), 0, {})]
        kind = rng.random()
        ev_ts = rng.choice(events).ts
        if kind < 0.15:
            t = min(x.ts for x in events) - rng.randint(1, 3_600_000)  # before the first event
        elif kind < 0.5:
            t = ev_ts  # exactly at an event
        elif kind < 0.6:
            t = ev_ts - 1
        elif kind < 0.9:
            t = ev_ts + rng.randint(1, 4 * 3_600_000)  # between / after
        else:
            t = all_ts[-1] + rng.randint(0, 10 * 86_400_000)  # long after the end
        spine_e.append(e)
        spine_t.append(t)
    spine = pa.table({"user_id": spine_e, "ts": spine_t, "label": list(range(len(spine_e)))})
    out = tmp_path / "train.parquet"
    table = training_set(topology, tmp_path / "snap", spine, out, processes=1)
    assert pq.read_table(out).equals(table)
    assert table.column_names[:3] == ["user_id", "ts", "label"]
    assert table.column("label").to_pylist() == list(range(len(spine_e)))  # spine order kept
    defaults = {name: topology.defaults.get(name) for name in topology.redis_fields()}
    # an entity with no accepted event at or before t is as unseen (contract section 6)
    want = [
        values_as_of(topology, by_entity[e], t)
        if any(x.ts <= t for x in by_entity.get(e, [])) else defaults
        for e, t in zip(spine_e, spine_t, strict=True)
    ]
    assert sum(w is defaults for w in want) > 40  # rows before a first event, and never seen
    assert_rows_equal(topology, table.to_pylist(), want)


def test_features_subset_csv_and_columns(tmp_path: Path) -> None:
    topology = orders()
    parts = generated(600, 2, seed=3)
    write_snapshots(tmp_path / "snap", topology.source.topic, parts)
    by_entity: dict[str, list[Event]] = {}
    for records in parts.values():
        by_entity.update(events_by_entity(topology, records))
    entity = sorted(by_entity)[0]
    t = by_entity[entity][-1].ts
    csv = tmp_path / "spine.csv"
    pacsv.write_csv(pa.table({"who": [entity, entity], "when": [t, t - 60_000]}), csv)
    table = training_set(topology, tmp_path / "snap", csv, None,
                         features=["orders", "amount_sum__1h"],
                         entity_column="who", timestamp_column="when")
    assert table.column_names == ["who", "when", "orders__5m", "orders__1h", "orders__7d",
                                  "amount_sum__1h"]
    for row, at in zip(table.to_pylist(), [t, t - 60_000], strict=True):
        want = values_as_of(topology, by_entity[entity], at)
        for name in ("orders__5m", "orders__1h", "orders__7d", "amount_sum__1h"):
            assert close(row[name], want[name]), (name, row[name], want[name])
    with pytest.raises(ConfigError, match="no feature or field"):
        training_set(topology, tmp_path / "snap", csv, None, features=["nope"],
                     entity_column="who", timestamp_column="when")
    with pytest.raises(ConfigError, match="--entity-column"):
        training_set(topology, tmp_path / "snap", csv, None)


def test_timestamp_typed_spine_is_converted_to_ms(tmp_path: Path) -> None:
    topology = orders()
    parts = generated(300, 1, seed=4)
    write_snapshots(tmp_path / "snap", topology.source.topic, parts)
    by_entity = events_by_entity(topology, parts[0])
    entity = sorted(by_entity)[0]
    t = by_entity[entity][-1].ts
    ms = pa.table({"user_id": [entity], "ts": [t]})
    stamped = pa.table({"user_id": [entity],
                        "ts": pa.array([t], pa.int64()).cast(pa.timestamp("ms", tz="UTC"))})
    a = training_set(topology, tmp_path / "snap", ms, None, features=["orders"])
    b = training_set(topology, tmp_path / "snap", stamped, None, features=["orders"])
    assert a.select(["orders__5m", "orders__1h"]).equals(b.select(["orders__5m", "orders__1h"]))


# ----------------------------------------------------------------------------- as served

SERVED_YAML = """\
version: 1
name: served
source: {topic: served, key: user_id, timestamp: ts}
lateness: 5m
features:
  - name: n
    agg: count
    windows: [lifetime]
  - name: total
    agg: sum
    field: amount
    windows: [lifetime]
  - name: last_amount
    agg: last
    field: amount
    windows: [lifetime]
defaults:
  n: 0
  total: 0
"""


def test_as_served_differs_exactly_on_late_arrivals(tmp_path: Path) -> None:
    path = tmp_path / "served.yaml"
    path.write_text(SERVED_YAML)
    topology = load_topology(path)
    rng = random.Random(9)
    # Events in event time; each arrives (Kafka timestamp) after a small delay, except a
    # few that arrive late but within lateness (and some beyond it, which are dropped).
    raw = []
    for i in range(1500):
        ts = 1_767_225_600_000 + i * 2_000 + rng.randint(0, 1_500)
        r = rng.random()
        delay = rng.randint(0, 500) if r < 0.9 else (
            rng.randint(20_000, 250_000) if r < 0.98 else rng.randint(400_000, 900_000))
        body = {"user_id": f"u{rng.randint(0, 15)}", "ts": ts, "amount": rng.randint(1, 100)}
        raw.append((ts + delay, ts, json.dumps(body).encode()))
    raw.sort(key=lambda x: x[0])  # offset order is arrival order
    records = [RawRecord(0, off, kts, None, value) for off, (kts, _ts, value) in enumerate(raw)]
    write_snapshots(tmp_path / "snap", "served", {0: records})
    p = run_partition(topology, [r.value for r in records])
    assert p.late > 0
    arrival = {e.seq: records[e.seq].kafka_ts for e in p.accepted}
    by_entity: dict[str, list[Event]] = defaultdict(list)
    for e in p.accepted:
        by_entity[e.key].append(e)
    spine_e, spine_t = [], []
    for _ in range(600):
        e = rng.choice(p.accepted)
        spine_e.append(f"u{rng.randint(0, 15)}" if rng.random() < 0.3 else e.key)
        spine_t.append(rng.choice([e.ts, arrival[e.seq], e.ts + rng.randint(0, 300_000)]))
    spine = pa.table({"user_id": spine_e, "ts": spine_t})
    event_time = training_set(topology, tmp_path / "snap", spine, None).to_pylist()
    served = training_set(topology, tmp_path / "snap", spine, None, as_served=True).to_pylist()

    defaults = {name: topology.defaults.get(name) for name in topology.redis_fields()}
    want_et, want_served, differs = [], [], []
    for i, (e, t) in enumerate(zip(spine_e, spine_t, strict=True)):
        want_et.append(values_as_of(topology, by_entity[e], t))
        prefix = run_partition(topology, [r.value for r in records if r.kafka_ts <= t])
        mine = [x for x in prefix.accepted if x.key == e]
        assert prefix.stream_time is not None
        want_served.append(values_as_of(topology, mine, prefix.stream_time) if mine else defaults)
        if any(x.ts <= t < arrival[x.seq] for x in by_entity[e]):
            differs.append(i)
    assert_rows_equal(topology, event_time, want_et)
    assert_rows_equal(topology, served, want_served)
    actual_diff = [i for i, (a, b) in enumerate(zip(event_time, served, strict=True))
                   if a["n__lifetime"] != b["n__lifetime"]]
    assert differs and actual_diff == differs


# ----------------------------------------------------------------------------- every edge

EDGES_YAML = """\
version: 1
name: pit
source: {topic: pit, key: user_id, timestamp: ts}
lateness: 1m
features:
  - {name: n, agg: count, windows: [10m, lifetime]}
  - {name: total, agg: sum, field: amount, windows: [10m]}
  - {name: big, agg: count, where: "amount > 50", windows: [10m]}
  - {name: big_sum, agg: sum, field: amount, where: "amount > 50", windows: [lifetime]}
  - {name: last_amount, agg: last, field: amount, windows: [lifetime]}
  - {name: recent, agg: last_k, k: 2, field: amount, windows: [lifetime]}
  - {name: spread, agg: max, field: amount, windows: [{type: session, gap: 5m}]}
defaults:
  n: 0
  total: -1
  last_amount: 0
  recent: []
"""
T0 = 1_767_225_600_000
MIN = 60_000


def edge_records() -> list[RawRecord]:
    """One partition, in arrival (offset) order, with each record's arrival time as its Kafka
    timestamp: ``steady`` all along; ``newcomer`` from minute 20 (first arriving at 21);
    ``late_only`` only late (aggregated never); ``bad_only`` only malformed."""
    rows: list[tuple[int, int, str, Any]] = []  # (arrival, ts, user, amount)
    for i in range(40):
        rows.append((T0 + i * MIN + 500, T0 + i * MIN, "steady", 10 + i * 3))
    for i in range(20, 40, 2):
        rows.append((T0 + (i + 1) * MIN, T0 + i * MIN, "newcomer", 40 + i))
    rows.append((T0 + 30 * MIN + 1, T0 + 2 * MIN, "late_only", 99))  # 28 min behind: late
    rows.append((T0 + 5 * MIN + 1, T0 + 5 * MIN, "bad_only", "not a number"))
    rows.sort(key=lambda r: r[0])
    return [RawRecord(0, off, arrival, user.encode(),
                      json.dumps({"user_id": user, "ts": ts, "amount": amount}).encode())
            for off, (arrival, ts, user, amount) in enumerate(rows)]


@pytest.mark.parametrize("as_served", [False, True], ids=["event_time", "as_served"])
def test_no_event_by_then_gets_the_defaults_whatever_comes_later(tmp_path: Path,
                                                                 as_served: bool) -> None:
    """Contract section 6, point in time at every edge: a row whose entity had no accepted
    event at or before its time (event time), or none arrived by then (--as-served), gets
    the topology's defaults, and None where there is none: exactly what the client serves
    for an unseen entity, however the entity is seen later."""
    path = tmp_path / "pit.yaml"
    path.write_text(EDGES_YAML)
    topology = load_topology(path)
    records = edge_records()
    write_snapshots(tmp_path / "snap", "pit", {0: records})
    users = ["steady", "newcomer", "never", "late_only", "bad_only"]
    moments = [T0 - 1, T0, T0 + 10 * MIN, T0 + 20 * MIN - 1, T0 + 20 * MIN, T0 + 20 * MIN + 1,
               T0 + 21 * MIN, T0 + 25 * MIN, T0 + 45 * MIN, T0 + 86_400_000]
    spine_e = [u for u in users for _ in moments]
    spine_t = [t for _ in users for t in moments]
    got = training_set(topology, tmp_path / "snap", pa.table({"user_id": spine_e, "ts": spine_t}),
                       None, as_served=as_served).to_pylist()

    unseen = {name: topology.defaults.get(name) for name in topology.redis_fields()}
    assert unseen["big__10m"] is None and unseen["total__10m"] == -1  # a default and none
    whole = run_partition(topology, [r.value for r in records])
    want = []
    for e, t in zip(spine_e, spine_t, strict=True):
        if as_served:
            prefix = run_partition(topology, [r.value for r in records if r.kafka_ts <= t])
            mine = [x for x in prefix.accepted if x.key == e]
            asof = prefix.stream_time
        else:
            mine = [x for x in whole.accepted if x.key == e and x.ts <= t]
            asof = t
        want.append(values_as_of(topology, mine, asof) if mine else unseen)
    assert_rows_equal(topology, got, want)

    # The edges themselves, spelled out: the newcomer is unseen up to its first event
    # (minute 20 in event time, its arrival at minute 21 as served), and seen after.
    first = T0 + (21 if as_served else 20) * MIN
    for row in got:
        if row["user_id"] in ("never", "late_only", "bad_only") or (
                row["user_id"] == "newcomer" and row["ts"] < first):
            assert {k: as_python(topology, k, v) for k, v in row.items()
                    if k in unseen} == unseen, row
        if row["user_id"] == "newcomer" and row["ts"] >= first:
            assert row["n__lifetime"] >= 1 and row["big__10m"] is not None, row
