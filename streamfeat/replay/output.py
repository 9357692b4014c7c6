"""Feature values as Arrow columns and Parquet files: what the offline commands write.

A replay's final values and a training set hold the same features, so they get the same
column types, decided by the aggregation rather than by the values of one run (an empty
window must not turn a float column into nulls of another type). Files are written via a
temporary file and a rename, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streamfeat.topology import AggKind, TopologyDef

__all__ = [
    "arrow_columns", "combined_kind", "typed_array", "value_kind", "write_parquet_atomically",
]


def _json_text(v: Any) -> str | None:
    if v is None:
        return None
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _column(agg: AggKind, values: list[Any]) -> pa.Array:
    if agg in (AggKind.COUNT, AggKind.COUNT_DISTINCT):
        return pa.array(values, pa.int64())
    if agg.numeric:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if agg in (AggKind.LAST_K, AggKind.TOP_K):
        return pa.array([_json_text(v) for v in values], pa.string())
    return typed_array(value_kind(values) or "string", values)


def value_kind(values: list[Any]) -> str | None:
    """How a ``first``/``last`` column of these values is typed: ``string`` (all text),
    ``int`` (all integers), ``float`` (numbers, some not integers), ``json`` (anything else),
    or ``None`` when every value is ``None`` (typed as text). :func:`combined_kind` gives the
    kind of values split into parts from the kinds of the parts."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(type(v) is str for v in present):
        return "string"
    if all(type(v) in (int, float) for v in present):
        return "int" if all(type(v) is int for v in present) else "float"
    return "json"


def combined_kind(kinds: Iterable[str | None]) -> str:
    """The :func:`value_kind` of the concatenation of parts of these kinds (``string`` when
    every part is empty)."""
    found = {k for k in kinds if k is not None}
    if not found:
        return "string"
    if len(found) == 1:
        return found.pop()
    if found <= {"int", "float"}:
        return "float"
    return "json"


def typed_array(kind: str, values: list[Any]) -> pa.Array:
    """A ``first``/``last`` column of ``kind`` (:func:`value_kind`): the field's own type when
    it is uniform (string, int64, float64), JSON text otherwise."""
    if kind == "string":
        return pa.array(values, pa.string())
    if kind == "int":
        return pa.array(values, pa.int64())
    if kind == "float":
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([_json_text(v) for v in values], pa.string())


def arrow_columns(
    topology: TopologyDef, fields: Sequence[str], columns: Mapping[str, list[Any]]
) -> dict[str, pa.Array]:
    """Feature columns as Arrow arrays with a type decided by the aggregation.

    counts: int64; numeric aggregations: float64; ``last_k``/``top_k``: JSON text;
    ``first``/``last``: the field's type when uniform (string, int64, float64), else JSON.
    """
    agg_of = {f.redis_field(w): f.agg for f in topology.features for w in f.windows}
    return {name: _column(agg_of[name], columns[name]) for name in fields}


def write_parquet_atomically(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` via a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
