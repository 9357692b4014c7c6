"""``streamfeat training-set``: point-in-time-correct features for a spine of (entity, time).

Event time (the default): for a spine row ``(e, t)`` every feature is the value as of
``t`` (contract section 2) over the events the stream *accepted* with ``ts <= t``.
Acceptance is decided by the worker's own code, :class:`~streamfeat.pipeline.Acceptance`:
records in offset order, the same decoding and the same running-maximum late rule.
Nothing after ``t`` leaks in, at any edge (contract section 6): a row whose entity has
no accepted event at or before ``t`` gets the topology's ``defaults`` (``None`` for a
field without one), exactly what :class:`~streamfeat.client.Client` serves for an entity
Redis does not hold, whether the entity shows up later or never.

Method, per partition (partitions run in parallel processes):

1. pass 1 reads the partition in offset order and collects the entities it accepted;
   this maps each spine entity to its partition (an entity found in no partition gets
   the topology's ``defaults``, ``None`` where there is none);
2. pass 2 reads it again, re-decides acceptance, and sorts the accepted events by
   ``(ts, offset)`` on the fly: an accepted event is never more than ``lateness`` behind
   stream time, so a heap holding the events of the last ``lateness`` is enough. The
   sorted events feed a fresh :class:`~streamfeat.operators.PartitionOperator`; before
   the first event later than ``t`` is fed, the rows at ``t`` are answered with
   ``values(entities, as_of=t)``, except those of entities not fed yet, which keep the
   defaults.

``as_served=True``: the values the model was served at ``t``, i.e. what Redis held: the
state after every record that had *arrived* by ``t``, in offset order, through the
worker's :class:`~streamfeat.pipeline.PartitionPipeline` (late decisions
included), as of the partition's stream time at that moment. A record has arrived by
``t`` when the running maximum of ``kafka_ts`` up to it is ``<= t`` (a consumer reads a
partition in order, so arrival never goes backwards; with broker timestamps this is
simply ``kafka_ts <= t``). An entity with no accepted record arrived by then gets the
``defaults`` (Redis had no key for it).

The output carries its lineage in the Parquet schema metadata (key ``streamfeat``, JSON:
:func:`streamfeat.registry.training_lineage`): the topology's version (definition hashes
and digests), the snapshots read (dates, per partition the first and last offset, the
span of their Kafka timestamps), the mode and the spine, so that a model's training data can
be traced to what served it and rebuilt (``streamfeat registry --lineage FILE``).

Spine times before the first snapshotted record or after the last are a warning
(:mod:`streamfeat.replay.coverage`): those rows are computed, but from history that does not
reach them. Progress goes to ``streamfeat.replay`` (:mod:`streamfeat.progress`), one task
per pass.

Memory: the spine and its output columns (rows x features); the set of entities of
every partition; per partition process, one batch of records, that partition's window
state and (pass 2) the accepted events of the last ``lateness``.
"""

from __future__ import annotations

import heapq
import logging
import os
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from streamfeat.client import resolve_fields
from streamfeat.operators import PartitionOperator
from streamfeat.pipeline import Acceptance, AcceptedEvents, PartitionPipeline
from streamfeat.pipeline.rekey import consumed_topic
from streamfeat.progress import Tracker, announce, progress_logger
from streamfeat.records import RecordBatch
from streamfeat.registry import training_lineage, with_lineage
from streamfeat.replay.coverage import coverage, warn_times
from streamfeat.replay.inputs import (
    TopologyLike,
    planned_records,
    resolve_topology,
    snapshot_root,
)
from streamfeat.replay.jobs import LOGGER, run_jobs
from streamfeat.replay.output import arrow_columns, write_parquet_atomically
from streamfeat.replay.spine import entity_ids, read_spine, spine_columns, timestamps_ms
from streamfeat.snapshot.reader import (
    DateLike,
    SnapshotFile,
    iter_files,
    parse_date,
    snapshot_files,
)
from streamfeat.snapshot.reader import (
    partitions as snapshot_partitions,
)
from streamfeat.topology import TopologyDef

__all__ = ["training_set"]

log = logging.getLogger(LOGGER)

_BATCH_ROWS = 20_000


# ----------------------------------------------------------------------------- pass 1


_STAGE_KEYS = "entities"
_STAGE_ROWS = "rows"


