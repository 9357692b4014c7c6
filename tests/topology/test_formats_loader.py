"""Loading avro and protobuf sources (contract section 12): the schema is read, checked
and kept in the definition; every problem is reported as file:line: reason; fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from records.formats import AVRO_SCHEMA, descriptor_set, order_proto

from streamfeat.errors import TopologyError
from streamfeat.topology import SchemaDef, load_topology

FEATURES = "features:\n  - {name: spend, agg: sum, field: amount, windows: [1h]}\n"


def write(folder: Path, source: str, features: str = FEATURES) -> Path:
    path = folder / "t.yaml"
    path.write_text(f"version: 1\nname: t\nsource:\n{source}{features}")
    return path


def problems(folder: Path, source: str, features: str = FEATURES) -> list[str]:
    with pytest.raises(TopologyError) as info:
        load_topology(write(folder, source, features))
    return [p.replace(str(folder) + "/", "") for p in info.value.problems]


AVRO = "  topic: orders\n  key: user_id\n  timestamp: ts\n  format: avro\n"


def test_avro_schema_is_read_relative_to_the_topology(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "o.avsc").write_text(json.dumps(AVRO_SCHEMA))
    topology = load_topology(write(tmp_path, AVRO + "  schema: schemas/o.avsc\n"))
    schema = topology.source.schema
    assert isinstance(schema, SchemaDef)
    assert json.loads(schema.content) == AVRO_SCHEMA
    assert (schema.path, schema.framing, schema.schema_ids) == (
        str(tmp_path / "schemas" / "o.avsc"), "plain", ())
    framed = load_topology(write(tmp_path, AVRO + "  schema: schemas/o.avsc\n"
                                 "  framing: confluent\n  schema_ids: [3, 12]\n"))
    assert framed.source.schema is not None
    assert (framed.source.schema.framing, framed.source.schema.schema_ids) == ("confluent", (3, 12))


@pytest.mark.parametrize(("file", "source", "expected"), [
    (None, "", "t.yaml:4: source: format avro needs schema, the Avro schema file"),
    (None, "  schema: nope.avsc\n", "t.yaml:8: source.schema: cannot read the Avro schema file "
                                    "'nope.avsc' (No such file or directory)"),
    ("{not json", "  schema: s.avsc\n", "t.yaml:8: source.schema: the Avro schema file 's.avsc' "
                                        "is not JSON at line 1 column 2"),
    ('{"type": "record", "fields": []}', "  schema: s.avsc\n",
     "t.yaml:8: source.schema: the Avro schema in 's.avsc' does not parse (\"name\" is a "
     "required field"),
    ('{"type": "record", "name": "R", "fields": [{"name": "x", "type": "nope"}]}',
     "  schema: s.avsc\n", "t.yaml:8: source.schema: the Avro schema in 's.avsc' does not "
                           "parse (nope)"),
    ('["null", "string"]', "  schema: s.avsc\n",
     "t.yaml:8: source.schema: the Avro schema in 's.avsc' is a union, not a record"),
    ('"string"', "  schema: s.avsc\n",
     "t.yaml:8: source.schema: the Avro schema in 's.avsc' is a string, not a record"),
    (AVRO_SCHEMA, "  schema: s.avsc\n  framing: confluent\n",
     "t.yaml:4: source: framing confluent needs schema_ids"),
    (AVRO_SCHEMA, "  schema: s.avsc\n  schema_ids: [1]\n",
     "t.yaml:9: source.schema_ids is only for framing: confluent"),
    (AVRO_SCHEMA, "  schema: s.avsc\n  framing: confluent\n  schema_ids: [1, 1]\n",
     "t.yaml:10: source.schema_ids must be a list of distinct schema registry ids"),
    (AVRO_SCHEMA, "  schema: s.avsc\n  framing: confluent\n  schema_ids: [-1]\n",
     "t.yaml:10: source.schema_ids must be a list"),
    (AVRO_SCHEMA, "  schema: s.avsc\n  framing: frames\n",
     "t.yaml:9: source.framing must be one of plain | confluent, got 'frames'"),
    (AVRO_SCHEMA, "  schema: s.avsc\n  message: shop.Order\n",
     "t.yaml:9: source.message is only for format protobuf, not avro"),
])
def test_avro_problems(tmp_path: Path, file: Any, source: str, expected: str) -> None:
    if file is not None:
        (tmp_path / "s.avsc").write_text(file if isinstance(file, str) else json.dumps(file))
    found = problems(tmp_path, AVRO + source)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]


def test_fields_the_topology_reads_must_be_in_the_schema(tmp_path: Path) -> None:
    (tmp_path / "s.avsc").write_text(json.dumps(AVRO_SCHEMA))
    found = problems(
        tmp_path, "  topic: orders\n  key: userid\n  timestamp: time\n  format: avro\n"
        "  schema: s.avsc\n",
        "features:\n  - {name: spend, agg: sum, field: amont, windows: [1h]}\n"
        "  - {name: web, agg: count, windows: [1h],\n"
        "     where: \"meta.chanel == 'x' and colour == 1\"}\n")
    label = "the record of s.avsc"
    assert [p.replace(label, "R") for p in found] == [
        "t.yaml:5: source.key 'userid' is not a field of R; did you mean 'user_id'?",
        "t.yaml:6: source.timestamp 'time' is not a field of R; valid: user_id, ts, amount, "
        "merchant, status, qty, ratio, ok, meta, tags, attrs, note, next",
        "t.yaml:10: feature 'spend': field 'amont' is not a field of R; did you mean 'amount'?",
        "t.yaml:11: feature 'web': where 'colour' is not a field of R; valid: user_id, ts, "
        "amount, merchant, status, qty, ratio, ok, meta, tags, attrs, note, next"]


def test_schema_keys_are_refused_on_json(tmp_path: Path) -> None:
    found = problems(tmp_path, "  topic: o\n  key: k\n  schema: s.avsc\n  descriptor: d\n")
    assert found == [
        "t.yaml:6: source.schema is only for format avro, not json; remove it, or set "
        "source.format",
        "t.yaml:7: source.descriptor is only for format protobuf, not json; remove it, or set "
        "source.format"]


# --------------------------------------------------------------------------- protobuf

PROTO = "  topic: orders\n  key: user_id\n  timestamp: ts\n  format: protobuf\n"


def test_protobuf_from_a_descriptor_set(tmp_path: Path) -> None:
    (tmp_path / "o.desc").write_bytes(descriptor_set())
    topology = load_topology(write(tmp_path, PROTO + "  descriptor: o.desc\n"
                                   "  message: shop.Order\n"))
    schema = topology.source.schema
    assert schema is not None and schema.message == "shop.Order"
    assert schema.path == str(tmp_path / "o.desc")


def test_protobuf_from_a_generated_module(tmp_path: Path) -> None:
    """A module as protoc --python_out writes it (its file added to the default pool), with
    an import of a well-known type: the topology keeps the message's file and its import."""
    fd = order_proto(name="sf_test_gen_orders.proto", package="gen")
    fd.dependency.append("google/protobuf/timestamp.proto")
    at = fd.message_type[0].field.add(name="at", number=99, type=11,
                                      type_name=".google.protobuf.Timestamp")
    at.label = 1
    (tmp_path / "sf_test_gen_orders_pb2.py").write_text(
        "from google.protobuf import descriptor_pool, timestamp_pb2\n"
        "from google.protobuf.internal import builder\n"
        f"DESCRIPTOR = descriptor_pool.Default().AddSerializedFile({fd.SerializeToString()!r})\n"
        "builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, globals())\n"
        "builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'sf_test_gen_orders_pb2', globals())\n")
    try:
        topology = load_topology(write(tmp_path, PROTO + "  module: sf_test_gen_orders_pb2\n"
                                       "  message: gen.Order\n"))
    finally:
        sys.modules.pop("sf_test_gen_orders_pb2", None)
    assert str(tmp_path) not in sys.path
    schema = topology.source.schema
    assert schema is not None and schema.path == "module:sf_test_gen_orders_pb2"
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString(schema.content)
    assert [f.name for f in files.file] == ["google/protobuf/timestamp.proto",
                                            "sf_test_gen_orders.proto"]


