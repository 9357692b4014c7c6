"""Time arithmetic at the bounds: no overflow, no time equal to the "never" sentinel.

Event times are in ``0 .. MAX_EVENT_TIME_MS`` (the decoder's rule), durations at most
``MAX_DURATION_MS`` (the loader's). At those extremes, with every window kind at its
longest and shortest, the operator aggregates, answers, arms and fires its timers, stores
and restores its state without overflowing int64, and a query as of any later time, up
to int64's maximum (the sentinel ``NEVER``), answers as of ``LATEST_QUERY_MS``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfeat.operators import LATEST_QUERY_MS, PartitionOperator
from streamfeat.operators.slots import NEVER
from streamfeat.topology.definitions import (
    MAX_DURATION_MS,
    MAX_EVENT_TIME_MS,
    AggKind,
    FeatureDef,
    SourceDef,
    TopologyDef,
    WindowDef,
    WindowKind,
)

W = MAX_DURATION_MS
WINDOWS = (
    WindowDef(WindowKind.SLIDING, W, W // 4, "sl_long"),
    WindowDef(WindowKind.SLIDING, 1000, 300, "sl_short"),
    WindowDef(WindowKind.SLIDING, W, None, "ex_long", exact=True),
    WindowDef(WindowKind.HOPPING, W, W // 2, "hp_long"),
    WindowDef(WindowKind.TUMBLING, W, W, "tu_long"),
    WindowDef(WindowKind.TUMBLING, W, W, "tf_long", emit_final=True),
    WindowDef(WindowKind.TUMBLING, 1000, 1000, "tf_short", emit_final=True),
    WindowDef(WindowKind.SESSION, W, None, "se_long"),
    WindowDef(WindowKind.SESSION, 1000, None, "se_short"),
    WindowDef(WindowKind.LIFETIME, None, None, "lifetime"),
)
FEATURES = (
    FeatureDef("n", AggKind.COUNT, WINDOWS),
    FeatureDef("total", AggKind.SUM, WINDOWS, field="v"),
    FeatureDef("top", AggKind.MAX, WINDOWS, field="v"),
    FeatureDef("last", AggKind.LAST, WINDOWS, field="v"),
    FeatureDef("distinct", AggKind.COUNT_DISTINCT, WINDOWS, field="v"),
)


def topology(lateness: int) -> TopologyDef:
    return TopologyDef(name="t", source=SourceDef(topic="t", key="k"), features=FEATURES,
                       lateness_ms=lateness)


def settled(op: PartitionOperator, keys: list[str]) -> dict[str, dict[str, Any]]:
    return op.values(keys, as_of=LATEST_QUERY_MS)


times = st.one_of(st.sampled_from([0, 1, 999, MAX_EVENT_TIME_MS - 1, MAX_EVENT_TIME_MS]),
                  st.integers(0, MAX_EVENT_TIME_MS))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), times, st.integers(-3, 3)),
                min_size=1, max_size=12),
       st.sampled_from([0, 1000, W]), st.integers(1, 12))
def test_extreme_times_and_windows(events: list[tuple[str, int, int]], lateness: int,
                                   cut: int) -> None:
    topo = topology(lateness)
    op = PartitionOperator(topo, 0)
    for part in (events[:cut], events[cut:]):
        if part:
            op.process([e[0] for e in part], [e[1] for e in part], [{"v": e[2]} for e in part])
            st_ = op.stream_time
            assert st_ is not None
            op.values(["a", "b"])  # arms the timers
            op.due(st_)
    keys = ["a", "b", "never-seen"]
    assert op._armed.max() <= NEVER
    assert all(t == NEVER or t <= LATEST_QUERY_MS for t in op._armed.tolist())
    last = settled(op, keys)
    assert op.due(LATEST_QUERY_MS) <= {"a", "b"}
    assert op.due(2**63 - 1) == set()  # NEVER is never a time of data: nothing more is due
    for later in (LATEST_QUERY_MS + 1, 2**62, 2**63 - 1, 2**80):
        assert op.values(keys, as_of=later) == last
    # Far after the last event only lifetime windows hold anything.
    for key in keys:
        for name, value in last[key].items():
            if not name.endswith("__lifetime"):
                assert value in (0, None), (name, value)
    # Stored state restores to the same answers.
    again = PartitionOperator(topo, 0)
    again.load_meta(op.meta())
    again.load_entities(op.dump_all())
    assert settled(again, keys) == last


@pytest.mark.parametrize("bad", [[-1], [MAX_EVENT_TIME_MS + 1], [2**63 - 1], [2**63], [10**30]])
def test_process_refuses_times_outside_the_bounds(bad: list[int]) -> None:
    op = PartitionOperator(topology(0), 0)
    with pytest.raises(ValueError, match=r"decode records with streamfeat\.records\.Decoder"):
        op.process(["a"] * len(bad), bad, [{}] * len(bad))
    assert op.stream_time is None  # refused before anything moved
    op.process(["a"], np.array([MAX_EVENT_TIME_MS], dtype=np.int64), [{"v": 1}])
    assert op.values(["a"])["a"]["n__lifetime"] == 1