@dataclass(frozen=True, slots=True)
class _KeysJob:
    topology: TopologyDef
    partition: int
    files: tuple[SnapshotFile, ...]
    batch_rows: int
    progress: bool = False


def _tracker(topology: TopologyDef, stage: str, partition: int,
             files: Sequence[SnapshotFile], progress: bool) -> Tracker | None:
    if not progress:
        return None
    return Tracker(progress_logger(LOGGER), _task(topology, stage), str(partition),
                   planned_records(files),
                   label=f"training-set {topology.name}[{partition}] ({stage})")


def _task(topology: TopologyDef, stage: str) -> str:
    return f"training-set {topology.name}: {stage}"


def _accepted(
    topology: TopologyDef, partition: int, files: Sequence[SnapshotFile], batch_rows: int,
    tracker: Tracker | None = None, *, start_offset: int = 0, end_offset: int | None = None,
    stream_time: int | None = None,
) -> Iterator[tuple[AcceptedEvents, int]]:
    """Per batch with events: the accepted ones (offset order) and the stream time after.

    ``start_offset`` / ``end_offset`` (exclusive): only the records in that range, judged
    from ``stream_time`` (the partition's stream time before ``start_offset``), as a run
    from the first record would judge them (a time slice: :mod:`streamfeat.spark`).
    """
    acceptance = Acceptance(topology, partition, stream_time=stream_time)
    for batch in offset_range(files, batch_rows, start_offset, end_offset):
        verdict = acceptance.judge(batch)
        if tracker is not None:
            tracker.advance(len(batch))
        if verdict.decoded.keys and verdict.stream_time is not None:
            yield verdict.accepted(), verdict.stream_time
    if tracker is not None:
        tracker.finish()


def offset_range(
    files: Sequence[SnapshotFile], batch_rows: int, start_offset: int = 0,
    end_offset: int | None = None,
) -> Iterator[RecordBatch]:
    """The records of ``files`` with ``start_offset <= offset < end_offset`` (no end when
    ``None``), in offset order, in batches of at most ``batch_rows``."""
    if start_offset > 0 or end_offset is not None:
        files = [f for f in files if f.last_offset >= start_offset
                 and (end_offset is None or f.first_offset < end_offset)]
    for batch in iter_files(files, batch_rows=batch_rows):
        if start_offset > 0 and batch.offsets[0] < start_offset:
            batch = batch.since(start_offset)
        if end_offset is not None and batch and batch.offsets[-1] >= end_offset:
            batch = batch[: bisect_left(batch.offsets, end_offset)]
        if batch:
            yield batch


def _keys_of_partition(job: _KeysJob) -> set[str]:
    out: set[str] = set()
    tracker = _tracker(job.topology, _STAGE_KEYS, job.partition, job.files, job.progress)
    for events, _st in _accepted(job.topology, job.partition, job.files, job.batch_rows,
                                 tracker):
        out.update(events.keys)
    return out


# ----------------------------------------------------------------------------- pass 2


@dataclass(frozen=True, slots=True)
class _RowsJob:
    topology: TopologyDef
    partition: int
    files: tuple[SnapshotFile, ...]
    fields: tuple[str, ...]
    times: tuple[int, ...]
    entities: tuple[str, ...]
    batch_rows: int
    progress: bool = False
    # a time slice (streamfeat.spark): the records read, the stream time before the first,
    # and per row its entity's first accepted event time (None: none), which says whether
    # the entity was seen by then when the slice does not start at the partition's start
    start_offset: int = 0
    end_offset: int | None = None
    stream_time: int | None = None
    first_ts: tuple[int | None, ...] | None = None


def _sorted_events(
    topology: TopologyDef, partition: int, files: Sequence[SnapshotFile], batch_rows: int,
    tracker: Tracker | None = None, *, start_offset: int = 0, end_offset: int | None = None,
    stream_time: int | None = None,
) -> Iterator[list[tuple[int, int, str, dict[str, Any]]]]:
    """Accepted events in ``(ts, offset)`` order, holding only the last ``lateness``."""
    lateness = int(topology.lateness_ms)
    heap: list[tuple[int, int, str, dict[str, Any]]] = []
    push, pop = heapq.heappush, heapq.heappop
    for events, st in _accepted(topology, partition, files, batch_rows, tracker,
                                start_offset=start_offset, end_offset=end_offset,
                                stream_time=stream_time):
        for item in zip(events.ts, events.offsets, events.keys, events.records, strict=True):
            push(heap, item)
        bound = st - lateness  # every later accepted event has ts >= bound
        out = []
        while heap and heap[0][0] < bound:
            out.append(pop(heap))
        if out:
            yield out
    heap.sort()
    if heap:
        yield heap


