"""A replay equals the stream: snapshots written by a (restarted) worker, replayed into another
Redis database, give identical hashes for every entity, and verify reports 100%."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from streamfeat.replay import replay, verify
from streamfeat.snapshot.reader import partitions as snapshot_partitions

from harness import (
    COMMIT_OFTEN,
    STREAM,
    GroupProgress,
    Workers,
    assert_redis_matches_reference,
    make_topology,
    produce,
    run_to_end,
    worker_cmd,
    worker_env,
)

pytestmark = pytest.mark.integration

STREAM_150 = {**STREAM, "entities": 150}


def _other_db(url: str) -> str:
    base, _, db = url.rpartition("/")
    return f"{base}/{(int(db or 0) + 1) % 16}"


def _hashes(url: str, name: str) -> dict[bytes, dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    out = {}
    for key in client.scan_iter(match=f"sf:{name}:*", count=1000):
        fields = client.hgetall(key)
        out[key] = {k: v for k, v in fields.items() if not k.startswith(b"_")}
    return out


def test_replay_to_redis_equals_the_stream_and_verify_is_100_percent(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=3)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 30_000, seed=11, **STREAM_150)
    snaps, state = tmp_path / "snapshots", tmp_path / "state"
    # First run killed mid-stream (snapshots every 0.5 s; small batches so that the run lasts
    # a few seconds), as soon as the group has committed progress; a restart runs to the end.
    with (Workers(tmp_path, worker_env(kafka_bootstrap, redis_url)) as workers,
          GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
        workers.start("first", worker_cmd(
            path, state, "--snapshot-dir", str(snaps), "--snapshot-every", "0.5",
            "--batch-size", "100", *COMMIT_OFTEN,
        ))
        group.wait(workers=workers)
        workers.kill("first")
        done, total = group.done()
        assert 0 < done < total, f"kill must come mid-stream: {done} of {total} committed"
    run_to_end(path, state, kafka_bootstrap, redis_url, "--snapshot-dir", str(snaps))
    assert_redis_matches_reference(kafka_bootstrap, redis_url, topology)
    assert snapshot_partitions(snaps, topic) == [0, 1, 2]

    other = _other_db(redis_url)
    replay(topology, snaps, to_redis=other, generation=1, progress=False, processes=1)
    online, replayed = _hashes(redis_url, unique_id), _hashes(other, unique_id)
    assert online and online.keys() == replayed.keys()
    differing = [k for k in online if online[k] != replayed[k]]
    detail = [
        (k, f, online[k].get(f), replayed[k].get(f))
        for k in differing[:3] for f in online[k].keys() | replayed[k].keys()
        if online[k].get(f) != replayed[k].get(f)
    ]
    assert not differing, f"{len(differing)} entities differ, e.g. {detail}"

    report = verify(topology, snaps, redis_url)
    assert report.checked == len(online)
    assert report.match_rate == 1.0, report.mismatches[:5]
    redis.Redis.from_url(other).delete(*replayed.keys())
