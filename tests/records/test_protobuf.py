"""Protobuf records (contract section 12): values as protobuf defines them, every
malformed kind with its reason, the field type checks of the JSON rules, Confluent
framing, and batch-independence."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest
from formats import KAFKA_TS, order_class, proto_topology
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfeat.records import DecodedBatch, Decoder
from streamfeat.topology import TopologyDef
from streamfeat.topology.expressions import compile_where

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
Order = order_class()


@pytest.fixture
def topology(tmp_path: Path) -> TopologyDef:
    return proto_topology(tmp_path)


def order(**fields: Any) -> bytes:
    base: dict[str, Any] = {"user_id": "u1", "ts": 1_700_000_000_000, "amount": 2.5,
                            "merchant": "m1", "status": 1, "qty": 3,
                            "meta": {"channel": "web", "code": 7}}
    base.update(fields)
    base = {k: v for k, v in base.items() if v is not None}
    return bytes(Order(**base).SerializeToString())


def decode(topology: TopologyDef, values: list[bytes | None]) -> DecodedBatch:
    return Decoder(topology).decode(values, [KAFKA_TS + i for i in range(len(values))])


def _read_all(tmp_path: Path) -> TopologyDef:
    names = ["amount", "merchant", "status", "qty", "ratio", "ok", "meta", "tags", "attrs",
             "big", "note", "metas", "number", "word"]
    features = "features:\n" + "".join(
        f"  - {{name: f_{n}, agg: last_k, k: 1, field: {n}, windows: [1h]}}\n" for n in names)
    # bytes are no value to keep (a field of the wrong type), but a where may read them
    features += '  - {name: raws, agg: count, windows: [1h], where: "raw != null"}\n'
    return proto_topology(tmp_path, features=features, name="all")


def test_values_follow_protobufs_rules(tmp_path: Path) -> None:
    dec = Decoder(_read_all(tmp_path))
    full = order(tags=["a", "é"], attrs={"x": 1}, raw=b"\x00", big=2**64 - 1, note="hi",
                 ratio=0.5, ok=True, metas=[{"channel": "c"}], word="w", status=7)
    bare = bytes(Order(user_id="u2", ts=5).SerializeToString())
    out = dec.decode([full, bare], [KAFKA_TS, KAFKA_TS])
    assert out.errors == [] and out.keys == ["u1", "u2"] and out.ts == [1_700_000_000_000, 5]
    one, two = (r.to_dict() for r in out.records)
    assert one == {
        "user_id": "u1", "ts": 1_700_000_000_000, "amount": 2.5, "merchant": "m1",
        "status": 7,  # an enum number without a name stays a number
        "qty": 3, "ratio": 0.5, "ok": True, "meta": {"channel": "web", "code": 7},
        "tags": ["a", "é"], "attrs": {"x": 1}, "raw": b"\x00", "big": 2**64 - 1, "note": "hi",
        "metas": [{"channel": "c", "code": 0}], "number": None, "word": "w"}
    # unset: defaults without presence, null with presence (optional, oneof, message)
    assert two == {
        "user_id": "u2", "ts": 5, "amount": None, "merchant": "", "status": "COMPLETED",
        "qty": 0, "ratio": 0.0, "ok": False, "meta": None, "tags": [], "attrs": {},
        "raw": b"", "big": 0, "note": None, "metas": [], "number": None, "word": None}


def test_good_records_and_their_fields(topology: TopologyDef) -> None:
    out = decode(topology, [order(), order(user_id="u2", amount=None, status=0,
                                           meta={"channel": "app"})])
    assert out.errors == []
    assert out.fields["amount"] == [2.5, None]
    assert out.fields["merchant"] == ["m1", "m1"]
    assert out.fields["meta"] == [{"channel": "web", "code": 7}, {"channel": "app", "code": 0}]
    where = compile_where("meta.channel == 'web' and status == 'PENDING'")
    assert [where(r) for r in out.records] == [True, False]


GOOD = order()
FIX = "the value is not a protobuf shop.Order"


@pytest.mark.parametrize(("value", "reason"), [
    (None, "record has no value (tombstone)"),
    (GOOD[:-1], "undecodable: Error parsing message with type 'shop.Order': Wire format was "
                "corrupt; the value is not a protobuf shop.Order"),
    (b"\xff\xff\xff", "undecodable: Error parsing message"),
    (b"\x0a\x02\xff\xfe" + GOOD, "undecodable: Error parsing message"),  # not UTF-8
    (b"", "key field 'user_id' is empty"),  # every field unset: proto3 defaults
    (order(user_id=""), "key field 'user_id' is empty"),
    (order(ts=-5), "timestamp field 'ts' is negative (-5)"),
    (order(ts=KAFKA_TS + 3_600_002), "future: event time 1800003600002"),
    (order(amount=math.nan), "field 'amount' is nan, expected a finite number"),
])
def test_each_malformed_kind_has_its_reason(topology: TopologyDef, value: bytes | None,
                                            reason: str) -> None:
    for values, pos in (([value], 0), ([GOOD, value, GOOD], 1)):
        out = decode(topology, values)
        assert [p for p, _ in out.errors] == [pos], out.errors
        assert out.errors[0][1].startswith(reason), out.errors[0][1]
        assert out.positions == [p for p in range(len(values)) if p != pos]
        assert "; " in out.errors[0][1]


def test_bytes_are_no_value_to_aggregate(tmp_path: Path) -> None:
    """A bytes field (set, or unset: b"") has no JSON form: aggregating it is a field of
    the wrong type, as for msgpack's bin."""
    topology = proto_topology(tmp_path, features=(
        "features:\n  - {name: raws, agg: last, field: raw, windows: [1h]}\n"))
    out = decode(topology, [order(raw=b"x"), order()])
    assert [r.split(";")[0] for _p, r in out.errors] == [
        "field 'raw' is a bytes, expected a JSON value (string, number, boolean, null, list "
        "or object)"] * 2


