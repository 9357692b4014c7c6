"""The catalog every worker and command shares, in Redis beside the features.

Each worker records, at start, the version of each topology it runs
(:meth:`SharedCatalog.record`, one script call per topology, atomic): a version not seen
before is appended to the topology's history with its document
(:func:`~streamfeat.registry.versions.version_document`); one seen before (a restart, another
worker of the group, another host) only moves its last deployment time, its generation and
host and its count of starts. ``streamfeat registry`` reads it back, from any host.

Layout (outside ``sf:{topology}:*``, beside the topology's ``sfmeta:{topology}:partial``,
``:baseline``, ``:monitor`` and ``:usage``; topology names have no ``:`` and never start
with ``_``, so no two topologies' keys, nor the registry's own, collide):

- hash ``sfmeta:{topology}:registry``: ``versions`` (how many), ``current`` (the version
  started last), ``digest:{digest}`` -> its version number, and per version ``N``:
  ``v:N`` (the document, JSON), ``v:N:digest``, ``v:N:first`` and ``v:N:last`` (first and
  last start, ms, Redis's clock), ``v:N:starts``, ``v:N:generation`` and ``v:N:host`` (of
  the last start);
- set ``sfmeta:_registry:topologies``: the names of the topologies recorded.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisError

from streamfeat.connections import parse_redis_url
from streamfeat.errors import ConfigError, SinkError
from streamfeat.redact import redact
from streamfeat.registry.marks import parse_marks
from streamfeat.registry.usage import READ_SET, ModelRead, usage_key
from streamfeat.registry.versions import document_digest, version_document
from streamfeat.sinks.redis import LuaScript, connect, partial_key
from streamfeat.topology import TopologyDef

__all__ = [
    "TOPOLOGY_SET",
    "Deployment",
    "SharedCatalog",
    "TopologyHistory",
    "catalog_key",
    "record_deployments",
]

log = logging.getLogger("streamfeat.registry")

TOPOLOGY_SET = "sfmeta:_registry:topologies"
"""The set of the names of the topologies the catalog records."""

#: the shortest digest prefix that names a version: "9" or "4b" would be ambiguous
#: with version numbers and with each other as versions accrue
MIN_DIGEST_PREFIX = 4

#: KEYS: the topology's catalog hash, the set of names. ARGV: topology, digest, document,
#: generation, host. Returns {version, 1 when new, now in ms}.
RECORD_SCRIPT = """
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local n = redis.call('HGET', KEYS[1], 'digest:' .. ARGV[2])
local new = 0
if not n then
  n = tostring(redis.call('HINCRBY', KEYS[1], 'versions', 1))
  redis.call('HSET', KEYS[1], 'digest:' .. ARGV[2], n, 'v:' .. n, ARGV[3],
             'v:' .. n .. ':digest', ARGV[2], 'v:' .. n .. ':first', now)
  new = 1
end
redis.call('HSET', KEYS[1], 'current', n, 'v:' .. n .. ':last', now,
           'v:' .. n .. ':generation', ARGV[4], 'v:' .. n .. ':host', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'v:' .. n .. ':starts', 1)
redis.call('SADD', KEYS[2], ARGV[1])
return {tonumber(n), new, now}
"""
_RECORD = LuaScript(RECORD_SCRIPT)


def catalog_key(topology: str) -> str:
    """The hash of ``topology``'s versions (module docstring)."""
    return f"sfmeta:{topology}:registry"


@dataclass(frozen=True)
class Deployment:
    """One version of a topology as recorded: its number (1, 2, ... in the order first
    deployed), digest, document, first and last start (ms), starts, and the generation
    and host of the last start."""

    topology: str
    version: int
    digest: str
    document: dict[str, Any]
    first_ms: int
    last_ms: int
    starts: int
    generation: int
    host: str

    @property
    def definition(self) -> str:
        return str(self.document["topology"].get("definition", ""))


