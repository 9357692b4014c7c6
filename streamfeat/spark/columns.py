"""Feature columns across Spark tasks, typed exactly as the local engine types them.

The local engine decides a ``first``/``last`` column's type from all of its values (the
field's type when uniform, JSON text otherwise: :func:`streamfeat.replay.output.value_kind`).
A Spark task sees only its part, so each task ships such values pickled (the values as
Python made them: nothing lost) together with the kind of its part; once every task is
done the driver combines the kinds (:func:`streamfeat.replay.output.combined_kind`) and
a second map turns the pickles into the column the local engine writes. Every other
aggregation has a type known in advance (:func:`streamfeat.replay.output.arrow_columns`).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql.types import (
    BinaryType,
    DataType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from streamfeat.replay.output import arrow_columns, typed_array, value_kind
from streamfeat.topology import AggKind, TopologyDef

__all__ = [
    "KINDS_FIELD",
    "arrow_type",
    "decode_kinds",
    "encode_kinds",
    "feature_arrays",
    "final_arrow_type",
    "pending_fields",
    "spark_type",
    "typed_batches",
]

KINDS_FIELD = "_sf_kinds"
"""A task's extra row: pickled ``{field: kind}`` of its pending columns (null elsewhere)."""

_PENDING = (AggKind.FIRST, AggKind.LAST)


def _aggs(topology: TopologyDef) -> dict[str, AggKind]:
    return {f.redis_field(w): f.agg for f in topology.features for w in f.windows}


def pending_fields(topology: TopologyDef, fields: Sequence[str]) -> list[str]:
    """The fields whose column type depends on every task's values (``first``, ``last``)."""
    aggs = _aggs(topology)
    return [f for f in fields if aggs[f] in _PENDING]


def arrow_type(topology: TopologyDef, name: str) -> pa.DataType:
    """The type a task ships ``name`` as: pickles (binary) for a pending field."""
    agg = _aggs(topology)[name]
    if agg in _PENDING:
        return pa.binary()
    if agg in (AggKind.COUNT, AggKind.COUNT_DISTINCT):
        return pa.int64()
    if agg.numeric:
        return pa.float64()
    return pa.string()


def final_arrow_type(topology: TopologyDef, name: str, kinds: Mapping[str, str]) -> pa.DataType:
    """The type of ``name`` in the output, once the pending kinds are known."""
    if name in kinds:
        return typed_array(kinds[name], []).type
    return arrow_type(topology, name)


_SPARK: dict[pa.DataType, DataType] = {
    pa.int64(): LongType(), pa.float64(): DoubleType(), pa.string(): StringType(),
    pa.binary(): BinaryType(),
}


def spark_type(t: pa.DataType) -> DataType:
    """The Spark type of a feature column's Arrow type."""
    return _SPARK[t]


def feature_arrays(
    topology: TopologyDef, fields: Sequence[str], columns: Mapping[str, list[Any]]
) -> tuple[dict[str, pa.Array], dict[str, str | None]]:
    """A task's feature columns (pending ones pickled) and the kind of each pending one."""
    pending = set(pending_fields(topology, fields))
    typed = arrow_columns(topology, [f for f in fields if f not in pending], columns)
    kinds: dict[str, str | None] = {}
    out: dict[str, pa.Array] = {}
    for name in fields:
        if name in pending:
            values = columns[name]
            kinds[name] = value_kind(values)
            out[name] = pa.array([None if v is None else pickle.dumps(v) for v in values],
                                 pa.binary())
        else:
            out[name] = typed[name]
    return out, kinds


def encode_kinds(kinds: Mapping[str, str | None]) -> bytes:
    return pickle.dumps(dict(kinds))


def decode_kinds(data: bytes) -> dict[str, str | None]:
    # our own tasks' output, never user input
    out: dict[str, str | None] = pickle.loads(data)  # noqa: S301
    return out


def typed_batches(
    batches: Iterator[pa.RecordBatch], kinds: Mapping[str, str], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """``batches`` with their pending columns unpickled and typed as ``kinds`` says."""
    for batch in batches:
        arrays = []
        for name in schema.names:
            col = batch.column(name)
            if name in kinds:
                # our own tasks' pickles, never user input
                values = [None if b is None else pickle.loads(b)  # noqa: S301
                          for b in col.to_pylist()]
                col = typed_array(kinds[name], values)
            arrays.append(col)
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def struct(fields: Sequence[tuple[str, DataType]]) -> StructType:
    """A Spark schema of nullable fields."""
    return StructType([StructField(n, t, True) for n, t in fields])
