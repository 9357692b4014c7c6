"""The faust runtime's Kafka settings: the librdkafka properties of ``--kafka-config``
carried over to Faust's client, aiokafka, through one table (:data:`AIOKAFKA_SETTINGS`).

The other clients of every runtime (the ``kafka`` runtime's consumer, the dead-letter and
repartition producers, the admin and history clients) are librdkafka's and take the file
as it is; Faust's consumer is aiokafka's, which names its settings differently and takes
TLS files through an ``ssl.SSLContext``. A property the table lacks cannot be carried over:
:func:`aiokafka_settings` refuses it by name rather than let Faust's client connect
without it.

No Faust or aiokafka here: plain settings and an ``ssl.SSLContext``, which
:mod:`.faust_app` turns into Faust's credentials.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamfeat.errors import ConfigError

__all__ = ["AIOKAFKA_SETTINGS", "LIBRDKAFKA_ONLY", "AiokafkaSettings", "aiokafka_settings"]

AIOKAFKA_SETTINGS: dict[str, str] = {
    "bootstrap.servers": "bootstrap_servers",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "ssl.ca.location": "ssl_context: cafile (capath for a directory; 'probe': the system's)",
    "ssl.ca.pem": "ssl_context: cadata",
    "ssl.certificate.location": "ssl_context: load_cert_chain certfile",
    "ssl.key.location": "ssl_context: load_cert_chain keyfile",
    "ssl.key.password": "ssl_context: load_cert_chain password",
    "ssl.endpoint.identification.algorithm": "ssl_context: check_hostname (https: on, none: off)",
    "enable.ssl.certificate.verification": "ssl_context: verify_mode (false: CERT_NONE)",
    "client.id": "client_id",
}
"""librdkafka property -> the aiokafka setting it becomes in the faust runtime."""

LIBRDKAFKA_ONLY: dict[str, str] = {
    "debug": "librdkafka's debug contexts",
    "log_level": "librdkafka's log level",
    "log.connection.close": "librdkafka's log of closed idle connections",
}
"""Diagnostics of librdkafka's clients: no counterpart in aiokafka, and none needed."""

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass
class AiokafkaSettings:
    """What Faust's client is built with (aiokafka's names)."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None
    client_id: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of an aiokafka client (``AIOKafkaClient``, ``AIOKafkaConsumer``)."""
        out: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.ssl_context is not None:
            out["ssl_context"] = self.ssl_context
        if self.sasl_mechanism is not None:
            out.update(sasl_mechanism=self.sasl_mechanism,
                       sasl_plain_username=self.sasl_plain_username,
                       sasl_plain_password=self.sasl_plain_password)
        if self.client_id is not None:
            out["client_id"] = self.client_id
        return out


def aiokafka_settings(props: Mapping[str, Any], *, source: str = "--kafka-config"
                      ) -> AiokafkaSettings:
    """``props`` (librdkafka's names) as aiokafka settings; a :class:`ConfigError` names each
    property that cannot be carried over, and a TLS file that cannot be loaded."""
    lost = sorted(k for k in props if k not in AIOKAFKA_SETTINGS and k not in LIBRDKAFKA_ONLY)
    if lost:
        raise ConfigError(
            f"{source}: {', '.join(lost)} cannot be carried over to the faust runtime "
            f"(Faust's Kafka client, aiokafka, has no such setting); remove "
            f"{'it' if len(lost) == 1 else 'them'} or run --runtime kafka. Carried over: "
            f"{', '.join(sorted(AIOKAFKA_SETTINGS))}")

    def text(name: str) -> str | None:
        value = props.get(name)
        return None if value is None else str(value).strip()

    protocol = (text("security.protocol") or "PLAINTEXT").upper()
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{source}: security.protocol={protocol}: use one of "
                          f"{', '.join(PROTOCOLS)}")
    out = AiokafkaSettings(security_protocol=protocol, client_id=text("client.id"))
    if protocol.startswith("SASL_"):
        mechanism = (text("sasl.mechanism") or text("sasl.mechanisms") or "GSSAPI").upper()
        if mechanism not in MECHANISMS:
            raise ConfigError(
                f"{source}: sasl.mechanism={mechanism} cannot be carried over to the faust "
                f"runtime (supported: {', '.join(MECHANISMS)}); run --runtime kafka")
        out.sasl_mechanism = mechanism
        out.sasl_plain_username = text("sasl.username")
        out.sasl_plain_password = None if props.get("sasl.password") is None else str(
            props["sasl.password"])
        if out.sasl_plain_username is None or out.sasl_plain_password is None:
            raise ConfigError(f"{source}: sasl.mechanism={mechanism} needs sasl.username and "
                              "sasl.password")
    if protocol.endswith("SSL"):
        out.ssl_context = _ssl_context(props, source)
    return out


def _ssl_context(props: Mapping[str, Any], source: str) -> ssl.SSLContext:
    def text(name: str) -> str | None:
        value = props.get(name)
        return None if value is None or str(value).strip() == "" else str(value).strip()

    ca = text("ssl.ca.location")
    try:
        if ca is None or ca == "probe":
            context = ssl.create_default_context(cadata=text("ssl.ca.pem"))
        elif Path(ca).is_dir():
            context = ssl.create_default_context(capath=ca)
        else:
            context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        which = "ssl.ca.pem" if ca in (None, "probe") else f"ssl.ca.location={ca}"
        raise ConfigError(f"{source}: {which}: cannot load the CA certificates ({exc})") from None
    cert, key = text("ssl.certificate.location"), text("ssl.key.location")
    if cert is not None or key is not None:
        if cert is None:
            raise ConfigError(f"{source}: ssl.key.location needs ssl.certificate.location")
        password = props.get("ssl.key.password")
        try:
            context.load_cert_chain(cert, key, None if password is None else str(password))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{source}: the client certificate ssl.certificate.location={cert}, "
                f"ssl.key.location={key}: cannot load it ({exc}); check the files and "
                "ssl.key.password") from None
    algorithm = (text("ssl.endpoint.identification.algorithm") or "https").lower()
    if algorithm not in ("https", "none"):
        raise ConfigError(f"{source}: ssl.endpoint.identification.algorithm={algorithm}: "
                          "use https or none")
    context.check_hostname = algorithm == "https"
    verify = (text("enable.ssl.certificate.verification") or "true").lower()
    if verify in ("false", "0", "no"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
