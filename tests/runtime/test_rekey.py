"""Re-keying through ``<topology>.repartition``, on the in-memory consumer (no broker).

Per-merchant features from a topic keyed by user: the first stage writes each record to the
repartition topic keyed by merchant, the second aggregates it. Checked here: the values
equal one pass over all records per merchant; dead letters name the source record; a crash
before any effect of either stage, then a restart, gives the same values, each dead letter
once and no record counted twice; a topology keyed by user runs beside it on the same topic.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memory import Crash, Journal, MemoryDeadLetters, MemoryRedis

from streamfeat.pipeline.rekey import repartition_topic
from streamfeat.runtime import Worker, WorkerConfig
from streamfeat.runtime.consumers import MemoryConsumer, MemoryLog
from streamfeat.runtime.repartition import MemoryRepartition, Outgoing
from streamfeat.state import PartitionStore
from streamfeat.topology import TopologyDef, load_topology_text

MERCHANTS = """\
version: 1
name: merchants
owner: tests@example.com
source: {topic: orders, format: json, key: merchant_id, timestamp: ts, keyed_by_entity: false}
entity: merchant
lateness: 1d
features:
  - {name: orders, agg: count, windows: [lifetime, 1d]}
  - {name: amount, agg: sum, field: amount, windows: [lifetime]}
  - {name: biggest, agg: max, field: amount, windows: [1d]}
  - {name: buyers, agg: count_distinct, field: user_id, windows: [lifetime]}
"""
USERS = """\
version: 1
name: users
owner: tests@example.com
source: {topic: orders, format: json, key: user_id, timestamp: ts}
entity: user
lateness: 1d
features:
  - {name: orders, agg: count, windows: [lifetime]}
"""
PARTITIONS = 4
T0 = 1_700_000_000_000


def make_log(seed: int, n: int = 240) -> tuple[MemoryLog, list[dict[str, Any]]]:
    """Orders keyed (and partitioned) by user; whole-number amounts, so sums are exact in
    any order. Every tenth record is malformed."""
    rng = random.Random(seed)
    log = MemoryLog()
    log.create("orders", PARTITIONS)
    events = []
    t = T0
    for i in range(n):
        t += rng.randint(0, 60_000)
        user = f"u{rng.randint(0, 30)}"
        p = hash(user) % PARTITIONS
        if i % 10 == 9:
            log.append("orders", p, user.encode(), b'{"merchant_id": ', t)
            continue
        event = {"user_id": user, "merchant_id": f"m{rng.randint(0, 6)}", "ts": t,
                 "amount": rng.randint(1, 500)}
        events.append(event)
        log.append("orders", p, user.encode(), json.dumps(event).encode(), t)
    return log, events


def reference(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-merchant values at the end, computed here from all events."""
    end = max(e["ts"] for e in events)
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by[e["merchant_id"]].append(e)
    out = {}
    for m, es in by.items():
        day = [e for e in es if e["ts"] > end - 86_400_000]
        out[f"merchants:{m}"] = {
            "orders__lifetime": len(es), "orders__1d": len(day),
            "amount__lifetime": sum(e["amount"] for e in es),
            "biggest__1d": max((e["amount"] for e in day), default=None),
            "buyers__lifetime": len({e["user_id"] for e in es}),
        }
    return out


class JournaledRepartition(MemoryRepartition):
    def __init__(self, log: MemoryLog, journal: Journal) -> None:
        super().__init__(log)
        self.journal = journal

    def send_many(self, records: Iterable[Outgoing]) -> None:
        for record in records:
            self.journal.effect("rekey", record[5], record[3], record[4])
            super().send_many([record])


class Deployment:
    def __init__(self, tmp: Path, log: MemoryLog, journal: Journal,
                 topologies: list[TopologyDef]) -> None:
        self.tmp, self.log, self.journal, self.topologies = tmp, log, journal, topologies
        self.redis = MemoryRedis(journal)
        self.dlq = MemoryDeadLetters(journal)
        self.repartition = JournaledRepartition(log, journal)

    def run(self, batch_size: int = 13) -> None:
        config = WorkerConfig(topologies=self.topologies, kafka="memory", redis="memory",
                              state_dir=self.tmp / "state", stop_at_end=True,
                              batch_size=batch_size, commit_every_s=0.0)
        worker = Worker(config, consumer=MemoryConsumer(self.log),
                        sinks={t.name: self.redis.sink(t.name) for t in self.topologies},
                        dead_letters=self.dlq, repartition=self.repartition)
        assert worker.run() == 0

    def values(self, prefix: str) -> dict[str, dict[str, Any]]:
        return {k: {f: v for f, v in fields.items() if f != "_asof"}
                for k, (_v, fields) in self.redis.hashes.items() if k.startswith(prefix)}


