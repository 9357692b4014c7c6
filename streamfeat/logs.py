"""How streamfeat's processes log: the Kafka clients' own lines through our logger, rate
limited, and every line redacted (contract section 12).

* :data:`KAFKA_LOG` is the ``logger`` given to every librdkafka client (confluent-kafka
  calls its ``log`` method): its lines go to the ``streamfeat.kafka`` logger, with the
  syslog levels librdkafka uses mapped to Python's.
* :class:`RateLimit` lets through the first of a kind of line from the Kafka clients
  (librdkafka, aiokafka, Faust) and then one per ``every_s`` with a count of those held
  back: a broker away for a minute was ~1,300 ``Connect ... failed`` lines.
* :class:`KnownNoise` drops the few lines the Kafka clients log on every healthy start
  (Faust's ``Missing sensor state for rebalance #1``): they say nothing to an operator and
  read like a fault. Shown again with ``-v``.
* :class:`JsonFormatter` writes one JSON object per line (``--log-format json``): ``ts``,
  ``level``, ``logger``, ``message`` and, with a traceback, ``exc``; redacted like the text.
* :func:`setup` is the command line's logging: one handler on stderr with all of them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from streamfeat.redact import RedactingFormatter, redact

__all__ = [
    "KAFKA_LOG",
    "KAFKA_LOGGER",
    "LOG_FORMATS",
    "NOISY",
    "JsonFormatter",
    "KafkaClientLog",
    "KnownNoise",
    "RateLimit",
    "setup",
]

KAFKA_LOGGER = "streamfeat.kafka"
"""The logger of librdkafka's lines and of the Kafka clients' errors."""
NOISY = (KAFKA_LOGGER, "aiokafka", "faust", "mode", "kafka")
"""Loggers whose repeated lines are rate limited (prefixes)."""
RATE_LIMIT_S = 30.0
"""The least time between two lines of one kind from the Kafka clients."""

LOG_FORMATS = ("text", "json")
"""The formats of ``--log-format``: ``text`` lines for people, ``json`` lines for collectors."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

KNOWN_NOISE: tuple[tuple[str, str], ...] = (
    # (logger prefix, text in the line): Faust looks for the sensor state of a rebalance it
    # started itself; the worker's assignments go their own way, so every start has none.
    ("faust", "Missing sensor state for rebalance"),
)
"""Lines below ERROR that every healthy start logs, dropped unless ``-v``."""

_DIGITS = re.compile(r"\d+")


class RateLimit(logging.Filter):
    """Lets through a line of one kind (logger, level, text with its numbers masked) at most
    once per ``every_s``; the next one let through says how many were held back. Lines of
    loggers outside ``prefixes`` pass untouched."""

    def __init__(self, prefixes: tuple[str, ...] = NOISY, every_s: float = RATE_LIMIT_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.every_s = every_s
        self.clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}  # -> last, held back

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if not any(name == p or name.startswith(p + ".") for p in self.prefixes):
            return True
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let logging report it
            return True
        kind = (name, record.levelno, _DIGITS.sub("#", text)[:300])
        now = self.clock()
        with self._lock:
            last, held = self._kinds.get(kind, (float("-inf"), 0))
            if now - last < self.every_s:
                self._kinds[kind] = (last, held + 1)
                return False
            self._kinds[kind] = (now, 0)
            if len(self._kinds) > 10_000:  # kinds of long ago: forget them
                self._kinds = {k: v for k, v in self._kinds.items()
                               if now - v[0] < self.every_s}
        if held:
            record.msg, record.args = (f"{text} ({held} more like this in the last "
                                       f"{now - last:.0f} s)"), None
        return True


class KafkaClientLog:
    """The ``logger`` of every librdkafka client: its lines go to :data:`KAFKA_LOGGER`.

    confluent-kafka calls ``log(level, fmt, *args)`` with a Python level (as it would a
    ``logging.Logger``'s); a connection refused is logged as an error by librdkafka, but
    the worker reports and retries it itself (``/health``), so those are warnings here.
    ``quiet``: every line at DEBUG (a client whose failures are reported otherwise).
    """

    def __init__(self, name: str = KAFKA_LOGGER, *, quiet: bool = False) -> None:
        self.logger = logging.getLogger(name)
        self.quiet = quiet

    def log(self, level: int, fmt: str, *args: object) -> None:
        if self.quiet:
            level = logging.DEBUG
        elif level >= logging.ERROR:
            level = logging.WARNING
        self.logger.log(level, fmt, *args)


KAFKA_LOG = KafkaClientLog()


class KnownNoise(logging.Filter):
    """Drops the lines of :data:`KNOWN_NOISE` (below ERROR): what every healthy start logs."""

    def __init__(self, noise: tuple[tuple[str, str], ...] = KNOWN_NOISE) -> None:
        super().__init__()
        self.noise = noise

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        name = record.name
        for prefix, text in self.noise:
            if (name == prefix or name.startswith(prefix + ".")) and text in str(record.msg):
                return False
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601, ms), ``level``, ``logger``,
    ``message`` and, when the record carries one, ``exc`` (the traceback text). Every
    value is redacted, as the text lines are."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on whatever ``sys.stderr`` is when a line is written: a progress bar that
    takes over stderr (rich's ``redirect_stderr``) then shows the lines above itself."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def setup(*, verbose: bool = False, fmt: str = "text") -> None:
    """The command line's logging: stderr, INFO (DEBUG when ``verbose``), redacted, the
    Kafka clients' repeated lines rate limited, the known start-up noise dropped (kept with
    ``verbose``); ``fmt`` is one of :data:`LOG_FORMATS`."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(LOG_FORMATS)}")
    handler = _Stderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else RedactingFormatter(TEXT_FORMAT))
    handler.addFilter(RateLimit())
    if not verbose:
        handler.addFilter(KnownNoise())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
