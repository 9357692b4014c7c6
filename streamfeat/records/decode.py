"""Decode raw records into events, the same way in the worker and in replay.

A record is malformed when it cannot be decoded (nested deeper than the decoder's
recursion limit included), is not an object, lacks the entity key or the event time, has
an unparseable time, or carries a field of the wrong type for an aggregation that reads
it. Malformed records are reported with a reason (they go to the dead-letter topic); they
never raise, whatever their bytes.

Aggregated fields hold what the window state (msgpack) and Redis (JSON text) can keep:
numbers are finite and integers fit in 64 bits (-2**63 .. 2**64-1) everywhere; a
numeric aggregation's field is a number or null; a ``count_distinct`` or ``top_k`` field
(values are counted, so hashed) is a string, number, boolean or null; a ``first``,
``last`` or ``last_k`` field is any JSON value nested at most ``MAX_NESTING`` (32) deep.
Anything else (a msgpack ``bin``, extension or timestamp, a list to count) is a field of
the wrong type: the record is malformed. Fields a ``where`` reads are not checked (a
``where`` is false on values it cannot compare).

Event times (contract section 3). An event time is malformed when it is negative, not a
finite number, after ``MAX_EVENT_TIME_MS`` (9999-12-31T23:59:59.999Z), or later than its
record's Kafka timestamp by more than the topology's ``max_future`` (default ``1h``; the
reason starts with ``future:``). Without ``source.timestamp`` the Kafka timestamp is the
event time and must lie in the same range. So one record with a bad clock never moves
stream time (which would make every later event late), and every accepted event time is
in ``0 .. 2**48``: window arithmetic on it cannot overflow int64 nor reach the operators'
"never" sentinel (int64's maximum). A record whose Kafka timestamp is negative (Kafka's
"none", message formats before 0.10) cannot be checked against ``max_future``: with an
event-time field it is malformed (``future: ...``) too.

Every reason says what is wrong and what to do: ``<what is wrong>; <what to do>``.

Only the fields the topology reads (the key, the event time, aggregated fields and the
fields of ``where`` expressions) are decoded into an event; the rest of a record is parsed
for its syntax and skipped. Whether a record is malformed depends on its own bytes alone,
never on the other records of its batch, so the worker and a replay (which batch the same
records differently) decide alike.

The hot path decodes a whole batch into small structs (msgspec, twice as fast as building
dicts) and checks the columns at once; a batch where any check fails is checked again
record by record, which finds the culprits and their reasons.

Avro and Protobuf (contract section 12; :mod:`.avro`, :mod:`.protobuf`) decode a batch
into columns of the fields the topology reads, with each undecodable record's reason
(truncated, garbled, a Confluent frame with a wrong magic byte or an unlisted schema
id); the same checks then run on the columns, and the events (structs of the same kind
as above) are built only when something reads them. The rules above hold for every format:
Avro's and Protobuf's values are the same Python values (an Avro or Protobuf ``bytes``
field is a bytes value, like msgpack's ``bin``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Protocol, overload

import msgspec
import numpy as np
import numpy.typing as npt

from streamfeat.topology.definitions import (
    DAY,
    HOUR,
    MAX_EVENT_TIME_MS,
    MINUTE,
    SECOND,
    AggKind,
    TopologyDef,
    format_duration,
)
from streamfeat.topology.expressions import fields_of

__all__ = ["MAX_NESTING", "DecodedBatch", "Decoder"]

_NUMBER_TYPES = frozenset({int, float, type(None)})
_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
_JSON_TYPES = _SCALAR_TYPES | {list, dict}
_CONTAINERS = (list, dict)
_INT_MIN, _INT_END = -(2**63), 2**64
MAX_NESTING = 32
"""How deep lists and objects may nest in an aggregated field (deeper ones are malformed,
so that storing, hashing or serving a value never meets a recursion limit)."""
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_HASHED_AGGS = frozenset({AggKind.COUNT_DISTINCT, AggKind.TOP_K})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = "9999-12-31T23:59:59.999Z"
_NO_KAFKA_TS = "none: a message format before Kafka 0.10"
_TOMBSTONE = ("record has no value (tombstone); produce events with a value, or keep "
              "deletions out of this topic")


@dataclass(slots=True)
class DecodedBatch:
    """Good events in input order, plus the input positions and reasons of malformed ones.

    ``records`` are read-only mappings of the fields the topology reads (``.get(name)``);
    ``fields`` holds the aggregated fields as columns, one value per good event.
    """

    keys: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    records: Sequence[Any] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # input position of each good event
    errors: list[tuple[int, str]] = field(default_factory=list)  # (input position, reason)
    fields: dict[str, list[Any]] = field(default_factory=dict)


class _Columns(Protocol):
    """A binary format's batch decoder (:mod:`.avro`, :mod:`.protobuf`)."""

    def decode(self, values: Sequence[bytes]) -> tuple[
            dict[str, list[Any]], list[int], list[tuple[int, str]]]: ...