@pytest.fixture
def journal_commits(monkeypatch: pytest.MonkeyPatch) -> list[Journal]:
    current: list[Journal] = []
    original = PartitionStore.commit

    def commit(self: PartitionStore, next_offset: int, *args: Any, **kwargs: Any) -> None:
        current[0].effect("commit", self.path.parent.name, self.path.name, next_offset)
        original(self, next_offset, *args, **kwargs)

    monkeypatch.setattr(PartitionStore, "commit", commit)
    return current


def test_per_merchant_values_from_a_user_keyed_topic(
        tmp_path: Path, journal_commits: list[Journal]) -> None:
    log, events = make_log(seed=1)
    journal = Journal()
    journal_commits.append(journal)
    merchants = load_topology_text(MERCHANTS, "merchants.yaml")
    deployment = Deployment(tmp_path, log, journal, [merchants])
    deployment.run()
    assert deployment.values("merchants:") == reference(events)
    # the repartition topic: every well-formed record once, keyed by merchant, one
    # merchant per partition
    rekeyed = [r for (t, _p), rs in log.records.items() if t == repartition_topic(merchants)
               for r in rs]
    assert len(rekeyed) == len(events)
    where: dict[bytes | None, set[int]] = defaultdict(set)
    for r in rekeyed:
        where[r.key].add(r.partition)
    assert all(len(ps) == 1 for ps in where.values())
    # malformed records are dead letters of the first stage, named by their source record
    malformed = sorted((p, r.offset) for (t, p), rs in log.records.items() if t == "orders"
                       for r in rs if r.value == b'{"merchant_id": ')
    assert sorted((p, o) for _t, topic, p, o, _k in deployment.dlq.letters) == malformed
    assert {topic for _t, topic, _p, _o, _k in deployment.dlq.letters} == {"orders"}


def test_late_letters_of_the_second_stage_name_the_source_record(
        tmp_path: Path, journal_commits: list[Journal]) -> None:
    log = MemoryLog()
    log.create("orders", 2)
    rows = [(0, "u1", "m1", T0 + 100_000), (1, "u2", "m1", T0 + 200_000),
            (0, "u1", "m1", T0 - 90_000_000)]  # late by more than the day of lateness
    for p, user, merchant, ts in rows:
        log.append("orders", p, user.encode(), json.dumps(
            {"user_id": user, "merchant_id": merchant, "ts": ts, "amount": 1}).encode(), ts)
    journal = Journal()
    journal_commits.append(journal)
    deployment = Deployment(tmp_path, log, journal,
                            [load_topology_text(MERCHANTS, "merchants.yaml")])
    deployment.run()
    [(topology, topic, _q, offset, kind)] = deployment.dlq.letters
    assert (topology, topic, offset, kind) == ("merchants", "merchants.repartition", 1, "late")
    assert deployment.dlq.origins == [(0, 1)]  # the source record: orders[0] offset 1
    assert deployment.values("merchants:")["merchants:m1"]["orders__lifetime"] == 2


def test_a_crash_before_any_effect_of_either_stage_changes_nothing(
        tmp_path: Path, journal_commits: list[Journal]) -> None:
    log, events = make_log(seed=2, n=120)
    topologies = [load_topology_text(MERCHANTS, "merchants.yaml"),
                  load_topology_text(USERS, "users.yaml")]
    journal = Journal()
    journal_commits[:] = [journal]
    base = Deployment(tmp_path / "reference", log, journal, topologies)
    base.run()
    expected = reference(events)
    assert base.values("merchants:") == expected
    users = base.values("users:")
    assert sum(v["orders__lifetime"] for v in users.values()) == len(events)
    kinds = {e[0] for e in journal.effects}
    assert kinds == {"redis", "dlq", "commit", "rekey"}, kinds
    letters = sorted(base.dlq.letters)
    effects = journal.effects
    # crash before each kind of effect at several points of the run
    crash_points = sorted({i + 1 for kind in kinds
                           for i in [j for j, e in enumerate(effects) if e[0] == kind][::25]})
    duplicated = 0
    for crash_at in crash_points:
        fresh, _events = make_log(seed=2, n=120)  # the source as it was; no repartition yet
        journal = Journal(crash_at=crash_at)
        journal_commits[:] = [journal]
        d = Deployment(tmp_path / f"crash-{crash_at}", fresh, journal, topologies)
        with pytest.raises(Crash):
            d.run()
        journal.crash_at = None
        d.run()
        assert d.values("merchants:") == expected, f"crash before effect {crash_at}"
        assert d.values("users:") == users, f"crash before effect {crash_at}"
        assert sorted(d.dlq.letters) == letters, f"crash before effect {crash_at}"
        rekeyed = sum(len(rs) for (t, _p), rs in fresh.records.items() if t != "orders")
        duplicated += rekeyed > len(events)
    assert duplicated, "no crash made the first stage write a record twice"


