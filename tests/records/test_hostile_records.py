"""No record stops the pipeline: each is an event or a dead letter with a reason, once.

Hostile streams (``hostile.py``: arbitrary bytes, arbitrary JSON, boundary numbers as
keys, times and amounts, Kafka timestamps from 0 to 2**63-1) go through the decoder and
the :class:`~streamfeat.pipeline.PartitionPipeline` the worker and the replay both run.
Whatever the bytes: nothing raises, the counts add up, every accepted event time is in
``0 .. MAX_EVENT_TIME_MS`` (so no window arithmetic overflows and no time equals the
operators' "never" sentinel), and any cut of the stream into batches decides and
computes exactly the same (the replay equals the stream).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hostile import T0, TOPOLOGIES, Raw, records, streams
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfeat.operators import LATEST_QUERY_MS
from streamfeat.pipeline import PartitionPipeline
from streamfeat.records import Decoder, RecordBatch
from streamfeat.topology import TopologyDef, load_topology_text
from streamfeat.topology.definitions import MAX_EVENT_TIME_MS

HOSTILE = settings(max_examples=100, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

topology_and_stream = st.sampled_from(sorted(TOPOLOGIES)).flatmap(
    lambda name: st.tuples(st.just(TOPOLOGIES[name]), streams(TOPOLOGIES[name])))


def as_batch(stream: list[Raw]) -> RecordBatch:
    n = len(stream)
    return RecordBatch(0, list(range(n)), [r.kafka_ts for r in stream],
                       [r.key for r in stream], [r.value for r in stream])


def cuts(n: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(1, max(1, n - 1)), max_size=4).map(lambda c: sorted(set(c)))


class Run:
    """One pipeline over a stream cut into batches: what it decided and holds at the end."""

    def __init__(self, topology: TopologyDef, batch: RecordBatch, cut: list[int]) -> None:
        self.pipeline = PartitionPipeline(topology, 0)
        self.dead: list[tuple[int, str, str]] = []
        self.counts = [0, 0, 0, 0]  # consumed, aggregated, late, malformed
        self.entities: set[str] = set()
        for a, b in zip([0, *cut], [*cut, len(batch)], strict=True):
            if b <= a:
                continue
            out = self.pipeline.process(batch[a:b])
            self.dead += [(d.record.offset, d.kind, d.reason) for d in out.dead]
            for i, v in enumerate((out.consumed, out.aggregated, out.late, out.malformed)):
                self.counts[i] += v
            for update in out.updates:
                self.entities.update(update.entity_ids)
            st_ = self.pipeline.stream_time
            assert st_ is None or 0 <= st_ <= MAX_EVENT_TIME_MS

    def values(self, ids: list[str]) -> Any:
        return self.pipeline.operator.values(ids)


@HOSTILE
@given(topology_and_stream, st.data())
def test_every_record_is_an_event_or_a_dead_letter_once(
        case: tuple[TopologyDef, list[Raw]], data: st.DataObject) -> None:
    topology, stream = case
    batch = as_batch(stream)
    whole = Run(topology, batch, [])
    consumed, aggregated, late, malformed = whole.counts
    assert consumed == len(stream) == aggregated + late + malformed
    offsets = [offset for offset, _kind, _reason in whole.dead]
    assert len(offsets) == len(set(offsets)) == late + malformed
    for _offset, kind, reason in whole.dead:
        assert kind in ("malformed", "late") and reason and len(reason) < 700, reason
        if kind == "malformed":
            assert "; " in reason, f"a reason says what is wrong; what to do: {reason}"

    st_ = whole.pipeline.stream_time
    if st_ is not None and topology.source.timestamp is not None:
        # one record with a bad clock never moves stream time past its Kafka timestamp
        assert st_ <= max(r.kafka_ts for r in stream) + topology.max_future_ms

    # Any other cut into batches (a replay, a restart) decides and computes the same.
    split = Run(topology, batch, data.draw(cuts(len(stream)), label="cuts"))
    assert split.dead == whole.dead
    assert split.counts == whole.counts
    assert split.pipeline.stream_time == st_
    ids = sorted(whole.entities | split.entities)
    assert split.values(ids) == whole.values(ids)
    assert split.pipeline.operator.dump_all() == whole.pipeline.operator.dump_all()
    # Far past the last event: nothing can overflow, and every window has settled.
    if st_ is not None:
        late_values = whole.pipeline.operator.values(ids, as_of=LATEST_QUERY_MS)
        assert whole.pipeline.operator.values(ids, as_of=2**63 - 1) == late_values
        whole.pipeline.operator.due(2**63 - 1)


@HOSTILE
@given(topology_and_stream)
def test_a_record_is_decoded_alike_alone_and_in_any_batch(
        case: tuple[TopologyDef, list[Raw]]) -> None:
    topology, stream = case
    dec = Decoder(topology)
    values, kafka_ts = [r.value for r in stream], [r.kafka_ts for r in stream]
    whole = dec.decode(values, kafka_ts)
    alone = [dec.decode([v], [t]) for v, t in zip(values, kafka_ts, strict=True)]
    assert whole.errors == [(pos, a.errors[0][1]) for pos, a in enumerate(alone) if a.errors]
    assert whole.positions == [pos for pos, a in enumerate(alone) if not a.errors]
    assert whole.keys == [k for a in alone for k in a.keys]
    assert whole.ts == [t for a in alone for t in a.ts]
    assert all(type(t) is int and 0 <= t <= MAX_EVENT_TIME_MS for t in whole.ts)
    np.asarray(whole.ts, dtype=np.int64)  # the conversion that overflowed on 1e23


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(TOPOLOGIES)).flatmap(
    lambda name: records(TOPOLOGIES[name], T0).map(lambda kv: (name, kv[1]))))
def test_one_record_alone_never_raises(case: tuple[str, bytes | None]) -> None:
    name, value = case
    out = PartitionPipeline(TOPOLOGIES[name], 0).process(
        RecordBatch(0, [0], [T0], [None], [value]))
    assert out.aggregated + len(out.dead) == 1


# ------------------------------------------------------------------ the faults that were found

TOPOLOGY = """\
version: 1
name: shop
source: {topic: orders, key: user_id, timestamp: ts}
lateness: 10s
features:
  - {name: orders, agg: count, windows: [5m, lifetime, {size: 10m, hop: exact}]}
  - {name: last, agg: last, field: amount, windows: [{type: session, gap: 5m}, 1h]}
  - {name: spent, agg: sum, field: amount, windows: [{size: 1h, type: tumbling, emit: final}]}
