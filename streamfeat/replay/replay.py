"""``streamfeat replay``: recompute features from snapshots through the worker's code path.

Each partition is read in offset order and fed, batch by batch, to the very
:class:`~streamfeat.pipeline.PartitionPipeline` the worker uses: the same
decoding, the same late decisions, the same operators, and the same updates (the values
of the touched and the due entities as of stream time, versioned
``(generation, partition, last offset of the batch)``). So the values a replay produces
for an entity as of any offset are the worker's.

Outputs:

- ``to_redis``: every batch's updates go through :class:`~streamfeat.sinks.RedisSink`.
  With a generation above the worker's (0) a backfill supersedes the online values
  (the compare-and-set orders writes by ``_v``).
- ``to_parquet``: (without ``to_redis``, the per-batch values are skipped: only the
  final ones are written) one row per entity with its values as of its partition's final stream
  time (every entity ever accepted, not only the last touched), ``_asof`` (that stream
  time) and ``_v`` (generation, partition, last offset replayed). Columns: the entity
  column (named like ``source.key``), ``_asof``, ``_v``, then one per Redis field;
  list-valued aggregations as JSON text.

Partitions run in parallel processes (``spawn``), at most ``os.cpu_count()``.
Memory per process: one batch of records plus the partition's window state (as in the
worker), plus, for ``to_parquet``, the final rows of that partition's entities.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streamfeat.errors import ConfigError, SinkError
from streamfeat.pipeline import PartitionPipeline
from streamfeat.sinks import RedisSink, UpdateBatch, version
from streamfeat.snapshot.reader import (
    DateLike,
    iter_files,
    parse_date,
    snapshot_files,
)
from streamfeat.snapshot.reader import (
    partitions as snapshot_partitions,
)
from streamfeat.topology import AggKind, TopologyDef, load_topology

__all__ = [
    "PartitionStats",
    "ReplayResult",
    "TopologyLike",
    "arrow_columns",
    "replay",
    "resolve_topology",
]

TopologyLike = TopologyDef | str | os.PathLike[str]

_BATCH_ROWS = 20_000  # the worker's default --batch-size
_VALUES_CHUNK = 10_000
_PROGRESS_EVERY_S = 5.0
_SINK_ATTEMPTS = 6


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


def resolve_topology(topology: TopologyLike) -> TopologyDef:
    """A loaded topology (a path is loaded and validated)."""
    if isinstance(topology, TopologyDef):
        return topology
    return load_topology(Path(topology))


def _json_text(v: Any) -> str | None:
    if v is None:
        return None
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _column(agg: AggKind, values: list[Any]) -> pa.Array:
    if agg in (AggKind.COUNT, AggKind.COUNT_DISTINCT):
        return pa.array(values, pa.int64())
    if agg.numeric:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if agg in (AggKind.LAST_K, AggKind.TOP_K):
        return pa.array([_json_text(v) for v in values], pa.string())
    # first / last: the field's own type when it is uniform, JSON text otherwise
    present = [v for v in values if v is not None]
    if all(type(v) is str for v in present):
        return pa.array(values, pa.string())
    if all(type(v) in (int, float) for v in present):
        if all(type(v) is int for v in present):
            return pa.array(values, pa.int64())
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([_json_text(v) for v in values], pa.string())


def arrow_columns(
    topology: TopologyDef, fields: Sequence[str], columns: Mapping[str, list[Any]]
) -> dict[str, pa.Array]:
    """Feature columns as Arrow arrays with a type decided by the aggregation.

    counts: int64; numeric aggregations: float64; ``last_k``/``top_k``: JSON text;
    ``first``/``last``: the field's type when uniform (string, int64, float64), else JSON.
    """
    agg_of = {f.redis_field(w): f.agg for f in topology.features for w in f.windows}
    return {name: _column(agg_of[name], columns[name]) for name in fields}


# ----------------------------------------------------------------------------- one partition


@dataclass(frozen=True, slots=True)
class _Job:
    topology: TopologyDef
    snapshot_dir: str
    partition: int
    date_from: str | None
    date_to: str | None
    to_redis: str | None
    want_final: bool
    generation: int
    progress: bool
    batch_rows: int


def _write_with_retry(
    sink: RedisSink, updates: list[UpdateBatch], stats: PartitionStats
) -> None:
    for attempt in range(_SINK_ATTEMPTS):
        try:
            result = sink.write(updates)
        except SinkError:
            if attempt == _SINK_ATTEMPTS - 1:
                raise
            time.sleep(min(5.0, 0.2 * 2**attempt))
            continue
        stats.redis_applied += result.applied
        stats.redis_rejected += result.rejected
        return


def _final_rows(
    processor: PartitionPipeline, entities: Iterable[str], generation: int, stats: PartitionStats
) -> dict[str, list[Any]]:
    topology = processor.topology
    key = topology.source.key
    names = topology.redis_fields()
    cols: dict[str, list[Any]] = {key: [], "_asof": [], "_v": [], **{n: [] for n in names}}
    st = processor.stream_time
    if st is None or stats.last_offset is None:
        return cols
    v = version(generation, stats.partition, stats.last_offset)
    ordered = sorted(entities)
    for i in range(0, len(ordered), _VALUES_CHUNK):
        chunk = ordered[i : i + _VALUES_CHUNK]
        values = processor.operator.values(chunk, as_of=st)
        for e in chunk:
            row = values[e]
            cols[key].append(e)
            cols["_asof"].append(st)
            cols["_v"].append(v)
            for n in names:
                cols[n].append(row.get(n))
    return cols


class _FinalOnlyProcessor(PartitionPipeline):
    """The worker's processor, minus the per-batch values nobody reads (Parquet only).

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
    files = snapshot_files(job.snapshot_dir, topology.source.topic, job.partition,
                           date_from=job.date_from, date_to=job.date_to)
    stats.files = len(files)
    sink = RedisSink(job.to_redis, topology) if job.to_redis else None
    processor = (
        PartitionPipeline(topology, job.partition, generation=job.generation) if sink
        else _FinalOnlyProcessor(topology, job.partition, generation=job.generation)
    )
    entities: set[str] = set()
    started = last_report = time.monotonic()
    done_files = 0
    try:
        for batch in iter_files(files, batch_rows=job.batch_rows):
            outcome = processor.process(batch)
            stats.records += outcome.consumed
            stats.aggregated += outcome.aggregated
            stats.late += outcome.late
            stats.malformed += outcome.malformed
            stats.last_offset = batch.offsets[-1]
            for u in outcome.updates:
                entities.update(u.entity_ids)
            if sink is not None and outcome.updates:
                _write_with_retry(sink, outcome.updates, stats)
            if job.progress:
                now = time.monotonic()
                if now - last_report >= _PROGRESS_EVERY_S:
                    last_report = now
                    while (done_files < len(files)
                           and files[done_files].last_offset <= batch.offsets[-1]):
                        done_files += 1
                    rate = stats.records / max(now - started, 1e-9)
                    pct = 100.0 * done_files / max(len(files), 1)
                    print(
                        f"replay {topology.name}[{job.partition}]: {stats.records:,} records, "
                        f"{rate:,.0f} records/s, {pct:.0f}% of {len(files)} files",
                        file=sys.stderr, flush=True,
                    )
    finally:
        if sink is not None:
            sink.close()
    stats.stream_time = processor.stream_time
    if isinstance(processor, _FinalOnlyProcessor):
        entities = processor.seen
    stats.entities = len(entities)
    final = _final_rows(processor, entities, job.generation, stats) if job.want_final else None
    return stats, final


