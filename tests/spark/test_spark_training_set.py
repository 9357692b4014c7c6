"""Spark training sets equal the local engine's: event time, as served, sliced by time."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamfeat.cli import build_parser
from streamfeat.cli_replay import add_replay_commands
from streamfeat.records import RawRecord
from streamfeat.registry.lineage import LINEAGE_KEY
from streamfeat.replay import training_set
from streamfeat.snapshot.reader import snapshot_files
from streamfeat.spark import training_set as spark_training_set
from streamfeat.spark.slicing import reach_ms, read_range, refusal
from streamfeat.spark.tasks import IndexJob, IndexTask
from streamfeat.topology import load_topology

from spark_snapshots import ROOT, assert_same, write_snapshots

pytestmark = pytest.mark.spark

# every bounded window kind and every family, no lifetime or session window: sliceable
SLICEABLE = """\
version: 1
name: recent_orders
owner: ml@example.com
source: {topic: orders, format: json, key: user_id, timestamp: ts, timestamp_unit: ms}
entity: user
lateness: 5m
ttl: 1d
features:
  - {name: orders, agg: count, windows: [5m, 15m]}
  - {name: amount_sum, agg: sum, field: amount, windows: [10m]}
  - {name: amount_mean, agg: mean, field: amount, windows: [{size: 15m, hop: exact}]}
  - {name: amount_stddev, agg: stddev, field: amount, windows: [{size: 10m, hop: 1m}]}
  - {name: merchants, agg: count_distinct, field: merchant_id, windows: [15m]}
  - {name: amount_p95, agg: percentile, q: 0.95, field: amount, windows: [10m]}
  - {name: orders_q, agg: count, windows: [{size: 10m, type: tumbling}]}
  - name: cancelled
    agg: count
    where: "status == 'cancelled'"
    windows: [{size: 10m, type: tumbling, emit: final}]
  - {name: amount_max, agg: max, field: amount, windows: [{size: 10m, type: hopping, step: 5m}]}
  - {name: last_status, agg: last, field: status, windows: [15m]}
  - {name: first_amount, agg: first, field: amount, windows: [15m]}
  - {name: last_amounts, agg: last_k, k: 3, field: amount, windows: [10m]}
  - {name: top_merchants, agg: top_k, k: 2, field: merchant_id, windows: [15m]}
defaults:
  orders: 0
