"""Avro records decoded a batch at a time, into the columns the topology reads.

fastavro decodes about 3 µs a record (2 µs with a whole batch read as one Avro array),
several times what the JSON path costs, so a batch is decoded here field by field
across all its records at once, with NumPy over the batch's bytes: for each field of
the schema, every record's value is read in one pass (varints, floats, string lengths,
union branches as vectors), and only the fields the topology reads become Python values
(strings are sliced out of the batch's text). Arrays and maps, whose lengths differ from
record to record, are read record by record (``_One``), with the same checks.

A record is malformed when its bytes are not exactly one value of the schema: it ends
inside a value (truncated), bytes are left after its last field, a varint runs past 64
bits (an ``int`` past 32), a length is negative, a string is not UTF-8, a union branch or
enum index is out of range, a boolean is a byte other than 0 or 1, arrays and maps hold
more items than the record has bytes (so a few bytes cannot claim billions of nulls), or
named types nest deeper than ``MAX_DEPTH``. With Confluent framing: a value shorter than
the 5-byte header, a first byte other than the magic byte 0, or a schema id the topology
does not list. Each record is read from its own bytes alone, so its outcome never depends
on its batch. Logical types are read as their underlying types (a ``timestamp-millis`` is
its long, a ``decimal`` its bytes).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

from streamfeat.topology.definitions import SchemaDef

__all__ = ["MAX_DEPTH", "AvroColumns"]

MAX_DEPTH = 64
"""How deeply records may nest, the top-level record included (a recursive schema's data
is bounded)."""

Index = npt.NDArray[np.int64]
_PAD = bytes(16)  # reads past a record's end (always detected) stay inside the buffer
_U7F, _U80, _ONE = np.uint8(0x7F), np.uint8(0x80), np.uint64(1)
_DOUBLE, _FLOAT = struct.Struct("<d"), struct.Struct("<f")


class _Bad(Exception):
    """A record read by :class:`_One` is malformed: ``code`` says why."""

    def __init__(self, code: int) -> None:
        self.code = code


class _Batch:
    """The bytes of a batch and each record's read position, end and verdict."""

    __slots__ = (
        "bad",
        "budget",
        "buf",
        "data",
        "depth",
        "detail",
        "end",
        "hi",
        "pos",
        "text",
        "win4",
        "win8",
    )

    def __init__(self, values: Sequence[bytes]) -> None:
        n = len(values)
        self.data = b"".join(values) + _PAD
        self.buf = buf = np.frombuffer(self.data, dtype=np.uint8)
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
        self.end: Index = np.cumsum(lengths)
        self.pos: Index = self.end - lengths
        self.budget: Index = lengths.copy()  # items arrays and maps may still hold
        self.bad = np.zeros(n, dtype=np.int32)  # 0: good, else a reason code
        self.detail = np.zeros(n, dtype=np.int64)
        self.depth = 1  # the top-level record
        self.win4 = as_strided(buf, shape=(len(buf) - 3, 4), strides=(1, 1), writeable=False)
        self.win8 = as_strided(buf, shape=(len(buf) - 7, 8), strides=(1, 1), writeable=False)
        self.hi: Index | None = None  # the positions of non-ASCII bytes
        self.text: str | None = None  # the bytes as latin-1 text: ASCII strings are slices

    def flag(self, rows: Index, code: int, detail: Index | None = None) -> None:
        """Mark records malformed (the first reason stays) and stop reading them."""
        if not rows.size:
            return
        fresh = self.bad[rows] == 0
        self.bad[rows[fresh]] = code
        if detail is not None:
            self.detail[rows[fresh]] = detail[fresh]
        self.pos[rows] = self.end[rows]

    def advance(self, idx: Index, start: Index, size: Index | int, trunc: int) -> Index:
        """Move past ``size`` bytes from ``start``; records that end before are truncated.
        Returns the new positions (clamped to each record's end)."""
        stop = start + size
        end = self.end[idx]
        over = stop > end
        if over.any():
            stop = np.where(over, end, stop)
            self.pos[idx] = stop
            self.flag(idx[over], trunc)
        else:
            self.pos[idx] = stop
        return stop

    def varint(self, idx: Index, trunc: int, toolong: int) -> Index:
        """Each record's next zig-zag varint (Avro's int and long), as int64."""
        buf = self.buf
        p = self.pos[idx]
        b = buf[p]
        val = (b & _U7F).astype(np.uint64)
        n = np.ones(len(idx), dtype=np.int64)
        more = np.flatnonzero(b & _U80)
        shift = 7
        long_rows: list[Index] = []
        while more.size:
            if shift == 70:  # ten bytes and still continued
                long_rows.append(more)
                break
            b = buf[p[more] + n[more]]
            v = (b & _U7F).astype(np.uint64)
            if shift == 63:
                over = v > 1  # past 64 bits
                if over.any():
                    long_rows.append(more[over])
                    v &= _ONE
            val[more] |= v << np.uint64(shift)
            n[more] += 1
            more = more[(b & _U80) != 0]
            shift += 7
        self.advance(idx, p, n, trunc)
        for rows in long_rows:
            self.flag(idx[rows], toolong)
        return ((val >> _ONE) ^ (np.uint64(0) - (val & _ONE))).view(np.int64)

    def strings(self, idx: Index, start: Index, stop: Index, utf8: int) -> list[Any]:
        """The strings at ``start:stop`` of each record (bad records: anything)."""
        text, hi = self.text, self.hi
        if text is None or hi is None:
            text = self.text = self.data.decode("latin-1")
            hi = self.hi = np.flatnonzero(self.buf >= _U80)
        stop = np.maximum(start, stop)
        out: list[Any] = [text[x:y] for x, y in zip(start.tolist(), stop.tolist(), strict=True)]
        wide = np.flatnonzero(np.searchsorted(hi, stop) != np.searchsorted(hi, start))
        if wide.size:
            data = self.data
            for k in wide.tolist():
                try:
                    out[k] = data[int(start[k]):int(stop[k])].decode("utf-8")
                except UnicodeDecodeError:
                    self.flag(idx[k:k + 1], utf8)
        return out


