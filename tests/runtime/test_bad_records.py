"""No record stops the worker: the worker core over hostile streams, with no broker.

The real worker core (:class:`~streamfeat.runtime.Worker`) runs over the in-memory consumer
(as in ``test_worker_effects.py``) on streams of arbitrary bytes, arbitrary JSON, boundary
numbers as keys, event times and amounts, and Kafka timestamps from 0 to 2**63-1
(``tests/records/hostile.py``). Whatever the records, it runs to the end and exits 0,
and every record ends either as an aggregated event or as one dead letter: the letters
are exactly those the pipeline alone finds, none twice, the counts add up, and the last
value written for every entity is the pipeline's. A restart in the middle (state and
offsets restored from RocksDB) changes nothing of that: a record that crashed the worker
would crash it on every restart, so this is what the fault run checked.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memory import Journal, MemoryDeadLetters, MemoryRedis
from records.hostile import TOPOLOGIES, Raw, streams  # tests/records/hostile.py

from streamfeat.pipeline import PartitionPipeline
from streamfeat.records import RecordBatch
from streamfeat.runtime import Worker, WorkerConfig
from streamfeat.runtime.consumers import MemoryConsumer, MemoryLog
from streamfeat.topology import TopologyDef

PARTITIONS = 2


def make_log(parts: list[list[Raw]]) -> MemoryLog:
    log = MemoryLog()
    log.create("t", PARTITIONS)
    for p, stream in enumerate(parts):
        for r in stream:
            log.append("t", p, r.key, r.value, r.kafka_ts)
    return log


class Deployment:
    """One Redis, one DLQ and one state directory, kept across worker runs (restarts)."""

    def __init__(self, tmp: Path, topology: TopologyDef) -> None:
        self.tmp, self.topology = tmp, topology
        journal = Journal()
        self.redis = MemoryRedis(journal)
        self.dlq = MemoryDeadLetters(journal)
        self.counted = {"consumed": 0.0, "aggregated": 0.0, "late": 0.0, "malformed": 0.0}

    def run(self, log: MemoryLog, batch_size: int) -> None:
        config = WorkerConfig(topologies=[self.topology], kafka="memory", redis="memory",
                              state_dir=self.tmp / "state", stop_at_end=True,
                              batch_size=batch_size, commit_every_s=0.0)
        worker = Worker(config, consumer=MemoryConsumer(log),
                        sinks={self.topology.name: self.redis.sink(self.topology.name)},
                        dead_letters=self.dlq)
        assert worker.run() == 0
        for name in self.counted:
            # summed over the other labels (malformed records are counted per reason)
            for metric in worker.metrics.registry.collect():
                for sample in metric.samples:
                    if (sample.name == f"streamfeat_events_{name}_total"
                            and sample.labels["topology"] == self.topology.name):
                        assert sample.labels["partition"] in {str(p) for p in range(PARTITIONS)}
                        self.counted[name] += sample.value


def pipeline_alone(topology: TopologyDef, parts: list[list[Raw]]) -> tuple[
        set[tuple[int, int]], dict[str, dict[str, Any]]]:
    """The dead letters ``(partition, offset)`` one pipeline pass per partition finds, and
    the last values it writes for each entity."""
    dead: set[tuple[int, int]] = set()
    values: dict[str, dict[str, Any]] = {}
    for p, stream in enumerate(parts):
        if not stream:
            continue
        n = len(stream)
        batch = RecordBatch(p, list(range(n)), [r.kafka_ts for r in stream],
                            [r.key for r in stream], [r.value for r in stream])
        outcome = PartitionPipeline(topology, p).process(batch)
        dead |= {(p, d.record.offset) for d in outcome.dead}
        for update_batch in outcome.updates:
            for update in update_batch.updates():
                values[f"{topology.name}:{update.entity_id}"] = dict(update.values)
    return dead, values


@st.composite
def deployments(draw: st.DrawFn) -> tuple[TopologyDef, list[list[Raw]], int, int]:
    """A topology, its partitions' records, a batch size and where a restart cuts in."""
    topology = TOPOLOGIES[draw(st.sampled_from(sorted(TOPOLOGIES)))]
    parts = [draw(streams(topology, max_size=16)) for _ in range(PARTITIONS)]
    return topology, parts, draw(st.integers(1, 9)), draw(st.integers(0, 16))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(deployments())
def test_every_record_ends_as_an_event_or_one_dead_letter(
        case: tuple[TopologyDef, list[list[Raw]], int, int]) -> None:
    topology, parts, batch_size, restart_at = case
    with tempfile.TemporaryDirectory() as tmp:
        deployment = Deployment(Path(tmp), topology)
        # The first run sees each partition's records up to restart_at; the second, restarted
        # from the stored state and offsets, the whole log.
        deployment.run(make_log([stream[:restart_at] for stream in parts]), batch_size)
        deployment.run(make_log(parts), batch_size)

    total = sum(len(stream) for stream in parts)
    letters = [(p, offset) for _t, _topic, p, offset, _kind in deployment.dlq.letters]
    assert len(letters) == len(set(letters)), "a dead letter sent twice"
    dead, values = pipeline_alone(topology, parts)
    assert set(letters) == dead
    counted = deployment.counted
    assert counted["consumed"] == total
    assert counted["aggregated"] + counted["late"] + counted["malformed"] == total
    assert counted["late"] + counted["malformed"] == len(letters)
    written = {key: {f: v for f, v in fields.items() if f != "_asof"}
               for key, (_v, fields) in deployment.redis.hashes.items()}
    for key, fields in values.items():  # the pipeline's last write of each entity
        # (a None value deletes its field, as in Redis)
        assert written[key] == {f: v for f, v in fields.items() if v is not None}, key


def test_a_kafka_timestamp_beyond_year_9999_does_not_stop_the_snapshots(tmp_path: Path) -> None:
    topology = TOPOLOGIES["ms"]
    log = make_log([[Raw(None, b'{"user_id": "u1", "ts": 1}', 2**63 - 1)], []])
    journal = Journal()
    config = WorkerConfig(topologies=[topology], kafka="memory", redis="memory",
                          state_dir=tmp_path / "state", snapshot_dir=tmp_path / "snapshots",
                          stop_at_end=True, commit_every_s=0.0)
    worker = Worker(config, consumer=MemoryConsumer(log),
                    sinks={topology.name: MemoryRedis(journal).sink(topology.name)},
                    dead_letters=MemoryDeadLetters(journal))
    assert worker.run() == 0
