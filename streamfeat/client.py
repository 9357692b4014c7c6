"""Read features from the online store (contract section 4).

    from streamfeat.client import Client

    client = Client()                      # STREAMFEAT_REDIS or redis://localhost:6379/0
    client.get(topology, ["u1", 42], ["orders", "amount_sum__1h"])
    # {"u1": {"orders__5m": 2, "orders__1h": 5, ..., "amount_sum__1h": 120.5},
    #  "42": {"orders__5m": 0, ...}}     # never seen: the topology's defaults

Semantics:

- All entities are read in one round trip: a read-only Lua script runs ``HMGET``
  on each entity and returns all rows as one msgpack string.
- ``features`` names Redis fields (``orders__1h``) or feature names (``orders``,
  meaning every window of it); ``None`` means every field of the topology.
  Each result maps every requested field to its value.
- An entity never written (or expired) gets the topology's ``defaults`` for
  the fields that have one and ``None`` for the rest.
- A field absent from a stored entity is ``None`` (an aggregation over no
  events is absent); defaults are *not* applied there, because the entity's
  absence of a value is itself the served value.
- The reserved fields ``_asof``, ``_updated`` and ``_v`` are not mixed into the
  values; :meth:`Client.get_with_meta` returns them alongside.

Fetch latency (optional): given ``metrics=`` a ``prometheus_client`` registry (the
default ``prometheus_client.REGISTRY`` or the model server's own), every read is timed
into the histogram ``streamfeat_client_fetch_seconds{topology}`` and a failed one counted
in ``streamfeat_client_fetch_errors_total{topology}``; clients given one registry share
its metrics.

Model dependencies (optional): given ``model="fraud-v3"``, the client counts which fields of
which topology the model reads, in memory, and sends the counts to the registry in Redis in
one batch at most every ``usage_every_s`` seconds (default 10) and at :meth:`Client.close`
(:class:`streamfeat.registry.UsageRecorder`): never a Redis write per read, and a failed
flush is logged, never raised into a read. ``streamfeat registry --model fraud-v3`` then
lists what the model reads, ``--feature X`` the models that would break if ``X`` changed.
Close the client (or use it as a context manager) to send the last counts.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import redis
from redis.exceptions import RedisError

from streamfeat.config import DEFAULT_REDIS, resolve_redis
from streamfeat.errors import ConfigError, SinkError
from streamfeat.registry.usage import FLUSH_EVERY_S, UsageRecorder, check_model
from streamfeat.sinks.redis import LuaScript, connect
from streamfeat.sinks.values import decode_value
from streamfeat.topology.definitions import (
    ASOF_FIELD,
    UPDATED_FIELD,
    VERSION_FIELD,
    TopologyDef,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = [
    "DEFAULT_REDIS_URL",
    "READ_SCRIPT",
    "Client",
    "EntityFeatures",
    "ReadPlan",
    "plan_read",
    "resolve_fields",
]

DEFAULT_REDIS_URL = DEFAULT_REDIS
_META = (VERSION_FIELD, ASOF_FIELD, UPDATED_FIELD)
_CHUNK = 1000  # entities per script call; all calls of one read share one round trip

#: The read, one ``EVALSHA`` per chunk of entities (:meth:`ReadPlan.calls`).
#: KEYS: entity hashes; ARGV: the fields to read. Returns msgpack: one HMGET reply
#: per key (``false`` for an absent field). One msgpack string parses far faster
#: than thousands of RESP replies, which dominate a pipeline of HMGETs.
READ_SCRIPT = """
local CHUNK = 4000
local n = #ARGV
local out = {}
for k = 1, #KEYS do
  if n <= CHUNK then
    out[k] = redis.call('HMGET', KEYS[k], unpack(ARGV))
  else
    local row = {}
    local i = 1
    while i <= n do
      local j = math.min(i + CHUNK - 1, n)
      local part = redis.call('HMGET', KEYS[k], unpack(ARGV, i, j))
      for x = 1, #part do row[i + x - 1] = part[x] end
      i = j + 1
    end
    out[k] = row
  end