class _One:
    """One record read byte by byte (arrays and maps): position, end, item budget."""

    __slots__ = ("budget", "data", "depth", "end", "p")

    def __init__(self, data: bytes, p: int, end: int) -> None:
        self.data, self.p, self.end, self.depth, self.budget = data, p, end, 0, 0

    def take(self, size: int, trunc: int) -> int:
        start = self.p
        if size < 0 or start + size > self.end:
            raise _Bad(trunc)
        self.p = start + size
        return start

    def varint(self, trunc: int, toolong: int) -> int:
        data, p, end = self.data, self.p, self.end
        val = shift = 0
        while True:
            if p >= end:
                raise _Bad(trunc)
            b = data[p]
            p += 1
            if shift == 63 and b & 0x7F > 1:
                raise _Bad(toolong)
            val |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift == 70:
                raise _Bad(toolong)
        self.p = p
        return (val >> 1) ^ -(val & 1)


# --------------------------------------------------------------------------- the nodes


class _Node:
    """A schema type: reads it for many records at once (``read``) or for one (``one``)."""

    def __init__(self, codes: _Codes, path: str) -> None:
        self.path = path
        self.trunc = codes.add(f"the record ends inside {path} (truncated)")

    def read(self, b: _Batch, idx: Index, want: bool) -> list[Any] | None:
        raise NotImplementedError

    def one(self, r: _One, want: bool) -> Any:
        raise NotImplementedError


class _Null(_Node):
    def read(self, b: _Batch, idx: Index, want: bool) -> list[Any] | None:
        return [None] * len(idx) if want else None

    def one(self, r: _One, want: bool) -> Any:
        return None


