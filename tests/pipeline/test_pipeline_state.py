"""Entities whose state has expired leave RocksDB and hold no row, across a restart too."""

from __future__ import annotations

import json
from pathlib import Path

from streamfeat.pipeline import PartitionPipeline
from streamfeat.records import RecordBatch
from streamfeat.state import PartitionStore
from streamfeat.topology import load_topology

TOPOLOGY = """\
version: 1
name: churn
owner: tests@example.com
source: {topic: churn, format: json, key: user_id, timestamp: ts, timestamp_unit: ms}
entity: user
lateness: 0s
features:
  - {name: orders, agg: count, windows: [5m]}
  - {name: amount, agg: sum, field: amount, windows: [{size: 10m, hop: exact}]}
"""
HOUR = 3_600_000


def batch(first_offset: int, events: list[tuple[str, int]]) -> RecordBatch:
    values = [json.dumps({"user_id": u, "ts": t, "amount": 2.5}).encode() for u, t in events]
    n = len(events)
    return RecordBatch(0, list(range(first_offset, first_offset + n)), [t for _u, t in events],
                       [u.encode() for u, _t in events], values)


def stored(path: Path) -> list[str]:
    store = PartitionStore(path, "churn", "churn", 0)
    try:
        return sorted(entity for entity, _data in store.entities())
    finally:
        store.close()


def test_expired_entities_are_deleted_from_the_store_and_not_reloaded(tmp_path: Path) -> None:
    (tmp_path / "churn.yaml").write_text(TOPOLOGY)
    topology = load_topology(tmp_path / "churn.yaml")
    state = tmp_path / "state"

    def pipeline() -> PartitionPipeline:
        return PartitionPipeline(topology, 0, store=PartitionStore(state, "churn", "churn", 0))

    proc = pipeline()
    proc.process(batch(0, [("a", 0), ("b", 1000), ("a", 2000)]))
    proc.commit()
    out = proc.process(batch(3, [("c", HOUR)]))  # a and b: their windows are empty now
    assert sorted(out.updates[0].entity_ids) == ["a", "b", "c"]  # a and b written as zero
    assert proc.operator.entity_count == 3
    proc.commit()
    assert proc.operator.entity_count == 1  # a and b released their rows
    proc.close()
    assert stored(state) == ["c"]

    proc = pipeline()  # a restart restores c only
    assert proc.operator.entity_count == 1 and proc.next_offset == 4
    out = proc.process(batch(4, [("a", HOUR + 1000)]))  # a comes back: starts afresh
    values = dict(zip(proc.operator.field_names, out.updates[0].columns, strict=True))
    ids = list(out.updates[0].entity_ids)
    assert values["orders__5m"][ids.index("a")] == 1
    assert values["amount__10m"][ids.index("a")] == 2.5
    proc.commit()
    proc.close()
    assert stored(state) == ["a", "c"]
