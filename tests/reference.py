"""A deliberately naive implementation of the contract (sections 2 and 3), for tests.

It keeps every accepted event and, for any instant t, filters them with the window's
definition and aggregates with plain Python. Slow and obviously right: the operators and
the worker are compared with it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamfeat.topology import AggKind, FeatureDef, TopologyDef, WindowDef, WindowKind
from streamfeat.topology.definitions import MAX_EVENT_TIME_MS
from streamfeat.topology.expressions import compile_where


@dataclass
class Event:
    key: str
    ts: int
    seq: int  # arrival order within the partition
    record: Mapping[str, Any]


@dataclass
class Partition:
    stream_time: int | None = None
    accepted: list[Event] = field(default_factory=list)
    late: int = 0
    malformed: int = 0
    dead: list[int] = field(default_factory=list)  # arrival order (seq) of each late or
    # malformed record: each is one dead letter


def naive_decode(
    topology: TopologyDef, value: bytes | None, kafka_ts: int | None = None
) -> tuple[str, int, dict[str, Any]] | None:
    """The contract's malformed-record rules, written out plainly. None = malformed.

    Event times (section 3): negative, not finite, after 9999-12-31 or later than the
    record's Kafka timestamp ``kafka_ts`` by more than ``max_future``: malformed. Without
    ``kafka_ts`` the record is taken as stamped at its own event time (as the generator
    stamps records), so only the range is checked.
    """
    try:
        record = json.loads(value) if value is not None else None
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    key = record.get(topology.source.key)
    if isinstance(key, bool) or not isinstance(key, str | int) or key == "":
        return None
    ts = record.get(topology.source.timestamp or "")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0:
        return None
    for f in topology.features:
        if f.field and f.agg.numeric:
            v = record.get(f.field)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                return None
    ms = ts * 1000 if topology.source.timestamp_unit == "s" else ts
    if ms > MAX_EVENT_TIME_MS:
        return None
    stamped = round(ms) if kafka_ts is None else kafka_ts
    if stamped < 0 or round(ms) - stamped > topology.max_future_ms:
        return None
    return str(key), round(ms), record


def run_partition(topology: TopologyDef, values: Iterable[bytes | None],
                  kafka_ts: Iterable[int] | None = None) -> Partition:
    """Late decisions in offset order, exactly as the contract defines them.

    ``kafka_ts``: the records' Kafka timestamps, for the ``max_future`` rule (see
    :func:`naive_decode`)."""
    p = Partition()
    values = list(values)
    stamps = list(kafka_ts) if kafka_ts is not None else None
    assert stamps is None or len(stamps) == len(values), (len(stamps), len(values))
    for seq, value in enumerate(values):
        decoded = naive_decode(topology, value, stamps[seq] if stamps is not None else None)
        if decoded is None:
            p.malformed += 1
            p.dead.append(seq)
            continue
        key, ts, record = decoded
        if p.stream_time is not None and ts < p.stream_time - topology.lateness_ms:
            p.late += 1
            p.dead.append(seq)
            continue
        p.stream_time = ts if p.stream_time is None else max(p.stream_time, ts)
        p.accepted.append(Event(key, ts, seq, record))
    return p


def in_window(w: WindowDef, ts: int, t: int) -> bool:
    if ts > t:
        return False
    if w.kind is WindowKind.LIFETIME:
        return True
    assert w.size_ms is not None
    if w.kind in (WindowKind.SLIDING, WindowKind.HOPPING):
        if w.exact or w.hop_ms is None:
            return t - w.size_ms < ts
        return math.floor((t - w.size_ms) / w.hop_ms) * w.hop_ms <= ts
    if w.kind is WindowKind.TUMBLING:
        start = (t // w.size_ms) * w.size_ms
        if w.emit_final:
            return start - w.size_ms <= ts < start
        return start <= ts
    raise AssertionError(w.kind)


def session_events(w: WindowDef, events: list[Event], t: int) -> list[Event]:
    assert w.size_ms is not None
    seen = sorted((e for e in events if e.ts <= t), key=lambda e: (e.ts, e.seq))
    if not seen or t - seen[-1].ts >= w.size_ms:
        return []
    out = [seen[-1]]
    for e in reversed(seen[:-1]):
        if out[-1].ts - e.ts < w.size_ms:
            out.append(e)
        else:
            break
    return out


def aggregate(f: FeatureDef, events: list[Event]) -> Any:
    if f.where is not None:
        pred = compile_where(f.where)
        events = [e for e in events if pred(e.record)]
    if f.agg is AggKind.COUNT:
        return len(events)
    assert f.field is not None
    present = [e for e in events if e.record.get(f.field) is not None]
    vals = [e.record[f.field] for e in present]
    if f.agg is AggKind.SUM:
        return math.fsum(vals) if vals else 0
    if not vals:
        return None
    if f.agg is AggKind.MEAN:
        return math.fsum(vals) / len(vals)
    if f.agg is AggKind.MIN:
        return min(vals)
    if f.agg is AggKind.MAX:
        return max(vals)
    if f.agg is AggKind.VAR:
        return statistics.pvariance([float(v) for v in vals])
    if f.agg is AggKind.STDDEV:
        return math.sqrt(statistics.pvariance([float(v) for v in vals]))
    if f.agg is AggKind.COUNT_DISTINCT:
        return len({json.dumps(v) for v in vals})
    if f.agg is AggKind.PERCENTILE:
        ordered = sorted(vals)
        assert f.q is not None
        return ordered[math.floor(f.q * (len(ordered) - 1))]
    by_time = sorted(present, key=lambda e: (e.ts, e.seq))
    if f.agg is AggKind.FIRST:
        return by_time[0].record[f.field]
    if f.agg is AggKind.LAST:
        return by_time[-1].record[f.field]
    if f.agg is AggKind.LAST_K:
        assert f.k is not None
        return [e.record[f.field] for e in reversed(by_time)][: f.k]
    if f.agg is AggKind.TOP_K:
        assert f.k is not None
        counts = Counter(vals)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [[v, c] for v, c in ranked[: f.k]]
    raise AssertionError(f.agg)


def values_as_of(topology: TopologyDef, events: list[Event], t: int) -> dict[str, Any]:
    """Every Redis field of one entity as of t."""
    out: dict[str, Any] = {}
    for f in topology.features:
        for w in f.windows:
            if w.kind is WindowKind.SESSION:
                chosen = session_events(w, events, t)
            else:
                chosen = [e for e in events if in_window(w, e.ts, t)]
            out[f.redis_field(w)] = aggregate(f, chosen)
    return out


@dataclass
class Expected:
    """What the contract says a run over a topic ends with."""

    values: dict[str, dict[str, Any]]  # entity -> every Redis field as of the end
    late: int
    malformed: int
    dead: dict[int, list[int]]  # partition -> arrival order (seq) of each dead letter's record


def expected_run(topology: TopologyDef, partitions: Mapping[int, list[bytes | None]],
                 kafka_ts: Mapping[int, list[int]] | None = None) -> Expected:
    """Values of every entity as of its partition's final stream time, and the dead letters.

    ``kafka_ts``: each partition's Kafka timestamps, for the ``max_future`` rule."""
    out = Expected({}, 0, 0, {})
    for part, values in partitions.items():
        p = run_partition(topology, values, kafka_ts[part] if kafka_ts is not None else None)
        out.late += p.late
        out.malformed += p.malformed
        out.dead[part] = p.dead
        by_entity: dict[str, list[Event]] = defaultdict(list)
        for e in p.accepted:
            by_entity[e.key].append(e)
        for key, events in by_entity.items():
            assert p.stream_time is not None
            out.values[key] = values_as_of(topology, events, p.stream_time)
    return out


def expected_final(topology: TopologyDef, partitions: Mapping[int, list[bytes | None]]) -> tuple[
    dict[str, dict[str, Any]], int, int
]:
    """Values of every entity as of its partition's final stream time; late and malformed counts."""
    run = expected_run(topology, partitions)
    return run.values, run.late, run.malformed


def close(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Equal, with a relative tolerance for floats (also inside lists)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)
    return bool(a == b)
