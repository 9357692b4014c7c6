"""The worker core's order of effects, on the in-memory consumer: no broker, no Redis.

Records go in; values go to the sink, dead letters to the DLQ, state and offsets to RocksDB.
These tests check the checkpoint's rule (no offset is stored before the sink writes and the
dead letters of the records before it are acknowledged) at every commit, and that a crash
between any two effects, followed by a restart, ends in exactly the state of a run without
a crash: every Redis value, and each dead letter exactly once.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from memory import Crash, Journal, MemoryDeadLetters, MemoryRedis

from streamfeat.pipeline import PartitionPipeline
from streamfeat.records import RecordBatch
from streamfeat.runtime import Worker, WorkerConfig
from streamfeat.runtime.consumers import MemoryConsumer, MemoryLog
from streamfeat.state import PartitionStore
from streamfeat.topology import TopologyDef, load_topology_text

TOPOLOGY = """\
version: 1
name: shop
owner: tests@example.com
source: {topic: orders, format: json, key: user_id, timestamp: ts, timestamp_unit: ms}
entity: user
lateness: 10s
features:
  - {name: orders, agg: count, windows: [5m, lifetime]}
  - {name: amount, agg: sum, field: amount, windows: [1h]}
  - {name: biggest, agg: max, field: amount, windows: [{size: 10m, hop: exact}]}
