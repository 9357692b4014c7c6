"""Writing each batch's feature values: :class:`Publisher`, on a background thread.

Each batch's Redis writes go to one background thread
(:class:`~streamfeat.runtime.background.BackgroundWriter`) while the next batch is
aggregated, in submission order and at most two batches behind; a write is retried until
the sink accepts it (consumption waits meanwhile: back-pressure). :meth:`Publisher.settle`
returns once every submitted write is acknowledged, which is what the checkpoint waits for
before it stores an offset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Protocol

from streamfeat.errors import SinkError
from streamfeat.metrics import Metrics
from streamfeat.retry import call_with_retry
from streamfeat.runtime.background import BackgroundWriter
from streamfeat.runtime.fencing import FenceWatch
from streamfeat.sinks import UpdateBatch, WriteResult

__all__ = ["FeatureSink", "OnRetry", "Publisher"]

OnRetry = Callable[[int, BaseException], None]
"""Told of each failed attempt before the wait (attempt 0, 1, ...); may raise to give up."""


class FeatureSink(Protocol):
    """Where one topology's values go (:class:`~streamfeat.sinks.RedisSink`)."""

    def write(self, updates: Sequence[UpdateBatch]) -> WriteResult: ...

    def stored_version(self, entity_id: str) -> tuple[int, int, int] | None: ...

    def partition_entities(self, partition: int) -> Iterator[list[str]]: ...

    def mark_history(self, partition: int, recomputed: Sequence[str],
                     partial: Mapping[str, int]) -> None: ...

    def close(self) -> None: ...


class Publisher:
    """Writes batches of values to each topology's sink, in order, in the background."""

    def __init__(self, sinks: Mapping[str, FeatureSink], metrics: Metrics, fence: FenceWatch,
                 on_retry: OnRetry, on_success: Callable[[], None]) -> None:
        self.sinks = dict(sinks)
        self.metrics = metrics
        self.fence = fence
        self._on_retry = on_retry
        self._on_success = on_success
        self._writer = BackgroundWriter("streamfeat-sink")

    @property
    def failed(self) -> bool:
        """Whether a write failed for good (nothing after it is written or may be committed)."""
        return self._writer.failed

    def submit(self, topology: str, batch: list[UpdateBatch], oldest_kafka_ts: int | None,
               ) -> None:
        """Queue one batch's values of ``topology`` (blocks while two batches wait)."""
        self._writer.submit(partial(self._write, topology, batch, oldest_kafka_ts))

    def settle(self) -> None:
        """Wait until every submitted write is acknowledged; raises if one failed."""
        self._writer.drain()

    def close(self) -> None:
        self._writer.close()
        for sink in self.sinks.values():
            sink.close()

    def _write(self, topology: str, batch: list[UpdateBatch], oldest_kafka_ts: int | None,
               ) -> None:
        sink = self.sinks[topology]
        started = time.perf_counter()

        def write() -> WriteResult:
            nonlocal started
            started = time.perf_counter()
            return sink.write(batch)

        result = call_with_retry(write, retry_on=SinkError, on_retry=self._on_retry)
        self._on_success()
        self.metrics.redis_write.labels(topology).observe(time.perf_counter() - started)
        if result.rejected:
            self.metrics.redis_rejected.labels(topology).inc(result.rejected)
        if result.stale_ids:
            self.fence.check(topology, sink, result.stale_ids[0])
        if oldest_kafka_ts is not None:
            age = time.time() - oldest_kafka_ts / 1000
            self.metrics.event_to_redis.labels(topology).observe(max(0.0, age))
