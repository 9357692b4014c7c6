"""``replay``, ``training_set`` and ``verify`` on Spark: the local jobs, in Spark tasks.

The driver only lists snapshot files and plans; each task reads its partition's files
itself and runs the local engine's job function (:mod:`streamfeat.spark.tasks`), so the
values are the worker's, bit for bit. Results stay in Spark (DataFrames) until a sink
writes them: Parquet parts, a Spark table, or Redis (from the tasks, fenced by version as
the local backfill is). Nothing proportional to the records or the spine reaches the
driver: per partition a statistics row, a checkpoint per batch read, the kinds of the
``first``/``last`` columns.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from streamfeat.client import resolve_fields
from streamfeat.errors import ConfigError
from streamfeat.pipeline.rekey import consumed_topic
from streamfeat.registry import training_lineage, with_lineage
from streamfeat.replay.backfill import PartitionStats, ReplayResult, _Job
from streamfeat.replay.coverage import Coverage, coverage, warn_dates, warn_times
from streamfeat.replay.inputs import (
    TopologyLike,
    resolve_topology,
    select_partitions,
    snapshot_root,
)
from streamfeat.replay.jobs import LOGGER
from streamfeat.replay.output import combined_kind
from streamfeat.replay.spine import read_spine, spine_columns
from streamfeat.replay.verification import VerifyReport, online_targets
from streamfeat.snapshot import snapshot_store
from streamfeat.snapshot.layout import date_folders
from streamfeat.snapshot.reader import DateLike, SnapshotFile, parse_date, snapshot_files
from streamfeat.snapshot.reader import partitions as snapshot_partitions
from streamfeat.spark.columns import (
    arrow_type,
    final_arrow_type,
    pending_fields,
    typed_batches,
)
from streamfeat.spark.session import spark_session
from streamfeat.spark.sinks import write_parts, write_table
from streamfeat.spark.slicing import Checkpoint, reach_ms, refusal
from streamfeat.spark.tasks import (
    ENTITY,
    FIRST,
    HOME,
    META,
    NO_ENTITY,
    SLICE,
    TIME,
    UNKNOWN,
    IndexJob,
    IndexTask,
    ReplayTask,
    RowsTask,
    VerifyJob,
    VerifyTask,
)
from streamfeat.topology import TopologyDef
from streamfeat.topology.definitions import ASOF_FIELD, VERSION_FIELD

__all__ = ["SparkReplayResult", "replay", "training_set", "verify"]

log = logging.getLogger(LOGGER)

_BATCH_ROWS = 20_000
_PARTITION = "_sf_partition"
_MAX_GROUP_TASKS = 10_000
_CHECKPOINT_ROWS = 2_000


@dataclass(slots=True)
class SparkReplayResult(ReplayResult):
    """A replay's totals, and (with final values asked for) its values as a DataFrame."""

    frame: DataFrame | None = None


class _Typed:
    """``mapInArrow``: pending columns typed once their kinds are known."""

    def __init__(self, kinds: Mapping[str, str], schema: pa.Schema) -> None:
        self.kinds = dict(kinds)
        self.schema = schema

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return typed_batches(batches, self.kinds, self.schema)


def _metas(frame: DataFrame) -> list[Any]:
    rows = frame.filter(F.col(META).isNotNull()).select(META).collect()
    # our own tasks' pickles
    return [pickle.loads(r[0]) for r in rows]  # noqa: S301


def _kinds(found: Iterable[Mapping[str, str | None]], names: Sequence[str]) -> dict[str, str]:
    return {n: combined_kind(k.get(n) for k in found) for n in names}


