"""Progress: a tracker's steps and lines, the bar that sums the parts of a task (from
other processes too), and replay / training-set / verify showing it."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from streamfeat.cli import main
from streamfeat.cli_progress import ProgressDisplay, choose_mode
from streamfeat.progress import LINE_EVERY_S, STEP_EVERY_S, Step, Tracker, announce
from streamfeat.replay import replay

from cli_snapshots import START_MS, write_orders
from harness import make_topology

ROOT = Path(__file__).resolve().parents[2]
ORDERS = str(ROOT / "topologies" / "orders.yaml")
BASE = "streamfeat.replay"
PROGRESS = f"{BASE}.progress"


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    """``text`` without the terminal's escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", text)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_tracker_steps_for_a_bar_and_writes_a_line_now_and_then(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=PROGRESS)
    clock = Clock()
    tracker = Tracker(logging.getLogger(PROGRESS), "replay t", "3", 1000, clock=clock)
    seen: list[tuple[int, int, bool]] = []
    for done in range(0, 800, 10):  # 80 updates, 0.125 s apart: 10 s
        clock.now += 0.125
        tracker.update(done)
    tracker.update(990)
    tracker.finish()
    for r in caplog.records:
        step = r.progress  # type: ignore[attr-defined]
        assert isinstance(step, Step) and (step.task, step.part) == ("replay t", "3")
        seen.append((r.levelno, step.done, step.finished))
    lines = [s for s in seen if s[0] == logging.INFO]
    steps = [s for s in seen if s[0] == logging.DEBUG]
    assert len(lines) == int(10 / LINE_EVERY_S)  # one every 5 s
    assert len(steps) == pytest.approx(10 / STEP_EVERY_S - len(lines), abs=2)
    assert seen[-1] == (logging.DEBUG, 990, True)
    assert caplog.records[-1].progress.total == 990  # type: ignore[attr-defined]
    line = next(r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert re.fullmatch(r"replay t\[3\]: [\d,]+ of 1,000 records \(\d+%\)", line), line


def test_the_bar_sums_the_parts_and_hides_the_lines(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger(PROGRESS)
    with ProgressDisplay("bar") as display:
        assert display.enabled
        announce(logger, "replay t", 3000)
        for part, total in (("0", 1000), ("1", 2000)):
            tracker = Tracker(logger, "replay t", part, total)
            tracker.update(total - 5)  # gaps in the offsets: ends below its plan
            tracker.finish()
        logger.info("a progress line: never shown beside the bar")
    out = plain(capsys.readouterr().err)
    assert "replay t" in out and "2990/2990 records" in out and "100%" in out
    assert "a progress line" not in out
    assert logger.propagate and logger.level == logging.NOTSET  # given back as found


def test_lines_mode_shows_only_the_lines_and_off_nothing(
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger(PROGRESS)
    caplog.set_level(logging.DEBUG)
    for mode, shown in (("lines", True), ("off", False)):
        caplog.clear()
        with ProgressDisplay(mode) as display:  # type: ignore[arg-type]
            assert display.enabled is shown
            logger.debug("a step", extra={"progress": Step("t", "0", 1, 2)})
            logger.info("a line")
        assert [r.getMessage() for r in caplog.records] == (["a line"] if shown else [])
    err = capsys.readouterr().err
    assert "━" not in err and "\x1b[" not in err  # no bar


def test_the_mode_follows_the_flags_and_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert (choose_mode(None), choose_mode(True), choose_mode(False)) == ("lines", "bar", "off")
    monkeypatch.setattr(sys, "stderr", Tty())
    assert (choose_mode(None), choose_mode(True), choose_mode(False)) == ("bar", "bar", "off")


def test_replay_in_two_processes_shows_one_bar_to_the_end(tmp_path: Path) -> None:
    """The partitions run in spawned processes; their steps reach this process's bar."""
    parts = write_orders(tmp_path / "snaps")
    total = sum(len(r) for r in parts.values())
    done = subprocess.run(
        [sys.executable, "-m", "streamfeat.cli", "replay", ORDERS, "--snapshot-dir",
         str(tmp_path / "snaps"), "--to-parquet", str(tmp_path / "out.parquet"),
         "--processes", "2", "--progress"],
        capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    err = plain(done.stderr)
    assert "replay orders" in err and f"{total}/{total} records" in err and "100%" in err, err
    quiet = subprocess.run(
        [sys.executable, "-m", "streamfeat.cli", "replay", ORDERS, "--snapshot-dir",
         str(tmp_path / "snaps"), "--to-parquet", str(tmp_path / "out.parquet"),
         "--processes", "2", "--no-progress"],
        capture_output=True, text=True, check=False)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_training_set_shows_a_bar_per_pass(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    parts = write_orders(tmp_path / "snaps")
    total = sum(len(r) for r in parts.values())
    spine = tmp_path / "spine.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "ts": [START_MS + 60_000] * 2}), spine)
    assert main(["training-set", ORDERS, "--snapshot-dir", str(tmp_path / "snaps"), "--spine",
                 str(spine), "--out", str(tmp_path / "train.parquet"), "--processes", "1",
                 "--progress"]) == 0
    err = plain(capsys.readouterr().err)
    assert "training-set orders: entities" in err and "training-set orders: rows" in err
    assert f"{total}/{total} records" in err, err
    assert "past the snapshots" not in err  # the spine is within them


@pytest.mark.integration
def test_verify_shows_its_replay_on_a_bar(tmp_path: Path, redis_url: str, unique_id: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    parts = write_orders(tmp_path / "snaps")
    _topology, path = make_topology(unique_id, "orders", tmp_path)
    replay(path, tmp_path / "snaps", to_redis=redis_url, processes=1, progress=False)
    try:
        assert main(["verify", str(path), "--snapshot-dir", str(tmp_path / "snaps"),
                     "--redis", redis_url, "--progress"]) == 0
        captured = capsys.readouterr()
        err = plain(captured.err)
        total = sum(len(r) for r in parts.values())
        assert f"verify {unique_id}" in err and f"{total}/{total} records" in err, err
        assert "match rate 100.000000%" in captured.out
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"sf:{unique_id}:*", count=1000))
        if keys:
            client.delete(*keys)