class _Boolean(_Node):
    def __init__(self, codes: _Codes, path: str) -> None:
        super().__init__(codes, path)
        self.odd = codes.add(f"{path} is a boolean byte other than 0 or 1")

    def read(self, b: _Batch, idx: Index, want: bool) -> list[Any] | None:
        start = b.pos[idx]
        b.advance(idx, start, 1, self.trunc)
        byte = b.buf[start]
        odd = byte > 1
        if odd.any():
            b.flag(idx[odd], self.odd)
        return (byte == 1).tolist() if want else None

    def one(self, r: _One, want: bool) -> Any:
        byte = r.data[r.take(1, self.trunc)]
        if byte > 1:
            raise _Bad(self.odd)
        return byte == 1


class _Long(_Node):
    def __init__(self, codes: _Codes, path: str, bits: int) -> None:
        super().__init__(codes, path)
        self.bits = bits
        self.toolong = codes.add(f"{path} is an integer beyond {bits} bits")

    def read(self, b: _Batch, idx: Index, want: bool) -> list[Any] | None:
        v = b.varint(idx, self.trunc, self.toolong)
        if self.bits == 32:
            wide = (v < -(2**31)) | (v >= 2**31)
            if wide.any():
                b.flag(idx[wide], self.toolong)
        return v.tolist() if want else None

    def one(self, r: _One, want: bool) -> Any:
        v = r.varint(self.trunc, self.toolong)
        if self.bits == 32 and not -(2**31) <= v < 2**31:
            raise _Bad(self.toolong)
        return v


class _Float(_Node):
    def __init__(self, codes: _Codes, path: str, size: int) -> None:
        super().__init__(codes, path)
        self.size = size

    def read(self, b: _Batch, idx: Index, want: bool) -> list[Any] | None:
        start = b.pos[idx]
        b.advance(idx, start, self.size, self.trunc)
        if not want:
            return None
        if self.size == 8:
            return b.win8[start].view("<f8").ravel().tolist()
        with np.errstate(invalid="ignore"):  # a signalling NaN stays a NaN, quietly
            return b.win4[start].view("<f4").ravel().astype(np.float64).tolist()

    def one(self, r: _One, want: bool) -> Any:
        p = r.take(self.size, self.trunc)
        return (_DOUBLE if self.size == 8 else _FLOAT).unpack_from(r.data, p)[0]


class _Bytes(_Node):
    """``bytes`` and ``string`` (``text``: UTF-8, decoded)."""

    def __init__(self, codes: _Codes, path: str, text: bool) -> None:
        super().__init__(codes, path)
        self.text = text
        self.toolong = codes.add(f"{path} has a length beyond 64 bits")
        self.negative = codes.add(f"{path} has a negative length")
        self.utf8 = codes.add(f"{path} is not valid UTF-8")

    def read(self, b: _Batch, idx: Index, want: bool) -> list[Any] | None:
        size = b.varint(idx, self.trunc, self.toolong)
        negative = size < 0
        if negative.any():
            b.flag(idx[negative], self.negative)
            size = np.maximum(size, 0)
        start = b.pos[idx]
        stop = b.advance(idx, start, size, self.trunc)
        if not want:
            return None
        if self.text:
            return b.strings(idx, start, stop, self.utf8)
        data = b.data
        return [data[x:y] for x, y in zip(start.tolist(), stop.tolist(), strict=True)]

    def one(self, r: _One, want: bool) -> Any:
        size = r.varint(self.trunc, self.toolong)
        if size < 0:
            raise _Bad(self.negative)
        p = r.take(size, self.trunc)
        chunk = r.data[p:p + size]
        if not self.text:
            return chunk
        try:
            return chunk.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(self.utf8) from None


class _Fixed(_Node):
    def __init__(self, codes: _Codes, path: str, size: int) -> None:
        super().__init__(codes, path)
        self.size = size

    def read(self, b: _Batch, idx: Index, want: bool) -> list[Any] | None:
        start = b.pos[idx]
        b.advance(idx, start, self.size, self.trunc)
        if not want:
            return None
        data, size = b.data, self.size
        return [data[x:x + size] for x in start.tolist()]

    def one(self, r: _One, want: bool) -> Any:
        p = r.take(self.size, self.trunc)
        return r.data[p:p + self.size]