"""


def spine_of(parts: dict[int, list[RawRecord]], rows: int, seed: int) -> pa.Table:
    """Rows at, just before, between and beyond events, of seen, unseen and null entities."""
    rng = random.Random(seed)
    stamps = sorted(r.kafka_ts for rs in parts.values() for r in rs)
    ents: list[str | None] = []
    times: list[int | None] = []
    for _ in range(rows):
        kind = rng.random()
        ents.append(None if kind < 0.01 else "never-seen" if kind < 0.05
                    else f"u{rng.randint(0, 55)}")
        t = rng.choice(stamps)
        times.append(None if 0.05 <= kind < 0.06 else
                     t + rng.choice([0, -1, 1, rng.randint(-3_600_000, 3_600_000)]))
    return pa.table({"user_id": ents, "ts": pa.array(times, pa.int64()),
                     "label": pa.array(range(rows), pa.int64())})


def lineage(table: pa.Table) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(table.schema.metadata[LINEAGE_KEY])
    doc.pop("created_ms")
    return doc


@pytest.mark.parametrize("as_served", [False, True])
def test_training_set_equals_local(tmp_path: Path, spark: Any, as_served: bool) -> None:
    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    parts = write_snapshots(tmp_path / "snap", "orders", 2500, 3, seed=11)
    spine = spine_of(parts, 400, seed=3)
    local = training_set(topology, tmp_path / "snap", spine, None, processes=1,
                         as_served=as_served, progress=False)
    frame = spark_training_set(topology, tmp_path / "snap", spark.createDataFrame(spine).
                               repartition(3), tmp_path / "out", spark=spark,
                               as_served=as_served, progress=False)
    got = pq.read_table(tmp_path / "out")
    assert_same(local, got, ["label"])
    assert lineage(got) == lineage(local)
    # the DataFrame returned holds the same rows
    assert_same(local, frame.toArrow(), ["label"])
    # not a tautology: the rows differ between entities, defaults and nulls are there
    rows = got.sort_by("label").to_pylist()
    assert {r["orders__1h"] for r in rows if r["user_id"] == "never-seen"} == {0}
    assert all(r["orders__1h"] is None for r in rows if r["user_id"] is None)
    assert len({r["amount_sum__1d"] for r in rows}) > 50


def test_time_slices_equal_the_unsliced_run(tmp_path: Path, spark: Any) -> None:
    path = tmp_path / "recent.yaml"
    path.write_text(SLICEABLE)
    topology = load_topology(path)
    parts = write_snapshots(tmp_path / "snap", "orders", 6000, 2, seed=7, file_rows=250)
    spine = spine_of(parts, 600, seed=9)
    pq.write_table(spine, tmp_path / "spine.parquet")
    local = training_set(topology, tmp_path / "snap", spine, None, processes=1,
                         progress=False)
    whole = spark_training_set(topology, tmp_path / "snap", str(tmp_path / "spine.parquet"),
                               tmp_path / "whole", spark=spark, batch_rows=150,
                               progress=False)
    sliced = spark_training_set(topology, tmp_path / "snap", str(tmp_path / "spine.parquet"),
                                tmp_path / "sliced", spark=spark, slice_seconds=900,
                                batch_rows=150, progress=False)
    assert_same(local, pq.read_table(tmp_path / "whole"), ["label"])
    assert_same(local, pq.read_table(tmp_path / "sliced"), ["label"])
    assert_same(whole.toArrow(), sliced.toArrow(), ["label"])


def test_slices_read_only_their_span(tmp_path: Path) -> None:
    """The checkpoints of a real partition cut a middle slice's records on both sides."""
    path = tmp_path / "recent.yaml"
    path.write_text(SLICEABLE)
    topology = load_topology(path)
    parts = write_snapshots(tmp_path / "snap", "orders", 6000, 1, seed=7)
    files = tuple(snapshot_files(str(tmp_path / "snap"), "orders", 0))
    schema = pa.schema([("e", pa.string()), ("p", pa.int64()), ("f", pa.int64()),
                        ("_sf_meta", pa.binary())])
    out = list(IndexTask((IndexJob(topology, 0, files, 100),), schema)(
        iter([pa.record_batch({"id": [0]})])))
    import pickle

    _p, checkpoints = pickle.loads(out[-1].column("_sf_meta")[0].as_py())  # noqa: S301
    assert len(checkpoints) == 60 and checkpoints[0] == (0, None)
    stamps = sorted(r.kafka_ts for r in parts[0])
    lo = stamps[len(stamps) // 2]
    start, end, st = read_range(checkpoints, lo, lo + 900_000, reach_ms(
        topology, topology.redis_fields()), int(topology.lateness_ms))
    assert 0 < start < end < 6000 and st is not None and st < lo
    assert end - start < 3000  # well under half of the partition


def test_slicing_is_refused_where_it_cannot_be_exact(
    tmp_path: Path, spark: Any, caplog: pytest.LogCaptureFixture
) -> None:
    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    assert "lifetime" in (refusal(topology, topology.redis_fields(), as_served=False) or "")
    assert "session" in (refusal(topology, ["session_orders__session_30m"],
                                 as_served=False) or "")
    assert refusal(topology, ["orders__1h", "amount_sum__1d"], as_served=False) is None
    assert refusal(topology, ["orders__1h"], as_served=True) is not None
    merchants = load_topology(ROOT / "topologies" / "merchants.yaml")
    assert "re-keyed" in (refusal(merchants, merchants.redis_fields()[:1],
                                  as_served=False) or "")
    parts = write_snapshots(tmp_path / "snap", "orders", 1200, 2, seed=2)
    spine = spine_of(parts, 100, seed=1)
    local = training_set(topology, tmp_path / "snap", spine, None, processes=1,
                         progress=False)
    caplog.set_level(logging.WARNING, logger="streamfeat.replay")
    got = spark_training_set(topology, tmp_path / "snap", spine, None, spark=spark,
                             slice_seconds=600, progress=False)
    assert any("not slicing by time" in r.getMessage() for r in caplog.records)
    assert_same(local, got.toArrow(), ["label"])


def test_training_set_cli_with_a_csv_spine(tmp_path: Path, spark: Any) -> None:
    import pyarrow.csv as pacsv

    parts = write_snapshots(tmp_path / "snap", "orders", 1000, 2, seed=8)
    pacsv.write_csv(spine_of(parts, 80, seed=2), tmp_path / "spine.csv")
    topology = str(ROOT / "topologies" / "orders.yaml")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if "training-set" not in sub.choices:  # type: ignore[attr-defined]
        add_replay_commands(sub)
    common = ["training-set", topology, "--snapshot-dir", str(tmp_path / "snap"), "--spine",
              str(tmp_path / "spine.csv"), "--features", "orders,amount_sum", "--no-progress"]
    args = parser.parse_args([*common, "--out", str(tmp_path / "l.parquet")])
    assert args.run(args) == 0
    args = parser.parse_args([*common, "--out", str(tmp_path / "s"), "--engine", "spark",
                              "--output-table", "ts_orders"])
    assert args.run(args) == 0
    want = pq.read_table(tmp_path / "l.parquet")
    assert_same(want, pq.read_table(tmp_path / "s"), ["label"])
    assert spark.table("ts_orders").count() == want.num_rows


def test_a_timestamp_spine_column(tmp_path: Path, spark: Any) -> None:
    """Times as timestamps (not epoch ms) give the same features on both engines."""
    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    parts = write_snapshots(tmp_path / "snap", "orders", 1200, 2, seed=6)
    spine = spine_of(parts, 150, seed=4)
    spine = spine.set_column(1, "ts", spine.column("ts").cast(pa.timestamp("ms", tz="UTC")))
    fields = ["orders__1h", "amount_sum__1d", "last_status__lifetime"]
    local = training_set(topology, tmp_path / "snap", spine, None, features=fields,
                         processes=1, progress=False)
    got = spark_training_set(topology, tmp_path / "snap", spine, None, spark=spark,
                             features=fields, progress=False).toArrow()
    assert_same(local.select(["label", *fields]), got.select(["label", *fields]), ["label"])
    assert len({r for r in got.column("orders__1h").to_pylist()}) > 3
