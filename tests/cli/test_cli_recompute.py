"""The worker's recomputation after a definition change says how far it is: records of
history read of those planned, in a log line now and then (no bar: a worker's log is read
by machines too)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from memory import Journal, MemoryDeadLetters, MemoryRedis

from streamfeat.runtime import Worker, WorkerConfig
from streamfeat.runtime.consumers import MemoryConsumer, MemoryHistory, MemoryLog
from streamfeat.topology import load_topology_text

V1 = """\
name: shop
source: {topic: orders, key: user_id, timestamp: ts}
features:
  - {name: orders, agg: count, windows: [5m]}
"""
V2 = V1 + "  - {name: spent, agg: sum, field: amount, windows: [1h]}\n"
LINE = re.compile(r"shop orders\[0\]: recomputing from history: (?P<read>[\d,]+) of "
                  r"(?P<planned>[\d,]+) records read \((?P<pct>\d+)%\), [\d,]+ records/s")


def _log(n: int) -> MemoryLog:
    log = MemoryLog()
    for i in range(n):
        value = {"user_id": f"u{i % 7}", "ts": 1_700_000_000_000 + i * 1000, "amount": i}
        log.append("orders", 0, f"u{i % 7}".encode(), json.dumps(value).encode(),
                   1_700_000_000_000 + i * 1000)
    return log


def _run(tmp_path: Path, text: str, log: MemoryLog, redis: MemoryRedis,
         dlq: MemoryDeadLetters) -> None:
    config = WorkerConfig(topologies=[load_topology_text(text, "shop.yaml")], kafka="memory",
                          redis="memory", state_dir=tmp_path / "state", stop_at_end=True,
                          batch_size=50, commit_every_s=0.0)
    worker = Worker(config, consumer=MemoryConsumer(log), sinks={"shop": redis.sink("shop")},
                    dead_letters=dlq, history=MemoryHistory(log))
    assert worker.run() == 0


def test_a_recomputation_logs_records_read_of_planned(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal()
    redis, dlq = MemoryRedis(journal), MemoryDeadLetters(journal)
    log = _log(400)
    _run(tmp_path, V1, log, redis, dlq)  # v1 has seen 400 records; v2 recomputes them
    monkeypatch.setattr("streamfeat.runtime.recompute.READ_RECORDS", 25)
    monkeypatch.setattr("streamfeat.runtime.recompute.PROGRESS_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="streamfeat.worker")
    _run(tmp_path, V2, log, redis, dlq)
    lines = [m for r in caplog.records if (m := LINE.search(r.getMessage()))]
    read = [int(m["read"].replace(",", "")) for m in lines]
    planned = {int(m["planned"].replace(",", "")) for m in lines}
    assert len(lines) >= 400 // 25 - 1, [r.getMessage() for r in caplog.records]
    assert planned == {400}  # the history up to the state's position, offsets 0..399
    assert read == sorted(read) and read[0] == 25 and read[-1] == 400
    assert lines[-1]["pct"] == "100"
    assert any("records of history in" in r.getMessage() for r in caplog.records)
