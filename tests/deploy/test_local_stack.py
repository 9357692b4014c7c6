"""deploy/local/up and down: idempotent, readiness-checked, and they stop only what they started."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UP, DOWN = str(ROOT / "deploy" / "local" / "up"), str(ROOT / "deploy" / "local" / "down")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(local: Path, **extra: str) -> dict[str, str]:
    kafka, controller, redis_port = _free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFEAT_")}
    env.update(STREAMFEAT_LOCAL_DIR=str(local), KAFKA_PORT=str(kafka),
               KAFKA_CONTROLLER_PORT=str(controller), REDIS_PORT=str(redis_port), **extra)
    return env


def _run(cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cmd], env=env, capture_output=True, text=True, timeout=300, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is not running
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(shutil.which("java") is None or shutil.which("mvn") is None,
                    reason="needs a JDK and Maven (deploy/local/up's prerequisites)")
def test_up_twice_then_down_leaves_no_process_of_ours(tmp_path: Path) -> None:
    local = tmp_path / "local"
    libs = ROOT / ".local" / "kafka" / "libs-4.3.1"
    if (libs / ".complete").exists():  # reuse the fetched jars: this test is about processes
        (local / "kafka").mkdir(parents=True)
        shutil.copytree(libs, local / "kafka" / "libs-4.3.1")
    env = _env(local)
    first = _run(UP, env)
    assert first.returncode == 0, first.stderr
    assert f"STREAMFEAT_KAFKA=127.0.0.1:{env['KAFKA_PORT']}" in first.stdout
    assert "logs:" in first.stderr
    pids = {name: int((local / "run" / f"{name}.pid").read_text()) for name in ("kafka", "redis")}
    assert all(_alive(pid) for pid in pids.values())

    second = _run(UP, env)
    assert second.returncode == 0, second.stderr
    assert "Kafka already running" in second.stderr and "Redis already running" in second.stderr
    assert {n: int((local / "run" / f"{n}.pid").read_text()) for n in pids} == pids

    down = _run(DOWN, env)
    assert down.returncode == 0, down.stderr
    deadline = time.time() + 30
    while any(_alive(pid) for pid in pids.values()) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids.values()), pids
    assert not list((local / "run").glob("*.pid"))


def test_missing_java_fails_fast_and_names_the_way_out(tmp_path: Path) -> None:
    started = time.time()
    done = _run(UP, _env(tmp_path / "local", JAVA="/nonexistent/java"))
    assert done.returncode != 0
    assert "Java is missing" in done.stderr and "STREAMFEAT_KAFKA" in done.stderr
    assert time.time() - started < 10
    assert not list((tmp_path / "local" / "run").glob("*.pid"))  # nothing was started


def test_unreachable_maven_central_fails_fast_and_names_the_way_out(tmp_path: Path) -> None:
    done = _run(UP, _env(tmp_path / "local", MAVEN_CENTRAL="http://127.0.0.1:9/maven2"))
    assert done.returncode != 0
    assert "cannot be reached" in done.stderr and "STREAMFEAT_KAFKA" in done.stderr
    assert not list((tmp_path / "local" / "run").glob("*.pid"))
