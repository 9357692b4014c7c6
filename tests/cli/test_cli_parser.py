"""The command line's surface: help on every flag, the version, flags before or after the
command, and the topology given the same way everywhere (the old --topology kept, warned)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from streamfeat.cli import build_parser, main
from streamfeat.cli_common import settle_topology

ROOT = Path(__file__).resolve().parents[2]
ORDERS = str(ROOT / "topologies" / "orders.yaml")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every sub-command's parser by its command line (``monitor show``), nested ones too."""
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                out[name] = command
                out.update({f"{name} {k}": v for k, v in _subparsers(command).items()})
    return out


def test_every_flag_of_every_command_has_help() -> None:
    parser = build_parser()
    commands = _subparsers(parser)
    assert {"validate", "worker", "get", "generate", "registry", "plan", "replay",
            "training-set", "verify"} <= set(commands)
    missing = []
    for name, p in [("streamfeat", parser), *commands.items()]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if action.help is argparse.SUPPRESS:  # hidden on purpose: deprecated aliases
                assert action.option_strings == ["--topology"], (name, action)
                continue
            if not action.help or not action.help.strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"no help: {missing}"


def test_every_command_takes_verbose_and_log_format_after_it() -> None:
    parser = build_parser()
    for name, p in _subparsers(parser).items():
        options = p._option_string_actions
        assert {"-v", "--verbose", "--log-format"} <= set(options), name


def test_version_is_the_installed_packages() -> None:
    done = subprocess.run([sys.executable, "-m", "streamfeat.cli", "--version"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"streamfeat {version('streamfeat')}"


@pytest.mark.parametrize("argv", [
    ["-v", "--log-format", "json", "validate", ORDERS],
    ["validate", ORDERS, "-v", "--log-format", "json"],
    ["--log-format", "json", "validate", "-v", ORDERS],
])
def test_verbose_and_log_format_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.log_format, args.paths) == (True, "json", [ORDERS])


def test_defaults_without_the_flags() -> None:
    args = build_parser().parse_args(["validate", ORDERS])
    assert (args.verbose, args.log_format) == (False, "text")


def test_a_bad_log_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["validate", ORDERS, "--log-format", "xml"])
    assert stop.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["replay", "training-set", "verify"])
def test_topology_first_and_the_old_flag_still_works_with_one_warning(
        command: str, capsys: pytest.CaptureFixture[str]) -> None:
    extra = {"replay": ["--to-parquet", "x.parquet"],
             "training-set": ["--spine", "s.parquet", "--out", "o.parquet"],
             "verify": []}[command]
    parser = build_parser()
    new = parser.parse_args([command, ORDERS, "--snapshot-dir", "snaps", *extra])
    settle_topology(new)
    assert new.topology == ORDERS
    assert capsys.readouterr().err == ""

    old = parser.parse_args([command, "--topology", ORDERS, "--snapshot-dir", "snaps", *extra])
    settle_topology(old)
    settle_topology(old)  # settled once: a second call says nothing more
    assert old.topology == ORDERS
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--topology is deprecated" in err, err
    assert f"streamfeat {command} TOPOLOGY" in err


