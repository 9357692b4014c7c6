"""The decoder: every malformed kind with its reason, and batch-independence.

The decoder checks a whole batch at once and only looks at records one by one when the
batch holds a bad one. The worker and the replay batch the same records differently, so
the property that matters is: a record's outcome depends on its own bytes alone.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfeat.records import DecodedBatch, Decoder
from streamfeat.records.decode import MAX_NESTING
from streamfeat.topology import TopologyDef
from streamfeat.topology.expressions import compile_where
from streamfeat.topology.loader import load_topology_text

TOPOLOGY = """
version: 1
name: shop
source: {topic: orders, key: user_id, timestamp: ts, timestamp_unit: %(unit)s, format: %(fmt)s}
features:
  - {name: spend, agg: sum, field: amount, windows: [1h]}
  - {name: shops, agg: count_distinct, field: merchant, windows: [1h]}
  - {name: web, agg: count, windows: [1h], where: "meta.channel == 'web' and qty > 1"}
"""


def topology(unit: str = "ms", fmt: str = "json") -> TopologyDef:
    return load_topology_text(TOPOLOGY % {"unit": unit, "fmt": fmt})


KAFKA_TS = 1_800_000_000_000  # 2027-01-15: the records below were produced after their events


def decode(values: list[bytes | None], unit: str = "ms", fmt: str = "json") -> DecodedBatch:
    return Decoder(topology(unit, fmt)).decode(values, [KAFKA_TS + i for i in range(len(values))])


def j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


GOOD = {"user_id": "u1", "ts": 1_700_000_000_000, "amount": 2.5, "merchant": "m1",
        "meta": {"channel": "web"}, "qty": 3, "ignored": [1, {"x": None}]}


@pytest.mark.parametrize(("value", "reason"), [
    (None, "record has no value (tombstone)"),
    (b"{not json", "undecodable: "),
    (b"[1, 2]", "expected an object, got list"),
    (b'"text"', "expected an object, got str"),
    (j({**GOOD, "user_id": None}), "key field 'user_id' is missing"),
    (j({k: v for k, v in GOOD.items() if k != "user_id"}), "key field 'user_id' is missing"),
    (j({**GOOD, "user_id": ""}), "key field 'user_id' is empty"),
    (j({**GOOD, "user_id": True}), "key field 'user_id' is a bool, expected str or int"),
    (j({**GOOD, "user_id": 1.5}), "key field 'user_id' is a float, expected str or int"),
    (j({**GOOD, "ts": None}), "timestamp field 'ts' is missing"),
    (j({**GOOD, "ts": -5}), "timestamp field 'ts' is negative (-5)"),
    (j({**GOOD, "ts": "2026-01-01"}), "timestamp field 'ts' is a str, expected a number of ms"),
    (j({**GOOD, "amount": "12"}), "field 'amount' is a str, expected a number"),
    (j({**GOOD, "amount": False}), "field 'amount' is a bool, expected a number"),
    (j({**GOOD, "ts": 1e400}), "undecodable: "),
    (j({**GOOD, "ts": 1e23}), "future: event time 1e+23 (ms) is after 9999-12-31T23:59:59.999Z"),
    (j({**GOOD, "ts": 2**63 - 1}), "future: event time 9223372036854775807 (ms) is after"),
    (j({**GOOD, "ts": 2**64}), "future: event time 18446744073709551616 (ms)"),
    (j({**GOOD, "ts": KAFKA_TS + 3_600_002}),
     "future: event time 1800003600002 (2027-01-15T09:00:00.002Z) is 360000"),
    (j({**GOOD, "amount": 2**64}), "field 'amount' is an integer beyond 64 bits"),
    (j({**GOOD, "merchant": -(2**63) - 1}), "field 'merchant' is an integer beyond 64 bits"),
    (j({**GOOD, "merchant": ["m1"]}),
     "field 'merchant' is a list, expected a string, number or boolean (count_distinct"),
    (j({**GOOD, "merchant": {"id": 1}}), "field 'merchant' is a dict, expected a string"),
    (b'{"user_id": "u1", "ts": 1, "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     "undecodable: maximum recursion depth exceeded"),
])
def test_each_malformed_kind_has_its_reason(value: bytes | None, reason: str) -> None:
    # alone, and among good records (the batch path must find it and keep the others)
    for values, pos in (([value], 0), ([j(GOOD), value, j(GOOD)], 1)):
        out = decode(values)
        assert [p for p, _ in out.errors] == [pos]
        assert out.errors[0][1].startswith(reason), out.errors[0][1]
        assert out.positions == [p for p in range(len(values)) if p != pos]
        assert "; " in out.errors[0][1], "a reason says what is wrong; then what to do"


def test_good_records_and_their_fields() -> None:
    values = [j(GOOD), j({**GOOD, "user_id": 42, "ts": 5, "amount": None, "merchant": 7, "qty": 1})]
    out = decode(values)
    assert out.errors == []
    assert out.keys == ["u1", "42"]  # an integer key is its decimal text
    assert out.ts == [GOOD["ts"], 5]
    assert out.fields == {"amount": [2.5, None], "merchant": ["m1", 7]}
    first = out.records[0]
    assert first.get("meta") == {"channel": "web"} and first.get("qty") == 3
    assert first.get("ignored") is None  # not read by the topology: not decoded
    assert first.get("nope", "dflt") == "dflt"
    where = compile_where("meta.channel == 'web' and qty > 1")
    assert [where(r) for r in out.records] == [True, False]


def test_non_finite_numbers_are_malformed_msgpack() -> None:
    enc = msgspec.msgpack.encode
    values = [enc(GOOD), enc({**GOOD, "amount": float("nan")}),
              enc({**GOOD, "ts": float("inf")})]
    out = decode(values, fmt="msgpack")
    assert [(pos, reason.split(";")[0]) for pos, reason in out.errors] == [
        (1, "field 'amount' is nan, expected a finite number"),
        (2, "timestamp field 'ts' is inf, expected a finite number of ms")]
    assert out.keys == ["u1"]


LAST_K = """
version: 1
name: notes
source: {topic: t, key: user_id, timestamp: ts, format: %(fmt)s}
features:
  - {name: notes, agg: last_k, k: 3, field: note, windows: [1h]}
