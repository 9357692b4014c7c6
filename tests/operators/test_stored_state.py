"""State bytes are a stored format: the bytes of a fixed stream must not change.

A deterministic stream over every aggregation family and every window kind is run
through the operator; the SHA-256 of each entity's state bytes, of the metadata and of
the values were recorded before the operators were refactored
(``STATE_FORMAT_VERSION`` 3). Equal digests mean the operator still writes exactly the
bytes it wrote then, so states stored then load (checked too) and replays agree with them.
A change of these digests is a change of the state format: bump ``STATE_FORMAT_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from streamfeat.operators import EMPTY_STATE, STATE_FORMAT_VERSION, PartitionOperator
from streamfeat.topology.definitions import (
    AggKind,
    FeatureDef,
    SourceDef,
    TopologyDef,
    WindowDef,
    WindowKind,
)

KEYS = ["a", "b", "c", "d"]

WHERES: dict[str, Any] = {
    "v > 0": lambda r: isinstance(r.get("v"), int | float) and r["v"] > 0,
}

# The top_k feature's exact_up_to (part of its definition hash, stored with its state) went
# from 3 (unused then) to 10000 when top_k began to honour it (#13): the digests below moved
# with it; the values did not (VALUES_DIGEST).
STATE_DIGESTS = {
    "a": "e53adb4926c95e74e5bfea78a18d912348e0618629041decb69aaacc24ca3fa6",
    "b": "df096665c0e3bca1d6f88ddef32217ff08926fd8ceb9455ab0e68a50157c2753",
    "c": "1505c0ad2f0ac428df01747170981e1e1d91bffd57662b1bc6c462f050d89c45",
    "d": "a1fcef5c9a92962a604b1f4ef4f860871bdbdefce5b2f0b4725c210c310a74cf",
}
# Meta gained "slots" and "fields" (what the state holds, for definition changes, #13);
# meta without them still loads.
META_DIGEST = "f4cb13079af8eb33dd29876c98e0a4704a9bfd8c27194c5fb07eb1ec46c39d2a"
VALUES_DIGEST = "8a41cbc0a503047ca09ec205455281af20d3171b8f84149f840f5c840ae38d4f"


def topology() -> TopologyDef:
    windows = (
        WindowDef(WindowKind.SLIDING, 10_000, 1_000, "10s"),
        WindowDef(WindowKind.SLIDING, 10_000, None, "x10s", exact=True),
        WindowDef(WindowKind.HOPPING, 6_000, 2_000, "h6s"),
        WindowDef(WindowKind.TUMBLING, 5_000, 5_000, "t5s"),
        WindowDef(WindowKind.TUMBLING, 5_000, 5_000, "f5s", emit_final=True),
        WindowDef(WindowKind.SESSION, 3_000, None, "s3s"),
        WindowDef(WindowKind.LIFETIME, None, None, "lifetime"),
    )
    features = tuple(
        FeatureDef(
            f"f{i}", agg, windows,
            field=None if agg is AggKind.COUNT else ("v" if agg.numeric else "s"),
            where="v > 0" if i % 3 == 1 else None,
            q=0.9 if agg is AggKind.PERCENTILE else None,
            k=2 if agg in (AggKind.LAST_K, AggKind.TOP_K) else None,
            # count_distinct goes to HyperLogLog; top_k stays exact (its own default cap)
            exact_up_to=10_000 if agg is AggKind.TOP_K else 3,
        )
        for i, agg in enumerate(AggKind)
    )
    return TopologyDef(name="g", source=SourceDef(topic="t", key="u"), features=features,
                       lateness_ms=2_000)


def stream() -> list[tuple[str, int, Mapping[str, Any]]]:
    """300 events: ints, floats and nulls, disorder (some late), four entities."""
    rng = random.Random(11)
    t = 1_000_000
    out: list[tuple[str, int, Mapping[str, Any]]] = []
    for _ in range(300):
        t = max(0, t + rng.randint(-800, 1200))
        rec: dict[str, Any] = {}
        r = rng.random()
        if r < 0.6:
            rec["v"] = rng.randint(-20, 50)
        elif r < 0.85:
            rec["v"] = rng.uniform(-5, 5)
        elif r < 0.9:
            rec["v"] = None
        if rng.random() < 0.9:
            rec["s"] = rng.choice("abcdefgh")
        out.append((rng.choice(KEYS), t, rec))
    return out


def run_stream() -> PartitionOperator:
    op = PartitionOperator(topology(), 3, where_compiler=WHERES.__getitem__)
    events = stream()
    for lo in range(0, len(events), 37):
        batch = events[lo:lo + 37]
        op.process([e[0] for e in batch], np.array([e[1] for e in batch], dtype=np.int64),
                   [e[2] for e in batch])
        op.values(KEYS)
        op.due(op.stream_time or 0)
    return op


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def values_digest(op: PartitionOperator) -> str:
    t = (op.stream_time or 0) + 4_000
    text = json.dumps([op.values(KEYS), op.values([*KEYS, "nobody"], t)], sort_keys=True)
    return sha(text.encode())


def test_state_bytes_are_those_of_format_3() -> None:
    assert STATE_FORMAT_VERSION == 3
    op = run_stream()
    dumped = dict(op.dump_all())
    assert {k: sha(v) for k, v in dumped.items()} == STATE_DIGESTS
    assert sha(op.meta()) == META_DIGEST
    assert values_digest(op) == VALUES_DIGEST


def test_stored_state_loads_and_writes_the_same_bytes() -> None:
    op = run_stream()
    stored, meta = dict(op.take_dirty()), op.meta()
    restored = PartitionOperator(topology(), 3, where_compiler=WHERES.__getitem__)
    restored.load_meta(meta)
    restored.load_entities(stored.items())
    assert restored.dropped_slots == 0
    assert dict(restored.dump_all()) == {k: v for k, v in stored.items() if v != EMPTY_STATE}
    assert dict(restored.dump_all()) == dict(op.dump_all())
    assert values_digest(restored) == values_digest(op)


def test_state_bytes_are_msgpack_of_the_slots_present() -> None:
    """The bytes are joined from encoded pieces (issue #18): they must be what msgpack
    gives for ``[version, {slot key: [hashes, state]}]`` with the slots that hold state,
    for any number of slots (fixmap below 16, map 16 above: the digests above have 56)."""
    import msgspec

    for n_features in (1, 3, 15, 17):
        features = tuple(FeatureDef(f"g{i}", AggKind.SUM if i % 2 else AggKind.COUNT_DISTINCT,
                                    (WindowDef(WindowKind.SLIDING, 10_000 * (i + 1), 1_000,
                                               f"w{i}"),),
                                    field="v" if i % 2 else "s",
                                    where="v > 0" if i % 3 == 1 else None)
                         for i in range(n_features))
        top = TopologyDef(name="g", source=SourceDef(topic="t", key="u"), features=features)
        op = PartitionOperator(top, 0, where_compiler=WHERES.__getitem__)
        # "a" passes every where; "b" only some slots (v <= 0): a partial map
        op.process(["a", "b", "c"], np.array([1_000, 1_000, 1_000], dtype=np.int64),
                   [{"v": 2, "s": "x"}, {"v": -1, "s": "y"}, {}])
        rows = sorted(op._index.values())
        st = op.stream_time or 0
        expected = []
        payloads: list[dict[str, Any]] = [{} for _ in rows]
        for slot in op._slots:
            for payload, obj in zip(payloads, slot.impl.dump(rows, st), strict=True):
                if obj is not None:
                    payload[slot.key] = [slot.state_hashes, obj]
        expected = [msgspec.msgpack.encode([STATE_FORMAT_VERSION, p]) for p in payloads]
        assert len({len(p) for p in payloads}) > 1 or n_features == 1  # partial maps met
        assert op._dump(rows) == expected


def test_bucket_bytes_kept_between_commits_are_the_state_msgpack_gives() -> None:
    """The bucketed kinds keep each bucket's encoded bytes until it changes (issue #18):
    after every batch, including one that changes an older bucket and one whose buckets
    leave the window, the state bytes must be msgpack's of the state objects, for any
    number of buckets (fixarray below 16, array 16 above)."""
    import msgspec

    features = (
        FeatureDef("d", AggKind.COUNT_DISTINCT,
                   (WindowDef(WindowKind.SLIDING, 40_000, 1_000, "40s"),), field="s"),
        FeatureDef("p", AggKind.PERCENTILE,
                   (WindowDef(WindowKind.SLIDING, 40_000, 1_000, "40s"),), field="v", q=0.5),
        FeatureDef("k", AggKind.LAST_K,
                   (WindowDef(WindowKind.SLIDING, 40_000, 1_000, "40s"),), field="v", k=2),
    )
    top = TopologyDef(name="g", source=SourceDef(topic="t", key="u"), features=features,
                      lateness_ms=60_000)
    op = PartitionOperator(top, 0)
    rng = random.Random(5)
    counts_met = set()
    t = 0
    for step in range(40):
        # new buckets of entity "a" this batch: 15, then 16, then 17 held, then any
        n = [15, 1, 1][step] if step < 3 else rng.choice([1, 2, 3, 15, 16, 17])
        times = [t + 1_000 * i for i in range(n)]
        t += 1_000 * n
        if step % 3 == 2:  # and an event in a bucket stored before, still in the window
            times.append(times[0] - 2_000)
        keys = ["a"] * len(times) + ["b"]
        times.append(t)
        recs = [{"v": rng.randint(1, 9), "s": rng.choice("xyz")} for _ in keys]
        op.process(keys, np.array(times, dtype=np.int64), recs)
        rows = sorted(op._index.values())
        st = op.stream_time or 0
        payloads: list[dict[str, Any]] = [{} for _ in rows]
        for slot in op._slots:
            for payload, obj in zip(payloads, slot.impl.dump(rows, st), strict=True):
                if obj is not None:
                    payload[slot.key] = [slot.state_hashes, obj]
                    counts_met.add(len(obj))
        expected = [msgspec.msgpack.encode([STATE_FORMAT_VERSION, p]) for p in payloads]
        assert op._dump(rows) == expected, step
    assert {15, 16, 17} <= counts_met and max(counts_met) > 17


def test_msgpack_headers_are_msgpacks_for_every_size() -> None:
    """The headers the state bytes are joined under: fix, 16- and 32-bit forms."""
    import msgspec

    from streamfeat.operators.partition import _map_header
    from streamfeat.operators.vector import _array_header

    for n in (0, 1, 15, 16, 17, 65_535, 65_536):
        items = list(range(n))
        body = b"".join(msgspec.msgpack.encode(i) for i in items)
        assert _array_header(n) + body == msgspec.msgpack.encode(items), n
        pairs = b"".join(msgspec.msgpack.encode(i) * 2 for i in items)
        assert _map_header(n) + pairs == msgspec.msgpack.encode({i: i for i in items}), n