def _event_time_rows(job: _RowsJob) -> list[list[Any]]:
    """Feature values (one list per field) of the job's rows, in the job's row order."""
    topology = job.topology
    n = len(job.times)
    times, ents, fields, first_ts = job.times, job.entities, job.fields, job.first_ts
    order = sorted(range(n), key=lambda i: (times[i], i))
    cols: list[list[Any]] = [[topology.defaults.get(f)] * n for f in fields]
    op = PartitionOperator(topology, job.partition)
    seen: set[str] = set()  # entities with an accepted event fed so far, i.e. at or before t
    keys: list[str] = []
    ts_l: list[int] = []
    recs: list[dict[str, Any]] = []
    j = 0

    def feed() -> None:
        if keys:
            op.process(keys, ts_l, recs)
            keys.clear()
            ts_l.clear()
            recs.clear()
            if op.stream_time is not None:
                op.due(op.stream_time)  # drain timers armed by values(): bounded memory

    def answer(before: int | None) -> None:
        nonlocal j
        while j < n and (before is None or times[order[j]] < before):
            t = times[order[j]]
            group = []
            while j < n and times[order[j]] == t:
                group.append(order[j])
                j += 1
            if first_ts is None:
                group = [g for g in group if ents[g] in seen]  # the others keep the defaults
            else:
                group = [g for g in group if (f := first_ts[g]) is not None and f <= t]
            if not group:
                continue
            feed()
            values = op.values(sorted({ents[g] for g in group}), as_of=t)
            for g in group:
                row = values[ents[g]]
                for c, name in zip(cols, fields, strict=True):
                    c[g] = row[name]

    tracker = _tracker(topology, _STAGE_ROWS, job.partition, job.files, job.progress)
    for chunk in _sorted_events(topology, job.partition, job.files, job.batch_rows, tracker,
                                start_offset=job.start_offset, end_offset=job.end_offset,
                                stream_time=job.stream_time):
        for ts, _off, key, record in chunk:
            if j < n and times[order[j]] < ts:
                answer(ts)
            keys.append(key)
            seen.add(key)
            ts_l.append(ts)
            recs.append(record)
            if len(keys) >= job.batch_rows:
                feed()
    answer(None)
    return cols


def _as_served_rows(job: _RowsJob) -> list[list[Any]]:
    topology = job.topology
    n = len(job.times)
    times, ents, fields = job.times, job.entities, job.fields
    order = sorted(range(n), key=lambda i: (times[i], i))
    defaults = [topology.defaults.get(f) for f in fields]
    cols: list[list[Any]] = [[d] * n for d in defaults]
    proc = PartitionPipeline(topology, job.partition)
    seen: set[str] = set()
    arrival: int | None = None
    j = 0

    def answer(before: int | None) -> None:
        nonlocal j
        start = j
        while j < n and (before is None or times[order[j]] < before):
            j += 1
        group = [g for g in order[start:j] if ents[g] in seen]
        if not group or proc.stream_time is None:
            return
        values = proc.operator.values(sorted({ents[g] for g in group}), as_of=proc.stream_time)
        for g in group:
            row = values[ents[g]]
            for c, name in zip(cols, fields, strict=True):
                c[g] = row[name]

    def process(records: Sequence[Any]) -> None:
        if records:
            outcome = proc.process(records)
            for u in outcome.updates:
                seen.update(u.entity_ids)

    tracker = _tracker(topology, _STAGE_ROWS, job.partition, job.files, job.progress)
    for batch in iter_files(job.files, batch_rows=job.batch_rows):
        start = 0
        for i, kts in enumerate(batch.kafka_ts):
            a = kts if arrival is None or kts > arrival else arrival
            if j < n and a > times[order[j]]:
                process(batch[start:i])
                start = i
                answer(a)
            arrival = a
        process(batch[start:])
        if tracker is not None:
            tracker.advance(len(batch))
    if tracker is not None:
        tracker.finish()
    answer(None)
    return cols


# ----------------------------------------------------------------------------- entry point


