"""Hypothesis strategies for hostile streams: records no producer should send, and do.

Used by ``tests/records/test_hostile_records.py`` (decoder and pipeline) and
``tests/runtime/test_bad_records.py`` (the worker core), which imports it as
``records.hostile`` (``tests/`` is on ``sys.path``; the name is this directory's, not
:mod:`streamfeat.records`).

A stream is a list of :class:`Raw` records (Kafka key, value bytes, Kafka timestamp) for
one of the :data:`TOPOLOGIES`. Values are arbitrary bytes, arbitrary JSON (nested, huge
ints, ``NaN`` as text, ...), and records shaped like the topology's events whose fields
take boundary and wrong-typed values; about half are good events, so that streams also
move stream time, hit the late rule and fill windows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import strategies as st

from streamfeat.topology import TopologyDef, load_topology_text

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
INT64_MAX = 2**63 - 1
MAX_EVENT_TIME_MS = 253_402_300_799_999

BOUNDARY_NUMBERS: list[Any] = [
    0, -1, 1, 2**31, 2**53, 2**53 + 1, INT64_MAX, 2**63, 2**64, -(2**63), 10**30,
    MAX_EVENT_TIME_MS, MAX_EVENT_TIME_MS + 1, 4_102_444_800_000,  # 2100-01-01
    1e23, 1e308, -1e308, 5e-324, -0.0, 0.5, 1.5e3, float("nan"), float("inf"), float("-inf"),
]

_FEATURES = """\
features:
  - {name: orders, agg: count, windows: [5m, lifetime, {size: 1h, type: tumbling, emit: final}]}
  - {name: amount, agg: sum, field: amount, windows: [1h, {size: 10m, hop: exact}]}
  - {name: biggest, agg: max, field: amount, windows: [{type: session, gap: 5m}]}
  - {name: p90, agg: percentile, q: 0.9, field: amount, windows: [1h]}
  - {name: merchants, agg: count_distinct, field: merchant, windows: [1d]}
  - {name: top, agg: top_k, k: 2, field: merchant, windows: [lifetime]}
  - {name: recent, agg: last_k, k: 2, field: note, windows: [{size: 1h, step: 30m, type: hopping}]}
  - {name: first_note, agg: first, field: note, windows: [1d]}
  - {name: done, agg: count, where: "status == 'completed' and amount > 1", windows: [1h]}
"""


def _topology(name: str, source: str) -> TopologyDef:
    text = f"version: 1\nname: {name}\nsource: {source}\nlateness: 10s\n{_FEATURES}"
    return load_topology_text(text, f"{name}.yaml")


TOPOLOGIES: dict[str, TopologyDef] = {
    "ms": _topology("ms", "{topic: t, key: user_id, timestamp: ts}"),
    "s": _topology("s", "{topic: t, key: user_id, timestamp: ts, timestamp_unit: s}"),
    "iso": _topology("iso", "{topic: t, key: user_id, timestamp: ts, timestamp_unit: iso8601}"),
    "kafka": _topology("kafka", "{topic: t, key: user_id}"),  # event time = Kafka timestamp
    "msgpack": _topology("msgpack", "{topic: t, key: user_id, timestamp: ts, format: msgpack}"),
}


@dataclass(frozen=True)
class Raw:
    key: bytes | None
    value: bytes | None
    kafka_ts: int


# ------------------------------------------------------------------ values

json_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
        st.sampled_from(BOUNDARY_NUMBERS),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8,
)
"""Any JSON-like value (floats may be NaN or infinite: JSON text gets ``NaN``)."""

plain_json: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=2),
                            st.dictionaries(st.text(max_size=3), inner, max_size=2)),
    max_leaves=4,
)
"""A JSON value that is fine to aggregate with ``first``/``last``/``last_k``."""

weird = st.one_of(st.sampled_from(BOUNDARY_NUMBERS), json_values)
"""A field value of any type, boundary numbers first."""


def _event_time(draw: st.DrawFn, unit: str, kafka_ts: int, good: bool) -> Any:
    """An event time near the record's Kafka timestamp (inside and around max_future, or
    minutes to hours late), or, for a bad record, often anything at all."""
    if not good and draw(st.booleans()):
        return draw(weird)
    ms = max(0, kafka_ts + draw(st.sampled_from(
        [0, -5_000, 0, -60_000, -3 * HOUR, HOUR, HOUR + 1, 2 * HOUR, -HOUR // 2])))
    ms = min(ms, MAX_EVENT_TIME_MS)
    if unit == "s":
        return ms / 1000
    if unit == "iso8601":
        return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).isoformat()
    return ms


_users = st.sampled_from(["u1", "u2", "u3", 7, "é"])


@st.composite
def event_shaped(draw: st.DrawFn, topology: TopologyDef, kafka_ts: int) -> dict[str, Any]:
    """A dict shaped like the topology's events; each field good, odd or missing."""
    good = draw(st.sampled_from([True, True, False]))
    out: dict[str, Any] = {}
    fields = {
        "user_id": _users if good else st.one_of(_users, weird),
        "amount": st.one_of(st.integers(-5, 100), st.floats(-1e3, 1e3)) if good else weird,
        "merchant": st.sampled_from(["m1", "m2", 3]) if good else weird,
        "status": st.sampled_from(["completed", "cancelled"]) if good else weird,
        "note": plain_json if good else weird,
    }
    for name, strategy in fields.items():
        if good or draw(st.integers(0, 5)):
            out[name] = draw(strategy)
    if topology.source.timestamp is not None and (good or draw(st.integers(0, 5))):
        out["ts"] = _event_time(draw, topology.source.timestamp_unit, kafka_ts, good)
    if not good and draw(st.integers(0, 3)) == 0:
        out[draw(st.text(max_size=3))] = draw(json_values)  # an unread field
    return out