@dataclass(frozen=True)
class TopologyHistory:
    """Every recorded version of a topology; ``current`` is the number of the last one
    started."""

    name: str
    versions: list[Deployment]
    current: int

    @property
    def latest(self) -> Deployment:
        """The version started last."""
        return next((v for v in self.versions if v.version == self.current), self.versions[-1])

    def version(self, ref: str) -> Deployment:
        """The version ``ref`` names: its number (``3``, ``v3``), its digest or a prefix of
        it (at least :data:`MIN_DIGEST_PREFIX` characters, as git asks), or ``current``;
        otherwise a :class:`ConfigError` listing those there are. Text of digits is a
        version number when there is a version of that number, otherwise a digest prefix,
        so a short number that is no version ("9") is refused, never read as a prefix."""
        text = ref.strip()
        if text == "current":
            return self.latest
        number = text[1:] if text[:1] in "vV" and text[1:].isdigit() else text
        found = [v for v in self.versions if v.version == int(number)] if number.isdigit() else []
        if not found and len(text) >= MIN_DIGEST_PREFIX:
            # a digest prefix may be all digits ("492889"): one that is not a version
            # number is read as a prefix
            found = [v for v in self.versions if v.digest.startswith(text)]
        if len(found) == 1:
            return found[0]
        known = ", ".join(f"{v.version} ({v.digest})" for v in self.versions)
        what = "names several" if found else "is not"
        raise ConfigError(f"{ref!r} {what} a version of topology {self.name!r}; versions: "
                          f"{known} (a number, a digest or a prefix of it of at least "
                          f"{MIN_DIGEST_PREFIX} characters, or current)")


class SharedCatalog:
    """The shared catalog in the Redis at ``url`` (``redis://`` or ``rediss://``, as for
    the worker). Every Redis failure is a :class:`SinkError` naming the address."""

    def __init__(self, url: str) -> None:
        self._target = parse_redis_url(url)
        self._redis: redis.Redis = connect(self._target)

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> SharedCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _failed(self, what: str, e: RedisError) -> SinkError:
        return SinkError(f"{what} in Redis at {self._target.address} ({self._target.display}) "
                         f"failed: {redact(e)}; check --redis (or STREAMFEAT_REDIS)")

    # ----------------------------------------------------------------- writing
    def record(self, topologies: Sequence[TopologyDef], generation: int,
               host: str | None = None) -> list[tuple[int, bool]]:
        """Record a start of ``topologies`` (one round trip): per topology, its version
        number and whether it is new."""
        host = host or socket.gethostname()
        calls: list[tuple[Sequence[str], Sequence[str | bytes]]] = []
        for t in topologies:
            doc = version_document(t)
            calls.append(([catalog_key(t.name), TOPOLOGY_SET],
                          [t.name, document_digest(doc), json.dumps(doc, sort_keys=True),
                           str(generation), host]))
        try:
            replies = _RECORD.run(self._redis, calls)
        except RedisError as e:
            raise self._failed("recording the topologies' versions", e) from None
        return [(int(r[0]), bool(r[1])) for r in replies]

    # ----------------------------------------------------------------- reading
    def names(self) -> list[str]:
        """The topologies recorded, sorted."""
        try:
            members = self._redis.smembers(TOPOLOGY_SET)
        except RedisError as e:
            raise self._failed("reading the registry's topologies", e) from None
        return sorted(_text(m) for m in members)

    def histories(self, names: Iterable[str] | None = None) -> dict[str, TopologyHistory]:
        """name -> its recorded versions, for ``names`` (default: every topology recorded),
        one round trip; a name never recorded is left out."""
        wanted = self.names() if names is None else list(dict.fromkeys(names))
        try:
            pipe = self._redis.pipeline(transaction=False)
            for name in wanted:
                pipe.hgetall(catalog_key(name))
            raws: list[dict[Any, Any]] = pipe.execute()
        except RedisError as e:
            raise self._failed("reading the registry", e) from None
        out: dict[str, TopologyHistory] = {}
        for name, raw in zip(wanted, raws, strict=True):
            history = _history(name, {_text(k): _text(v) for k, v in raw.items()})
            if history is not None:
                out[name] = history
        return out

    def latest(self, names: Iterable[str] | None = None) -> dict[str, tuple[Deployment, int]]:
        """name -> (the version started last, how many versions there are), for ``names``
        (default: every topology recorded); two round trips, whatever the history's length
        (only that version's document is read)."""
        wanted = self.names() if names is None else list(dict.fromkeys(names))
        try:
            pipe = self._redis.pipeline(transaction=False)
            for name in wanted:
                pipe.hmget(catalog_key(name), ["current", "versions"])
            heads: list[list[Any]] = pipe.execute()
            found = [(name, _text(current), int(_text(count)))
                     for name, (current, count) in zip(wanted, heads, strict=True)
                     if current is not None and count is not None]
            pipe = self._redis.pipeline(transaction=False)
            for name, n, _count in found:
                pipe.hmget(catalog_key(name), [f"v:{n}{attr}" for attr in _ATTRIBUTES])
            rows: list[list[Any]] = pipe.execute()
        except RedisError as e:
            raise self._failed("reading the registry", e) from None
        out: dict[str, tuple[Deployment, int]] = {}
        for (name, n, count), row in zip(found, rows, strict=True):
            raw = {f"v:{n}{attr}": _text(v) for attr, v in zip(_ATTRIBUTES, row, strict=True)
                   if v is not None}
            deployment = _deployment(name, int(n), raw)
            if deployment is not None:
                out[name] = (deployment, count)
        return out

    def usage(self, topologies: Iterable[str] | None = None) -> list[ModelRead]:
        """The reads by models of ``topologies`` (default: every topology read by a model
        or recorded), sorted by model, topology, field."""
        try:
            if topologies is None:
                names = sorted(_text(m) for m in self._redis.sunion([READ_SET, TOPOLOGY_SET]))
            else:
                names = list(dict.fromkeys(topologies))
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(usage_key(name))
            raws: list[dict[Any, Any]] = pipe.execute()
        except RedisError as e:
            raise self._failed("reading which models read which features", e) from None
        out: list[ModelRead] = []
        for name, raw in zip(names, raws, strict=True):
            counts: dict[tuple[str, str], int] = {}
            seen: dict[tuple[str, str], int] = {}
            for k, v in raw.items():
                kind, _, rest = _text(k).partition("|")
                model, _, field_ = rest.rpartition("|")
                if not model or kind not in ("n", "t"):
                    continue
                (counts if kind == "n" else seen)[(model, field_)] = int(_text(v))
            out += [ModelRead(model, name, field_, counts.get((model, field_), 0),
                              seen.get((model, field_)))
                    for model, field_ in sorted({*counts, *seen})]
        return sorted(out, key=lambda r: (r.model, r.topology, r.field))

    def partial(self, topologies: Iterable[str]) -> dict[str, dict[str, dict[str, int]]]:
        """topology -> field -> {partition: event time its history starts at} (the marks of
        :mod:`~streamfeat.registry.marks`), one round trip."""
        names = list(dict.fromkeys(topologies))
        try:
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(partial_key(name))
            raws: list[dict[Any, Any]] = pipe.execute()
        except RedisError as e:
            raise self._failed("reading the partial history marks", e) from None
        return {name: parse_marks(raw) for name, raw in zip(names, raws, strict=True)}


