"""``streamfeat verify``: online values against a replay of the same records.

For each (sampled) entity in Redis, ``_v`` says which partition and offset its values
reflect. The partition is replayed from the snapshots through the worker's
:class:`~streamfeat.pipeline.PartitionPipeline`, cut exactly after each such
offset, and the entity's values as of the stream time at that offset are compared with
Redis (floats with a relative tolerance of 1e-9, everything else exactly, after the
same text encoding the sink applies). ``_asof`` must equal that stream time too.
Entities whose offset is not (yet) in the snapshots are counted as ``skipped``. Progress
(records replayed per partition) goes to ``streamfeat.replay`` (:mod:`streamfeat.progress`).
"""

from __future__ import annotations

import math
import os
import random
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from streamfeat.client import Client
from streamfeat.errors import ConfigError, SinkError
from streamfeat.pipeline import PartitionPipeline
from streamfeat.pipeline.rekey import consumed_topic
from streamfeat.progress import Tracker, announce, progress_logger
from streamfeat.replay.inputs import TopologyLike, planned_records, resolve_topology
from streamfeat.replay.jobs import LOGGER
from streamfeat.sinks import decode_value, encode_value, parse_version
from streamfeat.sinks.redis import connect
from streamfeat.snapshot.reader import SnapshotFile, iter_files, snapshot_files
from streamfeat.topology import TopologyDef
from streamfeat.topology.definitions import ASOF_FIELD

__all__ = ["Mismatch", "VerifyReport", "online_targets", "values_equal", "verify"]

_REL = 1e-9


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One field of one entity that differs: what Redis holds and what the replay gives."""

    entity_id: str
    field: str
    online: Any
    replayed: Any
    version: str


@dataclass(slots=True)
class VerifyReport:
    """``match_rate``: entities whose every field matched / entities checked."""

    match_rate: float
    checked: int
    mismatches: list[Mismatch] = field(default_factory=list)
    skipped: int = 0


def values_equal(online: Any, replayed: Any, rel: float = _REL) -> bool:
    """Equal as stored: ``replayed`` goes through the sink's encoding first."""
    text = encode_value(replayed)
    want = None if text is None else decode_value(text)
    return _close(online, want, rel)


def _close(a: Any, b: Any, rel: float) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b, strict=True))
    if (isinstance(a, int | float) and isinstance(b, int | float)
            and not isinstance(a, bool) and not isinstance(b, bool)):
        return math.isclose(a, b, rel_tol=rel, abs_tol=0.0) or a == b
    return bool(a == b)


def _scan_entities(redis_url: str, topology: TopologyDef) -> list[str]:
    prefix = topology.redis_key("")
    client = connect(redis_url)
    try:
        keys = [k.decode() if isinstance(k, bytes) else str(k)
                for k in client.scan_iter(match=_escape_glob(prefix) + "*", count=1000)]
    except RedisError as exc:
        raise SinkError(f"scanning {prefix}* in Redis failed: {exc}; check --redis") from exc
    finally:
        client.close()
    return sorted(k[len(prefix):] for k in keys)


def _escape_glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def verify(
    topology: TopologyLike,
    snapshot_dir: str | os.PathLike[str],
    redis_url: str,
    *,
    sample: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> VerifyReport:
    """Compare online values of (a sample of) the topology's entities with a replay.
    ``progress``: log the replay's progress on ``streamfeat.replay``."""
    topo = resolve_topology(topology)
    online, targets = online_targets(topo, redis_url, sample=sample, seed=seed)
    report = VerifyReport(1.0, 0)
    failed: set[str] = set()
    files = {p: snapshot_files(os.fspath(snapshot_dir), consumed_topic(topo), p)
             for p in sorted(targets)}
    logger = progress_logger(LOGGER)
    if progress:
        announce(logger, f"verify {topo.name}", sum(map(planned_records, files.values())))
    for p, by_offset in sorted(targets.items()):
        tracker = Tracker(logger, f"verify {topo.name}", str(p),
                          planned_records(files[p])) if progress else None
        _verify_partition(topo, files[p], p, by_offset, online, report, failed, tracker)
    report.match_rate = (report.checked - len(failed)) / report.checked if report.checked else 0.0
    return report


def online_targets(
    topology: TopologyDef, redis_url: str, *, sample: int | None, seed: int
) -> tuple[dict[str, Any], dict[int, dict[int, list[str]]]]:
    """What Redis holds for (a sample of) the entities, and which to check where:
    partition -> offset -> the entities whose values reflect the records up to it."""
    if sample is not None and sample < 1:
        raise ConfigError(f"--sample must be at least 1, got {sample}")
    entities = _scan_entities(redis_url, topology)
    if sample is not None and sample < len(entities):
        entities = sorted(random.Random(seed).sample(entities, sample))  # noqa: S311 - sampling
    with Client(redis_url) as client:
        online = client.get_with_meta(topology, entities)
    targets: dict[int, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for e, got in online.items():
        if got.found and got.version is not None:
            _g, p, off = parse_version(got.version)
            targets[p][off].append(e)
    return online, targets


def _verify_partition(
    topology: TopologyDef,
    files: list[SnapshotFile],
    partition: int,
    by_offset: Mapping[int, list[str]],
    online: Mapping[str, Any],
    report: VerifyReport,
    failed: set[str],
    tracker: Tracker | None,
) -> None:
    offsets = sorted(by_offset)
    proc = PartitionPipeline(topology, partition)
    k = 0  # next target offset
    last: int | None = None

    def check(offset: int) -> None:
        st = proc.stream_time
        ents = by_offset[offset]
        values = proc.operator.values(ents, as_of=st) if st is not None else {}
        for e in ents:
            report.checked += 1
            got = online[e]
            want = values.get(e, {})
            if got.asof_ms != st:
                failed.add(e)
                report.mismatches.append(Mismatch(e, ASOF_FIELD, got.asof_ms, st, got.version))
            for name, value in got.values.items():
                if not values_equal(value, want.get(name)):
                    failed.add(e)
                    report.mismatches.append(
                        Mismatch(e, name, value, want.get(name), got.version))

    for batch in iter_files(files, batch_rows=50_000):
        if tracker is not None:
            tracker.advance(len(batch))
        start = 0
        while k < len(offsets):
            target = offsets[k]
            # records up to and including the target offset
            end = bisect_right(batch.offsets, target, lo=start)
            if end == len(batch):
                break
            if end > start:
                proc.process(batch[start:end])
                last = batch.offsets[end - 1]
            start = end
            if last == target:
                check(target)
            else:  # the target offset is missing from the snapshots
                report.skipped += len(by_offset[target])
            k += 1
        if start < len(batch):
            proc.process(batch[start:])
            last = batch[-1].offset
    while k < len(offsets):
        if last == offsets[k]:
            check(offsets[k])
        else:
            report.skipped += len(by_offset[offsets[k]])
        k += 1
    if tracker is not None:
        tracker.finish()
