"""``--engine spark`` replays equal ``--engine local``'s, bit for bit: Parquet, tables, Redis."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from streamfeat.cli import build_parser
from streamfeat.cli_replay import add_replay_commands
from streamfeat.client import Client
from streamfeat.replay import replay, verify
from streamfeat.spark import replay as spark_replay
from streamfeat.spark import verify as spark_verify
from streamfeat.storage import open_store
from streamfeat.topology import load_topology

from spark_snapshots import ROOT, assert_same, generate, write, write_snapshots

pytestmark = pytest.mark.spark


def test_replay_to_parquet_equals_local(tmp_path: Path, spark: Any) -> None:
    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    write_snapshots(tmp_path / "snap", "orders", 3000, 3, seed=21)
    local = replay(topology, tmp_path / "snap", to_parquet=tmp_path / "local.parquet",
                   processes=1, progress=False, batch_rows=777)
    got = spark_replay(topology, tmp_path / "snap", spark=spark,
                       to_parquet=tmp_path / "spark", to_table="replay_orders",
                       batch_rows=777, progress=False)
    assert got.records == local.records == 3000
    assert [(s.partition, s.late, s.malformed, s.entities, s.stream_time)
            for s in got.partitions] == [
        (s.partition, s.late, s.malformed, s.entities, s.stream_time) for s in local.partitions]
    assert sum(s.late for s in got.partitions) > 0
    assert sum(s.malformed for s in got.partitions) > 0
    want = pq.read_table(tmp_path / "local.parquet")
    assert_same(want, pq.read_table(tmp_path / "spark"), ["user_id"])
    assert pq.read_table(tmp_path / "spark").schema.metadata == want.schema.metadata
    # first/last typed from all partitions' values, as the local engine types them
    assert str(want.schema.field("first_amount__lifetime").type) == "double"
    assert str(want.schema.field("last_status__lifetime").type) == "string"
    table = spark.table("replay_orders").orderBy("user_id").toArrow()
    assert table.column_names == want.column_names
    assert table.column("orders__7d").to_pylist() == want.sort_by("user_id").column(
        "orders__7d").to_pylist()


def test_replay_of_some_partitions_and_the_cli(
    tmp_path: Path, spark: Any, caplog: pytest.LogCaptureFixture
) -> None:
    write_snapshots(tmp_path / "snap", "orders", 1500, 3, seed=4)
    topology = ROOT / "topologies" / "orders.yaml"
    replay(topology, tmp_path / "snap", partitions=[1, 2], to_parquet=tmp_path / "l.parquet",
           processes=1, progress=False)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if "replay" not in sub.choices:  # type: ignore[attr-defined]
        add_replay_commands(sub)
    args = parser.parse_args(["replay", str(topology), "--snapshot-dir", str(tmp_path / "snap"),
                              "--partitions", "1,2", "--to-parquet", str(tmp_path / "s"),
                              "--engine", "spark", "--no-progress"])
    assert args.run(args) == 0
    assert_same(pq.read_table(tmp_path / "l.parquet"), pq.read_table(tmp_path / "s"),
                ["user_id"])
    # the local engine's warnings: dates beyond the snapshots, generation 0 to Redis
    caplog.set_level(logging.WARNING, logger="streamfeat.replay")
    spark_replay(topology, tmp_path / "snap", spark=spark, date_from="2000-01-01",
                 frame=True, progress=False)
    replay(topology, tmp_path / "snap", date_from="2000-01-01", processes=1, progress=False,
           to_parquet=tmp_path / "x.parquet")
    got = [r.getMessage() for r in caplog.records if r.name == "streamfeat.replay"]
    assert len(got) == 2 and got[0] == got[1] and "2000-01-01" in got[0]


@pytest.mark.integration
def test_backfill_to_redis_is_fenced_like_the_local_one(
    redis_url: str, unique_id: str, tmp_path: Path, spark: Any
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text((ROOT / "topologies" / "orders.yaml").read_text().replace(
        "name: orders ", f"name: {unique_id} ", 1))
    topology = load_topology(path)
    snap = tmp_path / "snap"
    write_snapshots(snap, "orders", 2000, 2, seed=5)
    got = spark_replay(topology, snap, spark=spark, to_redis=redis_url, generation=2,
                       batch_rows=300, progress=False)
    assert got.entities > 40
    assert sum(s.redis_applied for s in got.partitions) > 0
    assert sum(s.redis_rejected for s in got.partitions) == 0
    report = verify(topology, snap, redis_url)  # the local verify: every value is the replay's
    assert report.checked == got.entities and report.match_rate == 1.0, report.mismatches[:5]
    with Client(redis_url) as client:
        before = client.get_with_meta(topology, ["u1", "u2"])
    assert before["u1"].version is not None and before["u1"].version.startswith("0000000002.")

    # a lower generation, local or Spark, is fenced off: nothing applied, nothing changes
    lower = replay(topology, snap, to_redis=redis_url, generation=1, progress=False,
                   processes=1, batch_rows=300)
    assert sum(s.redis_applied for s in lower.partitions) == 0
    assert sum(s.redis_rejected for s in lower.partitions) > 0
    lower_spark = spark_replay(topology, snap, spark=spark, to_redis=redis_url, generation=1,
                               batch_rows=300, progress=False)
    assert [(s.redis_applied, s.redis_rejected) for s in lower_spark.partitions] == [
        (s.redis_applied, s.redis_rejected) for s in lower.partitions]
    with Client(redis_url) as client:
        after = client.get_with_meta(topology, ["u1", "u2"])
    assert {e: (m.version, json.dumps(m.values, sort_keys=True)) for e, m in after.items()} == {
        e: (m.version, json.dumps(m.values, sort_keys=True)) for e, m in before.items()}

    # verify on Spark agrees with the local verify, also on a tampered value
    assert spark_verify(topology, snap, redis_url, spark=spark).match_rate == 1.0
    import redis

    redis.Redis.from_url(redis_url).hset(topology.redis_key("u1"), "orders__7d", "999999")
    local_report = verify(topology, snap, redis_url)
    spark_report = spark_verify(topology, snap, redis_url, spark=spark)
    assert (spark_report.checked, spark_report.match_rate) == (
        local_report.checked, local_report.match_rate)
    assert [(m.entity_id, m.field) for m in spark_report.mismatches] == [("u1", "orders__7d")]
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if "verify" not in sub.choices:  # type: ignore[attr-defined]
        add_replay_commands(sub)
    args = parser.parse_args(["verify", str(path), "--snapshot-dir", str(snap), "--redis",
                              redis_url, "--engine", "spark"])
    assert args.run(args) == 1


def test_snapshots_and_output_in_a_bucket(s3_bucket: str, tmp_path: Path, spark: Any) -> None:
    """Executors read the snapshots from the object store and write the parts there."""
    import pyarrow as pa

    from streamfeat.replay import training_set
    from streamfeat.spark import training_set as spark_training_set

    topology = load_topology(ROOT / "topologies" / "orders.yaml")
    parts = generate(1500, 2, seed=3)
    write(tmp_path / "snap", "orders", parts)
    url = f"s3://{s3_bucket}/snaps"
    write(url, "orders", parts)
    replay(topology, tmp_path / "snap", to_parquet=tmp_path / "l.parquet", processes=1,
           progress=False)
    got = spark_replay(topology, url, spark=spark, to_parquet=f"s3://{s3_bucket}/out",
                       progress=False)
    assert got.records == 1500
    fs, base = open_store(f"s3://{s3_bucket}/out").filesystem()
    assert_same(pq.read_table(tmp_path / "l.parquet"), pq.read_table(base, filesystem=fs),
                ["user_id"])
    records = [r for rs in parts.values() for r in rs][::15]
    spine = pa.table({"user_id": [f"u{i % 55}" for i in range(len(records))],
                      "ts": [r.kafka_ts for r in records],
                      "label": list(range(len(records)))})
    want = training_set(topology, tmp_path / "snap", spine, None, processes=1, progress=False)
    frame = spark_training_set(topology, url, spine, None, spark=spark, progress=False)
    assert_same(want, frame.toArrow(), ["label"])
