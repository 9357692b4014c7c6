"""Baselines: the reference distribution of each feature-window, from a training set or
from the snapshots of a time range.

- :func:`baseline_from_training_set`: the columns of a training-set Parquet file named as
  the topology's Redis fields (what ``streamfeat training-set`` writes): the values the
  model was trained on. Rows of entities without history hold the topology's
  ``defaults``, which the worker never writes (an unseen entity has no hash): a baseline
  from a training set compares the written values with the model's inputs, such rows
  included.
- :func:`baseline_from_snapshots`: the values the worker writes for the records of the
  snapshots, replayed through the worker's own :class:`~streamfeat.pipeline.PartitionPipeline`
  in small batches (:data:`REPLAY_BATCH` records, as a worker keeping up with the stream
  takes them), keeping those as of event times in ``[start, end)``. Each partition is
  replayed from its first snapshot (windows before ``start`` must be filled) and left as
  soon as its stream time reaches ``end``. Like the monitor, this counts every write: the
  values after an event *and* the rewrites when windows slide (a sum falling back to 0, a
  mean becoming absent), so that a stable stream compares equal to its own baseline.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamfeat.errors import ConfigError
from streamfeat.monitoring.sketch import ValueKind, ValueSketch, field_kinds
from streamfeat.monitoring.store import Baseline
from streamfeat.pipeline import PartitionPipeline
from streamfeat.pipeline.rekey import consumed_topic
from streamfeat.snapshot.reader import iter_partition, partitions
from streamfeat.topology import TopologyDef

__all__ = [
    "REPLAY_BATCH",
    "baseline_from_snapshots",
    "baseline_from_training_set",
    "parse_instant",
]

log = logging.getLogger("streamfeat.monitoring")

REPLAY_BATCH = 100
"""Records per replayed batch: near the small batches of a worker that keeps up."""


def parse_instant(text: str, flag: str = "--start") -> int:
    """Epoch milliseconds of ``text``: an ISO 8601 date or date-time (UTC unless it names an
    offset: ``2026-12-01``, ``2026-12-01T10:30:00Z``) or a number of epoch milliseconds."""
    value = text.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a time: write 2026-12-01, "
                          "2026-12-01T10:30:00Z or epoch milliseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _now_ms() -> int:
    return int(time.time() * 1000)


def baseline_from_training_set(topology: TopologyDef, path: str | os.PathLike[str],
                               fields: Sequence[str] | None = None) -> Baseline:
    """The distribution of each column of ``path`` named as a Redis field of ``topology``
    (``fields``: only those). Raises :class:`ConfigError` when the file has none."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"training set {str(p)!r} does not exist; pass --training-set the "
                          "Parquet file streamfeat training-set wrote")
    try:
        schema = pq.read_schema(p)
    except (OSError, pa.ArrowException) as e:
        raise ConfigError(f"training set {str(p)!r} is not a Parquet file: {e}") from None
    kinds = field_kinds(topology)
    wanted = [f for f in (fields or kinds) if f in kinds]
    unknown = [f for f in (fields or []) if f not in kinds]
    if unknown:
        raise ConfigError(f"topology {topology.name!r} has no field {unknown[0]!r}; fields "
                          f"look like {next(iter(kinds), 'orders__1h')!r}")
    present = [f for f in wanted if f in schema.names]
    if not present:
        raise ConfigError(
            f"training set {str(p)!r} has no column named as a field of topology "
            f"{topology.name!r} (columns: {', '.join(schema.names)}; fields: "
            f"{', '.join(kinds)})")
    missing = [f for f in wanted if f not in present]
    if missing:
        log.warning("the training set has no column for %s: no baseline for them",
                    ", ".join(missing))
    table = pq.read_table(p, columns=present)
    sketches: dict[str, ValueSketch] = {}
    for name in present:
        column = table.column(name)
        sketch = sketches[name] = ValueSketch()
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
            sketch.add_array(np.asarray(values, dtype=np.float64))  # nulls are NaN
        else:  # text (JSON of lists, strings): counted, not sketched
            sketch.add(column.to_pylist(), ValueKind.OTHER)
    return Baseline(topology.name, _now_ms(), f"training set {p.name} ({table.num_rows} rows)",
                    {name: s.state() for name, s in sketches.items()})


def baseline_from_snapshots(topology: TopologyDef, snapshot_dir: str | os.PathLike[str],
                            start_ms: int, end_ms: int, *,
                            only: Sequence[int] | None = None,
                            batch_rows: int = REPLAY_BATCH) -> Baseline:
    """The values the worker writes as of event times in ``[start_ms, end_ms)``, from a
    replay of the snapshots (``only``: these partitions). Raises :class:`ConfigError` when
    there are no snapshots or no value in the range."""
    if end_ms <= start_ms:
        raise ConfigError(f"--end ({end_ms}) must be after --start ({start_ms})")
    snap = os.fspath(snapshot_dir)
    topic = consumed_topic(topology)
    found = partitions(snap, topic)
    if not found:
        raise ConfigError(f"no snapshots of topic {topic!r} under {snap}; run the worker with "
                          "--snapshot-dir (or pass the right --snapshot-dir)")
    chosen = [p for p in found if only is None or p in only]
    kinds = field_kinds(topology)
    sketches = {name: ValueSketch() for name in kinds}
    records = 0
    for partition in chosen:
        pipeline = PartitionPipeline(topology, partition)
        for batch in iter_partition(snap, topic, partition, batch_rows=batch_rows):
            records += len(batch)
            for update in pipeline.process(batch).updates:
                if start_ms <= update.asof_ms < end_ms:
                    for name, column in zip(update.names, update.columns, strict=True):
                        sketches[name].add(column, kinds[name])
            if pipeline.stream_time is not None and pipeline.stream_time >= end_ms:
                break  # every later write is as of end or later
    written = sum(s.count for s in sketches.values())
    if not written:
        raise ConfigError(
            f"the snapshots of {topic!r} ({records} records read) hold no value as of "
            f"{_iso(start_ms)} .. {_iso(end_ms)}; check --start and --end (event time, UTC)")
    log.info("baseline of %s: %d records replayed, %d values as of %s .. %s", topology.name,
             records, written, _iso(start_ms), _iso(end_ms))
    return Baseline(topology.name, _now_ms(),
                    f"snapshots {snap}, values as of {_iso(start_ms)} .. {_iso(end_ms)}",
                    {name: s.state() for name, s in sketches.items()})


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