# ----------------------------------------------------------------------------- entry point


def _parse_partitions(
    wanted: Iterable[int] | None, found: list[int], snapshot_dir: str, topic: str
) -> list[int]:
    if wanted is None:
        return found
    out = sorted(set(wanted))
    if any(p < 0 for p in out):
        raise ConfigError(f"partitions must be >= 0, got {out}")
    missing = [p for p in out if p not in found]
    if missing and not found:
        raise ConfigError(
            f"no snapshots of topic {topic!r} under {snapshot_dir}; run the worker with "
            "--snapshot-dir (or pass the right --snapshot-dir)"
        )
    return out


def run_jobs(
    fn: Callable[[Any], Any], jobs: Sequence[Any], processes: int | None
) -> list[Any]:
    """``fn`` over ``jobs``: in this process when one worker suffices, else in spawned ones."""
    cpus = os.cpu_count() or 1
    n = min(len(jobs), cpus if processes is None else max(1, min(processes, cpus)))
    if n <= 1:
        return [fn(j) for j in jobs]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        return list(pool.map(fn, jobs))


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
    batch_rows: int = _BATCH_ROWS,
) -> ReplayResult:
    """Recompute the topology's features from its snapshots (see the module docstring).

    ``partitions``: only these (default: every partition with snapshots); ``date_from`` /
    ``date_to``: only the snapshot dates in that range (inclusive, ``YYYY-MM-DD``).
    At least one of ``to_redis`` (a Redis URL) and ``to_parquet`` (a file path) is needed.
    """
    topo = resolve_topology(topology)
    if to_redis is None and to_parquet is None:
        raise ConfigError("replay needs an output: pass --to-redis URL or --to-parquet PATH")
    if generation < 0:
        raise ConfigError(f"--generation must be >= 0, got {generation}")
    if to_redis is not None and generation == 0:
        print("replay: generation 0 equals the worker's; the backfill will not supersede "
              "newer online values (use --generation 1 or more)", file=sys.stderr)
    if batch_rows < 1:
        raise ConfigError(f"batch_rows must be at least 1, got {batch_rows}")
    snap = str(snapshot_dir)
    if not Path(snap).is_dir():
        raise ConfigError(f"snapshot directory {snap!r} does not exist; pass --snapshot-dir")
    lo, hi = parse_date(date_from, "--from"), parse_date(date_to, "--to")
    parts = _parse_partitions(partitions, snapshot_partitions(snap, topo.source.topic), snap,
                              topo.source.topic)
    jobs = [
        _Job(topo, snap, p, lo, hi, to_redis, to_parquet is not None, generation, progress,
             batch_rows)
        for p in parts
    ]
    started = time.monotonic()
    results: list[tuple[PartitionStats, dict[str, list[Any]] | None]] = run_jobs(
        _replay_partition, jobs, processes
    )
    out = ReplayResult([s for s, _ in results], time.monotonic() - started)
    if to_parquet is not None:
        _write_final(topo, [cols for _, cols in results if cols is not None], Path(to_parquet))
    if progress:
        print(
            f"replay {topo.name}: {out.records:,} records of {len(parts)} partitions, "
            f"{out.entities:,} entities in {out.seconds:.1f} s ({out.records_per_s:,.0f} "
            "records/s)", file=sys.stderr, flush=True,
        )
    return out


def _write_final(topology: TopologyDef, parts: list[dict[str, list[Any]]], path: Path) -> None:
    key = topology.source.key
    names = topology.redis_fields()
    merged: dict[str, list[Any]] = {key: [], "_asof": [], "_v": [], **{n: [] for n in names}}
    for cols in parts:
        for name, values in cols.items():
            merged[name].extend(values)
    arrays: dict[str, pa.Array] = {
        key: pa.array(merged[key], pa.string()),
        "_asof": pa.array(merged["_asof"], pa.int64()),
        "_v": pa.array(merged["_v"], pa.string()),
        **arrow_columns(topology, names, merged),
    }
    write_parquet_atomically(pa.table(arrays), path)


def write_parquet_atomically(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` via a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
