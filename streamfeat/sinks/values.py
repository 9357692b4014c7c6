"""Text encodings of the online store (contract section 4).

Feature values are stored as text any language can read:

- ``int`` -> decimal text (``"12"``, ``"-3"``), any size.
- ``float`` -> the shortest text that reads back as the same double
  as JSON writes it (``"0.1"``, ``"0.00001"``, ``"1.5e300"``; msgspec's encoder, the
  same digits as Python's ``repr`` and 3x faster); an integral float
  whose magnitude is below 2**53 is written as an integer (``12.0`` -> ``"12"``),
  so a count held as a float reads the same as one held as an int.
- ``NaN`` and ``±inf`` have no portable text form: they are written as *absent*
  (the field is deleted), exactly like an aggregation over no events. The same
  holds for a list or dict that contains one. This never stalls a worker on a
  value that retrying cannot fix.
- ``bool`` -> JSON ``true``/``false``; ``str`` -> a JSON string (``"\\"abc\\""``),
  so a string value can never be mistaken for a number.
- ``list``/``tuple``/``dict`` (``last_k``, ``top_k``, ...) -> compact JSON
  (``[1,2.5,"a"]``), with floats inside normalised as above.
- ``None`` -> absent.

:func:`decode_value` is the inverse: it returns an ``int`` for integral text,
a ``float`` for other numbers, and the decoded JSON otherwise. A round trip
therefore preserves the value numerically (``12.0`` comes back as ``12``).

The write version ``_v`` is :func:`version` text, fixed-width and zero-padded
so that byte-wise text order is ``(generation, partition, offset)`` order.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from streamfeat.errors import SinkError

__all__ = [
    "GENERATION_DIGITS",
    "OFFSET_DIGITS",
    "PARTITION_DIGITS",
    "VERSION_LENGTH",
    "decode_value",
    "encode_column",
    "encode_value",
    "is_version",
    "parse_version",
    "version",
]

#: ``_v`` widths: generation up to 9 999 999 999 (more than any int32/uint32),
#: partition up to 999 999 (Kafka allows far fewer per topic in practice),
#: offset up to 19 digits, which holds every non-negative int64 (Kafka offsets are int64).
GENERATION_DIGITS = 10
PARTITION_DIGITS = 6
OFFSET_DIGITS = 19
VERSION_LENGTH = GENERATION_DIGITS + PARTITION_DIGITS + OFFSET_DIGITS + 2

_VERSION_RE = re.compile(
    rf"\A(\d{{{GENERATION_DIGITS}}})\.(\d{{{PARTITION_DIGITS}}})\.(\d{{{OFFSET_DIGITS}}})\Z"
)
_MAX_EXACT = 2**53
_INFINITIES = (math.inf, -math.inf)
_decode_json = msgspec.json.Decoder().decode
_json = msgspec.json.Encoder().encode


def version(generation: int, partition: int, offset: int) -> str:
    """The ``_v`` text of a write: ``GGGGGGGGGG.PPPPPP.OOOOOOOOOOOOOOOOOOO``.

    ``version(1, 3, 12345) == "0000000001.000003.0000000000000012345"``.
    Raises ``ValueError`` when a part is negative or too wide for its field.
    """
    for name, part, digits in (
        ("generation", generation, GENERATION_DIGITS),
        ("partition", partition, PARTITION_DIGITS),
        ("offset", offset, OFFSET_DIGITS),
    ):
        if not 0 <= part < 10**digits:
            raise ValueError(f"version {name} {part} is outside 0..{10**digits - 1}")
    return (
        f"{generation:0{GENERATION_DIGITS}d}.{partition:0{PARTITION_DIGITS}d}"
        f".{offset:0{OFFSET_DIGITS}d}"
    )


def parse_version(text: str | bytes) -> tuple[int, int, int]:
    """Inverse of :func:`version`: ``(generation, partition, offset)``.

    Raises ``ValueError`` for text that is not a version.
    """
    s = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    m = _VERSION_RE.match(s)
    if m is None:
        raise ValueError(f"not a streamfeat version: {s!r} (expected {version(1, 2, 3)!r} form)")
    return int(m[1]), int(m[2]), int(m[3])


def is_version(text: str) -> bool:
    """Whether ``text`` is exactly in :func:`version` form."""
    return len(text) == VERSION_LENGTH and _VERSION_RE.match(text) is not None


def _float_text(v: float) -> str | None:
    if not math.isfinite(v):
        return None
    if v.is_integer() and -_MAX_EXACT < v < _MAX_EXACT:
        return str(int(v))
    return _json(v).decode()


class _NonFinite(Exception):
    """A NaN or infinity inside a list or dict: the whole value is absent."""


def _jsonable(v: Any) -> Any:
    """A copy of ``v`` that :mod:`json` writes canonically (floats normalised)."""
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise _NonFinite
        if v.is_integer() and -_MAX_EXACT < v < _MAX_EXACT:
            return int(v)
        return float(v)
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, numbers.Integral):  # numpy integers
        return int(v)
    if isinstance(v, numbers.Real):  # numpy floats that are not float subclasses
        return _jsonable(float(v))
    raise TypeError(f"cannot store a value of type {type(v).__name__} in Redis: {v!r}")


def encode_value(v: Any) -> str | None:
    """The stored text of a feature value, or ``None`` for "absent" (delete the field).

    Raises ``TypeError`` for a type that has no encoding (a bug in the caller,
    not a fault of the store: retrying would not help).
    """
    t = type(v)
    if t is float:  # the common cases first, by exact type
        if v != v or v in _INFINITIES:
            return None
        if v.is_integer() and -_MAX_EXACT < v < _MAX_EXACT:
            return str(int(v))
        return _json(v).decode()
    if t is int:
        return str(v)
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        return _float_text(float(v))
    if isinstance(v, str):
        return _json(v).decode()
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        return _float_text(float(v))
    try:
        doc = _jsonable(v)
    except _NonFinite:
        return None
    return _json(doc).decode()


def encode_column(values: Sequence[Any]) -> list[str | None]:
    """:func:`encode_value` of each value (the same texts), faster for a column of one type.

    Columns of ints or floats (what count/sum/mean/... give) are encoded without a Python
    call per value (``str`` mapped in C, or one JSON encoding of the column split at its
    commas), and the few values that need a rule
    (integral floats, NaN, infinities) found with numpy.
    """
    types = set(map(type, values))
    if types == {int}:
        return list(map(str, values))
    if types != {float}:
        return list(map(encode_value, values))
    out: list[str | None] = []
    if values:
        out.extend(_json(values)[1:-1].decode().split(","))
    x = np.fromiter(values, dtype=np.float64, count=len(values))
    with np.errstate(invalid="ignore"):
        integral = (np.floor(x) == x) & (np.abs(x) < _MAX_EXACT)
    for i in np.flatnonzero(integral | ~np.isfinite(x)).tolist():
        out[i] = encode_value(values[i])
    return out


def decode_value(s: str | bytes) -> Any:
    """The value that :func:`encode_value` wrote as ``s``: an int, a float or JSON.

    Every stored text is a JSON document (numbers are JSON numbers), so one
    fast JSON parse decodes all of them exactly: integral text gives an ``int``
    of any size, other numbers the ``float`` they were written from.
    Raises :class:`~streamfeat.errors.SinkError` for text streamfeat did not write.
    """
    try:
        return _decode_json(s)
    except msgspec.DecodeError:
        raise SinkError(
            f"stored value {s!r} is not streamfeat text (decimal or JSON); "
            "was the key written by another tool? Delete it or let the worker rewrite it."
        ) from None