def training_set(
    topology: TopologyLike,
    snapshot_dir: str | os.PathLike[str],
    spine: str | os.PathLike[str] | pa.Table,
    out: str | os.PathLike[str] | None,
    *,
    features: Sequence[str] | None = None,
    as_served: bool = False,
    entity_column: str | None = None,
    timestamp_column: str | None = None,
    date_from: DateLike | None = None,
    date_to: DateLike | None = None,
    processes: int | None = None,
    batch_rows: int = _BATCH_ROWS,
    progress: bool = True,
) -> pa.Table:
    """The spine's columns plus one column per requested ``{feature}__{window}``.

    Rows keep the spine's order. ``spine``: a Parquet or CSV path, or an Arrow table;
    its entity and timestamp columns default to the topology's ``source.key`` and
    ``source.timestamp``. ``features``: feature or field names (default: all).
    ``out``: the Parquet file to write (``None``: only return the table). See the module
    docstring for the semantics of event time and ``as_served``. ``progress``: log the
    progress of each pass on ``streamfeat.replay`` (:mod:`streamfeat.progress`).
    """
    topo = resolve_topology(topology)
    fields = tuple(resolve_fields(topo, features))
    table = spine if isinstance(spine, pa.Table) else read_spine(spine)
    ecol, tcol = spine_columns(topo, fields, table.column_names, entity_column,
                               timestamp_column)
    entities = entity_ids(table, ecol)
    times = timestamps_ms(table, tcol)
    snap = snapshot_root(snapshot_dir)
    lo, hi = parse_date(date_from, "--from"), parse_date(date_to, "--to")
    topic = consumed_topic(topo)
    files = {
        p: tuple(snapshot_files(snap, topic, p, date_from=lo, date_to=hi))
        for p in snapshot_partitions(snap, topic)
    }
    span = coverage(files)
    warn_times(log, "training-set", "the spine", times, span)
    # pass 1: which partition holds each entity
    if progress:
        announce(progress_logger(LOGGER), _task(topo, _STAGE_KEYS),
                 sum(planned_records(fs) for fs in files.values()))
    key_sets = run_jobs(
        _keys_of_partition,
        [_KeysJob(topo, p, fs, batch_rows, progress) for p, fs in files.items()], processes,
    )
    home: dict[str, int] = {}
    shared = 0
    for p, keys in zip(files, key_sets, strict=True):
        for k in keys:
            if home.setdefault(k, p) != p:
                shared += 1
    if shared:
        log.warning("training-set: %d entities occur in several partitions; each is read "
                    "from the lowest one", shared)
    # pass 2: rows per partition
    n = len(entities)
    defaults = [topo.defaults.get(f) for f in fields]
    cols: list[list[Any]] = [[d] * n for d in defaults]
    by_part: dict[int, tuple[list[int], list[int], list[str]]] = {}
    for i, (e, t) in enumerate(zip(entities, times, strict=True)):
        if e is None or t is None:  # no entity or no time: no features
            for c in cols:
                c[i] = None
            continue
        home_p = home.get(e)
        if home_p is not None:
            rows_, times_, ents_ = by_part.setdefault(home_p, ([], [], []))
            rows_.append(i)
            times_.append(t)
            ents_.append(e)
    jobs = [
        _RowsJob(topo, p, files[p], fields, tuple(ts_), tuple(es_), batch_rows, progress)
        for p, (_rows, ts_, es_) in sorted(by_part.items())
    ]
    if progress:
        announce(progress_logger(LOGGER), _task(topo, _STAGE_ROWS),
                 sum(planned_records(j.files) for j in jobs))
    results = run_jobs(_as_served_rows if as_served else _event_time_rows, jobs, processes)
    for (_p, (rows, _t, _e)), part_cols in zip(sorted(by_part.items()), results, strict=True):
        for c, pc_ in zip(cols, part_cols, strict=True):
            for i, v in zip(rows, pc_, strict=True):
                c[i] = v
    arrays = arrow_columns(topo, fields, dict(zip(fields, cols, strict=True)))
    result = table
    for name in fields:
        result = result.append_column(name, arrays[name])
    result = with_lineage(result, training_lineage(
        topo, fields, snapshot_dir=str(snapshot_dir), files=files,
        kafka_ts=None if span is None else (span.first_ms, span.last_ms), date_from=lo,
        date_to=hi, as_served=as_served, spine_rows=n, entity_column=ecol,
        timestamp_column=tcol, spine_times=times))
    if out is not None:
        write_parquet_atomically(result, Path(out))
    return result
