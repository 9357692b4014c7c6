"""Whether Kafka answers with the settings given, before anything starts: :func:`check_kafka`.

librdkafka retries a broker that does not answer for ever, logging each attempt, and a
client's first call waits out its whole timeout; a worker started against a wrong address
used to print ~1,300 ``Connect ... failed`` lines and die after 31 s with a traceback. Here
one admin client asks for metadata until ``timeout_s``, its log kept quiet, and what went
wrong becomes one :class:`~streamfeat.errors.ConnectError` naming the address and what to
check. Refused credentials and failed TLS handshakes end the check at once: waiting does
not mend them.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streamfeat.errors import ConfigError, ConnectError
from streamfeat.logs import KafkaClientLog
from streamfeat.redact import redact
from streamfeat.runtime.consumers.base import ConsumerSettings

__all__ = ["KAFKA_CHECK_S", "check_kafka", "describe"]

KAFKA_CHECK_S = 10.0
"""How long the start-up check waits for a broker to answer."""

_CREDENTIALS = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
_PLAINTEXT_TO_TLS = "incorrect security.protocol"
_CLOSED_AT_HELLO = "in state APIVERSION_QUERY"
"""A plaintext client on a TLS listener: the broker closes the connection at its first
request (librdkafka logs it, its error callback says only that all brokers are down)."""


class _Lines(KafkaClientLog):
    """The check client's log: kept (the failures' own words), shown at DEBUG only."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.lines: list[str] = []

    def log(self, level: int, fmt: str, *args: object) -> None:
        super().log(level, fmt, *args)
        try:
            self.lines.append(fmt % args)
        except (TypeError, ValueError):
            self.lines.append(fmt)


def describe(err: KafkaError) -> str:
    """librdkafka's text of an error, without its ``KafkaError{...}`` wrapping."""
    return redact(err.str())


def _kind(err: KafkaError) -> str | None:
    """``credentials``, ``tls`` or ``plaintext`` for an error waiting will not mend."""
    text = err.str()
    if err.code() in _CREDENTIALS or "SASL authentication" in text:
        return "credentials"
    if err.code() == KafkaError._SSL or "SSL handshake failed" in text:
        return "tls"
    if _PLAINTEXT_TO_TLS in text:
        return "plaintext"
    return None


def check_kafka(settings: ConsumerSettings, *, timeout_s: float = KAFKA_CHECK_S,
                config_file: str | None = None) -> None:
    """Kafka at ``settings.bootstrap`` answers a metadata request within ``timeout_s``, with
    the client settings of ``settings.client_config``; raises :class:`ConnectError` (or
    :class:`ConfigError` for a property librdkafka refuses) saying what to check."""
    where = f"Kafka at {redact(settings.bootstrap)}"
    source = f"--kafka-config {config_file}" if config_file else "--kafka-config"
    errors: list[KafkaError] = []
    lines = _Lines()
    config: dict[str, Any] = {
        **settings.librdkafka(), "logger": lines, "error_cb": errors.append,
        "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
    }
    try:
        admin = AdminClient(config)
    except KafkaException as exc:
        raise ConfigError(f"{source}: {describe(exc.args[0])}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {redact(exc)}") from None
    deadline = time.monotonic() + timeout_s
    last: KafkaError | None = None
    while True:
        try:
            admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            if last is None or last.code() == KafkaError._TRANSPORT:
                last = exc.args[0]
        admin.poll(0)
        for err in errors:
            kind = _kind(err)
            if kind is not None:
                raise ConnectError(_message(kind, where, err, settings, source))
            if err.code() != KafkaError._ALL_BROKERS_DOWN:
                last = err  # the broker's own words ("Connect to ... failed: refused")
        errors.clear()
        failed = [line.split(": ", 1)[-1] for line in lines.lines if " FAIL " in f" {line}"]
        plaintext = not str(settings.client_config.get("security.protocol", "plaintext")
                            ).upper().endswith("SSL")
        if plaintext and sum(_CLOSED_AT_HELLO in line for line in failed) >= 2:
            raise ConnectError(_message("plaintext", where, failed[-1], settings, source))
        if time.monotonic() >= deadline:
            said = (redact(failed[-1]) if failed else
                    describe(last) if last is not None else "no answer")
            security = (f"security.protocol in {source}" if config_file else
                        "--kafka-config FILE if the cluster needs TLS or SASL")
            raise ConnectError(
                f"cannot reach {where} within {timeout_s:g} s: {said}; check --kafka or "
                f"STREAMFEAT_KAFKA (the brokers' advertised listeners), that a broker runs "
                f"there, and {security}")


def _message(kind: str, where: str, err: KafkaError | str, settings: ConsumerSettings,
             source: str) -> str:
    said = describe(err) if isinstance(err, KafkaError) else redact(err)
    config = settings.client_config
    if kind == "credentials":
        return (f"{where} refused the credentials: {said}; check sasl.mechanism, "
                f"sasl.username and sasl.password in {source}")
    if kind == "tls":
        return (f"TLS with {where} failed: {said}; check ssl.ca.location in {source} (the CA "
                f"that signed the brokers' certificates), the client certificate if the "
                f"brokers ask for one, and that the port is a TLS listener")
    protocol = str(config.get("security.protocol", "plaintext")).upper()
    tls = sorted(k for k in config if k.startswith("ssl."))
    fix = ("set security.protocol=SSL or SASL_SSL" + (
        f" ({', '.join(tls)} given, but security.protocol is {protocol})" if tls else ""))
    return (f"{where} closed the connection at once: {said}; the listener expects TLS: "
            f"{fix} in {source}")
