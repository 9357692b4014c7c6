"""How streamfeat's processes log: the Kafka clients' own lines through our logger, rate
limited, and every line redacted (contract section 12).

* :data:`KAFKA_LOG` is the ``logger`` given to every librdkafka client (confluent-kafka
  calls its ``log`` method): its lines go to the ``streamfeat.kafka`` logger, with the
  syslog levels librdkafka uses mapped to Python's.
* :class:`RateLimit` lets through the first of a kind of line from the Kafka clients
  (librdkafka, aiokafka, Faust) and then one per ``every_s`` with a count of those held
  back: a broker away for a minute was ~1,300 ``Connect ... failed`` lines.
* :func:`setup` is the command line's logging: one handler on stderr with both.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable

from streamfeat.redact import RedactingFormatter

__all__ = ["KAFKA_LOG", "KAFKA_LOGGER", "NOISY", "KafkaClientLog", "RateLimit", "setup"]

KAFKA_LOGGER = "streamfeat.kafka"
"""The logger of librdkafka's lines and of the Kafka clients' errors."""
NOISY = (KAFKA_LOGGER, "aiokafka", "faust", "mode", "kafka")
"""Loggers whose repeated lines are rate limited (prefixes)."""
RATE_LIMIT_S = 30.0
"""The least time between two lines of one kind from the Kafka clients."""

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


def setup(*, verbose: bool = False) -> None:
    """The command line's logging: stderr, INFO (DEBUG when ``verbose``), redacted, the
    Kafka clients' repeated lines rate limited."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
