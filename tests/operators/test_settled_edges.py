"""The edges contract section 2 settles ("Edges, settled"), each pinned through the
loader and the PartitionOperator the worker and every offline command run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamfeat.operators import PartitionOperator
from streamfeat.topology import AggKind, TopologyDef, load_topology
from streamfeat.topology.definitions import FeatureDef, SourceDef, WindowDef, WindowKind

HEAD = """\
version: 1
name: edges
source: {topic: edges, key: user_id, timestamp: ts}
lateness: 1h
features:
"""


def topology(tmp_path: Path, features: str) -> TopologyDef:
    path = tmp_path / "edges.yaml"
    path.write_text(HEAD + features)
    return load_topology(path)


def run(op: PartitionOperator, events: list[tuple[int, Any]], key: str = "a") -> None:
    """One micro-batch of ``(ts, value of field v)`` events of one entity, in offset order."""
    op.process([key] * len(events), np.array([ts for ts, _ in events], dtype=np.int64),
               [{"v": v} for _, v in events])


def value(op: PartitionOperator, name: str, key: str = "a", as_of: int | None = None) -> Any:
    return op.values([key], as_of)[key][name]


# ----------------------------------------------------------------------------- percentile


@pytest.mark.parametrize(("values", "q"), [
    ([1, 2, 3, 4], 0.5),  # lower 2; linear interpolation would say 2.5, nearest rank 3
    (list(range(1, 101)), 0.95),  # floor(0.95 * 99) = 94 -> 95 (nearest rank: 95, linear 95.05)
    ([10, 20], 0.99),  # floor(0.99 * 1) = 0 -> 10, not 20
    ([5.0, -3.0, 8.5, 0.0, 2.25, 7.0, -1.5], 0.3),
    ([7], 0.99),
])
def test_percentile_is_the_lower_quantile_within_one_percent(tmp_path: Path, values: list[float],
                                                             q: float) -> None:
    topo = topology(tmp_path, f"  - {{name: p, agg: percentile, q: {q}, field: v, "
                              "windows: [lifetime]}\n")
    op = PartitionOperator(topo, 0)
    run(op, [(1000 + i, v) for i, v in enumerate(values)])
    want = sorted(values)[math.floor(q * (len(values) - 1))]
    got = value(op, "p__lifetime")
    assert abs(got - want) <= 0.01 * abs(want), (got, want)


# ----------------------------------------------------------------------- first, last, last_k

ENDS = """\
  - {name: f, agg: first, field: v, windows: [lifetime]}
  - {name: l, agg: last, field: v, windows: [lifetime]}
  - {name: k, agg: last_k, k: 4, field: v, windows: [lifetime]}