class _Rows(Sequence[Any]):
    """Events built from columns when read (one struct per event, as the JSON path's)."""

    __slots__ = ("columns", "make")

    def __init__(self, make: type[Any], columns: list[list[Any]]) -> None:
        self.make = make
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return list(map(self.make, *(c[index] for c in self.columns)))
        return self.make(*(c[index] for c in self.columns))

    def __iter__(self) -> Iterator[Any]:
        return map(self.make, *self.columns)


def _columns_codec(topology: TopologyDef, reads: Sequence[str]) -> _Columns | None:
    source = topology.source
    if source.schema is None:
        return None
    if source.format == "avro":
        from streamfeat.records.avro import AvroColumns

        return AvroColumns(source.schema, reads)
    if source.format == "protobuf":
        from streamfeat.records.protobuf import ProtobufColumns

        return ProtobufColumns(source.schema, reads)
    raise ValueError(f"source.format {source.format!r} takes no schema")  # pragma: no cover


def _event_type(attrs: Mapping[str, str]) -> type[Any]:
    """A msgspec struct holding the fields named in ``attrs`` (any JSON/msgpack value,
    ``None`` when absent), each under its attribute name ``attrs[name]``.

    Attributes are ``f0, f1, ...`` renamed to the field names, so any field name works
    (``user-id``, ``get``, ``__class__``); ``get(name)`` reads a field like ``dict.get``.
    """
    attr_of = attrs.get

    def get(self: Any, name: str, default: Any = None) -> Any:
        attr = attr_of(name)
        return default if attr is None else getattr(self, attr)

    def to_dict(self: Any) -> dict[str, Any]:
        return {name: getattr(self, attr) for name, attr in attrs.items()}

    return msgspec.defstruct(
        "Event",
        [(attr, Any, None) for attr in attrs.values()],
        rename={attr: name for name, attr in attrs.items()},
        namespace={"get": get, "to_dict": to_dict, "__module__": __name__},
        gc=False,  # decoded values cannot form reference cycles
    )