def record_deployments(url: str, topologies: Sequence[TopologyDef], generation: int) -> None:
    """What a worker does at start: record its topologies' versions in the shared catalog
    at ``url``, logging each; a failure is logged, never raised (the catalog is metadata:
    the worker runs without it)."""
    try:
        with SharedCatalog(url) as catalog:
            recorded = catalog.record(topologies, generation)
    except (SinkError, ConfigError) as e:
        log.warning("registry: the versions of %s were not recorded: %s",
                    ", ".join(t.name for t in topologies), e)
        return
    for t, (version, new) in zip(topologies, recorded, strict=True):
        log.info("registry: %s version %d%s", t.name, version,
                 " recorded (new)" if new else " started again")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_ATTRIBUTES = ("", ":digest", ":first", ":last", ":starts", ":generation", ":host")
"""The hash fields of version N: ``v:N`` and ``v:N:digest`` ..."""


def _deployment(name: str, n: int, raw: dict[str, str]) -> Deployment | None:
    """Version ``n`` of ``name`` from the catalog hash's fields (``None``: not there)."""
    text = raw.get(f"v:{n}")
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        log.warning("registry: version %d of %s is not JSON; skipped", n, name)
        return None
    return Deployment(
        topology=name, version=n, digest=raw.get(f"v:{n}:digest", ""), document=doc,
        first_ms=int(raw.get(f"v:{n}:first", 0)), last_ms=int(raw.get(f"v:{n}:last", 0)),
        starts=int(raw.get(f"v:{n}:starts", 0)),
        generation=int(raw.get(f"v:{n}:generation", 0)), host=raw.get(f"v:{n}:host", ""))


def _history(name: str, raw: dict[str, str]) -> TopologyHistory | None:
    count = int(raw.get("versions", 0) or 0)
    versions = [v for n in range(1, count + 1) if (v := _deployment(name, n, raw)) is not None]
    if not versions:
        return None
    return TopologyHistory(name, versions, int(raw.get("current", versions[-1].version)))