class _Enum(_Node):
    def __init__(self, codes: _Codes, path: str, symbols: list[str]) -> None:
        super().__init__(codes, path)
        self.symbols = symbols
        self.table = np.array(symbols, dtype=object)
        self.toolong = codes.add(f"{path} has an enum index beyond 64 bits")
        self.range = codes.add(f"{path} has an enum index out of range 0..{len(symbols) - 1}")

    def read(self, b: _Batch, idx: Index, want: bool) -> list[Any] | None:
        i = b.varint(idx, self.trunc, self.toolong)
        out = (i < 0) | (i >= len(self.symbols))
        if out.any():
            b.flag(idx[out], self.range)
            i = np.where(out, 0, i)
        return self.table[i].tolist() if want else None

    def one(self, r: _One, want: bool) -> Any:
        i = r.varint(self.trunc, self.toolong)
        if not 0 <= i < len(self.symbols):
            raise _Bad(self.range)
        return self.symbols[i]


class _Record(_Node):
    def __init__(self, codes: _Codes, path: str) -> None:
        super().__init__(codes, path)
        self.fields: list[tuple[str, _Node]] = []  # filled after creation (recursive types)
        self.deep = codes.add(f"{path} nests records deeper than {MAX_DEPTH}")

    def read(self, b: _Batch, idx: Index, want: bool) -> list[Any] | None:
        if b.depth >= MAX_DEPTH:
            b.flag(idx, self.deep)
            return [None] * len(idx) if want else None
        b.depth += 1
        try:
            columns = [node.read(b, idx, want) for _name, node in self.fields]
        finally:
            b.depth -= 1
        if not want:
            return None
        if not columns:
            return [{} for _ in range(len(idx))]
        names = [name for name, _node in self.fields]
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]

    def one(self, r: _One, want: bool) -> Any:
        if r.depth >= MAX_DEPTH:
            raise _Bad(self.deep)
        r.depth += 1
        try:
            values = {name: node.one(r, want) for name, node in self.fields}
        finally:
            r.depth -= 1
        return values if want else None


class _Union(_Node):
    def __init__(self, codes: _Codes, path: str, branches: list[_Node]) -> None:
        super().__init__(codes, path)
        self.branches = branches
        self.toolong = codes.add(f"{path} has a union branch index beyond 64 bits")
        self.range = codes.add(
            f"{path} has a union branch index out of range 0..{len(branches) - 1}")

    def read(self, b: _Batch, idx: Index, want: bool) -> list[Any] | None:
        i = b.varint(idx, self.trunc, self.toolong)
        k = len(self.branches)
        out = (i < 0) | (i >= k)
        if out.any():
            b.flag(idx[out], self.range)
            i = np.where(out, k, i)  # no branch: their value is None
        per_branch: list[Any] = []
        for j, node in enumerate(self.branches):
            rows = np.flatnonzero(i == j)
            if not rows.size:
                per_branch.append(())
                continue
            if isinstance(node, _Null):
                per_branch.append(repeat(None))
                continue
            values = node.read(b, idx[rows], want)
            per_branch.append(iter(values) if values is not None else ())
        if not want:
            return None
        its: list[Any] = [iter(v) if isinstance(v, tuple) else v for v in per_branch]
        its.append(repeat(None))
        nexts = [it.__next__ for it in its]
        return [nexts[j]() for j in i.tolist()]

    def one(self, r: _One, want: bool) -> Any:
        i = r.varint(self.trunc, self.toolong)
        if not 0 <= i < len(self.branches):
            raise _Bad(self.range)
        return self.branches[i].one(r, want)