def _finish(topology: TopologyDef, frame: DataFrame, arrow: pa.Schema, fields: Sequence[str],
            kinds: Mapping[str, str]) -> tuple[DataFrame, pa.Schema]:
    """The value rows of ``frame`` (meta rows dropped) with their final column types."""
    values = frame.filter(F.col(META).isNull()).drop(META)
    names = [f.name for f in arrow if f.name != META]
    wanted = set(fields)
    final = pa.schema([
        pa.field(n, final_arrow_type(topology, n, kinds)) if n in wanted else arrow.field(n)
        for n in names
    ])
    if kinds:
        values = values.mapInArrow(_Typed(kinds, final), from_arrow_schema(final))
    return values, final


def _jobs_range(spark: SparkSession, n: int) -> DataFrame:
    """One row per job, one Spark partition per row: one task per job."""
    return spark.range(n, numPartitions=max(n, 1))


def _files(topo: TopologyDef, snap: str, partitions: Iterable[int] | None,
           lo: str | None, hi: str | None) -> dict[int, tuple[SnapshotFile, ...]]:
    topic = consumed_topic(topo)
    parts = select_partitions(partitions, snapshot_partitions(snap, topic), snap, topic)
    return {p: tuple(snapshot_files(snap, topic, p, date_from=lo, date_to=hi)) for p in parts}


# ----------------------------------------------------------------------------- replay


def replay(
    topology: TopologyLike,
    snapshot_dir: str | os.PathLike[str],
    *,
    spark: SparkSession | None = None,
    master: str | None = None,
    partitions: Iterable[int] | None = None,
    date_from: DateLike | None = None,
    date_to: DateLike | None = None,
    to_redis: str | None = None,
    to_parquet: str | os.PathLike[str] | None = None,
    to_table: str | None = None,
    frame: bool = False,
    generation: int = 1,
    batch_rows: int = _BATCH_ROWS,
    progress: bool = True,
) -> SparkReplayResult:
    """:func:`streamfeat.replay.replay` on Spark: one task per partition.

    ``to_parquet``: a directory of Parquet parts (:mod:`streamfeat.spark.sinks`), equal to
    the local engine's file once sorted by key; ``to_table``: a Spark table; ``frame``:
    return the final values as a DataFrame (cached; ``unpersist`` it when done) in
    ``result.frame``. ``to_redis``: every batch's updates, from the tasks, with the same
    fenced writes as the local backfill.
    """
    topo = resolve_topology(topology)
    want_final = to_parquet is not None or to_table is not None or frame
    if to_redis is None and not want_final:
        raise ConfigError("replay needs an output: pass --to-redis URL, --to-parquet PATH or "
                          "--output-table NAME")
    if generation < 0:
        raise ConfigError(f"--generation must be >= 0, got {generation}")
    if to_redis is not None and generation == 0:
        log.warning("replay: generation 0 equals the worker's; the backfill will not "
                    "supersede newer online values (use --generation 1 or more)")
    if batch_rows < 1:
        raise ConfigError(f"batch_rows must be at least 1, got {batch_rows}")
    session = spark or spark_session(master)
    snap = snapshot_root(snapshot_dir)
    lo, hi = parse_date(date_from, "--from"), parse_date(date_to, "--to")
    files = _files(topo, snap, partitions, lo, hi)
    if lo is not None or hi is not None:
        warn_dates(log, "replay", lo, hi, date_folders(snapshot_store(snap), consumed_topic(topo)),
                   coverage(files))
    jobs = tuple(_Job(topo, p, fs, to_redis, want_final, generation, False, batch_rows)
                 for p, fs in files.items())
    key = topo.source.key
    names = topo.redis_fields()
    arrow = pa.schema([(key, pa.string()), (ASOF_FIELD, pa.int64()),
                       (VERSION_FIELD, pa.string()),
                       *((n, arrow_type(topo, n)) for n in names), (META, pa.binary())])
    started = time.monotonic()
    stage = _jobs_range(session, len(jobs)).mapInArrow(ReplayTask(jobs, arrow),
                                                      from_arrow_schema(arrow))
    if want_final:
        stage = stage.persist(StorageLevel.MEMORY_AND_DISK)
    metas = _metas(stage)
    stats: list[PartitionStats] = sorted((s for s, _k in metas), key=lambda s: s.partition)
    out = SparkReplayResult(stats, time.monotonic() - started)
    if want_final:
        kinds = _kinds([k for _s, k in metas], pending_fields(topo, names))
        values, schema = _finish(topo, stage, arrow, names, kinds)
        if to_parquet is not None:
            write_parts(values, os.fspath(to_parquet), schema)
        if to_table is not None:
            write_table(values, to_table)
        if frame:
            out.frame = values
        else:
            stage.unpersist()
        out.seconds = time.monotonic() - started
    if progress:
        log.info("replay %s on Spark: %s records of %d partitions, %s entities in %.1f s "
                 "(%s records/s)", topo.name, f"{out.records:,}", len(jobs),
                 f"{out.entities:,}", out.seconds, f"{out.records_per_s:,.0f}")
    return out