"""


def test_a_stored_value_must_be_plain_json_and_shallow() -> None:
    """first/last/last_k keep any JSON value, nested at most MAX_NESTING deep; msgpack's
    bin, extension and timestamp values have no JSON form (Redis could not serve them)."""
    enc = msgspec.msgpack.encode
    ok = [{"a": [1, {"b": None}]}, "x", 1.5, True, None, [[[]]]]
    deep: Any = 1
    for _ in range(MAX_NESTING):
        deep = [deep]
    bad = [(b"\x00", "field 'note' is a bytes, expected a JSON value"),
           ([1, b"x"], "field 'note' holds a bytes, which is not a JSON value"),
           (msgspec.msgpack.Ext(1, b"x"), "field 'note' is a Ext, expected a JSON value"),
           ({"t": float("nan")}, "field 'note' holds a value that is nan, expected a finite"),
           ([deep], f"field 'note' is nested more than {MAX_NESTING} deep")]
    dec = Decoder(load_topology_text(LAST_K % {"fmt": "msgpack"}))
    values = [enc({"user_id": "u", "ts": 1, "note": v}) for v in [*ok, deep]]
    values += [enc({"user_id": "u", "ts": 1, "note": v}) for v, _ in bad]
    out = dec.decode(values, [KAFKA_TS] * len(values))
    assert out.positions == list(range(len(ok) + 1))
    assert len(out.errors) == len(bad)
    for (_pos, reason), (_value, want) in zip(out.errors, bad, strict=True):
        assert reason.startswith(want), reason


def test_event_time_bounds() -> None:
    """0 .. 9999-12-31T23:59:59.999Z, and at most max_future after the Kafka timestamp; a
    negative Kafka timestamp (none, before Kafka 0.10) cannot bound an event time."""
    dec = Decoder(topology())
    last = 253_402_300_799_999
    out = dec.decode([j({**GOOD, "ts": t}) for t in (0, last, last + 1, last)],
                     [0, last, 2**63 - 1, -1])
    assert out.ts == [0, last]
    assert dec.decode([j({**GOOD, "ts": KAFKA_TS + 3_600_001})], [KAFKA_TS]).errors == [(0, (
        "future: event time 1800003600001 (2027-01-15T09:00:00.001Z) is 3600001 ms (60 minutes) "
        "after the record's Kafka timestamp 1800000000000 (max_future 1h); fix the producer's "
        "clock or raise max_future"))]
    assert out.errors[0][1].startswith(
        "timestamp field 'ts' is 253402300800000, after 9999-12-31T23:59:59.999Z, the latest "
        "event time streamfeat accepts; check source.timestamp_unit (ms) and the producer")
    assert out.errors[1][1].startswith(
        f"future: event time {last} (9999-12-31T23:59:59.999Z) cannot be checked against the "
        "record's Kafka timestamp -1 (none: a message format before Kafka 0.10)")
    seconds = decode([j({**GOOD, "ts": 1e308}), j({**GOOD, "ts": -0.0})], unit="s")
    assert seconds.errors[0][1].startswith("future: event time 1e+308 (s) is after")
    assert seconds.ts == [0]
    iso = decode([j({**GOOD, "ts": t}) for t in (
        "9999-12-31T23:59:59-01:00", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00")],
        unit="iso8601")
    assert [r.split(" (")[0] for _, r in iso.errors] == [
        "future: event time '9999-12-31T23:59:59-01:00'",
        "timestamp field 'ts' is negative", "timestamp field 'ts' is negative"]


def test_kafka_timestamp_as_event_time_is_bounded_too() -> None:
    text = "version: 1\nname: k\nsource: {topic: t, key: user_id}\n" \
        "features: [{name: n, agg: count, windows: [1h]}]\n"
    dec = Decoder(load_topology_text(text))
    out = dec.decode([j(GOOD)] * 4, [-1, 0, 253_402_300_799_999, 2**63 - 1])
    assert out.ts == [0, 253_402_300_799_999]
    assert [r for _, r in out.errors] == [
        "Kafka timestamp -1 is not an event time: negative (none: a message format before "
        "Kafka 0.10); produce records with timestamps, or name an event-time field in "
        "source.timestamp",
        "Kafka timestamp 9223372036854775807 is not an event time: after "
        "9999-12-31T23:59:59.999Z, the latest event time streamfeat accepts; fix the "
        "producer's timestamps, or name an event-time field in source.timestamp"]


def test_timestamp_units() -> None:
    rec = {**GOOD, "ts": 1_700_000_000.25}
    assert decode([j(rec)], unit="s").ts == [1_700_000_000_250]
    rec = {**GOOD, "ts": "2026-01-01T00:00:01Z"}
    assert decode([j(rec)], unit="iso8601").ts == [1_767_225_601_000]
    bad = decode([j(rec), j({**GOOD, "ts": "yesterday"})], unit="iso8601")
    assert bad.errors == [(1, "timestamp field 'ts' is not ISO-8601: 'yesterday'; send e.g. "
                              "2026-01-01T00:00:00Z")]
    assert decode([j({**GOOD, "ts": 1.7e12})]).ts == [1_700_000_000_000]  # float ms


def test_unread_fields_are_skipped_not_checked() -> None:
    """A field no feature reads cannot make a record malformed (documented)."""
    weird = b'{"user_id": "u1", "ts": 5, "huge": 1e400, "amount": 1}'
    assert decode([weird]).keys == ["u1"]
    assert decode([j(GOOD), weird]).keys == ["u1", "u1"]


def test_field_names_that_are_not_identifiers() -> None:
    text = """
