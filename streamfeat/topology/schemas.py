"""Schemas of binary source formats, read when a topology loads (contract section 12).

- ``avro``: a schema file (``.avsc``, JSON) whose top-level type is a record: one event
  per record. It must be self-contained (named types it uses are defined in it). The
  schema is parsed with fastavro, so a schema that fastavro refuses is refused here.
- ``protobuf``: a message type (``source.message``) from a descriptor set (a serialized
  ``FileDescriptorSet``: ``protoc --include_imports --descriptor_set_out=FILE``) or from a
  generated Python module (``*_pb2``, imported once, here). Either way the topology keeps
  a descriptor set of the message's file and every file it imports, so decoding never
  imports user code.

Each function returns the schema's content and the top-level field names of its records
(the loader checks that the fields a topology reads exist), or raises
:class:`SchemaProblem` with a reason ``<what is wrong>; <what to do>``.
"""

from __future__ import annotations

import difflib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "SchemaProblem",
    "avro_fields",
    "message_names",
    "read_avro",
    "read_descriptor_set",
    "read_generated_module",
]


class SchemaProblem(Exception):
    """A schema that cannot be used; ``about`` is ``"file"`` or ``"message"`` (which key of
    the topology is at fault)."""

    def __init__(self, reason: str, about: str = "file") -> None:
        super().__init__(reason)
        self.reason = reason
        self.about = about


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SchemaProblem(
            f"cannot read the {what} {str(path)!r} ({exc.strerror or exc}); check the path "
            "(a relative path is relative to the topology file)") from exc


# --------------------------------------------------------------------------- avro


def read_avro(path: Path) -> tuple[bytes, tuple[str, ...]]:
    """The schema file's JSON text (normalised) and its record's field names."""
    import fastavro

    raw = _read_bytes(path, "Avro schema file")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        where = (f" at line {exc.lineno} column {exc.colno}"
                 if isinstance(exc, json.JSONDecodeError) else "")
        raise SchemaProblem(
            f"the Avro schema file {str(path)!r} is not JSON{where}; an Avro schema (.avsc) is "
            "JSON text: fix it") from exc
    try:
        parsed = fastavro.parse_schema(obj)
    except Exception as exc:  # fastavro raises many kinds on a bad schema
        detail = str(exc) or type(exc).__name__
        raise SchemaProblem(
            f"the Avro schema in {str(path)!r} does not parse ({_clip(detail)}); fix the "
            "schema (the Avro specification's schema declaration)") from exc
    return json.dumps(obj, sort_keys=True).encode(), avro_fields(parsed, str(path))


def avro_fields(parsed: Any, path: str) -> tuple[str, ...]:
    """The field names of a parsed Avro schema whose top-level type is a record."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        kind = parsed.get("type") if isinstance(parsed, dict) else parsed
        raise SchemaProblem(
            f"the Avro schema in {path!r} is a {_type_name(kind)}, not a record; each Kafka "
            "record must be one event, a record of fields: wrap the value in a record")
    return tuple(str(f["name"]) for f in parsed["fields"])


def _type_name(kind: Any) -> str:
    if isinstance(kind, list):
        return "union"
    return str(kind)


# --------------------------------------------------------------------------- protobuf


def read_descriptor_set(path: Path, message: str) -> tuple[bytes, tuple[str, ...]]:
    """The descriptor set of the file, checked to hold ``message``, and its field names."""
    from google.protobuf import descriptor_pb2
    from google.protobuf.message import DecodeError

    raw = _read_bytes(path, "descriptor set")
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(raw)
    except DecodeError as exc:
        raise SchemaProblem(
            f"{str(path)!r} is not a descriptor set (a serialized FileDescriptorSet); write "
            "one with protoc --include_imports --descriptor_set_out=FILE x.proto") from exc
    return _descriptor_set(files, message, str(path))


def read_generated_module(name: str, search: Path, message: str) -> tuple[bytes, tuple[str, ...]]:
    """The descriptor set of a generated module's file (and its imports), checked to hold
    ``message``. The module is imported from the Python path or the topology's folder."""
    from google.protobuf import descriptor_pb2

    added = str(search) not in sys.path
    if added:
        sys.path.insert(0, str(search))
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # importing user code: anything can go wrong
        raise SchemaProblem(
            f"cannot import the generated module {name!r} ({type(exc).__name__}: "
            f"{_clip(str(exc))}); generate it with protoc --python_out and put it on the "
            "Python path or beside the topology file") from exc
    finally:
        if added:
            sys.path.remove(str(search))
    root = getattr(module, "DESCRIPTOR", None)
    if root is None or not hasattr(root, "dependencies") or not hasattr(root, "CopyToProto"):
        raise SchemaProblem(
            f"module {name!r} is not a generated protobuf module (it has no file DESCRIPTOR); "
            "name the *_pb2 module protoc wrote")
    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(fd: Any) -> None:  # dependencies first, as a pool needs them
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        fd.CopyToProto(files.file.add())

    add(root)
    return _descriptor_set(files, message, f"module {name}")


def message_names(files: Any) -> list[str]:
    """Full names of every message type of a ``FileDescriptorSet`` (nested ones too)."""
    out: list[str] = []

    def walk(prefix: str, messages: Any) -> None:
        for m in messages:
            full = f"{prefix}{m.name}"
            if not m.options.map_entry:
                out.append(full)
            walk(full + ".", m.nested_type)

    for f in files.file:
        walk(f"{f.package}." if f.package else "", f.message_type)
    return out


def _descriptor_set(files: Any, message: str, where: str) -> tuple[bytes, tuple[str, ...]]:
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    have = {f.name for f in files.file}
    for f in files.file:
        missing = [d for d in f.dependency if d not in have]
        if missing:
            raise SchemaProblem(
                f"the descriptor set {where!r} lacks {missing[0]!r}, which {f.name!r} imports; "
                "write it with protoc --include_imports")
    try:
        for f in _dependencies_first(files):
            pool.Add(f)
    except Exception as exc:  # the pool's errors have no common type
        raise SchemaProblem(
            f"the descriptor set {where!r} is not consistent ({_clip(str(exc))}); write it "
            "again with protoc --include_imports") from exc
    names = message_names(files)
    try:
        descriptor = pool.FindMessageTypeByName(message)
    except KeyError:
        close = difflib.get_close_matches(message, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(names[:12])}"
        raise SchemaProblem(
            f"source.message {message!r} is not a message type of {where!r}; {hint}",
            "message") from None
    out = type(files)()
    keep = _closure(files, descriptor.file.name)
    out.file.extend(f for f in _dependencies_first(files) if f.name in keep)
    return out.SerializeToString(deterministic=True), tuple(f.name for f in descriptor.fields)


def _dependencies_first(files: Any) -> list[Any]:
    by_name = {f.name: f for f in files.file}
    order: list[Any] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in by_name:
            return
        seen.add(name)
        for dep in by_name[name].dependency:
            visit(dep)
        order.append(by_name[name])

    for f in files.file:
        visit(f.name)
    return order


def _closure(files: Any, name: str) -> set[str]:
    by_name = {f.name: f for f in files.file}
    todo, seen = [name], set()
    while todo:
        n = todo.pop()
        if n not in seen and n in by_name:
            seen.add(n)
            todo.extend(by_name[n].dependency)
    return seen


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
