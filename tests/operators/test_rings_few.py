"""The moments rings' Python paths for small batches and small queries against their numpy
paths (:data:`~streamfeat.operators.rings.FEW_EVENTS`, ``FEW_ROWS``, ``FEW_CELLS``), both
taken only without the compiled kernels (``STREAMFEAT_JIT=0`` or no numba).

Both paths must do the same float operations in the same order, so for any stream, any
batch split and any mix of the two paths, the cells (dumped as bytes: ``0.0`` and ``-0.0``
differ), the values and the next change times are identical. Each ring here is fed the same
batches twice, once with every call on the numpy path and once on a path drawn per call.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfeat.operators import kernels, rings
from streamfeat.operators.rings import MomentsRing
from streamfeat.operators.windows import Span
from streamfeat.topology.definitions import AggKind, FeatureDef, WindowKind
from tests.operators.test_partition_operator import make_window

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
AGGS = [AggKind.COUNT, AggKind.SUM, AggKind.MEAN, AggKind.MIN, AggKind.MAX, AggKind.VAR,
        AggKind.STDDEV]
ROWS = 6

spans = st.sampled_from([
    Span(WindowKind.SLIDING, 10_000, 1_000, False),
    Span(WindowKind.SLIDING, 3_000, 1_000, False),
    Span(WindowKind.HOPPING, 4_000, 2_000, False),
    Span(WindowKind.TUMBLING, 2_000, 2_000, False),
    Span(WindowKind.TUMBLING, 2_000, 2_000, True),
    Span(WindowKind.LIFETIME, 0, 0, False),
])
numbers = st.one_of(
    st.integers(-5, 5).map(float),
    st.sampled_from([0.0, -0.0, 2.5, -2.5, 1e-320, 1e308, -1e308, math.inf, -math.inf,
                     math.nan, 0.1, 0.7]),
    st.floats(-1e6, 1e6, allow_nan=False))
event = st.tuples(st.integers(0, ROWS - 1), st.integers(-3_000, 1_500), numbers)


@st.composite
def batches_st(draw: st.DrawFn) -> list[list[tuple[int, int, float]]]:
    """Batches of (row, time step, value): times move by the step from a running clock."""
    return draw(st.lists(st.lists(event, min_size=0, max_size=40), min_size=1, max_size=8))


def _feed(ring: MomentsRing, batch: list[tuple[int, int, float]], clock: int) -> int:
    """One batch as :meth:`MomentsRing.update` takes it; returns the stream time after it."""
    if not batch:
        ring.update(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
                    np.empty(0), np.empty(0, np.bool_), clock)
        return clock
    ts_list = []
    for _row, step, _x in batch:
        clock = max(0, clock + step)
        ts_list.append(clock)
    st_after = max(ts_list)
    rows = np.array([r for r, _s, _x in batch], dtype=np.int64)
    ts = np.array(ts_list, dtype=np.int64)
    xs = np.array([x for _r, _s, x in batch], dtype=np.float64)
    order = np.lexsort((np.arange(len(batch)), ts, rows))
    ring.update(rows[order], ts[order], order.astype(np.int64), xs, ~np.isnan(xs), st_after)
    return st_after


def _state(ring: MomentsRing, st_now: int) -> list[bytes | None]:
    return ring.dump(list(range(ROWS)), st_now)


def _values(ring: MomentsRing, rows: list[int], t: int) -> tuple[list[list[Any]], list[int]]:
    features = [FeatureDef(f"f{i}", agg, (make_window("sliding", 1000, 1000),), field="v")
                for i, agg in enumerate(AGGS)]
    columns, nxt = ring.values(np.asarray(rows, dtype=np.int64), t, features)
    # repr tells -0.0 from 0.0 and nan from None
    return [[repr(v) for v in c] for c in columns], nxt.tolist()


def _set_paths(monkeypatch: pytest.MonkeyPatch, python: bool) -> None:
    monkeypatch.setattr(kernels, "COMPILED", False)  # (test_rings_kernels.py: the compiled)
    monkeypatch.setattr(rings, "FEW_EVENTS", 10**9 if python else -1)
    monkeypatch.setattr(rings, "FEW_ROWS", 10**9 if python else -1)
    monkeypatch.setattr(rings, "FEW_CELLS", 10**9 if python else -1)


@SETTINGS
@given(span=spans, batches=batches_st(), paths=st.lists(st.booleans(), min_size=24,
                                                         max_size=24),
       queries=st.lists(st.tuples(st.lists(st.integers(0, ROWS - 1), min_size=1, max_size=ROWS),
                                  st.integers(0, 4_000)), min_size=1, max_size=4))
def test_the_python_paths_give_the_numpy_paths_cells_values_and_change_times(
        span: Span, batches: list[list[tuple[int, int, float]]], paths: list[bool],
        queries: list[tuple[list[int], int]]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        numpy_ring, mixed_ring = MomentsRing(span, True, ROWS), MomentsRing(span, True, ROWS)
        clock_n = clock_m = 1_000
        for k, batch in enumerate(batches):
            _set_paths(monkeypatch, python=False)
            clock_n = _feed(numpy_ring, batch, clock_n)
            _set_paths(monkeypatch, python=paths[k % len(paths)])
            clock_m = _feed(mixed_ring, batch, clock_m)
            assert clock_n == clock_m
            assert _state(mixed_ring, clock_n) == _state(numpy_ring, clock_n)
            for j, (rows, ahead) in enumerate(queries):
                t = clock_n + ahead
                _set_paths(monkeypatch, python=False)
                expected = _values(numpy_ring, sorted(set(rows)), t)
                _set_paths(monkeypatch, python=paths[(k + j + 1) % len(paths)])
                assert _values(mixed_ring, sorted(set(rows)), t) == expected


def test_the_python_paths_are_the_ones_small_batches_take(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the compiled kernels, the thresholds route a one-event batch and a one-row
    query to the Python paths (so the property above tests what such a worker runs), and a
    large batch to numpy."""
    calls: list[str] = []

    def update_few(self: MomentsRing, *args: object) -> None:
        calls.append("update_few")

    def values_few(self: MomentsRing, *args: object) -> tuple[list[list[Any]], np.ndarray]:
        calls.append("values_few")
        return [], np.empty(0, dtype=np.int64)

    monkeypatch.setattr(kernels, "COMPILED", False)
    monkeypatch.setattr(MomentsRing, "_update_few", update_few)
    monkeypatch.setattr(MomentsRing, "_values_few", values_few)
    ring = MomentsRing(Span(WindowKind.SLIDING, 10_000, 1_000, False), False, 8)
    _feed(ring, [(0, 0, 1.0)], 1_000)
    ring.values(np.array([0]), 2_000, [])
    assert calls == ["update_few", "values_few"]
    big = [(r % ROWS, 1, float(r)) for r in range(rings.FEW_EVENTS + 1)]
    _feed(ring, big, 2_000)
    assert calls == ["update_few", "values_few"]
