"""deploy/local/s3: starts moto's server on loopback once (idempotent), prints the AWS_*
settings that reach it, and down stops that process and nothing else."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from objectstore import ROOT, S3

SCRIPT = str(ROOT / "deploy" / "local" / "s3")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_up_twice_then_down(tmp_path: Path, s3: S3) -> None:
    local = tmp_path / "local"
    # the server's venv the session already installed (through the s3 fixture), not again
    venvs = sorted((ROOT / ".local" / "s3").glob("moto-*"))
    if venvs:
        (local / "s3").mkdir(parents=True)
        for venv in venvs:
            (local / "s3" / venv.name).symlink_to(venv)
    port = _free_port()
    env = {**os.environ, "STREAMFEAT_LOCAL_DIR": str(local), "S3_PORT": str(port)}
    first = _run(env, "up")
    assert first.returncode == 0, first.stderr
    assert f"AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in first.stdout.splitlines()
    assert "AWS_ACCESS_KEY_ID=testing" in first.stdout
    pid = int((local / "run" / "s3.pid").read_text())
    assert _alive(pid)

    second = _run(env, "up")
    assert second.returncode == 0 and "already running" in second.stderr, second.stderr
    assert int((local / "run" / "s3.pid").read_text()) == pid

    taken = _run({**env, "STREAMFEAT_LOCAL_DIR": str(tmp_path / "other")}, "up")
    assert taken.returncode != 0 and f"port {port} is in use" in taken.stderr, taken.stderr

    down = _run(env, "down")
    assert down.returncode == 0, down.stderr
    deadline = time.time() + 15
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
    assert not (local / "run" / "s3.pid").exists()
    again = _run(env, "down")
    assert again.returncode == 0 and "not started by deploy/local/s3" in again.stderr
