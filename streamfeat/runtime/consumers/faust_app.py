"""Runtime ``faust``: a faust-streaming app that hands whole batches to the worker core.

Faust owns group membership, partition assignment and rebalancing, and fetching (its aiokafka
driver, in Faust's consumer thread). It does not own the per-event path: the transport's
consumer replaces Faust's message drain (``Consumer._drain_messages``, which wraps every
record in a ``ConsumerMessage`` and feeds streams one by one) with a loop that takes each
fetched ``{TP: [records]}`` map whole and hands it to the worker core, which runs on the
thread that called :meth:`FaustConsumer.poll` (the main thread, as with the ``kafka`` runtime).
Its consumer thread reads fetched record batches straight into columns
(:mod:`streamfeat.runtime.consumers.faust_fetch`), never building aiokafka's per-record objects.

Guarantees, as with :class:`~streamfeat.runtime.consumers.kafka.KafkaConsumer`:

* The resume point is the offset stored in RocksDB with the state: ``on_assign`` answers it,
  each assigned partition is sought there, and Faust's own "seek to committed" after a
  rebalance (``Consumer.perform_seek``) seeks there too. Records of a partition are handed
  over only while they follow on from that offset (whichever fetch brought them: a record
  is named by its offset); records before it are skipped, and records after a gap make the
  partition be sought again.
* Faust never commits offsets by itself here (no message is ever acked); the worker's
  advisory commits (lag, stop-at-end) go through Faust's consumer after the state is stored.
* A revocation is acknowledged (Faust's ``on_partitions_revoked`` signal returns) only after
  the batch in hand is fully handled (operators, Redis, dead letters, RocksDB) and the
  worker has closed the partitions: assignment changes queue behind the batch.

Faust's and aiokafka's internals relied on are listed, each with the test that guards it, in
:data:`FAUST_INTERNALS`; ``tests/runtime/test_faust_internals.py`` checks that each still
exists in the installed versions, and the guards check that each still behaves as used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import faust
from aiokafka.structs import (  # type: ignore[import-untyped]  # no py.typed
    OffsetAndMetadata,
)
from aiokafka.structs import TopicPartition as AioTP
from confluent_kafka import Consumer as QueryConsumer
from confluent_kafka import TopicPartition
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka

from streamfeat.errors import ConnectError
from streamfeat.records import RecordBatch
from streamfeat.redact import redact
from streamfeat.runtime.batching import first_size
from streamfeat.runtime.consumers.base import TP, ConsumerSettings, OnAssign, OnRevoke
from streamfeat.runtime.consumers.faust_fetch import ColumnarConsumerThread
from streamfeat.runtime.consumers.faust_settings import AiokafkaSettings, aiokafka_settings

__all__ = ["FAUST_INTERNALS", "FaustConsumer", "build_app", "check_connection", "credentials"]

log = logging.getLogger("streamfeat.worker")

_E2E = "tests/integration/test_faust_runtime.py and tests/faults/test_kills_e2e.py"
FAUST_INTERNALS: tuple[tuple[str, str, str], ...] = (
    # (dotted name, what streamfeat uses it for, the test that guards that use)
    ("faust.transport.consumer.Consumer._drain_messages",
     "replaced: whole fetched batches go to the worker instead of per-event streams", _E2E),
    ("faust.transport.consumer.Consumer._wait_next_records",
     "called by the replacement drain to get the next fetch", _E2E),
    ("faust.transport.consumer.Consumer.perform_seek",
     "replaced: seek to the offset stored with the state, not the group's", _E2E),
    ("faust.transport.consumer.Consumer.seek_wait", "seek and wait for it to land", _E2E),
    ("faust.transport.drivers.aiokafka.Consumer._new_consumer_thread",
     "replaced: the columnar consumer thread", _E2E),
    ("faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._fetch_records",
     "replaced: fetched record batches read straight into columns",
     "tests/integration/test_faust_fetch.py"),
    ("faust.transport.drivers.aiokafka.AIOKafkaConsumerThread.call_thread",
     "advisory commits run on Faust's consumer thread", _E2E),
    ("faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._ensure_consumer",
     "the aiokafka consumer the advisory commits go through", _E2E),
    ("faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._consumer",
     "the aiokafka consumer whose last fetched high watermarks feed the lag gauge",
     "tests/integration/test_worker_metrics.py"),
    ("aiokafka.consumer.consumer.AIOKafkaConsumer.highwater",
     "the last fetched high watermark (no request) for the lag gauge",
     "tests/integration/test_worker_metrics.py"),
    ("faust.tables.TableManager.on_start",
     "replaced by TablelessManager: no one-second wait for tables that never come", _E2E),
    ("aiokafka.consumer.fetcher.Fetcher.fetched_records",
     "the rules the columnar fetch keeps (positions, control and aborted batches)",
     "tests/integration/test_faust_fetch.py"),
    ("aiokafka.consumer.fetcher.PartitionRecords._unpack_records",
     "the rules the columnar fetch keeps (offsets before the fetch offset, next offset)",
     "tests/integration/test_faust_fetch.py"),
    ("aiokafka.consumer.fetcher.FetchResult.check_assignment",
     "position check before records are handed over", "tests/integration/test_faust_fetch.py"),
    *(("aiokafka.consumer.fetcher." + name, "read or called by the columnar fetch",
       "tests/integration/test_faust_fetch.py") for name in (
        "Fetcher._records", "Fetcher._subscriptions", "Fetcher._notify",
        "Fetcher._wait_consume_future", "Fetcher._create_fetch_waiter",
        "FetchResult._update_position", "FetchResult._partition_records",
        "FetchResult._topic_partition", "PartitionRecords._records", "PartitionRecords._tp",
        "PartitionRecords._check_crcs", "PartitionRecords._isolation_level",
        "PartitionRecords._aborted_producers", "PartitionRecords._consume_aborted_up_to",
        "PartitionRecords._contains_abort_marker", "PartitionRecords._key_deserializer",
    )),
)
"""Every internal of Faust and aiokafka this runtime depends on, with its guard."""


@dataclass
class _Call:
    """An assignment change, sent from Faust's loop to the worker thread."""

    kind: str  # "assign" | "revoke"
    partitions: list[TP]
    reply: asyncio.Future[dict[TP, int]]


