"""``streamfeat replay``: backfill features from snapshots through the worker's code path.

Each partition is read in offset order and fed, batch by batch, to the very
:class:`~streamfeat.pipeline.PartitionPipeline` the worker uses: the same
decoding, the same late decisions, the same operators, and the same updates (the values
of the touched and the due entities as of stream time, versioned
``(generation, partition, last offset of the batch)``). So the values a replay produces
for an entity as of any offset are the worker's.

Outputs:

- ``to_redis``: every batch's updates go through :class:`~streamfeat.sinks.RedisSink`.
  With a generation above the worker's (0) a backfill supersedes the online values
  (the compare-and-set orders writes by their version, ``_v``).
- ``to_parquet``: (without ``to_redis``, the per-batch values are skipped: only the
  final ones are written) one row per entity with its values as of its partition's final
  stream time (every entity ever accepted, not only the last touched), ``_asof`` (that
  stream time) and ``_v`` (generation, partition, last offset replayed). Columns: the
  entity column (named like ``source.key``), ``_asof``, ``_v``, then one per Redis field;
  list-valued aggregations as JSON text.

Partitions run in parallel processes (:mod:`streamfeat.replay.jobs`), at most
``os.cpu_count()``. Memory per process: one batch of records plus the partition's window
state (as in the worker), plus, for ``to_parquet``, the final rows of that partition's
entities. Progress goes to the ``streamfeat.replay`` logger at INFO (lines) and DEBUG
(steps for a progress bar: :mod:`streamfeat.progress`); a ``date_from`` or ``date_to``
beyond the snapshots is a warning there (:mod:`streamfeat.replay.coverage`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from streamfeat.errors import ConfigError, SinkError
from streamfeat.pipeline import PartitionPipeline
from streamfeat.pipeline.rekey import consumed_topic
from streamfeat.progress import Tracker, announce, progress_logger
from streamfeat.replay.coverage import coverage, warn_dates
from streamfeat.replay.inputs import (
    TopologyLike,
    planned_records,
    resolve_topology,
    select_partitions,
    snapshot_root,
)
from streamfeat.replay.jobs import LOGGER, run_jobs
from streamfeat.replay.output import arrow_columns, write_parquet_atomically
from streamfeat.retry import call_with_retry
from streamfeat.sinks import RedisSink, UpdateBatch, version
from streamfeat.snapshot import snapshot_store
from streamfeat.snapshot.layout import date_folders
from streamfeat.snapshot.reader import (
    DateLike,
    SnapshotFile,
    iter_files,
    parse_date,
    snapshot_files,
)
from streamfeat.snapshot.reader import partitions as snapshot_partitions
from streamfeat.topology import TopologyDef
from streamfeat.topology.definitions import ASOF_FIELD, VERSION_FIELD

__all__ = ["PartitionStats", "ReplayResult", "replay"]

log = logging.getLogger(LOGGER)

_BATCH_ROWS = 20_000  # the worker's default --batch-size
# Parquet only: no values per batch, so larger batches only spread the operators' per-batch
# work over more records (benchmarks/RESULTS.md, "Replay against the worker")
_FINAL_BATCH_ROWS = 100_000
_VALUES_CHUNK = 10_000
_SINK_ATTEMPTS = 6
_SINK_FIRST_WAIT_S = 0.2


@dataclass(slots=True)
class PartitionStats:
    """What the replay of one partition did."""

    partition: int
    records: int = 0
    aggregated: int = 0
    late: int = 0
    malformed: int = 0
    entities: int = 0
    files: int = 0
    last_offset: int | None = None
    stream_time: int | None = None
    redis_applied: int = 0
    redis_rejected: int = 0


@dataclass(slots=True)
class ReplayResult:
    """Totals of a replay, and the per-partition details."""

    partitions: list[PartitionStats] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)

    @property
    def entities(self) -> int:
        return sum(p.entities for p in self.partitions)

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------- one partition


@dataclass(frozen=True, slots=True)
class _Job:
    topology: TopologyDef
    partition: int
    files: tuple[SnapshotFile, ...]
    to_redis: str | None
    want_final: bool
    generation: int
    progress: bool
    batch_rows: int


def _write_with_retry(
    sink: RedisSink, updates: list[UpdateBatch], stats: PartitionStats
) -> None:
    """Write a batch's updates, waiting out a Redis outage for a bounded number of tries."""
    result = call_with_retry(
        lambda: sink.write(updates), retry_on=SinkError, attempts=_SINK_ATTEMPTS,
        first_s=_SINK_FIRST_WAIT_S,
    )
    stats.redis_applied += result.applied
    stats.redis_rejected += result.rejected


