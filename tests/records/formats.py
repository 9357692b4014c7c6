"""Schemas and encoders of the Avro and Protobuf tests (fastavro and protobuf directly,
never streamfeat's decoders): an Avro schema and a protobuf message type that use every
kind of value, topologies reading them, and a descriptor set built in Python (no protoc).

Imported as ``records.formats`` by tests outside this directory (``tests/`` is on
``sys.path``), as ``formats`` here.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from streamfeat.topology import TopologyDef, load_topology_text

KAFKA_TS = 1_800_000_000_000

AVRO_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "Order", "namespace": "shop",
    "fields": [
        {"name": "user_id", "type": ["null", "string", "long"]},
        {"name": "ts", "type": "long"},
        {"name": "amount", "type": ["null", "double", "string", "bytes"]},
        {"name": "merchant", "type": ["null", "string", "long", {"type": "array",
                                                                  "items": "string"}]},
        {"name": "status", "type": {"type": "enum", "name": "Status",
                                    "symbols": ["completed", "pending", "cancelled"]}},
        {"name": "qty", "type": "int"},
        {"name": "ratio", "type": "float"},
        {"name": "ok", "type": "boolean"},
        {"name": "meta", "type": {"type": "record", "name": "Meta", "fields": [
            {"name": "channel", "type": "string"},
            {"name": "code", "type": {"type": "fixed", "name": "Code", "size": 2}},
        ]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": ["null", "long", "Meta"]}},
        {"name": "note", "type": ["null", "string", "bytes",
                                  {"type": "array", "items": "long"}, "Meta"]},
        {"name": "next", "type": ["null", "Order"], "default": None},
    ],
}

AVRO_FEATURES = """\
features:
  - {name: spend, agg: sum, field: amount, windows: [1h]}
  - {name: shops, agg: count_distinct, field: merchant, windows: [1h]}
  - {name: notes, agg: last_k, k: 3, field: note, windows: [1h]}
  - {name: web, agg: count, windows: [1h], where: "meta.channel == 'web' and qty > 1"}
  - {name: done, agg: count, windows: [1h], where: "status == 'completed'"}
