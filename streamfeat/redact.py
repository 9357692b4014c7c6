"""Secrets out of every output: the one helper through which a URL or a client config is
printed (contract section 12).

Two rules, applied together by :func:`redact`:

* the password of a URL (``rediss://app:s3cret@host`` -> ``rediss://app:***@host``) and the
  value of a query parameter that names a secret (``?ssl_password=...``);
* every value registered with :func:`register` (a Kafka ``sasl.password`` read from a
  properties file, a Redis password), wherever it appears: in an error a client library
  built, a log line, a traceback, ``/health``.

Configs are shown through :func:`redact_config`, which hides the values of the properties
:func:`is_secret` names. Logging goes through :class:`RedactingFormatter` (the command line
installs it), so a record, its arguments and its traceback are redacted once formatted.

Must not import anything of streamfeat: every layer may use it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

__all__ = [
    "MASK",
    "RedactingFormatter",
    "is_secret",
    "redact",
    "redact_config",
    "register",
]

MASK = "***"

_MIN_SECRET = 4
"""Shorter values are not registered: masking every ``ab`` of every line would hide more
than it protects (and such a password protects nothing)."""

_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@?#'\"]*):(?P<password>[^\s@/'\"]*)@")
_SECRET_WORDS = ("password", "secret", "passwd", "token")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;][A-Za-z0-9_.-]*(?:" + "|".join(_SECRET_WORDS) + r")[A-Za-z0-9_.-]*=)"
    r"(?P<value>[^&\s'\"#]*)", re.IGNORECASE)

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so that a secret inside another is masked whole


def is_secret(name: str) -> bool:
    """Whether a setting of this name holds a secret (``sasl.password``, ``ssl.key.password``,
    ``sasl.oauthbearer.client.secret``, a URL's ``ssl_password`` ...)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS) or lowered.endswith(
        ("sasl.jaas.config", "ssl.key.pem", "ssl_keyfile_password"))


def register(value: str | None) -> None:
    """Treat ``value`` as a secret from now on, in this process: :func:`redact` masks it
    wherever it appears (also its percent-decoded form)."""
    global _secrets
    if not value:
        return
    found = {v for v in (value, unquote(value)) if len(v) >= _MIN_SECRET}
    with _lock:
        _secrets = tuple(sorted(set(_secrets) | found, key=len, reverse=True))


def redact(text: object) -> str:
    """``text`` (any object, as ``str()``) without URL passwords, secret query parameters and
    registered secrets."""
    out = text if isinstance(text, str) else str(text)
    if "://" in out:
        out = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", out)
    if "=" in out:
        out = _QUERY_SECRET.sub(lambda m: m["head"] + MASK, out)
    for secret in _secrets:
        if secret in out:
            out = out.replace(secret, MASK)
    return out


def redact_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a client config fit to print: secret properties' values masked, the others
    (file paths, mechanism names, URLs) redacted as text."""
    return {k: MASK if is_secret(k) and v not in (None, "") else
            (redact(v) if isinstance(v, str) else v) for k, v in config.items()}


class RedactingFormatter(logging.Formatter):
    """A formatter whose every line (message, arguments, traceback) is :func:`redact` ed."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
