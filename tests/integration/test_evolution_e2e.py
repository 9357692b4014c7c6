"""Definitions that change on a running deployment, on real Kafka and Redis (contract
section 10): a worker runs ``orders.yaml`` (v1) over part of the topic, then a worker of the
changed topology (v2) over the whole of it; Redis must end with every cell of every entity
equal to the reference computed over all records with v2, fields no longer declared gone,
and each late or malformed record one dead letter.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import yaml

from streamfeat.topology import TopologyDef, load_topology
from streamfeat.topology.definitions import RESERVED_FIELDS

from harness import (
    STREAM,
    Workers,
    assert_cells,
    assert_redis_matches_reference,
    dead_letter_origins,
    expected_final,
    free_port,
    make_topology,
    produce,
    read_topic,
    run_to_end,
    scrape_metrics,
    worker_cmd,
    worker_env,
)

pytestmark = pytest.mark.integration


def _feature(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in doc["features"] if f["name"] == name)


def add(doc: dict[str, Any]) -> None:
    """A window added to a feature, and two new features (one shares a slot)."""
    _feature(doc, "orders")["windows"].append("1d")
    doc["features"].append({"name": "amount_max_1d", "agg": "max", "field": "amount",
                            "windows": ["1d"]})
    doc["features"].append({"name": "statuses", "agg": "count_distinct", "field": "status",
                            "windows": ["lifetime", {"type": "session", "gap": "10m"}]})


def redefine(doc: dict[str, Any]) -> None:
    """A changed ``where`` and a changed aggregation, names kept."""
    _feature(doc, "amount_mean_completed")["where"] = "status == 'pending'"
    _feature(doc, "amount_min")["agg"] = "max"


def remove(doc: dict[str, Any]) -> None:
    doc["features"] = [f for f in doc["features"]
                       if f["name"] not in ("merchants", "last_status", "cancelled")]
    del doc["defaults"]["last_amounts"]
    doc["features"] = [f for f in doc["features"] if f["name"] != "last_amounts"]


CHANGES: dict[str, list[Callable[[dict[str, Any]], None]]] = {
    "add": [add], "redefine": [redefine], "remove": [remove], "all": [add, redefine, remove]}


def evolve(v1: Path, changes: list[Callable[[dict[str, Any]], None]]) -> tuple[TopologyDef,
                                                                               Path]:
    doc = yaml.safe_load(v1.read_text())
    doc = copy.deepcopy(doc)
    for change in changes:
        change(doc)
    path = v1.with_name(v1.stem + "-v2.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_topology(path), path


def assert_evolved(kafka: str, redis_url: str, v1: TopologyDef, v2: TopologyDef) -> None:
    """Every cell as the reference over all records with v2; no field v2 does not declare;
    each dead letter once."""
    entities, late, malformed = assert_redis_matches_reference(kafka, redis_url, v2)
    declared = set(v2.redis_fields()) | set(RESERVED_FIELDS)
    retired = set(v1.redis_fields()) - set(v2.redis_fields())
    client = redis_lib.Redis.from_url(redis_url)
    stray: set[str] = set()
    keys = list(client.scan_iter(match=f"sf:{v2.name}:*", count=1000))
    assert len(keys) == entities
    for key in keys:
        stray |= {f.decode() for f in client.hkeys(key)} - declared
    assert not stray, f"fields v2 does not declare are still in Redis: {sorted(stray)[:10]}"
    assert not retired or not stray
    letters = dead_letter_origins(kafka, v2.source.topic)
    assert len(letters) == len(set(letters)), "a dead letter was sent twice"
    assert len(letters) == late + malformed


@pytest.mark.parametrize("change", ["add", "redefine", "remove"])
def test_a_changed_topology_ends_as_if_it_had_always_run(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path, change: str,
) -> None:
    topic = new_topic("orders", partitions=3)
    v1, path = make_topology(unique_id, topic, tmp_path)
    v2, path2 = evolve(path, CHANGES[change])
    snaps, state = tmp_path / "snapshots", tmp_path / "state"
    produce(kafka_bootstrap, topic, 6000, seed=41, **STREAM)
    run_to_end(path, state, kafka_bootstrap, redis_url, "--snapshot-dir", str(snaps))
    produce(kafka_bootstrap, topic, 3000, seed=42, **STREAM)
    log = run_to_end(path2, state, kafka_bootstrap, redis_url, "--snapshot-dir", str(snaps))
    text = log.read_text()
    assert "the definition changed" in text and "definition change applied" in text, text[-3000:]
    if change != "remove":
        assert "from history: snapshots" in text, text[-3000:]
    assert_evolved(kafka_bootstrap, redis_url, v1, v2)


def _wait_recomputing(port: int, workers: Workers, timeout_s: float = 120) -> None:
    """Until the worker has read some history for a change still in progress."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            m = scrape_metrics(port)
        except OSError:
            m = {}
        pending = sum(v for k, v in m.items() if k.startswith("streamfeat_recompute_pending"))
        read = sum(v for k, v in m.items() if k.startswith("streamfeat_recompute_records_total"))
        if pending > 0 and read > 0:
            return
        time.sleep(0.02)
    raise AssertionError("the worker never was mid-recomputation:\n" + workers.log("v2"))


