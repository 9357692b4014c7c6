"""Non-blocking reads of the online store for the server: the client's read, awaited.

Two ways to wait for Redis without blocking the event loop, chosen by ``--io``:

- :class:`AsyncStore` (``asyncio``, the default): ``redis.asyncio`` on the loop;
- :class:`ThreadStore` (``threads``): the client's synchronous read in a thread pool.

Both send :meth:`ReadPlan.calls` (one ``EVALSHA`` of the client's read script per 1000
entities, all in one round trip) over a bounded pool of connections, and decode the replies
with :meth:`ReadPlan.decode`: the values, defaults and nulls of
:meth:`streamfeat.client.Client.get_with_meta`. benchmarks/serve.py measures both.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, cast

import redis
import redis.asyncio
from redis.exceptions import NoScriptError, RedisError

from streamfeat.client import READ_SCRIPT, EntityFeatures, ReadPlan
from streamfeat.connections import RedisURL
from streamfeat.errors import SinkError
from streamfeat.redact import redact
from streamfeat.sinks.redis import LuaScript

__all__ = ["AsyncStore", "ReadTimeout", "RedisFailed", "Store", "ThreadStore", "open_store"]

Calls = Sequence[tuple[Sequence[str], Sequence[str | bytes]]]


class RedisFailed(SinkError):
    """Redis could not be reached, or refused the read."""


class ReadTimeout(RedisFailed):
    """Redis did not answer a read within the request's budget (``--timeout``)."""


class Store(Protocol):
    """What the server needs of Redis."""

    async def start(self) -> None:
        """Load the read script (so the first request does not), if Redis answers."""

    async def read(self, plan: ReadPlan) -> dict[str, EntityFeatures]:
        """The entities of ``plan``; :class:`ReadTimeout` past the budget,
        :class:`RedisFailed` when Redis fails, :class:`SinkError` for a stored value
        streamfeat did not write."""

    async def ping(self, timeout_s: float) -> None:
        """Raise :class:`RedisFailed` unless Redis answers a PING within ``timeout_s``."""

    async def close(self) -> None: ...


def open_store(io: str, url: RedisURL, *, pool: int, timeout_s: float) -> Store:
    """The store for ``--io`` (``asyncio`` or ``threads``)."""
    if io == "threads":
        return ThreadStore(url, pool=pool, timeout_s=timeout_s)
    return AsyncStore(url, pool=pool, timeout_s=timeout_s)


def _failed(plan: ReadPlan, cause: RedisError) -> RedisFailed:
    return RedisFailed(redact(plan.error(cause)))


def _timeout(plan: ReadPlan, timeout_s: float) -> ReadTimeout:
    return ReadTimeout(
        f"Redis did not answer the read of {len(plan.ids)} entities of topology "
        f"{plan.topology.name!r} within {timeout_s:g} s (--timeout); check Redis's latency "
        "and load, or raise --timeout or --redis-pool")


class AsyncStore:
    """``redis.asyncio`` over a pool of at most ``pool`` connections: a request waits for a
    free one within its budget."""

    def __init__(self, url: RedisURL, *, pool: int, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._pool = redis.asyncio.BlockingConnectionPool.from_url(
            url.url, max_connections=pool, timeout=timeout_s,
            socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
            health_check_interval=30)
        self._redis = redis.asyncio.Redis(connection_pool=self._pool)
        self._sha = hashlib.sha1(READ_SCRIPT.encode(), usedforsecurity=False).hexdigest()

    async def start(self) -> None:
        # Not loaded now (Redis away): the first read loads it (NOSCRIPT).
        with contextlib.suppress(RedisError, TimeoutError):
            async with asyncio.timeout(self.timeout_s):
                await self._redis.script_load(READ_SCRIPT)

    async def read(self, plan: ReadPlan) -> dict[str, EntityFeatures]:
        calls = plan.calls()
        try:
            async with asyncio.timeout(self.timeout_s):
                try:
                    replies = await self._send(calls)
                except NoScriptError:  # flushed (restart, failover, SCRIPT FLUSH): load, again
                    await self._redis.script_load(READ_SCRIPT)
                    replies = await self._send(calls)
        except (TimeoutError, redis.exceptions.TimeoutError):
            raise _timeout(plan, self.timeout_s) from None
        except RedisError as e:
            raise _failed(plan, e) from e
        return plan.decode(replies)

    async def _send(self, calls: Calls) -> list[Any]:
        if len(calls) == 1:  # the common case: no pipeline object to build
            keys, args = calls[0]
            # execute_command is untyped in redis-py (evalsha's stub wants str keys).
            return [await cast(Any, self._redis).execute_command(
                "EVALSHA", self._sha, len(keys), *keys, *args)]
        pipe = self._redis.pipeline(transaction=False)
        for keys, args in calls:
            pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)
        return list(await pipe.execute())

    async def ping(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._redis.ping()
        except (TimeoutError, RedisError) as e:
            raise RedisFailed(f"Redis did not answer a PING within {timeout_s:g} s: "
                            f"{redact(e) or type(e).__name__}") from None

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pool.aclose()


class ThreadStore:
    """The client's synchronous read (:class:`LuaScript` over ``redis.Redis``) in a pool of
    ``pool`` threads, one connection each."""

    def __init__(self, url: RedisURL, *, pool: int, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._pool = redis.BlockingConnectionPool.from_url(
            url.url, max_connections=pool, timeout=timeout_s,
            socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
            health_check_interval=30)
        self._redis = redis.Redis(connection_pool=self._pool)
        self._script = LuaScript(READ_SCRIPT)
        self._threads = ThreadPoolExecutor(pool, thread_name_prefix="streamfeat-serve-redis")

    async def start(self) -> None:
        with contextlib.suppress(RedisError, TimeoutError):  # else the first read loads it
            await self._in_thread(self._redis.script_load, READ_SCRIPT, timeout_s=self.timeout_s)

    async def read(self, plan: ReadPlan) -> dict[str, EntityFeatures]:
        run = functools.partial(self._script.run, self._redis, plan.calls(), raw=True)
        try:
            replies = await self._in_thread(run, timeout_s=self.timeout_s)
        except (TimeoutError, redis.exceptions.TimeoutError):
            raise _timeout(plan, self.timeout_s) from None
        except RedisError as e:
            raise _failed(plan, e) from e
        return plan.decode(replies)

    async def ping(self, timeout_s: float) -> None:
        try:
            await self._in_thread(self._redis.ping, timeout_s=timeout_s)
        except (TimeoutError, RedisError) as e:
            raise RedisFailed(f"Redis did not answer a PING within {timeout_s:g} s: "
                            f"{redact(e) or type(e).__name__}") from None

    async def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._redis.close()
        self._pool.disconnect()

    async def _in_thread(self, fn: Any, *args: Any, timeout_s: float) -> Any:
        future = asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)
        async with asyncio.timeout(timeout_s):
            return await future
