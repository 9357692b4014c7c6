"""Definitions that change (contract section 10), in the worker core, with no broker.

A deployment runs topology v1 over the first part of a log, then v2 (features and windows
added, one redefined, one removed, one renamed) over the whole log: Redis must end exactly
as if v2 had run from the first record (every entity's every field, removed fields gone),
each dead letter sent once; a crash at any effect of the v2 run changes nothing of that;
history cut short by retention is reported as partial.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from memory import Crash, Journal, MemoryDeadLetters, MemoryRedis

from streamfeat.pipeline import FieldStatus, PartitionPipeline, compare
from streamfeat.records import RecordBatch
from streamfeat.runtime import Worker, WorkerConfig
from streamfeat.runtime.consumers import MemoryConsumer, MemoryHistory, MemoryLog
from streamfeat.sinks import UpdateBatch, WriteResult, parse_version
from streamfeat.topology import TopologyDef, load_topology_text

V1 = """\
version: 1
name: shop
source: {topic: orders, format: json, key: user_id, timestamp: ts, timestamp_unit: ms}
lateness: 10s
features:
  - {name: orders, agg: count, windows: [5m]}
  - {name: amount, agg: sum, field: amount, windows: [1h]}
  - {name: biggest, agg: max, field: amount, windows: [{size: 10m, hop: exact}]}
  - {name: gone, agg: min, field: amount, windows: [1h]}
  - {name: spent, agg: mean, field: amount, windows: [1h]}
"""
V2 = """\
version: 1
name: shop
source: {topic: orders, format: json, key: user_id, timestamp: ts, timestamp_unit: ms}
lateness: 10s
features:
  - {name: orders, agg: count, windows: [5m, 1h, lifetime]}
  - {name: amount, agg: sum, field: amount, windows: [1h]}
  - {name: biggest, agg: max, field: amount, where: "amount > 50",
     windows: [{size: 10m, hop: exact}]}
  - {name: spend, agg: mean, field: amount, windows: [1h]}
  - {name: items, agg: last_k, k: 3, field: item, windows: [30m]}
  - {name: sessions, agg: count, windows: [{type: session, gap: 2m}]}
