"""Snapshots with late, malformed and out-of-order records, written as the worker writes
them, and the comparison of a local engine's output with a Spark engine's."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa

from streamfeat.generator import OrderEvents
from streamfeat.records import RawRecord
from streamfeat.snapshot import SnapshotWriter

ROOT = Path(__file__).resolve().parents[2]
STREAM: dict[str, Any] = {"entities": 50, "events_per_second": 0.5, "disorder_ms": 120_000,
                          "late_fraction": 0.02, "late_ms": 3_600_000,
                          "malformed_fraction": 0.01}


def generate(n: int, partitions: int, seed: int) -> dict[int, list[RawRecord]]:
    """``n`` generated order events over ``partitions`` (by crc32 of the key, as the tests of
    the local engine do); event times are relative to now: generate once, write anywhere."""
    parts: dict[int, list[RawRecord]] = {p: [] for p in range(partitions)}
    for ev in OrderEvents(seed=seed, **STREAM).events(n):
        p = zlib.crc32(ev.key) % partitions
        parts[p].append(RawRecord(p, len(parts[p]), ev.ts, ev.key, ev.value))
    return parts


def write(root: Path | str, topic: str, parts: dict[int, list[RawRecord]],
          file_rows: int = 400) -> None:
    """``parts`` as snapshot files of ``file_rows`` records (a directory or a URL)."""
    for p, records in parts.items():
        writer = SnapshotWriter(root, topic, p)
        for i in range(0, len(records), file_rows):
            writer.append(records[i : i + file_rows])
            writer.flush()
        writer.close()


def write_snapshots(root: Path, topic: str, n: int, partitions: int, seed: int,
                    file_rows: int = 400) -> dict[int, list[RawRecord]]:
    """:func:`generate` then :func:`write`."""
    parts = generate(n, partitions, seed)
    write(root, topic, parts, file_rows)
    return parts


def sorted_table(table: pa.Table, keys: list[str]) -> pa.Table:
    """``table`` sorted by ``keys``, without its schema metadata."""
    return table.sort_by([(k, "ascending") for k in keys]).replace_schema_metadata(None)


def assert_same(local: pa.Table, spark: pa.Table, keys: list[str]) -> None:
    """Equal schemas (types, names, order) and equal values (NaN and None included) once
    sorted by ``keys``."""
    a, b = sorted_table(local, keys), sorted_table(spark, keys)
    assert a.schema == b.schema, f"{a.schema}\n!=\n{b.schema}"
    assert a.num_rows == b.num_rows
    bad = [n for n in a.column_names if not a.column(n).equals(b.column(n))]
    assert not bad, f"columns differ: {bad}"
