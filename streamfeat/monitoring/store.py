"""What value monitoring keeps in Redis, where every worker and command sees it.

Two keys per topology, beside the sink's ``sfmeta:{topology}:partial`` and outside
``sf:{topology}:*`` (no entity id can collide with them; a topology name has no ``:``):

- ``sfmeta:{topology}:baseline`` (string): the :class:`Baseline`, msgpack. Written by
  ``streamfeat monitor baseline``, read by every worker at each interval's close.
- ``sfmeta:{topology}:monitor`` (hash): field = worker id (``host:pid``), value = that
  worker's last :class:`IntervalSummary`, msgpack (its sketches included, so that
  ``streamfeat monitor show`` merges the workers' intervals). Beside it
  ``sfmeta:{topology}:monitor:seen`` (sorted set, worker id by the time of its last
  summary): a worker's entry not refreshed for :data:`FORGET_AFTER_S` is deleted by the
  next write of any worker. Both expire when no worker has written for that long.
"""

from __future__ import annotations

import time
from typing import Any, cast

import msgspec
import redis
from redis.exceptions import RedisError

from streamfeat.errors import SinkError
from streamfeat.monitoring.sketch import SketchState
from streamfeat.redact import redact
from streamfeat.sinks.redis import LuaScript

__all__ = [
    "FORGET_AFTER_S",
    "Baseline",
    "FieldSummary",
    "IntervalSummary",
    "baseline_key",
    "delete_baseline",
    "monitor_key",
    "read_baseline",
    "read_summaries",
    "write_baseline",
    "write_summary",
]

FORGET_AFTER_S = 86_400.0
"""A worker's summary not refreshed for this long (a worker gone) is deleted."""


class Baseline(msgspec.Struct, frozen=True):
    """The reference distribution of each feature-window of a topology."""

    topology: str
    created_ms: int
    source: str
    """Where it comes from, in words (the training set's file, or the snapshots and range)."""
    fields: dict[str, SketchState]


class FieldSummary(msgspec.Struct, frozen=True):
    """One field over one interval: its values' sketch, and its drift from the baseline."""

    sketch: SketchState
    psi: float | None = None
    quantile_distance: float | None = None


class IntervalSummary(msgspec.Struct, frozen=True):
    """What one worker wrote of one topology in one monitoring interval."""

    worker: str
    seq: int
    """Intervals this worker closed so far (1 for the first)."""
    start_ms: int
    end_ms: int
    """Wall clock of the interval's start and close."""
    asof_min_ms: int | None
    asof_max_ms: int | None
    """The event times the interval's values are as of (their batches' stream times)."""
    baseline_created_ms: int | None
    fields: dict[str, FieldSummary]
    heard_ms: int | None = None
    """Wall clock of this worker's latest close: ``end_ms`` unless the intervals since were
    idle (no values), which keep the last interval with values stored (None: stored by a
    version before this field, read as ``end_ms``)."""
    idle_intervals: int = 0
    """Intervals closed without values since this one."""

    @property
    def heard(self) -> int:
        return self.end_ms if self.heard_ms is None else self.heard_ms


def baseline_key(topology: str) -> str:
    return f"sfmeta:{topology}:baseline"


def monitor_key(topology: str) -> str:
    return f"sfmeta:{topology}:monitor"


def _seen_key(topology: str) -> str:
    return f"sfmeta:{topology}:monitor:seen"


_encode = msgspec.msgpack.Encoder().encode
_baseline = msgspec.msgpack.Decoder(Baseline)
_summary = msgspec.msgpack.Decoder(IntervalSummary)

# KEYS: the monitor hash, its sorted set. ARGV: worker id, summary, now (ms), forget before
# (ms), expiry (ms). Stores the summary, then forgets the workers not heard of since.
_WRITE = LuaScript("""
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return #gone
""")


def _failed(what: str, exc: Exception) -> SinkError:
    return SinkError(f"{what} in Redis failed: {redact(exc)}; check that Redis is reachable "
                     "(--redis or STREAMFEAT_REDIS)")


def write_baseline(client: redis.Redis, baseline: Baseline) -> None:
    """Store ``baseline`` for its topology (replacing the one stored)."""
    try:
        client.set(baseline_key(baseline.topology), _encode(baseline))
    except RedisError as e:
        raise _failed(f"storing the baseline of {baseline.topology!r}", e) from e


def read_baseline(client: redis.Redis, topology: str) -> Baseline | None:
    """The stored baseline of ``topology``, or ``None``. Raises :class:`SinkError` when
    Redis fails, ``ValueError`` when the stored value is not a baseline of this version."""
    try:
        raw = client.get(baseline_key(topology))
    except RedisError as e:
        raise _failed(f"reading the baseline of {topology!r}", e) from e
    if raw is None:
        return None
    try:
        return _baseline.decode(cast(bytes, raw))
    except msgspec.DecodeError as e:
        raise ValueError(f"{baseline_key(topology)} does not hold a baseline this version "
                         f"reads ({e}); create it again with streamfeat monitor baseline"
                         ) from None


def delete_baseline(client: redis.Redis, topology: str) -> bool:
    """Delete the stored baseline; whether there was one."""
    try:
        return bool(client.delete(baseline_key(topology)))
    except RedisError as e:
        raise _failed(f"deleting the baseline of {topology!r}", e) from e


def write_summary(client: redis.Redis, topology: str, summary: IntervalSummary,
                  *, now_s: float | None = None, forget_after_s: float = FORGET_AFTER_S) -> int:
    """Store one worker's interval summary; returns how many gone workers were forgotten."""
    now_ms = int((time.time() if now_s is None else now_s) * 1000)
    forget = int(forget_after_s * 1000)
    try:
        replies = _WRITE.run(client, [(
            [monitor_key(topology), _seen_key(topology)],
            [summary.worker, _encode(summary), str(now_ms), str(now_ms - forget), str(forget)],
        )])
    except RedisError as e:
        raise _failed(f"storing the monitoring summary of {topology!r}", e) from e
    return int(replies[0])


def read_summaries(client: redis.Redis, topology: str) -> list[IntervalSummary]:
    """Every worker's last summary of ``topology`` (entries this version cannot read are
    left out), by worker id."""
    try:
        raw: dict[Any, Any] = cast(dict[Any, Any], client.hgetall(monitor_key(topology)))
    except RedisError as e:
        raise _failed(f"reading the monitoring summaries of {topology!r}", e) from e
    out = []
    for _worker, value in sorted(raw.items()):
        try:
            out.append(_summary.decode(value))
        except msgspec.DecodeError:
            continue
    return out
