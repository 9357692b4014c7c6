"""Stored value encoding and the ``_v`` version text (pure; no Redis)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamfeat.errors import SinkError
from streamfeat.sinks import decode_value, encode_value, parse_version, version
from streamfeat.sinks.values import VERSION_LENGTH, encode_column

generations = st.integers(0, 10**10 - 1)
partitions = st.integers(0, 10**6 - 1)
offsets = st.integers(0, 2**63 - 1)
versions = st.tuples(generations, partitions, offsets)


def test_version_example() -> None:
    assert version(1, 3, 12345) == "0000000001.000003.0000000000000012345"
    assert len(version(0, 0, 0)) == VERSION_LENGTH


@given(versions, versions)
def test_version_text_order_is_tuple_order(
    a: tuple[int, int, int], b: tuple[int, int, int]
) -> None:
    ta, tb = version(*a), version(*b)
    assert (ta < tb) == (a < b)
    assert (ta.encode() < tb.encode()) == (a < b)
    assert (ta == tb) == (a == b)


@given(versions)
def test_parse_version_inverts_version(v: tuple[int, int, int]) -> None:
    assert parse_version(version(*v)) == v
    assert parse_version(version(*v).encode()) == v


@pytest.mark.parametrize(
    "parts", [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (10**10, 0, 0), (0, 10**6, 0), (0, 0, 10**19)]
)
def test_version_rejects_out_of_range(parts: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="outside"):
        version(*parts)


def test_version_holds_int64_offsets() -> None:
    assert parse_version(version(0, 0, 2**63 - 1)) == (0, 0, 2**63 - 1)


@pytest.mark.parametrize("text", ["1.2.3", "0000000001.000003.12345", ""])
def test_parse_version_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a streamfeat version"):
        parse_version(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12, "12"),
        (-3, "-3"),
        (0, "0"),
        (2**70, str(2**70)),
        (12.0, "12"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (1e-05, "0.00001"),
        (1.5e-7, "1.5e-7"),
        (2.0**53, "9007199254740992.0"),
        (1e20, "1e20"),
        (True, "true"),
        ("abc", '"abc"'),
        ("12", '"12"'),
        ([1, 2.5, "x"], '[1,2.5,"x"]'),
        ((1.0, 2.0), "[1,2]"),
        ({"a": 1, "b": [0.5]}, '{"a":1,"b":[0.5]}'),
        (np.float64(1.5), "1.5"),
        (np.float32(2.0), "2"),
        (np.int64(7), "7"),
        ([np.int64(1), np.float64(0.25)], "[1,0.25]"),
    ],
)
def test_encode_examples(value: Any, text: str) -> None:
    assert encode_value(value) == text


@pytest.mark.parametrize(
    "value",
    [None, math.nan, math.inf, -math.inf, np.float64("nan"), [1.0, math.nan], {"a": math.inf}],
)
def test_absent_values(value: Any) -> None:
    assert encode_value(value) is None


def test_unencodable_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="object"):
        encode_value(object())


@given(st.integers())
def test_ints_round_trip(v: int) -> None:
    text = encode_value(v)
    assert text is not None
    out = decode_value(text)
    assert out == v
    assert type(out) is int
    assert decode_value(text.encode()) == v


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip(v: float) -> None:
    text = encode_value(v)
    assert text is not None
    out = decode_value(text)
    assert out == v
    assert decode_value(text.encode()) == v
    if v.is_integer() and abs(v) < 2**53:
        assert type(out) is int
    else:
        assert type(out) is float


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_text_is_shortest_round_trip(v: float) -> None:
    text = encode_value(v)
    assert text is not None
    assert float(text) == v
    if not (v.is_integer() and abs(v) < 2**53):
        # the digits of Python's repr (shortest round trip), exponent style aside
        assert _digits(text) == _digits(repr(v)), (text, repr(v))


def _digits(text: str) -> str:
    mantissa = text.lower().split("e")[0]
    return mantissa.replace("-", "").replace(".", "").strip("0")


json_leaves = (
    st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.booleans()
    | st.none()
)


@given(st.lists(json_leaves, max_size=10))
def test_lists_round_trip(v: list[Any]) -> None:
    text = encode_value(v)
    assert text is not None
    assert decode_value(text) == v


@given(st.text(max_size=20))
def test_strings_round_trip_and_are_never_numbers(v: str) -> None:
    text = encode_value(v)
    assert text is not None
    assert decode_value(text) == v


@pytest.mark.parametrize("text", ["abc", b"\xff\xfe", "{oops", ""])
def test_decode_rejects_foreign_text(text: str | bytes) -> None:
    with pytest.raises(SinkError, match="not streamfeat text"):
        decode_value(text)


@given(st.lists(st.one_of(st.floats(), st.integers(-(2**70), 2**70)), max_size=40)
       | st.lists(st.floats(), max_size=40) | st.lists(st.integers(), max_size=40)
       | st.lists(json_leaves | st.lists(json_leaves, max_size=3), max_size=10))
def test_encode_column_is_encode_value_of_each(values: list[Any]) -> None:
    assert encode_column(values) == [encode_value(v) for v in values]
