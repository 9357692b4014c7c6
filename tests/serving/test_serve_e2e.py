"""``streamfeat serve`` as a real process: the values over real HTTP, metrics, a graceful
SIGTERM that finishes the requests in flight, and failures at start."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import redis

from streamfeat.cli import build_parser
from streamfeat.client import Client

from .conftest import Served, ServeProcess, free_port, http_get, http_post

pytestmark = pytest.mark.integration


def test_values_over_http_equal_the_client_and_sigterm_exits_0(
    serve: Callable[..., ServeProcess], served: Served, redis_url: str
) -> None:
    server = serve(served.path, "--redis", redis_url)
    name = served.topology.name
    asked = [*served.stored, "nobody", 99]
    status, body = http_post(server.port, f"/features/{name}",
                             msgspec.json.encode({"entities": asked, "features": None}))
    assert status == 200, body
    with Client(redis_url) as client:
        assert msgspec.json.decode(body)["entities"] == client.get(served.topology, asked)
        status, body = http_get(server.port, f"/features/{name}/e9?features=orders,amount_sum")
        assert status == 200
        assert msgspec.json.decode(body)["entities"] == \
            client.get(served.topology, ["e9"], ["orders", "amount_sum"])
    status, body = http_get(server.port, "/metrics")
    assert status == 200
    assert f'streamfeat_serve_requests_total{{status="200",topology="{name}"}} 2.0' in \
        body.decode()
    assert f'streamfeat_serve_entities_per_request_sum{{topology="{name}"}} 44.0' in \
        body.decode()
    started = time.monotonic()
    assert server.stop() == 0, server.output()
    assert time.monotonic() - started < 5
    assert "Application shutdown complete" in server.output()


def test_sigterm_lets_the_request_in_flight_finish(
    serve: Callable[..., ServeProcess], served: Served, private_redis: str
) -> None:
    """A request waiting on Redis (busy 1.5 s: DEBUG SLEEP) when SIGTERM comes still gets its
    answer; the port closes at once; the process exits 0 after."""
    name = served.topology.name
    with redis.Redis.from_url(private_redis) as conn:
        conn.hset(f"sf:{name}:k", mapping={"_v": "0000000000.000000.0000000000000000001",
                                           "orders__5m": "41"})
    server = serve(served.path, "--redis", private_redis, "--timeout", "5")
    sleeper = threading.Thread(target=lambda: redis.Redis.from_url(private_redis)
                               .execute_command("DEBUG", "SLEEP", "1.5"))
    answers: list[tuple[int, bytes]] = []
    request = threading.Thread(target=lambda: answers.append(http_post(
        server.port, f"/features/{name}", b'{"entities": ["k"], "features": ["orders__5m"]}')))
    sleeper.start()
    time.sleep(0.2)
    request.start()
    time.sleep(0.3)  # the request waits on Redis now
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(OSError):  # no new connection once stopping
        http_get(server.port, "/health", timeout=1)
    request.join(10)
    sleeper.join(10)
    assert answers == [(200, b'{"topology":"%s","entities":{"k":{"orders__5m":41}}}'
                        % name.encode())], server.output()
    assert server.proc.wait(10) == 0, server.output()


def test_a_bad_topology_stops_it_before_listening(tmp_path: Path, redis_url: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nsource: {topic: t, key: k}\nfeatures:\n"
                   "  - {name: n, agg: sum, windows: [5m]}\n")
    done = subprocess.run(
        [sys.executable, "-m", "streamfeat.cli", "serve", str(bad), "--redis", redis_url,
         "--port", str(free_port())], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"{bad}:5" in done.stderr and "Uvicorn running" not in done.stderr


def test_a_bad_setting_is_one_line_naming_the_flag(served: Served, redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamfeat.cli", "serve", str(served.path), "--redis",
         redis_url, "--redis-pool", "0"], capture_output=True, text=True, timeout=60,
        check=False)
    assert done.returncode == 2
    assert done.stderr == "streamfeat: --redis-pool must be above 0, got 0\n"


def test_every_flag_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve_parser = sub.choices["serve"]
    flags = [a for a in serve_parser._actions if not isinstance(a, argparse._HelpAction)]
    assert {f for a in flags for f in a.option_strings} >= {
        "--host", "--port", "--redis", "--timeout", "--redis-pool", "--max-entities",
        "--max-body-bytes", "--max-concurrency", "--keep-alive", "--shutdown-timeout", "--io",
        "--access-log"}
    assert [a.dest for a in flags if not a.help] == []
