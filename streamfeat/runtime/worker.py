"""``streamfeat worker``: consume Kafka in batches, run the operators, write Redis, keep state.

Order of effects for every batch, which is what makes a crash at any instant safe:
1. the operators aggregate the batch in memory;
2. the Redis sink writes the new values (compare-and-set on ``_v``; retried until Redis
   accepts, consumption pauses meanwhile). The writes run on a background thread
   (:mod:`streamfeat.runtime.background`) while the next batch is aggregated, at most two
   batches behind, and are drained before step 4;
3. dead letters are produced and flushed to ``<topic>.dlq`` (retried likewise);
4. the changed state and the next offset are committed to RocksDB in one write batch
   (every ``commit_every_s``, default 5 s, at revoke and at shutdown: committing less
   often than every batch only means a crash redoes a little more, with the same result).
A crash before 4 replays the batch on restart: the same values with the same versions are
written again (idempotent), dead letters already sent are recognised and not sent twice.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streamfeat.errors import SinkError
from streamfeat.metrics import Metrics, MetricsServer
from streamfeat.pipeline import DeadLetter, PartitionPipeline
from streamfeat.records import RawRecord, RecordBatch
from streamfeat.runtime.background import BackgroundWriter
from streamfeat.runtime.source import TP, ConsumerSource, KafkaSource
from streamfeat.sinks import RedisSink, UpdateBatch
from streamfeat.snapshot import SnapshotWriter
from streamfeat.state import PartitionStore
from streamfeat.topology import TopologyDef

__all__ = ["Worker", "WorkerConfig"]

log = logging.getLogger("streamfeat.worker")

DLQ_REASON = "streamfeat-reason"
DLQ_KIND = "streamfeat-kind"
DLQ_TOPOLOGY = "streamfeat-topology"
DLQ_TOPIC = "streamfeat-topic"
DLQ_PARTITION = "streamfeat-partition"
DLQ_OFFSET = "streamfeat-offset"
_DLQ_TAIL = 5000  # dead letters read back on assignment to avoid sending one twice


@dataclass
class WorkerConfig:
    topologies: Sequence[TopologyDef]
    kafka: str
    redis: str
    state_dir: Path
    snapshot_dir: Path | None = None
    metrics_port: int | None = None
    stop_at_end: bool = False
    group_id: str | None = None
    batch_size: int = 20_000
    poll_timeout_s: float = 0.005  # the longest a small batch waits for more records
    commit_every_s: float = 5.0
    generation: int = 0
    snapshot_every_s: float = 60.0
    snapshot_max_rows: int = 100_000  # per partition: bounds the memory of the buffer
    kafka_config: dict[str, Any] = field(default_factory=dict)
    runtime: str = "faust"  # "faust" (faust-streaming) | "kafka" (confluent-kafka)


def _backoff(attempt: int) -> float:
    return min(5.0, 0.05 * float(1 << min(attempt, 7)))


class Worker:
    """Runs topologies over Kafka; several workers with one group share the partitions."""

    def __init__(self, config: WorkerConfig, source: ConsumerSource | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.by_topic: dict[str, list[TopologyDef]] = defaultdict(list)
        for topology in config.topologies:
            self.by_topic[topology.source.topic].append(topology)
        names = "+".join(sorted(t.name for t in config.topologies))
        self.group_id = config.group_id or f"streamfeat.{names}"
        self.sinks = {t.name: RedisSink(config.redis, t) for t in config.topologies}
        self._sink_writer = BackgroundWriter("streamfeat-sink")
        self.processors: dict[tuple[str, int], list[PartitionPipeline]] = {}
        self.snapshots: dict[tuple[str, int], SnapshotWriter] = {}
        self.dlq_sent: dict[tuple[str, str, int], int] = {}  # (topology, topic, p) -> max offset
        self.end_offsets: dict[tuple[str, int], int] = {}
        self._assigned_once = False
        self._stopping = False
        self._retrying_since: float | None = None
        self._last_batch = time.time()
        self._last_lag = 0.0
        self._last_fence_check: dict[str, float] = {}
        self.fenced: dict[str, int] = {}  # topology -> higher generation found in Redis
        self._last_group_check = 0.0
        self._last_commit = time.time()
        self._uncommitted: dict[tuple[str, int, int], PartitionPipeline] = {}
        self._in_batch = False
        self._dlq_reader: Consumer | None = None
        self._announce: dict[TP, int] = {}
        base = {"bootstrap.servers": config.kafka, **config.kafka_config}
        self.source = source if source is not None else self._new_source(base)
        self.producer = Producer({**base, "enable.idempotence": True, "linger.ms": 5})
        self.admin = AdminClient(base)
        self.server: MetricsServer | None = None

    def _new_source(self, base: dict[str, Any]) -> ConsumerSource:
        if self.config.runtime == "kafka":
            return KafkaSource(base, self.group_id, on_error=self._on_kafka_error)
        if self.config.runtime == "faust":
            from streamfeat.runtime.faust_app import FaustSource

            return FaustSource(self.config, self.group_id)
        raise ValueError(f"unknown runtime {self.config.runtime!r}: use 'faust' or 'kafka'")

    def _on_kafka_error(self) -> None:
        self.metrics.retries.labels("kafka").inc()

    # ------------------------------------------------------------------ lifecycle
    def stop(self, *_: object) -> None:
        self._stopping = True

    def health(self) -> dict[str, Any]:
        retrying = self._retrying_since is not None and time.time() - self._retrying_since > 30
        return {
            "healthy": not retrying and not self.fenced,
            "retrying_since": self._retrying_since,
            "fenced_by_generation": dict(self.fenced),
            "assigned": sorted(f"{t}[{p}]" for t, p in self.processors),
            "last_batch_age_s": round(time.time() - self._last_batch, 3),
        }

    def run(self) -> int:
        """Run until stopped (SIGTERM/SIGINT) or, with ``stop_at_end``, until caught up."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        if self.config.metrics_port is not None:
            self.server = MetricsServer(self.metrics, self.config.metrics_port, self.health)
            self.server.start()
        self._ensure_dlq_topics()
        if self.config.stop_at_end:
            self._capture_end_offsets()
        self.source.subscribe(list(self.by_topic), self._on_assign, self._on_revoke)
        try:
            while not self._stopping:
                batch = self.source.poll(self.config.batch_size, self.config.poll_timeout_s)
                positions = self._handle(batch) if batch else {}
                if not batch and self._uncommitted and (
                        time.time() - self._last_commit >= self.config.commit_every_s
                        or (self.config.stop_at_end and self._own_caught_up())):
                    # idle: store what the last batches did (at once when done with ours
                    # at --stop-at-end: other workers of the group wait on our offsets)
                    positions = self._commit_state()
                if self._announce:
                    positions = {**self._announce, **positions}
                    self._announce.clear()
                if positions:
                    # Kafka's committed offsets are only for lag dashboards and
                    # stop-at-end; the resume point is the offset stored in RocksDB.
                    self.source.commit(positions)
                self._report_lag()
                if self.config.stop_at_end and self._caught_up():
                    log.info("caught up with the end offsets found at start; stopping")
                    break
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        for writer in self.snapshots.values():
            with contextlib.suppress(Exception):  # raised again, and logged, by close()
                writer.flush(wait=False)  # overlaps the last state commit
        try:
            # After a failure inside a batch, the in-memory state holds effects that never
            # reached Redis: commit nothing, the restart redoes everything uncommitted.
            failed = self._in_batch or self._sink_writer.failed
            positions = {} if failed else self._commit_state()
            if positions:
                self.source.commit(positions)
        except Exception:  # a dependency is down: the uncommitted batches are redone on restart
            log.exception("final commit failed; the next start redoes the uncommitted batches")
        except SystemExit:  # stopped while the sink retried: nothing more is committed
            log.warning("stopped while Redis was unavailable; the next start redoes the "
                        "uncommitted batches")
        try:
            self.source.close()  # may revoke: closes the partition stores, flushes snapshots
        finally:
            for writer in list(self.snapshots.values()):
                writer.close()
            self.snapshots.clear()
            for procs in list(self.processors.values()):
                for proc in procs:
                    proc.close()
            self.processors.clear()
            self.producer.flush(10)
            if self._dlq_reader is not None:
                self._dlq_reader.close()
            self._stopping = True  # a write still retrying gives up: nothing more commits
            self._sink_writer.close()
            for sink in self.sinks.values():
                sink.close()
            if self.server is not None:
                self.server.stop()

    # ------------------------------------------------------------------ assignment
    def _on_assign(self, partitions: list[TP]) -> dict[TP, int]:
        """Open the partitions' state; returns the offset each must be read from."""
        self._assigned_once = True
        starts: dict[TP, int] = {}
        for topic, partition in partitions:
            if (topic, partition) in self.processors:  # assigned again without a revoke
                self._on_revoke([(topic, partition)])
            procs = []
            for topology in self.by_topic[topic]:
                store = PartitionStore(self.config.state_dir, topology.name, topic, partition)
                proc = PartitionPipeline(
                    topology, partition, generation=self.config.generation, store=store
                )
                procs.append(proc)
            self.processors[(topic, partition)] = procs
            start = min((p.next_offset or 0) for p in procs)
            if self.config.snapshot_dir is not None:
                writer = SnapshotWriter(self.config.snapshot_dir, topic, partition,
                                        every_s=self.config.snapshot_every_s,
                                        max_rows=self.config.snapshot_max_rows)
                self.snapshots[(topic, partition)] = writer
                # Records consumed before a crash but not yet in a snapshot are read again,
                # for the snapshot only (the operators skip what their state already holds).
                start = min(start, writer.next_offset or 0)
            starts[(topic, partition)] = start
            if start > 0:
                # Tell the group where this owner stands, so that workers waiting on the
                # group's offsets (--stop-at-end) see a partition whose state is already
                # complete as such, before any new record arrives.
                self._announce[(topic, partition)] = start
            log.info("assigned %s[%d] from offset %d", topic, partition, start)
        self._read_dlq_tails(list(partitions))
        return starts

    def _on_revoke(self, partitions: list[TP]) -> None:
        self._commit_state(set(partitions))  # what was processed is stored before letting go
        for topic, partition in partitions:
            for proc in self.processors.pop((topic, partition), []):
                proc.close()
            writer = self.snapshots.pop((topic, partition), None)
            if writer is not None:
                writer.close()
            log.info("revoked %s[%d]", topic, partition)

    # ------------------------------------------------------------------ the hot path
    def _handle(self, by_tp: dict[TP, RecordBatch]) -> dict[TP, int]:
        """Process one batch: operators, Redis, dead letters, then RocksDB.

        Returns the next offsets of the partitions it advanced (for the group's commit).
        """
        self._in_batch = True  # until its effects are stored, its state must not be committed
        updates: dict[str, list[UpdateBatch]] = defaultdict(list)
        dead: list[tuple[str, DeadLetter]] = []
        touched: list[PartitionPipeline] = []
        oldest_kafka_ts: dict[str, int] = {}
        for (topic, partition), records in by_tp.items():
            writer = self.snapshots.get((topic, partition))
            if writer is not None:
                writer.append(records)
            for proc in self.processors.get((topic, partition), []):
                todo = records.since(proc.next_offset or 0)
                if not todo:
                    continue
                outcome = proc.process(todo)
                name = proc.topology.name
                labels = (name, str(partition))
                self.metrics.consumed.labels(*labels).inc(outcome.consumed)
                self.metrics.aggregated.labels(*labels).inc(outcome.aggregated)
                self.metrics.late.labels(*labels).inc(outcome.late)
                self.metrics.malformed.labels(*labels).inc(outcome.malformed)
                if proc.stream_time is not None:
                    self.metrics.stream_time.labels(*labels).set(proc.stream_time)
                    self.metrics.staleness.labels(*labels).set(
                        max(0.0, time.time() - proc.stream_time / 1000)
                    )
                updates[name].extend(outcome.updates)
                dead.extend((topic, d) for d in outcome.dead)
                touched.append(proc)
                first_ts = todo.kafka_ts[0]
                oldest_kafka_ts[name] = min(oldest_kafka_ts.get(name, first_ts), first_ts)
        for name, batch in updates.items():
            # Written by the background thread while the next batch is processed; the
            # state commit drains it first, so no offset is stored before its writes.
            self._sink_writer.submit(
                partial(self._write_sink, name, batch, oldest_kafka_ts.get(name))
            )
        if dead:
            self._send_dead_letters(dead)
        self._flush_due_snapshots()
        for proc in touched:
            self._uncommitted[(proc.topology.name, proc.partition, id(proc))] = proc
        now = time.time()
        self._last_batch = now
        self._in_batch = False
        if now - self._last_commit >= self.config.commit_every_s:
            return self._commit_state()
        return {}

    def _commit_state(self, only: set[TP] | None = None) -> dict[TP, int]:
        """Commit the state and next offset of processed partitions to RocksDB.

        Returns the partitions' next offsets, for the group's (advisory) commit.
        """
        self._sink_writer.drain()  # every write of the batches committed here is in Redis
        done: set[TP] = set()
        for key, proc in list(self._uncommitted.items()):
            tp = (proc.topology.source.topic, proc.partition)
            if only is not None and tp not in only:
                continue
            proc.commit()
            del self._uncommitted[key]
            done.add(tp)
        if only is None:
            self._last_commit = time.time()
        positions: dict[TP, int] = {}
        for tp in done:
            procs = self.processors.get(tp)
            if procs:
                positions[tp] = min((p.next_offset or 0) for p in procs)
        return positions

    def _flush_due_snapshots(self) -> None:
        now = time.time()
        for (topic, _partition), writer in self.snapshots.items():
            if writer.due(now):
                writer.flush(wait=False)  # written in the background; close() waits
            else:
                writer.poll()
            oldest = writer.oldest_unflushed_kafka_ts
            lag = 0.0 if oldest is None else max(0.0, now - oldest / 1000)
            self.metrics.snapshot_lag.labels(topic).set(lag)

    def _write_sink(self, name: str, batch: list[UpdateBatch], oldest_kafka_ts: int | None,
                    ) -> None:
        """Write one batch's updates, retrying until Redis accepts (on the sink thread)."""
        sink = self.sinks[name]
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = sink.write(batch)
            except SinkError as exc:
                self._retry_wait("redis", attempt, exc)
                attempt += 1
                continue
            self._retrying_since = None
            self.metrics.redis_write.labels(name).observe(time.perf_counter() - started)
            if result.rejected:
                self.metrics.redis_rejected.labels(name).inc(result.rejected)
            if result.stale_ids:
                self._check_fence(name, sink, result.stale_ids[0])
            if oldest_kafka_ts is not None:
                age = time.time() - oldest_kafka_ts / 1000
                self.metrics.event_to_redis.labels(name).observe(max(0.0, age))
            return

    def _check_fence(self, name: str, sink: RedisSink, entity_id: str) -> None:
        """Tell the operator when refused writes come from a backfill's higher generation.

        A refused write is usually harmless (a restarted worker re-sending what it wrote
        before); one refused because Redis holds a higher generation means that every write
        of this worker to those entities is lost until it is restarted with that generation.
        """
        now = time.time()
        if now - self._last_fence_check.get(name, 0.0) < 30:
            return
        self._last_fence_check[name] = now
        try:
            stored = sink.stored_version(entity_id)
        except SinkError:
            return  # Redis trouble shows in the next write; checked again then
        if stored is None or stored[0] <= self.config.generation:
            return
        self.fenced[name] = stored[0]
        self.metrics.fenced_generation.labels(name).set(stored[0])
        log.error("Redis holds values of topology %r at generation %d (written by a backfill), "
                  "above this worker's generation %d: its writes to those entities are refused. "
                  "Restart the workers with --generation %d.",
                  name, stored[0], self.config.generation, stored[0])

    def _retry_wait(self, dependency: str, attempt: int, exc: Exception) -> None:
        if self._retrying_since is None:
            self._retrying_since = time.time()
        self.metrics.retries.labels(dependency).inc()
        if attempt % 10 == 0:
            log.warning("%s unavailable (%s); retrying, consumption paused", dependency, exc)
        if self._stopping:
            # Nothing of this batch is committed: a restart redoes it. Safe to leave now.
            raise SystemExit(1)
        time.sleep(_backoff(attempt))

    def _send_dead_letters(self, dead: list[tuple[str, DeadLetter]]) -> None:
        pending: list[tuple[str, DeadLetter]] = []
        for topic, d in dead:
            key = (d.topology, topic, d.record.partition)
            if d.record.offset <= self.dlq_sent.get(key, -1):
                continue  # sent before a crash or by the previous owner of the partition
            pending.append((topic, d))
        attempt = 0
        failed: list[tuple[str, DeadLetter]] = []

        def on_delivery(err: KafkaError | None, _msg: Message, item: Any) -> None:
            if err is not None:
                failed.append(item)

        while pending:
            failed.clear()
            for topic, d in pending:
                r = d.record
                headers: list[tuple[str, str | bytes | None]] = [
                    (DLQ_REASON, d.reason.encode()),
                    (DLQ_KIND, d.kind.encode()),
                    (DLQ_TOPOLOGY, d.topology.encode()),
                    (DLQ_TOPIC, topic.encode()),
                    (DLQ_PARTITION, str(r.partition).encode()),
                    (DLQ_OFFSET, str(r.offset).encode()),
                ]
                self._produce(f"{topic}.dlq", r, headers, _bind(on_delivery, (topic, d)))
            remaining = self.producer.flush(30)
            if remaining == 0 and not failed:
                break
            undelivered = RuntimeError(f"{remaining + len(failed)} dead letters undelivered")
            self._retry_wait("kafka", attempt, undelivered)
            attempt += 1
            if remaining == 0:
                pending = list(failed)
        for topic, d in dead:
            key = (d.topology, topic, d.record.partition)
            self.dlq_sent[key] = max(self.dlq_sent.get(key, -1), d.record.offset)

    def _produce(
        self, topic: str, r: RawRecord, headers: list[tuple[str, str | bytes | None]],
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        while True:
            try:
                self.producer.produce(
                    topic, key=r.key, value=r.value, partition=r.partition, headers=headers,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                self.producer.poll(0.1)

    # ------------------------------------------------------------------ topics and offsets
    def _ensure_dlq_topics(self) -> None:
        meta = self.admin.list_topics(timeout=30)
        wanted = []
        for topic in self.by_topic:
            src = meta.topics.get(topic)
            if src is None or src.error is not None:
                self.admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
                meta = self.admin.list_topics(timeout=30)
                src = meta.topics[topic]
            dlq = f"{topic}.dlq"
            if dlq not in meta.topics:
                wanted.append(NewTopic(dlq, len(src.partitions), 1))
        for topic, future in self.admin.create_topics(wanted).items() if wanted else []:
            try:
                future.result(30)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
            log.info("created dead-letter topic %s", topic)

    def _capture_end_offsets(self) -> None:
        for topic in self.by_topic:
            for p in self.source.partitions(topic):
                low, high = self.source.watermarks((topic, p))
                # A partition whose records were all deleted (retention) has nothing to read.
                self.end_offsets[(topic, p)] = high if high > low else 0

    def _own_caught_up(self) -> bool:
        """Every partition assigned here processed up to the end offsets found at start."""
        if not self._assigned_once:
            return False
        for key, procs in self.processors.items():
            end = self.end_offsets.get(key, 0)
            if any((p.next_offset or 0) < end for p in procs):
                return False
            writer = self.snapshots.get(key)
            if writer is not None and (writer.next_offset or 0) + writer.buffered < end:
                return False
        return True

    def _caught_up(self) -> bool:
        """Every partition processed up to the end offsets found at start, by us or the group.

        Our own partitions are judged by the offsets stored with their state; the others by
        the group's committed offsets (workers commit them after each stored batch), so a
        worker does not stop while a dead member's partitions still wait for reassignment.
        """
        if not self._own_caught_up():
            return False
        others = [tp for tp, end in self.end_offsets.items()
                  if end > 0 and tp not in self.processors]
        if not others:
            return True
        now = time.time()
        if now - self._last_group_check < 1.0:
            return False
        self._last_group_check = now
        try:
            committed = self.source.committed(others)
        except Exception as exc:  # the coordinator may be moving; ask again later
            log.debug("committed offsets: %s", exc)
            return False
        return all(committed.get(tp, -1) >= self.end_offsets[tp] for tp in others)

    def _read_dlq_tails(self, partitions: list[TP]) -> None:
        """Learn which dead letters of these partitions were already sent (crash, takeover).

        Reads the last ``_DLQ_TAIL`` records of each ``<topic>.dlq`` partition, all in one
        pass with one long-lived reader (a consumer per partition costs about a second).
        """
        if self._dlq_reader is None:
            self._dlq_reader = Consumer({
                "bootstrap.servers": self.config.kafka, "group.id": f"{self.group_id}.dlq-tail",
                "enable.auto.commit": False, **self.config.kafka_config,
            })
        reader = self._dlq_reader
        todo: dict[tuple[str, int], int] = {}  # dlq partition -> last offset to read
        starts = []
        for topic, partition in partitions:
            dlq = f"{topic}.dlq"
            low, high = reader.get_watermark_offsets(TopicPartition(dlq, partition), timeout=30)
            if high > low:
                todo[(dlq, partition)] = high - 1
                starts.append(TopicPartition(dlq, partition, max(low, high - _DLQ_TAIL)))
        if not todo:
            return
        reader.assign(starts)
        deadline = time.time() + 60
        try:
            while todo and time.time() < deadline:
                for m in reader.consume(10_000, 0.5):
                    if m.error() is not None:
                        continue
                    dlq_tp = (cast(str, m.topic()), cast(int, m.partition()))
                    offset = cast(int, m.offset())
                    if offset >= todo.get(dlq_tp, offset + 1):
                        del todo[dlq_tp]
                    h = dict(m.headers() or [])
                    topic = _text(h.get(DLQ_TOPIC))
                    key = (_text(h.get(DLQ_TOPOLOGY)), topic, dlq_tp[1])
                    off = int(_text(h.get(DLQ_OFFSET)) or -1)
                    self.dlq_sent[key] = max(self.dlq_sent.get(key, -1), off)
        finally:
            reader.unassign()
        if todo:
            log.warning("could not read the end of %s within 60 s; a dead letter sent before "
                        "a crash may be sent again", sorted(todo))

    def _report_lag(self) -> None:
        now = time.time()
        if now - self._last_lag < 5:
            return
        self._last_lag = now
        for (topic, partition), procs in self.processors.items():
            for proc in procs:
                labels = (proc.topology.name, str(partition))
                self.metrics.entities.labels(*labels).set(proc.operator.entity_count)
                self.metrics.state_bytes.labels(*labels).set(proc.operator.approx_state_bytes())
            try:
                _low, high = self.source.watermarks((topic, partition), cached=True)
            except Exception as exc:  # statistics not available yet
                log.debug("watermarks of %s[%d]: %s", topic, partition, exc)
                continue
            position = min((p.next_offset or 0) for p in procs)
            self.metrics.lag.labels(topic, str(partition)).set(max(0, high - position))


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _bind(
    fn: Callable[[KafkaError | None, Message, Any], None], item: Any
) -> Callable[[KafkaError | None, Message], None]:
    return lambda err, msg: fn(err, msg, item)