@dataclass
class _Batch:
    records: dict[TP, RecordBatch]
    done: asyncio.Future[None]


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, draining whole batches into the worker instead of streams."""

    @property
    def rekeyed_topics(self) -> frozenset[str]:
        """Topics whose records carry their origins in headers (read by the fetch)."""
        return cast(BatchTransport, self.transport).bridge.source.settings.rekeyed_topics

    @property
    def poll_records(self) -> int:
        """Records the worker asked for at its last poll (the fetch takes at most these)."""
        return cast(BatchTransport, self.transport).bridge.source.max_records

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ColumnarConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        await cast(BatchTransport, self.transport).bridge.drain(self, fetcher)

    async def perform_seek(self) -> None:
        # Faust calls this after a rebalance to seek to Kafka's committed offsets; the resume
        # point is the offset stored with the state instead.
        await cast(BatchTransport, self.transport).bridge.seek_assigned(self)


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer
    bridge: _Bridge


class TablelessManager(TableManager):
    """Faust's table manager for an app that declares no tables: ready at once.

    Faust's own waits a second before starting (time for agents to declare their tables),
    which was a second of every worker's start-up and of every ``--stop-at-end`` run.
    """

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


def credentials(auth: AiokafkaSettings) -> Any:
    """Faust's credentials for the settings of ``--kafka-config`` (``None``: plaintext)."""
    if auth.sasl_mechanism is not None:
        return faust.SASLCredentials(
            username=auth.sasl_plain_username, password=auth.sasl_plain_password,
            ssl_context=auth.ssl_context, mechanism=auth.sasl_mechanism)
    if auth.ssl_context is not None:
        return faust.SSLCredentials(auth.ssl_context)
    return None


def check_connection(settings: ConsumerSettings, timeout_s: float) -> None:
    """Faust's own client (aiokafka, with the settings carried over from ``--kafka-config``)
    gets the cluster's metadata within ``timeout_s``: what the librdkafka clients reached,
    Faust's must reach too. Raises :class:`ConnectError`."""
    from aiokafka.client import AIOKafkaClient  # type: ignore[import-untyped]

    auth = aiokafka_settings(settings.client_config)

    async def bootstrap() -> None:
        client = AIOKafkaClient(bootstrap_servers=settings.bootstrap.split(","),
                                request_timeout_ms=int(timeout_s * 1000),
                                **auth.client_kwargs())
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
        finally:
            await client.close()

    try:
        asyncio.run(bootstrap())
    except Exception as exc:
        raise ConnectError(
            f"Faust's Kafka client (aiokafka) could not connect to Kafka at "
            f"{redact(settings.bootstrap)} with the settings carried over from --kafka-config "
            f"({aiokafka_summary(auth)}): {redact(repr(exc))}; check them, or run "
            "--runtime kafka") from None