class _Repeated(_Node):
    """``array`` and ``map``: read record by record (their lengths differ)."""

    def __init__(self, codes: _Codes, path: str, items: _Node, is_map: bool) -> None:
        super().__init__(codes, path)
        self.items = items
        self.is_map = is_map
        self.key = _Bytes(codes, f"{path} (a key)", text=True) if is_map else None
        self.toolong = codes.add(f"{path} has a block count beyond 64 bits")
        self.many = codes.add(f"{path} holds more items than the record has bytes")

    def read(self, b: _Batch, idx: Index, want: bool) -> list[Any] | None:
        out: list[Any] = []
        pos, end, bad, budget, data = b.pos, b.end, b.bad, b.budget, b.data
        r = _One(data, 0, 0)
        for row in idx.tolist():
            if bad[row]:
                out.append(None)
                continue
            r.p, r.end, r.depth, r.budget = int(pos[row]), int(end[row]), b.depth, int(budget[row])
            try:
                value = self.block(r, want)
            except _Bad as exc:
                b.flag(np.array([row], dtype=np.int64), exc.code)
                out.append(None)
                continue
            pos[row] = r.p
            budget[row] = r.budget
            out.append(value)
        return out if want else None

    def one(self, r: _One, want: bool) -> Any:
        return self.block(r, want)

    def block(self, r: _One, want: bool) -> Any:
        """The array or map at ``r``'s position; its items count against ``r.budget``, the
        items every array and map of the record may still hold (its size in bytes)."""
        items, key = self.items, self.key
        out: Any = ({} if self.is_map else []) if want else None
        while True:
            count = r.varint(self.trunc, self.toolong)
            if count == 0:
                return out
            if count < 0:
                count = -count
                r.varint(self.trunc, self.toolong)  # the block's size in bytes
            r.budget -= count
            if r.budget < 0:
                raise _Bad(self.many)
            for _ in range(count):
                if key is not None:
                    k = key.one(r, want)
                    v = items.one(r, want)
                    if want:
                        out[k] = v
                else:
                    v = items.one(r, want)
                    if want:
                        out.append(v)


class _Codes:
    """Reason codes (1, 2, ...) of malformed records, with their text."""

    def __init__(self) -> None:
        self.reasons: list[str] = [""]

    def add(self, reason: str) -> int:
        self.reasons.append(reason)
        return len(self.reasons) - 1


# --------------------------------------------------------------------------- the schema


class _Compiler:
    def __init__(self, named: dict[str, Any], codes: _Codes) -> None:
        self.named = named
        self.codes = codes
        self.records: dict[str, _Node] = {}

    def node(self, schema: Any, raw: str) -> _Node:
        """The node of ``schema`` at ``raw`` (``meta.channel``, ``tags[]``)."""
        codes = self.codes
        path = f"field {raw!r}"
        if isinstance(schema, list):
            return _Union(codes, path, [self.node(s, raw) for s in schema])
        if isinstance(schema, str):
            if schema in self.named:
                return self.node(self.named[schema], raw)
            kind, spec = schema, {}
        else:
            kind, spec = schema["type"], schema
            if isinstance(kind, dict | list):
                return self.node(kind, raw)
        if kind == "null":
            return _Null(codes, path)
        if kind == "boolean":
            return _Boolean(codes, path)
        if kind in ("int", "long"):
            return _Long(codes, path, 32 if kind == "int" else 64)
        if kind in ("float", "double"):
            return _Float(codes, path, 4 if kind == "float" else 8)
        if kind in ("bytes", "string"):
            return _Bytes(codes, path, text=kind == "string")
        if kind == "fixed":
            return _Fixed(codes, path, int(spec["size"]))
        if kind == "enum":
            return _Enum(codes, path, [str(s) for s in spec["symbols"]])
        if kind in ("array", "map"):
            items = self.node(spec["items" if kind == "array" else "values"],
                              f"{raw}[]" if kind == "array" else f"{raw}{{}}")
            return _Repeated(codes, path, items, kind == "map")
        if kind in ("record", "error"):
            name = str(spec["name"])
            if name in self.records:  # a type used again, or recursively: one node
                return self.records[name]
            rec = _Record(codes, path)
            self.records[name] = rec
            for f in spec["fields"]:
                rec.fields.append((f["name"], self.node(f["type"], f"{raw}.{f['name']}")))
            return rec
        raise ValueError(f"unknown Avro type {kind!r}")  # pragma: no cover - parse_schema


