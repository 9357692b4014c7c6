"""``streamfeat plan``: what a worker starting on a topology will do with the state it finds.

For each partition store of the topology (opened to read only: a worker may be running on
it), the stored catalog is compared with the topology (:func:`~streamfeat.pipeline.compare`,
the rule the worker applies): each feature-window is unchanged, added, redefined, renamed
or removed, and continues or is recomputed from history. For the recomputed ones, the
history the worker would read (:func:`~streamfeat.runtime.recompute.plan_history`:
snapshots, then the topic from where they end, up to the state's position), how many
records that is, whether it reaches the partition's first record, and which feature-windows
would be partial (:func:`~streamfeat.pipeline.evolution.partial_fields`, the worker's rule,
from the event time of the history's first records as the worker decodes them). The worker
applies that rule at the stream time it has when the recomputation catches up, the plan at
the state's: a sized window that fills meanwhile is reported partial here and not there,
not the other way round (retention moving on between the plan and the run aside). The time
is an estimate: the records at a rate measured here, on the first records of this very
history read and fed through the recomputed slots.

Each feature-window that changes (recomputed, redefined, renamed, removed) is named with the
models that read it, which a change may break: those the topology declares (``models:``)
and, given them (``models=``: from the shared catalog, :mod:`streamfeat.registry`), those
the version deployed before declared and those seen reading it.

Nothing is written: not the state, not Kafka (the topic is read by a consumer that joins
no group), not Redis.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, KafkaException

from streamfeat.errors import SourceError, StateError
from streamfeat.operators import PartitionOperator
from streamfeat.pipeline import DefinitionChange, FieldStatus, Recomputation, compare
from streamfeat.pipeline.evolution import partial_fields
from streamfeat.pipeline.partition import _catalog_of_older_state  # the worker's rule
from streamfeat.pipeline.rekey import consumed_topic, is_rekeyed
from streamfeat.records import RecordBatch
from streamfeat.redact import redact
from streamfeat.runtime.consumers import TP, ConsumerSettings, KafkaHistory, TopicHistory
from streamfeat.runtime.recompute import READ_RECORDS, HistoryPlan, plan_history
from streamfeat.snapshot import SnapshotFile, iter_files, snapshot_files
from streamfeat.snapshot.reader import open_file
from streamfeat.state import PartitionStore
from streamfeat.topology import TopologyDef

__all__ = [
    "EXIT_COMPLETE",
    "EXIT_PARTIAL",
    "EXIT_UNKNOWN",
    "KafkaView",
    "PartitionPlan",
    "Rate",
    "TopologyPlan",
    "exit_code",
    "plan",
    "plan_partition",
    "plan_topology",
    "render",
    "to_json",
]

EXIT_COMPLETE = 0
"""Nothing recomputed lacks history."""
EXIT_PARTIAL = 2
"""Some recomputed feature-window would be partial: its history does not reach back far
enough (the same code as an error: tooling must not go on as if nothing were lost)."""
EXIT_UNKNOWN = 3
"""Whether the history is complete could not be told (the topic's offsets unknown)."""

KAFKA_TIMEOUT_S = 5.0
"""How long the metadata request that tells whether Kafka answers may take."""
READ_WAIT_S = 5.0
"""How long reading the first records of a partition's topic history may take."""
SNAPSHOT_BATCH_ROWS = 5000
"""Rows per batch read from snapshots (as the worker's recomputation reads them)."""
CALIBRATION_RECORDS = 50_000
"""Records of history (per topology, all partitions together) fed to measure the rate."""
CALIBRATION_S = 3.0
"""... or this much time spent feeding them, whichever comes first."""


@dataclass(frozen=True)
class Rate:
    """Records per second of recomputation, measured on a sample of the history: feeding
    ``records`` took ``feed_s``; reading ``read_records`` of them took ``read_s`` (the
    first read of each partition, which opens a file or a consumer, is not counted)."""

    records: int
    feed_s: float
    read_records: int
    read_s: float
    slots: int

    @property
    def seconds_per_record(self) -> float:
        s = self.feed_s / self.records if self.records else 0.0
        if self.read_records:
            s += self.read_s / self.read_records
        return s

    @property
    def per_second(self) -> float:
        s = self.seconds_per_record
        return 1 / s if s > 0 else 0.0

    def estimate(self, records: int) -> float | None:
        s = self.seconds_per_record
        return records * s if s > 0 else None

    @property
    def basis(self) -> str:
        read = (f"reading {self.read_records:,} of them {self.read_s:.2f} s" if self.read_records
                else "reading not measured (one batch)")
        return (f"measured here on the first {self.records:,} records of this history: "
                f"feeding them through the {self.slots} recomputed slot(s) took "
                f"{self.feed_s:.2f} s, {read}. While records flow the worker gives the "
                "recomputation slices between its batches: longer then; rewriting every "
                "entity afterwards is not included")


@dataclass
class PartitionPlan:
    """One partition's stored state against the topology, and its history if recomputed."""

    tp: TP
    change: DefinitionChange
    position: int = 0
    """The state's committed next offset: the recomputation reads history up to it."""
    stream_time: int | None = None
    history: HistoryPlan | None = None
    """Where the history comes from (``None``: nothing recomputed, or the topic unknown)."""
    snapshots: tuple[int, int] | None = None
    """``[first, end)`` of the snapshots read (also when the topic's offsets are unknown)."""
    snapshot_records: int = 0
    topic_records: int | None = 0
    """Records read from the topic (offsets; ``None``: unknown)."""
    complete: bool | None = True
    """Whether the history reaches the partition's first record (``None``: unknown)."""
    first_event_ms: int | None = None
    """Event time of the history's first accepted records (as the worker would see it)."""
    partial: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def recomputed(self) -> list[str]:
        return [f.name for f in self.change.fields if f.recompute]

    @property
    def records(self) -> int | None:
        """Records of history fed to the recomputation (``None``: unknown)."""
        if not self.recomputed:
            return 0
        if self.topic_records is None:
            return None
        return self.snapshot_records + self.topic_records

    def describe_history(self) -> str:
        if not self.recomputed:
            return "-"
        parts: list[str] = []
        if self.snapshots is not None:
            a, b = self.snapshots
            parts.append(f"snapshots [{a}, {min(b, self.position)}) "
                         f"{self.snapshot_records:,} records")
        if self.history is not None:
            h = self.history
            if h.topic_from < self.position:
                parts.append(f"topic [{h.topic_from}, {self.position}) "
                             f"{self.topic_records or 0:,} records")
            first = h.topic_low if h.snapshots is None else h.snapshots[0]
            if first > 0:
                parts.append(f"offsets [0, {first}) gone")
            if h.snapshots is not None and h.snapshots[1] < h.topic_low:
                parts.append(f"offsets [{h.snapshots[1]}, {h.topic_low}) in neither "
                             "snapshots nor the topic")
        elif self.topic_records is None:
            parts.append("topic unknown")
        return "; ".join(parts) or "nothing before the state's position"


@dataclass
class TopologyPlan:
    """What a worker starting ``topology`` on ``state_dir`` will do, partition by partition."""

    topology: TopologyDef
    topic: str
    state_path: Path
    partitions: list[PartitionPlan]
    without_state: list[int] | None = None
    """Partitions of the topic with no state here (``None``: the topic's partitions
    unknown). A worker starting one reads it from its first record: nothing recomputed."""
    kafka: str = "off"
    """``reachable``, ``off`` (``--no-kafka``) or why it is unknown."""
    rate: Rate | None = None
    models: dict[str, list[str]] = field(default_factory=dict)
    """Redis field -> the models reading it (declared, and those given to :func:`plan`)."""

    def models_of(self, name: str, was: str | None = None) -> list[str]:
        """The models reading field ``name`` (and, renamed, its old name ``was``)."""
        found = [*self.models.get(name, []), *(self.models.get(was, []) if was else [])]
        return sorted(set(found))

    @property
    def fresh(self) -> bool:
        return all(p.change.first_run for p in self.partitions)

    @property
    def unchanged(self) -> bool:
        return all(p.change.first_run or not p.change.needs_refresh for p in self.partitions)

    @property
    def recomputing(self) -> list[PartitionPlan]:
        return [p for p in self.partitions if p.recomputed]

    @property
    def records(self) -> int | None:
        total = 0
        for p in self.recomputing:
            if p.records is None:
                return None
            total += p.records
        return total

    def estimate(self, records: int | None) -> float | None:
        if records is None or self.rate is None:
            return None
        return 0.0 if records == 0 else self.rate.estimate(records)

    def exit_code(self) -> int:
        if any(p.partial for p in self.partitions):
            return EXIT_PARTIAL
        if any(p.complete is None for p in self.recomputing):
            return EXIT_UNKNOWN
        return EXIT_COMPLETE


def exit_code(plans: Sequence[TopologyPlan]) -> int:
    codes = [p.exit_code() for p in plans]
    if EXIT_PARTIAL in codes:
        return EXIT_PARTIAL
    return EXIT_UNKNOWN if EXIT_UNKNOWN in codes else EXIT_COMPLETE


# -- Kafka ---------------------------------------------------------------------------------


class KafkaView:
    """The topic part of the plans: partitions, watermarks and first records, read by
    consumers that join no group, with short timeouts. ``unknown`` says why it is not
    available (Kafka not answering); then every method is unavailable."""

    def __init__(self, bootstrap: str, *, client_config: dict[str, Any] | None = None,
                 timeout_s: float = KAFKA_TIMEOUT_S, rekeyed_topics: Sequence[str] = ()) -> None:
        config = {"socket.connection.setup.timeout.ms": int(timeout_s * 1000),
                  **(client_config or {})}
        self.settings = ConsumerSettings(bootstrap=bootstrap, group_id="streamfeat.plan",
                                         client_config=config,
                                         rekeyed_topics=frozenset(rekeyed_topics))
        self.timeout_s = timeout_s
        self.unknown: str | None = None
        self._metadata = Consumer({**self.settings.librdkafka(), "group.id": "streamfeat.plan",
                                   "log_level": 2})  # no connection errors on stderr
        try:
            self._metadata.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            self.unknown = (f"Kafka at {redact(bootstrap)} did not answer within "
                            f"{timeout_s:g} s ({redact(exc)})")
        self.history: TopicHistory = KafkaHistory(self.settings)

    def partitions(self, topic: str) -> list[int] | None:
        """The topic's partitions; ``None`` when it does not exist."""
        try:
            md = self._metadata.list_topics(topic, timeout=self.timeout_s)
        except KafkaException as exc:
            raise SourceError(f"the partitions of {topic}: {exc}") from exc
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            return None
        return sorted(t.partitions)

    def close(self) -> None:
        self.history.close()
        self._metadata.close()


# -- one partition -------------------------------------------------------------------------


def _stored(topology: TopologyDef, store: PartitionStore, partition: int
            ) -> tuple[tuple[dict[str, list[str]], dict[str, str]] | None, int, int | None]:
    """(catalog or ``None`` for a state holding nothing yet, next offset, stream time)."""
    committed = store.committed()
    if committed.meta is None:
        return None, committed.next_offset or 0, None
    # The worker's rule (PartitionPipeline): the catalog in the meta, else (state written
    # before streamfeat recorded it) the slots found in the entities.
    catalog = (PartitionOperator.stored_catalog(committed.meta)
               or _catalog_of_older_state(topology, store))
    probe = PartitionOperator(topology, partition)
    probe.load_meta(committed.meta)
    return catalog, committed.next_offset or 0, probe.stream_time


def _below(batch: RecordBatch, end: int) -> RecordBatch:
    """The records of ``batch`` with offsets below ``end``."""
    if not batch or batch.offsets[-1] < end:
        return batch
    k = len(batch) - len(batch.since(end))
    return batch[:k]


def _snapshot_records(files: Sequence[SnapshotFile], end: int) -> int:
    """Records of ``files`` (one partition, in offset order) below offset ``end``, each
    offset once (overlapping files): from each file's footer, or its offsets when only
    part of it counts."""
    total, next_offset = 0, 0
    for f in files:
        if f.first_offset >= end:
            break
        if f.last_offset < next_offset:
            continue
        try:
            if f.first_offset >= next_offset and f.last_offset < end:
                total += open_file(f).metadata.num_rows
                next_offset = f.last_offset + 1
                continue
            offsets = open_file(f).read(columns=["offset"]).column(0).to_pylist()
        except (OSError, pa.ArrowException) as exc:
            raise StateError(f"cannot read snapshot file {f.path}: {exc}") from exc
        kept = [o for o in offsets if next_offset <= o < end]
        total += len(kept)
        if kept:
            next_offset = max(kept) + 1
    return total


def _history_batches(history: TopicHistory | None, snapshot_dir: str | None, tp: TP,
                     plan: HistoryPlan | None, end: int) -> Generator[RecordBatch, None, None]:
    """The partition's history below ``end`` as the worker reads it: snapshots, then the
    topic (``plan``: ``None`` when the topic is unknown: the snapshots alone)."""
    position = 0
    if snapshot_dir is not None and (plan is None or plan.snapshots is not None):
        files = snapshot_files(snapshot_dir, tp[0], tp[1])
        for batch in iter_files(files, batch_rows=SNAPSHOT_BATCH_ROWS):
            batch = _below(batch, end)
            if not batch:
                break
            position = batch.offsets[-1] + 1
            yield batch
    if history is None or plan is None:
        return
    start = max(position, plan.topic_from)
    deadline = time.monotonic() + READ_WAIT_S
    try:
        while start < end and time.monotonic() < deadline:
            batch = history.read(tp, start, end, READ_RECORDS)
            if batch:
                start = batch.offsets[-1] + 1
                deadline = time.monotonic() + READ_WAIT_S
                yield batch
    finally:
        history.done(tp)


@dataclass
class _Calibration:
    records: int = 0
    feed_s: float = 0.0
    read_records: int = 0
    read_s: float = 0.0

    @property
    def seconds(self) -> float:
        return self.feed_s + self.read_s

    @property
    def spent(self) -> bool:
        return self.records >= CALIBRATION_RECORDS or self.seconds >= CALIBRATION_S


def _read_first_records(topology: TopologyDef, p: PartitionPlan, pending: frozenset[str],
                        history: TopicHistory | None, snapshot_dir: str | None,
                        calibration: _Calibration) -> None:
    """Feed the first records of the history to a recomputation of the pending slots, as
    the worker would: their event time says where the history starts (when it is not
    complete), and the time it takes measures the rate (until the calibration is spent)."""
    need_start = p.complete is not True
    if not need_start and calibration.spent:
        return
    rec = Recomputation(topology, p.tp[1], pending)
    first_kafka_ts: int | None = None
    batches = _history_batches(history, snapshot_dir, p.tp, p.history, p.position)
    try:
        asked = time.perf_counter()
        for batch in batches:
            started = time.perf_counter()
            if first_kafka_ts is None:
                first_kafka_ts = int(batch.kafka_ts[0])
            else:  # reading counts, but not the first read (opening a file, a consumer)
                calibration.read_s += started - asked
                calibration.read_records += len(batch)
            rec.feed(batch)
            asked = time.perf_counter()
            calibration.feed_s += asked - started
            calibration.records += len(batch)
            started_at = not need_start or rec.first_event_ms is not None
            if calibration.spent and (started_at or rec.records >= CALIBRATION_RECORDS):
                break
    finally:
        batches.close()
    # No record accepted (all malformed or late): the first record's Kafka timestamp.
    p.first_event_ms = rec.first_event_ms if rec.first_event_ms is not None else first_kafka_ts


class _Bounds:
    """A :class:`TopicHistory` that asks for each partition's bounds once."""

    def __init__(self, history: TopicHistory) -> None:
        self.history = history
        self._bounds: dict[TP, tuple[int, int]] = {}

    def bounds(self, tp: TP) -> tuple[int, int]:
        if tp not in self._bounds:
            self._bounds[tp] = self.history.bounds(tp)
        return self._bounds[tp]

    def read(self, tp: TP, start: int, end: int, max_records: int) -> RecordBatch:
        return self.history.read(tp, start, end, max_records)

    def done(self, tp: TP) -> None:
        self.history.done(tp)

    def close(self) -> None:
        self.history.close()


def plan_partition(topology: TopologyDef, store: PartitionStore, tp: TP,
                   history: TopicHistory | None, snapshot_dir: str | None,
                   calibration: _Calibration, unknown: str | None = None) -> PartitionPlan:
    """One partition: what changed, and the history of what is recomputed.
    ``history``: ``None`` when the topic part is unknown (``unknown`` says why)."""
    stored, position, stream_time = _stored(topology, store, tp[1])
    change = compare(topology, stored)
    p = PartitionPlan(tp, change, position, stream_time)
    if not p.recomputed:
        return p
    files = snapshot_files(snapshot_dir, tp[0], tp[1]) if snapshot_dir is not None else []
    if history is not None:
        history = _Bounds(history)
        try:
            p.history = plan_history(history, snapshot_dir, tp)
            _low, high = history.bounds(tp)
        except SourceError as exc:
            history, unknown = None, str(exc)
        else:
            p.snapshots = p.history.snapshots
            p.complete = p.history.complete
            p.topic_records = max(0, position - p.history.topic_from)
            if high < position:
                p.complete = False
                p.notes.append(f"the topic ends at offset {high}, before the state's "
                               f"position {position}: was it deleted and created again?")
    if history is None:
        p.topic_records = None
        p.complete = None
        if files:
            first = files[0].first_offset
            p.snapshots = (first, max(f.last_offset for f in files) + 1)
            if first == 0 and p.snapshots[1] >= position:
                p.complete, p.topic_records = True, 0  # the snapshots alone cover it
        p.notes.append(f"topic part unknown: {unknown}" if unknown else "topic part unknown")
    if p.snapshots is not None and snapshot_dir is not None:
        p.snapshot_records = _snapshot_records(files, position)
    if p.complete is False and p.history is not None and p.history.topic_low > position:
        p.notes.append(f"retention has dropped every record before the state's position "
                       f"(the topic starts at {p.history.topic_low})")
    pending = change.pending
    _read_first_records(topology, p, pending, history, snapshot_dir, calibration)
    if p.complete is not None:
        p.partial = partial_fields(topology, p.recomputed, p.first_event_ms, stream_time,
                                   p.complete)
    return p


# -- a topology ----------------------------------------------------------------------------


def plan_topology(topology: TopologyDef, state_dir: str | Path, *,
                  snapshot_dir: str | None = None, history: TopicHistory | None = None,
                  topic_partitions: list[int] | None = None, kafka: str = "off",
                  models: Mapping[str, Sequence[str]] | None = None) -> TopologyPlan:
    """The plan of ``topology`` over the state in ``state_dir``. ``history``: the topic
    (``None``: unknown, ``kafka`` says why); ``topic_partitions``: the topic's partitions,
    to name those with no state here; ``models``: field -> models known to read it, besides
    those the topology declares."""
    topic = consumed_topic(topology)
    found = PartitionStore.partitions(state_dir, topology.name, topic)
    calibration = _Calibration()
    plans: list[PartitionPlan] = []
    unknown = None if history is not None else (
        "no Kafka (--no-kafka)" if kafka == "off" else kafka)
    for partition in found:
        store = PartitionStore(state_dir, topology.name, topic, partition, read_only=True)
        try:
            plans.append(plan_partition(topology, store, (topic, partition), history,
                                        snapshot_dir, calibration, unknown))
        finally:
            store.close()
    without = None if topic_partitions is None else sorted(set(topic_partitions) - set(found))
    out = TopologyPlan(topology, topic, Path(state_dir) / topology.name, plans, without, kafka)
    readers: dict[str, set[str]] = {name: set(found) for name, found in (models or {}).items()}
    for f in topology.features:
        for w in f.windows:
            readers.setdefault(f.redis_field(w), set()).update(topology.models_of(f))
    out.models = {name: sorted(found) for name, found in readers.items() if found}
    if calibration.records and calibration.feed_s > 0:
        slots = len(set().union(*(p.change.pending for p in out.recomputing)))
        out.rate = Rate(calibration.records, calibration.feed_s, calibration.read_records,
                        calibration.read_s, slots)
    return out


def plan(topologies: Sequence[TopologyDef], state_dir: str | Path, *,
         snapshot_dir: str | None = None, kafka: str | None = None,
         kafka_config: Mapping[str, Any] | None = None,
         kafka_timeout_s: float = KAFKA_TIMEOUT_S,
         models: Mapping[str, Mapping[str, Sequence[str]]] | None = None
         ) -> list[TopologyPlan]:
    """The plans of ``topologies``; ``kafka``: bootstrap servers, ``None`` for none;
    ``kafka_config``: the ``--kafka-config`` properties of its clients; ``models``: topology
    -> field -> models known to read it (:func:`streamfeat.registry.models_reading`), besides
    those declared."""
    view: KafkaView | None = None
    if kafka is not None and any(_has_state(t, state_dir) for t in topologies):
        rekeyed = [consumed_topic(t) for t in topologies if is_rekeyed(t)]
        view = KafkaView(kafka, client_config=dict(kafka_config or {}),
                         timeout_s=kafka_timeout_s, rekeyed_topics=rekeyed)
    try:
        out = []
        for t in topologies:
            history: TopicHistory | None = None
            partitions: list[int] | None = None
            status = "off"
            if view is not None and view.unknown is None:
                partitions = view.partitions(consumed_topic(t))
                if partitions is None:
                    status = f"topic {consumed_topic(t)} not found at {redact(kafka)}"
                else:
                    history, status = view.history, "reachable"
            elif view is not None:
                status = view.unknown or "unknown"
            out.append(plan_topology(t, state_dir, snapshot_dir=snapshot_dir, history=history,
                                     topic_partitions=partitions, kafka=status,
                                     models=(models or {}).get(t.name)))
        return out
    finally:
        if view is not None:
            view.close()


def _has_state(topology: TopologyDef, state_dir: str | Path) -> bool:
    return bool(PartitionStore.partitions(state_dir, topology.name, consumed_topic(topology)))


# -- output --------------------------------------------------------------------------------


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(s: float | None) -> str:
    if s is None:
        return "unknown"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


@dataclass
class _FieldRow:
    name: str
    statuses: dict[str, list[int]] = field(default_factory=dict)
    """status text -> partitions"""
    recomputed: list[PartitionPlan] = field(default_factory=list)
    partial: dict[int, int] = field(default_factory=dict)
    """partition -> event time its history starts at"""
    unknown: list[int] = field(default_factory=list)
    """partitions whose completeness is unknown"""
    was: str | None = None
    """its name before, when renamed"""


def _field_rows(t: TopologyPlan) -> list[_FieldRow]:
    rows: dict[str, _FieldRow] = {}
    for p in t.partitions:
        if p.change.first_run:  # nothing stored to compare with
            continue
        for f in p.change.fields:
            row = rows.setdefault(f.name, _FieldRow(f.name))
            status = f.status.value + (f" (was {f.was})" if f.was else "")
            row.statuses.setdefault(status, []).append(p.tp[1])
            row.was = row.was or f.was
            if f.recompute:
                row.recomputed.append(p)
                if f.name in p.partial:
                    row.partial[p.tp[1]] = p.partial[f.name]
                elif p.complete is None:
                    row.unknown.append(p.tp[1])
    return list(rows.values())


def _affected(t: TopologyPlan, row: _FieldRow) -> list[str]:
    """The models reading a feature-window that changes (none for an unchanged one)."""
    if set(row.statuses) == {FieldStatus.UNCHANGED.value} and not row.recomputed:
        return []
    return t.models_of(row.name, row.was)


def _status_text(row: _FieldRow) -> str:
    if len(row.statuses) == 1:
        return next(iter(row.statuses))
    return "; ".join(f"{s} p{','.join(map(str, ps))}" for s, ps in row.statuses.items())


def _recompute_text(row: _FieldRow, partitions: int) -> str:
    if row.recomputed:
        n = len(row.recomputed)
        return "from history" + ("" if n == partitions else f" ({n}/{partitions} partitions)")
    if any(s.startswith(FieldStatus.REMOVED.value) for s in row.statuses):
        return "state dropped, field deleted from Redis"
    return "no: continues"


def _data_text(row: _FieldRow) -> str:
    kinds: dict[str, int] = {}
    for p in row.recomputed:
        if p.history is None:
            kind = "snapshots, topic unknown" if p.snapshots else "topic unknown"
        elif p.history.snapshots is not None and p.history.topic_from < p.position:
            kind = "snapshots + topic"
        elif p.history.snapshots is not None:
            kind = "snapshots"
        else:
            kind = "topic"
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(k if n == 1 else f"{k} ({n} partitions)" for k, n in kinds.items()) or "-"


def _partial_text(row: _FieldRow) -> str:
    if not row.recomputed:
        return "-"
    parts = []
    if row.partial:
        first, last = min(row.partial.values()), max(row.partial.values())
        since = _when(first) if first == last else f"{_when(first)} .. {_when(last)}"
        parts.append(f"PARTIAL from {since} ({len(row.partial)}/"
                     f"{len(row.recomputed)} partitions)")
    if row.unknown:
        parts.append(f"unknown ({len(row.unknown)} partitions)")
    return "; ".join(parts) or "no"


def _records_text(counted: int, unknown: bool) -> str:
    if not unknown:
        return f"{counted:,}"
    return f"{counted:,} + topic" if counted else "unknown"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return ["  " + fmt.format(*header).rstrip(),
            *["  " + fmt.format(*r).rstrip() for r in rows]]


def render(plans: Sequence[TopologyPlan]) -> str:
    """The plans for a person: a table per topology, then each partition's history."""
    lines: list[str] = []
    for t in plans:
        if lines:
            lines.append("")
        lines.append(f"topology {t.topology.name} ({t.topology.path}): topic {t.topic}, "
                     f"state {t.state_path}")
        if not t.partitions:
            lines.append("  no state here: a fresh deployment. Every feature-window is computed "
                         "with the stream from the first record; nothing is recomputed.")
            continue
        fresh = [p.tp[1] for p in t.partitions if p.change.first_run]
        n = len(t.partitions) - len(fresh)
        if t.fresh:
            lines.append(f"  {len(fresh)} partition(s) with state holding nothing yet: every "
                         "feature-window is computed with the stream from the first record; "
                         "nothing is recomputed.")
        elif t.unchanged:
            lines.append(f"  unchanged: {n} partition(s) hold state of exactly these "
                         "definitions; every feature-window continues, nothing is recomputed.")
        rows = []
        for row in _field_rows(t):
            counted = sum(p.snapshot_records if p.records is None else p.records
                          for p in row.recomputed)
            unknown = any(p.records is None for p in row.recomputed)
            est = t.estimate(None if unknown else counted)
            rows.append([row.name, _status_text(row), _recompute_text(row, n),
                         _data_text(row),
                         "-" if not row.recomputed else
                         _records_text(counted, unknown),
                         "-" if not row.recomputed else _seconds(est),
                         _partial_text(row), ", ".join(_affected(t, row)) or "-"])
        if not t.unchanged and not t.fresh:
            lines += _table(["field", "status", "recompute", "data", "records", "estimate",
                             "partial", "models"], rows)
        if fresh and not t.fresh:
            lines.append(f"  partitions {', '.join(map(str, fresh))}: state holds nothing yet "
                         "(computed with the stream from the first record)")
        if t.recomputing:
            lines.append("  history per partition (one pass computes every recomputed "
                         "feature-window of the partition):")
            for p in t.recomputing:
                state = "complete" if p.complete else (
                    "completeness unknown" if p.complete is None else "INCOMPLETE")
                est = t.estimate(p.records)
                start = "" if p.first_event_ms is None else \
                    f", first event {_when(p.first_event_ms)}"
                lines.append(f"    {p.tp[0]}[{p.tp[1]}] up to offset {p.position}: "
                             f"{p.describe_history()}: {state}{start}; "
                             f"estimate {_seconds(est)}")
                lines += [f"      {note}" for note in p.notes]
            records = t.records
            lines.append(f"  total: {'unknown' if records is None else f'{records:,}'} records "
                         f"of history, estimate {_seconds(t.estimate(records))} on one worker")
            if t.rate is not None:
                lines.append(f"  rate {t.rate.per_second:,.0f} records/s, {t.rate.basis}")
            elif records:
                lines.append("  rate unknown: no record of the history could be read")
        if t.without_state:
            lines.append(f"  partitions without state here: {', '.join(map(str, t.without_state))}"
                         " (a worker taking one reads it from the topic's first record)")
        if t.kafka not in ("reachable", "off") or (t.kafka == "off" and t.recomputing):
            lines.append(f"  kafka: {t.kafka}")
        code = t.exit_code()
        if code == EXIT_PARTIAL:
            lines.append("  WARNING: history does not reach back far enough for some "
                         "recomputed feature-windows: they will be partial (above).")
        elif code == EXIT_UNKNOWN:
            lines.append("  cannot tell whether the history is complete: the topic part is "
                         "unknown.")
    return "\n".join(lines)


def to_json(plans: Sequence[TopologyPlan]) -> dict[str, Any]:
    """The plans for tooling."""
    out: list[dict[str, Any]] = []
    for t in plans:
        partitions = []
        for p in t.partitions:
            h = p.history
            partitions.append({
                "partition": p.tp[1],
                "state": "empty" if p.change.first_run else
                ("unchanged" if not p.change.needs_refresh else "changed"),
                "position": p.position,
                "stream_time": p.stream_time,
                "recomputed": p.recomputed,
                "snapshots": list(p.snapshots) if p.snapshots else None,
                "snapshot_records": p.snapshot_records,
                "topic_low": None if h is None else h.topic_low,
                "topic_from": None if h is None else h.topic_from,
                "topic_records": p.topic_records,
                "records": p.records,
                "complete": p.complete if p.recomputed else None,
                "first_event_ms": p.first_event_ms,
                "partial": p.partial,
                "estimate_s": t.estimate(p.records) if p.recomputed else 0.0,
                "notes": p.notes,
            })
        fields = []
        for row in _field_rows(t):
            unknown = any(p.records is None for p in row.recomputed)
            records = None if unknown else sum(p.records or 0 for p in row.recomputed)
            fields.append({
                "field": row.name,
                "status": {s: ps for s, ps in row.statuses.items()},
                "recomputed_in": [p.tp[1] for p in row.recomputed],
                "records": records,
                "estimate_s": t.estimate(records) if row.recomputed else 0.0,
                "partial_since_ms": {str(k): v for k, v in row.partial.items()},
                "complete_unknown_in": row.unknown,
                "models": _affected(t, row),
            })
        out.append({
            "topology": t.topology.name, "file": str(t.topology.path), "topic": t.topic,
            "state": str(t.state_path), "fresh": t.fresh, "unchanged": t.unchanged,
            "kafka": t.kafka, "fields": fields, "partitions": partitions,
            "without_state": t.without_state, "records": t.records,
            "estimate_s": t.estimate(t.records),
            "rate": None if t.rate is None else {
                "records_per_s": t.rate.per_second, "records": t.rate.records,
                "feed_s": t.rate.feed_s, "read_records": t.rate.read_records,
                "read_s": t.rate.read_s, "basis": t.rate.basis},
            "exit_code": t.exit_code(),
        })
    return {"topologies": out, "exit_code": exit_code(plans)}
