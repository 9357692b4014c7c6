"""Backfill to real Redis, then verify: 100% on a faithful store, mismatches when tampered."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pytest
import redis

from streamfeat.cli import build_parser
from streamfeat.cli_replay import add_replay_commands
from streamfeat.client import Client
from streamfeat.generator import OrderEvents
from streamfeat.records import RawRecord
from streamfeat.replay import replay, verify
from streamfeat.snapshot import SnapshotWriter
from streamfeat.topology import load_topology

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STREAM: dict[str, Any] = {"entities": 80, "events_per_second": 0.5, "disorder_ms": 120_000,
                          "late_fraction": 0.01, "late_ms": 3_600_000,
                          "malformed_fraction": 0.005}


def test_backfill_then_verify(redis_url: str, unique_id: str, tmp_path: Path) -> None:
    text = (ROOT / "topologies" / "orders.yaml").read_text()
    path = tmp_path / "t.yaml"
    path.write_text(text.replace("name: orders ", f"name: {unique_id} ", 1))
    topology = load_topology(path)
    snap = tmp_path / "snap"
    parts: dict[int, list[RawRecord]] = {0: [], 1: []}
    for ev in OrderEvents(seed=5, **STREAM).events(2000):
        p = zlib.crc32(ev.key) % 2
        parts[p].append(RawRecord(p, len(parts[p]), ev.ts, ev.key, ev.value))
    for p, records in parts.items():
        w = SnapshotWriter(snap, "orders", p)
        w.append(records)
        w.close()
    result = replay(topology, snap, to_redis=redis_url, generation=0, progress=False,
                    processes=1, batch_rows=300)
    assert result.entities > 40
    report = verify(topology, snap, redis_url)
    assert report.checked == result.entities and report.match_rate == 1.0, report.mismatches[:5]
    assert verify(topology, snap, redis_url, sample=5).checked == 5

    # a backfill with a higher generation supersedes; values are unchanged
    replay(topology, snap, to_redis=redis_url, generation=2, progress=False, processes=1)
    meta = Client(redis_url).get_with_meta(topology, ["u1"])["u1"]
    assert meta.version is not None and meta.version.startswith("0000000002.")
    assert verify(topology, snap, redis_url).match_rate == 1.0

    r = redis.Redis.from_url(redis_url)
    r.hset(topology.redis_key("u1"), "orders__7d", "999999")
    report = verify(topology, snap, redis_url)
    assert report.match_rate < 1.0
    assert [(m.entity_id, m.field) for m in report.mismatches] == [("u1", "orders__7d")]

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if "verify" not in sub.choices:  # type: ignore[attr-defined]
        add_replay_commands(sub)
    args = parser.parse_args(["verify", str(path), "--snapshot-dir", str(snap),
                              "--redis", redis_url])
    assert args.run(args) == 1
