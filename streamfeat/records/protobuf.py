"""Protobuf records decoded a batch at a time, into the columns the topology reads.

Each value is parsed by protobuf's C parser (upb, about 0.6 µs a small message) into the
topology's message type, built from the descriptor set the topology keeps; then each field
the topology reads is taken from every message at once as a column. Values follow
protobuf's own rules: a field without presence (a proto3 scalar not marked ``optional``,
a repeated field) that is not set reads as its default (0, ``""``, ``false``, ``[]``), a
field with presence (``optional``, proto2, a oneof member, a message) that is not set
reads as null. Enums read as their value's name (its number when the name is unknown),
messages as objects of all their fields, maps as objects, bytes as bytes (not JSON: a
field of the wrong type for an aggregation).

A record is malformed when protobuf cannot parse it (truncated, a bad wire type, invalid
UTF-8 in a string, nesting beyond protobuf's limit), and with Confluent framing when it is
shorter than the header, its first byte is not the magic byte 0, its schema id is not
listed, or its message indexes do not name the topology's message type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from streamfeat.topology.definitions import SchemaDef

__all__ = ["ProtobufColumns", "message_path"]


def message_path(files: descriptor_pb2.FileDescriptorSet, full_name: str) -> list[int]:
    """Confluent's message indexes of a message type: its index among its file's top-level
    messages, then among each nested level's."""
    for f in files.file:
        prefix = f"{f.package}." if f.package else ""

        def find(messages: Any, prefix: str) -> list[int] | None:
            for i, m in enumerate(messages):
                name = f"{prefix}{m.name}"
                if name == full_name:
                    return [i]
                if full_name.startswith(name + "."):
                    rest = find(m.nested_type, name + ".")
                    if rest is not None:
                        return [i, *rest]
            return None

        found = find(f.message_type, prefix)
        if found is not None:
            return found
    raise KeyError(full_name)  # pragma: no cover - the loader checked the message exists


def _zigzag_varint(data: bytes, p: int, end: int) -> tuple[int, int] | None:
    val = shift = 0
    while p < end and shift < 64:
        b = data[p]
        p += 1
        val |= (b & 0x7F) << shift
        if not b & 0x80:
            return (val >> 1) ^ -(val & 1), p
        shift += 7
    return None


class ProtobufColumns:
    """Decodes protobuf message values (plain or Confluent-framed) into columns of the
    fields a topology reads."""

    def __init__(self, schema: SchemaDef, reads: Sequence[str]) -> None:
        files = descriptor_pb2.FileDescriptorSet.FromString(schema.content)
        pool = descriptor_pool.DescriptorPool()
        for f in files.file:
            pool.Add(f)
        self.descriptor = pool.FindMessageTypeByName(schema.message)
        self.parse: Callable[[bytes], Message] = (
            message_factory.GetMessageClass(self.descriptor).FromString)
        by_name = self.descriptor.fields_by_name
        self.columns = [(name, _column(by_name[name])) for name in reads]
        self.confluent = schema.framing == "confluent"
        self.ids = frozenset(schema.schema_ids)
        self.id_list = list(schema.schema_ids)
        self.path = message_path(files, schema.message)
        self.schema = schema
        self.fix = (f"the value is not a protobuf {schema.message} ({schema.path}"
                    f"{', Confluent-framed' if self.confluent else ''}): fix the producer's "
                    "serializer, or source.message")

    def decode(self, values: Sequence[bytes]) -> tuple[
            dict[str, list[Any]], list[int], list[tuple[int, str]]]:
        """Columns of the read fields (one value per good record), the positions of the
        good records, and ``(position, reason)`` of each malformed one."""
        errors: list[tuple[int, str]] = []
        payloads: Sequence[bytes] = values
        good: list[int] | None = None
        if self.confluent:
            payloads, good, errors = self._unframe(values)
        parse = self.parse
        try:
            messages = list(map(parse, payloads))
        except DecodeError:
            messages = []
            kept: list[int] = []
            for k, payload in enumerate(payloads):
                try:
                    messages.append(parse(payload))
                    kept.append(k if good is None else good[k])
                except DecodeError as exc:
                    pos = k if good is None else good[k]
                    errors.append((pos, f"undecodable: {_clip(str(exc))}; {self.fix}"))
            good = kept
            errors.sort()
        columns = {name: column(messages) for name, column in self.columns}
        return columns, list(range(len(values))) if good is None else good, errors

    def _unframe(self, values: Sequence[bytes]) -> tuple[
            list[bytes], list[int], list[tuple[int, str]]]:
        payloads: list[bytes] = []
        good: list[int] = []
        errors: list[tuple[int, str]] = []
        ids, path = self.ids, self.path
        simple = path == [0]  # encoded as one 0 byte by Confluent's serializer
        for pos, value in enumerate(values):
            size = len(value)
            if size < 6:
                errors.append((pos, (
                    f"not Confluent-framed: {size} bytes, fewer than the 6 of the header "
                    "(magic byte 0, schema id, message indexes); produce with a Confluent "
                    "serializer, or set source.framing: plain")))
                continue
            if value[0] != 0:
                errors.append((pos, (
                    f"not Confluent-framed: the first byte is 0x{value[0]:02x}, not the magic "
                    "byte 0x00; produce with a Confluent serializer, or set source.framing: "
                    "plain")))
                continue
            sid = int.from_bytes(value[1:5], "big")
            if sid not in ids:
                errors.append((pos, (
                    f"schema id {sid} is not one of source.schema_ids {self.id_list} (the ids "
                    f"of {self.schema.path}); list it there if it is that schema, or produce "
                    "with one of those")))
                continue
            if simple and value[5] == 0:
                payloads.append(value[6:])
                good.append(pos)
                continue
            indexes, start = self._indexes(value)
            if indexes != path:
                shown = "unreadable" if indexes is None else str(indexes)
                errors.append((pos, (
                    f"message indexes {shown} do not name {self.schema.message} {path} in "
                    f"{self.schema.path}; produce {self.schema.message} records, or set "
                    "source.message")))
                continue
            payloads.append(value[start:])
            good.append(pos)
        return payloads, good, errors

    @staticmethod
    def _indexes(value: bytes) -> tuple[list[int] | None, int]:
        end = len(value)
        read = _zigzag_varint(value, 5, end)
        if read is None or read[0] < 0 or read[0] > end:
            return None, 0
        count, p = read
        if count == 0:
            return [0], p
        out = []
        for _ in range(count):
            read = _zigzag_varint(value, p, end)
            if read is None:
                return None, 0
            out.append(read[0])
            p = read[1]
        return out, p


