"""Which model reads which features, as observed: counted by the readers, kept in Redis.

A reader that names its model (``Client(url, model="fraud-v3")``, a ``streamfeat serve``
request with ``model``) hands each read to a :class:`UsageRecorder`: an in-memory counter
per (topology, model, fields read), nothing sent. A background thread flushes the counts
at most every ``every_s`` seconds (default 10), and :meth:`~UsageRecorder.close` flushes
the rest: one ``MULTI`` ... ``EXEC`` round trip per flush, an ``HINCRBY`` and an ``HSET``
per (model, field) read since the last one, whatever the number of reads, never a Redis
write per read. A flush that fails is logged (once until one succeeds again) and its counts
are kept for the next one; a read never waits on it or fails because of it.

Layout (beside the topology's other ``sfmeta:{topology}:*`` keys; a topology name has no
``:`` and a model name no ``|``, so nothing collides):

- hash ``sfmeta:{topology}:usage``: ``n|{model}|{field}`` -> reads of the field by the
  model, ``t|{model}|{field}`` -> when it was last read (ms, the reader's clock; when two
  readers flush at once it may be the earlier of their times, off by up to a flush
  interval);
- set ``sfmeta:_registry:read``: the names of the topologies read with a model named
  (``_`` starts no topology name).

Imported by the client and the feature server: nothing here imports the pipeline.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from redis.exceptions import RedisError

from streamfeat.errors import ConfigError
from streamfeat.redact import redact
from streamfeat.topology.definitions import MODEL_NAME_PATTERN

__all__ = [
    "FLUSH_EVERY_S",
    "READ_SET",
    "ModelRead",
    "UsageRecorder",
    "check_model",
    "usage_key",
]

log = logging.getLogger("streamfeat.registry")

FLUSH_EVERY_S = 10.0
"""Seconds between two flushes of a recorder's counts, at most (and at close)."""
READ_SET = "sfmeta:_registry:read"
"""The set of topology names read with a model named."""

_MODEL = re.compile(f"^{MODEL_NAME_PATTERN}$")
_Key = tuple[str, str, tuple[str, ...]]


def usage_key(topology: str) -> str:
    """The hash of the reads of ``topology``'s fields by models (module docstring)."""
    return f"sfmeta:{topology}:usage"


def check_model(name: object, what: str = "model") -> str:
    """``name`` when it is a model name (``[A-Za-z0-9][A-Za-z0-9_.:/-]*``, at most 200
    characters), else a :class:`ConfigError` saying so."""
    if not isinstance(name, str) or not _MODEL.match(name):
        raise ConfigError(f"{what} {name!r} is not a model name: use letters, digits and "
                          "_ . : / - (first a letter or digit), at most 200 characters, "
                          "e.g. fraud-v3")
    return name


@dataclass(frozen=True, slots=True)
class ModelRead:
    """What the catalog holds of one model reading one field: ``reads`` so far, the last
    ``last_seen_ms`` (wall clock)."""

    model: str
    topology: str
    field: str
    reads: int
    last_seen_ms: int | None


class UsageRecorder:
    """Counts reads per (topology, model, fields) in memory, flushed to Redis in batches.

    ``connection``: the Redis to flush to (a ``redis.Redis``, thread-safe; the reader's
    own). Thread-safe: one recorder serves every thread of a reader. The flushing thread
    (a daemon) starts with the first :meth:`record`; :meth:`close` stops it and sends what
    is left: counts not flushed when the process ends without it are lost.
    """

    def __init__(self, connection: redis.Redis, *, every_s: float = FLUSH_EVERY_S) -> None:
        if every_s <= 0:
            raise ConfigError(f"the usage flush interval must be above 0 s, got {every_s}")
        self._redis = connection
        self.every_s = every_s
        self._lock = threading.Lock()
        self._counts: dict[_Key, int] = {}
        self._seen: dict[_Key, float] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failing = False
        self.flushes = 0
        """Flushes that reached Redis (for tests and the curious)."""

    def record(self, topology: str, model: str, fields: Sequence[str]) -> None:
        """Count one read of ``fields`` of ``topology`` by ``model`` (a checked name: see
        :func:`check_model`). No I/O."""
        key = (topology, model, tuple(fields))
        now = time.time()
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            self._seen[key] = now
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="streamfeat-usage",
                                                daemon=True)
                self._thread.start()

    @property
    def pending(self) -> int:
        """Reads counted and not flushed yet."""
        with self._lock:
            return sum(self._counts.values())

    def flush(self) -> bool:
        """Send the counts now, in one round trip; ``False`` when Redis failed (logged; the
        counts are kept for the next flush). Never raises a Redis error."""
        with self._lock:
            counts, seen = self._counts, self._seen
            self._counts, self._seen = {}, {}
        if not counts:
            return True
        per_field: dict[tuple[str, str, str], int] = {}
        last: dict[tuple[str, str, str], float] = {}
        for (topology, model, fields), n in counts.items():
            at = seen[(topology, model, fields)]
            for field in fields:
                k = (topology, model, field)
                per_field[k] = per_field.get(k, 0) + n
                last[k] = max(last.get(k, 0.0), at)
        try:
            pipe = self._redis.pipeline(transaction=True)
            for (topology, model, field), n in per_field.items():
                pipe.hincrby(usage_key(topology), f"n|{model}|{field}", n)
            for (topology, model, field), at in last.items():
                pipe.hset(usage_key(topology), f"t|{model}|{field}", str(int(at * 1000)))
            pipe.sadd(READ_SET, *sorted({t for t, _m, _f in per_field}))
            pipe.execute()
        except RedisError as e:
            with self._lock:  # kept: added to what came meanwhile
                for key, n in counts.items():
                    self._counts[key] = self._counts.get(key, 0) + n
                    self._seen[key] = max(self._seen.get(key, 0.0), seen[key])
            if not self._failing:
                log.warning("recording which models read which features failed: %s; the "
                            "counts are kept and sent with the next flush", redact(e))
            self._failing = True
            return False
        if self._failing:
            log.info("recording which models read which features works again")
        self._failing = False
        self.flushes += 1
        return True

    def close(self) -> None:
        """Stop the flushing thread and send what is left (one last try)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.flush()