def test_no_topology_or_two_different_ones_are_usage_errors(
        capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    none = parser.parse_args(["verify", "--snapshot-dir", "snaps"])
    with pytest.raises(SystemExit) as stop:
        settle_topology(none)
    assert stop.value.code == 2
    assert "required: TOPOLOGY" in capsys.readouterr().err
    two = parser.parse_args(["verify", ORDERS, "--topology", "other.yaml",
                             "--snapshot-dir", "snaps"])
    with pytest.raises(SystemExit) as stop:
        settle_topology(two)
    assert stop.value.code == 2
    assert "two topologies given" in capsys.readouterr().err


def test_the_old_form_runs_end_to_end_with_one_warning_line(tmp_path: Path) -> None:
    """What a script written for the old CLI sees: the command still runs (here it stops
    at the missing snapshot directory, exit 2), one more line on stderr."""
    env = {**os.environ, "STREAMFEAT_REDIS": "redis://127.0.0.1:1/0"}
    runs = {}
    for form in (["--topology", ORDERS], [ORDERS]):
        runs[form[0]] = subprocess.run(
            [sys.executable, "-m", "streamfeat.cli", "replay", *form, "--snapshot-dir",
             str(tmp_path / "none"), "--to-parquet", str(tmp_path / "o.parquet")],
            capture_output=True, text=True, env=env, check=False)
    old, new = runs["--topology"], runs[ORDERS]
    assert old.returncode == new.returncode == 2, (old.stderr, new.stderr)
    assert new.stderr.splitlines() == old.stderr.splitlines()[1:]
    assert old.stderr.splitlines()[0].startswith("streamfeat: warning: --topology is deprecated")
    assert "does not exist; pass --snapshot-dir" in new.stderr


def test_main_exit_status_of_an_unknown_topology_file(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    assert main(["registry", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read the topology file" in capsys.readouterr().err


def test_worker_processes_pass_the_log_flags_on() -> None:
    """--processes N starts N `streamfeat worker` children: they log as the parent asked."""
    from streamfeat.cli import _worker_argv

    parser = build_parser()
    parent = parser.parse_args(["-v", "worker", ORDERS, "--processes", "2", "--log-format",
                                "json"])
    child = parser.parse_args(["worker", *_worker_argv(parent)])
    assert (child.verbose, child.log_format, child.topologies) == (True, "json", [ORDERS])
    quiet = parser.parse_args(["worker", *_worker_argv(parser.parse_args(["worker", ORDERS]))])
    assert (quiet.verbose, quiet.log_format) == (False, "text")


def test_state_cache_mb_passes_to_worker_processes_and_a_negative_one_exits_2(
        capsys: pytest.CaptureFixture[str]) -> None:
    from streamfeat.cli import _worker_argv

    parser = build_parser()
    parent = parser.parse_args(["worker", ORDERS, "--processes", "2", "--state-cache-mb", "64"])
    child = parser.parse_args(["worker", *_worker_argv(parent)])
    assert child.state_cache_mb == 64
    from streamfeat.config import DEFAULT_STATE_CACHE_MB
    assert parser.parse_args(["worker", ORDERS]).state_cache_mb == DEFAULT_STATE_CACHE_MB
    # auto: sized at start from the container's limit (tests/runtime/test_sizing*.py)
    assert parser.parse_args(["worker", ORDERS, "--state-cache-mb", "auto"]
                             ).state_cache_mb == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["worker", ORDERS, "--state-cache-mb", "lots"])
    assert "a number of MiB or auto, not 'lots'" in capsys.readouterr().err
    assert main(["worker", ORDERS, "--state-cache-mb", "-1"]) == 2
    assert "--state-cache-mb must be 0 (no limit) or above" in capsys.readouterr().err


def test_batch_seconds_defaults_alike_on_the_command_line_and_in_the_config() -> None:
    """``--batch-seconds`` (4 s since the sixteenth session, issue #18) is the worker
    config's default too, and passes to worker processes."""
    from streamfeat.cli import _worker_argv
    from streamfeat.config import DEFAULT_BATCH_SECONDS
    from streamfeat.runtime.config import WorkerConfig

    parser = build_parser()
    assert parser.parse_args(["worker", ORDERS]).batch_seconds == DEFAULT_BATCH_SECONDS
    fields = WorkerConfig.__dataclass_fields__
    assert fields["batch_seconds"].default == DEFAULT_BATCH_SECONDS == 4.0
    parent = parser.parse_args(["worker", ORDERS, "--processes", "2", "--batch-seconds", "1.5"])
    assert parser.parse_args(["worker", *_worker_argv(parent)]).batch_seconds == 1.5