def aiokafka_summary(auth: AiokafkaSettings) -> str:
    """The settings of Faust's client, without secrets, for a message."""
    parts = [f"security_protocol={auth.security_protocol}"]
    if auth.sasl_mechanism is not None:
        parts.append(f"sasl_mechanism={auth.sasl_mechanism}")
        parts.append(f"sasl_plain_username={auth.sasl_plain_username}")
    if auth.ssl_context is not None:
        parts.append(f"ssl_context(check_hostname={auth.ssl_context.check_hostname})")
    return ", ".join(parts)


def build_app(settings: ConsumerSettings, topics: Sequence[str]) -> Any:
    """The Faust app of a worker: group membership and fetching only; no agents, no tables.
    Its clients connect with the ``--kafka-config`` settings (:func:`credentials`)."""
    datadir = Path(settings.work_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    auth = aiokafka_settings(settings.client_config)
    client_id: dict[str, Any] = ({} if auth.client_id is None
                                 else {"broker_client_id": auth.client_id})
    app = faust.App(
        settings.group_id,
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap.split(",")],
        broker_credentials=credentials(auth),
        **client_id,
        datadir=str(datadir),
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=settings.batch_size,
        consumer_max_fetch_size=16 * 1024 * 1024,
        broker_session_timeout=10.0,
        # Static membership (aiokafka's group_instance_id; None: dynamic, as before).
        consumer_group_instance_id=settings.instance_id,
        broker_heartbeat_interval=1.0,
        broker_max_poll_interval=900.0,
        broker_commit_every=None,
        stream_wait_empty=False,
        producer_threaded=False,
        TableManager=TablelessManager,
    )
    app.transport = BatchTransport(app.conf.broker_consumer, app)
    app.topics.add(app.topic(*topics))
    return app


class _Bridge:
    """Faust's side of the hand-over; every method runs on Faust's event loop."""

    def __init__(self, source: FaustConsumer, loop: asyncio.AbstractEventLoop) -> None:
        self.source = source
        self.loop = loop
        self.expected: dict[TP, int] = {}  # next offset to hand over, per assigned partition
        self.epoch: dict[TP, int] = {}  # bumped around every seek
        self.gaps: dict[TP, tuple[int, int]] = {}  # (wanted, fetched first) already sought again
        # Clear while an assignment is being answered: what is fetched meanwhile is of
        # partitions not yet ours, would be dropped and fetched again after the seek.
        self.steady = asyncio.Event()
        self.steady.set()
        self.tasks: set[asyncio.Task[None]] = set()  # advisory commits under way

    async def call(self, kind: str, partitions: list[TP]) -> dict[TP, int]:
        # An empty assignment is told too: the worker has joined the group (/health/ready),
        # as with the kafka runtime.
        if (not partitions and kind != "assign") or self.source.closed.is_set():
            return {}
        reply: asyncio.Future[dict[TP, int]] = self.loop.create_future()
        self.source.inbox.put(_Call(kind, partitions, reply))
        return await reply

    async def on_assigned(self, _sender: Any, assigned: set[Any], **_kw: Any) -> None:
        tps = sorted((tp.topic, tp.partition) for tp in assigned)
        self.steady.clear()
        try:
            starts = await self.call("assign", tps)
            for tp in tps:
                self.expected[tp] = starts.get(tp, 0)
                self.gaps.pop(tp, None)
            await self._seek(self.source.app.consumer, {tp: self.expected[tp] for tp in tps})
        finally:
            self.steady.set()
        # The stored state may be ahead of the group's committed offsets (the previous owner
        # stored its last batches at revoke, too late to commit them to the group): tell the
        # group, or a worker waiting for it (stop-at-end) would wait for nothing. Not awaited
        # here: a commit can wait for the rebalance this callback is part of to end.
        ahead = {tp: o for tp, o in starts.items() if o > 0 and tp in self.expected}
        if ahead:
            task = self.loop.create_task(self.source._commit(ahead, ahead_only=True))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def on_revoked(self, _sender: Any, revoked: set[Any], **_kw: Any) -> None:
        tps = sorted((tp.topic, tp.partition) for tp in revoked)
        for tp in tps:
            self.expected.pop(tp, None)
            self.gaps.pop(tp, None)
        await self.call("revoke", tps)

    async def seek_assigned(self, consumer: Any) -> None:
        offsets = {}
        for tp in consumer.assignment():
            key = (tp.topic, tp.partition)
            if key in self.expected:
                offsets[key] = self.expected[key]
        await self._seek(consumer, offsets)

    async def _seek(self, consumer: Any, offsets: Mapping[TP, int]) -> None:
        if not offsets:
            return
        for tp in offsets:
            self.epoch[tp] = self.epoch.get(tp, 0) + 1
        await consumer.seek_wait({AioTP(t, p): o for (t, p), o in offsets.items()})
        for tp in offsets:
            self.epoch[tp] = self.epoch.get(tp, 0) + 1

    async def drain(self, consumer: Any, fetcher: Any) -> None:
        """Fetch whole batches and hand each to the worker; the next waits for the last."""
        while not (consumer.should_stop or fetcher.should_stop or self.source.closed.is_set()):
            await self.steady.wait()
            epochs = dict(self.epoch)
            records, _active = await consumer._wait_next_records(1.0)
            if not records:
                continue
            batch = await self._accept(consumer, records, epochs)
            if batch:
                done: asyncio.Future[None] = self.loop.create_future()
                self.source.inbox.put(_Batch(batch, done))
                await done

    async def _accept(
        self, consumer: Any, records: Mapping[Any, RecordBatch], epochs: dict[TP, int]
    ) -> dict[TP, RecordBatch]:
        out: dict[TP, RecordBatch] = {}
        reseek: dict[TP, int] = {}
        for aio_tp, batch in records.items():
            tp = (aio_tp.topic, aio_tp.partition)
            want = self.expected.get(tp)
            if want is None or not batch:
                continue  # not ours (yet, any more)
            if batch.offsets[-1] < want:
                continue  # before the resume point
            batch = batch.since(want)
            first = batch.offsets[0]
            if first > want:
                # Fetched from elsewhere (before a seek landed, or aiokafka's own
                # committed-offset reset landed after one): seek again. The same answer twice,
                # from fetches that no seek overlapped, means the log holds nothing in between
                # (retention, compaction, transaction markers).
                settled = self.epoch.get(tp, 0) == epochs.get(tp, 0)
                if not settled or self.gaps.get(tp) != (want, first):
                    if settled:
                        self.gaps[tp] = (want, first)
                    log.info("%s[%d]: fetched from %d, want %d; seeking", *tp, first, want)
                    reseek[tp] = want
                    continue
                log.warning("%s[%d]: no records at offsets %d..%d; going on from %d",
                            *tp, want, first - 1, first)
            # Records that follow on from the resume point are the right ones whichever fetch
            # brought them (offsets name records): never drop them, a dropped tail would not
            # be fetched again.
            self.gaps.pop(tp, None)
            out[tp] = batch
            self.expected[tp] = batch.offsets[-1] + 1
        if reseek:
            await self._seek(consumer, reseek)
        return out