def test_a_source_partition_read_ahead_is_held_until_the_others_reach_its_time(
        tmp_path: Path) -> None:
    """Partition 0 is read an hour ahead of partition 1: its records wait, so the
    repartition topic is in time order and the second stage sees no event as late."""
    from streamfeat.records import RecordBatch
    from streamfeat.runtime.repartition import Repartitioner, release_in_time_order

    topology = load_topology_text(MERCHANTS, "merchants.yaml")
    log = MemoryLog()
    out = MemoryRepartition(log)
    out.prepare({"merchants.repartition": 1})

    def batch(p: int, first: int, times: list[int]) -> RecordBatch:
        values = [json.dumps({"user_id": "u", "merchant_id": "m1", "ts": t, "amount": 1}
                             ).encode() for t in times]
        return RecordBatch(p, list(range(first, first + len(times))), times,
                           [None] * len(times), values)

    def sent() -> list[int]:
        return [r.kafka_ts for r in log.records[("merchants.repartition", 0)]]

    ahead, behind = Repartitioner(topology, 0, out), Repartitioner(topology, 1, out)
    hour = 3_600_000
    ahead.process(batch(0, 0, [T0 + hour, T0 + hour + 1]), now=100.0)
    behind.process(batch(1, 0, [T0, T0 + 1]), now=100.0)
    release_in_time_order(out, [ahead, behind], now=100.1)
    assert sent() == [T0, T0 + 1]  # partition 0 waits for partition 1 to reach its hour
    assert ahead.next_offset == 0 and behind.next_offset == 2  # held: resume from there
    behind.process(batch(1, 2, [T0 + hour + 5]), now=100.2)
    release_in_time_order(out, [ahead, behind], now=100.3)
    assert sent() == [T0, T0 + 1, T0 + hour, T0 + hour + 1]  # + 5 waits for partition 0
    assert ahead.next_offset == 2 and behind.next_offset == 2
    ahead.process(batch(0, 2, [T0 + 2 * hour]), now=100.4)
    release_in_time_order(out, [ahead, behind], now=100.5)
    assert sent()[4:] == [T0 + hour + 5]
    # a partition that stops delivering does not hold the others back for long
    release_in_time_order(out, [ahead, behind], now=100.6)
    assert len(sent()) == 5
    release_in_time_order(out, [ahead, behind], now=100.75)  # partition 1 idle for 0.55 s
    assert sent()[5:] == [T0 + 2 * hour] and ahead.next_offset == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 50), max_size=12), min_size=1, max_size=4))
def test_the_merge_keeps_each_partitions_order_and_loses_nothing(
        stamps: list[list[int]]) -> None:
    """Records of several source partitions, out of order within each: every record is
    sent once, each partition's in offset order, merged by each one's running maximum."""
    from streamfeat.records import RecordBatch
    from streamfeat.runtime.repartition import Repartitioner, release_in_time_order

    topology = load_topology_text(MERCHANTS, "merchants.yaml")
    log = MemoryLog()
    out = MemoryRepartition(log)
    out.prepare({"merchants.repartition": 1})
    stages = []
    for p, times in enumerate(stamps):
        stage = Repartitioner(topology, p, out)
        values = [json.dumps({"user_id": "u", "merchant_id": "m", "ts": T0 + t, "amount": 1}
                             ).encode() for t in times]
        for lo in range(0, len(times), 5):  # a few batches per partition
            hi = min(lo + 5, len(times))
            stage.process(RecordBatch(p, list(range(lo, hi)), [T0 + t for t in times[lo:hi]],
                                      [None] * (hi - lo), values[lo:hi]), now=0.0)
        stages.append(stage)
    release_in_time_order(out, stages, now=10.0)  # every partition idle: all go
    sent = log.records.get(("merchants.repartition", 0), [])
    origins = log.origins.get(("merchants.repartition", 0), [])
    assert sorted(origins) == [(p, o) for p, times in enumerate(stamps)
                               for o in range(len(times))]
    running: dict[int, int] = {}
    keys = []
    for (p, o), record in zip(origins, sent, strict=True):
        assert o == sum(1 for q, _o in origins[:len(keys)] if q == p)  # offset order
        running[p] = max(running.get(p, 0), record.kafka_ts)
        keys.append(running[p])
    assert keys == sorted(keys)
    assert all(s.held_count == 0 for s in stages)