# --------------------------------------------------------------------------- values


def _column(fd: FieldDescriptor) -> Callable[[list[Message]], list[Any]]:
    """How to read one field of every message as plain values (see the module's rules)."""
    name = fd.name
    get = attrgetter(name)
    value = _converter(fd)
    if fd.is_repeated:
        if _is_map(fd):
            return lambda ms: [_map(getattr(m, name), fd) for m in ms]
        return lambda ms: [[value(v) for v in getattr(m, name)] for m in ms]
    if fd.message_type is not None:
        return lambda ms: [_object(getattr(m, name)) if m.HasField(name) else None for m in ms]
    if fd.has_presence:
        if value is _same:
            return lambda ms: [getattr(m, name) if m.HasField(name) else None for m in ms]
        return lambda ms: [value(getattr(m, name)) if m.HasField(name) else None for m in ms]
    if value is _same:
        return lambda ms: list(map(get, ms))
    return lambda ms: list(map(value, map(get, ms)))


def _same(v: Any) -> Any:
    return v


def _converter(fd: FieldDescriptor) -> Callable[[Any], Any]:
    """One value of the field (an item, for a repeated field) as a plain value."""
    if fd.enum_type is not None:
        names = {v.number: v.name for v in fd.enum_type.values}
        return lambda v: names.get(v, v)
    if fd.message_type is not None:
        return _object
    return _same


def _is_map(fd: FieldDescriptor) -> bool:
    mt = fd.message_type
    return mt is not None and mt.GetOptions().map_entry


def _map(container: Any, fd: FieldDescriptor) -> dict[Any, Any]:
    value_fd = fd.message_type.fields_by_name["value"]
    convert = _converter(value_fd)
    return {_key(k): convert(container[k]) for k in container}


def _key(k: Any) -> str:
    """A map key as an object's key, as protobuf's JSON mapping writes it."""
    if type(k) is bool:
        return "true" if k else "false"
    return k if type(k) is str else str(k)


def _object(message: Message) -> dict[str, Any]:
    """A message as an object of all its fields (unset ones with presence: null)."""
    descriptor: Descriptor = message.DESCRIPTOR
    out: dict[str, Any] = {}
    for fd in descriptor.fields:
        name = fd.name
        v = getattr(message, name)
        if fd.is_repeated:
            out[name] = (_map(v, fd) if _is_map(fd)
                         else [_converter(fd)(x) for x in v])
        elif (fd.message_type is not None or fd.has_presence) and not message.HasField(name):
            out[name] = None
        else:
            out[name] = _converter(fd)(v)
    return out


def _clip(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
