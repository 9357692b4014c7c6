"""Connections, without a broker (contract section 12): redaction, the Kafka properties file,
Redis URLs, the Kafka clients' log lines, and the faust runtime's translation table."""

from __future__ import annotations

import logging
import ssl
import subprocess
from pathlib import Path

import pytest

from streamfeat.connections import load_kafka_properties, parse_redis_url
from streamfeat.errors import ConfigError
from streamfeat.logs import KafkaClientLog, RateLimit
from streamfeat.redact import RedactingFormatter, is_secret, redact, redact_config, register
from streamfeat.runtime.consumers.faust_settings import (
    AIOKAFKA_SETTINGS,
    LIBRDKAFKA_ONLY,
    aiokafka_settings,
)

# Distinctive secrets: registration is process-wide, and must not mask other tests' text.
SECRET = "Zq9-unit-Secret"  # noqa: S105 - a test value


# ------------------------------------------------------------------------------ redaction


def test_url_passwords_are_masked_wherever_they_appear() -> None:
    assert redact("invalid Redis URL 'http://:s3cret@h:6379/0'") == \
        "invalid Redis URL 'http://:***@h:6379/0'"
    assert redact("rediss://app:p%40ss@redis.example:6380/0?ssl_ca_certs=/ca.pem") == \
        "rediss://app:***@redis.example:6380/0?ssl_ca_certs=/ca.pem"
    assert redact("rediss://h:6380/0?ssl_certfile=c.pem&ssl_password=kpw") == \
        "rediss://h:6380/0?ssl_certfile=c.pem&ssl_password=***"
    # addresses without a password are left alone
    for text in ("kafka://127.0.0.1:9092", "redis://127.0.0.1:6379/0", "host:9092,h2:9093",
                 "Connect to ipv4#127.0.0.1:9999 failed: Connection refused"):
        assert redact(text) == text


def test_registered_secrets_are_masked_in_any_text_and_config() -> None:
    register(SECRET)
    assert redact(f"SASL auth failed for {SECRET}, again {SECRET}") == \
        "SASL auth failed for ***, again ***"
    shown = redact_config({"sasl.password": "x" * 9, "ssl.key.password": "k" * 9,
                           "sasl.username": "app", "ssl.ca.location": "/etc/ca.pem"})
    assert shown == {"sasl.password": "***", "ssl.key.password": "***",
                     "sasl.username": "app", "ssl.ca.location": "/etc/ca.pem"}
    assert is_secret("sasl.oauthbearer.client.secret") and is_secret("sasl.jaas.config")
    assert not is_secret("sasl.username") and not is_secret("ssl.key.location")


def test_the_formatter_redacts_messages_arguments_and_tracebacks() -> None:
    register(SECRET)
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "url %s", ("redis://u:pw1@h",),
                               None)
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    text = RedactingFormatter("%(message)s").format(record)
    assert "pw1" not in text and SECRET not in text
    assert "redis://u:***@h" in text and "boom ***" in text


# ------------------------------------------------------------------------------ Kafka file


def test_kafka_properties_file_with_env_references(tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_text(
        "# a comment\n! another\n\n"
        "security.protocol = SASL_SSL\n"
        "sasl.mechanism: SCRAM-SHA-512\n"
        "sasl.username=${SF_USER}\n"
        "sasl.password=${SF_PASSWORD}\n"
        "ssl.ca.location=/etc/kafka/\\\n"
        "  ca.pem\n"
        "client.id=$${literal}\n")
    props = load_kafka_properties(path, env={"SF_USER": "app", "SF_PASSWORD": "Zq9-kafka-pw"})
    assert props == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                     "sasl.username": "app", "sasl.password": "Zq9-kafka-pw",
                     "ssl.ca.location": "/etc/kafka/ca.pem", "client.id": "${literal}"}
    assert redact("login Zq9-kafka-pw") == "login ***"  # registered when read


@pytest.mark.parametrize(("text", "message"), [
    ("sasl.password=${SF_MISSING}\n", "client.properties:1: sasl.password: the environment "
                                      "variable SF_MISSING is not set"),
    ("ok=1\ngroup.id=mine\n", "client.properties:2: group.id: streamfeat sets this itself"),
    ("error_cb=x\n", "a callback cannot come from a file"),
    ("just words\n", "client.properties:1: expected name=value"),
    ("sasl.password=${not a name}\n", "is not a variable reference"),
])
def test_kafka_properties_file_errors_name_the_line(tmp_path: Path, text: str,
                                                    message: str) -> None:
    path = tmp_path / "client.properties"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("$", r"\$")):
        load_kafka_properties(path, env={})


def test_a_missing_properties_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--kafka-config .*nope.properties: cannot read it"):
        load_kafka_properties(tmp_path / "nope.properties")


# ------------------------------------------------------------------------------ Redis URLs


