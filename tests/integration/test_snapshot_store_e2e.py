"""Snapshots in an object store, end to end (contract section 11): real workers, Kafka and
Redis, and a real S3-compatible server (moto on loopback, ``deploy/local/s3``).

- Two workers of one group, on two "hosts" (state directories of their own), write one
  layout into one bucket; the offline commands read it back from the URL and equal the
  stream.
- A worker SIGKILLed while a snapshot file is being uploaded (a multipart upload in flight,
  seen on the server) leaves no object; after a restart every record is in the snapshots
  exactly once and a replay counts each once.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer

from streamfeat.generator import OrderEvents
from streamfeat.replay import replay
from streamfeat.snapshot import snapshot_files
from streamfeat.state import PartitionStore

from harness import (
    COMMIT_OFTEN,
    STREAM,
    GroupProgress,
    Workers,
    assert_redis_matches_reference,
    make_topology,
    produce,
    run_to_end,
    snapshot_offsets,
    worker_cmd,
    worker_env,
)
from objectstore import S3

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamfeat.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _other_db(url: str) -> str:
    base, _, db = url.rpartition("/")
    return f"{base}/{(int(db or 0) + 1) % 16}"


def _hashes(url: str, name: str) -> dict[bytes, dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    out = {}
    for key in client.scan_iter(match=f"sf:{name}:*", count=1000):
        out[key] = {k: v for k, v in client.hgetall(key).items() if not k.startswith(b"_")}
    return out


def _exactly_once(url: str, topic: str, kafka: str) -> int:
    """Every record of the topic is in the snapshots exactly once; returns how many."""
    seen = snapshot_offsets(url, topic)
    twice = {k: n for k, n in seen.items() if n > 1}
    assert not twice, f"{len(twice)} records snapshotted twice, e.g. {list(twice)[:10]}"
    with GroupProgress(kafka, f"{topic}-check", topic) as progress:
        ends = progress.ends()
    every = {(p, o) for p, (lo, hi) in ends.items() for o in range(lo, hi)}
    assert set(seen) == every, f"snapshots miss {sorted(every - set(seen))[:10]}"
    return len(seen)


def _wait(condition: Callable[[], bool], what: str, workers: Workers,
          timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}:\n{workers.log(n)}" for n in workers.procs)
            raise AssertionError(f"{what}: not within {timeout_s} s\n{logs}")
        time.sleep(0.2)


def test_two_hosts_write_one_layout_and_replay_from_the_bucket_equals_the_stream(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path, s3: S3, s3_bucket: str,
) -> None:
    topic = new_topic("orders", partitions=4)
    topology, path = make_topology(unique_id, topic, tmp_path)
    url = f"s3://{s3_bucket}/snaps"
    state_a, state_b = tmp_path / "host-a", tmp_path / "host-b"
    stream = {**STREAM, "entities": 150}
    produce(kafka_bootstrap, topic, 3000, seed=61, **stream)
    env = worker_env(kafka_bootstrap, redis_url)

    def cmd(state: Path) -> list[str]:
        return worker_cmd(path, state, "--snapshot-dir", url, "--snapshot-every", "0.5",
                          *COMMIT_OFTEN)

    with (Workers(tmp_path, env) as workers,
          GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group):
        workers.start("a", cmd(state_a))
        group.wait_end(workers=workers)
        _wait(lambda: len(snapshot_offsets(url, topic)) == 3000,
              "host a's snapshots of the first 3000 records", workers)
        a_ends = {p: max(o for q, o in snapshot_offsets(url, topic) if q == p)
                  for p in range(4)}
        workers.start("b", cmd(state_b))  # joins: the group splits the partitions
        _wait(lambda: "revoked" in workers.log("a", 10**7)
              and bool(PartitionStore.partitions(state_b, unique_id, topic)),
              "a rebalance giving host b partitions", workers)
        produce(kafka_bootstrap, topic, 3000, seed=62, **stream)
        group.wait_end(workers=workers)
        on_b = set(PartitionStore.partitions(state_b, unique_id, topic))
        for proc in workers.procs.values():  # both at once: neither takes the other's over
            proc.terminate()
        assert workers.stop("a") == 0, workers.log("a")
        assert workers.stop("b") == 0, workers.log("b")
    assert on_b and on_b != {0, 1, 2, 3}, f"host b got {on_b}: not a split"
    for p in on_b:  # host b continued host a's files of its partitions, in the same folders
        firsts = [f.first_offset for f in snapshot_files(url, topic, p)]
        assert firsts[0] == 0 and a_ends[p] + 1 in firsts, (p, a_ends[p], firsts)
    assert _exactly_once(url, topic, kafka_bootstrap) == 6000
    assert_redis_matches_reference(kafka_bootstrap, redis_url, topology)

    # the offline commands, from the URL, equal the stream
    other = _other_db(redis_url)
    done = _cli("replay", str(path), "--snapshot-dir", url, "--to-redis", other,
                "--generation", "1", "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    online, replayed = _hashes(redis_url, unique_id), _hashes(other, unique_id)
    try:
        assert online and online.keys() == replayed.keys()
        differing = [k for k in online if online[k] != replayed[k]]
        assert not differing, f"{len(differing)} entities differ, e.g. {differing[:3]}"
    finally:
        if replayed:
            redis.Redis.from_url(other).delete(*replayed.keys())
    done = _cli("verify", str(path), "--snapshot-dir", url, "--redis", redis_url,
                env=env)
    assert done.returncode == 0 and "match rate 100.000000%" in done.stdout, (done.stdout,
                                                                              done.stderr)
    done = _cli("replay", str(path), "--snapshot-dir", f"s3://{unique_id}-none/x",
                "--to-parquet", str(tmp_path / "o.parquet"), env=env)
    assert done.returncode != 0 and f"bucket '{unique_id}-none' does not exist" in done.stderr


def _padded_events(n: int) -> list[tuple[bytes, bytes, int]]:
    """Order events each carrying 3 KiB of incompressible text (a field the topology does
    not read), so that one snapshot file is tens of MiB: a multipart upload of several
    parts that lasts long enough to be seen, and killed, on the server."""
    out = []
    events = OrderEvents(seed=63, entities=100, events_per_second=100.0,
                         malformed_fraction=0.005).events(n)
    for event in events:
        value = event.value
        try:
            doc: Any = json.loads(value)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            doc["note"] = base64.b64encode(os.urandom(2304)).decode()
            value = json.dumps(doc).encode()
        out.append((event.key, value, event.ts))
    return out


def _snapshot_uploads(client: Any, bucket: str, topic: str) -> list[dict[str, Any]]:
    """Multipart uploads in flight of snapshot files (not of state checkpoints)."""
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [u for u in uploads if u["Key"].startswith(f"snaps/{topic}/date=")]


def test_worker_killed_mid_upload_then_restarted_snapshots_each_record_once(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path, s3: S3, s3_bucket: str,
) -> None:
    n = 10_000
    topic = new_topic("orders", partitions=1)
    topology, path = make_topology(unique_id, topic, tmp_path)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20})
    for key, value, ts in _padded_events(n):
        producer.produce(topic, key=key, value=value, timestamp=ts)
        producer.poll(0)
    assert producer.flush(60) == 0
    url, state = f"s3://{s3_bucket}/snaps", tmp_path / "state"
    client = s3.client()
    env = worker_env(kafka_bootstrap, redis_url)
    with Workers(tmp_path, env) as workers:
        # one flush of everything 3 s after the first record: a file of ~30 MiB
        worker = workers.start("first", worker_cmd(path, state, "--snapshot-dir", url,
                                                   "--snapshot-every", "3"))
        deadline = time.monotonic() + 120
        uploads: list[dict[str, Any]] = []
        while not uploads:
            assert worker.poll() is None, workers.log("first")
            assert time.monotonic() < deadline, "no snapshot upload seen\n" + workers.log("first")
            uploads = _snapshot_uploads(client, s3_bucket, topic)
            time.sleep(0.005)
        workers.kill("first")
    (upload,) = uploads
    # the kill came mid-upload: the upload is still in flight, and no object has its key
    assert [u["UploadId"] for u in _snapshot_uploads(client, s3_bucket, topic)] == [
        upload["UploadId"]], "the upload completed before the kill"
    parts = client.list_parts(Bucket=s3_bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    print(f"killed with {len(parts.get('Parts', []))} part(s) of {upload['Key']} sent")
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix=f"snaps/{topic}/")
    assert upload["Key"] not in [o["Key"] for o in listed.get("Contents", [])]
    assert snapshot_files(url, topic, 0) == []

    run_to_end(path, state, kafka_bootstrap, redis_url, "--snapshot-dir", url)
    assert _exactly_once(url, topic, kafka_bootstrap) == n
    result = replay(topology, url, to_parquet=tmp_path / "final.parquet", processes=1,
                    progress=False)
    assert result.records == n
    assert result.partitions[0].last_offset == n - 1
