"""Acceptance decides like the pipeline: the same malformed and late records, in offset order."""

from __future__ import annotations

import json

from streamfeat.pipeline import Acceptance, PartitionPipeline
from streamfeat.records import RecordBatch
from streamfeat.topology import load_topology_text

TOPOLOGY = """\
version: 1
name: shop
owner: tests@example.com
source: {topic: shop, format: json, key: user_id, timestamp: ts, timestamp_unit: ms}
entity: user
lateness: 10s
features:
  - {name: orders, agg: count, windows: [5m]}
"""


def batch(first_offset: int, values: list[bytes]) -> RecordBatch:
    n = len(values)
    return RecordBatch(0, list(range(first_offset, first_offset + n)), [0] * n, [None] * n,
                       values)


def event(user: str, ts: int) -> bytes:
    return json.dumps({"user_id": user, "ts": ts}).encode()


BATCHES = [
    batch(0, [event("a", 100_000), b"{not json", event("b", 95_000), event("a", 80_000)]),
    batch(4, [event("c", 89_999), event("b", 90_000), json.dumps({"ts": 1}).encode(),
              event("a", 130_000), event("c", 100_000)]),
]


def test_verdicts_match_the_pipeline() -> None:
    topology = load_topology_text(TOPOLOGY)
    acceptance = Acceptance(topology, 0)
    pipeline = PartitionPipeline(topology, 0)
    for b in BATCHES:
        verdict = acceptance.judge(b)
        outcome = pipeline.process(b)
        assert verdict.stream_time == pipeline.stream_time
        assert (verdict.malformed, verdict.late_count, verdict.accepted_count) == (
            outcome.malformed, outcome.late, outcome.aggregated)
        assert verdict.dead_letters() == outcome.dead
    assert acceptance.stream_time == 130_000


def test_accepted_events_in_offset_order() -> None:
    topology = load_topology_text(TOPOLOGY)
    acceptance = Acceptance(topology, 0)
    first = acceptance.judge(BATCHES[0])
    assert [d.kind for d in first.dead_letters()] == ["malformed", "late"]  # offsets 1, 3
    events = first.accepted()
    assert (events.offsets, events.keys, events.ts) == ([0, 2], ["a", "b"], [100_000, 95_000])
    second = acceptance.judge(BATCHES[1]).accepted()
    # c at 89_999: over 10 s behind 100_000; c at 100_000: behind a at 130_000 of this batch
    assert (second.offsets, second.keys) == ([5, 7], ["b", "a"])


def test_resumes_from_a_stream_time() -> None:
    topology = load_topology_text(TOPOLOGY)
    verdict = Acceptance(topology, 0, stream_time=200_000).judge(BATCHES[0])
    assert verdict.accepted_count == 0 and verdict.late_count == 3
    assert verdict.stream_time == 200_000