def test_redis_urls_with_tls_files_acl_user_and_env(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    url = parse_redis_url(
        f"rediss://app:${{SF_REDIS_PW}}@redis.example:6380/2?ssl_ca_certs={ca}"
        "&ssl_cert_reqs=required", env={"SF_REDIS_PW": "Zq9 redis/pw"})
    assert url.tls and url.host == "redis.example" and url.port == 6380
    assert "Zq9%20redis%2Fpw" in url.url  # quoted inside the URL; redis-py unquotes it
    assert url.display == f"rediss://app:${{SF_REDIS_PW}}@redis.example:6380/2?ssl_ca_certs={ca}" \
        "&ssl_cert_reqs=required".replace("${SF_REDIS_PW}", "***")
    assert redact("auth Zq9 redis/pw failed") == "auth *** failed"
    assert parse_redis_url("redis://h").port == 6379


@pytest.mark.parametrize(("url", "message"), [
    ("http://:s3cret@h:6379/0", r"invalid Redis URL http://:\*\*\*@h:6379/0: the scheme"),
    ("redis://h:6379/0?ssl_ca_certs=/x", "ssl_ca_certs needs TLS: write rediss://"),
    ("rediss://h:6380/0?ssl_ca_certs=/no/such/ca.pem", "no such readable file"),
    ("rediss://h:6380/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
    ("rediss://h:6380/0?sll_ca_certs=x", "unknown parameter 'sll_ca_certs'"),
    ("redis://u:${SF_NOT_SET}@h", "the environment variable SF_NOT_SET is not set"),
])
def test_bad_redis_urls_are_named_without_their_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_redis_url(url, env={})
    assert "s3cret" not in str(info.value)


# ------------------------------------------------------------------------------ log lines


def test_the_kafka_clients_repeated_lines_are_rate_limited() -> None:
    now = [0.0]
    limit = RateLimit(every_s=30, clock=lambda: now[0])

    def line(text: str, name: str = "streamfeat.kafka") -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, text, None, None)

    passed = []
    for i in range(1000):  # a broker away: librdkafka's line every few ms, counters varying
        now[0] = i * 0.05
        record = line(f"Connect to ipv4#127.0.0.1:9999 failed (after {i}ms in state CONNECT)")
        if limit.filter(record):
            passed.append(record.getMessage())
    assert len(passed) == 2, passed  # the first, and one 30 s later with the count
    assert passed[1].endswith("(599 more like this in the last 30 s)"), passed[1]
    assert limit.filter(line("another kind of line"))
    for _ in range(3):  # the worker's own lines are never held back
        assert limit.filter(line("same line", name="streamfeat.worker"))
    assert limit.filter(line("x", name="aiokafka.conn")) and \
        not limit.filter(line("x", name="aiokafka.conn"))


def test_librdkafka_lines_go_to_our_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="streamfeat.kafka"):
        KafkaClientLog().log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1",
                             "Connect failed")
        KafkaClientLog(quiet=True).log(logging.ERROR, "%s", "during the start-up check")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("streamfeat.kafka", logging.WARNING, "FAIL [rdkafka#consumer-1] Connect failed"),
        ("streamfeat.kafka", logging.DEBUG, "during the start-up check")]


# ------------------------------------------------------------------------------ faust


def _certificates(tmp_path: Path, key_password: str) -> tuple[Path, Path, Path]:
    """A CA and a client certificate signed by it, its key encrypted with ``key_password``."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca_key, ca, key, csr, cert = (tmp_path / n for n in
                                  ("ca.key", "ca.pem", "client.key", "client.csr", "client.pem"))
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
        str(ca), "-days", "2", "-subj", "/CN=test CA")
    run("req", "-newkey", "rsa:2048", "-keyout", str(key), "-passout", f"pass:{key_password}",
        "-out", str(csr), "-subj", "/CN=client")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2")
    return ca, cert, key


def test_the_translation_table_carries_sasl_ssl_over_to_aiokafka(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path, "Zq9-key-pw")
    auth = aiokafka_settings({
        "bootstrap.servers": "b:9093", "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "app", "sasl.password": "pw",
        "ssl.ca.location": str(ca), "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key), "ssl.key.password": "Zq9-key-pw", "client.id": "me",
        "debug": "broker"})
    kwargs = auth.client_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                      "sasl_plain_username": "app", "sasl_plain_password": "pw",
                      "client_id": "me"}
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert "pw" not in repr(auth).replace("password", "")  # repr hides the password
    off = aiokafka_settings({"security.protocol": "SSL", "ssl.ca.location": str(ca),
                             "ssl.endpoint.identification.algorithm": "none"})
    assert off.ssl_context is not None and not off.ssl_context.check_hostname
    assert aiokafka_settings({}).client_kwargs() == {"security_protocol": "PLAINTEXT"}
    plain = aiokafka_settings({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
                               "sasl.username": "u", "sasl.password": "p"})
    assert plain.ssl_context is None and plain.sasl_mechanism == "PLAIN"
    assert set(AIOKAFKA_SETTINGS).isdisjoint(LIBRDKAFKA_ONLY)


@pytest.mark.parametrize(("props", "message"), [
    ({"fetch.max.bytes": "1", "socket.keepalive.enable": "true"},
     "fetch.max.bytes, socket.keepalive.enable cannot be carried over to the faust runtime"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"},
     "sasl.mechanism=OAUTHBEARER cannot be carried over"),
    ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"},
     "needs sasl.username and sasl.password"),
    ({"security.protocol": "TLS"}, "security.protocol=TLS: use one of"),
    ({"security.protocol": "SSL", "ssl.ca.location": "/no/such/ca.pem"},
     "ssl.ca.location=/no/such/ca.pem: cannot load the CA certificates"),
])
def test_what_cannot_be_carried_over_is_named(props: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        aiokafka_settings(props)


def test_a_wrong_key_password_is_named_not_shown(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path, "Zq9-right-pw")
    with pytest.raises(ConfigError, match="cannot load it") as info:
        aiokafka_settings({"security.protocol": "SSL", "ssl.ca.location": str(ca),
                           "ssl.certificate.location": str(cert),
                           "ssl.key.location": str(key), "ssl.key.password": "Zq9-wrong-pw"})
    assert "Zq9-wrong-pw" not in str(info.value)