def _final_columns(topology: TopologyDef) -> dict[str, list[Any]]:
    key = topology.source.key
    return {key: [], ASOF_FIELD: [], VERSION_FIELD: [],
            **{n: [] for n in topology.redis_fields()}}


def _final_rows(
    pipeline: PartitionPipeline, entities: Iterable[str], generation: int, stats: PartitionStats
) -> dict[str, list[Any]]:
    topology = pipeline.topology
    key = topology.source.key
    names = topology.redis_fields()
    cols = _final_columns(topology)
    st = pipeline.stream_time
    if st is None or stats.last_offset is None:
        return cols
    v = version(generation, stats.partition, stats.last_offset)
    ordered = sorted(entities)
    operator = pipeline.operator
    served = operator.field_names
    cols[key] = ordered
    cols[ASOF_FIELD] = [st] * len(ordered)
    cols[VERSION_FIELD] = [v] * len(ordered)
    for i in range(0, len(ordered), _VALUES_CHUNK):  # as columns: no dict per entity
        chunk = ordered[i : i + _VALUES_CHUNK]
        by_name = dict(zip(served, operator.value_columns(chunk, as_of=st), strict=True))
        for n in names:
            column = by_name.get(n)
            cols[n].extend([None] * len(chunk) if column is None else column)
    return cols


class _FinalOnlyPipeline(PartitionPipeline):
    """The worker's pipeline, minus the per-batch values nobody reads (Parquet only).

    ``process`` (decoding, late decisions, operators) is inherited unchanged; only the
    values of each batch's touched entities are not computed: the entity ids are kept,
    and the final values are computed once at the end. About halves the replay time.
    """

    def __init__(self, topology: TopologyDef, partition: int, *, generation: int) -> None:
        super().__init__(topology, partition, generation=generation)
        self.seen: set[str] = set()

    def updates(self, touched: set[str], stream_time: int, offset: int) -> list[UpdateBatch]:
        self.seen |= touched
        return []


def _replay_partition(job: _Job) -> tuple[PartitionStats, dict[str, list[Any]] | None]:
    topology = job.topology
    stats = PartitionStats(job.partition)
    files = job.files
    stats.files = len(files)
    sink = RedisSink(job.to_redis, topology) if job.to_redis else None
    pipeline = (
        PartitionPipeline(topology, job.partition, generation=job.generation) if sink
        else _FinalOnlyPipeline(topology, job.partition, generation=job.generation)
    )
    pipeline.keep_dead_letters = False  # counted in the stats; a replay writes none
    entities: set[str] = set()
    started = time.monotonic()
    done_files = 0

    def detail(done: int) -> str:
        nonlocal done_files
        while done_files < len(files) and files[done_files].last_offset <= (
                stats.last_offset if stats.last_offset is not None else -1):
            done_files += 1
        rate = done / max(time.monotonic() - started, 1e-9)
        return f"{rate:,.0f} records/s, {done_files} of {len(files)} files"

    tracker = Tracker(progress_logger(LOGGER), f"replay {topology.name}", str(job.partition),
                      planned_records(files), detail=detail) if job.progress else None
    try:
        for batch in iter_files(files, batch_rows=job.batch_rows):
            outcome = pipeline.process(batch)
            stats.records += outcome.consumed
            stats.aggregated += outcome.aggregated
            stats.late += outcome.late
            stats.malformed += outcome.malformed
            stats.last_offset = batch.offsets[-1]
            for u in outcome.updates:
                entities.update(u.entity_ids)
            if sink is not None and outcome.updates:
                _write_with_retry(sink, outcome.updates, stats)
            if tracker is not None:
                tracker.update(stats.records)
    finally:
        if sink is not None:
            sink.close()
    if tracker is not None:
        tracker.finish()
    stats.stream_time = pipeline.stream_time
    if isinstance(pipeline, _FinalOnlyPipeline):
        entities = pipeline.seen
    stats.entities = len(entities)
    final = _final_rows(pipeline, entities, job.generation, stats) if job.want_final else None
    return stats, final


