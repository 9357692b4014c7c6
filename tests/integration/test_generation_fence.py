"""A worker fenced off by a backfill's higher generation says so, and how to fix it.

Redis refuses a worker's writes to entities a backfill wrote at a higher generation (that is
the fence). A refused write is usually harmless (a restart re-sending what it wrote), so the
worker must tell this case apart: error log, ``streamfeat_fenced_generation``, health, and
exit status 4 when it stops.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from streamfeat.runtime.summary import EXIT_FENCED
from streamfeat.sinks import RedisSink
from streamfeat.sinks.redis import Update
from streamfeat.sinks.values import parse_version, version

from harness import (
    free_port,
    make_topology,
    produce,
    run_to_end,
    wait_for_metrics,
    worker_cmd,
    worker_env,
)

pytestmark = pytest.mark.integration


def test_a_worker_below_the_backfills_generation_says_to_raise_it(
    kafka_bootstrap: str, redis_url: str, new_topic: Callable[..., str], unique_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic("orders", partitions=1)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 2000, seed=5, entities=20, events_per_second=0.5)
    # What a backfill at generation 3 leaves: every entity at version (3, 0, 0).
    with RedisSink(redis_url, topology) as sink:
        ids = [f"u{i}" for i in range(20)]
        sink.write([Update(e, {"orders__1h": -1}, 0, version(3, 0, 0)) for e in ids])
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    port = free_port()
    proc = subprocess.Popen(
        worker_cmd(path, tmp_path / "gen0", "--metrics-port", str(port)),
        env=worker_env(kafka_bootstrap, redis_url),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        metrics = wait_for_metrics(port, lambda m: m.get("streamfeat_fenced_generation", 0) > 0)
        assert metrics.get("streamfeat_fenced_generation") == 3, metrics
        with pytest.raises(urllib.error.HTTPError) as answer:  # unhealthy: 503, with the reason
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
        assert answer.value.code == 503
        health = json.loads(answer.value.read())
        assert health["healthy"] is False
        assert health["fenced_by_generation"] == {topology.name: 3}
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    log = err.decode(errors="replace")
    assert proc.returncode == EXIT_FENCED == 4, log[-3000:]  # stopped fenced: said by its status
    assert "Restart the workers with --generation 3" in log, log[-3000:]
    assert client.hget(topology.redis_key("u0"), "orders__1h") == "-1"  # refused, as fenced

    log = run_to_end(path, tmp_path / "gen3", kafka_bootstrap, redis_url,
                     "--generation", "3").read_text()
    assert "--generation" not in log, log[-3000:]
    stored = client.hgetall(topology.redis_key("u0"))
    generation, _partition, offset = parse_version(stored["_v"])
    assert generation == 3 and offset > 0 and stored["orders__1h"] != "-1"
    keys = list(client.scan_iter(match=f"sf:{unique_id}:*", count=1000))
    if keys:
        client.delete(*keys)
