"""What runs inside Spark tasks: the local engine's per-partition jobs, Arrow in and out.

Every task reads its partition's snapshot files itself (a local path or the object store,
through :mod:`streamfeat.snapshot`), in offset order, and runs the very job function of
:mod:`streamfeat.replay` that a local process runs; only the values cross Spark, as Arrow
batches. Besides its values a task emits one *meta* row (a pickle in the ``_sf_meta``
column, null on value rows): its statistics, the kinds of its pending columns
(:mod:`streamfeat.spark.columns`), or its checkpoints. Plain, picklable classes: Spark ships
them to the executors with their jobs.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from streamfeat.pipeline import Acceptance
from streamfeat.replay.backfill import _Job, _replay_partition
from streamfeat.replay.training import (
    _as_served_rows,
    _event_time_rows,
    _RowsJob,
    offset_range,
)
from streamfeat.replay.verification import VerifyReport, _verify_partition
from streamfeat.snapshot.reader import SnapshotFile
from streamfeat.spark.columns import feature_arrays
from streamfeat.spark.slicing import Checkpoint, read_range
from streamfeat.topology import TopologyDef
from streamfeat.topology.definitions import ASOF_FIELD, VERSION_FIELD

__all__ = [
    "ENTITY",
    "FIRST",
    "HOME",
    "META",
    "NO_ENTITY",
    "SLICE",
    "TIME",
    "UNKNOWN",
    "IndexTask",
    "ReplayTask",
    "RowsTask",
    "VerifyTask",
    "meta_batch",
]

META = "_sf_meta"
ENTITY = "_sf_entity"  # the spine's entity as text
TIME = "_sf_t"  # the spine's time, epoch ms
HOME = "_sf_home"  # the entity's source partition, or one of:
UNKNOWN = -1  # an entity no partition accepted: the topology's defaults
NO_ENTITY = -2  # a row without entity or time: no features (None)
FIRST = "_sf_first"  # the entity's first accepted event time in its home partition
SLICE = "_sf_slice"  # the row's time slice (0 when not sliced)

_CHUNK = 10_000


def meta_batch(schema: pa.Schema, payload: Any) -> pa.RecordBatch:
    """A one-row batch of ``schema``: nulls but ``_sf_meta``, the pickled ``payload``."""
    arrays = [pa.array([pickle.dumps(payload)], pa.binary()) if f.name == META
              else pa.nulls(1, f.type) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _ids(batches: Iterator[pa.RecordBatch]) -> Iterator[int]:
    for b in batches:
        yield from (int(i) for i in b.column(0).to_pylist())


# ----------------------------------------------------------------------------- replay


@dataclass(frozen=True, slots=True)
class ReplayTask:
    """``mapInArrow`` over job numbers: each replays one partition (the local job)."""

    jobs: tuple[_Job, ...]
    schema: pa.Schema

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for i in _ids(batches):
            job = self.jobs[i]
            stats, final = _replay_partition(job)
            kinds: dict[str, str | None] = {}
            if final is not None:
                topo = job.topology
                key = topo.source.key
                names = topo.redis_fields()
                n = len(final[key])
                for lo in range(0, n, _CHUNK):
                    part = {k: v[lo : lo + _CHUNK] for k, v in final.items()}
                    arrays, part_kinds = feature_arrays(topo, names, part)
                    for name, kind in part_kinds.items():
                        kinds[name] = _combine(kinds.get(name), kind)
                    yield pa.RecordBatch.from_arrays([
                        pa.array(part[key], pa.string()),
                        pa.array(part[ASOF_FIELD], pa.int64()),
                        pa.array(part[VERSION_FIELD], pa.string()),
                        *(arrays[name] for name in names),
                        pa.nulls(len(part[key]), pa.binary()),
                    ], schema=self.schema)
            yield meta_batch(self.schema, (stats, kinds))


def _combine(a: str | None, b: str | None) -> str | None:
    from streamfeat.replay.output import combined_kind

    if a is None:
        return b
    if b is None:
        return a
    return combined_kind([a, b])


# ----------------------------------------------------------------------------- training sets


@dataclass(frozen=True, slots=True)
class IndexJob:
    topology: TopologyDef
    partition: int
    files: tuple[SnapshotFile, ...]
    batch_rows: int


@dataclass(frozen=True, slots=True)
class IndexTask:
    """``mapInArrow`` over job numbers: a partition's accepted entities with the time of
    their first accepted event, and its checkpoints (the meta row), by the worker's
    :class:`~streamfeat.pipeline.Acceptance` (pass 1 of the local training set)."""

    jobs: tuple[IndexJob, ...]
    schema: pa.Schema

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for i in _ids(batches):
            job = self.jobs[i]
            first: dict[str, int] = {}
            checkpoints: list[Checkpoint] = []
            acceptance = Acceptance(job.topology, job.partition)
            for batch in offset_range(job.files, job.batch_rows):
                checkpoints.append((batch.offsets[0], acceptance.stream_time))
                verdict = acceptance.judge(batch)
                if not verdict.decoded.keys or verdict.stream_time is None:
                    continue
                events = verdict.accepted()
                for k, ts in zip(events.keys, events.ts, strict=True):
                    if k not in first or ts < first[k]:  # the smallest ts, not the first offset
                        first[k] = int(ts)
            keys = sorted(first)
            for lo in range(0, len(keys), _CHUNK):
                part = keys[lo : lo + _CHUNK]
                yield pa.RecordBatch.from_arrays([
                    pa.array(part, pa.string()),
                    pa.array([job.partition] * len(part), pa.int64()),
                    pa.array([first[k] for k in part], pa.int64()),
                    pa.nulls(len(part), pa.binary()),
                ], schema=self.schema)
            yield meta_batch(self.schema, (job.partition, checkpoints))


@dataclass(frozen=True, slots=True)
class RowsTask:
    """``applyInArrow`` on the spine grouped by (home partition, slice): the features of
    one group's rows, by the local engine's pass-2 job (cut to the slice's records)."""

    topology: TopologyDef
    fields: tuple[str, ...]
    files: Mapping[int, tuple[SnapshotFile, ...]]
    checkpoints: Mapping[int, Sequence[Checkpoint]]
    as_served: bool
    batch_rows: int
    slice_ms: int | None
    reach_ms: int
    spine_names: tuple[str, ...]
    schema: pa.Schema
    pending: tuple[str, ...] = field(default=())

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        if n == 0:
            return self.schema.empty_table()
        topo = self.topology
        home = int(table.column(HOME)[0].as_py())
        ents = [str(e) for e in table.column(ENTITY).to_pylist()]
        times = [int(t) for t in table.column(TIME).to_pylist()] if home >= 0 else []
        if home == NO_ENTITY:
            cols: list[list[Any]] = [[None] * n for _ in self.fields]
        elif home == UNKNOWN:
            cols = [[topo.defaults.get(f)] * n for f in self.fields]
        else:
            cols = self._rows(home, int(table.column(SLICE)[0].as_py()), ents, times,
                              table.column(FIRST).to_pylist())
        arrays, kinds = feature_arrays(topo, self.fields, dict(zip(self.fields, cols,
                                                                    strict=True)))
        out = [table.column(name).cast(self.schema.field(name).type)
               for name in self.spine_names]
        out += [arrays[name] for name in self.fields]
        out.append(pa.nulls(n, pa.binary()))
        result = pa.Table.from_arrays(out, schema=self.schema)
        if self.pending:
            meta = pa.Table.from_batches([meta_batch(self.schema, kinds)])
            result = pa.concat_tables([result, meta])
        return result

    def _rows(self, home: int, slice_no: int, ents: list[str], times: list[int],
              first: list[int | None]) -> list[list[Any]]:
        topo = self.topology
        files = self.files.get(home, ())
        job = _RowsJob(topo, home, files, self.fields, tuple(times), tuple(ents),
                       self.batch_rows)
        if self.slice_ms is not None:
            lo = slice_no * self.slice_ms
            start, end, st = read_range(self.checkpoints[home], lo, lo + self.slice_ms,
                                        self.reach_ms, int(topo.lateness_ms))
            job = _RowsJob(topo, home, files, self.fields, tuple(times), tuple(ents),
                           self.batch_rows, start_offset=start, end_offset=end,
                           stream_time=st, first_ts=tuple(first))
        return _as_served_rows(job) if self.as_served else _event_time_rows(job)


# ----------------------------------------------------------------------------- verify


@dataclass(frozen=True, slots=True)
class VerifyJob:
    topology: TopologyDef
    partition: int
    files: tuple[SnapshotFile, ...]
    by_offset: Mapping[int, list[str]]
    online: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class VerifyTask:
    """``mapInArrow`` over job numbers: one partition's part of ``streamfeat verify``."""

    jobs: tuple[VerifyJob, ...]
    schema: pa.Schema

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for i in _ids(batches):
            job = self.jobs[i]
            report = VerifyReport(1.0, 0)
            failed: set[str] = set()
            _verify_partition(job.topology, list(job.files), job.partition, job.by_offset,
                              job.online, report, failed, None)
            yield meta_batch(self.schema, (report, failed))