@pytest.mark.parametrize(("setup", "source", "expected"), [
    ("set", "  descriptor: o.desc\n",
     "t.yaml:4: source: format protobuf needs message"),
    ("set", "  descriptor: o.desc\n  message: shop.Ordr\n",
     "t.yaml:9: source.message: source.message 'shop.Ordr' is not a message type of "
     "'o.desc'; did you mean 'shop.Order'?"),
    ("set", "  descriptor: o.desc\n  message: Order\n",
     "t.yaml:9: source.message: source.message 'Order' is not a message type"),
    ("set", "  message: shop.Order\n", "t.yaml:4: source: format protobuf needs one of "
                                       "descriptor"),
    ("set", "  descriptor: o.desc\n  module: x_pb2\n  message: shop.Order\n",
     "t.yaml:9: source: format protobuf needs one of descriptor (a descriptor set file"),
    (None, "  descriptor: o.desc\n  message: shop.Order\n",
     "t.yaml:8: source.descriptor: cannot read the descriptor set 'o.desc'"),
    ("garbage", "  descriptor: o.desc\n  message: shop.Order\n",
     "t.yaml:8: source.descriptor: 'o.desc' is not a descriptor set"),
    ("no-imports", "  descriptor: o.desc\n  message: shop.Order\n",
     "t.yaml:8: source.descriptor: the descriptor set 'o.desc' lacks "
     "'google/protobuf/timestamp.proto', which 'order.proto' imports; write it with protoc "
     "--include_imports"),
    (None, "  module: sf_no_such_module_pb2\n  message: shop.Order\n",
     "t.yaml:8: source.module: cannot import the generated module 'sf_no_such_module_pb2' "
     "(ModuleNotFoundError"),
    (None, "  module: json\n  message: shop.Order\n",
     "t.yaml:8: source.module: module 'json' is not a generated protobuf module"),
])
def test_protobuf_problems(tmp_path: Path, setup: str | None, source: str,
                           expected: str) -> None:
    if setup == "set":
        (tmp_path / "o.desc").write_bytes(descriptor_set())
    elif setup == "garbage":
        (tmp_path / "o.desc").write_bytes(b"\xff\xff\xff\xff")
    elif setup == "no-imports":
        fd = order_proto()
        fd.dependency.append("google/protobuf/timestamp.proto")
        (tmp_path / "o.desc").write_bytes(descriptor_set(fd))
    found = problems(tmp_path, PROTO + source)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]
    assert "; " in found[0]


def test_protobuf_fields_must_be_in_the_message(tmp_path: Path) -> None:
    (tmp_path / "o.desc").write_bytes(descriptor_set())
    found = problems(tmp_path, PROTO + "  descriptor: o.desc\n  message: shop.Order\n",
                     "features:\n  - {name: s, agg: sum, field: amt, windows: [1h]}\n")
    assert found == ["t.yaml:11: feature 's': field 'amt' is not a field of message "
                     "shop.Order (o.desc); did you mean 'amount'?"]