"""


def avro_good(**changes: Any) -> dict[str, Any]:
    """A good Avro order record (fields changed by ``changes``)."""
    record: dict[str, Any] = {
        "user_id": "u1", "ts": 1_700_000_000_000, "amount": 2.5, "merchant": "m1",
        "status": "completed", "qty": 3, "ratio": 0.5, "ok": True,
        "meta": {"channel": "web", "code": b"ab"}, "tags": ["x", "é"],
        "attrs": {"a": 1, "b": None}, "note": None, "next": None,
    }
    record.update(changes)
    return record


def avro_encode(record: Any, schema: dict[str, Any] | None = None,
                schema_id: int | None = None) -> bytes:
    out = io.BytesIO()
    if schema_id is not None:
        out.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema or AVRO_SCHEMA), record)
    return out.getvalue()


def avro_decode(value: bytes, schema: dict[str, Any] | None = None) -> Any:
    """fastavro's reading of a plain record, or ``None`` when it is not exactly one
    record of the schema (fastavro raises, or bytes are left, or it reads what it would
    not write back)."""
    parsed = fastavro.parse_schema(schema or AVRO_SCHEMA)
    buf = io.BytesIO(value)
    try:
        record = fastavro.schemaless_reader(buf, parsed)
    except Exception:
        return None
    if buf.tell() != len(value):
        return None
    return record


def write_avro_topology(folder: Path, *, framing: str = "plain", ids: str = "",
                        features: str = AVRO_FEATURES, name: str = "shop",
                        schema: dict[str, Any] | None = None) -> Path:
    (folder / "order.avsc").write_text(json.dumps(schema or AVRO_SCHEMA))
    extra = f", framing: {framing}" + (f", schema_ids: {ids}" if ids else "")
    path = folder / f"{name}.yaml"
    path.write_text(
        f"version: 1\nname: {name}\nsource: {{topic: orders, key: user_id, timestamp: ts, "
        f"format: avro, schema: order.avsc{extra}}}\n{features}")
    return path


def avro_topology(folder: Path, **kwargs: Any) -> TopologyDef:
    path = write_avro_topology(folder, **kwargs)
    return load_topology_text(path.read_text(), str(path))


# --------------------------------------------------------------------------- protobuf

F = descriptor_pb2.FieldDescriptorProto


def order_proto(name: str = "order.proto",
                package: str = "shop") -> descriptor_pb2.FileDescriptorProto:
    """``order.proto`` (proto3): message Order and its nested types, built field by field:

    message Order {
      enum Status { COMPLETED = 0; PENDING = 1; CANCELLED = 2; }
      message Meta { string channel = 1; int32 code = 2; }
      string user_id = 1; int64 ts = 2; optional double amount = 3; string merchant = 4;
      Status status = 5; int32 qty = 6; float ratio = 7; bool ok = 8; Meta meta = 9;
      repeated string tags = 10; map<string, int64> attrs = 11; bytes raw = 12;
      uint64 big = 13; optional string note = 14; repeated Meta metas = 15;
      oneof choice { int64 number = 16; string word = 17; }
    }
    message Other { string user_id = 1; int64 ts = 2; }
    """
    fd = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
    order = fd.message_type.add(name="Order")
    status = order.enum_type.add(name="Status")
    for i, v in enumerate(("COMPLETED", "PENDING", "CANCELLED")):
        status.value.add(name=v, number=i)
    meta = order.nested_type.add(name="Meta")
    meta.field.add(name="channel", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    meta.field.add(name="code", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    entry = order.nested_type.add(name="AttrsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    order.oneof_decl.add(name="choice")  # synthetic oneofs (optional fields) come last
    order.oneof_decl.add(name="_amount")
    order.oneof_decl.add(name="_note")
    full = f".{package}.Order"
    for number, (field_name, kind, extra) in enumerate([
        ("user_id", F.TYPE_STRING, {}), ("ts", F.TYPE_INT64, {}),
        ("amount", F.TYPE_DOUBLE, {"proto3_optional": True, "oneof_index": 1}),
        ("merchant", F.TYPE_STRING, {}),
        ("status", F.TYPE_ENUM, {"type_name": f"{full}.Status"}),
        ("qty", F.TYPE_INT32, {}), ("ratio", F.TYPE_FLOAT, {}), ("ok", F.TYPE_BOOL, {}),
        ("meta", F.TYPE_MESSAGE, {"type_name": f"{full}.Meta"}),
        ("tags", F.TYPE_STRING, {"label": F.LABEL_REPEATED}),
        ("attrs", F.TYPE_MESSAGE, {"type_name": f"{full}.AttrsEntry",
                                   "label": F.LABEL_REPEATED}),
        ("raw", F.TYPE_BYTES, {}), ("big", F.TYPE_UINT64, {}),
        ("note", F.TYPE_STRING, {"proto3_optional": True, "oneof_index": 2}),
        ("metas", F.TYPE_MESSAGE, {"type_name": f"{full}.Meta", "label": F.LABEL_REPEATED}),
        ("number", F.TYPE_INT64, {"oneof_index": 0}), ("word", F.TYPE_STRING, {"oneof_index": 0}),
    ], start=1):
        order.field.add(name=field_name, number=number, type=kind,
                        label=extra.pop("label", F.LABEL_OPTIONAL), **extra)
    other = fd.message_type.add(name="Other")
    other.field.add(name="user_id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    other.field.add(name="ts", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    return fd


def descriptor_set(*files: descriptor_pb2.FileDescriptorProto) -> bytes:
    return descriptor_pb2.FileDescriptorSet(file=list(files) or [order_proto()]).SerializeToString()


def order_class(message: str = "shop.Order") -> Any:
    """The generated class of a message of ``order.proto`` (in a pool of its own)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(order_proto())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(message))


PROTO_FEATURES = """\
features:
  - {name: spend, agg: sum, field: amount, windows: [1h]}
  - {name: shops, agg: count_distinct, field: merchant, windows: [1h]}
  - {name: raws, agg: count, windows: [1h], where: "raw != null"}
  - {name: recent, agg: last_k, k: 2, field: meta, windows: [1h]}
  - {name: web, agg: count, windows: [1h], where: "meta.channel == 'web' and status == 'PENDING'"}
"""


def write_proto_topology(folder: Path, *, framing: str = "plain", ids: str = "",
                         features: str = PROTO_FEATURES, name: str = "shop",
                         message: str = "shop.Order") -> Path:
    (folder / "order.desc").write_bytes(descriptor_set())
    extra = f", framing: {framing}" + (f", schema_ids: {ids}" if ids else "")
    path = folder / f"{name}.yaml"
    path.write_text(
        f"version: 1\nname: {name}\nsource: {{topic: orders, key: user_id, timestamp: ts, "
        f"format: protobuf, descriptor: order.desc, message: {message}{extra}}}\n{features}")
    return path


def proto_topology(folder: Path, **kwargs: Any) -> TopologyDef:
    path = write_proto_topology(folder, **kwargs)
    return load_topology_text(path.read_text(), str(path))
