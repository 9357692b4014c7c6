"""Events for any topology's source, made from its definition: :class:`TopologyEvents`.

What an event holds (:func:`plan_fields`): the key field (the entity id), the event-time
field (in the topology's ``timestamp_unit``) and every field its features aggregate or its
``where`` filters read, nested paths (``payment.method``) as nested objects. A field is a
number when an aggregation needs one (``sum``, ``mean``, ``percentile``...) or a filter
compares it with a number or computes with it; a boolean when a filter uses it as a truth
value; else a string (categories, for ``count_distinct``, ``top_k``, ``last_k``...). Values
a filter compares a field with are drawn often, and a field a filter tests for ``null`` is
left out of some events, so each filter keeps some events and drops others.

Encoded in the source's ``format``: ``json``, ``msgpack``, ``avro`` (a record of the
topology's schema: fields it does not read get their type's zero, a union's null) or
``protobuf`` (a message of its type; unread fields unset); Confluent-framed with the first
of ``schema_ids`` when ``framing: confluent``. A malformed record is one the worker
refuses: not JSON or msgpack, an Avro record with bytes after its end, bytes no protobuf
message parses.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from streamfeat.generator.stream import EventStream
from streamfeat.records.protobuf import message_path
from streamfeat.topology import AggKind, TopologyDef, field_uses
from streamfeat.topology.definitions import SchemaDef

__all__ = ["FieldPlan", "TopologyEvents", "plan_fields"]

Path = tuple[str, ...]

_CARDINALITY = {AggKind.COUNT_DISTINCT: 300, AggKind.TOP_K: 20}
_DEFAULT_CARDINALITY = 50
_LITERAL_SHARE = 0.6  # of a filtered string field's values: one of the filter's literals
_ABSENT_SHARE = 0.2  # of the events: without a field a filter tests for null


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """How the values of one field are drawn: ``kind`` is ``number``, ``integer``,
    ``string`` or ``boolean``; ``choices``, the literals filters compare it with;
    ``cardinality``, the distinct values of a string field beside them; ``optional``,
    left out of some events (a filter tests it for ``null``)."""

    path: Path
    kind: str
    choices: tuple[Any, ...] = ()
    cardinality: int = _DEFAULT_CARDINALITY
    optional: bool = False


def plan_fields(topology: TopologyDef) -> dict[Path, FieldPlan]:
    """The fields of ``topology``'s events other than its key and event-time fields, with
    how to draw each (see the module docstring)."""
    kinds: dict[Path, set[str]] = {}
    literals: dict[Path, list[Any]] = {}
    optional: set[Path] = set()
    cardinality: dict[Path, int] = {}
    numeric_agg: set[Path] = set()
    for f in topology.features:
        if f.field is not None:
            path: Path = (f.field,)
            kinds.setdefault(path, set()).add("number" if f.agg.numeric else "string")
            if f.agg.numeric:
                numeric_agg.add(path)
            card = _CARDINALITY.get(f.agg, _DEFAULT_CARDINALITY)
            cardinality[path] = max(cardinality.get(path, 0), card)
        if f.where is not None:
            for use in field_uses(f.where).values():
                kinds.setdefault(use.path, set()).update(use.kinds)
                if use.null_test:
                    optional.add(use.path)
                seen = literals.setdefault(use.path, [])
                seen.extend(v for v in use.literals if not any(_same(v, s) for s in seen))
    src = topology.source
    skip: set[Path] = {(src.key,)} | ({(src.timestamp,)} if src.timestamp else set())
    plans: dict[Path, FieldPlan] = {}
    for path, found in kinds.items():
        if path in skip:
            continue
        # a path whose longer path is also read is an object: only the leaves are drawn
        if any(len(other) > len(path) and other[:len(path)] == path for other in kinds):
            continue
        values = literals.get(path, [])
        if "number" in found or not found:
            numbers = [v for v in values if _is_number(v)]
            whole = bool(numbers) and all(isinstance(v, int) for v in numbers)
            kind = "integer" if whole and path not in numeric_agg else "number"
            plans[path] = FieldPlan(path, kind, tuple(numbers), optional=path in optional)
        elif "string" in found:
            plans[path] = FieldPlan(path, "string",
                                    tuple(v for v in values if isinstance(v, str)),
                                    cardinality.get(path, _DEFAULT_CARDINALITY),
                                    optional=path in optional)
        else:
            plans[path] = FieldPlan(path, "boolean", optional=path in optional)
    return plans


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


class TopologyEvents(EventStream):
    """Events of ``topology``'s source (see the module docstring). ``late_fraction`` of
    them are later than its ``lateness`` (by an hour more); the disorder of the others stays
    within it. The other arguments are :class:`EventStream`'s."""

    def __init__(self, topology: TopologyDef, *, entities: int = 10_000,
                 start_ms: int | None = None, events_per_second: float = 200.0,
                 late_fraction: float = 0.002, malformed_fraction: float = 0.0,
                 skew: float = 1.1, seed: int = 7) -> None:
        disorder = min(30_000, topology.lateness_ms // 2)
        super().__init__(entities=entities, start_ms=start_ms,
                         events_per_second=events_per_second, disorder_ms=disorder,
                         late_fraction=late_fraction, late_ms=topology.lateness_ms + 3_600_000,
                         malformed_fraction=malformed_fraction, skew=skew, seed=seed)
        self.topology = topology
        self.plans = plan_fields(topology)
        self.codec = _codec(topology)
        src = topology.source
        self._numeric_key = self.codec.numeric(src.key)
        self._prefix = (topology.entity or src.key or "e")[:1].lower()
        self._ts = _time_writer(src.timestamp_unit)

    def entity_id(self, index: int) -> str:
        return str(index) if self._numeric_key else f"{self._prefix}{index}"

    def value(self, entity: str, ts: int) -> bytes:
        rng = self.rng
        src = self.topology.source
        values: dict[Path, Any] = {(src.key,): int(entity) if self._numeric_key else entity}
        if src.timestamp is not None:
            values[(src.timestamp,)] = self._ts(ts)
        for path, plan in self.plans.items():
            if plan.optional and rng.random() < _ABSENT_SHARE:
                continue  # absent: null to a filter
            values[path] = self._draw(plan)
        if rng.random() < self.malformed_fraction:
            return self.codec.malformed(values)
        return self.codec.encode(values)

    def _draw(self, plan: FieldPlan) -> Any:
        rng = self.rng
        if plan.kind == "boolean":
            return rng.random() < 0.5
        if plan.kind == "string":
            if plan.choices and rng.random() < _LITERAL_SHARE:
                return rng.choice(plan.choices)
            return f"{plan.path[-1]}_{rng.randrange(plan.cardinality)}"
        if not plan.choices:
            value = round(rng.lognormvariate(3.0, 1.0), 2)
            return int(value) if plan.kind == "integer" else value
        if rng.random() < 0.25:  # exactly a literal: == and != filters match some
            return rng.choice(plan.choices)
        low, high = min(plan.choices), max(plan.choices)
        spread = max(high - low, abs(high), 1)
        if plan.kind == "integer":
            return rng.randint(int(low - spread), int(high + spread))
        return round(rng.uniform(low - spread, high + spread), 2)


def _time_writer(unit: str) -> Callable[[int], Any]:
    if unit == "s":
        return lambda ms: ms // 1000
    if unit == "iso8601":
        return lambda ms: datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
    return lambda ms: ms


def _nested(values: Mapping[Path, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in values.items():
        node = out
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return out


# --------------------------------------------------------------------------- codecs


class _Codec:
    """Record values of one format, from the drawn values of each path."""

    def numeric(self, key: str) -> bool:
        """Whether the schema types the key field as an integer (ids are then numbers)."""
        return False

    def encode(self, values: Mapping[Path, Any]) -> bytes:
        raise NotImplementedError

    def malformed(self, values: Mapping[Path, Any]) -> bytes:
        raise NotImplementedError


class _Json(_Codec):
    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()

    def encode(self, values: Mapping[Path, Any]) -> bytes:
        return self._encoder.encode(_nested(values))

    def malformed(self, values: Mapping[Path, Any]) -> bytes:
        return b"{not json"


class _Msgpack(_Codec):
    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()

    def encode(self, values: Mapping[Path, Any]) -> bytes:
        return self._encoder.encode(_nested(values))

    def malformed(self, values: Mapping[Path, Any]) -> bytes:
        return b"\xc1"  # the one byte msgpack never uses


def _header(schema: SchemaDef, indexes: bytes = b"") -> bytes:
    if schema.framing != "confluent":
        return b""
    return b"\x00" + struct.pack(">I", schema.schema_ids[0]) + indexes


class _Avro(_Codec):
    """Records of the topology's Avro schema: what is drawn where the schema has it, each
    other field its type's zero (a union: null when it may be, else its first branch)."""

    def __init__(self, schema: SchemaDef) -> None:
        import fastavro

        self.raw: Any = json.loads(schema.content)
        self.parsed = fastavro.parse_schema(self.raw)
        self._write = fastavro.schemaless_writer
        self.header = _header(schema)
        self.named: dict[str, Any] = {}
        self._collect(self.raw, "")

    def _collect(self, t: Any, namespace: str) -> None:
        if isinstance(t, list):
            for branch in t:
                self._collect(branch, namespace)
        elif isinstance(t, dict):
            kind = t.get("type")
            if kind in ("record", "enum", "fixed") and "name" in t:
                ns = t.get("namespace", namespace)
                full = t["name"] if "." in t["name"] or not ns else f"{ns}.{t['name']}"
                self.named[full] = self.named[t["name"].rsplit(".", 1)[-1]] = t
                namespace = ns
            for f in t.get("fields", ()):
                self._collect(f["type"], namespace)
            for key in ("items", "values"):
                if key in t:
                    self._collect(t[key], namespace)
            if isinstance(kind, dict | list):
                self._collect(kind, namespace)

    def _resolve(self, t: Any) -> Any:
        while isinstance(t, str) and t in self.named:
            t = self.named[t]
        if isinstance(t, dict) and isinstance(t.get("type"), str) and t["type"] not in (
                "record", "enum", "fixed", "array", "map"):
            return self._resolve(t["type"])  # a primitive with a logical type
        return t

    def _field_type(self, name: str) -> Any:
        for f in self.raw.get("fields", ()):
            if f["name"] == name:
                return self._resolve(f["type"])
        return None

    def numeric(self, key: str) -> bool:
        t = self._field_type(key)
        if isinstance(t, list):
            t = next((self._resolve(b) for b in t if b != "null"), None)
        return t in ("int", "long")

    def encode(self, values: Mapping[Path, Any]) -> bytes:
        out = io.BytesIO()
        out.write(self.header)
        self._write(out, self.parsed, self._value(self.raw, (), values))
        return out.getvalue()

    def malformed(self, values: Mapping[Path, Any]) -> bytes:
        return self.encode(values) + b"\x00"  # bytes after the record's end

    def _value(self, t: Any, path: Path, values: Mapping[Path, Any]) -> Any:
        t = self._resolve(t)
        if path in values:
            return self._coerce(t, values[path])
        below = any(len(p) > len(path) and p[:len(path)] == path for p in values)
        if isinstance(t, list):
            if below:
                branch = next((b for b in t if isinstance(self._resolve(b), dict)
                               and self._resolve(b).get("type") == "record"), t[0])
                return self._value(branch, path, values)
            return None if "null" in t else self._value(t[0], path, values)
        if isinstance(t, dict):
            kind = t["type"]
            if kind == "record":
                return {f["name"]: self._value(f["type"], (*path, f["name"]), values)
                        for f in t["fields"]}
            if kind == "enum":
                return t["symbols"][0]
            if kind == "fixed":
                return b"\x00" * int(t["size"])
            if kind == "array":
                return []
            return {}  # map
        return _ZEROS.get(t)

    def _coerce(self, t: Any, value: Any) -> Any:
        if isinstance(t, list):
            branches = [self._resolve(b) for b in t if b != "null"]
            fit = next((b for b in branches if _fits(b, value)), branches[0] if branches else None)
            return None if fit is None else self._coerce(fit, value)
        if isinstance(t, dict):
            if t["type"] == "enum":
                return _pick(t["symbols"], value)
            if t["type"] == "array":
                return [self._coerce(self._resolve(t["items"]), value)]
            if t["type"] == "fixed":
                return str(value).encode()[: int(t["size"])].ljust(int(t["size"]), b"\x00")
            return self._value(t, (), {})
        return _primitive(t, value)


_ZEROS: dict[str, Any] = {"null": None, "boolean": False, "int": 0, "long": 0, "float": 0.0,
                          "double": 0.0, "bytes": b"", "string": ""}


def _fits(t: str | dict[str, Any], value: Any) -> bool:
    if isinstance(value, bool):
        return t == "boolean"
    if isinstance(value, int):
        return t in ("int", "long", "float", "double")
    if isinstance(value, float):
        return t in ("float", "double")
    if isinstance(value, str):
        return t == "string" or (isinstance(t, dict) and t.get("type") == "enum")
    return False


def _primitive(t: Any, value: Any) -> Any:
    if t in ("int", "long"):
        return int(value)
    if t in ("float", "double"):
        return float(value)
    if t == "boolean":
        return bool(value)
    if t == "bytes":
        return str(value).encode()
    if t == "string":
        return str(value)
    return None


class _Protobuf(_Codec):
    """Messages of the topology's protobuf type: drawn values in the fields of their paths,
    coerced to each field's type; the other fields unset."""

    def __init__(self, schema: SchemaDef) -> None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        files = descriptor_pb2.FileDescriptorSet.FromString(schema.content)
        pool = descriptor_pool.DescriptorPool()
        for f in files.file:
            pool.Add(f)
        self.descriptor = pool.FindMessageTypeByName(schema.message)
        self.cls = message_factory.GetMessageClass(self.descriptor)
        self.header = _header(schema, _message_indexes(files, schema.message))

    def numeric(self, key: str) -> bool:
        fd = self.descriptor.fields_by_name.get(key)
        return fd is not None and fd.cpp_type in _INTEGER_TYPES and not fd.enum_type

    def encode(self, values: Mapping[Path, Any]) -> bytes:
        message = self.cls()
        self._fill(message, self.descriptor, (), values)
        return self.header + bytes(message.SerializeToString())

    def malformed(self, values: Mapping[Path, Any]) -> bytes:
        return self.header + b"\xff\xff\xff"  # wire type 7: no message parses it

    def _fill(self, message: Any, descriptor: Any, prefix: Path,
              values: Mapping[Path, Any]) -> None:
        for fd in descriptor.fields:
            path = (*prefix, fd.name)
            if path in values:
                if fd.message_type is not None:
                    continue  # a message where a value was drawn: left unset
                value = _proto_value(fd, values[path])
                if fd.is_repeated:
                    getattr(message, fd.name).append(value)
                else:
                    setattr(message, fd.name, value)
            elif (fd.message_type is not None and not fd.is_repeated
                  and any(len(p) > len(path) and p[:len(path)] == path for p in values)):
                self._fill(getattr(message, fd.name), fd.message_type, path, values)


_INTEGER_TYPES = frozenset({1, 2, 3, 4})  # CPPTYPE_INT32, INT64, UINT32, UINT64


def _proto_value(fd: Any, value: Any) -> Any:
    if fd.enum_type is not None:
        names = [v.name for v in fd.enum_type.values]
        return fd.enum_type.values_by_name[_pick(names, value)].number
    cpp = fd.cpp_type
    if cpp in _INTEGER_TYPES:
        number = int(value)
        return abs(number) if cpp in (3, 4) else number
    if cpp in (5, 6):  # DOUBLE, FLOAT
        return float(value)
    if cpp == 7:  # BOOL
        return bool(value)
    if fd.type == 12:  # TYPE_BYTES
        return str(value).encode()
    return str(value)


def _message_indexes(files: Any, full_name: str) -> bytes:
    """Confluent's message-index prefix of a message type, as the decoder reads it: zigzag
    varints, the count then the indexes (``[0]`` is the single byte 0)."""
    def zigzag(n: int) -> bytes:
        n = (n << 1) ^ (n >> 63)
        out = bytearray()
        while n > 0x7F:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    found = message_path(files, full_name)
    if found == [0]:
        return b"\x00"
    return zigzag(len(found)) + b"".join(zigzag(i) for i in found)


def _pick(choices: Sequence[str], value: Any) -> str:
    """``value`` if it is one of ``choices``, else one of them chosen by ``value`` (stable
    across processes, unlike ``hash``)."""
    text = str(value)
    return text if text in choices else choices[zlib.crc32(text.encode()) % len(choices)]


def _codec(topology: TopologyDef) -> _Codec:
    src = topology.source
    if src.format == "msgpack":
        return _Msgpack()
    if src.schema is not None and src.format == "avro":
        return _Avro(src.schema)
    if src.schema is not None and src.format == "protobuf":
        return _Protobuf(src.schema)
    return _Json()
