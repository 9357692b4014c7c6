"""The spine of a training set: the (entity, time) rows a model is trained on.

Read from Parquet or CSV as the user keeps labels, and reduced to two columns the
point-in-time join needs: entity ids as text (the stream's keys are text) and times as
epoch milliseconds (the stream's event times), whatever types the file used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from streamfeat.errors import ConfigError
from streamfeat.topology import TopologyDef

__all__ = ["entity_ids", "read_spine", "spine_columns", "timestamps_ms"]


def spine_columns(topology: TopologyDef, fields: Sequence[str], columns: Sequence[str],
                  entity_column: str | None, timestamp_column: str | None) -> tuple[str, str]:
    """The spine's entity and time columns (default: the topology's source key and event
    time field), once no feature's name is taken by one of the spine's ``columns``."""
    clash = [f for f in fields if f in columns]
    if clash:
        raise ConfigError(
            f"spine already has columns named like features: {', '.join(clash)}; rename them"
        )
    tcol = timestamp_column or topology.source.timestamp
    if tcol is None:
        raise ConfigError(
            f"topology {topology.name!r} uses the Kafka timestamp (no source.timestamp "
            "field); pass --timestamp-column"
        )
    return entity_column or topology.source.key, tcol


def read_spine(path: str | os.PathLike[str]) -> pa.Table:
    """A spine file: Parquet (``.parquet``, ``.pq``) or CSV (``.csv``, read with pyarrow)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise ConfigError(f"spine {str(p)!r} does not exist; pass --spine a Parquet or CSV file")
    if suffix in (".parquet", ".pq"):
        return pq.read_table(p)
    if suffix == ".csv":
        return pacsv.read_csv(p)
    raise ConfigError(f"spine {str(p)!r}: use a .parquet or .csv file")


def entity_ids(table: pa.Table, column: str) -> list[str | None]:
    """The spine's entity column as text (``None`` where empty)."""
    if column not in table.column_names:
        raise ConfigError(
            f"spine has no entity column {column!r} (columns: {', '.join(table.column_names)}); "
            "pass --entity-column"
        )
    return [None if v is None else str(v) for v in table.column(column).to_pylist()]


def timestamps_ms(table: pa.Table, column: str) -> list[int | None]:
    """The spine's time column as epoch milliseconds: integers, dates or timestamps."""
    if column not in table.column_names:
        raise ConfigError(
            f"spine has no timestamp column {column!r} (columns: "
            f"{', '.join(table.column_names)}); pass --timestamp-column"
        )
    col = table.column(column)
    t = col.type
    if pa.types.is_integer(t):
        return [None if v is None else int(v) for v in col.to_pylist()]
    if pa.types.is_date(t):
        col = pc.cast(col, pa.timestamp("ms"))
        t = col.type
    if pa.types.is_timestamp(t):
        ms = pc.cast(col, pa.timestamp("ms", tz=t.tz), safe=False)
        return [None if v is None else int(v) for v in pc.cast(ms, pa.int64()).to_pylist()]
    raise ConfigError(
        f"spine column {column!r} is {t}; it must hold epoch milliseconds (integers) or "
        "timestamps"
    )