# ----------------------------------------------------------------------------- entry point


def replay(
    topology: TopologyLike,
    snapshot_dir: str | os.PathLike[str],
    *,
    partitions: Iterable[int] | None = None,
    date_from: DateLike | None = None,
    date_to: DateLike | None = None,
    to_redis: str | None = None,
    to_parquet: str | os.PathLike[str] | None = None,
    generation: int = 1,
    processes: int | None = None,
    progress: bool = True,
    batch_rows: int | None = None,
) -> ReplayResult:
    """Recompute the topology's features from its snapshots (see the module docstring).

    ``partitions``: only these (default: every partition with snapshots); ``date_from`` /
    ``date_to``: only the snapshot dates in that range (inclusive, ``YYYY-MM-DD``; a warning
    when either is beyond the snapshots). At least one of ``to_redis`` (a Redis URL) and
    ``to_parquet`` (a file path) is needed. ``progress``: log progress and totals on
    ``streamfeat.replay`` (:mod:`streamfeat.progress`). ``batch_rows``: records per batch
    (default: the worker's 20,000 with ``to_redis``, 100,000 for ``to_parquet`` alone); the
    values do not depend on it.
    """
    topo = resolve_topology(topology)
    if to_redis is None and to_parquet is None:
        raise ConfigError("replay needs an output: pass --to-redis URL or --to-parquet PATH")
    if generation < 0:
        raise ConfigError(f"--generation must be >= 0, got {generation}")
    if to_redis is not None and generation == 0:
        log.warning("replay: generation 0 equals the worker's; the backfill will not "
                    "supersede newer online values (use --generation 1 or more)")
    if batch_rows is None:
        batch_rows = _BATCH_ROWS if to_redis is not None else _FINAL_BATCH_ROWS
    if batch_rows < 1:
        raise ConfigError(f"batch_rows must be at least 1, got {batch_rows}")
    snap = snapshot_root(snapshot_dir)
    lo, hi = parse_date(date_from, "--from"), parse_date(date_to, "--to")
    topic = consumed_topic(topo)
    parts = select_partitions(partitions, snapshot_partitions(snap, topic), snap, topic)
    files = {p: tuple(snapshot_files(snap, topic, p, date_from=lo, date_to=hi)) for p in parts}
    if lo is not None or hi is not None:
        warn_dates(log, "replay", lo, hi, date_folders(snapshot_store(snap), topic),
                   coverage(files))
    jobs = [
        _Job(topo, p, files[p], to_redis, to_parquet is not None, generation, progress,
             batch_rows)
        for p in parts
    ]
    if progress:
        announce(progress_logger(LOGGER), f"replay {topo.name}",
                 sum(planned_records(fs) for fs in files.values()))
    started = time.monotonic()
    results: list[tuple[PartitionStats, dict[str, list[Any]] | None]] = run_jobs(
        _replay_partition, jobs, processes, size=lambda j: planned_records(j.files)
    )
    out = ReplayResult([s for s, _ in results], time.monotonic() - started)
    if to_parquet is not None:
        _write_final(topo, [cols for _, cols in results if cols is not None], Path(to_parquet))
    if progress:
        log.info("replay %s: %s records of %d partitions, %s entities in %.1f s (%s records/s)",
                 topo.name, f"{out.records:,}", len(parts), f"{out.entities:,}", out.seconds,
                 f"{out.records_per_s:,.0f}")
    return out


def _write_final(topology: TopologyDef, parts: list[dict[str, list[Any]]], path: Path) -> None:
    key = topology.source.key
    names = topology.redis_fields()
    merged = _final_columns(topology)
    for cols in parts:
        for name, values in cols.items():
            merged[name].extend(values)
    arrays: dict[str, pa.Array] = {
        key: pa.array(merged[key], pa.string()),
        ASOF_FIELD: pa.array(merged[ASOF_FIELD], pa.int64()),
        VERSION_FIELD: pa.array(merged[VERSION_FIELD], pa.string()),
        **arrow_columns(topology, names, merged),
    }
    write_parquet_atomically(pa.table(arrays), path)