"""


def test_first_last_last_k_order_by_event_time_then_offset(tmp_path: Path) -> None:
    """Offset order is not event-time order: first/last follow event time; equal event
    times follow the offset; last_k is newest first. The same across batches and across
    a restore of the state (the offset order of a tie survives it)."""
    topo = topology(tmp_path, ENDS)
    events = [(5000, "x"), (3000, "y"), (5000, "z"), (3000, "w"), (4000, "m")]
    whole = PartitionOperator(topo, 0)
    run(whole, events)
    want = {"f__lifetime": "y", "l__lifetime": "z", "k__lifetime": ["z", "x", "m", "w"]}
    assert whole.values(["a"])["a"] == want

    split = PartitionOperator(topo, 0)
    for event in events[:2]:
        run(split, [event])
    restored = PartitionOperator(topo, 0)
    restored.load_meta(split.meta())
    restored.load_entities(split.take_dirty())
    run(restored, events[2:4])
    run(restored, events[4:])
    assert restored.values(["a"])["a"] == want


# -------------------------------------------------------------------------------- top_k


def test_top_k_pairs_count_descending_then_value_ascending(tmp_path: Path) -> None:
    topo = topology(tmp_path, "  - {name: t, agg: top_k, k: 3, field: v, windows: [lifetime]}\n")
    op = PartitionOperator(topo, 0)
    run(op, [(1000 + i, v) for i, v in enumerate(["b", "c", "a", "c", "b", "a", "d", "c"])])
    assert value(op, "t__lifetime") == [["c", 3], ["a", 2], ["b", 2]]


def test_top_k_ties_of_integers_and_floats_by_value(tmp_path: Path) -> None:
    topo = topology(tmp_path, "  - {name: t, agg: top_k, k: 3, field: v, windows: [lifetime]}\n")
    op = PartitionOperator(topo, 0)
    run(op, [(1000 + i, v) for i, v in enumerate([2.5, 1, 3, 2.5, 1])])
    assert value(op, "t__lifetime") == [[1, 2], [2.5, 2], [3, 1]]


def test_top_k_is_exact_up_to_10000_distinct_values(tmp_path: Path) -> None:
    """The default exact_up_to of top_k is 10000 (count_distinct's is 1000): with 10000
    distinct values in the window, the counts are exact."""
    topo = topology(tmp_path, "  - {name: t, agg: top_k, k: 2, field: v, windows: [lifetime]}\n")
    op = PartitionOperator(topo, 0)
    run(op, [(1000, i) for i in range(10_000)])  # value 9999 ranks last among the ties
    run(op, [(1001, 9999), (1002, 9999), (1003, 5)])
    assert value(op, "t__lifetime") == [[9999, 3], [5, 2]]


def test_top_k_takes_exact_up_to(tmp_path: Path) -> None:
    topo = topology(tmp_path, "  - {name: t, agg: top_k, k: 2, field: v, exact_up_to: 50, "
                              "windows: [lifetime]}\n"
                              "  - {name: d, agg: top_k, k: 2, field: v, windows: [lifetime]}\n")
    assert [f.exact_up_to for f in topo.features] == [50, 10_000]


def test_top_k_beyond_exact_up_to_has_a_bounded_error(monkeypatch: pytest.MonkeyPatch) -> None:
    cap = 3
    lifetime = WindowDef(WindowKind.LIFETIME, None, None, "lifetime")
    feature = FeatureDef("t", AggKind.TOP_K, (lifetime,), field="v", k=1, exact_up_to=cap)
    op = PartitionOperator(TopologyDef("edges", SourceDef("edges", "user_id"), (feature,)), 0)
    run(op, [(1000, "a1"), (1001, "a2"), (1002, "a3")])
    for i in range(20):  # "z" ranks after the a's in a tie of counts: evicted each time
        run(op, [(1003 + i, "z")])
    n = 23
    top = value(op, "t__lifetime")
    assert top[0][0] == "z" and top[0][1] >= 20 - n / (cap + 1), top


# ------------------------------------------------------------------------------ sessions


def test_an_event_exactly_gap_after_the_last_starts_a_new_session(tmp_path: Path) -> None:
    topo = topology(tmp_path, "  - {name: s, agg: count, windows: [{type: session, gap: 5m}]}\n")
    assert topo.features[0].windows[0].label == "session_5m"
    gap = 300_000
    op = PartitionOperator(topo, 0)
    run(op, [(0, 1)])
    assert value(op, "s__session_5m", as_of=gap - 1) == 1
    assert value(op, "s__session_5m", as_of=gap) == 0  # no event for G: the session ended
    run(op, [(gap, 1)], key="b")  # moves stream time to G
    run(op, [(gap, 1)])
    assert value(op, "s__session_5m") == 1  # at exactly last + G: a new session
    run(op, [(2 * gap - 1, 1)])
    assert value(op, "s__session_5m") == 2  # within G of the last: the same session
    # a late event exactly G from both neighbours joins neither
    run(op, [(3 * gap + gap - 1, 1)], key="b")
    run(op, [(4 * gap - 1, 1)])
    run(op, [(3 * gap - 1, 1)])
    assert value(op, "s__session_5m") == 1


# ------------------------------------------------------------------------------- labels


def test_window_labels_are_canonical(tmp_path: Path) -> None:
    topo = topology(tmp_path, """\
  - {name: n, agg: count, windows: [60m, 1440m, 1000ms, 90s]}
  - {name: t, agg: count, windows: [{size: 3600s, type: tumbling}]}
  - {name: h, agg: count, windows: [{size: 120m, type: hopping, step: 30m}]}
  - {name: s, agg: count, windows: [{type: session, gap: 60m}, {type: session, gap: 90s}]}
""")
    assert [f.redis_field(w) for f in topo.features for w in f.windows] == [
        "n__1h", "n__1d", "n__1s", "n__90s", "t__1h", "h__2h", "s__session_1h",
        "s__session_90s"]
