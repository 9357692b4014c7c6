"""Fixtures of the feature server's tests: a topology whose features the worker's RedisSink
wrote to the session's real Redis, a private redis-server for the faults (a Redis that
sleeps, a flushed script cache) and a real ``streamfeat serve`` process."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from streamfeat.sinks import RedisSink, Update, version
from streamfeat.topology import TopologyDef, load_topology

ROOT = Path(__file__).resolve().parents[2]

# The end-to-end helpers (tests/integration/harness.py), imported by bare name as there.
_INTEGRATION = str(ROOT / "tests" / "integration")
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)

ASOF = 1_790_000_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def orders_topology(name: str, tmp_path: Path) -> tuple[TopologyDef, Path]:
    """topologies/orders.yaml (23 fields, defaults for some) under a test-unique name."""
    text = (ROOT / "topologies" / "orders.yaml").read_text()
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace("name: orders ", f"name: {name} ", 1))
    topology = load_topology(path)
    assert topology.name == name
    return topology, path


def stored_values(topology: TopologyDef, i: int) -> dict[str, Any]:
    """Entity ``i``'s values: every kind the sink writes (ints of any size, floats, text,
    lists, pairs), and every seventh field absent (an aggregation over no events)."""
    out: dict[str, Any] = {}
    for k, name in enumerate(topology.redis_fields()):
        if (i + k) % 7 == 0:
            continue  # absent: served as null, never as the default
        if name.startswith(("last_amounts", "top_merchants")):
            out[name] = [[f"m{i}", k], [f"m{k}", 1]] if name.startswith("top") else [i, 0.5]
        elif name.startswith("last_status"):
            out[name] = ["completed", "pending", "ü \"quoted\""][i % 3]
        elif name.startswith(("orders", "lifetime", "session_orders", "merchants")):
            out[name] = i * 1000 + k if i != 3 else 2**70 + k
        else:
            out[name] = i + k / 7
    return out


@dataclass(frozen=True)
class Served:
    """A topology with ``stored`` entities in Redis (``e0``, ``e1``, ... and ``7``)."""

    topology: TopologyDef
    path: Path
    stored: list[str]


@pytest.fixture
def served(redis_url: str, unique_id: str, tmp_path: Path) -> Iterator[Served]:
    topology, path = orders_topology(f"{unique_id}-orders", tmp_path)
    ids = [f"e{i}" for i in range(40)] + ["7"]
    with RedisSink(redis_url, topology) as sink:
        sink.write([Update(eid, stored_values(topology, n), ASOF + n, version(0, 0, n))
                    for n, eid in enumerate(ids)])
    yield Served(topology, path, ids)
    with redis.Redis.from_url(redis_url) as conn:
        keys = list(conn.scan_iter(match=f"sf:{topology.name}:*", count=1000))
        if keys:
            conn.unlink(*keys)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test alone (DEBUG SLEEP and SCRIPT FLUSH touch no one else's)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--enable-debug-command", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with redis.Redis.from_url(url, socket_timeout=1) as conn:
                    conn.ping()
                break
            except redis.RedisError:
                assert proc.poll() is None, f"redis-server exited {proc.returncode}"
                assert time.monotonic() < deadline, "redis-server did not answer in 20 s"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 timeout: float = 10) -> tuple[int, bytes]:
    """One request on a new connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_get(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    return http_request(port, "GET", path, timeout=timeout)


def http_post(port: int, path: str, body: bytes, timeout: float = 10) -> tuple[int, bytes]:
    return http_request(port, "POST", path, body, timeout=timeout)


@dataclass
class ServeProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise AssertionError(f"streamfeat serve ignored SIGTERM for {timeout_s} s:\n"
                                 + self.output()) from None


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """``serve(topology_path, "--redis", url, ...)``: a real ``streamfeat serve`` on a free
    port, returned once ``/health`` answers 200; stopped at the end of the test."""
    started: list[ServeProcess] = []

    def start(*args: str | Path, wait: bool = True) -> ServeProcess:
        port = free_port()
        log = tmp_path / f"serve-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamfeat.cli", "serve", *map(str, args),
                 "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        server = ServeProcess(proc, port, log)
        started.append(server)
        if wait:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, f"serve exited {proc.returncode}:\n{server.output()}"
                with contextlib.suppress(OSError):
                    if http_get(port, "/health", timeout=2)[0] == 200:
                        break
                assert time.monotonic() < deadline, "no /health 200 in 60 s:\n" + server.output()
                time.sleep(0.1)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(30)
