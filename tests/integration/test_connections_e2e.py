"""Connections on real servers (contract section 12): a worker that cannot reach Kafka or
Redis stops within 30 s with one line naming the address; no secret in any output of a
worker (stdout, stderr, its log, /metrics, /health) or of the commands."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from streamfeat.errors import ConnectError

from harness import (
    GroupProgress,
    Workers,
    assert_redis_matches_reference,
    dead_letter_origins,
    free_port,
    get_health,
    make_topology,
    produce,
    run_to_end,
    wait_for_health,
    worker_cmd,
)
from secured import AclRedis, Certificates, Ran, SecureStack, streamfeat

pytestmark = pytest.mark.integration

# The passwords of the tests here, grepped for in every output (test values, not secrets).
SECRET = "Zq9-e2e-Secret-7c1"  # noqa: S105
KAFKA_SECRET = "Zq9-kafka-Secret-d42"  # noqa: S105


def closed_port() -> int:
    """A port where nothing listens (taken and released)."""
    return free_port()


def env_without_stack() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("STREAMFEAT_KAFKA", "STREAMFEAT_REDIS", "STREAMFEAT_KAFKA_CONFIG")}


def assert_one_clean_line(ran: Ran, *names: str) -> None:
    """Failed with one line on stderr naming ``names``: no traceback, no secret."""
    output = ran.out + ran.err
    assert ran.code != 0, output
    assert ran.seconds < 30, f"took {ran.seconds:.1f} s"
    lines = [line for line in ran.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("streamfeat: "), output
    assert "Traceback" not in output
    for name in names:
        assert name in lines[0], lines[0]
    assert SECRET not in output and KAFKA_SECRET not in output, output


def test_a_worker_that_cannot_reach_kafka_stops_at_once_saying_so(
        tmp_path: Path, redis_url: str) -> None:
    """(The check comes before either runtime starts: one runtime is enough here.)"""
    runtime = "faust"
    _topology, path = make_topology("nokafka", "nokafka-orders", tmp_path)
    port = closed_port()
    secured = redis_url.replace("redis://", f"redis://:{SECRET}@", 1)
    ran = streamfeat("worker", str(path), "--state-dir", str(tmp_path / "state"),
                     "--runtime", runtime, "--kafka", f"127.0.0.1:{port}",
                     "--redis", secured, env=env_without_stack())
    assert_one_clean_line(ran, f"cannot reach Kafka at 127.0.0.1:{port} within 10 s",
                          "Connection refused", "check --kafka")
    print(f"[{runtime}] Kafka unreachable: exit {ran.code} after {ran.seconds:.1f} s: {ran.err}")


def test_a_worker_that_cannot_reach_redis_stops_at_once_saying_so(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    _topology, path = make_topology("noredis", "noredis-orders", tmp_path)
    port = closed_port()
    ran = streamfeat("worker", str(path), "--state-dir", str(tmp_path / "state"),
                     "--kafka", kafka_bootstrap,
                     "--redis", f"redis://app:{SECRET}@127.0.0.1:{port}/0",
                     env=env_without_stack())
    assert_one_clean_line(ran, f"cannot reach Redis at 127.0.0.1:{port}",
                          f"redis://app:***@127.0.0.1:{port}/0", "check --redis")
    print(f"Redis unreachable: exit {ran.code} after {ran.seconds:.1f} s: {ran.err}")


def test_commands_name_what_they_cannot_reach_without_secrets(tmp_path: Path) -> None:
    _topology, path = make_topology("nowhere", "nowhere-orders", tmp_path)
    redis_port, kafka_port = closed_port(), closed_port()
    url = f"redis://app:{SECRET}@127.0.0.1:{redis_port}/0"
    env = {**env_without_stack(), "STREAMFEAT_REDIS": url}
    (tmp_path / "snapshots").mkdir()
    commands = (
        ["get", str(path), "u1"],
        ["registry", str(path), "--redis", url],
        ["verify", str(path), "--snapshot-dir", str(tmp_path / "snapshots")],
        ["replay", str(path), "--snapshot-dir", str(tmp_path / "snapshots"),
         "--to-redis", url],
        ["generate", "--topic", "nowhere", "--events", "1", "--kafka",
         f"127.0.0.1:{kafka_port}"],
        ["worker", str(path), "--redis", "http://:" + SECRET + "@127.0.0.1/0"],
    )
    with ThreadPoolExecutor(len(commands)) as pool:  # several wait out the 10 s check
        done = list(pool.map(lambda args: streamfeat(*args, env=env), commands))
    for ran in done:
        assert_one_clean_line(ran)
        assert f"127.0.0.1:{redis_port}" in ran.err or f"127.0.0.1:{kafka_port}" in ran.err \
            or "the scheme must be" in ran.err, ran.err


@pytest.mark.parametrize("runtime", ["faust", "kafka"])
def test_no_secret_in_any_output_of_a_worker_and_the_commands(
        tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str], unique_id: str,
        runtime: str) -> None:
    """A worker with a Redis ACL user's password (in the URL) and a Kafka properties file
    naming a password (librdkafka: ignored on a plaintext listener) runs, serves /metrics
    and /health, and so do the commands; none of their outputs holds either secret."""
    topic = new_topic("orders", partitions=2)
    _topology, path = make_topology(unique_id, topic, tmp_path)
    produce(kafka_bootstrap, topic, 2000, seed=5, entities=50, malformed_fraction=0.01)
    config = tmp_path / "client.properties"
    config.write_text("client.id=streamfeat-test\nsasl.password=${SF_TEST_KAFKA_PASSWORD}\n"
                      "sasl.username=app\n")
    with AclRedis(tmp_path / "redis", "app", SECRET) as redis:
        env = {**env_without_stack(), "STREAMFEAT_REDIS": redis.url(),
               "STREAMFEAT_KAFKA": kafka_bootstrap, "SF_TEST_KAFKA_PASSWORD": KAFKA_SECRET}
        port = free_port()
        seen: list[str] = []
        with Workers(tmp_path, env) as workers, \
                GroupProgress(kafka_bootstrap, f"streamfeat.{unique_id}", topic) as group:
            cmd = worker_cmd(
                path, tmp_path / "state", "--runtime", runtime, "--metrics-port", str(port),
                "--snapshot-dir", str(tmp_path / "snapshots"), "--snapshot-every", "1",
                "--kafka-config", str(config), "--commit-every", "0.5")
            cmd.insert(cmd.index("worker"), "-v")  # DEBUG: every line the clients say
            workers.start("worker", cmd)
            group.wait_end(timeout_s=120, workers=workers)
            wait_for_health(port, lambda code, body: code == 200 and body["ready"],
                            path="/health/ready", workers=workers)
            for view in ("/metrics", "/health", "/health/live", "/health/ready"):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{view}", timeout=5) as r:
                    seen.append(r.read().decode())
            time.sleep(1.5)  # a snapshot of everything (--snapshot-every 1), for verify
            assert workers.stop("worker") == 0, workers.log("worker")
            assert get_health(port)[0] == 0
        seen.append((tmp_path / "logs" / "worker.log").read_text(errors="replace"))
        runs = [
            streamfeat("get", str(path), "u0001", "u0002", env=env),
            streamfeat("registry", str(path), "--redis", redis.url(), env=env),
            streamfeat("verify", str(path), "--snapshot-dir",
                       str(tmp_path / "snapshots"), env=env),
            streamfeat("plan", str(path), "--state-dir", str(tmp_path / "state"),
                       "--kafka-config", str(config), env=env),
            streamfeat("replay", str(path), "--snapshot-dir",
                       str(tmp_path / "snapshots"), "--to-redis", redis.url(), "--processes",
                       "1", env=env),
            # wrong passwords, said so
            streamfeat("get", str(path), "u0001", env={**env, "STREAMFEAT_REDIS": redis.url(
                password=SECRET + "-wrong")}),
        ]
        for ran in runs[:5]:
            assert ran.code == 0, ran.out + ran.err
        assert json.loads(runs[0].out)["u0001"], runs[0].out
        assert "match rate 100.000000%" in runs[2].out, runs[2].out
        assert runs[5].code != 0 and "invalid username-password pair" in runs[5].err, runs[5].err
        for ran in runs:
            seen += [ran.out, ran.err]
    assert "streamfeat_events_consumed_total" in seen[0]
    for text in seen:
        assert SECRET not in text and KAFKA_SECRET not in text, text[-3000:]
        assert "Zq9" not in text, text[-3000:]  # not even a part of one


# ------------------------------------------------------------------------------ Redis


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates.make(tmp_path_factory.mktemp("certs"), key_password=SECRET + "-key")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory,
              certs: Certificates) -> Iterator[AclRedis]:
    """A Redis with TLS only (client certificates required) and an ACL user."""
    with AclRedis(tmp_path_factory.mktemp("tls-redis"), "streamfeat", SECRET, certs) as r:
        yield r


def test_rediss_with_ca_client_certificate_and_acl_user(
        tls_redis: AclRedis, tmp_path: Path) -> None:
    """``check`` (the start-up check) and the sink and client over TLS, ACL user and all."""
    from streamfeat.client import Client
    from streamfeat.sinks import RedisSink
    from streamfeat.sinks.redis import check

    topology, _path = make_topology("tlsredis", "tlsredis-orders", tmp_path)
    check(tls_redis.url(), timeout_s=5)
    with RedisSink(tls_redis.url(), topology) as sink:
        sink.probe(2.0)
    with Client(tls_redis.url()) as client:
        assert client.get(topology, ["nobody"])["nobody"]  # the defaults, read over TLS


def _refused(url: str) -> tuple[str, float]:
    from streamfeat.sinks.redis import check

    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        check(url, timeout_s=10)
    took = time.monotonic() - started
    message = str(info.value)
    assert SECRET not in message and "Zq9" not in message, message
    return message, took


def test_wrong_password_wrong_ca_missing_client_certificate_and_plaintext_fail_at_once(
        tls_redis: AclRedis, tmp_path: Path) -> None:
    other = Certificates.make(tmp_path / "other", key_password="x" * 8, name="other")
    cases = {
        "wrong password": (tls_redis.url(password=SECRET + "-wrong"),
                           f"Redis at {tls_redis.address} (rediss://streamfeat:***@"),
        "wrong CA": (tls_redis.url(ca=other.ca), "TLS with Redis at"),
        "no client certificate": (tls_redis.url(client_cert=False), "TLS with Redis at"),
        "plaintext to TLS": (f"redis://streamfeat:{SECRET}@{tls_redis.address}/0",
                             "the server speaks TLS: use rediss://"),
    }
    for case, (url, words) in cases.items():
        message, took = _refused(url)
        print(f"Redis {case}: {took:.2f} s: {message}")
        assert words in message, (case, message)
        assert took < 3, (case, took)  # at once: waiting would not mend it
    assert "refused the credentials" in _refused(cases["wrong password"][0])[0]
    assert "check ssl_ca_certs" in _refused(cases["wrong CA"][0])[0]


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a port too, and free: a free_port()
    above 55535 made the cluster-enabled redis-server exit at start (seen in CI)."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair (p, p + 10000) on 127.0.0.1")


def test_a_redis_cluster_is_refused_at_start(tmp_path: Path, kafka_bootstrap: str) -> None:
    import subprocess

    from streamfeat.errors import ConfigError
    from streamfeat.sinks.redis import check

    port = _cluster_port()
    log = tmp_path / "redis.log"
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
         "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf"),
         "--logfile", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                check(f"redis://127.0.0.1:{port}/0", timeout_s=1)
            except ConfigError as exc:
                assert "is a Redis Cluster (cluster_enabled:1)" in str(exc), exc
                break
            except ConnectError:
                said = log.read_text() if log.exists() else "(no log)"
                assert proc.poll() is None, f"redis-server on {port} exited:\n{said}"
                assert time.time() < deadline, f"redis-server on {port} did not start:\n{said}"
                continue
            raise AssertionError("a Redis Cluster was taken")
        _topology, path = make_topology("cluster", "cluster-orders", tmp_path)
        ran = streamfeat("worker", str(path), "--state-dir", str(tmp_path / "state"),
                         "--kafka", kafka_bootstrap, "--redis", f"redis://127.0.0.1:{port}/0",
                         env=env_without_stack())
        assert_one_clean_line(ran, "is a Redis Cluster", "use a standalone Redis")
    finally:
        proc.terminate()
        proc.wait(30)


# ------------------------------------------------------------------------------ secured stack


@pytest.fixture(scope="session")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    """A broker with a SASL_SSL listener (SCRAM-SHA-512, client certificates required) and a
    TLS-only Redis with an ACL user (``deploy/local/up`` with KAFKA_SASL_SSL_PORT and
    REDIS_TLS_PORT), started once for the tests that ask for it; the passwords it made are in
    this process's environment meanwhile, where the settings' ``${NAME}`` find them."""
    if shutil.which("java") is None or shutil.which("openssl") is None:
        pytest.skip("the secured stack needs a JDK and openssl (deploy/local/up)")
    started = time.monotonic()
    stack = SecureStack.start(tmp_path_factory.mktemp("secure-stack"))
    print(f"\nsecured stack up in {time.monotonic() - started:.1f} s")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in stack.secrets.items():
                mp.setenv(name, value)
            yield stack
    finally:
        stack.stop()


@pytest.mark.parametrize("runtime", ["faust", "kafka"])
def test_a_worker_on_sasl_ssl_kafka_and_tls_redis(
        secure_stack: SecureStack, tmp_path: Path, unique_id: str, runtime: str) -> None:
    """Consumes over SASL_SSL (SCRAM-SHA-512, mutual TLS), writes Redis over TLS as an ACL
    user, sends its dead letters over SASL_SSL; every Redis cell equals the reference and
    each late or malformed record is one dead letter; no password in its output."""
    from confluent_kafka.admin import AdminClient, NewTopic

    plain = secure_stack.plaintext  # the tests' own clients (setup and checks)
    topic = f"{unique_id}-orders"
    admin = AdminClient({"bootstrap.servers": plain})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    topology, path = make_topology(unique_id, topic, tmp_path)
    produce(plain, topic, 3000, seed=11, entities=80, events_per_second=0.5,
            late_fraction=0.01, malformed_fraction=0.01)
    started = time.monotonic()
    log = run_to_end(path, tmp_path / "state", secure_stack.sasl_ssl, secure_stack.redis_tls,
                     "--runtime", runtime, "--kafka-config", str(secure_stack.kafka_config))
    took = time.monotonic() - started
    entities, late, malformed = assert_redis_matches_reference(plain, secure_stack.redis_tls,
                                                               topology)
    letters = dead_letter_origins(plain, topic)
    assert late > 0 and malformed > 0
    assert len(letters) == len(set(letters)) == late + malformed, (len(letters), late, malformed)
    text = log.read_text(errors="replace")
    for secret in secure_stack.secrets.values():
        assert secret not in text, text[-3000:]
    print(f"[{runtime}] SASL_SSL + TLS Redis: 3000 records to the end in {took:.1f} s, "
          f"{entities} entities, {late + malformed} dead letters")


def test_kafka_wrong_password_wrong_ca_and_plaintext_fail_at_once(
        secure_stack: SecureStack, tmp_path: Path, certs: Certificates) -> None:
    good = secure_stack.kafka_config.read_text()
    variants = {
        "wrong password": (good.replace("${STREAMFEAT_KAFKA_PASSWORD}", SECRET),
                           ["refused the credentials", "SASL authentication error",
                            "check sasl.mechanism, sasl.username and sasl.password"]),
        "wrong CA": ("\n".join(line if not line.startswith("ssl.ca.location=") else
                               f"ssl.ca.location={certs.ca}" for line in good.splitlines()),
                     ["TLS with Kafka at", "certificate verify failed", "check ssl.ca.location"]),
        "plaintext to TLS": (good.replace("security.protocol=SASL_SSL\n", ""),
                             ["closed the connection at once",
                              "set security.protocol=SSL or SASL_SSL"]),
    }
    _topology, path = make_topology("secfail", "secfail-orders", tmp_path)
    env = {**env_without_stack(), **secure_stack.secrets}
    for case, (text, words) in variants.items():
        config = tmp_path / f"{case.replace(' ', '-')}.properties"
        config.write_text(text)
        for runtime in ("faust", "kafka"):
            ran = streamfeat("worker", str(path), "--state-dir", str(tmp_path / "state"),
                             "--runtime", runtime, "--kafka", secure_stack.sasl_ssl,
                             "--kafka-config", str(config), "--redis", secure_stack.redis_tls,
                             env=env)
            assert_one_clean_line(ran, f"Kafka at {secure_stack.sasl_ssl}", *words,
                                  f"--kafka-config {config}")
            assert ran.seconds < 8, (case, runtime, ran.seconds)  # at once, not after 10 s
            for secret in secure_stack.secrets.values():
                assert secret not in ran.err
            print(f"Kafka {case} [{runtime}]: exit {ran.code} after {ran.seconds:.1f} s")
