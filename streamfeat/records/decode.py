"""Decode raw records into events, the same way in the worker and in replay.

A record is malformed when it cannot be decoded, is not an object, lacks the entity key or
the event time, has an unparseable time, or carries a field of the wrong type for an
aggregation that reads it. Malformed records are reported with a reason (they go to the
dead-letter topic); they never raise.

Only the fields the topology reads (the key, the event time, aggregated fields and the
fields of ``where`` expressions) are decoded into an event; the rest of a record is parsed
for its syntax and skipped. Whether a record is malformed depends on its own bytes alone,
never on the other records of its batch, so the worker and a replay (which batch the same
records differently) decide alike.

The hot path decodes a whole batch into small structs (msgspec, twice as fast as building
dicts) and checks the columns at once; a batch where any check fails is checked again
record by record, which finds the culprits and their reasons.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import msgspec

from streamfeat.topology.definitions import TopologyDef
from streamfeat.topology.expressions import fields_of

__all__ = ["DecodedBatch", "Decoder"]

_NUMBER_TYPES = frozenset({int, float, type(None)})


@dataclass(slots=True)
class DecodedBatch:
    """Good events in input order, plus the input positions and reasons of malformed ones.

    ``records`` are read-only mappings of the fields the topology reads (``.get(name)``);
    ``fields`` holds the aggregated fields as columns, one value per good event.
    """

    keys: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # input position of each good event
    errors: list[tuple[int, str]] = field(default_factory=list)  # (input position, reason)
    fields: dict[str, list[Any]] = field(default_factory=dict)


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
        numeric: set[str] = set()
        aggregated: set[str] = set()
        reads: set[str] = {source.key}
        if source.timestamp is not None:
            reads.add(source.timestamp)
        for feature in topology.features:
            if feature.field is not None:
                aggregated.add(feature.field)
                if feature.agg.numeric:
                    numeric.add(feature.field)
            if feature.where is not None:
                reads |= fields_of(feature.where)
        reads |= aggregated
        self._numeric = tuple(sorted(numeric))
        self._aggregated = tuple(sorted(aggregated))
        attrs = {name: f"f{i}" for i, name in enumerate(sorted(reads))}
        self.event_type = _event_type(attrs)
        binary = msgspec.msgpack if source.format == "msgpack" else msgspec.json
        self._decode_event = binary.Decoder(self.event_type).decode
        self._decode_any = binary.Decoder().decode
        self._getters: dict[str, Callable[[Any], Any]] = {
            name: attrgetter(a) for name, a in attrs.items()
        }

    # ------------------------------------------------------------------ the hot path
    def decode(self, values: Sequence[bytes | None], kafka_ts: Sequence[int]) -> DecodedBatch:
        try:
            events = list(map(self._decode_event, values))
        except (msgspec.DecodeError, TypeError, UnicodeDecodeError):
            return self._decode_each(values, kafka_ts)  # one bad record: find it
        n = len(events)
        get = self._getters
        keys = list(map(get[self._key], events))
        key_types = set(map(type, keys))
        if not key_types <= {str, int} or "" in keys:
            return self._decode_each(values, kafka_ts)
        if int in key_types:
            keys = [k if type(k) is str else str(k) for k in keys]
        ts = self._times(events, kafka_ts)
        if ts is None:
            return self._decode_each(values, kafka_ts)
        columns: dict[str, list[Any]] = {}
        for name in self._numeric:
            col = columns[name] = list(map(get[name], events))
            types = set(map(type, col))
            if not types <= _NUMBER_TYPES:
                return self._decode_each(values, kafka_ts)
            if float in types and not all(map(math.isfinite, filter(_is_float, col))):
                return self._decode_each(values, kafka_ts)
        for name in self._aggregated:
            if name not in columns:
                columns[name] = list(map(get[name], events))
        return DecodedBatch(keys, ts, events, list(range(n)), [], columns)

    def _times(self, events: list[Any], kafka_ts: Sequence[int]) -> list[int] | None:
        """Event times of a batch, or ``None`` when any is missing or bad."""
        if self._ts_field is None:
            return list(kafka_ts)
        raw = list(map(self._getters[self._ts_field], events))
        if self._unit == "ms" and set(map(type, raw)) == {int} and min(raw) >= 0:
            return raw
        times = list(map(self._event_time, raw))
        if any(error is not None for _, error in times):
            return None
        return [t for t, _ in times]  # type: ignore[misc]

    # ------------------------------------------------------------------ record by record
    def _decode_each(
        self, values: Sequence[bytes | None], kafka_ts: Sequence[int]
    ) -> DecodedBatch:
        out = DecodedBatch()
        for pos, raw in enumerate(values):
            if raw is None:
                out.errors.append((pos, "record has no value (tombstone)"))
                continue
            event: Any
            try:
                event = self._decode_event(raw)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
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
            out.records.append(event)
            out.positions.append(pos)
        out.fields = {
            name: [r.get(name) for r in out.records] for name in self._aggregated
        }
        return out

    def _undecodable(self, raw: bytes, exc: Exception) -> tuple[Mapping[str, Any] | None, str]:
        """Why a record does not decode as an event; or, rarely, the record as a dict.

        (A msgpack map with a key that is not a string decodes as a dict only.)
        """
        try:
            record = self._decode_any(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc2:
            return None, f"undecodable: {exc2}"
        if type(record) is not dict:
            return None, f"expected an object, got {type(record).__name__}"
        if all(type(k) is str for k in record):  # pragma: no cover - msgspec agrees with itself
            return None, f"undecodable: {exc}"
        return record, ""

    def _check(self, record: Any, kafka_ts: int) -> tuple[str, int] | str:
        """``(key, event time)`` of a decoded record, or why it is malformed."""
        key_field = self._key
        key = record.get(key_field)
        tkey = type(key)
        if tkey is str:
            if not key:
                return f"key field {key_field!r} is empty"
        elif tkey is int:
            key = str(key)
        else:
            reason = "missing" if key is None else f"a {tkey.__name__}, expected str or int"
            return f"key field {key_field!r} is {reason}"
        ts: int | None = kafka_ts
        if self._ts_field is not None:
            ts, error = self._event_time(record.get(self._ts_field))
            if ts is None:
                return f"timestamp field {self._ts_field!r} {error}"
        for name in self._numeric:
            v = record.get(name)
            tv = type(v)
            if v is not None and tv is not int and tv is not float:
                return f"field {name!r} is a {tv.__name__}, expected a number"
            if tv is float and not math.isfinite(v):
                return f"field {name!r} is {v}, expected a finite number"
        return key, kafka_ts if ts is None else ts

    def _event_time(self, value: Any) -> tuple[int | None, str | None]:
        if value is None:
            return None, "is missing"
        unit = self._unit
        tv = type(value)
        if unit == "iso8601":
            if tv is not str:
                return None, f"is a {tv.__name__}, expected an ISO-8601 string"
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None, f"is not ISO-8601: {value!r}"
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return round(parsed.timestamp() * 1000), None
        if tv is not int and tv is not float:
            return None, f"is a {tv.__name__}, expected a number of {unit}"
        if tv is float and not math.isfinite(value):
            return None, f"is {value}, expected a finite number"
        ms = value * 1000 if unit == "s" else value
        if ms < 0:
            return None, f"is negative ({value})"
        return round(ms), None


def _is_float(v: Any) -> bool:
    return type(v) is float
