"""``streamfeat plan`` (contract section 10): what a worker starting on a changed topology
will recompute, from which data, how many records, whether some history is missing.

State is built by the real worker core over the in-memory consumer (topology v1 over the
first 70 records of each partition, as in test_evolution.py), then v2 is planned: the
statuses, the records (against the log), the history's completeness and the partial
feature-windows must be what the worker then does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from test_evolution import PARTITIONS, V1, V2, Deployment, head, make_log, shop

from streamfeat.cli import main
from streamfeat.errors import StateError
from streamfeat.pipeline import FieldStatus, PartitionPipeline
from streamfeat.records import RecordBatch
from streamfeat.runtime.consumers import MemoryHistory, MemoryLog
from streamfeat.runtime.plan import (
    EXIT_COMPLETE,
    EXIT_PARTIAL,
    EXIT_UNKNOWN,
    TopologyPlan,
    plan_topology,
    render,
    to_json,
)
from streamfeat.snapshot import SnapshotWriter
from streamfeat.state import PartitionStore
from streamfeat.topology import load_topology, load_topology_text

SEEN = 70  # records of each partition v1 processed: the state's position
EXPECTED = {  # field -> (status, recomputed from history)
    "orders__5m": ("unchanged", False),
    "orders__1h": ("added", True),
    "orders__lifetime": ("added", True),
    "amount__1h": ("unchanged", True),  # its slot is shared with changed fields
    "biggest__10m": ("redefined", True),
    "spend__1h": ("renamed (was spent__1h)", True),
    "items__30m": ("added", True),
    "sessions__session_2m": ("added", True),
    "gone__1h": ("removed", False),
}


@pytest.fixture(scope="module")
def log() -> MemoryLog:
    return make_log(seed=7, per_partition=120)


@pytest.fixture
def deployed(tmp_path: Path, log: MemoryLog) -> Deployment:
    """v1 has run over the first ``SEEN`` records of each partition."""
    deployment = Deployment(tmp_path)
    deployment.run(shop(V1), head(log, SEEN))
    return deployment


def state_dir(deployment: Deployment) -> Path:
    return deployment.tmp / "state"


def write_snapshots(root: Path, log: MemoryLog, first: int, end: int, per_file: int) -> None:
    """Snapshot files of offsets ``[first, end)`` of every partition, ``per_file`` each."""
    for p in range(PARTITIONS):
        writer = SnapshotWriter(root, "orders", p)
        records = log.records[("orders", p)]
        for a in range(first, end, per_file):
            writer.append(RecordBatch.of(records[a:min(end, a + per_file)], p))
            writer.flush()
        writer.close()


def statuses(t: TopologyPlan) -> dict[str, tuple[str, bool]]:
    out = {}
    for row in to_json([t])["topologies"][0]["fields"]:
        (status, partitions), = row["status"].items()
        assert partitions == list(range(PARTITIONS)), row
        assert row["recomputed_in"] in ([], list(range(PARTITIONS))), row
        out[row["field"]] = (status, bool(row["recomputed_in"]))
    return out


def test_every_change_named_and_the_history_counted(deployed: Deployment, log: MemoryLog
                                                    ) -> None:
    t = plan_topology(shop(V2), state_dir(deployed), history=MemoryHistory(log),
                      topic_partitions=[0, 1, 2], kafka="reachable")
    assert statuses(t) == EXPECTED
    for p in t.partitions:
        # the worker's own rule on the same state gives the same change
        store = PartitionStore(state_dir(deployed), "shop", "orders", p.tp[1])
        try:
            assert PartitionPipeline(shop(V2), p.tp[1], store=store).change == p.change
        finally:
            store.close()
        # the history is every record the state has seen, read from the topic
        assert p.position == SEEN == len(head(log, SEEN).records[("orders", p.tp[1])])
        assert (p.snapshot_records, p.topic_records, p.records) == (0, SEEN, SEEN)
        assert p.complete is True and p.partial == {}
        assert p.first_event_ms is not None
    assert t.records == PARTITIONS * SEEN
    assert t.without_state == [2]
    assert t.exit_code() == EXIT_COMPLETE
    assert t.rate is not None and t.rate.per_second > 0 and "measured here" in t.rate.basis
    text = render([t])
    for name, (status, recomputed) in EXPECTED.items():
        line = next(x for x in text.splitlines() if x.split()[:1] == [name])
        assert status in line and ("from history" in line) == recomputed, line
        if recomputed:
            assert f" {PARTITIONS * SEEN} " in line and "  no" in line
    assert "orders[0] up to offset 70: topic [0, 70) 70 records: complete" in text
    assert "WARNING" not in text


def test_history_cut_by_retention_is_partial_exactly_where_the_worker_marks_it(
        deployed: Deployment, log: MemoryLog) -> None:
    cut = {("orders", p): 40 for p in range(PARTITIONS)}  # retention dropped 0..39
    t = plan_topology(shop(V2), state_dir(deployed), history=MemoryHistory(log, cut),
                      kafka="reachable")
    assert t.exit_code() == EXIT_PARTIAL
    for p in t.partitions:
        assert p.complete is False and p.records == SEEN - 40
        assert {"orders__lifetime", "sessions__session_2m"} <= set(p.partial)
        assert not {"orders__5m", "gone__1h"} & set(p.partial)
    text = render([t])
    assert "offsets [0, 40) gone: INCOMPLETE" in text and "WARNING" in text
    lifetime = next(x for x in text.splitlines() if x.startswith("  orders__lifetime"))
    assert "PARTIAL from" in lifetime and f"({PARTITIONS}/{PARTITIONS} partitions)" in lifetime

    # The worker, started on v2 at the same position with the same history, marks the same
    # feature-windows partial from the same event time.
    worker = deployed.run(shop(V2), head(log, SEEN), history=MemoryHistory(log, cut))
    for p in t.partitions:
        marked = {}
        for metric in worker.metrics.registry.collect():
            for s in metric.samples:
                if (s.name == "streamfeat_feature_partial_since_ms"
                        and s.labels["partition"] == str(p.tp[1]) and s.value):
                    marked[s.labels["field"]] = int(s.value)
        assert marked == p.partial


def test_snapshots_then_the_topic(deployed: Deployment, log: MemoryLog, tmp_path: Path) -> None:
    snaps = tmp_path / "snapshots"
    write_snapshots(snaps, log, 0, 50, per_file=20)  # files [0,20) [20,40) [40,50)

    def planned(retained: int | None) -> TopologyPlan:
        history = None if retained is None else MemoryHistory(
            log, {("orders", p): retained for p in range(PARTITIONS)})
        return plan_topology(shop(V2), state_dir(deployed), snapshot_dir=str(snaps),
                             history=history, kafka="reachable" if history else "off")

    t = planned(40)  # snapshots [0, 50), then the topic [50, 70)
    assert t.exit_code() == EXIT_COMPLETE
    for p in t.partitions:
        assert (p.snapshots, p.snapshot_records, p.topic_records) == ((0, 50), 50, SEEN - 50)
    assert "snapshots [0, 50) 50 records; topic [50, 70) 20 records: complete" in render([t])

    t = planned(60)  # a hole: [50, 60) is in neither
    assert t.exit_code() == EXIT_PARTIAL
    for p in t.partitions:
        assert (p.snapshot_records, p.topic_records, p.complete) == (50, SEEN - 60, False)
        assert "orders__lifetime" in p.partial
    assert "offsets [50, 60) in neither snapshots nor the topic" in render([t])

    t = planned(None)  # no Kafka: the topic part, and so completeness, unknown
    assert t.exit_code() == EXIT_UNKNOWN
    assert all(p.complete is None and p.records is None for p in t.partitions)
    assert f"{PARTITIONS * 50} + topic" in render([t])

    write_snapshots(snaps, log, 50, 100, per_file=25)  # now past the state's position
    t = planned(None)  # the snapshots alone cover it: no Kafka needed
    assert t.exit_code() == EXIT_COMPLETE
    for p in t.partitions:
        assert (p.snapshots, p.snapshot_records, p.topic_records) == ((0, 100), SEEN, 0)


def test_fresh_and_unchanged_deployments(deployed: Deployment, log: MemoryLog,
                                         tmp_path: Path) -> None:
    fresh = plan_topology(shop(V2), tmp_path / "nothing-here", kafka="off")
    assert fresh.fresh and not fresh.partitions and fresh.exit_code() == EXIT_COMPLETE
    assert "fresh deployment" in render([fresh]) and "nothing is recomputed" in render([fresh])
    PartitionStore(tmp_path / "opened", "shop", "orders", 0).close()  # nothing committed
    empty = plan_topology(shop(V2), tmp_path / "opened", kafka="off")
    assert empty.fresh and len(empty.partitions) == 1 and empty.exit_code() == EXIT_COMPLETE
    assert "holding nothing yet" in render([empty])
    same = plan_topology(shop(V1), state_dir(deployed), kafka="off")  # no Kafka needed
    assert same.unchanged and same.exit_code() == EXIT_COMPLETE and same.records == 0
    assert "unchanged: 2 partition(s)" in render([same])


def test_plan_while_a_worker_holds_the_store(deployed: Deployment, log: MemoryLog) -> None:
    """A worker in this process holds partition 0 open (and commits while the plan reads),
    one in another process holds partition 1: the plan reads both, disturbs neither."""
    root = state_dir(deployed)
    held = PartitionStore(root, "shop", "orders", 0)
    script = (
        "import sys, time\n"
        "from streamfeat.state import PartitionStore\n"
        f"s = PartitionStore({str(root)!r}, 'shop', 'orders', 1)\n"
        "print('open', flush=True)\n"
        "sys.stdin.read()\n"
        "s.close()\n")
    other = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "open"
        with pytest.raises(StateError):  # the lock is held: a writer could not open it
            PartitionStore(root, "shop", "orders", 1, lock_wait_s=0.0)
        before = sorted(p.name for p in (root / "shop" / "orders-1").iterdir())
        t = plan_topology(shop(V2), root, history=MemoryHistory(log), kafka="reachable")
        assert [p.position for p in t.partitions] == [SEEN, SEEN]
        assert statuses(t) == EXPECTED
        assert sorted(p.name for p in (root / "shop" / "orders-1").iterdir()) == before

        # the holder goes on committing, and the next plan sees its latest commit
        committed = held.committed()
        assert committed.meta is not None
        held.commit(SEEN + 5, committed.meta, [])
        t = plan_topology(shop(V2), root, history=MemoryHistory(log), kafka="reachable")
        assert [p.position for p in t.partitions] == [SEEN + 5, SEEN]
        held.commit(SEEN + 6, committed.meta, [])
        assert held.committed().next_offset == SEEN + 6
    finally:
        held.close()
        other.communicate("", timeout=30)
    assert other.returncode == 0
    reader = PartitionStore(root, "shop", "orders", 0, read_only=True)
    try:
        with pytest.raises(StateError, match="read only"):
            reader.commit(1, b"", [])
    finally:
        reader.close()
    with pytest.raises(StateError, match="no state"):
        PartitionStore(root, "shop", "orders", 7, read_only=True)
    assert not (root / "shop" / "orders-7").exists()


def test_state_written_before_the_catalog(deployed: Deployment, log: MemoryLog) -> None:
    """Meta without slots and fields: the slots are found in the entities, as the worker
    does; the fields of v2 those serve continue, the others are computed from history."""
    root = state_dir(deployed)
    for p in range(PARTITIONS):
        store = PartitionStore(root, "shop", "orders", p)
        committed = store.committed()
        assert committed.meta is not None and committed.next_offset is not None
        meta = msgspec.msgpack.decode(committed.meta)
        del meta["slots"], meta["fields"]
        store.commit(committed.next_offset, msgspec.msgpack.encode(meta), [])
        store.close()
    t = plan_topology(shop(V2), root, history=MemoryHistory(log), kafka="reachable")
    for p in t.partitions:
        store = PartitionStore(root, "shop", "orders", p.tp[1])
        try:
            assert PartitionPipeline(shop(V2), p.tp[1], store=store).change == p.change
        finally:
            store.close()
        assert p.records == SEEN and p.complete
    found = {f.name: f.status for f in t.partitions[0].change.fields}
    assert found["orders__5m"] is FieldStatus.UNCHANGED
    assert found["orders__lifetime"] is FieldStatus.ADDED
    assert "gone__1h" not in found  # its name was not recorded
    legacy_v1 = plan_topology(shop(V1), root, kafka="off")
    assert legacy_v1.unchanged and legacy_v1.exit_code() == EXIT_COMPLETE


def test_a_rekeyed_topology_plans_its_repartition_topic(tmp_path: Path) -> None:
    """The state and the history of a re-keyed topology are those of
    ``<topology>.repartition`` (its records carry their source coordinates)."""
    from memory import Journal
    from test_rekey import MERCHANTS
    from test_rekey import Deployment as Rekeyed
    from test_rekey import make_log as orders

    log, _events = orders(seed=5)
    v1 = load_topology_text(MERCHANTS, "merchants.yaml")
    v2 = load_topology_text(MERCHANTS + "  - {name: smallest, agg: min, field: amount, "
                            "windows: [lifetime]}\n", "merchants.yaml")
    Rekeyed(tmp_path, log, Journal(), [v1]).run()
    t = plan_topology(v2, tmp_path / "state", history=MemoryHistory(log), kafka="reachable")
    assert t.topic == "merchants.repartition" and t.partitions
    for p in t.partitions:
        written = len(log.records[("merchants.repartition", p.tp[1])])
        assert p.tp[0] == "merchants.repartition" and p.position == written
        assert "smallest__lifetime" in p.recomputed  # with those sharing its slot
        assert "biggest__1d" not in p.recomputed
        assert (p.records, p.complete, p.partial) == (written, True, {})
        assert p.first_event_ms is not None
    assert t.exit_code() == EXIT_COMPLETE


def test_cli(deployed: Deployment, log: MemoryLog, tmp_path: Path,
             capsys: pytest.CaptureFixture[str]) -> None:
    v1, v2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    v1.write_text(V1)
    v2.write_text(V2)
    root = str(state_dir(deployed))
    assert main(["plan", str(v1), "--state-dir", root, "--no-kafka"]) == EXIT_COMPLETE
    assert "unchanged" in capsys.readouterr().out

    assert main(["plan", str(v2), "--state-dir", root, "--no-kafka"]) == EXIT_UNKNOWN
    out = capsys.readouterr().out
    assert "topic part unknown" in out and "orders__lifetime" in out

    snaps = tmp_path / "snapshots"
    write_snapshots(snaps, log, 0, SEEN, per_file=30)
    started = time.monotonic()
    code = main(["plan", str(v2), "--state-dir", root, "--snapshot-dir", str(snaps),
                 "--no-kafka", "--json"])
    assert code == EXIT_COMPLETE
    assert time.monotonic() - started < 30
    doc = json.loads(capsys.readouterr().out)
    (shop_plan,) = doc["topologies"]
    assert doc["exit_code"] == 0 and shop_plan["records"] == PARTITIONS * SEEN
    assert {f["field"]: next(iter(f["status"])) for f in shop_plan["fields"]} == {
        k: v[0] for k, v in EXPECTED.items()}
    assert all(p["complete"] and p["snapshot_records"] == SEEN
               for p in shop_plan["partitions"])
    assert shop_plan["rate"]["records_per_s"] > 0 and shop_plan["estimate_s"] > 0

    fresh = str(tmp_path / "fresh")
    assert main(["plan", str(v2), "--state-dir", fresh, "--kafka", "localhost:1"]) == 0
    assert "fresh deployment" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text(V2.replace("agg: count", "agg: countt", 1))
    assert main(["plan", str(bad), "--state-dir", root]) == 2
    assert "bad.yaml:" in capsys.readouterr().err


def test_cli_unreachable_kafka_says_unknown_quickly(deployed: Deployment, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    v2 = tmp_path / "v2.yaml"
    v2.write_text(V2)
    started = time.monotonic()
    code = main(["plan", str(v2), "--state-dir", str(state_dir(deployed)),
                 "--kafka", "127.0.0.1:1"])
    assert time.monotonic() - started < 20
    assert code == EXIT_UNKNOWN
    out = capsys.readouterr().out
    assert "did not answer" in out and "completeness unknown" in out


@pytest.mark.integration
def test_cli_with_kafka_reads_the_topic_and_its_retention(
        kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The topic part from a real broker: its low watermark, the first records' event time
    (decoded from the records read at the low watermark) and records counted by offsets;
    then retention (records deleted) moves the low watermark and the plan exits 2."""
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import AdminClient

    topic = new_topic("orders", partitions=PARTITIONS)
    log = MemoryLog()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for (_orders, p), records in make_log(seed=11, per_partition=120).records.items():
        for r in records:
            log.append(topic, p, r.key, r.value, r.kafka_ts)
            producer.produce(topic, r.value, r.key, partition=p, timestamp=r.kafka_ts)
    assert producer.flush(30) == 0
    v1, v2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    v1.write_text(V1.replace("topic: orders", f"topic: {topic}"))
    v2.write_text(V2.replace("topic: orders", f"topic: {topic}"))
    Deployment(tmp_path).run(load_topology(v1), head(log, SEEN))
    root = str(tmp_path / "state")

    def planned(*extra: str) -> tuple[int, dict[str, Any]]:
        code = main(["plan", str(v2), "--state-dir", root, "--kafka", kafka_bootstrap,
                     "--json", *extra])
        (doc,) = json.loads(capsys.readouterr().out)["topologies"]
        return code, doc

    code, doc = planned()
    assert code == EXIT_COMPLETE and doc["kafka"] == "reachable", doc
    assert doc["records"] == PARTITIONS * SEEN and doc["without_state"] == []
    for p in doc["partitions"]:
        assert (p["topic_low"], p["topic_records"], p["complete"]) == (0, SEEN, True)
        first = json.loads(log.records[(topic, p["partition"])][0].value or b"{}")
        assert p["first_event_ms"] == first["ts"]  # decoded, not the Kafka timestamp

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    cut = [TopicPartition(topic, p, 40) for p in range(PARTITIONS)]
    for future in admin.delete_records(cut, operation_timeout=30).values():
        future.result(30)
    code, doc = planned()
    assert code == EXIT_PARTIAL
    for p in doc["partitions"]:
        assert (p["topic_low"], p["topic_records"], p["complete"]) == (40, SEEN - 40, False)
        assert "orders__lifetime" in p["partial"] and "orders__5m" not in p["partial"]

    snaps = tmp_path / "snapshots"
    for p in range(PARTITIONS):  # snapshots of [0, 50): then the topic from 50
        writer = SnapshotWriter(snaps, topic, p)
        writer.append(RecordBatch.of(log.records[(topic, p)][:50], p))
        writer.close()
    code, doc = planned("--snapshot-dir", str(snaps))
    assert code == EXIT_COMPLETE
    for p in doc["partitions"]:
        assert (p["snapshot_records"], p["topic_from"], p["topic_records"]) == (50, 50, 20)
