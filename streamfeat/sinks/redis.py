"""The Redis writer: idempotent, monotonic, fenced (contract section 4).

Every write goes through one Lua script (``cas.lua``) that applies an entity's
update only when its version ``_v`` is newer than the stored one, so a
replayed, restarted, rebalanced or resumed worker can never move a feature
backwards, and re-sending a batch after a failure is harmless.

Batching: a batch is cut into chunks of ``chunk_size`` entities; each chunk is
one ``EVALSHA`` whose script loops over its keys, and all chunks of a batch go
in one pipelined round trip (see ``benchmarks/redis_sink.py`` for why this beats
one ``EVALSHA`` per key). Chunks are atomic one by one, not as a whole batch:
after an error some chunks may be applied and others not, which is why a failed
batch must be re-sent as a whole (the version check makes that idempotent).
Field names and values travel as one msgpack argument per chunk (decoded in the
script with ``cmsgpack``), not as thousands of arguments: packing arguments was
most of the client's cost.

Needs Redis >= 5 with Lua (``cmsgpack`` is built in; tested on 7.0). A chunk
names many keys, so this targets a standalone or Sentinel-managed Redis: on
Redis Cluster, keys of one chunk must share a hash slot (``chunk_size=1`` is
slot-safe).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.client import NEVER_DECODE
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.retry import Retry

from streamfeat.connections import RedisURL, parse_redis_url
from streamfeat.errors import ConfigError, ConnectError, SinkError
from streamfeat.redact import redact
from streamfeat.sinks.updates import Update, UpdateBatch, WriteResult
from streamfeat.sinks.values import (
    encode_column,
    encode_value,
    is_version,
    parse_version,
    version,
)
from streamfeat.topology.definitions import RESERVED_FIELDS, TopologyDef

__all__ = ["DEFAULT_CHUNK_SIZE", "LuaScript", "RedisSink", "check", "connect", "partial_key"]

#: Entities per ``EVALSHA``. Large enough to amortise the call, small enough that
#: one script run blocks Redis for at most a few milliseconds.
DEFAULT_CHUNK_SIZE = 500
_SLAB_ENTITIES = 8_000  # entities whose value texts are made at a time (see _batch_calls)

_APPLIED, _DUPLICATE, _STALE = 1, 0, -1
_NEWER, _REFRESH = "newer", "refresh"  # cas.lua ARGV[3]: when a write applies


def _script_text() -> str:
    return importlib.resources.files("streamfeat.sinks").joinpath("cas.lua").read_text("utf-8")


class RedisSink:
    """Writes entity updates of one topology to Redis through the CAS script.

    ``url_or_client`` is a ``redis://`` or ``rediss://`` URL (see :func:`connect`) or a
    ready ``redis.Redis`` client.
    No connection is made until the first :meth:`write` or :meth:`ping`.
    """

    def __init__(
        self,
        url_or_client: str | RedisURL | redis.Redis,
        topology: TopologyDef,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self._url: RedisURL | None = None
        if isinstance(url_or_client, redis.Redis):
            self._redis = url_or_client
            self._owns_client = False
        else:
            self._url = (parse_redis_url(url_or_client) if isinstance(url_or_client, str)
                         else url_or_client)
            self._redis = connect(self._url)
            self._owns_client = True
        self.topology = topology
        self.chunk_size = chunk_size
        self._names = topology.redis_fields()
        self._index = {name: i for i, name in enumerate(self._names, start=1)}
        self._ttl_arg = str(topology.ttl_ms) if topology.ttl_ms else "0"
        self._script = LuaScript(_script_text())
        self._probe_client: redis.Redis | None = None

    def write(self, updates: Sequence[Update | UpdateBatch]) -> WriteResult:
        """Apply ``updates`` in order, each only if its version is newer than the stored one.

        Items are single-entity :class:`Update` s or columnar :class:`UpdateBatch` es
        (counted per entity in the result). Raises :class:`SinkError` when Redis cannot be
        reached or refuses; nothing is reported then, and the same updates can be re-sent
        (it is idempotent). Raises ``ValueError``/``TypeError`` for an update that can
        never be written (unknown field, malformed version, unencodable value) before
        touching Redis.
        """
        if not updates:
            return WriteResult()
        calls: list[tuple[list[str], list[str | bytes]]] = []
        ids: list[str] = []
        single: list[Update] = []
        for item in updates:
            if isinstance(item, UpdateBatch):
                if single:
                    calls += self._single_calls(single)
                    single = []
                calls += self._batch_calls(item)
                ids.extend(item.entity_ids)
            else:
                single.append(item)
                ids.append(item.entity_id)
        if single:
            calls += self._single_calls(single)
        if not calls:
            return WriteResult()
        try:
            replies = self._run(calls)
        except RedisError as e:
            raise SinkError(
                f"writing {len(ids)} entities of topology {self.topology.name!r} to Redis "
                f"failed: {e}. Check that Redis is reachable and writable; the batch is safe "
                "to re-send as a whole."
            ) from e
        applied = duplicate = 0
        rejected: list[str] = []
        stale: list[str] = []
        for reply, entity_id in zip(
            (int(r) for chunk in replies for r in chunk), ids, strict=True
        ):
            if reply == _APPLIED:
                applied += 1
            else:
                rejected.append(entity_id)
                if reply == _DUPLICATE:
                    duplicate += 1
                else:
                    stale.append(entity_id)
        return WriteResult(applied, duplicate, len(stale), tuple(rejected), tuple(stale))

    def stored_version(self, entity_id: str) -> tuple[int, int, int] | None:
        """The ``(generation, partition, offset)`` Redis holds for an entity, if any."""
        try:
            raw = self._redis.hget(self.topology.redis_key(entity_id), "_v")
        except RedisError as e:
            raise SinkError(f"reading the version of {entity_id!r} failed: {e}") from e
        if raw is None:
            return None
        try:
            return parse_version(cast(bytes, raw))
        except ValueError:
            return None

    def partition_entities(self, partition: int, *, count: int = 1000) -> Iterator[list[str]]:
        """Ids of the entities whose hash was last written from ``partition`` (its ``_v``
        says so), one ``SCAN`` page at a time: the entities a definition change rewrites.

        Raises :class:`SinkError` when Redis fails (start again: it is a read).
        """
        prefix = self.topology.redis_key("").encode()
        pattern = _glob_escape(prefix) + b"*"
        cursor = 0
        try:
            while True:
                cursor, keys = self._redis.scan(cursor, match=pattern, count=count)
                if keys:
                    pipe = self._redis.pipeline(transaction=False)
                    for key in keys:
                        pipe.hget(key, "_v")
                    found = []
                    for key, raw in zip(keys, pipe.execute(), strict=True):
                        text = None if raw is None else raw.decode("ascii", "replace")
                        if text is not None and is_version(text) and \
                                parse_version(text)[1] == partition:
                            name = key if isinstance(key, bytes) else key.encode()
                            found.append(name[len(prefix):].decode("utf-8", "surrogatepass"))
                    yield found
                if cursor == 0:
                    return
        except RedisError as e:
            raise SinkError(f"listing the entities of topology {self.topology.name!r} in "
                            f"Redis failed: {e}; check that Redis is reachable") from e

    def mark_history(self, partition: int, recomputed: Sequence[str],
                     partial: Mapping[str, int]) -> None:
        """Record, for the registry, where the history of recomputed feature-windows of
        ``partition`` starts: ``partial`` field -> event time (ms) for those whose window
        reaches before it; the other ``recomputed`` fields are complete (their mark goes).
        Kept in the hash ``sfmeta:{topology}:partial``, fields ``{field}@{partition}``."""
        key = partial_key(self.topology.name)
        try:
            pipe = self._redis.pipeline(transaction=True)
            complete = [f"{name}@{partition}" for name in recomputed if name not in partial]
            if complete:
                pipe.hdel(key, *complete)
            if partial:
                pipe.hset(key, mapping={f"{name}@{partition}": str(int(since))
                                        for name, since in partial.items()})
            pipe.execute()
        except RedisError as e:
            raise SinkError(f"recording partial history of {self.topology.name!r} in Redis "
                            f"failed: {e}; check that Redis is reachable") from e

    def ping(self) -> bool:
        """Whether Redis answers now (for health checks); never raises."""
        try:
            return bool(self._redis.ping())
        except RedisError:
            return False

    def probe(self, timeout_s: float = 2.0) -> None:
        """PING Redis on a connection of its own, timing out after ``timeout_s``.

        For health checks: a write in progress does not delay it, and a hung Redis shows
        within ``timeout_s`` instead of the writes' 30 s timeout. Raises :class:`SinkError`
        when Redis does not answer.
        """
        if self._probe_client is None:
            self._probe_client = (
                self._redis if self._url is None  # a client given: its own timeouts apply
                else connect(self._url, timeout_s=timeout_s, socket_timeout_s=timeout_s,
                             retries=0))
        try:
            self._probe_client.ping()
        except RedisError as e:
            raise SinkError(f"Redis did not answer a PING within {timeout_s:g} s: "
                            f"{redact(e)}") from e

    def close(self) -> None:
        """Close the connection pool if this sink created it (and the probe's)."""
        if self._probe_client is not None and self._probe_client is not self._redis:
            self._probe_client.close()
        if self._owns_client:
            self._redis.close()

    def __enter__(self) -> RedisSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------

    def _single_calls(self, updates: Sequence[Update]) -> list[tuple[list[str], list[str | bytes]]]:
        return [self._encode_chunk(updates[i : i + self.chunk_size])
                for i in range(0, len(updates), self.chunk_size)]

    def _batch_calls(self, batch: UpdateBatch) -> list[tuple[list[str], list[str | bytes]]]:
        """Script calls for a columnar batch: rows of every field, ``False`` for absent."""
        n = len(batch.entity_ids)
        if n == 0:
            return []
        if not is_version(batch.version):
            raise ValueError(
                f"version {batch.version!r} is not in the form {version(1, 2, 3)!r}; build it "
                "with streamfeat.sinks.version()"
            )
        if len(batch.columns) != len(batch.names):
            raise ValueError(
                f"an UpdateBatch needs one column per name: {len(batch.names)} names, "
                f"{len(batch.columns)} columns"
            )
        known = set(self._names)
        unknown = [name for name in batch.names if name not in known]
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not a field of topology {self.topology.name!r} "
                "(fields look like 'orders__1h')"
            )
        if len(set(batch.names)) != len(batch.names):
            raise ValueError(f"an UpdateBatch names a field twice: {list(batch.names)}")
        bad = [d for d in batch.deletes if d in known or d in RESERVED_FIELDS]
        if bad:
            raise ValueError(
                f"{bad[0]!r} cannot be deleted: it is a field of topology "
                f"{self.topology.name!r} or a reserved field; deletes are for fields no "
                "longer declared"
            )
        for name, col in zip(batch.names, batch.columns, strict=True):
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} values for {n} entities")
        head = [batch.version, str(int(batch.asof_ms))]
        prefix = self.topology.redis_key("")
        names = [*batch.names, *batch.deletes]
        mode = _REFRESH if batch.refresh else _NEWER
        calls: list[tuple[list[str], list[str | bytes]]] = []
        size = self.chunk_size
        # The texts of a slab of entities at a time (whole chunks): a batch of 250k
        # entities would otherwise hold a text object per value (~0.7 KB per entity on the
        # benchmark topology) until its last chunk is packed; the packed chunks are small.
        slab = size * max(1, _SLAB_ENTITIES // size)
        for lo in range(0, n, slab):
            hi = min(n, lo + slab)
            encoded: list[list[str | bool]] = []
            for name, col in zip(batch.names, batch.columns, strict=True):
                try:
                    texts: list[Any] = encode_column(col[lo:hi])
                except TypeError as e:
                    raise TypeError(f"field {name!r}: {e}") from None
                if None in texts:
                    texts = [False if t is None else t for t in texts]
                encoded.append(texts)
            encoded += [[False] * (hi - lo) for _ in batch.deletes]
            rows = list(zip(*encoded, strict=True)) if encoded else [() for _ in range(hi - lo)]
            for i in range(0, hi - lo, size):
                items = [[*head, row] for row in rows[i : i + size]]
                payload = msgspec.msgpack.encode([names, items])
                keys = [prefix + e for e in batch.entity_ids[lo + i : lo + i + size]]
                calls.append((keys, [self._ttl_arg, payload, mode]))
        return calls

    def _encode_chunk(self, updates: Sequence[Update]) -> tuple[list[str], list[str | bytes]]:
        """``KEYS`` and ``ARGV`` of one script call (see ``cas.lua`` for the layout)."""
        keys: list[str] = []
        items: list[list[Any]] = []
        index = self._index
        for u in updates:
            if not is_version(u.version):
                raise ValueError(
                    f"entity {u.entity_id!r}: version {u.version!r} is not in the form "
                    f"{version(1, 2, 3)!r}; build it with streamfeat.sinks.version()"
                )
            sets: list[int | str] = []
            dels: list[int] = []
            for name, value in u.values.items():
                i = index.get(name)
                if i is None:
                    raise ValueError(
                        f"entity {u.entity_id!r}: {name!r} is not a field of topology "
                        f"{self.topology.name!r} (fields look like 'orders__1h')"
                    )
                try:
                    text = encode_value(value)
                except TypeError as e:
                    raise TypeError(f"entity {u.entity_id!r}, field {name!r}: {e}") from None
                if text is None:
                    dels.append(i)
                else:
                    sets.append(i)
                    sets.append(text)
            keys.append(self.topology.redis_key(u.entity_id))
            items.append([u.version, str(int(u.asof_ms)), sets, dels])
        return keys, [self._ttl_arg, msgspec.msgpack.encode([self._names, items]), _NEWER]

    def _run(self, calls: list[tuple[list[str], list[str | bytes]]]) -> list[list[Any]]:
        return [list(r) for r in self._script.run(self._redis, calls)]


class LuaScript:
    """A Lua script run with ``EVALSHA``; loaded in the same round trip as its first
    use, and reloaded (again in one extra round trip) when Redis answers NOSCRIPT.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()
        self._loaded = False

    def run(
        self,
        client: redis.Redis,
        calls: Sequence[tuple[Sequence[str], Sequence[str | bytes]]],
        *,
        raw: bool = False,
    ) -> list[Any]:
        """The reply of each ``(keys, args)`` call, all sent in one pipelined round trip.

        ``raw``: return bulk replies as bytes even from a ``decode_responses`` client.
        Raises the first ``RedisError`` any call got (after reloading on NOSCRIPT).
        """
        replies = self._send(client, calls, load=not self._loaded, raw=raw)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:  # the script cache was flushed (restart, failover, SCRIPT FLUSH)
            again = self._send(client, [calls[i] for i in missing], load=True, raw=raw)
            for i, r in zip(missing, again, strict=True):
                replies[i] = r
        for r in replies:
            if isinstance(r, Exception):
                raise r
        return replies

    def _send(
        self,
        client: redis.Redis,
        calls: Sequence[tuple[Sequence[str], Sequence[str | bytes]]],
        *,
        load: bool,
        raw: bool,
    ) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        if load:
            pipe.script_load(self.text)
        options = {NEVER_DECODE: True} if raw else {}
        for keys, args in calls:
            # evalsha() cannot pass NEVER_DECODE; execute_command is untyped in redis-py.
            cast(Any, pipe).execute_command("EVALSHA", self.sha, len(keys), *keys, *args, **options)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        if load:
            loaded = replies.pop(0)
            if isinstance(loaded, Exception):
                raise loaded
            self._loaded = True
        return replies


def partial_key(topology: str) -> str:
    """The Redis hash of a topology's partial feature-windows (see
    :meth:`RedisSink.mark_history`): field ``{field}@{partition}`` -> event time (ms) its
    history starts at. Outside ``sf:{topology}:*``, so no entity id can collide with it."""
    return f"sfmeta:{topology}:partial"


def _glob_escape(text: bytes) -> bytes:
    """``text`` matched literally by a Redis glob pattern (``SCAN MATCH``)."""
    out = bytearray()
    for b in text:
        if b in b"*?[]\\":
            out += b"\\"
        out.append(b)
    return bytes(out)


def connect(url: str | RedisURL, *, timeout_s: float = 5.0, socket_timeout_s: float = 30.0,
            retries: int | None = None) -> redis.Redis:
    """A client for ``url`` with timeouts, so a hung Redis surfaces as an error.

    ``url``: ``redis://[user:password@]host:port/db`` or ``rediss://`` (TLS), TLS files as
    query parameters (``?ssl_ca_certs=ca.pem&ssl_certfile=client.pem&ssl_keyfile=client.key``;
    :func:`streamfeat.connections.parse_redis_url`), ``${NAME}`` read from the environment.
    No connection is made until the first command. ``retries``: redis-py's own retries of a
    command on a connection error (``None``: its default).
    """
    target = parse_redis_url(url) if isinstance(url, str) else url
    extra: dict[str, object] = {} if retries is None else {"retry": Retry(NoBackoff(), retries)}
    try:
        return redis.Redis.from_url(
            target.url, socket_connect_timeout=timeout_s, socket_timeout=socket_timeout_s,
            health_check_interval=30, **extra)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"invalid Redis URL {target.display}: {redact(e)}; use the form "
            "redis://host:6379/0 or rediss://user:password@host:6380/0"
        ) from None


def check(url: str | RedisURL, *, timeout_s: float = 10.0) -> None:
    """At start: Redis at ``url`` answers within ``timeout_s`` (a refused or timed-out
    connection is tried again until then), takes the credentials, and is not a Redis
    Cluster. Raises :class:`ConnectError` (credentials and TLS at once, without waiting)
    or :class:`ConfigError` (a cluster), each naming the address and what to check."""
    target = parse_redis_url(url) if isinstance(url, str) else url
    deadline = time.monotonic() + timeout_s
    step = min(2.0, timeout_s)
    client = connect(target, timeout_s=step, socket_timeout_s=step, retries=0)
    where = f"Redis at {target.address} ({target.display})"
    try:
        while True:
            try:
                client.ping()
                break
            except (AuthenticationError, AuthorizationError) as e:
                raise ConnectError(f"{where} refused the credentials: {redact(e)}; check the "
                                   "user and password in the Redis URL") from None
            except ResponseError as e:
                if not str(e).startswith(("WRONGPASS", "NOAUTH", "NOPERM")):
                    raise ConnectError(f"{where} refused PING: {redact(e)}") from None
                raise ConnectError(f"{where} refused the credentials: {redact(e)}; check the "
                                   "user and password in the Redis URL") from None
            except RedisError as e:
                if _tls_failure(e):
                    raise ConnectError(f"TLS with {where} failed: {redact(e)}; "
                                       f"{_tls_hint(target)}") from None
                if not target.tls and any(w in str(e) for w in _CLOSED_AT_ONCE):
                    # A TLS port answers a plaintext client by closing the connection.
                    raise ConnectError(
                        f"{where} closed the connection at once: {redact(e)}; the server "
                        "speaks TLS: use rediss:// (with ssl_ca_certs=...)") from None
                if time.monotonic() + 0.5 >= deadline:
                    raise ConnectError(
                        f"cannot reach {where} within {timeout_s:g} s: {redact(e)}; check "
                        "--redis or STREAMFEAT_REDIS and that the server runs there") from None
                time.sleep(0.5)
        try:
            info = client.info("cluster")
        except NoPermissionError:
            return  # the user may not run INFO: a cluster would refuse the writes anyway
        except RedisError as e:
            raise ConnectError(f"{where} refused INFO: {redact(e)}") from None
        if int(info.get("cluster_enabled", 0) or 0) == 1:
            raise ConfigError(
                f"{where} is a Redis Cluster (cluster_enabled:1): streamfeat writes many "
                "entities in one script call, which a cluster refuses across hash slots; use "
                "a standalone Redis (a primary with replicas, failed over by Sentinel or "
                "your provider, is fine)")
    finally:
        client.close()


_CLOSED_AT_ONCE = ("Connection reset by peer", "Connection closed by server")


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return "SSL" in text or "certificate" in text.lower()


def _tls_hint(target: RedisURL) -> str:
    if not target.tls:
        return "the server speaks TLS: use rediss://"
    return ("check ssl_ca_certs (the CA that signed the server's certificate), the client "
            "certificate (ssl_certfile, ssl_keyfile) if the server asks for one, and that the "
            "port is a TLS port (else use redis://)")