"""
PARTITIONS = 2
T0 = 1_700_000_000_000


def make_log(seed: int, per_partition: int = 40) -> MemoryLog:
    """Orders of a few users, with malformed records and records late beyond 10 s."""
    rng = random.Random(seed)
    log = MemoryLog()
    for p in range(PARTITIONS):
        t = T0
        for _ in range(per_partition):
            t += rng.randint(0, 20_000)
            kind = rng.random()
            key: bytes | None
            if kind < 0.1:
                key, value = None, b"{not json"
            elif kind < 0.2:
                user = f"u{p}{rng.randint(0, 4)}"  # late: a minute behind
                key, value = user.encode(), json.dumps(
                    {"user_id": user, "ts": t - 60_000, "amount": 1.0}).encode()
            else:
                user = f"u{p}{rng.randint(0, 4)}"
                key, value = user.encode(), json.dumps(
                    {"user_id": user, "ts": t, "amount": round(rng.uniform(1, 100), 2)}).encode()
            log.append("orders", p, key, value, t)
    return log


class Stack:
    """One deployment: its Redis, its DLQ and its state directory, kept across restarts."""

    def __init__(self, tmp: Path, log: MemoryLog, journal: Journal, *, delay_s: float = 0.0):
        self.tmp, self.log, self.journal = tmp, log, journal
        self.redis = MemoryRedis(journal, delay_s=delay_s)
        self.dlq = MemoryDeadLetters(journal)
        self.topology = load_topology_text(TOPOLOGY, "shop.yaml")

    def run(self, *, batch_size: int = 7, commit_every_s: float = 0.0) -> None:
        config = WorkerConfig(topologies=[self.topology], kafka="memory", redis="memory",
                              state_dir=self.tmp / "state", stop_at_end=True,
                              batch_size=batch_size, commit_every_s=commit_every_s)
        worker = Worker(config, consumer=MemoryConsumer(self.log),
                        sinks={"shop": self.redis.sink("shop")}, dead_letters=self.dlq)
        assert worker.run() == 0

    def values(self) -> dict[str, dict[str, Any]]:
        """Every entity's feature values. Not ``_v`` nor ``_asof``: they name the last offset
        and the stream time of the batch that last wrote the entity, so they depend on how a
        restart cut the stream into batches (the values do not)."""
        return {k: {f: v for f, v in fields.items() if f != "_asof"}
                for k, (_v, fields) in self.redis.hashes.items()}


@pytest.fixture
def journal_commits(monkeypatch: pytest.MonkeyPatch) -> list[Journal]:
    """Every RocksDB commit goes through the journal of the running test (``[0]``)."""
    current: list[Journal] = []
    original = PartitionStore.commit

    def commit(self: PartitionStore, next_offset: int, *args: Any, **kwargs: Any) -> None:
        partition = int(self.path.name.rsplit("-", 1)[1])
        current[0].effect("commit", self.path.parent.name, partition, next_offset)
        original(self, next_offset, *args, **kwargs)

    monkeypatch.setattr(PartitionStore, "commit", commit)
    return current


def expected_dead(topology: TopologyDef, log: MemoryLog) -> dict[int, set[int]]:
    """Offsets of the records that must be dead letters, per partition (pipeline alone)."""
    out: dict[int, set[int]] = {}
    for p in range(PARTITIONS):
        records = log.records[("orders", p)]
        outcome = PartitionPipeline(topology, p).process(RecordBatch.of(records, p))
        out[p] = {d.record.offset for d in outcome.dead}
    return out


def checkpoint_rule(dead: dict[int, set[int]], accepted: dict[int, list[int]],
                    redis: MemoryRedis, dlq: MemoryDeadLetters):  # type: ignore[no-untyped-def]
    """At each commit of offset n: every dead letter below n is in the DLQ, and the write
    covering the last accepted record below n is acknowledged by the sink."""

    def check(entry: tuple[Any, ...]) -> None:
        if entry[0] != "commit":
            return
        _kind, _topology, p, n = entry
        sent = {offset for _t, _topic, q, offset, _k in dlq.letters if q == p}
        missing = {o for o in dead[p] if o < n} - sent
        assert not missing, f"offset {n} of partition {p} stored before dead letters {missing}"
        below = [o for o in accepted[p] if o < n]
        if below:
            acked = redis.acked.get(p, -1)
            assert acked >= below[-1], (
                f"offset {n} of partition {p} stored before the write of record {below[-1]} "
                f"was acknowledged (acknowledged up to {acked})")

    return check


def accepted_offsets(log: MemoryLog, dead: dict[int, set[int]]) -> dict[int, list[int]]:
    return {p: [r.offset for r in log.records[("orders", p)] if r.offset not in dead[p]]
            for p in range(PARTITIONS)}


def test_no_offset_is_stored_before_its_writes_and_dead_letters(
        tmp_path: Path, journal_commits: list[Journal]) -> None:
    log = make_log(seed=1)
    journal = Journal()
    journal_commits.append(journal)
    # A slow sink: the writes of the last batches are still queued when a commit is due.
    stack = Stack(tmp_path, log, journal, delay_s=0.01)
    dead = expected_dead(stack.topology, log)
    assert all(dead.values()), "the stream must hold malformed and late records"
    journal.checks.append(checkpoint_rule(dead, accepted_offsets(log, dead), stack.redis,
                                          stack.dlq))
    stack.run()
    commits = [e for e in journal.effects if e[0] == "commit"]
    assert len(commits) >= 8  # committed after (nearly) every batch: the rule was exercised
    assert sorted((p, o) for _t, _topic, p, o, _k in stack.dlq.letters) == sorted(
        (p, o) for p in dead for o in dead[p])


def _reference(tmp_path: Path, log: MemoryLog, journal_commits: list[Journal]) -> Stack:
    journal = Journal()
    journal_commits[:] = [journal]
    stack = Stack(tmp_path / "reference", log, journal)
    stack.run()
    return stack


def test_a_crash_between_any_two_effects_then_a_restart_ends_as_without_crash(
        tmp_path: Path, journal_commits: list[Journal]) -> None:
    log = make_log(seed=2, per_partition=30)
    reference = _reference(tmp_path, log, journal_commits)
    dead = expected_dead(reference.topology, log)
    accepted = accepted_offsets(log, dead)
    effects = len(reference.journal.effects)
    kinds = {e[0] for e in reference.journal.effects}
    assert kinds == {"redis", "dlq", "commit"}, kinds
    for crash_at in range(1, effects + 1):
        journal = Journal(crash_at=crash_at)
        journal_commits[:] = [journal]
        stack = Stack(tmp_path / f"crash-{crash_at}", log, journal)
        journal.checks.append(checkpoint_rule(dead, accepted, stack.redis, stack.dlq))
        with pytest.raises(Crash):
            stack.run()
        journal.crash_at = None  # the restart runs to the end
        stack.run()
        assert stack.values() == reference.values(), f"crash before effect {crash_at}"
        letters = [(t, topic, p, o) for t, topic, p, o, _k in stack.dlq.letters]
        assert len(letters) == len(set(letters)), f"a dead letter sent twice ({crash_at})"
        assert sorted(letters) == sorted(
            (t, topic, p, o) for t, topic, p, o, _k in reference.dlq.letters)


def test_values_equal_the_pipeline_run_over_all_records(
        tmp_path: Path, journal_commits: list[Journal]) -> None:
    """The worker's last write per entity is what one pipeline pass over the log gives."""
    log = make_log(seed=3)
    stack = _reference(tmp_path, log, journal_commits)
    expected: dict[str, dict[str, Any]] = {}
    for p in range(PARTITIONS):
        pipeline = PartitionPipeline(stack.topology, p)
        outcome = pipeline.process(RecordBatch.of(log.records[("orders", p)], p))
        assert pipeline.stream_time is not None
        for batch in outcome.updates:
            for update in batch.updates():
                expected[f"shop:{update.entity_id}"] = {  # None deletes, as in Redis
                    f: v for f, v in update.values.items() if v is not None}
    got = stack.values()
    # the stream's last write of an entity may be older than the end of the stream (an
    # entity not touched since): compare those the one-pass run wrote at its end
    assert expected
    for key, fields in expected.items():
        assert got[key] == fields, key