"""
PARTITIONS = 2
T0 = 1_700_000_000_000


def shop(text: str) -> TopologyDef:
    return load_topology_text(text, "shop.yaml")


def make_log(seed: int, per_partition: int) -> MemoryLog:
    """Orders of a few users, with malformed records and records late beyond 10 s."""
    rng = random.Random(seed)
    log = MemoryLog()
    for p in range(PARTITIONS):
        t = T0
        for _ in range(per_partition):
            t += rng.randint(0, 40_000)
            kind = rng.random()
            key: bytes | None
            user = f"u{p}{rng.randint(0, 6)}"
            if kind < 0.05:
                key, value = None, b"{not json"
            elif kind < 0.12:
                key, value = user.encode(), json.dumps(
                    {"user_id": user, "ts": t - 60_000, "amount": 1.0}).encode()
            else:
                key, value = user.encode(), json.dumps(
                    {"user_id": user, "ts": t, "amount": round(rng.uniform(1, 100), 2),
                     "item": rng.choice("abcdef")}).encode()
            log.append("orders", p, key, value, t)
    return log


def head(log: MemoryLog, n: int) -> MemoryLog:
    """The first ``n`` records of each partition (the log as v1 saw it)."""
    out = MemoryLog()
    for (topic, p), records in log.records.items():
        for r in records[:n]:
            out.append(topic, p, r.key, r.value, r.kafka_ts)
    return out


class Deployment:
    """One Redis, one DLQ and one state directory, kept across worker runs."""

    def __init__(self, tmp: Path, journal: Journal | None = None) -> None:
        self.tmp = tmp
        self.journal = journal or Journal()
        self.redis = MemoryRedis(self.journal)
        self.dlq = MemoryDeadLetters(self.journal)
        self.writes: list[tuple[bool, int, int]] = []  # refresh?, partition, offset

    def sink(self) -> Any:
        inner, writes = self.redis.sink("shop"), self.writes

        class Recording:
            def write(self, updates: Sequence[UpdateBatch]) -> WriteResult:
                for u in updates:
                    _g, p, o = parse_version(u.version)
                    writes.append((u.refresh, p, o))
                return inner.write(updates)

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

        return Recording()

    def run(self, topology: TopologyDef, log: MemoryLog, *, history: MemoryHistory | None = None,
            batch_size: int = 9, recompute_max_rate: float | None = None) -> Worker:
        config = WorkerConfig(topologies=[topology], kafka="memory", redis="memory",
                              state_dir=self.tmp / "state", stop_at_end=True,
                              batch_size=batch_size, commit_every_s=0.0,
                              recompute_max_rate=recompute_max_rate)
        worker = Worker(config, consumer=MemoryConsumer(log),
                        sinks={"shop": self.sink()}, dead_letters=self.dlq,
                        history=history or MemoryHistory(log))
        assert worker.run() == 0
        return worker

    def values(self) -> dict[str, dict[str, Any]]:
        return {k.removeprefix("shop:"): {f: v for f, v in fields.items() if f != "_asof"}
                for k, (_v, fields) in self.redis.hashes.items()}

    def letters(self) -> list[tuple[int, int]]:
        return [(p, o) for _t, _topic, p, o, _k in self.dlq.letters]


def reference(topology: TopologyDef, log: MemoryLog) -> tuple[dict[str, dict[str, Any]],
                                                              set[tuple[int, int]]]:
    """Every entity's values as of its partition's final stream time, computed by one
    pipeline pass of ``topology`` over all records; and the dead letters."""
    values: dict[str, dict[str, Any]] = {}
    dead: set[tuple[int, int]] = set()
    for p in range(PARTITIONS):
        pipeline = PartitionPipeline(topology, p)
        outcome = pipeline.process(RecordBatch.of(log.records[("orders", p)], p))
        dead |= {(p, d.record.offset) for d in outcome.dead}
        seen = {u.entity_id for b in outcome.updates for u in b.updates()}
        for entity, fields in pipeline.operator.values(sorted(seen)).items():
            values[entity] = {f: v for f, v in fields.items() if v is not None}
    return values, dead


def test_compare_names_every_kind_of_change() -> None:
    v1, v2 = shop(V1), shop(V2)
    pipeline = PartitionPipeline(v1, 0)
    pipeline.process(RecordBatch.of(make_log(1, 20).records[("orders", 0)], 0))
    meta = pipeline.operator.meta()
    catalog = pipeline.operator.stored_catalog(meta)
    change = compare(v2, catalog)
    status = {f.name: (f.status, f.recompute, f.was) for f in change.fields}
    assert status["orders__5m"] == (FieldStatus.UNCHANGED, False, None)
    assert status["orders__1h"][0] is FieldStatus.ADDED
    assert status["orders__lifetime"][0] is FieldStatus.ADDED
    assert status["biggest__10m"] == (FieldStatus.REDEFINED, True, None)
    # renamed; recomputed all the same: its slot (shared with amount__1h) no longer keeps
    # min and max once gone__1h is removed, so it has another key
    assert status["spend__1h"] == (FieldStatus.RENAMED, True, "spent__1h")
    assert status["amount__1h"] == (FieldStatus.UNCHANGED, True, None)
    assert status["items__30m"] == (FieldStatus.ADDED, True, None)
    assert status["gone__1h"][0] is FieldStatus.REMOVED
    assert set(change.deleted_fields) == {"gone__1h", "spent__1h"}
    assert change.pending and change.needs_refresh
    assert compare(v1, catalog).unchanged
    assert compare(v2, None).first_run and not compare(v2, None).needs_refresh


@pytest.mark.parametrize("slow", [False, True], ids=["fast", "interleaved"])
@pytest.mark.parametrize("batch_size", [1, 9, 1000])
def test_a_changed_topology_ends_as_if_it_had_always_run(
        tmp_path: Path, batch_size: int, slow: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``interleaved``: the history is read 3 records per slice, so that the live pipeline
    goes on between (the recomputation chases it)."""
    if slow:
        monkeypatch.setattr("streamfeat.runtime.recompute.READ_RECORDS", 3)
        monkeypatch.setattr("streamfeat.runtime.worker.CHANGE_SLICE_BUSY_S", 0.0)
        monkeypatch.setattr("streamfeat.runtime.worker.CHANGE_SLICE_IDLE_S", 0.0)
    log = make_log(seed=7, per_partition=120)
    deployment = Deployment(tmp_path)
    deployment.run(shop(V1), head(log, 70))
    before = deployment.values()
    assert all("gone__1h" in v for v in before.values() if "amount__1h" in v)
    deployment.writes.clear()
    worker = deployment.run(shop(V2), log, batch_size=batch_size)
    refreshes = [(p, o) for refresh, p, o in deployment.writes if refresh]
    assert sorted(p for p, _o in refreshes) == list(range(PARTITIONS))
    if slow and batch_size < 100:  # live writes of the new records came before the refresh
        for p, o in refreshes:
            first = deployment.writes.index((True, p, o))
            assert any(not r and q == p and 70 <= x < o for r, q, x in
                       deployment.writes[:first]), p
    expected, dead = reference(shop(V2), log)
    assert deployment.values() == expected
    letters = deployment.letters()
    assert len(letters) == len(set(letters)) and set(letters) == dead
    recomputed = sum(worker.metrics.registry.get_sample_value(
        "streamfeat_recompute_records_total", {"topology": "shop", "partition": str(p)}) or 0
        for p in range(PARTITIONS))
    assert recomputed >= 2 * 70  # the history v1 had seen, read again for the new slots


