"""deploy/demo, the README's main job, run as a newcomer runs it: it leaves snapshots that
``replay``, ``verify`` and ``training-set`` read (issue #16)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_the_demo_leaves_snapshots_that_replay_and_training_set_read(
        tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    env = {**os.environ, "STREAMFEAT_KAFKA": kafka_bootstrap, "STREAMFEAT_REDIS": redis_url,
           "EVENTS": "6000", "ENTITIES": "500", "DEMO_DIR": str(tmp_path / "demo")}
    ran = subprocess.run([str(ROOT / "deploy" / "demo")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    said = f"--- stdout\n{ran.stdout[-5000:]}\n--- stderr\n{ran.stderr[-5000:]}"
    assert ran.returncode == 0, said
    demo = tmp_path / "demo"
    snapshots = sorted((demo / "snapshots" / "orders").rglob("*.parquet"))
    assert snapshots, said
    snapshotted = sum(pq.ParquetFile(p).metadata.num_rows for p in snapshots)
    assert snapshotted >= 6000, snapshotted  # this run's records (the topic may hold more)
    assert "match rate 100.000000%" in ran.stdout, said
    replayed = pq.read_table(demo / "replay.parquet")
    spine = (demo / "spine.csv").read_text().splitlines()
    trained = pq.read_table(demo / "train.parquet")
    assert replayed.num_rows >= 100 and "orders__1h" in replayed.column_names
    assert trained.num_rows == len(spine) - 1 == min(1000, replayed.num_rows)
    assert {"user_id", "ts", "orders__1h", "amount_sum__1d"} <= set(trained.column_names)
    # An hour before each user's last order: the values are not the final ones for all.
    final = {r["user_id"]: r["lifetime_orders__lifetime"] for r in replayed.to_pylist()}
    earlier = [(r["user_id"], r["lifetime_orders__lifetime"]) for r in trained.to_pylist()]
    assert all((v or 0) <= final[u] for u, v in earlier)
    assert any((v or 0) < final[u] for u, v in earlier)
