"""replay and training-set say, in one line naming the times, when what they are asked for
runs past what the snapshots hold."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pytest

from streamfeat.replay import replay, training_set
from streamfeat.replay.coverage import coverage, format_ms
from streamfeat.snapshot.reader import snapshot_files
from streamfeat.topology import load_topology

from cli_snapshots import START_MS, write_orders

ROOT = Path(__file__).resolve().parents[2]
ORDERS = load_topology(ROOT / "topologies" / "orders.yaml")
HOUR = 3_600_000


@pytest.fixture(scope="module")
def snaps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("snaps")
    write_orders(root)
    return root


def _span(snaps: Path) -> tuple[int, int]:
    got = coverage({p: snapshot_files(str(snaps), "orders", p) for p in (0, 1)})
    assert got is not None
    return got.first_ms, got.last_ms


def test_coverage_is_the_span_of_the_records_kafka_timestamps(snaps: Path) -> None:
    records = [r for p in write_orders(snaps.parent / "again").values() for r in p]
    first, last = _span(snaps)
    assert (first, last) == (min(r.kafka_ts for r in records), max(r.kafka_ts for r in records))
    assert START_MS - 20_000 <= first <= START_MS + 1000


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "streamfeat.replay" and r.levelno == logging.WARNING]


def test_training_set_names_the_spine_times_past_the_snapshots(
        snaps: Path, caplog: pytest.LogCaptureFixture) -> None:
    first, last = _span(snaps)
    times = [first - HOUR, first - 1, first, (first + last) // 2, last, last + 1, last + 2]
    spine = pa.table({"user_id": ["u1"] * len(times), "ts": times})
    caplog.set_level(logging.INFO, logger="streamfeat.replay")
    training_set(ORDERS, snaps, spine, None, processes=1, progress=False)
    (warning,) = _warnings(caplog)
    assert warning == (
        f"training-set: the spine runs from {format_ms(first - HOUR)} to {format_ms(last + 2)}, "
        f"past the snapshots, which hold records from {format_ms(first)} to {format_ms(last)} "
        "(Kafka timestamps): 2 rows before the first (windows reaching back before it miss "
        "the events there); 2 rows after the last (records since are not in the snapshots "
        "yet)")

    caplog.clear()  # within them: nothing to say
    inside = pa.table({"user_id": ["u1", "u2", None], "ts": [first, last, None]})
    training_set(ORDERS, snaps, inside, None, processes=1, progress=False)
    assert _warnings(caplog) == []


@pytest.mark.parametrize(("date_from", "date_to", "said"), [
    ("2026-11-09", None, ["--from 2026-11-09 is before the first snapshotted record ({first})"]),
    (None, "2026-11-11", ["--to 2026-11-11 is after the last snapshotted record ({last})"]),
    ("2026-11-01", "2026-12-01", ["--from 2026-11-01 is before the first snapshotted record "
                                  "({first})", "--to 2026-12-01 is after the last snapshotted "
                                  "record ({last})"]),
    ("2026-11-10", "2026-11-10", []),
])
def test_replay_names_a_date_range_past_the_snapshots(
        snaps: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, date_from: str | None,
        date_to: str | None, said: list[str]) -> None:
    first, last = (format_ms(t) for t in _span(snaps))
    caplog.set_level(logging.INFO, logger="streamfeat.replay")
    replay(ORDERS, snaps, to_parquet=tmp_path / "out.parquet", date_from=date_from,
           date_to=date_to, processes=1, progress=False)
    expected = "; ".join(s.format(first=first, last=last) for s in said)
    assert _warnings(caplog) == ([f"replay: {expected}: the snapshots hold nothing there"]
                                 if said else [])
