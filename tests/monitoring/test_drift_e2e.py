"""Drift and nulls seen by a real worker's value monitoring, on the real Kafka and Redis.

A worker (subprocess, ``--monitor-interval 2``) consumes a paced stream of orders; a
baseline is made with ``streamfeat monitor baseline`` from the snapshots of the stream's
first part; then the stream goes on unchanged, then its ``amount`` triples, then its
``tip`` field goes missing. Every interval the worker closes is read from its scraped
``/metrics`` (the event times its values are as of included), and the order is asserted
exactly: PSI below 0.2 in every interval before the shift, above it in the interval after
the one the shift first shows in, and the null rate of the mean of ``tip`` up once no window
holds a tip; the count of orders, which neither change touches, never drifts.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from streamfeat.snapshot.reader import partitions, snapshot_files

from harness import Workers, free_port, worker_cmd, worker_env

pytestmark = pytest.mark.integration

WINDOW_MS = 10_000
RATE = 250.0  # events per second of wall clock
STEP_MS = 8  # event time per event: event time runs at twice the wall clock
ENTITIES = 400
INTERVAL_S = 2.0
PSI_ALERT = 0.2

TOPOLOGY = """\
version: 1
name: {name}
owner: monitoring-tests@example.com
source:
  topic: {topic}
  format: json
  key: user_id
  timestamp: ts
  timestamp_unit: ms
entity: user
lateness: 1m
ttl: 1h
features:
  - name: amount_sum
    agg: sum
    field: amount
    windows: [10s]
  - name: amount_mean
    agg: mean
    field: amount
    windows: [10s]
  - name: tip_mean
    agg: mean
    field: tip
    windows: [10s]
  - name: orders
    agg: count
    windows: [10s]