def test_all_changes_at_once_with_a_kill_in_the_middle_of_the_recomputation(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=3)
    v1, path = make_topology(unique_id, topic, tmp_path)
    v2, path2 = evolve(path, CHANGES["all"])
    state = tmp_path / "state"
    produce(kafka_bootstrap, topic, 60_000, seed=43, **STREAM)
    run_to_end(path, state, kafka_bootstrap, redis_url)  # no snapshots: history is the topic
    produce(kafka_bootstrap, topic, 3000, seed=44, **STREAM)
    port = free_port()
    with Workers(tmp_path, worker_env(kafka_bootstrap, redis_url)) as workers:
        workers.start("v2", worker_cmd(path2, state, "--metrics-port", str(port)))
        _wait_recomputing(port, workers)
        workers.kill("v2")
    log = run_to_end(path2, state, kafka_bootstrap, redis_url)
    assert "from history: the topic from offset 0" in log.read_text()
    assert_evolved(kafka_bootstrap, redis_url, v1, v2)


def test_with_two_processes(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=4)
    v1, path = make_topology(unique_id, topic, tmp_path)
    v2, path2 = evolve(path, CHANGES["all"])
    state = tmp_path / "state"
    produce(kafka_bootstrap, topic, 8000, seed=45, **STREAM)
    run_to_end(path, state, kafka_bootstrap, redis_url, "--processes", "2")
    produce(kafka_bootstrap, topic, 2000, seed=46, **STREAM)
    run_to_end(path2, state, kafka_bootstrap, redis_url, "--processes", "2")
    assert_evolved(kafka_bootstrap, redis_url, v1, v2)


def test_two_workers_of_one_group_rebalance_in_the_middle_of_the_recomputation(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    """Both on one host's state directory: the partitions a rebalance moves keep their (v1)
    state, and their recomputation starts again on the new owner."""
    topic = new_topic("orders", partitions=4)
    v1, path = make_topology(unique_id, topic, tmp_path)
    v2, path2 = evolve(path, CHANGES["all"])
    state = tmp_path / "state"
    # enough history that the recomputation lasts while the second worker joins the group
    produce(kafka_bootstrap, topic, 300_000, seed=47, **STREAM)
    run_to_end(path, state, kafka_bootstrap, redis_url)
    produce(kafka_bootstrap, topic, 2000, seed=48, **STREAM)
    port = free_port()
    env = worker_env(kafka_bootstrap, redis_url)
    with Workers(tmp_path, env) as workers:
        # History read at 4k records/s a partition: the smallest partition (~50k records)
        # takes 12 s, so the second worker joins mid-recomputation however fast this machine
        # is (without the limit, CI once finished before it joined; at 10k/s, once the second
        # worker's start-up took a second longer, the small partitions were done first).
        slow = ("--recompute-max-rate", "4000")
        a = workers.start("v2", worker_cmd(path2, state, "--metrics-port", str(port),
                                           "--stop-at-end", *slow))
        _wait_recomputing(port, workers)
        b = workers.start("b", worker_cmd(path2, state, "--stop-at-end", *slow))
        for name, proc in (("v2", a), ("b", b)):
            assert proc.wait(300) == 0, workers.log(name)
        both = workers.log("v2", 10**7) + workers.log("b", 10**7)
        assert "revoked" in workers.log("v2", 10**7), "no rebalance moved a partition"
        assert "definition change applied" in workers.log("b", 10**7), both[-4000:]
    assert_evolved(kafka_bootstrap, redis_url, v1, v2)


def test_history_cut_by_retention_is_reported_partial(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    """Retention dropped the first records and there are no snapshots: the feature-windows
    whose window reaches before the history left (a lifetime, a 1d window over 3 hours of
    events) are logged, measured and registered as partial from its first event time."""
    import json
    import subprocess
    import sys

    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    topic = new_topic("orders", partitions=2)
    _v1, path = make_topology(unique_id, topic, tmp_path)
    v2, path2 = evolve(path, CHANGES["add"])
    state = tmp_path / "state"
    produce(kafka_bootstrap, topic, 4000, seed=49, **STREAM)
    run_to_end(path, state, kafka_bootstrap, redis_url)
    everything = read_topic(kafka_bootstrap, topic)  # before retention drops some
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    cut = [TopicPartition(topic, p, 500) for p in range(2)]
    for future in admin.delete_records(cut, operation_timeout=30).values():
        future.result(30)
    log = run_to_end(path2, state, kafka_bootstrap, redis_url).read_text()
    assert "the topic from offset 500" in log and "partial until their windows" in log, log
    shown = subprocess.run(
        [sys.executable, "-m", "streamfeat.cli", "registry", str(path2), "--redis", redis_url,
         "--json"], capture_output=True, text=True, check=True).stdout
    entries = {e["field"]: e for e in json.loads(shown)["features"]}
    for field in ("statuses__lifetime", "statuses__session_10m"):
        since = entries[field]["partial_since_ms"]
        assert set(since) == {"0", "1"}, (field, since)
    # orders__1d and amount_max_1d__1d share the state v1 kept for amount_sum__1d and
    # amount_min__1d (count, sum, min and max of amount over 1d): served at once, complete
    assert "orders__1d" not in log.split("the topic from offset 500")[0].rsplit("\n", 1)[-1]
    for field in ("orders__1d", "amount_max_1d__1d", "orders__5m"):
        assert entries[field]["partial_since_ms"] == {}, field

    def without_statuses(doc: dict[str, Any]) -> None:
        doc["features"] = [f for f in doc["features"] if f["name"] != "statuses"]

    complete, _path = evolve(path, [add, without_statuses])
    expected, _late, _malformed = expected_final(complete, everything)
    assert_cells(redis_url, complete, expected)  # every field but statuses, over all records
    assert v2.name == entries["orders__5m"]["topology"]