class Decoder:
    """Turns raw record values into events for one topology."""

    def __init__(self, topology: TopologyDef) -> None:
        source = topology.source
        self._key = source.key
        self._ts_field = source.timestamp
        self._unit = source.timestamp_unit
        self._max_future = int(topology.max_future_ms)
        self._format = source.format
        numeric: set[str] = set()
        hashed: set[str] = set()
        aggregated: set[str] = set()
        reads: set[str] = {source.key}
        if source.timestamp is not None:
            reads.add(source.timestamp)
        for feature in topology.features:
            if feature.field is not None:
                aggregated.add(feature.field)
                if feature.agg.numeric:
                    numeric.add(feature.field)
                elif feature.agg in _HASHED_AGGS:
                    hashed.add(feature.field)
            if feature.where is not None:
                reads |= fields_of(feature.where)
        reads |= aggregated
        self._numeric = tuple(sorted(numeric))
        self._aggregated = tuple(sorted(aggregated))
        # The other aggregated fields, and whether their values are counted (hashed).
        self._stored = tuple((name, name in hashed) for name in sorted(aggregated - numeric))
        attrs = {name: f"f{i}" for i, name in enumerate(sorted(reads))}
        self.event_type = _event_type(attrs)
        binary = msgspec.msgpack if source.format == "msgpack" else msgspec.json
        self._decode_event = binary.Decoder(self.event_type).decode
        self._decode_any = binary.Decoder().decode
        self._getters: dict[str, Callable[[Any], Any]] = {
            name: attrgetter(a) for name, a in attrs.items()
        }
        self._reads = tuple(attrs)  # the struct's fields in order
        self._codec = _columns_codec(topology, self._reads)

    # ------------------------------------------------------------------ the hot path
    def decode(self, values: Sequence[bytes | None], kafka_ts: Sequence[int]) -> DecodedBatch:
        if self._codec is not None:
            return self._decode_columns(self._codec, values, kafka_ts)
        try:
            events = list(map(self._decode_event, values))
        except (*_DECODE_ERRORS, TypeError):
            return self._decode_each(values, kafka_ts)  # one bad record: find it
        get = self._getters
        checked = self._checked(lambda name: list(map(get[name], events)), events, kafka_ts)
        return self._decode_each(values, kafka_ts) if checked is None else checked

    def _checked(self, column: Callable[[str], list[Any]], events: Sequence[Any],
                 kafka_ts: Sequence[int]) -> DecodedBatch | None:
        """The batch of decoded ``events`` when every one is good, checked a column at a
        time (``column(name)``: the field's values); ``None`` when any is not."""
        keys = column(self._key)
        key_types = set(map(type, keys))
        if not key_types <= {str, int} or "" in keys:
            return None
        if int in key_types:
            keys = [k if type(k) is str else str(k) for k in keys]
        ts = self._times(column, kafka_ts)
        if ts is None:
            return None
        columns: dict[str, list[Any]] = {}
        for name in self._numeric:
            col = columns[name] = column(name)
            types = set(map(type, col))
            if not types <= _NUMBER_TYPES:
                return None
            if float in types and not _all_finite(col):
                return None
            if int in types and not _fits_64_bits(col):
                return None
        for name, hashed in self._stored:
            col = columns[name] = column(name)
            if not _storable(col, hashed):
                return None
        return DecodedBatch(keys, ts, events, list(range(len(keys))), [], columns)

    def _decode_columns(self, codec: _Columns, values: Sequence[bytes | None],
                        kafka_ts: Sequence[int]) -> DecodedBatch:
        """A binary format's batch: decoded into columns, checked at once, or record by
        record when any check fails (never decoded twice)."""
        errors: list[tuple[int, str]] = []
        present: list[int] | None = None
        if None in values:
            present = [pos for pos, v in enumerate(values) if v is not None]
            errors = [(pos, _TOMBSTONE) for pos, v in enumerate(values) if v is None]
            values = [values[pos] for pos in present]
        columns, good, bad = codec.decode(values)  # type: ignore[arg-type]  # no None left
        if present is not None:
            good = [present[k] for k in good]
            bad = [(present[k], reason) for k, reason in bad]
        if bad:
            errors = sorted(errors + bad) if errors else bad
        events = _Rows(self.event_type, [columns[name] for name in self._reads])
        kts = kafka_ts if len(good) == len(kafka_ts) else [kafka_ts[pos] for pos in good]
        out = self._checked(columns.__getitem__, events, kts)
        if out is not None:
            out.positions = good
            out.errors = errors
            return out
        out = DecodedBatch()
        out.errors = errors
        for k, event in enumerate(events):
            checked = self._check(event, kts[k])
            if isinstance(checked, str):
                out.errors.append((good[k], checked))
                continue
            out.keys.append(checked[0])
            out.ts.append(checked[1])
            out.records.append(event)  # type: ignore[attr-defined]  # a list here
            out.positions.append(good[k])
        out.errors.sort()
        out.fields = {name: [r.get(name) for r in out.records] for name in self._aggregated}
        return out

    def _times(self, column: Callable[[str], list[Any]],
               kafka_ts: Sequence[int]) -> list[int] | None:
        """Event times of a batch, or ``None`` when any is missing or bad.

        Integer milliseconds (the common case) and Kafka timestamps are checked as numpy
        columns: a few vector operations instead of a comparison per record and check.
        """
        if self._ts_field is None:
            kafka = _int64(kafka_ts)
            if kafka is None or (kafka.size and (
                    kafka.min() < 0 or kafka.max() > MAX_EVENT_TIME_MS)):
                return None
            return list(kafka_ts)
        raw = column(self._ts_field)
        if self._unit == "ms" and set(map(type, raw)) == {int}:  # no bool: type() is exact
            ts, kafka = _int64(raw), _int64(kafka_ts)
            if (ts is not None and kafka is not None and ts.min() >= 0
                    and ts.max() <= MAX_EVENT_TIME_MS and kafka.min() >= 0
                    and (ts - kafka).max() <= self._max_future):  # no overflow: both >= 0
                return raw
            return None
        times = list(map(self._event_time, raw, kafka_ts))
        if str in set(map(type, times)):
            return None
        return times  # type: ignore[return-value]  # no str in it: all int

    # ------------------------------------------------------------------ record by record
    def _decode_each(
        self, values: Sequence[bytes | None], kafka_ts: Sequence[int]
    ) -> DecodedBatch:
        out = DecodedBatch()
        for pos, raw in enumerate(values):
            if raw is None:
                out.errors.append((pos, _TOMBSTONE))
                continue
            event: Any
            try:
                event = self._decode_event(raw)
            except _DECODE_ERRORS as exc:
                event, reason = self._undecodable(raw, exc)
                if event is None:
                    out.errors.append((pos, reason))
                    continue
            checked = self._check(event, kafka_ts[pos])
            if isinstance(checked, str):
                out.errors.append((pos, checked))
                continue
            out.keys.append(checked[0])
            out.ts.append(checked[1])
            out.records.append(event)  # type: ignore[attr-defined]  # a list here
            out.positions.append(pos)
        out.fields = {
            name: [r.get(name) for r in out.records] for name in self._aggregated
        }
        return out

    def _undecodable(self, raw: bytes, exc: Exception) -> tuple[Mapping[str, Any] | None, str]:
        """Why a record does not decode as an event; or, rarely, the record as a dict.

        (A msgpack map with a key that is not a string decodes as a dict only.)
        """
        fmt = self._format
        try:
            record = self._decode_any(raw)
        except _DECODE_ERRORS as exc2:
            return None, (f"undecodable: {_clip(str(exc2))}; the value is not valid {fmt}: fix the "
                          "producer's serializer, or source.format")
        if type(record) is not dict:
            return None, (f"expected an object, got {type(record).__name__}; each value must "
                          f"be one {fmt} object of event fields: fix the producer")
        if all(type(k) is str for k in record):  # pragma: no cover - msgspec agrees with itself
            return None, (f"undecodable: {_clip(str(exc))}; fix the producer's serializer, or "
                          "source.format")
        return record, ""

    def _check(self, record: Any, kafka_ts: int) -> tuple[str, int] | str:
        """``(key, event time)`` of a decoded record, or why it is malformed."""
        key_field = self._key
        key = record.get(key_field)
        tkey = type(key)
        if tkey is str:
            if not key:
                return (f"key field {key_field!r} is empty; give every event a non-empty "
                        "entity id")
        elif tkey is int:
            key = str(key)
        elif key is None:
            return (f"key field {key_field!r} is missing; every event needs its entity id: "
                    "add it in the producer, or fix source.key")
        else:
            return (f"key field {key_field!r} is a {tkey.__name__}, expected str or int; "
                    "send the entity id as a string or an integer")
        if self._ts_field is not None:
            ts = self._event_time(record.get(self._ts_field), kafka_ts)
            if type(ts) is str:
                return ts
        elif kafka_ts < 0 or kafka_ts > MAX_EVENT_TIME_MS:
            return self._bad_kafka_time(kafka_ts)
        else:
            ts = kafka_ts
        for name in self._numeric:
            v = record.get(name)
            tv = type(v)
            if v is not None and tv is not int and tv is not float:
                return (f"field {name!r} is a {tv.__name__}, expected a number; send a "
                        "number or null (an aggregation of this topology sums or ranks it)")
            problem = _value_problem(v)
            if problem is not None:
                return f"field {name!r} {problem}"
        for name, hashed in self._stored:
            problem = _stored_problem(record.get(name), hashed)
            if problem is not None:
                return f"field {name!r} {problem}"
        return key, ts  # type: ignore[return-value]  # ts is an int here

    def _event_time(self, value: Any, kafka_ts: int) -> int | str:
        """The event time (ms) of a timestamp field's value, or why it is malformed."""
        name = self._ts_field
        if value is None:
            return (f"timestamp field {name!r} is missing; every event needs its event time: "
                    "add it in the producer, or omit source.timestamp to use the Kafka "
                    "timestamp")
        unit = self._unit
        tv = type(value)
        if unit == "iso8601":
            if tv is not str:
                return (f"timestamp field {name!r} is a {tv.__name__}, expected an ISO-8601 "
                        "string; send e.g. 2026-01-01T00:00:00Z, or set "
                        "source.timestamp_unit to ms or s")
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return (f"timestamp field {name!r} is not ISO-8601: {_show(value)}; send e.g. "
                        "2026-01-01T00:00:00Z")
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            ms: float | int = parsed.timestamp() * 1000
        elif tv is not int and tv is not float:
            return (f"timestamp field {name!r} is a {tv.__name__}, expected a number of "
                    f"{unit}; send one, or set source.timestamp_unit (ms | s | iso8601)")
        elif tv is float and not math.isfinite(value):
            return (f"timestamp field {name!r} is {value}, expected a finite number of "
                    f"{unit}; fix the producer")
        else:
            ms = value * 1000 if unit == "s" else value
        if ms < 0:
            return (f"timestamp field {name!r} is negative ({_show(value)}); event times are "
                    f"{unit} since 1970-01-01 UTC: fix the producer's clock or "
                    "source.timestamp_unit")
        future = self._max_future
        if ms <= MAX_EVENT_TIME_MS:
            ts = round(ms)
            if ts - kafka_ts <= future and kafka_ts >= 0:
                return ts
            return self._future(value, ts, kafka_ts)
        if ms - kafka_ts > future or kafka_ts < 0:
            return self._future(value, None, kafka_ts)
        return (f"timestamp field {name!r} is {_show(value)}, after {_LATEST}, the latest event "
                f"time streamfeat accepts; check source.timestamp_unit ({unit}) and the "
                "producer")

    def _future(self, value: Any, ts: int | None, kafka_ts: int) -> str:
        """Why an event time is malformed against its record's Kafka timestamp: ``ts`` is
        the event time in ms, ``None`` when it is after ``MAX_EVENT_TIME_MS`` (``value``,
        the field's value, is shown then)."""
        limit = format_duration(self._max_future)
        if kafka_ts < 0:
            shown = _show(value) if ts is None else f"{ts} ({_iso(ts)})"
            return (f"future: event time {shown} cannot be checked against the record's "
                    f"Kafka timestamp {kafka_ts} ({_NO_KAFKA_TS}); produce records with "
                    "timestamps")
        if ts is None:
            return (f"future: event time {_show(value)} ({self._unit}) is after {_LATEST}, far "
                    f"after the record's Kafka timestamp {kafka_ts} (max_future {limit}); "
                    "fix the producer's clock, and check that the field is in "
                    f"source.timestamp_unit ({self._unit}), not in micro- or nanoseconds")
        return (f"future: event time {ts} ({_iso(ts)}) is {_span(ts - kafka_ts)} after the "
                f"record's Kafka timestamp {kafka_ts} (max_future {limit}); fix the "
                "producer's clock or raise max_future")

    def _bad_kafka_time(self, kafka_ts: int) -> str:
        """Why a Kafka timestamp is not an event time (a topology without an event-time
        field)."""
        if kafka_ts < 0:
            what = f"negative ({_NO_KAFKA_TS})"
            fix = "produce records with timestamps"
        else:
            what = f"after {_LATEST}, the latest event time streamfeat accepts"
            fix = "fix the producer's timestamps"
        return (f"Kafka timestamp {kafka_ts} is not an event time: {what}; {fix}, or name an "
                "event-time field in source.timestamp")