end
return cmsgpack.pack(out)
"""
_ROWS = msgspec.msgpack.Decoder(list[list[str | bool]])


@dataclass(frozen=True, slots=True)
class EntityFeatures:
    """One entity as read by :meth:`Client.get_with_meta`.

    ``found`` is False for an entity never written (or expired); its ``values``
    are then the topology's defaults and the meta fields are ``None``.
    ``asof_ms``: event time the values are as of; ``updated_ms``: wall-clock time
    of the write (Redis server clock); ``version``: the ``_v`` text.
    """

    entity_id: str
    values: dict[str, Any]
    found: bool
    asof_ms: int | None = None
    updated_ms: int | None = None
    version: str | None = None


class Client:
    """Reads feature values of many entities in one round trip.

    ``redis_url``: ``None`` -> env ``STREAMFEAT_REDIS`` -> ``redis://localhost:6379/0``.
    ``connection``: a ready ``redis.Redis`` client to use instead (then ``redis_url``
    is ignored). No connection is made until the first read.
    ``metrics``: a ``prometheus_client`` registry to time every read into (see the
    module docstring); ``None``, the default, records nothing.
    ``model``: the name of the model reading (``fraud-v3``: letters, digits, ``_ . : / -``),
    for the registry's model dependencies (module docstring); ``None``, the default,
    records nothing. ``usage_every_s``: seconds between two flushes of its counts, at most.
    """

    def __init__(
        self, redis_url: str | None = None, *, connection: redis.Redis | None = None,
        metrics: CollectorRegistry | None = None, model: str | None = None,
        usage_every_s: float = FLUSH_EVERY_S,
    ) -> None:
        self.model = None if model is None else check_model(model)
        if connection is not None:
            self._redis = connection
            self._owns_client = False
        else:
            url = resolve_redis(redis_url)
            self._redis = connect(url)
            self._owns_client = True
        self._loaded: dict[str, tuple[int, TopologyDef]] = {}
        self._script = LuaScript(READ_SCRIPT)
        self._fetch = None if metrics is None else _fetch_metrics(metrics)
        self._usage = None if model is None else UsageRecorder(self._redis,
                                                               every_s=usage_every_s)

    def get(
        self,
        topology: TopologyDef | str | os.PathLike[str],
        entity_ids: Sequence[str | int],
        features: Sequence[str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """``{entity_id: {field: value}}`` for every entity (ids as text) and requested field.

        Raises :class:`ConfigError` for a feature the topology does not have and
        :class:`SinkError` when Redis cannot be reached.
        """
        return {eid: e.values for eid, e in self.get_with_meta(topology, entity_ids,
                                                              features).items()}

    def get_with_meta(
        self,
        topology: TopologyDef | str | os.PathLike[str],
        entity_ids: Sequence[str | int],
        features: Sequence[str] | None = None,
    ) -> dict[str, EntityFeatures]:
        """Like :meth:`get`, with ``found``, ``_asof``, ``_updated`` and ``_v`` of each entity."""
        read = plan_read(self._topology(topology), entity_ids, features)
        if not read.ids:
            return {}
        started = time.perf_counter()
        try:
            replies = self._script.run(self._redis, read.calls(), raw=True)
        except RedisError as e:
            if self._fetch is not None:
                self._fetch[1].labels(read.topology.name).inc()
            raise read.error(e) from e
        out = read.decode(replies)
        if self._fetch is not None:
            self._fetch[0].labels(read.topology.name).observe(time.perf_counter() - started)
        if self._usage is not None and self.model is not None:
            self._usage.record(read.topology.name, self.model, read.fields)
        return out

    def close(self) -> None:
        """Send the model's last read counts (with ``model=``), then close the connection
        pool if this client created it."""
        if self._usage is not None:
            self._usage.close()
        if self._owns_client:
            self._redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _topology(self, topology: TopologyDef | str | os.PathLike[str]) -> TopologyDef:
        if isinstance(topology, TopologyDef):
            return topology
        path = Path(topology).resolve()
        try:
            mtime = path.stat().st_mtime_ns
        except OSError as e:
            raise ConfigError(f"cannot read topology {str(topology)!r}: {e}") from None
        cached = self._loaded.get(str(path))
        if cached is not None and cached[0] == mtime:
            return cached[1]
        # Imported here: the loader is heavier than the client and optional for it.
        loader = importlib.import_module("streamfeat.topology").load_topology
        topo = loader(path)
        if not isinstance(topo, TopologyDef):
            raise TypeError(f"load_topology returned {type(topo).__name__}, not TopologyDef")
        self._loaded[str(path)] = (mtime, topo)
        return topo


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """One read of many entities: the script calls to send, and how to decode their replies.

    The whole read path of :class:`Client` but the I/O, so that another reader (the HTTP
    feature server, ``streamfeat.serving``) sends the same calls over its own connection
    and serves exactly the values the client would. Build it with :func:`plan_read`.
    """

    topology: TopologyDef
    fields: list[str]
    """The Redis fields read, in order (:func:`resolve_fields`)."""
    ids: list[str]
    """The entity ids as text, in order, without duplicates."""

    def calls(self) -> list[tuple[list[str], list[str]]]:
        """``(KEYS, ARGV)`` of each :data:`READ_SCRIPT` call; all go in one round trip."""
        wanted = [*self.fields, *_META]
        topo, ids = self.topology, self.ids
        return [([topo.redis_key(eid) for eid in ids[i : i + _CHUNK]], wanted)
                for i in range(0, len(ids), _CHUNK)]

    def decode(self, replies: Sequence[bytes]) -> dict[str, EntityFeatures]:
        """Each entity's values from the calls' raw replies (one msgpack string per call):
        the stored values decoded, ``None`` for an absent field, the topology's defaults
        (``None`` where it has none) for an entity never written or expired."""
        rows: list[list[str | bool]] = [row for r in replies for row in _ROWS.decode(r)]
        fields = self.fields
        n = len(fields)
        defaults = self.topology.defaults
        out: dict[str, EntityFeatures] = {}
        for eid, row in zip(self.ids, rows, strict=True):
            v, asof, updated = row[n], row[n + 1], row[n + 2]
            if not isinstance(v, str):  # no _v: never written, or expired
                out[eid] = EntityFeatures(eid, {f: defaults.get(f) for f in fields}, False)
                continue
            values = {f: decode_value(text) if isinstance(text, str) else None
                      for f, text in zip(fields, row, strict=False)}
            out[eid] = EntityFeatures(
                eid,
                values,
                True,
                int(asof) if isinstance(asof, str) else None,
                int(updated) if isinstance(updated, str) else None,
                v,
            )
        return out

    def error(self, cause: Exception) -> SinkError:
        """The error to raise when Redis failed this read."""
        return SinkError(
            f"reading {len(self.ids)} entities of topology {self.topology.name!r} from Redis "
            f"failed: {cause}. Check that Redis is reachable (STREAMFEAT_REDIS)."
        )


def plan_read(
    topology: TopologyDef,
    entity_ids: Sequence[str | int],
    features: Sequence[str] | None = None,
) -> ReadPlan:
    """The read of ``features`` (see :func:`resolve_fields`) of ``entity_ids`` (as text,
    duplicates dropped). Raises :class:`ConfigError` for a feature the topology lacks."""
    fields = resolve_fields(topology, features)
    return ReadPlan(topology, fields, list(dict.fromkeys(str(e) for e in entity_ids)))


def resolve_fields(topology: TopologyDef, features: Sequence[str] | None) -> list[str]:
    """The Redis fields that ``features`` names, in order, without duplicates.

    Each name is a field (``orders__1h``) or a feature name (every window of it).
    """
    all_fields = topology.redis_fields()
    if features is None:
        return all_fields
    known = set(all_fields)
    by_feature = {f.name: [f.redis_field(w) for w in f.windows] for f in topology.features}
    out: dict[str, None] = {}
    for name in features:
        if name in known:
            out[name] = None
        elif name in by_feature:
            out.update(dict.fromkeys(by_feature[name]))
        else:
            raise ConfigError(
                f"topology {topology.name!r} has no feature or field {name!r}; "
                f"features: {', '.join(sorted(by_feature))}"
            )
    return list(out)


#: Buckets of ``streamfeat_client_fetch_seconds``: a read of a few entities takes well
#: under a millisecond on a nearby Redis, a large batch or a busy one tens of them.
FETCH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, 2.5)
_fetch_lock = threading.Lock()
_fetch_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Histogram, Counter]] = \
    weakref.WeakKeyDictionary()


def _fetch_metrics(registry: CollectorRegistry) -> tuple[Histogram, Counter]:
    """The fetch histogram and error counter in ``registry``, created once per registry."""
    from prometheus_client import Counter, Histogram

    with _fetch_lock:
        found = _fetch_by_registry.get(registry)
        if found is None:
            found = (
                Histogram("streamfeat_client_fetch_seconds",
                          "Time of one Client read of many entities (one Redis round trip, "
                          "decoding included)", ["topology"], buckets=FETCH_BUCKETS,
                          registry=registry),
                Counter("streamfeat_client_fetch_errors",
                        "Client reads that failed (Redis unreachable or refusing)",
                        ["topology"], registry=registry))
            _fetch_by_registry[registry] = found
        return found
