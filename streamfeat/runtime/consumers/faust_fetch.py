"""Columnar hand-over of fetched records for the ``faust`` runtime.

aiokafka's fetcher turns every fetched record into a ``ConsumerRecord`` (an 11-field
dataclass built in Python, about a microsecond each) that the worker would only take apart
again into columns. That per-record work ran on Faust's consumer thread, holding the GIL the
worker needs, and was a quarter of a profiled worker's samples. Here the consumer thread's
``_fetch_records`` drains the fetcher's results itself, reading each record batch straight
into a :class:`~streamfeat.records.RecordBatch` (offsets, timestamps, keys, values).

It keeps the rules of aiokafka's ``Fetcher.fetched_records`` and
``PartitionRecords._unpack_records`` (aiokafka 0.14), which it replaces for this consumer:

* records of a partition are returned only while its position equals the fetch's next
  offset, and consuming them moves the position (``FetchResult.check_assignment``,
  ``_update_position``);
* control batches are skipped, and with ``read_committed`` so are the batches of aborted
  transactions;
* records before the fetch offset (from a compressed batch fetched whole) are skipped;
* after the last record of a batch, the next fetch offset is the batch's next offset (so a
  compacted tail is not fetched again);
* a CRC error or a fetch error is raised to the caller, as aiokafka does.

``max_records`` is honoured at record-batch granularity: a hand-over may exceed it by the
rest of one producer batch, never by more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiokafka.errors as errors  # type: ignore[import-untyped]  # no py.typed
from aiokafka.consumer.fetcher import (  # type: ignore[import-untyped]
    READ_COMMITTED,
    FetchResult,
    PartitionRecords,
)
from faust.transport.drivers import aiokafka as faust_aiokafka

from streamfeat.records import Origins, RecordBatch

__all__ = ["ColumnarConsumerThread", "fetched_batches"]


class ColumnarConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, returning ``{TP: RecordBatch}`` from a fetch."""

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        if not self.consumer.flow_active:
            return {}
        fetcher = consumer._fetcher
        if consumer._closed or fetcher._closed:
            raise errors.ConsumerStoppedError()
        rekeyed: frozenset[str] = getattr(self.consumer, "rekeyed_topics", frozenset())
        asked: int | None = getattr(self.consumer, "poll_records", None)
        if asked is not None:  # the worker's batch size now (runtime.batching)
            max_records = asked if max_records is None else min(asked, max_records)
        with fetcher._subscriptions.fetch_context():
            return await fetched_batches(fetcher, active_partitions, timeout or 0, max_records,
                                         rekeyed)