def _encode(topology: TopologyDef, obj: Any) -> bytes:
    if topology.source.format == "msgpack":
        try:
            return msgspec.msgpack.encode(obj)
        except OverflowError:  # an int beyond 64 bits: send its JSON text, as bytes
            pass
    return json.dumps(obj).encode()  # NaN and Infinity as JSON text: invalid JSON


_RAW_TEXT = [
    b"", b"{", b"null", b"[]", b"{}", b'"text"', b"NaN", b"\xff\xfe", b'{"user_id": "u1"}',
    b'{"user_id": "u1", "ts": 1e400}', b'{"user_id": "u1", "ts": NaN}',
    b'{"user_id": "u1", "ts": 1' + b"0" * 400 + b"}",
    b'{"user_id": "u1", "ts": 1' + b"0" * 5000 + b"}",
    b'{"user_id": "u1", "user_id": 2, "ts": 0}', b'{"user_id": "\\ud800", "ts": 0}',
    b'{"user_id": "u1", "ts": 0, "merchant": ' + b"[" * 40 + b"]" * 40 + b"}",
    b'{"user_id": "u1", "ts": 0, "note": ' + b"[" * 40 + b"]" * 40 + b"}",
    b'{"user_id": "u1", "ts": 0, "skipped": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"user_id": "u1", "ts": 0, "amount": 18446744073709551616}',
    b'{"user_id": "u1", "ts": 0, "merchant": -9223372036854775809}',
]


@st.composite
def records(draw: st.DrawFn, topology: TopologyDef, kafka_ts: int) -> tuple[bytes | None,
                                                                             bytes | None]:
    """One record's (Kafka key, value)."""
    kind = draw(st.sampled_from(["event"] * 8 + ["raw", "json"]))
    if kind == "raw":
        value: bytes | None = draw(st.one_of(st.none(), st.binary(max_size=24),
                                             st.sampled_from(_RAW_TEXT)))
        obj: Any = None
    elif kind == "json":
        obj = draw(json_values)
        value = _encode(topology, obj)
    else:
        obj = draw(event_shaped(topology, kafka_ts))
        value = _encode(topology, obj)
    user = obj.get("user_id") if isinstance(obj, dict) else None
    entity = (str(user).encode() if isinstance(user, str | int) and not isinstance(user, bool)
              else None)
    key = draw(st.one_of(st.none(), st.binary(max_size=4))) if entity is None else draw(
        st.sampled_from([entity, entity, entity, None, b"other"]))
    return key, value


kafka_timestamps = st.one_of(
    st.integers(T0, T0 + 2 * HOUR),  # realistic: now-ish, in any order
    st.sampled_from([0, 1, -1, INT64_MAX, MAX_EVENT_TIME_MS, MAX_EVENT_TIME_MS + 1, 2**62]),
    st.integers(0, INT64_MAX),
)


@st.composite
def streams(draw: st.DrawFn, topology: TopologyDef, max_size: int = 30) -> list[Raw]:
    """A partition's records in offset order: Kafka timestamps mostly realistic and rising,
    one in eight anything from 0 to 2**63-1 (or -1)."""
    out = []
    clock = T0
    for _ in range(draw(st.integers(1, max_size))):
        if draw(st.sampled_from([True] * 7 + [False])):
            clock += draw(st.integers(0, 120_000))
            kafka_ts = clock
        else:
            kafka_ts = draw(kafka_timestamps)
        key, value = draw(records(topology, kafka_ts))
        out.append(Raw(key, value, kafka_ts))
    return out

