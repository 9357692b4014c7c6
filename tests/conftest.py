"""Session fixtures: a real Kafka broker, a real Redis server and a real S3-compatible
server, never mocks.

Where Kafka and Redis come from, in order:
1. ``STREAMFEAT_KAFKA`` / ``STREAMFEAT_REDIS`` when set (an existing broker and server);
2. testcontainers, when a Docker engine answers;
3. ``deploy/local/up`` (Kafka from Maven Central jars, Redis from Debian), stopped again at
   the end of the session if this session started it (set ``STREAMFEAT_KEEP_STACK=1`` to keep it).

S3 (fixture ``s3``, and ``s3_bucket``: a bucket per test): ``STREAMFEAT_S3`` (an endpoint
URL, e.g. a MinIO's) or ``AWS_ENDPOINT_URL`` when set, else moto's standalone server on
loopback from ``deploy/local/s3`` (its own process, its own venv), stopped at the end as above.

Pure tests never touch these fixtures, so they run without any broker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from objectstore import S3

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long", action="store_true", default=False,
        help="the fault suite's long version (tests/faults: longer and more faults, both "
             "runtimes; 30+ minutes): deploy/test -m fault --long")


@dataclass(frozen=True)
class Stack:
    kafka: str  # bootstrap servers
    redis: str  # URL


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def _stack_running() -> bool:
    run = ROOT / ".local" / "run"
    return (run / "kafka.pid").exists()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    kafka = os.environ.get("STREAMFEAT_KAFKA")
    redis_url = os.environ.get("STREAMFEAT_REDIS")
    if kafka and redis_url:
        yield Stack(kafka, redis_url)
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer
        from testcontainers.community.redis import RedisContainer

        with KafkaContainer().with_kraft() as k, RedisContainer() as r:
            host, port = r.get_container_host_ip(), r.get_exposed_port(6379)
            yield Stack(kafka or k.get_bootstrap_server(), redis_url or f"redis://{host}:{port}/0")
        return
    started_here = not _stack_running()
    done = subprocess.run(
        [str(ROOT / "deploy" / "local" / "up")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.exit(f"deploy/local/up failed:\n{done.stderr}", returncode=3)
    found = dict(
        line.split("=", 1) for line in done.stdout.splitlines() if line.startswith("STREAMFEAT_")
    )
    try:
        yield Stack(kafka or found["STREAMFEAT_KAFKA"], redis_url or found["STREAMFEAT_REDIS"])
    finally:
        if started_here and not os.environ.get("STREAMFEAT_KEEP_STACK"):
            down = str(ROOT / "deploy" / "local" / "down")
            subprocess.run([down], capture_output=True, check=False)


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: Stack) -> str:
    return stack.kafka


@pytest.fixture(scope="session")
def redis_url(stack: Stack) -> str:
    return stack.redis


@pytest.fixture
def unique_id() -> str:
    """A short name unique to this test: prefix topics, topology names and Redis keys with it."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def new_topic(kafka_bootstrap: str, unique_id: str) -> Iterator[Callable[..., str]]:
    """Fresh topics for this test: ``new_topic("orders", partitions=3)``; deleted afterwards."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(name: str = "events", partitions: int = 1,
             config: dict[str, str] | None = None) -> str:
        topic = f"{unique_id}-{name}"
        futures = admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})],
                                      operation_timeout=30)
        futures[topic].result(timeout=30)
        created.append(topic)
        return topic

    yield make
    created = sorted({*created, *(f"{t}.dlq" for t in created)})  # no name twice
    if created:
        for future in admin.delete_topics(created, operation_timeout=30).values():
            # Best-effort cleanup: a test may have stopped the broker or deleted the topic.
            with contextlib.suppress(Exception):
                future.result(timeout=30)


# --------------------------------------------------------------------------- S3


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """An S3-compatible server on loopback; its AWS_* settings are put in this process's
    environment for the session, so that streamfeat and the workers the tests start reach it
    (``AWS_EC2_METADATA_DISABLED``: credentials are never asked of an instance-metadata
    address)."""
    endpoint = os.environ.get("STREAMFEAT_S3") or os.environ.get("AWS_ENDPOINT_URL")
    script = ROOT / "deploy" / "local" / "s3"
    started_here = False
    if endpoint:
        env = {"AWS_ENDPOINT_URL": endpoint,
               "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
               "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
               "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1")}
    else:
        started_here = not (ROOT / ".local" / "run" / "s3.pid").exists()
        done = subprocess.run([str(script), "up"], capture_output=True, text=True,
                              timeout=600, check=False)
        if done.returncode != 0:
            pytest.exit(f"deploy/local/s3 up failed:\n{done.stderr}", returncode=3)
        env = dict(line.split("=", 1) for line in done.stdout.splitlines()
                   if line.startswith("AWS_"))
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)  # would take precedence
            mp.delenv("AWS_DEFAULT_REGION", raising=False)
            for name, value in env.items():
                mp.setenv(name, value)
            yield S3(env["AWS_ENDPOINT_URL"], env)
    finally:
        if started_here and not os.environ.get("STREAMFEAT_KEEP_STACK"):
            subprocess.run([str(script), "down"], capture_output=True, timeout=60, check=False)


@pytest.fixture
def s3_bucket(s3: S3) -> Iterator[str]:
    """A new, empty bucket for this test (its name); emptied and deleted afterwards."""
    client = s3.client()
    name = "sf-" + uuid.uuid4().hex[:20]
    client.create_bucket(Bucket=name)
    yield name
    with contextlib.suppress(Exception):  # best effort: the server may hold megabytes
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"],
                                          UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys})
        client.delete_bucket(Bucket=name)