"""


def event(ts: Any, user: str = "u1") -> bytes:
    return json.dumps({"user_id": user, "ts": ts, "amount": 1}).encode()


def run(values: list[bytes], kafka_ts: int = T0) -> tuple[PartitionPipeline, list[str]]:
    pipeline = PartitionPipeline(load_topology_text(TOPOLOGY), 0)
    n = len(values)
    out = pipeline.process(RecordBatch(0, list(range(n)), [kafka_ts] * n, [None] * n, values))
    pipeline.operator.due(pipeline.stream_time or 0)
    return pipeline, [d.reason for d in out.dead]


def test_an_event_time_above_int64_is_malformed_not_a_crash() -> None:
    pipeline, reasons = run([event(1e23), event(T0)])  # was: OverflowError in np.asarray
    assert len(reasons) == 1 and reasons[0].startswith("future: event time 1e+23 (ms) is after")
    assert pipeline.stream_time == T0


def test_int64_max_as_event_time_cannot_collide_with_never() -> None:
    pipeline, reasons = run([event(2**63 - 1), event(T0)])  # was: IndexError in due()
    assert len(reasons) == 1 and reasons[0].startswith("future: ")
    assert pipeline.operator.values(["u1"])["u1"]["orders__lifetime"] == 1


def test_a_far_future_event_does_not_make_later_events_late() -> None:
    pipeline, reasons = run([event(T0), event(4_102_444_800_000), event(T0 + 1000)])
    assert reasons == [
        "future: event time 4102444800000 (2100-01-01T00:00:00.000Z) is 27028 days after the "
        f"record's Kafka timestamp {T0} (max_future 1h); fix the producer's clock or raise "
        "max_future"]
    assert pipeline.stream_time == T0 + 1000
    assert pipeline.operator.values(["u1"])["u1"]["orders__lifetime"] == 2


def test_max_future_bounds_the_event_time_from_the_kafka_timestamp() -> None:
    hour = 3_600_000
    _, reasons = run([event(T0 + hour), event(T0 + hour + 1)])
    assert len(reasons) == 1
    assert "is 3600001 ms (60 minutes) after the record's Kafka timestamp" in reasons[0]
    strict = load_topology_text(TOPOLOGY + "max_future: 0\n")
    out = PartitionPipeline(strict, 0).process(
        RecordBatch(0, [0, 1], [T0, T0], [None, None], [event(T0), event(T0 + 1)]))
    assert [d.reason.split(" (")[0] for d in out.dead] == ["future: event time 1767225600001"]
    assert "(max_future 0ms)" in out.dead[0].reason