version: 1
name: odd
source: {topic: t, key: user-id, timestamp: __class__}
features:
  - {name: n, agg: sum, field: get, windows: [1h]}
"""
    dec = Decoder(load_topology_text(text))
    out = dec.decode([j({"user-id": "a", "__class__": 9, "get": 4})], [0])
    assert (out.keys, out.ts, out.fields) == (["a"], [9], {"get": [4]})
    assert out.records[0].get("get") == 4


# ------------------------------------------------------------------ batch-independence

_good = st.fixed_dictionaries({
    "user_id": st.one_of(st.text(min_size=1, max_size=4), st.integers(0, 10**6)),
    "ts": st.integers(0, 2**50),  # some are after MAX_EVENT_TIME_MS (2**47.85)
    "amount": st.one_of(st.none(), st.integers(-10**6, 10**6),
                        st.floats(allow_nan=False, allow_infinity=False)),
    "merchant": st.one_of(st.none(), st.text(max_size=3), st.integers()),
    "qty": st.integers(0, 5),
    "meta": st.fixed_dictionaries({"channel": st.sampled_from(["web", "app"])}),
}).map(j)
_bad = st.one_of(
    st.none(),
    st.sampled_from([b"{", b"[]", b"1", b'{"user_id": ""}', b'{"user_id": "a"}',
                     b'{"user_id": "a", "ts": -1}', b'{"user_id": "a", "ts": "x"}',
                     b'{"user_id": "a", "ts": 1, "amount": "1"}',
                     b'{"user_id": true, "ts": 1}', b'{"user_id": "a", "ts": 1.5e3}']),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(_good, _good, _bad),
                          st.sampled_from([-1, 0, 2**47, 2**50, 2**63 - 1])), max_size=30))
def test_outcome_of_a_record_does_not_depend_on_its_batch(
        pairs: list[tuple[bytes | None, int]]) -> None:
    dec = Decoder(topology())
    values = [v for v, _ in pairs]
    kafka_ts = [t for _, t in pairs]
    whole = dec.decode(values, kafka_ts)
    alone = [dec.decode([v], [t]) for v, t in zip(values, kafka_ts, strict=True)]
    assert whole.errors == [(pos, a.errors[0][1]) for pos, a in enumerate(alone) if a.errors]
    assert whole.positions == [pos for pos, a in enumerate(alone) if not a.errors]
    assert whole.keys == [k for a in alone for k in a.keys]
    assert whole.ts == [t for a in alone for t in a.ts]
    assert whole.fields == {name: [v for a in alone for v in a.fields[name]]
                            for name in ("amount", "merchant")}
    got = [r.to_dict() for r in whole.records]
    assert got == [r.to_dict() for a in alone for r in a.records]