"""


class PacedStream:
    """Orders produced at :data:`RATE` per second, event time advancing :data:`STEP_MS` per
    event (so a pause between phases moves no window), keyed by user."""

    def __init__(self, kafka: str, topic: str, t0_ms: int) -> None:
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": kafka, "linger.ms": 5})
        self.next_ts = t0_ms
        self.rng = random.Random(1717)
        self.produced = 0

    def run(self, n: int, *, scale: float = 1.0, tip: bool = True) -> tuple[int, int]:
        """``n`` events; returns the event times of the first and the last."""
        first = self.next_ts
        started = time.monotonic()
        for i in range(n):
            ahead = started + i / RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            user = f"u{self.rng.randrange(ENTITIES)}"
            event: dict[str, Any] = {"user_id": user, "ts": self.next_ts,
                                     "amount": round(self.rng.lognormvariate(3, 0.5) * scale, 2)}
            if tip:
                event["tip"] = round(self.rng.uniform(0, 5), 2)
            self.producer.produce(self.topic, key=user.encode(), value=json.dumps(event).encode(),
                                  timestamp=self.next_ts)
            self.producer.poll(0)
            self.next_ts += STEP_MS
        assert self.producer.flush(30) == 0
        self.produced += n
        return first, self.next_ts - STEP_MS


@dataclass
class Interval:
    seq: int
    asof_min_ms: int  # -1 for an interval without values
    asof_max_ms: int
    baseline: bool
    count: dict[str, float] = field(default_factory=dict)
    psi: dict[str, float] = field(default_factory=dict)
    nulls: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        def f(d: dict[str, float]) -> str:
            return " ".join(f"{k.split('__')[0]}={v:.3g}" for k, v in sorted(d.items()))
        return (f"#{self.seq} asof {self.asof_min_ms}..{self.asof_max_ms} "
                f"base={self.baseline} n[{f(self.count)}] psi[{f(self.psi)}] "
                f"null[{f(self.nulls)}]")


class IntervalWatch:
    """Scrapes a worker's /metrics every 0.1 s on a thread and keeps each interval it
    closes (by its sequence number; a scrape shows one interval whole)."""

    def __init__(self, port: int, topology: str) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.topology = topology
        self.intervals: dict[int, Interval] = {}
        self.consumed = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="interval-watch")

    def __enter__(self) -> IntervalWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:  # noqa: S310 - loopback
                    text = r.read().decode()
            except OSError:
                self._stop.wait(0.1)
                continue
            self._take(text)
            self._stop.wait(0.1)

    def _take(self, text: str) -> None:
        seq = None
        got: dict[str, dict[tuple[str, ...], float]] = {}
        consumed = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "streamfeat_events_consumed_total":
                    consumed += s.value
                if s.labels.get("topology") != self.topology:
                    continue
                key = tuple(v for k, v in sorted(s.labels.items()) if k != "topology")
                got.setdefault(s.name, {})[key] = s.value
        self.consumed = consumed
        seq_value = got.get("streamfeat_value_intervals_total", {}).get(())
        asof = got.get("streamfeat_value_interval_asof_seconds", {})
        if seq_value is None:
            return
        seq = int(seq_value)
        if seq in self.intervals:
            return
        interval = Interval(seq, round(asof.get(("min",), -0.001) * 1000),
                            round(asof.get(("max",), -0.001) * 1000),
                            () in got.get("streamfeat_value_baseline_timestamp_seconds", {}))
        for name, into in (("streamfeat_value_count", interval.count),
                           ("streamfeat_value_psi", interval.psi),
                           ("streamfeat_value_null_ratio", interval.nulls)):
            for (fld,), v in got.get(name, {}).items():
                into[fld] = v
        self.intervals[seq] = interval

    def wait(self, done: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout_s} s for {what}:\n{self.table()}")
            time.sleep(0.1)

    def table(self) -> str:
        return "\n".join(str(i) for _s, i in sorted(self.intervals.items()))


def snapshotted(snaps: Path, topic: str) -> int:
    """Records in the snapshots (offsets start at 0 in a fresh topic)."""
    return sum(files[-1].last_offset + 1 for p in partitions(snaps, topic)
               if (files := snapshot_files(snaps, topic, p)))


def test_psi_crosses_the_threshold_within_an_interval_of_a_shift_and_nulls_rise(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=2)
    path = tmp_path / f"{unique_id}.yaml"
    path.write_text(TOPOLOGY.format(name=unique_id, topic=topic))
    snaps = tmp_path / "snapshots"
    port = free_port()
    env = worker_env(kafka_bootstrap, redis_url)
    t0 = int(time.time() * 1000) - 3_600_000  # in the past: event time runs ahead of the clock
    stream = PacedStream(kafka_bootstrap, topic, t0)
    amount = ("amount_sum__10s", "amount_mean__10s")
    orders = "orders__10s"  # a control: neither the shift nor the tip changes it
    with Workers(tmp_path, env) as workers, IntervalWatch(port, unique_id) as watch:
        workers.start("w", worker_cmd(
            path, tmp_path / "state", "--snapshot-dir", str(snaps), "--snapshot-every", "1",
            "--monitor-interval", str(INTERVAL_S), "--metrics-port", str(port)))
        watch.wait(lambda: bool(watch.intervals), "the worker's first interval")

        # 1. the first part of the stream, and a baseline of it (the first window's worth
        #    of event time left out: windows still filling)
        _first, last = stream.run(3750)
        watch.wait(lambda: snapshotted(snaps, topic) >= stream.produced,
                   "the first part in the snapshots")
        done = subprocess.run(
            [sys.executable, "-m", "streamfeat.cli", "monitor", "baseline", str(path),
             "--snapshot-dir", str(snaps), "--start", str(t0 + WINDOW_MS),
             "--end", str(last + 1), "--redis", redis_url],
            env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr + done.stdout
        assert "baseline stored" in done.stdout
        watch.wait(lambda: any(i.baseline for i in watch.intervals.values()),
                   "an interval with the baseline loaded")

        # 2. the same distribution, then amount x3, then no tip (amount still x3)
        stream.run(3000)
        shift, _ = stream.run(3000, scale=3.0)
        no_tip, last = stream.run(3500, scale=3.0, tip=False)
        watch.wait(lambda: watch.consumed >= stream.produced and any(
            i.asof_max_ms >= last for i in watch.intervals.values()),
            "the interval holding the last event")
        shown = subprocess.run(
            [sys.executable, "-m", "streamfeat.cli", "monitor", "show", str(path),
             "--redis", redis_url, "--json"],
            env=env, capture_output=True, text=True, timeout=120, check=False)
        assert workers.stop("w") == 0, workers.log("w")

    intervals = [i for _s, i in sorted(watch.intervals.items())]
    table = watch.table()
    print(table)
    compared = [i for i in intervals if i.baseline and i.count.get(amount[1], 0) >= 200]

    # before the shift: every interval with the baseline stays below the alert threshold
    before = [i for i in compared if i.asof_max_ms < shift]
    assert len(before) >= 3, f"too few intervals before the shift:\n{table}"
    for i in before:
        for name in amount:
            assert i.psi[name] < PSI_ALERT, f"{name} drifted before the shift: {i}\n{table}"
    for i in compared:
        assert i.psi[orders] < PSI_ALERT, f"the order count drifted: {i}\n{table}"

    # the shift first shows in interval i0; the next one is over the threshold, and so is
    # every later one (the amounts stay tripled)
    i0 = next(i.seq for i in intervals if i.asof_max_ms >= shift)
    assert i0 + 1 in watch.intervals, f"interval {i0 + 1} was not scraped:\n{table}"
    after = [i for i in compared if i.seq > i0]
    assert after and after[0].seq == i0 + 1, f"interval {i0 + 1} holds too few values:\n{table}"
    for i in after:
        assert i.psi[amount[1]] > PSI_ALERT, f"no drift after the shift: {i}\n{table}"
        if i.asof_min_ms >= shift + WINDOW_MS:  # every window of the sum is shifted too
            assert i.psi[amount[0]] > PSI_ALERT, f"no drift of the sum: {i}\n{table}"

    # the tip goes missing: the null rate of its mean rises to 1 once no window holds one
    tip = "tip_mean__10s"
    with_tip = [i for i in compared if i.asof_max_ms < no_tip]
    without = [i for i in compared if i.asof_min_ms >= no_tip + WINDOW_MS]
    assert with_tip and without, f"intervals with and without tips expected:\n{table}"
    highest = max(i.nulls[tip] for i in with_tip)
    assert highest < 0.8, f"null rate high while tips flowed:\n{table}"
    for i in without:
        assert i.nulls[tip] == 1.0, f"tip_mean not null once no window holds a tip: {i}"
        assert i.nulls[amount[1]] < 0.8, f"amount_mean became null too: {i}"

    # the summary in Redis: one live worker, its last interval with drift against the baseline
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["baseline"] is not None
    assert [w["live"] for w in summary["workers"]] == [True]
    assert summary["latest"][amount[1]]["psi"] > PSI_ALERT
