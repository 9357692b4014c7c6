"""``streamfeat serve`` against the Python client: p50 / p99 of the same reads.

    .venv/bin/python benchmarks/serve.py [--entities 10000] [--iterations 3000]
        [--io asyncio,threads] [--redis URL]

Writes ``--entities`` entities of topologies/orders.yaml (23 fields, under a unique
topology name) to Redis through the worker's RedisSink, starts ``streamfeat serve`` as a
real subprocess (once per ``--io`` mode), then times, interleaved so that both see the same
machine, for 1 entity x 20 features and 100 random entities x 20 features:

- direct: ``Client.get(topology, ids, features)`` in this process;
- http: ``POST /features/{topology}`` on one keep-alive connection, by a minimal HTTP/1.1
  client on a raw socket, the body encoded and the answer decoded with msgspec (a fast
  client, so that the server is measured; Go's or Java's clients cost about as little);
- http (http.client): the same with Python's http.client, for comparison.

Prints p50 / p99 / max of each and the raw client's excess over direct, over all samples and
per round (``--rounds``); the goal is p99 within 1 ms for 100 x 20. The keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import http.client
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import redis
from reads import fill

from streamfeat.client import Client
from streamfeat.config import resolve_redis
from streamfeat.topology import load_topology

from harness import delete_keys  # benchmarks/harness.py

ROOT = Path(__file__).resolve().parent.parent
ORDERS = ROOT / "topologies" / "orders.yaml"
STREAMFEAT = Path(sys.executable).parent / "streamfeat"
GOAL_MS = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def server(topology: Path, redis_url: str, io: str) -> Iterator[tuple[int, int]]:
    """``streamfeat serve`` on a free port: (port, pid) once /health answers 200."""
    port = free_port()
    proc = subprocess.Popen(
        [str(STREAMFEAT), "serve", str(topology), "--port", str(port), "--redis", redis_url,
         "--io", io], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"streamfeat serve exited {proc.returncode}:\n"
                                 f"{proc.stderr.read() if proc.stderr else ''}")
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            if time.monotonic() > deadline:
                raise SystemExit("streamfeat serve did not answer /health within 30 s")
            time.sleep(0.1)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode != 0:
            print(f"streamfeat serve exited {proc.returncode} on SIGTERM", file=sys.stderr)


class HttpReader:
    """POST /features on one keep-alive connection: a minimal HTTP/1.1 client on a raw socket
    (what Go's net/http or a JVM client costs, about), or with ``stdlib=True`` Python's
    http.client, whose buffered 8 KiB reads add about 0.25 ms to a 55 kB answer."""

    def __init__(self, port: int, topology: str, *, stdlib: bool = False) -> None:
        self.path = f"/features/{topology}"
        self.encode = msgspec.json.Encoder().encode
        self.decode = msgspec.json.Decoder().decode
        self.conn: http.client.HTTPConnection | None = None
        self.sock: socket.socket | None = None
        if stdlib:
            self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = (f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\nContent-Length: ").encode()
        self.buf = b""

    def get(self, ids: list[str], features: list[str]) -> dict[str, Any]:
        body = self.encode({"entities": ids, "features": features})
        if self.conn is not None:
            self.conn.request("POST", self.path, body, {"Content-Type": "application/json"})
            response = self.conn.getresponse()
            status, answer = response.status, response.read()
        else:
            status, answer = self._post(body)
        if status != 200:
            raise SystemExit(f"HTTP {status}: {answer[:300]!r}")
        doc: dict[str, Any] = self.decode(answer)["entities"]
        return doc

    def _post(self, body: bytes) -> tuple[int, bytes]:
        assert self.sock is not None
        self.sock.sendall(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += self._recv()
        lines = buf[:end].split(b"\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in lines[1:]
                      if line.lower().startswith(b"content-length:"))
        need = end + 4 + length
        while len(buf) < need:
            buf += self._recv()
        self.buf = buf[need:]
        return int(lines[0].split()[1]), buf[end + 4 : need]

    def _recv(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise SystemExit("streamfeat serve closed the connection")
        return chunk

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.sock is not None:
            self.sock.close()


def pct(lat: list[float], q: float) -> float:
    return lat[min(len(lat) - 1, round(q * (len(lat) - 1)))]


def interleaved(cases: dict[str, Callable[[list[str]], Any]], draw: Callable[[], list[str]],
                iterations: int, cpu: dict[str, float]) -> dict[str, list[float]]:
    """Each iteration draws entities and times every case on them, in turn (ms, sorted);
    this process's CPU time per case is added to ``cpu`` (seconds)."""
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(iterations):
        ids = draw()
        for name, fn in cases.items():
            cpu_started = time.process_time()
            started = time.perf_counter()
            fn(ids)
            out[name].append((time.perf_counter() - started) * 1000)
            cpu[name] = cpu.get(name, 0.0) + time.process_time() - cpu_started
    return {name: sorted(lat) for name, lat in out.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc; clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=10_000, help="entities written")
    parser.add_argument("--iterations", type=int, default=3_000, help="reads per case")
    parser.add_argument("--rounds", type=int, default=5,
                        help="the iterations are split in rounds; each round's p99 "
                             "difference is shown too (the machine's noise comes in bursts)")
    parser.add_argument("--io", default="asyncio,threads",
                        help="the server's --io modes to measure, comma-separated")
    parser.add_argument("--redis", default=None, help="Redis URL (env STREAMFEAT_REDIS)")
    args = parser.parse_args()
    redis_url = resolve_redis(args.redis)

    name = dt.datetime.now(dt.UTC).strftime("r%Y%m%d%H%M%S_serve")
    text = ORDERS.read_text().replace("name: orders ", f"name: {name} ", 1)
    path = Path(tempfile.mkdtemp(prefix="streamfeat-serve-")) / f"{name}.yaml"
    path.write_text(text)
    topology = load_topology(path)
    fields = topology.redis_fields()
    twenty = fields[:20]
    print(f"writing {args.entities:,} entities x {len(fields)} fields of {ORDERS.name} ...")
    fill(topology, redis_url, args.entities)
    rnd = random.Random(11)
    client = Client(redis_url)
    rows: list[str] = []
    cpu_rows: list[str] = []
    try:
        for io in [m for m in args.io.split(",") if m]:
            before = os.getloadavg()[0]
            with server(path, redis_url, io) as (port, pid):
                raw, stdlib = HttpReader(port, name), HttpReader(port, name, stdlib=True)
                for ids in (["u0"], [f"u{i}" for i in range(100)]):  # warm all, check equal
                    direct = client.get(topology, ids, twenty)
                    if direct != raw.get(ids, twenty) or direct != stdlib.get(ids, twenty):
                        raise SystemExit(f"served values differ from the client's for {ids[:3]}")
                cases: dict[str, Callable[[list[str]], Any]] = {
                    "direct": functools.partial(client.get, topology, features=twenty),
                    "http": functools.partial(raw.get, features=twenty),
                    "http (http.client)": functools.partial(stdlib.get, features=twenty)}
                for n in (1, 100):
                    draw = functools.partial(lambda n: [f"u{i}" for i in rnd.sample(
                        range(args.entities), n)], n)
                    cpu: dict[str, float] = {}
                    server_cpu = cpu_seconds(pid)
                    rounds = [interleaved(cases, draw, args.iterations // args.rounds, cpu)
                              for _ in range(args.rounds)]
                    server_cpu = cpu_seconds(pid) - server_cpu
                    label = f"{n} x 20"
                    lat = {case: sorted(x for r in rounds for x in r[case]) for case in cases}
                    reads = len(lat["direct"])
                    served = sum(len(v) for case, v in lat.items() if case != "direct")
                    cpu_rows.append(
                        f"| {io} | {label} | {cpu['direct'] / reads * 1000:.3f} | "
                        f"{cpu['http'] / reads * 1000:.3f} | "
                        f"{server_cpu / served * 1000:.3f} |")
                    for case, values in lat.items():
                        rows.append(f"| {io} | {label} | {case} | {len(values)} | "
                                    f"{pct(values, 0.5):.3f} | {pct(values, 0.99):.3f} | "
                                    f"{values[-1]:.3f} |")
                    d50 = pct(lat["http"], 0.5) - pct(lat["direct"], 0.5)
                    d99 = pct(lat["http"], 0.99) - pct(lat["direct"], 0.99)
                    by_round = sorted(pct(r["http"], 0.99) - pct(r["direct"], 0.99)
                                      for r in rounds)
                    median = by_round[len(by_round) // 2]
                    verdict = "" if n != 100 else (
                        "; goal <= 1 ms (median round): " + ("met" if median <= GOAL_MS
                                                              else "MISSED"))
                    rows.append(f"| {io} | {label} | http - direct | | {d50:+.3f} | "
                                f"{d99:+.3f} | p99 by round: "
                                f"{', '.join(f'{d:+.2f}' for d in by_round)}{verdict} |")
                raw.close()
                stdlib.close()
                print(f"--io {io}: measured (server pid {pid}); load average (1 min) "
                      f"{before:.2f} before, {os.getloadavg()[0]:.2f} after", flush=True)
        load = os.getloadavg()
        print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
              f"{os.cpu_count()} CPUs")
        print("\n| --io | entities x features | read | n | p50 ms | p99 ms | max ms |\n"
              "|---|---|---|---:|---:|---:|---:|")
        print("\n".join(rows))
        print("\nCPU time per read (ms): the Python client's process for a direct read; for an "
              "HTTP read, the raw client's process and the server's (all its threads)\n")
        print("| --io | entities x features | direct: client | http: client | http: server |"
              "\n|---|---|---:|---:|---:|")
        print("\n".join(cpu_rows))
    finally:
        client.close()
        path.unlink(missing_ok=True)
        path.parent.rmdir()
        delete_keys(redis.Redis.from_url(redis_url), name)


if __name__ == "__main__":
    main()