def _framed(payload: bytes, sid: int = 7, indexes: bytes = b"\x00",
            first: bytes = b"\x00") -> bytes:
    return first + struct.pack(">I", sid) + indexes + payload


def test_confluent_framing(tmp_path: Path) -> None:
    topology = proto_topology(tmp_path, framing="confluent", ids="[7]")
    values = [_framed(GOOD), _framed(GOOD, indexes=b"\x02\x00"), _framed(GOOD, sid=3),
              _framed(GOOD, first=b"\x05"), b"\x00\x00\x00\x00\x07",
              _framed(GOOD, indexes=b"\x02\x02"), _framed(GOOD, indexes=b"\x04\x00\x00"),
              _framed(GOOD[:-1])]
    out = decode(topology, values)
    assert out.positions == [0, 1]
    assert [(p, r.split(";")[0]) for p, r in out.errors] == [
        (2, f"schema id 3 is not one of source.schema_ids [7] (the ids of "
            f"{tmp_path / 'order.desc'})"),
        (3, "not Confluent-framed: the first byte is 0x05, not the magic byte 0x00"),
        (4, "not Confluent-framed: 5 bytes, fewer than the 6 of the header (magic byte 0, "
            "schema id, message indexes)"),
        (5, f"message indexes [1] do not name shop.Order [0] in {tmp_path / 'order.desc'}"),
        (6, f"message indexes [0, 0] do not name shop.Order [0] in {tmp_path / 'order.desc'}"),
        (7, "undecodable: Error parsing message with type 'shop.Order': Wire format was "
            "corrupt")]


def test_confluent_message_indexes_of_another_message(tmp_path: Path) -> None:
    other = proto_topology(tmp_path, framing="confluent", ids="[7]", message="shop.Other",
                           features="features:\n  - {name: n, agg: count, windows: [1h]}\n")
    payload = bytes(order_class("shop.Other")(user_id="u9").SerializeToString())
    out = Decoder(other).decode([_framed(payload, indexes=b"\x02\x02"),
                                 _framed(payload)], [0, 0])
    assert out.keys == ["u9"]
    assert out.errors[0][1].startswith("message indexes [0] do not name shop.Other [1]")


# --------------------------------------------------------------------------- properties

_metas = st.fixed_dictionaries({"channel": st.text(max_size=3), "code": st.integers(-5, 5)})
_orders = st.fixed_dictionaries({
    "user_id": st.text(min_size=1, max_size=4),
    "ts": st.integers(0, KAFKA_TS),
    "amount": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    "merchant": st.text(max_size=3), "status": st.integers(0, 2),
    "qty": st.integers(-(2**31), 2**31 - 1),
    "ratio": st.floats(width=32, allow_nan=False, allow_infinity=False),
    "ok": st.booleans(), "meta": st.one_of(st.none(), _metas),
    "tags": st.lists(st.text(max_size=3), max_size=3),
    "attrs": st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1), max_size=3),
    "raw": st.binary(max_size=4), "big": st.integers(0, 2**64 - 1),
    "note": st.one_of(st.none(), st.text(max_size=3)),
    "metas": st.lists(_metas, max_size=2),
})
_STATUS = ["COMPLETED", "PENDING", "CANCELLED"]


@SETTINGS
@given(st.lists(_orders, min_size=1, max_size=8))
def test_round_trips(tmp_path: Path, orders: list[dict[str, Any]]) -> None:
    dec = Decoder(_read_all(tmp_path))
    values = [bytes(Order(**{k: v for k, v in o.items() if v is not None}).SerializeToString())
              for o in orders]
    out = dec.decode(values, [KAFKA_TS] * len(values))
    assert out.positions == list(range(len(values)))
    for o, r in zip(orders, out.records, strict=True):
        got = r.to_dict()
        want = {**o, "status": _STATUS[o["status"]], "number": None, "word": None,
                "meta": None if o["meta"] is None else o["meta"]}
        assert got == want


@SETTINGS
@given(st.lists(st.one_of(
    st.binary(max_size=30),
    st.builds(lambda v, at: v[:at % (len(v) + 1)], st.sampled_from([GOOD, order(tags=["x"])]),
              st.integers(0, 100)),
    st.builds(lambda v, at, b: v[:at % len(v)] + bytes([b]) + v[at % len(v) + 1:],
              st.sampled_from([GOOD]), st.integers(0, 100), st.integers(0, 255)),
), min_size=1, max_size=10))
def test_a_record_is_decoded_alike_alone_and_in_any_batch(tmp_path: Path,
                                                          values: list[bytes]) -> None:
    dec = Decoder(_read_all(tmp_path))
    whole = dec.decode(values, [KAFKA_TS] * len(values))
    alone = [dec.decode([v], [KAFKA_TS]) for v in values]
    assert whole.errors == [(pos, a.errors[0][1]) for pos, a in enumerate(alone) if a.errors]
    assert whole.positions == [pos for pos, a in enumerate(alone) if not a.errors]
    assert whole.keys == [k for a in alone for k in a.keys]
    assert [r.to_dict() for r in whole.records] == [r.to_dict() for a in alone
                                                    for r in a.records]
