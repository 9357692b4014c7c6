"""Snapshots of order events at known times, for the tests of tests/cli."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from pathlib import Path

from streamfeat.generator import OrderEvents
from streamfeat.records import RawRecord
from streamfeat.snapshot import SnapshotWriter

START_MS = int(datetime(2026, 11, 10, 6, 0, tzinfo=UTC).timestamp() * 1000)
"""The first event's time; 2 events a second: 2000 events span about 17 minutes."""


def write_orders(root: Path, n: int = 2000, partitions: int = 2,
                 topic: str = "orders") -> dict[int, list[RawRecord]]:
    """``n`` order events (late ones included), their Kafka timestamp their event time,
    snapshotted in files of 300 records per partition; the records by partition."""
    parts: dict[int, list[RawRecord]] = {p: [] for p in range(partitions)}
    events = OrderEvents(entities=40, start_ms=START_MS, events_per_second=2.0,
                         disorder_ms=20_000, late_fraction=0.0, seed=11)
    for ev in events.events(n):
        p = zlib.crc32(ev.key) % partitions
        parts[p].append(RawRecord(p, len(parts[p]), ev.ts, ev.key, ev.value))
    for p, records in parts.items():
        writer = SnapshotWriter(root, topic, p)
        for i in range(0, len(records), 300):
            writer.append(records[i : i + 300])
            writer.flush()
        writer.close()
    return parts
