"""How streamfeat reaches Kafka and Redis (contract section 12): read and checked here, used
by the clients of every runtime and command.

* Kafka client settings: a properties file in librdkafka's names (``--kafka-config FILE``,
  env ``STREAMFEAT_KAFKA_CONFIG``), ``${ENV_VAR}`` references allowed, so that secrets
  need not be written in it: :func:`load_kafka_properties`, :func:`resolve_kafka_config`.
* Redis URLs: ``redis://`` and ``rediss://`` (TLS) with an ACL user and password in the
  URL, TLS files as query parameters (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
  ``ssl_password``, ``ssl_cert_reqs``, ``ssl_check_hostname``), ``${ENV_VAR}`` references
  allowed: :func:`parse_redis_url`.

Every secret read here (a password in a URL or a file, however written) is registered with
:mod:`streamfeat.redact`, so no output of this process shows it.

Pure: no Kafka or Redis client is imported here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from streamfeat.errors import ConfigError
from streamfeat.redact import is_secret, redact, register

__all__ = [
    "KAFKA_CONFIG_ENV",
    "MANAGED_KAFKA_PROPERTIES",
    "REDIS_TLS_PARAMETERS",
    "RedisURL",
    "expand_env",
    "load_kafka_properties",
    "parse_redis_url",
    "resolve_kafka_config",
]

KAFKA_CONFIG_ENV = "STREAMFEAT_KAFKA_CONFIG"

MANAGED_KAFKA_PROPERTIES = {
    "group.id": "the consumer group is --group (default: from the topology names)",
    "group.instance.id": "static membership is --instance-id",
    "enable.auto.commit": "offsets are stored with the state, never auto-committed",
    "enable.auto.offset.store": "offsets are stored with the state",
    "auto.offset.reset": "a partition without state is read from its first record",
    "enable.partition.eof": "set by each client as it needs",
    "enable.idempotence": "the dead-letter and repartition producers are always idempotent",
    "transactional.id": "streamfeat uses no Kafka transactions",
    "partitioner": "re-keyed records are partitioned as Kafka's Java clients do (murmur2)",
}
"""Properties streamfeat sets itself on its clients, with the reason (refused in a file)."""

_ENV_REF = re.compile(r"\$(\$)?\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand_env(text: str, where: str, *, env: Mapping[str, str] | None = None,
               quoted: bool = False) -> str:
    """``text`` with each ``${NAME}`` replaced by the environment variable ``NAME``
    (``$${`` stands for a literal ``${``). ``quoted``: percent-encode the values (inside a
    URL). A variable not set is a :class:`ConfigError` naming it and ``where``."""
    environ = os.environ if env is None else env

    def one(m: re.Match[str]) -> str:
        if m[1]:  # $${...}: literal
            return "${" + m[2] + "}"
        name = m[2]
        if not _ENV_NAME.fullmatch(name):
            raise ConfigError(f"{where}: ${{{name}}} is not a variable reference; write "
                              "${NAME} with NAME an environment variable")
        value = environ.get(name)
        if value is None:
            raise ConfigError(f"{where}: the environment variable {name} is not set; "
                              f"set it, or write the value instead of ${{{name}}}")
        return quote(value, safe="") if quoted else value

    return _ENV_REF.sub(one, text) if "${" in text else text


# ---------------------------------------------------------------------------------- Kafka


def load_kafka_properties(path: str | Path, *,
                          env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The librdkafka properties of a file: ``name=value`` (or ``name: value``) per line,
    ``#`` and ``!`` comments, a line ending in ``\\`` continued on the next; ``${NAME}``
    replaced from the environment. Secret values are registered for redaction. Properties
    streamfeat sets itself (:data:`MANAGED_KAFKA_PROPERTIES`) are refused, naming the line.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--kafka-config {file}: cannot read it ({exc.strerror or exc}); "
                          f"give a properties file in librdkafka's names") from None
    props: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        first = i + 1
        line = lines[i].strip()
        i += 1
        while line.endswith("\\") and (len(line) - len(line.rstrip("\\"))) % 2 == 1 \
                and i < len(lines):
            line = line[:-1] + lines[i].strip()
            i += 1
        if not line or line[0] in "#!":
            continue
        cut = [p for p in (line.find("="), line.find(":")) if p > 0]
        if not cut:
            raise ConfigError(f"{file}:{first}: expected name=value, got {redact(line)!r}")
        name, value = line[:min(cut)].strip(), line[min(cut) + 1:].strip()
        where = f"{file}:{first}: {name}"
        if name in MANAGED_KAFKA_PROPERTIES:
            raise ConfigError(f"{where}: streamfeat sets this itself "
                              f"({MANAGED_KAFKA_PROPERTIES[name]}); remove the line")
        if name.endswith("_cb") or name in ("logger", "on_delivery"):
            raise ConfigError(f"{where}: a callback cannot come from a file; remove the line")
        value = expand_env(value, where, env=env)
        if is_secret(name):
            register(value)
        props[name] = value
    return props


def resolve_kafka_config(flag: str | None = None) -> tuple[dict[str, str], str | None]:
    """``--kafka-config FILE``, then ``STREAMFEAT_KAFKA_CONFIG``: (its properties, the file);
    ``({}, None)`` when neither is given."""
    path = flag or os.environ.get(KAFKA_CONFIG_ENV) or None
    if path is None:
        return {}, None
    return load_kafka_properties(path), str(path)


# ---------------------------------------------------------------------------------- Redis

REDIS_TLS_PARAMETERS = {
    "ssl_ca_certs": "file", "ssl_ca_path": "dir", "ssl_certfile": "file",
    "ssl_keyfile": "file", "ssl_password": "secret", "ssl_cert_reqs": "choice",
    "ssl_check_hostname": "bool", "ssl_min_version": "text", "ssl_ciphers": "text",
}
"""Query parameters of a ``rediss://`` URL (redis-py's ``SSLConnection`` arguments)."""
_REDIS_PARAMETERS = {
    "db", "socket_timeout", "socket_connect_timeout", "socket_keepalive", "health_check_interval",
    "max_connections", "protocol", "client_name",
}
_CERT_REQS = ("none", "optional", "required")


@dataclass(frozen=True)
class RedisURL:
    """A Redis URL as given (``text``, to show: :attr:`display`) and as connected to
    (``url``, its ``${NAME}`` references replaced)."""

    text: str
    url: str
    host: str
    port: int | None
    tls: bool

    @property
    def display(self) -> str:
        """The URL fit to print: its password and secret parameters masked."""
        return redact(self.text)

    @property
    def address(self) -> str:
        """``host:port`` (or the socket path): what a message names."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.display


def parse_redis_url(text: str, *, env: Mapping[str, str] | None = None) -> RedisURL:
    """A Redis URL checked before any connection: the scheme, the query parameters
    (:data:`REDIS_TLS_PARAMETERS` only with ``rediss://``), the TLS files readable. The
    password and ``ssl_password`` are registered for redaction, as given and as expanded."""
    shown = redact(text)
    url = expand_env(text, f"Redis URL {shown}", env=env, quoted=True)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"invalid Redis URL {shown}: the scheme must be redis:// or "
                          "rediss:// (TLS), e.g. rediss://user:password@host:6380/0")
    if parts.password:
        register(parts.password)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"invalid Redis URL {shown}: the port is not a number") from None
    host = parts.path if scheme == "unix" else (parts.hostname or "")
    if not host:
        raise ConfigError(f"invalid Redis URL {shown}: no host; e.g. redis://host:6379/0")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        kind = REDIS_TLS_PARAMETERS.get(name)
        if kind is None and name not in _REDIS_PARAMETERS:
            others = ", ".join(sorted(_REDIS_PARAMETERS))
            raise ConfigError(
                f"Redis URL {shown}: unknown parameter {name!r}; TLS (rediss:// only): "
                f"{', '.join(REDIS_TLS_PARAMETERS)}; others: {others}")
        if kind is None:
            continue
        if scheme != "rediss":
            raise ConfigError(f"Redis URL {shown}: {name} needs TLS: write rediss://")
        value = unquote(value)
        if kind == "secret":
            register(value)
        elif kind in ("file", "dir"):
            path = Path(value)
            ok = path.is_file() if kind == "file" else path.is_dir()
            if not ok or not os.access(path, os.R_OK):
                raise ConfigError(f"Redis URL {shown}: {name}={value}: no such readable "
                                  f"{'file' if kind == 'file' else 'directory'}")
        elif kind == "choice" and value.lower() not in _CERT_REQS:
            raise ConfigError(f"Redis URL {shown}: {name} must be one of {', '.join(_CERT_REQS)}")
    if scheme == "unix":
        return RedisURL(text, url, host, None, False)
    return RedisURL(text, url, host, port or 6379, scheme == "rediss")