class FaustConsumer:
    """The ``faust`` runtime's :class:`~streamfeat.runtime.consumers.GroupConsumer`.

    The Faust app runs on its own event loop in a background thread; the worker core calls
    :meth:`poll` from its own thread, which also runs the assignment callbacks.
    """

    def __init__(self, settings: ConsumerSettings) -> None:
        self.settings = settings
        self.inbox: queue.Queue[_Call | _Batch] = queue.Queue()
        self.closed = threading.Event()
        self.app: Any = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._in_hand: asyncio.Future[None] | None = None
        self._on_assign: OnAssign | None = None
        self._on_revoke: OnRevoke | None = None
        self._topics: list[str] = []
        self.max_records = first_size(settings.batch_size)
        """Records the worker asked for at its last poll: the next fetch takes at most these
        (a fetch follows each poll: one batch is in flight at a time). The first fetch,
        made as partitions are assigned, takes what the worker's first poll asks for."""
        # Metadata and the group's committed offsets (read-only; never joins the group).
        self._query = QueryConsumer({
            **settings.librdkafka(), "group.id": settings.group_id, "enable.auto.commit": False,
        })

    # ------------------------------------------------------------------ the worker's side
    def subscribe(self, topics: Sequence[str], on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._topics = list(topics)
        self._thread = threading.Thread(
            target=self._run, args=(list(topics),), name="streamfeat-faust", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(120) or self._failure is not None:
            raise RuntimeError(f"the Faust app did not start: {self._failure!r}")

    def poll(self, max_records: int, timeout_s: float) -> dict[TP, RecordBatch]:
        self.max_records = max_records  # the next fetch's size, read by the consumer thread
        self._release()  # the batch handed out last time is fully handled
        deadline = time.monotonic() + timeout_s
        while True:
            if self._failure is not None:
                raise RuntimeError(f"the Faust app stopped: {self._failure!r}")
            try:
                item = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return {}
            if isinstance(item, _Batch):
                self._in_hand = item.done
                return item.records
            if self._on_assign is None or self._on_revoke is None:
                raise RuntimeError("poll() before subscribe()")
            if item.kind == "assign":
                self._reply(item.reply, self._on_assign(item.partitions))
            else:
                self._on_revoke(item.partitions)
                self._reply(item.reply, {})

    def commit(self, offsets: Mapping[TP, int]) -> None:
        if self._loop is None or self.app is None or self.closed.is_set():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            asyncio.run_coroutine_threadsafe(self._commit(dict(offsets)), self._loop)

    def committed(self, partitions: Sequence[TP]) -> dict[TP, int]:
        got = self._query.committed([TopicPartition(t, p) for t, p in partitions], timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in got}

    def watermarks(self, tp: TP, *, cached: bool = False) -> tuple[int, int]:
        if cached:
            # The last high watermark a fetch brought (no request: the worker's loop calls
            # this for its lag gauge and must not wait on a broker that is away).
            app = self.app
            thread = None if app is None else getattr(app.consumer, "_thread", None)
            consumer = None if thread is None else getattr(thread, "_consumer", None)
            high = None if consumer is None else consumer.highwater(AioTP(*tp))
            if high is None:
                raise RuntimeError(f"no high watermark of {tp[0]}[{tp[1]}] fetched yet")
            return -1, int(high)
        return self._query.get_watermark_offsets(TopicPartition(*tp), timeout=30)

    def partitions(self, topic: str) -> list[int]:
        meta = self._query.list_topics(topic, timeout=30)
        return sorted(meta.topics[topic].partitions)

    def probe(self, timeout_s: float) -> None:
        # Through the query consumer: Faust's own client reports no errors to the worker.
        try:
            self._query.list_topics(self._topics[0] if self._topics else None,
                                    timeout=timeout_s)
        finally:
            # Nothing else polls this consumer: serve its queued log lines (streamfeat.kafka),
            # so that they are shown and do not pile up during an outage.
            self._query.poll(0)

    def close(self) -> None:
        self.closed.set()
        self._release()
        while True:  # nobody answers assignment changes any more: let Faust go on
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Batch):
                self._resolve(item.done, None)
            else:
                self._reply(item.reply, {})
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(60)
            if self._thread.is_alive():
                log.warning("the Faust app did not stop within 60 s")
        self._query.close()

    def _release(self) -> None:
        if self._in_hand is not None:
            self._resolve(self._in_hand, None)
            self._in_hand = None

    def _reply(self, fut: asyncio.Future[dict[TP, int]], value: dict[TP, int]) -> None:
        self._resolve(fut, value)

    def _resolve(self, fut: asyncio.Future[Any], value: Any) -> None:
        def resolve() -> None:
            if not fut.done():
                fut.set_result(value)

        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(resolve)

    # ------------------------------------------------------------------ Faust's side
    def _run(self, topics: list[str]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._main(topics))
        except BaseException as exc:
            self._failure = exc
            log.exception("the Faust app failed")
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self, topics: list[str]) -> None:
        self._stop = asyncio.Event()
        app = build_app(self.settings, topics)
        bridge = _Bridge(self, asyncio.get_running_loop())
        app.transport.bridge = bridge
        app.on_partitions_assigned.connect(bridge.on_assigned)
        app.on_partitions_revoked.connect(bridge.on_revoked)
        self.app = app
        if not log.isEnabledFor(logging.DEBUG):  # Faust's per-service chatter
            for name in ("faust", "mode", "aiokafka", __name__, ColumnarConsumerThread.__module__):
                logging.getLogger(name).setLevel(logging.WARNING)
        self._ready.set()  # start() returns after the first rebalance, which needs poll()
        await app.start()
        try:
            while not self._stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.5)
                if app.crashed:
                    self._failure = app.crash_reason or RuntimeError("crashed")
                    break
        finally:
            for task in bridge.tasks:
                task.cancel()
            await app.stop()

    async def _commit(self, offsets: dict[TP, int], *, ahead_only: bool = False) -> None:
        if not offsets:
            return
        thread = self.app.consumer._thread

        async def commit() -> None:
            consumer = thread._ensure_consumer()
            assigned = consumer.assignment()
            wanted = {AioTP(t, p): OffsetAndMetadata(o, "") for (t, p), o in offsets.items()}
            wanted = {tp: o for tp, o in wanted.items() if tp in assigned}
            if ahead_only:  # never move the group's committed offset backwards
                for tp in list(wanted):
                    if ((await consumer.committed(tp)) or -1) >= wanted[tp].offset:
                        del wanted[tp]
            if wanted:
                await consumer.commit(wanted)

        try:
            await thread.call_thread(commit)
        except Exception as exc:  # advisory: a rebalance may be under way; the next one counts
            log.debug("commit of %s: %r", offsets, exc)
