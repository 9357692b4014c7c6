"""Avro records (contract section 12): the decoder's batch path against fastavro, every
malformed kind with its reason, the field type checks of the JSON rules, and
batch-independence (a record's outcome depends on its own bytes alone)."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest
from formats import (
    AVRO_SCHEMA,
    KAFKA_TS,
    avro_decode,
    avro_encode,
    avro_good,
    avro_topology,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfeat.pipeline import PartitionPipeline
from streamfeat.records import DecodedBatch, Decoder, RecordBatch
from streamfeat.records.avro import MAX_DEPTH
from streamfeat.topology import TopologyDef
from streamfeat.topology.expressions import compile_where

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def topology(tmp_path: Path) -> TopologyDef:
    return avro_topology(tmp_path)


def decode(topology: TopologyDef, values: list[bytes | None]) -> DecodedBatch:
    return Decoder(topology).decode(values, [KAFKA_TS + i for i in range(len(values))])


def test_good_records_and_their_fields(topology: TopologyDef) -> None:
    values = [avro_encode(avro_good()),
              avro_encode(avro_good(user_id=42, ts=5, amount=None, merchant=7, qty=1,
                                    note=[1, 2], status="pending",
                                    meta={"channel": "app", "code": b"\x00\xff"}))]
    out = decode(topology, values)
    assert out.errors == []
    assert out.keys == ["u1", "42"]  # an integer key is its decimal text
    assert out.ts == [1_700_000_000_000, 5]
    assert out.fields == {"amount": [2.5, None], "merchant": ["m1", 7], "note": [None, [1, 2]]}
    first = out.records[0]
    assert first.get("meta") == {"channel": "web", "code": b"ab"} and first.get("qty") == 3
    assert first.get("status") == "completed"  # an enum is its symbol
    assert first.get("tags") is None  # not read by the topology: not decoded
    assert first.to_dict() == {
        "amount": 2.5, "merchant": "m1", "meta": first.get("meta"), "note": None, "qty": 3,
        "status": "completed", "ts": 1_700_000_000_000, "user_id": "u1"}
    where = compile_where("meta.channel == 'web' and qty > 1")
    assert [where(r) for r in out.records] == [True, False]


def _framed(value: bytes, first: bytes = b"\x00", sid: int = 7) -> bytes:
    return first + struct.pack(">I", sid) + value


GOOD = avro_encode(avro_good())
TRUNCATED = "undecodable: the record ends inside field"
FIX = "the value is not Avro of the schema"


def _with_varint(raw: bytes) -> bytes:
    """GOOD with its user_id branch index replaced by ``raw`` (bytes of a varint)."""
    return raw + GOOD[1:]


@pytest.mark.parametrize(("value", "reason"), [
    (None, "record has no value (tombstone)"),
    (b"", f"{TRUNCATED} 'user_id' (truncated); {FIX}"),
    (GOOD[:-1], f"{TRUNCATED} 'next' (truncated)"),
    (GOOD[:20], TRUNCATED),
    (GOOD + b"\x00", "undecodable: bytes are left after the record's last field; "),
    (_with_varint(b"\x06"), "undecodable: field 'user_id' has a union branch index out of "
                            "range 0..2"),
    (_with_varint(b"\x01"), "undecodable: field 'user_id' has a union branch index out of"),
    (_with_varint(b"\xff" * 10 + b"\x01"), "undecodable: field 'user_id' has a union branch "
                                           "index beyond 64 bits"),
    (_with_varint(b"\xff" * 9 + b"\x02"), "undecodable: field 'user_id' has a union branch "
                                          "index beyond 64 bits"),
    (b"\x02\x03", "undecodable: field 'user_id' has a negative length"),
    (b"\x02\x04\xff\xfe" + GOOD[4:], "undecodable: field 'user_id' is not valid UTF-8"),
    (avro_encode(avro_good(user_id=None)), "key field 'user_id' is missing"),
    (avro_encode(avro_good(user_id="")), "key field 'user_id' is empty"),
    (avro_encode(avro_good(ts=-5)), "timestamp field 'ts' is negative (-5)"),
    (avro_encode(avro_good(ts=KAFKA_TS + 3_600_002)), "future: event time 1800003600002"),
    (avro_encode(avro_good(ts=2**63 - 1)), "future: event time 9223372036854775807 (ms) is after"),
    (avro_encode(avro_good(amount="12")), "field 'amount' is a str, expected a number"),
    (avro_encode(avro_good(amount=b"12")), "field 'amount' is a bytes, expected a number"),
    (avro_encode(avro_good(amount=math.nan)), "field 'amount' is nan, expected a finite"),
    (avro_encode(avro_good(amount=-math.inf)), "field 'amount' is -inf, expected a finite"),
    (avro_encode(avro_good(merchant=["m1"])),
     "field 'merchant' is a list, expected a string, number or boolean (count_distinct"),
    (avro_encode(avro_good(note=b"x")), "field 'note' is a bytes, expected a JSON value"),
    (avro_encode(avro_good(note={"channel": "web", "code": b"ab"})),
     "field 'note' holds a bytes, which is not a JSON value"),
])
def test_each_malformed_kind_has_its_reason(topology: TopologyDef, value: bytes | None,
                                            reason: str) -> None:
    # alone, and among good records (the others are kept)
    for values, pos in (([value], 0), ([GOOD, value, GOOD], 1)):
        out = decode(topology, values)
        assert [p for p, _ in out.errors] == [pos], out.errors
        assert out.errors[0][1].startswith(reason), out.errors[0][1]
        assert out.positions == [p for p in range(len(values)) if p != pos]
        assert "; " in out.errors[0][1], "a reason says what is wrong; then what to do"


def test_scalar_type_rules(tmp_path: Path) -> None:
    """A boolean is a byte 0 or 1, an int fits 32 bits; enum indexes are in range."""
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "user_id", "type": "string"}, {"name": "ts", "type": "long"},
        {"name": "ok", "type": "boolean"}, {"name": "n", "type": "int"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["a", "b"]}}]}
    features = ("features:\n  - {name: oks, agg: last, field: ok, windows: [1h]}\n"
                "  - {name: ns, agg: sum, field: n, windows: [1h]}\n"
                "  - {name: es, agg: top_k, k: 1, field: e, windows: [1h]}\n")
    topology = avro_topology(tmp_path, schema=schema, features=features)
    head = b"\x04u1\x02"  # user_id "u1", ts 1
    out = decode(topology, [head + b"\x01\x02\x02", head + b"\x02\x02\x02",
                            head + b"\x00\x80\x80\x80\x80\x10\x00", head + b"\x00\x02\x04",
                            head + b"\x00\xfe\xff\xff\xff\x0f\x00"])
    assert out.fields == {"ok": [True, False], "n": [1, 2**31 - 1], "e": ["b", "a"]}
    assert [(p, r.split(";")[0]) for p, r in out.errors] == [
        (1, "undecodable: field 'ok' is a boolean byte other than 0 or 1"),
        (2, "undecodable: field 'n' is an integer beyond 32 bits"),
        (3, "undecodable: field 'e' has an enum index out of range 0..1")]


def test_confluent_framing(tmp_path: Path) -> None:
    topology = avro_topology(tmp_path, framing="confluent", ids="[7, 9]")
    values = [_framed(GOOD), _framed(GOOD, sid=9), _framed(GOOD, sid=8), _framed(GOOD, b"\x01"),
              b"\x00\x00\x00", GOOD, b"", _framed(GOOD[:-2])]
    out = decode(topology, values)
    assert out.positions == [0, 1]
    assert [(p, r.split(";")[0]) for p, r in out.errors] == [
        (2, "schema id 8 is not one of source.schema_ids [7, 9] (the ids of "
            f"{tmp_path / 'order.avsc'})"),
        (3, "not Confluent-framed: the first byte is 0x01, not the magic byte 0x00"),
        (4, "not Confluent-framed: 3 bytes, fewer than the 5 of the header (magic byte 0, "
            "schema id)"),
        (5, f"not Confluent-framed: the first byte is 0x{GOOD[0]:02x}, not the magic byte 0x00"),
        (6, "not Confluent-framed: 0 bytes, fewer than the 5 of the header (magic byte 0, "
            "schema id)"),
        (7, "undecodable: the record ends inside field 'note' (truncated)")]
    assert "with Confluent framing" in out.errors[-1][1]


def test_few_bytes_cannot_claim_many_items(tmp_path: Path) -> None:
    """An array of nulls takes no bytes per item: a record may hold at most as many items
    (in all its arrays and maps) as it has bytes, whatever its block counts say."""
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "user_id", "type": "string"}, {"name": "ts", "type": "long"},
        {"name": "xs", "type": {"type": "array", "items": {"type": "array", "items": "null"}}}]}
    topology = avro_topology(tmp_path, schema=schema, features=(
        "features:\n  - {name: x, agg: last, field: xs, windows: [1h]}\n"))
    head = b"\x04u1\x02"
    huge = head + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f" + b"\x00"  # 2**62 empty arrays
    nested = head + b"\x08" + b"\x08\x00" * 4 + b"\x00"  # 4 arrays of 4 nulls: 20 items
    fine = head + b"\x04\x04\x00\x00\x00"  # [[None, None], []]
    out = decode(topology, [huge, nested, fine])
    assert out.fields == {"xs": [[[None, None], []]]}
    assert [r.split(";")[0] for _p, r in out.errors] == [
        "undecodable: field 'xs' holds more items than the record has bytes",
        "undecodable: field 'xs[]' holds more items than the record has bytes"]


def test_recursive_schemas_are_bounded(tmp_path: Path) -> None:
    nested: Any = None
    for _ in range(MAX_DEPTH - 1):  # with the innermost record's meta: MAX_DEPTH deep
        nested = avro_good(next=nested)
    ok = avro_encode(nested)
    deeper = avro_encode(avro_good(next=nested))
    out = decode(avro_topology(tmp_path), [ok, deeper])
    assert out.positions == [0]
    assert out.errors[0][1].startswith(  # the innermost record's meta is one too deep
        f"undecodable: field 'meta' nests records deeper than {MAX_DEPTH}")


# --------------------------------------------------------------------------- properties

_scalars = {
    "long": st.integers(-(2**63), 2**63 - 1), "int": st.integers(-(2**31), 2**31 - 1),
    "string": st.text(max_size=6), "bytes": st.binary(max_size=6), "null": st.none(),
    "double": st.floats(allow_nan=False), "boolean": st.booleans(),
}
_meta = st.fixed_dictionaries({"channel": st.text(max_size=4),
                               "code": st.binary(min_size=2, max_size=2)})
_records = st.fixed_dictionaries({
    "user_id": st.one_of(st.none(), st.text(max_size=4), _scalars["long"]),
    "ts": _scalars["long"],
    "amount": st.one_of(st.none(), st.floats(), st.text(max_size=3), st.binary(max_size=3)),
    "merchant": st.one_of(st.none(), st.text(max_size=3), _scalars["long"],
                          st.lists(st.text(max_size=2), max_size=3)),
    "status": st.sampled_from(["completed", "pending", "cancelled"]),
    "qty": _scalars["int"],
    "ratio": st.floats(width=32),
    "ok": st.booleans(),
    "meta": _meta,
    "tags": st.lists(st.text(max_size=3), max_size=3),
    "attrs": st.dictionaries(st.text(max_size=3), st.one_of(st.none(), _scalars["long"], _meta),
                             max_size=3),
    "note": st.one_of(st.none(), st.text(max_size=3), st.lists(_scalars["long"], max_size=3),
                      _meta, st.binary(max_size=3)),
    "next": st.none(),
})


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN (also inside lists and dicts)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _read_all(tmp_path: Path) -> TopologyDef:
    """A topology that reads every field (as last values: any type is taken)."""
    names = [f["name"] for f in AVRO_SCHEMA["fields"] if f["name"] not in ("user_id", "ts")]
    features = "features:\n" + "".join(
        f"  - {{name: f_{n}, agg: last_k, k: 1, field: {n}, windows: [1h]}}\n" for n in names)
    return avro_topology(tmp_path, features=features, name="all")


@SETTINGS
@given(st.lists(_records, min_size=1, max_size=8))
def test_round_trips_through_fastavro(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    """Whatever fastavro writes, the batch path reads back as fastavro does: each field's
    value, for every record the decoder accepts (those it refuses break a JSON rule)."""
    dec = Decoder(_read_all(tmp_path))
    values = [avro_encode(r) for r in records]
    out = dec.decode(values, [KAFKA_TS] * len(values))
    for k, pos in enumerate(out.positions):
        event = out.records[k].to_dict()
        back = avro_decode(values[pos])
        assert all(_same(event[name], back[name]) for name in event), (event, back)
    for _pos, reason in out.errors:
        assert not reason.startswith("undecodable"), reason  # fastavro wrote it: it decodes


def _mutations(values: list[bytes]) -> st.SearchStrategy[list[bytes]]:
    def mutate(value: bytes, how: int, at: int, byte: int) -> bytes:
        at = at % (len(value) + 1)
        if how == 0:
            return value[:at]
        if how == 1:
            return value[:at] + bytes([byte]) + value[at + 1:]
        if how == 2:
            return value[:at] + bytes([byte]) + value[at:]
        return value
    return st.lists(st.builds(mutate, st.sampled_from(values), st.integers(0, 3),
                              st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=12)


_GOODS = [avro_encode(avro_good()), avro_encode(avro_good(
    user_id=7, amount=None, merchant=["a"], note=[1, -2], tags=[], attrs={"m": {"channel": "é",
    "code": b"zz"}}, next=avro_good(user_id="n")))]


@settings(SETTINGS, max_examples=60)
@given(st.one_of(_mutations(_GOODS), st.lists(st.binary(max_size=40), min_size=1, max_size=8)))
def test_a_record_is_decoded_alike_alone_and_in_any_batch(tmp_path: Path,
                                                          values: list[bytes]) -> None:
    """Truncated, flipped, inserted or random bytes: each record's outcome is the same in
    its batch and alone; what is accepted is what fastavro reads from those exact bytes."""
    dec = Decoder(_read_all(tmp_path))
    kafka_ts = [KAFKA_TS] * len(values)
    whole = dec.decode(values, kafka_ts)
    alone = [dec.decode([v], [KAFKA_TS]) for v in values]
    assert whole.errors == [(pos, a.errors[0][1]) for pos, a in enumerate(alone) if a.errors]
    assert whole.positions == [pos for pos, a in enumerate(alone) if not a.errors]
    assert whole.keys == [k for a in alone for k in a.keys]
    assert whole.ts == [t for a in alone for t in a.ts]
    for k, pos in enumerate(whole.positions):
        back = avro_decode(values[pos])
        assert back is not None, values[pos]
        event = whole.records[k].to_dict()
        assert all(_same(event[name], back[name]) for name in event)
    for _pos, reason in whole.errors:
        assert "; " in reason and len(reason) < 400


def test_the_pipeline_takes_avro_batches_cut_anywhere(tmp_path: Path) -> None:
    """The worker and a replay cut a partition into batches differently: same outcome."""
    topology = avro_topology(tmp_path)
    values: list[bytes | None] = []
    for i in range(40):
        record = avro_good(user_id=f"u{i % 3}", ts=KAFKA_TS - 60_000 + i * 1000,
                           amount=float(i), status=["completed", "pending"][i % 2])
        value = avro_encode(record)
        values.append(value if i % 7 else value[:-1])
    values[5] = None
    batch = RecordBatch(0, list(range(40)), [KAFKA_TS] * 40, [None] * 40, values)

    def run(cuts: list[int]) -> tuple[Any, ...]:
        pipeline = PartitionPipeline(topology, 0)
        dead = []
        for a, b in zip([0, *cuts], [*cuts, 40], strict=True):
            out = pipeline.process(batch[a:b])
            dead += [(d.record.offset, d.reason) for d in out.dead]
        return dead, pipeline.operator.values(["u0", "u1", "u2"])

    whole = run([])
    assert len(whole[0]) == 7  # 6 truncated, 1 tombstone
    assert whole[1]["u0"]["spend__1h"] == sum(float(i) for i in range(0, 40, 3) if i % 7)
    assert run([1, 13, 14, 30]) == whole