class AvroColumns:
    """Decodes Avro record values (plain or Confluent-framed) into columns of the fields a
    topology reads."""

    def __init__(self, schema: SchemaDef, reads: Sequence[str]) -> None:
        import fastavro

        parsed: Any = fastavro.parse_schema(json.loads(schema.content))
        codes = self.codes = _Codes()
        compiler = _Compiler(parsed.get("__named_schemas", {}), codes)
        self.fields: list[tuple[str, _Node]] = []
        for f in parsed["fields"]:
            name = f["name"]
            self.fields.append((name, compiler.node(f["type"], name)))
        self.reads = tuple(reads)
        self.wanted = frozenset(reads)
        self.confluent = schema.framing == "confluent"
        self.ids = np.array(schema.schema_ids, dtype=np.int64)
        label = f"{schema.path}" + (" with Confluent framing" if self.confluent else "")
        self.fix = (f"the value is not Avro of the schema {label}: fix the producer's "
                    "serializer, or source.schema")
        trailing = codes.add("bytes are left after the record's last field")
        self.trailing = trailing
        self.short = codes.add("frame")
        self.magic = codes.add("frame")
        self.unknown_id = codes.add("frame")
        self.framing_reasons: dict[int, Callable[[int], str]] = {
            self.short: lambda n: (
                f"not Confluent-framed: {n} bytes, fewer than the 5 of the header (magic byte "
                "0, schema id); produce with a Confluent serializer, or set source.framing: "
                "plain"),
            self.magic: lambda byte: (
                f"not Confluent-framed: the first byte is 0x{byte:02x}, not the magic byte "
                "0x00; produce with a Confluent serializer, or set source.framing: plain"),
            self.unknown_id: lambda sid: (
                f"schema id {sid} is not one of source.schema_ids "
                f"{list(schema.schema_ids)} (the ids of {schema.path}); list it there if "
                "it is that schema, or produce with one of those"),
        }

    def decode(self, values: Sequence[bytes]) -> tuple[
            dict[str, list[Any]], list[int], list[tuple[int, str]]]:
        """Columns of the read fields (one value per good record), the positions of the
        good records, and ``(position, reason)`` of each malformed one."""
        b = _Batch(values)
        idx: Index = np.arange(len(values), dtype=np.int64)
        if self.confluent:
            self._frame(b, idx)
            idx = np.flatnonzero(b.bad == 0)
        columns: dict[str, list[Any]] = {}
        wanted = self.wanted
        for name, node in self.fields:
            col = node.read(b, idx, name in wanted)
            if col is not None:
                columns[name] = col
        left = np.flatnonzero(b.pos[idx] != b.end[idx])
        if left.size:
            b.flag(idx[left], self.trailing)
        if not b.bad.any():
            return columns, list(range(len(values))), []
        ok = b.bad[idx] == 0
        if not ok.all():
            keep = np.flatnonzero(ok).tolist()
            columns = {name: [col[k] for k in keep] for name, col in columns.items()}
        return columns, np.flatnonzero(b.bad == 0).tolist(), self._errors(b)

    def _frame(self, b: _Batch, idx: Index) -> None:
        start = b.pos.copy()
        size = b.end - start
        b.flag(idx[size < 5], self.short, size[size < 5])
        first = b.buf[start].astype(np.int64)
        wrong = (first != 0) & (b.bad == 0)
        b.flag(idx[wrong], self.magic, first[wrong])
        ids = b.win4[start + 1].view(">u4").ravel().astype(np.int64)
        unknown = ~np.isin(ids, self.ids) & (b.bad == 0)
        b.flag(idx[unknown], self.unknown_id, ids[unknown])
        good = b.bad == 0
        b.pos = np.where(good, start + 5, b.pos)

    def _errors(self, b: _Batch) -> list[tuple[int, str]]:
        out = []
        reasons, framing = self.codes.reasons, self.framing_reasons
        for row in np.flatnonzero(b.bad).tolist():
            code = int(b.bad[row])
            if code in framing:
                out.append((row, framing[code](int(b.detail[row]))))
            else:
                out.append((row, f"undecodable: {reasons[code]}; {self.fix}"))
        return out
