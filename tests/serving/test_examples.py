"""The Go and Java examples of docs/serving.md, built and run against features a real worker
wrote from real Kafka records: they read, with plain HMGET, exactly what the Python client
reads. Each runs only where its toolchain is installed (go; java and mvn); the first build
fetches the example's modules (Go module proxy, Maven Central)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic

from streamfeat.client import Client
from streamfeat.topology import TopologyDef

from harness import make_topology, produce, run_to_end

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@dataclass(frozen=True)
class Written:
    topology: TopologyDef
    entities: list[str]  # some the worker wrote, some it never saw


@pytest.fixture(scope="module")
def written(kafka_bootstrap: str, redis_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Written]:
    """Order events through a real worker (--stop-at-end) into Redis, once for the module."""
    name = "t" + uuid.uuid4().hex[:12]
    tmp = tmp_path_factory.mktemp("examples")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic = f"{name}-orders"
    admin.create_topics([NewTopic(topic, 2, 1)], operation_timeout=30)[topic].result(30)
    try:
        topology, path = make_topology(f"{name}-orders", topic, tmp)
        produce(kafka_bootstrap, topic, 3000, entities=60, events_per_second=2.0)
        run_to_end(path, tmp / "state", kafka_bootstrap, redis_url)
        with redis.Redis.from_url(redis_url) as conn:
            keys = sorted(k.decode() for k in conn.scan_iter(match=f"sf:{topology.name}:*"))
        assert len(keys) > 20
        stored = [k.rsplit(":", 1)[1] for k in keys]
        yield Written(topology, [*stored[:25], "never-seen", "0"])
        with redis.Redis.from_url(redis_url) as conn:
            conn.unlink(*keys)
    finally:
        for future in admin.delete_topics([topic, f"{topic}.dlq"],
                                          operation_timeout=30).values():
            with contextlib.suppress(Exception):  # best effort: the DLQ may not exist
                future.result(30)


def arguments(written: Written, redis_url: str) -> list[str]:
    topo = written.topology
    return ["-redis", redis_url, "-topology", topo.name, "-fields",
            ",".join(topo.redis_fields()), "-defaults", json.dumps(topo.defaults),
            *written.entities]


def assert_same_as_the_client(output: str, written: Written, redis_url: str) -> None:
    got: dict[str, Any] = json.loads(output)
    with Client(redis_url) as client:
        expected = client.get_with_meta(written.topology, written.entities)
    assert got["entities"] == {eid: e.values for eid, e in expected.items()}
    for eid, e in expected.items():
        meta = got["meta"][eid]
        assert (meta["found"], meta["asof_ms"], meta["updated_ms"], meta["version"]) == \
            (e.found, e.asof_ms, e.updated_ms, e.version)
        if e.version is not None:
            g, p, o = (int(x) for x in e.version.split("."))
            assert (meta["generation"], meta["partition"], meta["offset"]) == (g, p, o)
    kinds = {type(v) for e in expected.values() for v in e.values.values()}
    assert {int, float, str, list, type(None)} <= kinds  # the comparison covers every kind
    assert not expected["never-seen"].found


@pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed")
def test_go_example_reads_what_the_client_reads(
    written: Written, redis_url: str, tmp_path: Path
) -> None:
    src = tmp_path / "go"
    shutil.copytree(EXAMPLES / "go", src)
    binary = tmp_path / "features"
    build = subprocess.run(["go", "build", "-o", str(binary), "."], cwd=src,
                           capture_output=True, text=True, timeout=600, check=False)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(binary), *arguments(written, redis_url)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert_same_as_the_client(run.stdout, written, redis_url)


@pytest.mark.skipif(shutil.which("java") is None or shutil.which("mvn") is None,
                    reason="java and mvn are not installed")
def test_java_example_reads_what_the_client_reads(
    written: Written, redis_url: str, tmp_path: Path
) -> None:
    src = tmp_path / "java"
    shutil.copytree(EXAMPLES / "java", src)
    build = subprocess.run(["mvn", "-q", "-B", "package"], cwd=src, capture_output=True,
                           text=True, timeout=900, check=False)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    run = subprocess.run(["java", "-jar", str(src / "target" / "read-features.jar"),
                          *arguments(written, redis_url)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert_same_as_the_client(run.stdout, written, redis_url)