def test_a_recomputation_held_to_a_rate_reads_no_faster_and_ends_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--recompute-max-rate``: 70 records of history per partition at 100 records/s take
    at least 0.6 s (read 3 at a time), and the values end as without the limit."""
    import time

    monkeypatch.setattr("streamfeat.runtime.recompute.READ_RECORDS", 3)
    log = make_log(seed=9, per_partition=90)
    deployment = Deployment(tmp_path)
    deployment.run(shop(V1), head(log, 70))
    started = time.monotonic()
    worker = deployment.run(shop(V2), log, recompute_max_rate=100.0)
    assert time.monotonic() - started >= 0.6
    assert not worker.recomputers
    expected, _dead = reference(shop(V2), log)
    assert deployment.values() == expected


def test_unchanged_topology_recomputes_nothing(tmp_path: Path) -> None:
    log = make_log(seed=8, per_partition=60)
    deployment = Deployment(tmp_path)
    deployment.run(shop(V1), head(log, 30))
    worker = deployment.run(shop(V1), log)
    assert not worker.recomputers
    for p in range(PARTITIONS):
        assert not worker.metrics.registry.get_sample_value(
            "streamfeat_recompute_records_total", {"topology": "shop", "partition": str(p)})
    expected, _dead = reference(shop(V1), log)
    assert deployment.values() == expected


def test_a_crash_at_any_effect_of_the_change_then_a_restart_ends_the_same(
        tmp_path: Path) -> None:
    log = make_log(seed=9, per_partition=40)
    first = head(log, 25)
    expected, dead = reference(shop(V2), log)
    journal = Journal()
    clean = Deployment(tmp_path / "clean", journal)
    clean.run(shop(V1), first)
    start = journal.count
    clean.run(shop(V2), log)
    effects = journal.count - start
    assert clean.values() == expected
    for crash_at in range(1, effects + 1, max(1, effects // 25)):
        journal = Journal()
        deployment = Deployment(tmp_path / f"crash-{crash_at}", journal)
        deployment.run(shop(V1), first)
        journal.crash_at = journal.count + crash_at
        with pytest.raises(Crash):
            deployment.run(shop(V2), log)
        journal.crash_at = None
        deployment.run(shop(V2), log)
        assert deployment.values() == expected, f"crash before effect {crash_at}"
        letters = deployment.letters()
        assert len(letters) == len(set(letters)), f"a dead letter sent twice ({crash_at})"
        assert set(letters) == dead


def test_history_cut_short_marks_long_windows_partial(tmp_path: Path) -> None:
    log = make_log(seed=10, per_partition=80)
    deployment = Deployment(tmp_path)
    deployment.run(shop(V1), head(log, 60))
    retained = {("orders", p): 40 for p in range(PARTITIONS)}  # retention dropped 0..39
    worker = deployment.run(shop(V2), log, history=MemoryHistory(log, retained))

    def partial(field: str, p: int) -> float | None:
        return worker.metrics.registry.get_sample_value(
            "streamfeat_feature_partial_since_ms",
            {"topology": "shop", "partition": str(p), "field": field})

    for p in range(PARTITIONS):
        first_kept = json.loads(log.records[("orders", p)][40].value or b"{}").get("ts")
        since = partial("orders__lifetime", p)
        assert since is not None and since >= T0
        assert first_kept is None or since <= first_kept + 60_000
        assert partial("orders__5m", p) is None  # not recomputed: its state continued
        assert deployment.redis.partial["shop"][f"orders__lifetime@{p}"] == since
        assert f"orders__5m@{p}" not in deployment.redis.partial["shop"]
    # what was recomputed from the retained records only, as v2 would from offset 40
    values = deployment.values()
    assert all("orders__lifetime" in v for v in values.values())
