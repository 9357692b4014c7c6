"""Per-merchant features from a user-keyed topic, on real Kafka and Redis (contract section 3).

The orders topic is keyed (so partitioned) by user; a merchant's orders are in every
partition. The worker re-keys them through ``<topology>.repartition`` and aggregates there.
Each test checks every Redis cell against a reference computed here over all records, and
the dead-letter topic holding each malformed record once.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from streamfeat.client import Client
from streamfeat.pipeline.rekey import repartition_topic
from streamfeat.replay import replay, verify
from streamfeat.topology import AggKind, TopologyDef, load_topology

from harness import (
    COMMIT_OFTEN,
    ROOT,
    GroupProgress,
    LiveStream,
    Workers,
    assert_redis_matches_reference,
    count_topic,
    kill_at_random_points,
    make_topology,
    produce,
    read_messages,
    read_topic,
    run_to_end,
    worker_cmd,
    worker_env,
)
from reference import Event, close, run_partition, values_as_of

pytestmark = pytest.mark.integration

# ~17 h of orders: a day of lateness covers any interleaving of the source partitions in
# the repartition topic, so the reference needs no knowledge of that interleaving.
REKEY_STREAM = {"entities": 300, "events_per_second": 0.5, "disorder_ms": 120_000,
                "late_fraction": 0.0, "malformed_fraction": 0.01}


def merchants_topology(name: str, topic: str, tmp_path: Path) -> tuple[TopologyDef, Path]:
    text = (ROOT / "topologies" / "merchants.yaml").read_text()
    text = text.replace("name: merchants", f"name: {name}", 1).replace(
        "topic: orders", f"topic: {topic}", 1).replace("lateness: 5m", "lateness: 1d", 1)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return load_topology(path), path


def partition_of_entity(kafka: str, topology: TopologyDef) -> dict[str, int]:
    """Which repartition partition each entity went to (read from the topic's keys)."""
    out: dict[str, int] = {}
    for p, messages in read_messages(kafka, repartition_topic(topology)).items():
        for m in messages:
            key = (m.key() or b"").decode()
            assert out.setdefault(key, p) == p, key
    return out


def expected_rekeyed(kafka: str, topology: TopologyDef) -> tuple[dict[str, dict[str, Any]], int]:
    """Every entity's values over all records of the source topic, as of the final stream
    time of the repartition partition it lives in; and the number of malformed records."""
    source = read_topic(kafka, topology.source.topic)
    everything = [v for values in source.values() for v in values]
    run = run_partition(topology, everything)
    assert run.late == 0, "the reference assumes no late events"
    where = partition_of_entity(kafka, topology)
    by_entity: dict[str, list[Event]] = defaultdict(list)
    stream_time: dict[int, int] = {}
    for e in run.accepted:
        by_entity[e.key].append(e)
        q = where[e.key]
        stream_time[q] = max(stream_time.get(q, e.ts), e.ts)
    return ({k: values_as_of(topology, events, stream_time[where[k]])
             for k, events in by_entity.items()}, run.malformed)


def assert_rekeyed_matches(kafka: str, redis_url: str, topology: TopologyDef) -> int:
    expected, malformed = expected_rekeyed(kafka, topology)
    assert len(expected) > 50
    actual = Client(redis_url).get(topology, sorted(expected))
    sketchy = {f.redis_field(w) for f in topology.features if f.agg is AggKind.PERCENTILE
               for w in f.windows}
    bad = [f"{e}.{n}: redis={actual[e].get(n)!r} reference={v!r}"
           for e, want in expected.items() for n, v in want.items()
           if not close(actual[e].get(n), v, 0.0101 if n in sketchy else 1e-9)]
    cells = sum(len(w) for w in expected.values())
    assert not bad, f"{len(bad)} of {cells} cells differ, e.g.:\n" + "\n".join(bad[:20])
    return malformed


def test_per_merchant_features_from_a_user_keyed_topic_and_replay_equals_the_stream(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=4)
    topology, path = merchants_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 12_000, seed=21, **REKEY_STREAM)
    snaps = tmp_path / "snapshots"
    run_to_end(path, tmp_path / "state", kafka_bootstrap, redis_url, "--snapshot-dir",
               str(snaps))
    malformed = assert_rekeyed_matches(kafka_bootstrap, redis_url, topology)
    assert malformed > 0
    assert count_topic(kafka_bootstrap, f"{topic}.dlq") == malformed
    # snapshots hold what the aggregation consumed: replay and verify equal the stream
    report = verify(topology, snaps, redis_url)
    assert report.checked > 50 and report.match_rate == 1.0, report.mismatches[:5]
    out = tmp_path / "final.parquet"
    result = replay(topology, snaps, to_parquet=out, progress=False, processes=1)
    assert result.records == count_topic(kafka_bootstrap, repartition_topic(topology))


