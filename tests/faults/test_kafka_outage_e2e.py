"""The broker goes away for 30 s mid-stream, on a broker of this test alone.

The worker must wait, not die; say so in ``/health``; resume when the broker is back; and
end with every Redis cell equal to the reference and each dead letter exactly once (the
independent fault run found duplicates after outages of about 30 s: letters still queued in
the producer were produced again).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from harness import (
    COMMIT_OFTEN,
    STREAM,
    GroupProgress,
    PrivateKafka,
    Workers,
    assert_redis_matches_reference,
    free_port,
    get_health,
    make_topology,
    produce,
    read_messages,
    wait_for_health,
    worker_cmd,
    worker_env,
)

pytestmark = pytest.mark.integration

OUTAGE_S = 30


def _dead_letter_offsets(kafka: str, topic: str) -> list[tuple[int, int]]:
    """(partition, offset) of the original record of every dead letter, duplicates kept."""
    out = []
    for messages in read_messages(kafka, topic).values():
        for m in messages:
            h = dict(m.headers() or [])
            out.append((int(h["streamfeat-partition"]), int(h["streamfeat-offset"])))
    return out


@pytest.fixture
def private_kafka(tmp_path: Path, redis_url: str) -> Iterator[PrivateKafka]:
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    with PrivateKafka(tmp_path, port) as kafka:
        yield kafka


def test_broker_down_30_s_mid_stream(
    private_kafka: PrivateKafka, redis_url: str, unique_id: str, tmp_path: Path,
) -> None:
    kafka = private_kafka.bootstrap
    topic = f"{unique_id}-orders"
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka, topic, 40_000, seed=31, **STREAM)
    port = free_port()
    with Workers(tmp_path, worker_env(kafka, redis_url)) as workers:
        worker = workers.start("worker", worker_cmd(
            path, tmp_path / "state", "--batch-size", "200", "--metrics-port", str(port),
            "--unhealthy-after", "5", *COMMIT_OFTEN))
        with GroupProgress(kafka, f"streamfeat.{unique_id}", topic) as group:
            done, total = group.wait(workers=workers)
            assert done < total, "the outage must come mid-stream"
        private_kafka.stop()
        down = time.time()
        red, body = wait_for_health(port, lambda code, b: code == 503, timeout_s=25,
                                    workers=workers)
        assert "kafka" in body.get("failing", {}), body
        print(f"/health unhealthy {red - down:.1f} s after the broker stopped")
        time.sleep(max(0.0, OUTAGE_S - (time.time() - down)))
        assert worker.poll() is None, "the worker must wait for Kafka, not die:\n" + (
            workers.log("worker"))
        private_kafka.start()
        back = time.time()
        green, _body = wait_for_health(port, lambda code, b: code == 200, timeout_s=120,
                                       workers=workers)
        with GroupProgress(kafka, f"streamfeat.{unique_id}", topic) as group:
            before, _total = group.done()
            group.wait(above=before, timeout_s=120, workers=workers)
            resumed = time.time()
            group.wait_end(workers=workers)
        print(f"broker back: healthy after {green - back:.1f} s, progress after "
              f"{resumed - back:.1f} s")
        assert workers.stop("worker") == 0, workers.log("worker")
        assert get_health(port)[0] == 0  # the worker is gone
    _entities, late, malformed = assert_redis_matches_reference(kafka, redis_url, topology)
    letters = _dead_letter_offsets(kafka, f"{topic}.dlq")
    assert len(letters) == len(set(letters)), "a dead letter was sent twice"
    assert len(letters) == late + malformed