# ----------------------------------------------------------------------------- training sets


def _spine_frame(spark: SparkSession, spine: DataFrame | str | os.PathLike[str] | pa.Table
                 ) -> DataFrame:
    if isinstance(spine, DataFrame):
        return spine
    if isinstance(spine, pa.Table):
        return spark.createDataFrame(spine)
    path = Path(spine)
    if path.suffix.lower() in (".parquet", ".pq"):
        if "://" not in os.fspath(spine) and not path.exists():
            raise ConfigError(f"spine {str(path)!r} does not exist; pass --spine a Parquet or "
                              "CSV file")
        return spark.read.parquet(os.fspath(spine))
    return spark.createDataFrame(read_spine(path))  # CSV: typed as the local engine does


def _time_ms(spine: DataFrame, column: str) -> Column:
    t = spine.schema[column].dataType
    c = F.col(column)
    if isinstance(t, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
        return c.cast("long")
    if isinstance(t, T.DateType):
        return F.unix_date(c).cast("long") * F.lit(86_400_000)
    if isinstance(t, T.TimestampType):
        return F.unix_millis(c)
    raise ConfigError(
        f"spine column {column!r} is {t.simpleString()}; it must hold epoch milliseconds "
        "(integers) or timestamps (with a time zone)"
    )


def _warn_span(span: Coverage, n: int, low: int, high: int, before: int, after: int) -> None:
    """The local engine's warning on spine times beyond the snapshots, from the counts."""
    shown = [low] if n == 1 else [low, high]
    before -= sum(t < span.first_ms for t in shown)
    after -= sum(t > span.last_ms for t in shown)
    # stand-ins for the other rows outside: low (high) is before (after) the span when any is
    warn_times(log, "training-set", "the spine", chain(
        shown, repeat(low, max(0, before)), repeat(high, max(0, after))), span)


def _check_column(spine: DataFrame, column: str, what: str, flag: str) -> None:
    if column not in spine.columns:
        raise ConfigError(f"spine has no {what} column {column!r} (columns: "
                          f"{', '.join(spine.columns)}); pass {flag}")


def training_set(
    topology: TopologyLike,
    snapshot_dir: str | os.PathLike[str],
    spine: DataFrame | str | os.PathLike[str] | pa.Table,
    out: str | os.PathLike[str] | None = None,
    *,
    spark: SparkSession | None = None,
    master: str | None = None,
    features: Sequence[str] | None = None,
    as_served: bool = False,
    entity_column: str | None = None,
    timestamp_column: str | None = None,
    date_from: DateLike | None = None,
    date_to: DateLike | None = None,
    slice_seconds: float | None = None,
    to_table: str | None = None,
    batch_rows: int = _BATCH_ROWS,
    progress: bool = True,
) -> DataFrame:
    """:func:`streamfeat.replay.training_set` on Spark, a DataFrame in and out.

    ``spine``: a DataFrame (or a Parquet/CSV path, or an Arrow table); it is joined with
    each entity's source partition (found by the index pass, as the local engine's pass 1)
    and grouped by it, never collected. ``slice_seconds``: group rows by event-time slices
    too, each read from a warm-up before it (:mod:`streamfeat.spark.slicing`; refused with
    a warning, and one group per partition, where it cannot be exact). ``out``: a
    directory of Parquet parts with the lineage in each part's metadata; ``to_table``: a
    Spark table. Returns the spine's columns plus one per feature; row order is not kept
    (sort by the spine's columns).
    """
    topo = resolve_topology(topology)
    fields = tuple(resolve_fields(topo, features))
    session = spark or spark_session(master)
    frame = _spine_frame(session, spine)
    ecol, tcol = spine_columns(topo, fields, frame.columns, entity_column, timestamp_column)
    _check_column(frame, ecol, "entity", "--entity-column")
    _check_column(frame, tcol, "timestamp", "--timestamp-column")
    slice_ms: int | None = None
    if slice_seconds is not None:
        if slice_seconds <= 0:
            raise ConfigError(f"--slice must be a positive number of seconds, got "
                              f"{slice_seconds}")
        why = refusal(topo, fields, as_served=as_served)
        if why is None:
            slice_ms = max(1, round(slice_seconds * 1000))
        else:
            log.warning("training-set: not slicing by time (%s); one task per partition", why)
    snap = snapshot_root(snapshot_dir)
    lo, hi = parse_date(date_from, "--from"), parse_date(date_to, "--to")
    files = _files(topo, snap, None, lo, hi)
    span = coverage(files)

    # pass 1: each partition's accepted entities (first event time) and checkpoints
    index_arrow = pa.schema([(ENTITY, pa.string()), (_PARTITION, pa.int64()),
                             (FIRST, pa.int64()), (META, pa.binary())])
    # checkpoints every few thousand records: a slice then reads little beyond its span
    index_jobs = tuple(IndexJob(topo, p, fs, min(batch_rows, _CHECKPOINT_ROWS))
                       for p, fs in files.items())
    index = _jobs_range(session, len(index_jobs)).mapInArrow(
        IndexTask(index_jobs, index_arrow), from_arrow_schema(index_arrow)
    ).persist(StorageLevel.MEMORY_AND_DISK)
    checkpoints: dict[int, list[Checkpoint]] = dict(_metas(index))
    entities = index.filter(F.col(META).isNull())
    homes = (entities.groupBy(ENTITY)
             .agg(F.min(F.struct(_PARTITION, FIRST)).alias("_sf_h"))
             .select(ENTITY, F.col("_sf_h." + _PARTITION).alias(_PARTITION),
                     F.col("_sf_h." + FIRST).alias(FIRST)))
    if progress:
        shared = entities.count() - homes.count()
        if shared:
            log.warning("training-set: %d entities occur in several partitions; each is "
                        "read from the lowest one", shared)

    # the spine meets its entities' partitions: joined, then grouped by (partition, slice)
    spine_names = tuple(frame.columns)
    keyed = frame.select("*", F.col(ecol).cast("string").alias(ENTITY),
                         _time_ms(frame, tcol).alias(TIME))
    joined = keyed.join(homes, on=ENTITY, how="left")
    home = (F.when(F.col(ENTITY).isNull() | F.col(TIME).isNull(), F.lit(NO_ENTITY))
            .when(F.col(_PARTITION).isNull(), F.lit(UNKNOWN))
            .otherwise(F.col(_PARTITION)))
    joined = joined.withColumn(HOME, home.cast("long"))
    slice_col = (F.floor(F.col(TIME) / F.lit(slice_ms)).cast("long") if slice_ms is not None
                 else F.lit(0).cast("long"))
    joined = joined.withColumn(SLICE, F.when(F.col(HOME) >= 0, slice_col).otherwise(0))
    # the spine's types as a task returns them (Spark takes timestamps back in UTC)
    spine_arrow = to_arrow_schema(frame.schema, timezone="UTC")
    arrow = pa.schema([*spine_arrow, *((n, arrow_type(topo, n)) for n in fields),
                       (META, pa.binary())])
    pending = tuple(pending_fields(topo, fields))
    task = RowsTask(topo, fields, files, checkpoints, as_served, batch_rows, slice_ms,
                    reach_ms(topo, fields) if slice_ms is not None else 0, spine_names, arrow,
                    pending)
    def run(table: pa.Table) -> pa.Table:  # a function: Spark counts its parameters
        return task(table)

    # as many tasks as groups (about): an explicit count, which adaptive execution keeps
    # (it would merge these few small shuffle partitions into one task: the rows are small,
    # the work per group is not)
    groups = len(files) + 2
    if slice_ms is not None:
        low, high = keyed.agg(F.min(TIME), F.max(TIME)).collect()[0]
        if low is not None:
            groups = len(files) * (1 + (int(high) - int(low)) // slice_ms) + 2
    joined = joined.repartition(min(groups, _MAX_GROUP_TASKS), HOME, SLICE)
    stage = joined.groupBy(HOME, SLICE).applyInArrow(run, from_arrow_schema(arrow))
    if pending:
        stage = stage.persist(StorageLevel.MEMORY_AND_DISK)
        kinds = _kinds(_metas(stage), pending)
    else:
        kinds = {}
    values, schema = _finish(topo, stage, arrow, fields, kinds)
    if out is not None or progress:
        stats = keyed.agg(F.count(F.lit(1)), F.min(TIME), F.max(TIME),
                          *((F.sum((F.col(TIME) < span.first_ms).cast("long")),
                             F.sum((F.col(TIME) > span.last_ms).cast("long")))
                            if span is not None else ())).collect()[0]
        n, low, high = int(stats[0]), stats[1], stats[2]
        if span is not None and low is not None:
            _warn_span(span, n, int(low), int(high), int(stats[3] or 0), int(stats[4] or 0))
        if out is not None:
            lineage = training_lineage(
                topo, fields, snapshot_dir=str(snapshot_dir), files=files,
                kafka_ts=None if span is None else (span.first_ms, span.last_ms),
                date_from=lo, date_to=hi, as_served=as_served, spine_rows=n,
                entity_column=ecol, timestamp_column=tcol,
                spine_times=[t for t in (low, high) if t is not None])
            schema = with_lineage(schema.empty_table(), lineage).schema
            write_parts(values, os.fspath(out), schema)
    if to_table is not None:
        write_table(values, to_table)
    if out is not None or to_table is not None:
        index.unpersist()  # else the returned DataFrame still reads it
    return values


# ----------------------------------------------------------------------------- verify


def verify(
    topology: TopologyLike,
    snapshot_dir: str | os.PathLike[str],
    redis_url: str,
    *,
    spark: SparkSession | None = None,
    master: str | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> VerifyReport:
    """:func:`streamfeat.replay.verify` on Spark: each partition's replay in a task."""
    topo = resolve_topology(topology)
    online, targets = online_targets(topo, redis_url, sample=sample, seed=seed)
    topic = consumed_topic(topo)
    jobs = tuple(
        VerifyJob(topo, p, tuple(snapshot_files(os.fspath(snapshot_dir), topic, p)),
                  {o: list(es) for o, es in by_offset.items()},
                  {e: online[e] for es in by_offset.values() for e in es})
        for p, by_offset in sorted(targets.items())
    )
    report = VerifyReport(1.0, 0)
    failed: set[str] = set()
    if jobs:
        session = spark or spark_session(master)
        arrow = pa.schema([(META, pa.binary())])
        stage = _jobs_range(session, len(jobs)).mapInArrow(VerifyTask(jobs, arrow),
                                                          from_arrow_schema(arrow))
        for part, part_failed in _metas(stage):
            report.checked += part.checked
            report.skipped += part.skipped
            report.mismatches.extend(part.mismatches)
            failed |= part_failed
    report.match_rate = (report.checked - len(failed)) / report.checked if report.checked else 0.0
    return report
