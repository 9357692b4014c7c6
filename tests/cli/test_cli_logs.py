"""The command line's log: JSON lines (redacted like the text), the start-up noise of the
Kafka clients dropped unless -v, and a handler that follows sys.stderr (progress bars)."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streamfeat import logs
from streamfeat.cli import main
from streamfeat.redact import register


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def test_json_lines_have_the_fields_and_are_redacted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    logs.setup(fmt="json")
    register("hunter2-secret")
    log = logging.getLogger("streamfeat.test")
    log.info("connecting to %s with %s", "rediss://app:pw1234@host:6380/0", "hunter2-secret")
    try:
        raise ValueError("bad password hunter2-secret")
    except ValueError:
        log.exception("it failed")
    first, second = (json.loads(line) for line in _lines(out))
    assert set(first) == {"ts", "level", "logger", "message"}
    assert first["level"] == "INFO" and first["logger"] == "streamfeat.test"
    assert first["message"] == "connecting to rediss://app:***@host:6380/0 with ***"
    assert first["ts"].endswith("Z") and first["ts"][10] == "T"
    assert second["level"] == "ERROR" and second["message"] == "it failed"
    assert "ValueError: bad password ***" in second["exc"]
    assert "hunter2" not in out.getvalue() and "pw1234" not in out.getvalue()


def test_text_lines_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    logs.setup()
    logging.getLogger("streamfeat.test").warning("w %d", 1)
    (line,) = _lines(out)
    assert line.endswith(" WARNING streamfeat.test: w 1")


@pytest.mark.parametrize("verbose", [False, True])
def test_fausts_start_up_noise_is_dropped_unless_verbose(
        monkeypatch: pytest.MonkeyPatch, verbose: bool) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    logs.setup(verbose=verbose)
    faust = logging.getLogger("faust.app.base")
    faust.warning("[^App]: Missing sensor state for rebalance #%s", 1)
    faust.warning("[^App]: Missing sensor state for rebalance end #%s", 1)
    faust.warning("[^App]: something else")
    faust.error("[^App]: Missing sensor state for rebalance #%s (as an error)", 2)
    text = out.getvalue()
    assert "something else" in text and "(as an error)" in text
    assert ("Missing sensor state for rebalance #1" in text) is verbose
    assert ("rebalance end #1" in text) is verbose


def test_the_handler_writes_to_the_stderr_of_the_moment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A progress bar replaces sys.stderr while it runs; the log's lines must go there."""
    before, during = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", before)
    logs.setup()
    monkeypatch.setattr(sys, "stderr", during)
    logging.getLogger("streamfeat.test").warning("while the bar runs")
    assert "while the bar runs" in during.getvalue() and before.getvalue() == ""


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="use one of text, json"):
        logs.setup(fmt="xml")


def test_with_json_logs_the_commands_own_lines_are_json_too(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An error and the deprecation warning are log lines then, not bare text that would
    break a collector parsing every line."""
    missing = tmp_path / "missing.yaml"
    assert main(["--log-format", "json", "verify", "--topology", str(missing),
                 "--snapshot-dir", str(tmp_path)]) == 2
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["level"], e["logger"]) for e in lines] == [("WARNING", "streamfeat"),
                                                           ("ERROR", "streamfeat")]
    assert lines[0]["message"].startswith("--topology is deprecated; give the topology first")
    assert lines[1]["message"].startswith(f"{missing}:1: cannot read the topology file")


@pytest.mark.parametrize("command", [["verify"], ["replay", "--to-redis", "REDIS"]])
def test_a_topology_that_cannot_be_read_is_refused_before_redis_is_reached(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    """The topology's file and line come first, whether or not Redis runs (here: nothing
    listens at the address given)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    missing = tmp_path / "missing.yaml"
    argv = [command[0], str(missing), "--snapshot-dir", str(tmp_path),
            *[closed if a == "REDIS" else a for a in command[1:]]]
    if command[0] == "verify":
        argv += ["--redis", closed]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{missing}:1: cannot read the topology file" in err and "Redis" not in err, err


def test_with_json_logs_an_uncaught_exception_is_one_json_line(tmp_path: Path) -> None:
    # a bug (here: the loader replaced by None) reaches Python's exception hook: one JSON line
    script = ("import sys, streamfeat.topology as t; from streamfeat import cli; "
              "t.load_topology = None; "
              "sys.exit(cli.main(['--log-format', 'json', 'validate', 'any.yaml']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)
    (line,) = done.stderr.splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "CRITICAL", "streamfeat", "uncaught TypeError")
    assert "TypeError: 'NoneType' object is not callable" in entry["exc"]
    assert done.returncode == 1