async def fetched_batches(
    fetcher: Any, partitions: Any, timeout: float, max_records: int | None,
    rekeyed: frozenset[str] = frozenset(),
) -> dict[Any, RecordBatch]:
    """``Fetcher.fetched_records``, with each partition's records as one columnar batch.

    Records of the topics in ``rekeyed`` also carry their origins (read from headers).
    A worker that re-keys takes a fair share of ``max_records`` from each partition ready
    (not as much as it can from the first), so that a batch spans about the same stretch of
    time in every source partition and the re-keyed stream interleaves them in time order.
    """
    while True:
        # records fetched during a reassignment may not be ours after it
        if fetcher._subscriptions.reassignment_in_progress:
            await fetcher._subscriptions.wait_for_assignment()
        start = time.monotonic()
        drained: dict[Any, RecordBatch] = {}
        share = max_records
        if rekeyed and max_records is not None:
            ready = sum(1 for r in fetcher._records.values() if type(r) is FetchResult)
            share = max(1, max_records // max(1, ready))
        for tp in list(fetcher._records):
            if partitions and tp not in partitions:
                if not fetcher._subscriptions.is_assigned(tp):
                    del fetcher._records[tp]
                continue
            result = fetcher._records[tp]
            if type(result) is FetchResult:
                take = max_records if share is None or max_records is None else min(
                    share, max_records)
                batch = _take(result, take, tp.topic in rekeyed)
                if not result.has_more():  # all of it handed over: fetch more
                    del fetcher._records[tp]
                    fetcher._notify(fetcher._wait_consume_future)
                if batch is None:
                    continue
                drained[tp] = batch
                if max_records is not None:
                    max_records = max(0, max_records - len(batch))
                    if max_records == 0:
                        break
            elif drained:
                return drained  # the error is raised on the next call
            else:
                del fetcher._records[tp]
                fetcher._notify(fetcher._wait_consume_future)
                result.check_raise()
        if drained or not timeout:
            return drained
        waiter = fetcher._create_fetch_waiter()
        done, pending = await asyncio.wait([waiter], timeout=timeout)
        if not done or fetcher._closed:
            for fut in pending:
                fut.cancel()
            return {}
        if waiter.done():
            waiter.result()  # authorization errors
        timeout = max(0.0, timeout - (time.monotonic() - start))


def _take(result: Any, max_records: int | None, rekeyed: bool = False) -> RecordBatch | None:
    """Up to about ``max_records`` of a fetch result's records (``FetchResult.getall``)."""
    tp = result._topic_partition
    if not result.check_assignment(tp) or not result.has_more():
        return None
    records: PartitionRecords = result._partition_records
    chunks = getattr(records, "_streamfeat_chunks", None)
    if chunks is None:
        chunks = records._streamfeat_chunks = _chunks(records, rekeyed)
    taken: _Columns | None = None
    for chunk in chunks:
        if taken is None:
            taken = chunk
        else:
            offsets, stamps, keys, values, headers = taken
            offsets.extend(chunk[0])
            stamps.extend(chunk[1])
            keys.extend(chunk[2])
            values.extend(chunk[3])
            headers.extend(chunk[4])
        if max_records is not None and len(taken[0]) >= max_records:
            result._update_position()
            break
    else:
        result._update_position()
        result._partition_records = None
    if taken is None:
        return None
    offsets, stamps, keys, values, headers = taken
    origins = Origins.from_headers(headers) if rekeyed else None
    return RecordBatch(tp.partition, offsets, stamps, keys, values, origins)


_Columns = tuple[list[int], list[int], list[bytes | None], list[bytes | None], list[Any]]


def _chunks(records: Any, rekeyed: bool = False) -> Iterator[_Columns]:
    """``PartitionRecords._unpack_records``, a record batch at a time, as columns."""
    tp = records._tp
    memory = records._records
    while memory.has_next():
        batch = memory.next_batch()
        if records._check_crcs and not batch.validate_crc():
            raise errors.CorruptRecordException(f"Invalid CRC - {tp}")
        if records._isolation_level == READ_COMMITTED and batch.producer_id is not None:
            records._consume_aborted_up_to(batch.base_offset)
            if batch.is_control_batch and records._contains_abort_marker(batch):
                records._aborted_producers.discard(batch.producer_id)
            if batch.is_transactional and batch.producer_id in records._aborted_producers:
                records.next_fetch_offset = batch.next_offset
                continue
        if batch.is_control_batch:
            records.next_fetch_offset = batch.next_offset
            continue
        offsets: list[int] = []
        stamps: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        headers: list[Any] = []
        start = records.next_fetch_offset
        for record in batch:
            offset = record.offset
            if offset < start:
                continue  # a compressed batch fetched whole: already handed over
            offsets.append(offset)
            stamps.append(record.timestamp)
            keys.append(record.key)
            values.append(record.value)
            if rekeyed:
                headers.append(record.headers)
        records.next_fetch_offset = batch.next_offset
        if offsets:
            if records._key_deserializer is not None:
                keys = [records._key_deserializer(k) for k in keys]
            if records._value_deserializer is not None:
                values = [records._value_deserializer(v) for v in values]
            yield offsets, stamps, keys, values, headers
