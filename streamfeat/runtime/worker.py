"""``streamfeat worker``: consume Kafka in batches, run the pipelines, write Redis, keep state.

Each concern has its own object; this module only wires them and runs the loop:

* :mod:`.consumers`: the group member (``faust``, ``kafka`` or in-memory), one seam;
* :mod:`.assignment`: the pipelines and snapshot writers of the partitions owned;
* :mod:`.publish`: each batch's values to the sink, in the background, retried;
* :mod:`.deadletters`: malformed and late records to ``<topic>.dlq``, exactly once;
* :mod:`.checkpoint`: state and next offset to RocksDB, never before the effects above;
* :mod:`.endoffsets`: ``--stop-at-end``; :mod:`.fencing` and :mod:`.health`: ``/health``
  (each dependency's failures, from calls, retries and idle-time probes);
* :mod:`.summary`: the run's own counters, the summary line logged at the end, and the exit
  status of a worker that stops fenced off by a backfill (:data:`.summary.EXIT_FENCED`).

Per batch: snapshot the raw records, run each topology's pipeline, submit the values,
send the dead letters (acknowledged before going on), then mark the pipelines pending for
the next checkpoint commit. A crash at any instant restarts from the last commit and redoes
what followed: the same values with the same versions, each dead letter once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from streamfeat.errors import SinkError, SourceError, StateError
from streamfeat.metrics import Metrics, MetricsServer
from streamfeat.monitoring import open_monitor
from streamfeat.operators import warm_kernels
from streamfeat.pipeline import BatchOutcome, PartitionPipeline
from streamfeat.pipeline.cache import StateBudget
from streamfeat.pipeline.rekey import is_rekeyed, repartition_topic
from streamfeat.records import RecordBatch
from streamfeat.registry import record_deployments
from streamfeat.retry import backoff_s
from streamfeat.runtime.assignment import Assignment, SnapshotFactory, plan_stages
from streamfeat.runtime.batching import BatchSizer
from streamfeat.runtime.checkpoint import Checkpoint, Stage
from streamfeat.runtime.config import WorkerConfig
from streamfeat.runtime.consumers import (
    TP,
    ConsumerSettings,
    GroupConsumer,
    KafkaHistory,
    TopicHistory,
    open_consumer,
)
from streamfeat.runtime.deadletters import (
    DeadLetterOutput,
    DeadLetterQueue,
    KafkaDeadLetters,
    Letter,
)
from streamfeat.runtime.endoffsets import EndOffsets
from streamfeat.runtime.fencing import FenceWatch
from streamfeat.runtime.health import Health, Probe, ProbeThread
from streamfeat.runtime.publish import FeatureSink, OnRetry, Publisher
from streamfeat.runtime.recompute import Recomputer
from streamfeat.runtime.repartition import (
    KafkaRepartition,
    RepartitionOutput,
    release_in_time_order,
)
from streamfeat.runtime.summary import EXIT_FENCED, CountingSink, RunTotals
from streamfeat.sinks import RedisSink, UpdateBatch
from streamfeat.snapshot import SnapshotWriter, snapshot_store
from streamfeat.state.durable import Checkpoints
from streamfeat.storage import open_store

__all__ = ["Worker"]

log = logging.getLogger("streamfeat.worker")

CHANGE_SLICE_BUSY_S = 0.25
"""Time given to a definition change between two batches while records flow."""
CHANGE_SLICE_IDLE_S = 1.0
"""... and when none came."""
PROBE_TIMEOUT_S = 2.0
"""How long a health probe (Kafka metadata, Redis PING) waits for an answer."""


class Worker:
    """Runs topologies over Kafka; several workers with one group share the partitions.

    ``consumer``, ``sinks``, ``dead_letters`` and ``repartition`` default to the real ones
    (the runtime's consumer, Redis, Kafka); unit tests pass in-memory ones to check the
    order of effects.
    """

    def __init__(self, config: WorkerConfig, *, consumer: GroupConsumer | None = None,
                 sinks: Mapping[str, FeatureSink] | None = None,
                 dead_letters: DeadLetterOutput | None = None,
                 repartition: RepartitionOutput | None = None,
                 history: TopicHistory | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.metrics.describe([(t.name, t.freshness_ms) for t in config.topologies],
                              config.runtime)
        self.health = Health(self.metrics, unhealthy_after_s=config.unhealthy_after_s)
        # No working Kafka connection until the group is joined: a worker that cannot join
        # (its consumer refused, or never answered) turns unhealthy like any outage.
        self.health.failed("kafka", "not a member of the consumer group yet", source="join")
        self.plans = plan_stages(config.topologies)
        self.sizer = BatchSizer(config.batch_size, config.batch_seconds)
        """Records asked for at each poll (more while behind: runtime.batching)."""
        self.sources = sorted({t.source.topic for t in config.topologies})
        rekeyed = [t for t in config.topologies if is_rekeyed(t)]
        self.repartitions = {repartition_topic(t): t.source.topic for t in rekeyed}
        settings = ConsumerSettings(
            bootstrap=config.kafka, group_id=config.group, client_config=config.kafka_config,
            batch_size=config.batch_size, work_dir=config.state_dir,
            on_error=self._kafka_error, instance_id=config.instance_id,
            rekeyed_topics=frozenset(self.repartitions))
        self.consumer = consumer if consumer is not None else open_consumer(config.runtime,
                                                                             settings)
        # Kafka is probed on this thread, through the consumer, when no records arrive; Redis
        # on a thread of its own, so that a write hung on Redis does not hide it.
        self.kafka_probe = Probe(self.health, "kafka",
                                 lambda: self.consumer.probe(PROBE_TIMEOUT_S), source="client")
        self.redis_probe: ProbeThread | None = None
        if sinks is None:
            redis_sinks = {t.name: RedisSink(config.redis, t) for t in config.topologies}
            probed = next(iter(redis_sinks.values()))  # one Redis for every topology
            self.redis_probe = ProbeThread(
                Probe(self.health, "redis", lambda: probed.probe(PROBE_TIMEOUT_S)),
                lambda: self._last_batch)
            sinks = redis_sinks
        self.totals = RunTotals()
        sinks = {name: CountingSink(sink, self.totals) for name, sink in sinks.items()}
        self.monitor = open_monitor(config, self.metrics.registry, self.redis_probe is not None)
        self.publisher = Publisher(sinks, self.metrics,
                                   FenceWatch(config.generation, self.health),
                                   self._on_retry("redis", "write"),
                                   lambda: self.health.ok("redis", source="write"))
        if dead_letters is None:
            dead_letters = KafkaDeadLetters(settings, self.repartitions)
        self.dlq = DeadLetterQueue(dead_letters, self._on_retry("kafka", "dlq"))
        if repartition is None and rekeyed:
            repartition = KafkaRepartition(settings, self._on_retry("kafka", "repartition"))
        self.repartition = repartition
        self.checkpoint = Checkpoint(self._settle, every_s=config.commit_every_s)
        checkpoints = None
        if config.checkpoint_dir is not None:
            checkpoints = Checkpoints(open_store(config.checkpoint_dir), prefix="")
        budget = StateBudget.of_mb(config.state_cache_mb)
        self.metrics.state_budget.set(budget.total_bytes or 0)
        self.assignment = Assignment(self.plans, config.state_dir, config.generation,
                                     self._snapshot_factory(), repartition, checkpoints,
                                     budget)
        self.end = EndOffsets(sorted(self.repartitions))
        self.history = history if history is not None else KafkaHistory(settings)
        self.recomputers: dict[tuple[TP, str], Recomputer] = {}
        self.server: MetricsServer | None = None
        self._stopping = False
        self._failed = False  # after a failure nothing more is committed (see _shutdown)
        self._assigned_once = False
        self._announce: dict[TP, int] = {}  # positions to tell the group after an assignment
        self._carry: dict[TP, RecordBatch] = {}
        """Batches a pipeline took only the first part of (its new entities would have
        gone over the state budget at once): handled again, after a commit, before the
        next poll (the sizer times the batch with its rests)."""
        self._last_batch = time.time()
        self._last_gauges = 0.0
        self._last_key_warning = float("-inf")
        self._snapshot_failures: dict[TP, tuple[int, int, float]] = {}  # offset, attempt, retry at

    def stop(self, *_: object) -> None:
        self._stopping = True

    def run(self) -> int:
        """Run until stopped (SIGTERM/SIGINT) or, with ``stop_at_end``, until caught up;
        0, or :data:`~.summary.EXIT_FENCED` when a backfill's generation fenced it off."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        if self.config.metrics_port is not None:
            self.server = MetricsServer(self.metrics, self.config.metrics_port, self._health)
            self.server.start()
        if self.redis_probe is not None:
            self.redis_probe.start()
        self.monitor.start()
        warm_kernels(self.config.topologies)  # (found loaded if the command warmed them)
        if self.redis_probe is not None:  # the real Redis: its shared catalog (registry)
            record_deployments(self.config.redis, self.config.topologies, self.config.generation)
        clean = False
        try:
            self.dlq.output.prepare(self.sources)
            if self.repartition is not None:
                self.repartition.prepare({
                    topic: len(self.consumer.partitions(source))
                    for topic, source in self.repartitions.items()})
            for topic, source in self.repartitions.items():
                log.info("%s is re-keyed by entity through %s", source, topic)
            if self.config.stop_at_end:
                self.end.capture(self.consumer, self.sources)
            self.consumer.subscribe(sorted(self.plans), self._on_assign, self._on_revoke)
            while not self._stopping:
                self.health.beat()
                batch = self.consumer.poll(self.sizer.size,
                                           0.0 if self.recomputers else self.config.poll_timeout_s)
                if batch:
                    self.health.ok("kafka", source="client")  # records arrive: Kafka works
                    started = time.monotonic()
                    self._handle(batch)
                    while self._carry:  # what the state budget left for after a commit
                        self._handle_carried()
                    records = sum(map(len, batch.values()))
                    self.sizer.observe(records, time.monotonic() - started,
                                       self.assignment.record_room())
                    self.totals.batches += 1
                    self.totals.largest = max(self.totals.largest, records)
                else:
                    if self.repartition is not None:
                        with self.checkpoint.batch():  # held re-keyed records, as time allows
                            self.checkpoint.track(self._release())
                    self.kafka_probe.run_if_due(self._last_batch)
                    self._flush_due_snapshots()  # idle: the buffered records too, on time
                self._apply_changes(busy=bool(batch))
                stored = self._commit_if_due(idle=not batch)
                self._tell_group(stored)
                self._report_gauges()
                if self.config.stop_at_end and self._caught_up():
                    log.info("caught up with the end offsets found at start; stopping")
                    break
            clean = True
        finally:
            self._shutdown(clean)
        budget = self.assignment.budget
        if budget is not None:
            self.totals.evicted, self.totals.loaded = budget.evicted, budget.loaded
        log.info("%s", self.totals.summary())
        return self._exit_status()

    def _exit_status(self) -> int:
        fenced = self.health.fenced
        if not fenced:
            return 0
        generation = max(fenced.values())
        log.error("stopped fenced off by generation %d (topologies %s): Redis refused this "
                  "worker's writes to the entities a backfill rewrote; exit status %d. "
                  "Restart the workers with --generation %d.", generation,
                  ", ".join(sorted(fenced)), EXIT_FENCED, generation)
        return EXIT_FENCED

    # ------------------------------------------------------------------ one batch
    def _handle_carried(self) -> None:
        """The rest of the batches the pipelines split, after storing what they took, so
        that the cache can evict it (only stored state leaves memory)."""
        carried, self._carry = self._carry, {}
        self._tell_group(self._commit(set(carried)))
        self.totals.rests += 1
        self.metrics.batch_rests.inc()
        self._handle(carried, carried=True)

    def _handle(self, by_tp: dict[TP, RecordBatch], *, carried: bool = False) -> None:
        """Snapshot, pipelines, values, dead letters; the pipelines then await the commit.
        ``carried``: records handled before, in part (their snapshot is written)."""
        with self.checkpoint.batch():
            updates: dict[str, list[UpdateBatch]] = defaultdict(list)
            oldest: dict[str, int] = {}
            letters: list[Letter] = []
            touched: list[tuple[TP, Stage]] = []
            for tp, records in by_tp.items():
                writer = self.assignment.snapshots.get(tp)
                if writer is not None and not carried:
                    writer.append(records)
                for pipeline in self.assignment.pipelines.get(tp, []):
                    todo = records.since(pipeline.next_offset or 0)
                    if not todo:
                        continue
                    name = pipeline.topology.name
                    first_ts = todo.kafka_ts[0]

                    def emit(batch: list[UpdateBatch], name: str = name,
                             first_ts: int = first_ts) -> None:
                        # evicted entities expiring together: to the sink as they are read
                        self.monitor.observe(name, batch)
                        self.publisher.submit(name, batch, first_ts)

                    outcome = pipeline.process(todo, emit)
                    if outcome.consumed < len(todo):  # the rest after a commit
                        self._carry[tp] = records
                    self._count(pipeline, outcome)
                    updates[name].extend(outcome.updates)
                    letters.extend((tp[0], d) for d in outcome.dead)
                    touched.append((tp, pipeline))
                    oldest[name] = min(oldest.get(name, todo.kafka_ts[0]), todo.kafka_ts[0])
                for rekeyer in self.assignment.rekeyers.get(tp, []):
                    todo = records.since(rekeyer.read_offset or 0)
                    if not todo:
                        continue
                    rekey = rekeyer.process(todo, time.time())
                    self.totals.malformed += rekey.malformed
                    name = rekeyer.topology.name
                    self.metrics.repartitioned.labels(name, str(tp[1])).inc(rekey.forwarded)
                    self.metrics.count_malformed(name, tp[1], [d.reason for d in rekey.dead])
                    letters.extend((tp[0], d) for d in rekey.dead)
                    touched.append((tp, rekeyer))
            touched.extend(self._release())
            for name, batch in updates.items():
                self.monitor.observe(name, batch)
                self.publisher.submit(name, batch, oldest.get(name))
            if letters:
                self.dlq.send(letters)
                self.health.ok("kafka", source="dlq")
            self._flush_due_snapshots()
            self.checkpoint.track(touched)
        self._last_batch = time.time()

    def _release(self) -> list[tuple[TP, Stage]]:
        """Send the re-keyed records every busy source partition has reached in time."""
        if self.repartition is None:
            return []
        stages = [(tp, r) for tp, rs in self.assignment.rekeyers.items() for r in rs]
        if not any(r.held for _tp, r in stages):
            return []
        moved = {id(r) for r in release_in_time_order(
            self.repartition, [r for _tp, r in stages], time.time())}
        return [(tp, r) for tp, r in stages if id(r) in moved]

    def _settle(self) -> None:
        """Wait until every effect submitted so far is acknowledged (before a commit)."""
        self.publisher.settle()
        if self.repartition is not None:
            self.repartition.settle()
            self.health.ok("kafka", source="repartition")

    def _commit_if_due(self, *, idle: bool) -> dict[TP, int]:
        """Commit when due; when idle, also at once once caught up (others may wait on us)."""
        if not self.checkpoint.pending:
            return {}
        if idle and self.config.stop_at_end and self._own_done():
            return self._commit()
        if self.checkpoint.due():  # a partition at a time: records go on between them
            return self._positions(self.checkpoint.commit_step())
        if self.assignment.state_pressed():  # only stored state can leave memory
            return self._commit()
        return {}

    def _commit(self, only: set[TP] | None = None) -> dict[TP, int]:
        return self._positions(self.checkpoint.commit(only))

    def _positions(self, stored: set[TP]) -> dict[TP, int]:
        """The offsets to tell the group for the partitions just stored."""
        return {tp: self._group_position(tp, self.assignment.position(tp))
                for tp in stored if tp in self.assignment}

    def _group_position(self, tp: TP, position: int) -> int:
        """The offset told to the group for ``tp``: one short of ``position`` while a
        definition change is applied there, so that no worker waiting on the group's offsets
        (``--stop-at-end``) takes the partition for done before its new features are."""
        if any(key[0] == tp for key in self.recomputers):
            return max(0, position - 1)
        return position

    def _tell_group(self, positions: dict[TP, int]) -> None:
        # Kafka's committed offsets are only for lag dashboards and stop-at-end; the resume
        # point is the offset stored in RocksDB with the state.
        if self._announce:
            positions = {**self._announce, **positions}
            self._announce.clear()
        if positions:
            self.consumer.commit(positions)

    # ------------------------------------------------------------------ assignment
    def _on_assign(self, partitions: list[TP]) -> dict[TP, int]:
        """Open the partitions' state; returns the offset each must be read from."""
        self._assigned_once = True
        self.health.ok("kafka", source="join", announce=False)
        starts: dict[TP, int] = {}
        for tp in partitions:
            if tp in self.assignment:  # assigned again without a revoke
                self._on_revoke([tp])
            starts[tp] = start = self.assignment.open(tp)
            for _tp, name, store in self.assignment.durable_stores():
                if _tp == tp and store.restored_bytes:
                    labels = (name, store.name, str(tp[1]))
                    self.metrics.restore_seconds.labels(*labels).set(store.restore_s)
                    self.metrics.restore_bytes.labels(*labels).set(store.restored_bytes)
            self._watch_changes(tp)
            start = self._group_position(tp, start)
            if start > 0:
                # Tell the group where this owner stands, so that workers waiting on the
                # group's offsets (--stop-at-end) see a partition whose state is already
                # complete as such, before any new record arrives.
                self._announce[tp] = start
        self.dlq.learn(partitions)
        return starts

    def _on_revoke(self, partitions: list[TP]) -> None:
        if not self._failed:  # what was processed is stored before letting go
            self._commit(set(partitions))
        for tp in partitions:
            self._carry.pop(tp, None)  # not taken: the next owner reads it again
            for key in [k for k in self.recomputers if k[0] == tp]:
                del self.recomputers[key]  # not committed: the next owner starts it again
                self.metrics.recomputing.labels(key[1], str(tp[1])).set(0)
            self.history.done(tp)
            self.metrics.forget_partition(
                *tp, [p.topology.name for p in self.assignment.pipelines.get(tp, [])],
                [r.topology.name for r in self.assignment.rekeyers.get(tp, [])])
            self.assignment.close(tp)
            if self._snapshot_failures.pop(tp, None) is not None:
                self.health.ok("snapshots", source=f"{tp[0]}[{tp[1]}]")  # no longer ours
            log.info("revoked %s[%d]", *tp)

    # ------------------------------------------------------------------ definition changes
    def _watch_changes(self, tp: TP) -> None:
        """Start applying the definition change of each pipeline of ``tp`` that has one."""
        for pipeline in self.assignment.pipelines.get(tp, []):
            change = pipeline.change
            if not change.needs_refresh:
                continue
            name = pipeline.topology.name
            log.warning("%s %s[%d]: the definition changed since the state was stored: %s",
                        name, tp[0], tp[1], change.summary())
            snapshot_dir = None if self.config.snapshot_dir is None else str(
                self.config.snapshot_dir)
            self.recomputers[(tp, name)] = Recomputer(
                tp, pipeline, self.history, snapshot_dir, self.publisher.sinks[name],
                max_rate=self.config.recompute_max_rate)
            self.metrics.recomputing.labels(name, str(tp[1])).set(1)

    def _apply_changes(self, *, busy: bool) -> None:
        """Give the definition changes in progress a slice of time (shorter while records
        flow, so that the other features stay within their freshness); submit each refresh
        once its feature-windows are ready."""
        if not self.recomputers:
            return
        deadline = time.monotonic() + (CHANGE_SLICE_BUSY_S if busy else CHANGE_SLICE_IDLE_S)
        for key, recomputer in list(self.recomputers.items()):
            tp, name = key
            pipeline = recomputer.pipeline
            before = recomputer.records
            pending = bool(pipeline.pending)
            try:
                with self.checkpoint.batch():
                    updates = recomputer.step(deadline)
                    if pending and not pipeline.pending:  # adopted: its state is to store
                        self.checkpoint.track([(tp, pipeline)])
                    if updates:
                        self.publisher.submit(name, updates, None)
                        pipeline.refreshed()
                        self.checkpoint.track([(tp, pipeline)])
            except (SinkError, SourceError) as exc:
                # Reading history or listing entities failed: nothing was changed; retry.
                log.warning("%s: %s; retrying", recomputer.label, exc)
                return
            labels = (name, str(tp[1]))
            self.metrics.recomputed.labels(*labels).inc(recomputer.records - before)
            if pending and not pipeline.pending:
                for field, since in recomputer.partial.items():
                    self.metrics.partial_since.labels(name, str(tp[1]), field).set(since)
            if recomputer.done:
                del self.recomputers[key]
                self.metrics.recomputing.labels(*labels).set(0)
                self._announce[tp] = self._group_position(tp, self.assignment.position(tp))
            if time.monotonic() >= deadline:
                return

    def _snapshot_factory(self) -> SnapshotFactory | None:
        directory, config = self.config.snapshot_dir, self.config
        if directory is None:
            return None
        store = snapshot_store(directory)  # a URL's bucket and credentials are checked now

        def open_writer(topic: str, partition: int) -> SnapshotWriter:
            return SnapshotWriter(store, topic, partition, every_s=config.snapshot_every_s,
                                  max_rows=config.snapshot_max_rows)

        return open_writer

    # ------------------------------------------------------------------ stopping
    def _own_done(self) -> bool:
        return (self._assigned_once and not self.recomputers
                and self.end.own_caught_up(self.assignment))

    def _caught_up(self) -> bool:
        return self._own_done() and self.end.caught_up(self.assignment, self.consumer)

    def _on_retry(self, dependency: str, source: str) -> OnRetry:
        def on_retry(attempt: int, exc: BaseException) -> None:
            self.health.retrying(dependency, attempt, exc, source=source)
            if self._stopping:
                # Nothing of this batch is committed: a restart redoes it. Safe to leave now.
                raise SystemExit(1)

        return on_retry

    def _shutdown(self, clean: bool) -> None:
        """Store what is safe to store, then release everything.

        After any failure nothing is committed: the in-memory state may hold effects that
        never reached Redis or the DLQ, and the restart redoes the uncommitted batches.
        """
        for writer in self.assignment.snapshots.values():
            with contextlib.suppress(Exception):  # raised again, and logged, by close()
                writer.flush(wait=False)  # overlaps the last state commit
        self._failed = not clean or self.checkpoint.broken or self.publisher.failed
        try:
            if not self._failed:
                self._tell_group(self._commit())
        except Exception:  # a dependency is down: the uncommitted batches are redone on restart
            log.exception("final commit failed; the next start redoes the uncommitted batches")
            self._failed = True
        except SystemExit:  # stopped while the sink retried: nothing more is committed
            log.warning("stopped while Redis was unavailable; the next start redoes the "
                        "uncommitted batches")
            self._failed = True
        try:
            self.consumer.close()  # revokes: closes the partition stores
        finally:
            self.assignment.close_all()
            self.dlq.output.close()
            self.history.close()
            if self.repartition is not None:
                self.repartition.close()
            self._stopping = True  # a write still retrying gives up: nothing more commits
            if self.redis_probe is not None:
                self.redis_probe.stop()
            self.publisher.close()
            self.monitor.stop()
            if self.server is not None:
                self.server.stop()

    # ------------------------------------------------------------------ observability
    def _health(self) -> dict[str, Any]:
        return self.health.report(self.assignment.labels(), self._last_batch,
                                  joined=self._assigned_once)

    def _kafka_error(self, error: str) -> None:
        """An error the Kafka client reported (on the polling thread)."""
        self.metrics.retries.labels("kafka").inc()
        self.health.failed("kafka", error, source="client")

    def _count(self, pipeline: PartitionPipeline, outcome: BatchOutcome) -> None:
        totals = self.totals
        totals.consumed += outcome.consumed
        totals.aggregated += outcome.aggregated
        totals.late += outcome.late
        totals.malformed += outcome.malformed
        labels = (pipeline.topology.name, str(pipeline.partition))
        self.metrics.consumed.labels(*labels).inc(outcome.consumed)
        self.metrics.aggregated.labels(*labels).inc(outcome.aggregated)
        self.metrics.late.labels(*labels).inc(outcome.late)
        if outcome.malformed:
            self.metrics.count_malformed(pipeline.topology.name, pipeline.partition,
                                         [d.reason for d in outcome.dead if d.kind == "malformed"])
        if outcome.duplicates:
            self.metrics.duplicates.labels(*labels).inc(outcome.duplicates)
        foreign = sum(1 for d in outcome.dead if d.reason.startswith("key:"))
        if foreign:
            self.metrics.key_mismatch.labels(*labels).inc(foreign)
            now = time.time()
            if now - self._last_key_warning >= 60:
                self._last_key_warning = now
                reason = next(d.reason for d in outcome.dead if d.reason.startswith("key:"))
                log.error("%s[%d]: %d records are not keyed by the entity (%s)",
                          pipeline.topology.source.topic, pipeline.partition, foreign,
                          reason.removeprefix("key: "))
        if pipeline.stream_time is not None:
            self.metrics.stream_time.labels(*labels).set(pipeline.stream_time / 1000)
            self.metrics.staleness.labels(*labels).set(
                max(0.0, time.time() - pipeline.stream_time / 1000))

    def _flush_due_snapshots(self) -> None:
        now = time.time()
        for tp, writer in self.assignment.snapshots.items():
            topic = tp[0]
            failure = self._snapshot_failures.get(tp)
            try:
                if writer.due(now) and (failure is None or now >= failure[2]):
                    writer.flush(wait=False)  # written in the background; close() waits
                else:
                    writer.poll()
            except StateError as exc:
                self._snapshot_failed(tp, exc, writer.next_offset or 0, writer.buffered, now)
            else:
                if failure is not None and (writer.next_offset or 0) > failure[0]:
                    del self._snapshot_failures[tp]  # a write landed since
                    self.health.ok("snapshots", source=f"{topic}[{tp[1]}]")
            oldest = writer.oldest_unflushed_kafka_ts
            lag = 0.0 if oldest is None else max(0.0, now - oldest / 1000)
            for name in self._topologies_of(tp):
                self.metrics.snapshot_lag.labels(name, topic, str(tp[1])).set(lag)

    def _snapshot_failed(self, tp: TP, exc: StateError, durable: int, buffered: int,
                         now: float) -> None:
        """A snapshot write failed: its records stay buffered and are retried with backoff,
        /health names ``snapshots``; once twice the buffer limit waits, the worker stops
        (memory must stay bounded), as it did at the first failure before."""
        if buffered >= 2 * self.config.snapshot_max_rows:
            raise exc
        attempt = self._snapshot_failures.get(tp, (durable, -1, now))[1] + 1
        self._snapshot_failures[tp] = (durable, attempt, now + backoff_s(attempt, first_s=0.5))
        self.health.failed("snapshots", exc, source=f"{tp[0]}[{tp[1]}]")
        if attempt % 10 == 0:
            log.warning("%s; retrying", exc)

    def _topologies_of(self, tp: TP) -> list[str]:
        """The topologies whose stages run on ``tp`` (the metrics' ``topology`` labels)."""
        return sorted({stage.topology.name for stage in self.assignment.stages(tp)})

    def _report_gauges(self) -> None:
        now = time.time()
        if now - self._last_gauges < 5:
            return
        self._last_gauges = now
        self.metrics.poll_records.set(self.sizer.size)
        for tp, pipelines in self.assignment.pipelines.items():
            for pipeline in pipelines:
                labels = (pipeline.topology.name, str(tp[1]))
                self.metrics.entities.labels(*labels).set(pipeline.operator.entity_count)
                self.metrics.state_bytes.labels(*labels).set(
                    pipeline.operator.approx_state_bytes())
                cache = pipeline.cache
                if cache is not None:
                    evicted, loaded = cache.take_counts()
                    if evicted:
                        self.metrics.state_evictions.labels(labels[0]).inc(evicted)
                    if loaded:
                        self.metrics.state_loads.labels(labels[0]).inc(loaded)
            try:
                _low, high = self.consumer.watermarks(tp, cached=True)
            except Exception as exc:  # statistics not available yet
                log.debug("watermarks of %s[%d]: %s", *tp, exc)
                continue
            position = self.assignment.position(tp)
            for name in self._topologies_of(tp):
                self.metrics.lag.labels(name, tp[0], str(tp[1])).set(max(0, high - position))
        for tp, name, store in self.assignment.durable_stores():
            of_store = (name, store.name, str(tp[1]))
            if store.durable_offset is not None:
                self.metrics.durable_offset.labels(*of_store).set(store.durable_offset)
            if store.durable_at is not None:
                self.metrics.durable_age.labels(*of_store).set(max(0.0, now - store.durable_at))