def _iso(ms: int) -> str:
    """``ms`` (0 .. MAX_EVENT_TIME_MS) as ISO-8601 UTC text."""
    text = (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _int64(values: Sequence[int]) -> npt.NDArray[np.int64] | None:
    """Integers as an int64 array; ``None`` when one does not fit."""
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        return None


def _clip(text: str, limit: int = 80) -> str:
    """``text``, cut to ``limit`` characters: a reason travels in a Kafka header."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any) -> str:
    """A short ``repr`` of a record's value for a reason (at most 80 characters)."""
    try:
        return _clip(repr(value))
    except (ValueError, RecursionError):  # an int beyond Python's digit limit; deep nesting
        return f"<a {type(value).__name__} too long to show>"


def _span(ms: int) -> str:
    """A positive duration for a reason: days from two days on, else exact milliseconds
    with the largest unit of which it holds two or more (rounded down)."""
    if ms >= 2 * DAY:
        return f"{ms // DAY} days"
    for size, unit in ((HOUR, "hours"), (MINUTE, "minutes"), (SECOND, "s")):
        if ms >= 2 * size:
            return f"{ms} ms ({ms // size} {unit})"
    return f"{ms} ms"


def _value_problem(v: Any) -> str | None:
    """What keeps a scalar from being stored, if anything (an int beyond 64 bits, a float
    that is not finite)."""
    tv = type(v)
    if tv is int and not _INT_MIN <= v < _INT_END:
        return (f"is an integer beyond 64 bits ({_show(v)}); send it as a string, or as a "
                "float")
    if tv is float and not math.isfinite(v):
        return f"is {v}, expected a finite number; send one, or null"
    return None


def _stored_problem(v: Any, hashed: bool) -> str | None:
    """Why a value cannot be aggregated by a non-numeric aggregation, if it cannot."""
    tv = type(v)
    if tv in _SCALAR_TYPES:
        return _value_problem(v)
    if hashed:
        return (f"is a {tv.__name__}, expected a string, number or boolean "
                "(count_distinct and top_k count single values); send one, or null")
    if tv not in _CONTAINERS:
        return (f"is a {tv.__name__}, expected a JSON value (string, number, boolean, null, "
                "list or object); send one")
    problem = _nested_problem(v)
    return None if problem is None else f"{problem}; send plain JSON, at most {MAX_NESTING} deep"


def _nested_problem(value: list[Any] | dict[Any, Any]) -> str | None:
    """What in a list or object cannot be stored: nesting deeper than ``MAX_NESTING``, a
    value that is not JSON, an int beyond 64 bits, a float that is not finite (iterative:
    never meets the recursion limit)."""
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        v, depth = todo.pop()
        tv = type(v)
        if tv is list or tv is dict:
            if depth > MAX_NESTING:
                return f"is nested more than {MAX_NESTING} deep"
            todo.extend((x, depth + 1) for x in (v.values() if tv is dict else v))
            continue
        if tv not in _SCALAR_TYPES:
            return f"holds a {tv.__name__}, which is not a JSON value"
        problem = _value_problem(v)
        if problem is not None:
            return f"holds a value that {problem.split(';')[0]}"
    return None


def _storable(column: list[Any], hashed: bool) -> bool:
    """Whether a column of a non-numeric aggregated field holds only values
    :func:`_stored_problem` accepts (as columns, in C, in the usual cases)."""
    types = set(map(type, column))
    if not types <= (_SCALAR_TYPES if hashed else _JSON_TYPES):
        return False
    if float in types and not all(map(math.isfinite, filter(_is_float, column))):
        return False
    if list in types or dict in types:
        return not any(map(_nested_problem, filter(_is_container, column)))
    return int not in types or _fits_64_bits(column)


def _fits_64_bits(column: list[Any]) -> bool:
    """Whether every int in a column of scalars is in -2**63 .. 2**64-1 (msgpack's ints)."""
    try:
        msgspec.msgpack.encode(column)
    except OverflowError:
        return False
    return True


def _is_float(v: Any) -> bool:
    return type(v) is float


def _is_container(v: Any) -> bool:
    return type(v) is list or type(v) is dict


def _all_finite(column: list[int | float | None]) -> bool:
    """Whether the numbers of a column (ints, floats, ``None``) are all finite: their sum
    (``None`` and zeros left out) is finite. A sum that overflows answers ``False`` for
    finite numbers too; the batch is then checked record by record, with the same outcome.
    Five times faster than testing each float."""
    try:
        return math.isfinite(sum(filter(None, column)))
    except OverflowError:  # an int beyond float's range
        return False
