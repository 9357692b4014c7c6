"""The partial-history marks in Redis: feature-windows computed, after a definition change,
from history shorter than their window (contract section 10), which ``streamfeat registry
--redis URL`` shows as ``partial_since_ms``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError

from streamfeat.connections import parse_redis_url
from streamfeat.errors import SinkError
from streamfeat.redact import redact
from streamfeat.sinks.redis import connect, partial_key

__all__ = ["parse_marks", "partial_marks"]


def partial_marks(url: str, topology: str) -> dict[str, dict[str, int]]:
    """field -> {partition: event time (ms) its history starts at}, for ``topology``."""
    target = parse_redis_url(url)
    client = connect(target)
    try:
        raw = client.hgetall(partial_key(topology))
    except RedisError as e:
        raise SinkError(f"reading the partial history marks from Redis at {target.address} "
                        f"({target.display}) failed: {redact(e)}; check --redis") from None
    finally:
        client.close()
    return parse_marks(raw)


def parse_marks(raw: Mapping[Any, Any]) -> dict[str, dict[str, int]]:
    """field -> {partition: event time (ms)}, from the hash's fields and values."""
    out: dict[str, dict[str, int]] = {}
    for key, since in raw.items():
        text = key.decode() if isinstance(key, bytes) else str(key)
        field, _at, partition = text.rpartition("@")
        out.setdefault(field, {})[partition] = int(since)
    return out