def test_rekeyed_worker_killed_at_random_points_of_both_stages(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=4)
    topology, path = merchants_topology(unique_id, topic, tmp_path)
    rng = random.Random(23)
    # The first stage only forwards: given the whole topic, it read all 30k records between
    # two polls of the group's progress (seen in CI). Produced over 40 s instead, the source
    # is still growing when the first two runs are killed, so those kills are mid-stage by
    # construction, whatever the host's speed.
    stream = LiveStream(kafka_bootstrap, topic, 30_000, rng, seconds=40, hostile=False,
                        **REKEY_STREAM)
    state = tmp_path / "state"
    group_id = f"streamfeat.{unique_id}"
    cmd = worker_cmd(path, state, "--batch-size", "200", *COMMIT_OFTEN)
    second_stage = 0  # kills that came before the second stage had read everything
    with Workers(tmp_path, worker_env(kafka_bootstrap, redis_url)) as workers, stream:
        with GroupProgress(kafka_bootstrap, group_id, topic) as source:
            # each just after a commit of the first stage, while the source is produced
            first_stage = kill_at_random_points(workers, source, cmd, rng=rng, runs=2,
                                                max_delay_s=0.3, live=stream)
        stream.finish()
        for run in range(2, 5):  # start-up, then a random point of the second stage's catch-up
            workers.start(f"run{run}", cmd)
            time.sleep(rng.uniform(2.0, 4.0))
            workers.kill(f"run{run}")
            with GroupProgress(kafka_bootstrap, group_id,
                               repartition_topic(topology)) as rekeyed:
                done, total = rekeyed.done()
                second_stage += done < total
    print(f"kills mid-way: first stage {first_stage}, second {second_stage}")
    assert first_stage > 0 and second_stage > 0, (first_stage, second_stage)
    run_to_end(path, state, kafka_bootstrap, redis_url)
    malformed = assert_rekeyed_matches(kafka_bootstrap, redis_url, topology)
    assert count_topic(kafka_bootstrap, f"{topic}.dlq") == malformed
    written = count_topic(kafka_bootstrap, repartition_topic(topology))
    print(f"repartition topic: {written} records for {30_000 - malformed} events")


def test_two_topologies_with_different_entities_on_one_topic_in_one_worker(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=4)
    users, users_path = make_topology(f"{unique_id}u", topic, tmp_path)
    merchants, merchants_path = merchants_topology(f"{unique_id}m", topic, tmp_path)
    # users.yaml has 1% late events and a 5 m lateness; merchants sees them within its day
    produce(kafka_bootstrap, topic, 12_000, seed=24,
            **{**REKEY_STREAM, "late_fraction": 0.0})
    run_to_end([users_path, merchants_path], tmp_path / "state", kafka_bootstrap, redis_url)
    assert_redis_matches_reference(kafka_bootstrap, redis_url, users)
    malformed = assert_rekeyed_matches(kafka_bootstrap, redis_url, merchants)
    # each topology sends its own dead letters of the malformed records
    assert count_topic(kafka_bootstrap, f"{topic}.dlq") == 2 * malformed
    keys = redis.Redis.from_url(redis_url).keys(f"sf:{unique_id}m:*")
    assert len(keys) > 50
