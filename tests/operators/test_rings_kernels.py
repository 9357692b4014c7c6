"""The moments rings' compiled kernels (:mod:`streamfeat.operators.kernels`) against the
rings' numpy paths.

The kernels must do the float operations of the Python paths in the same order, so for any
stream (negative times, disorder, infinities, ``-0.0``, values missing), any batch split and
any mix of compiled and numpy calls, the cells (dumped as bytes: ``0.0`` and ``-0.0``
differ), the values and the next change times are identical. Each ring here is fed the same
batches twice, once with every call on the numpy path and once on a path drawn per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamfeat.operators import kernels, rings
from streamfeat.operators.rings import MomentsRing
from streamfeat.operators.windows import Span
from streamfeat.topology.definitions import AggKind, FeatureDef, WindowKind
from tests.operators.test_partition_operator import make_window
from tests.operators.test_rings_few import ROWS, SETTINGS, _state, _values, event, spans


@st.composite
def batches_st(draw: st.DrawFn) -> list[list[tuple[int, int, float]]]:
    """Batches of (row, time step, value): times move by the step from a running clock."""
    return draw(st.lists(st.lists(event, min_size=0, max_size=120), min_size=1, max_size=8))


def _feed(ring: MomentsRing, batch: list[tuple[int, int, float]], clock: int,
          stream_time: int) -> tuple[int, int]:
    """One batch as :meth:`MomentsRing.update` takes it (the clock may go below zero);
    returns the clock and the stream time after it."""
    if not batch:
        ring.update(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
                    np.empty(0), np.empty(0, np.bool_), stream_time)
        return clock, stream_time
    ts_list = []
    for _row, step, _x in batch:
        clock += step
        ts_list.append(clock)
    stream_time = max(stream_time, *ts_list)
    rows = np.array([r for r, _s, _x in batch], dtype=np.int64)
    ts = np.array(ts_list, dtype=np.int64)
    xs = np.array([x for _r, _s, x in batch], dtype=np.float64)
    order = np.lexsort((np.arange(len(batch)), ts, rows))
    ring.update(rows[order], ts[order], order.astype(np.int64), xs, ~np.isnan(xs), stream_time)
    return clock, stream_time


def _set_paths(monkeypatch: pytest.MonkeyPatch, compiled: bool) -> None:
    monkeypatch.setattr(kernels, "COMPILED", compiled)
    monkeypatch.setattr(rings, "FEW_EVENTS", -1)  # without kernels: numpy only
    monkeypatch.setattr(rings, "FEW_ROWS", -1)
    monkeypatch.setattr(rings, "FEW_CELLS", -1)


def test_the_kernels_are_compiled_here() -> None:
    """The test environment has the ``jit`` extra (numba, in the dev extras): the property
    below compares the compiled kernels with the numpy paths, not Python with Python."""
    assert kernels.COMPILED


@SETTINGS
@given(span=spans, start=st.integers(-50_000, 50_000), batches=batches_st(),
       paths=st.lists(st.booleans(), min_size=24, max_size=24),
       queries=st.lists(st.tuples(st.lists(st.integers(0, ROWS - 1), min_size=1, max_size=ROWS),
                                  st.integers(0, 4_000)), min_size=1, max_size=4))
def test_the_kernels_give_the_numpy_paths_cells_values_and_change_times(
        span: Span, start: int, batches: list[list[tuple[int, int, float]]], paths: list[bool],
        queries: list[tuple[list[int], int]]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        numpy_ring, mixed_ring = MomentsRing(span, True, ROWS), MomentsRing(span, True, ROWS)
        plain_ring = MomentsRing(span, False, ROWS)  # no min/max: its own cell layout
        clock_n = clock_m = clock_p = start
        st_n = st_m = st_p = start
        for k, batch in enumerate(batches):
            _set_paths(monkeypatch, compiled=False)
            clock_n, st_n = _feed(numpy_ring, batch, clock_n, st_n)
            _set_paths(monkeypatch, compiled=paths[k % len(paths)])
            clock_m, st_m = _feed(mixed_ring, batch, clock_m, st_m)
            _set_paths(monkeypatch, compiled=True)
            clock_p, st_p = _feed(plain_ring, batch, clock_p, st_p)
            assert (clock_n, st_n) == (clock_m, st_m)
            assert _state(mixed_ring, st_n) == _state(numpy_ring, st_n)
            plain_cells = [None if c is None else b"".join(
                c[i:i + 48] for i in range(0, len(c), 64)) for c in _state(numpy_ring, st_n)]
            assert _state(plain_ring, st_n) == plain_cells  # the same minus min/max
            for j, (rows, ahead) in enumerate(queries):
                t = st_n + ahead
                _set_paths(monkeypatch, compiled=False)
                expected = _values(numpy_ring, sorted(set(rows)), t)
                _set_paths(monkeypatch, compiled=paths[(k + j + 1) % len(paths)])
                assert _values(mixed_ring, sorted(set(rows)), t) == expected
                assert _values(mixed_ring, rows, t) == _values(numpy_ring, rows, t)


def test_the_kernels_reuse_freed_cells_and_grow_the_table() -> None:
    """Cells of expired buckets go back to the free list and are taken again; a batch that
    needs more cells than the table holds grows it."""
    span = Span(WindowKind.SLIDING, 2_000, 1_000, False)
    many = 3_000  # more cells than the first table (1,024): one per row
    ring = MomentsRing(span, False, many + 1)
    ring.update(np.arange(many), np.zeros(many, dtype=np.int64), np.arange(many), np.ones(many),
                np.ones(many, dtype=np.bool_), 0)
    assert ring.cells_used == many
    assert ring.cell_bucket.size >= many
    later = 10_000  # every bucket so far expired: all cells freed, one taken again
    ring.update(np.array([many]), np.array([later]), np.array([0]), np.array([2.0]),
                np.array([True]), later)
    assert ring.cells_used == many
    assert len(ring.free_cells) == many - 1
    (count,), _nxt = ring.values(np.array([many]), later, [
        FeatureDef("n", AggKind.COUNT, (make_window("sliding", 1000, 1000),))])
    assert count == [1]


def test_many_rows_over_few_cells_read_only_their_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """A day's window of 10-minute hops over many entities with an event or two each (a
    million users): the kernel follows each row's chain, the numpy path scans the cell
    table or walks the chains, with the same values; and the rows cost their cells, not
    145 positions each."""
    span = Span(WindowKind.SLIDING, 86_400_000, 600_000, False)  # up to 145 buckets kept
    rows = 2_000
    ring = MomentsRing(span, True, rows)
    t = 10**12
    held = np.arange(0, rows, 10)
    ring.update(held, np.full(held.size, t), np.arange(held.size),
                np.arange(held.size, dtype=np.float64), np.ones(held.size, dtype=np.bool_), t)
    later = t + 600_000  # a second bucket for every other row held
    ring.update(held[::2], np.full(held[::2].size, later), np.arange(held[::2].size),
                np.full(held[::2].size, 0.5), np.ones(held[::2].size, dtype=np.bool_), later)
    features = [FeatureDef("n", AggKind.COUNT, (make_window("sliding", 1000, 1000),)),
                FeatureDef("m", AggKind.MAX, (make_window("sliding", 1000, 1000),), field="v")]
    many = np.arange(rows, dtype=np.int64)
    compiled = ring.values(many, later, features)
    _set_paths(monkeypatch, compiled=False)
    scanned = ring.values(many, later, features)  # 300 cells, 2,000 rows: the table scanned
    walked = ring.values(np.r_[many, many[:1]], later, features)  # rows repeat: the walk
    assert compiled[0] == scanned[0] == [c[:-1] for c in walked[0]]
    assert compiled[1].tolist() == scanned[1].tolist() == walked[1][:-1].tolist()
    assert compiled[0][0][::20] == [2] * (rows // 20)
    assert compiled[0][0][10::20] == [1] * (rows // 20)
    assert ring.live_bytes(rows) < rows * 4 + 300 * 100  # no per-row ring of 145 positions


def test_numba_is_imported_at_the_first_kernel_call_not_with_the_rings() -> None:
    """A process that never runs a ring (the client, ``validate``) never imports numba
    (~150 MiB, a fifth of a second); ``warm`` (the worker's start) compiles both kernels and
    binds the module's names to numba's dispatchers."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import streamfeat.operators.rings, streamfeat.operators.kernels as k\n"
        "assert k.COMPILED and 'numba' not in sys.modules, sorted(sys.modules)\n"
        "k.warm()\n"
        "import numba\n"
        "from numba.core.registry import CPUDispatcher\n"
        "assert isinstance(k.update_groups, CPUDispatcher)\n"
        "assert isinstance(k.query_rows, CPUDispatcher)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr



def test_warm_kernels_loads_numba_only_for_topologies_with_moments_rings() -> None:
    """The worker's start-up: a topology of sketches, sets, sessions and an exact window
    (rich) calls no kernel, so numba stays out; one with rings (orders) loads it."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "from streamfeat.operators import warm_kernels\n"
        "from streamfeat.topology import load_topology\n"
        "assert not warm_kernels([load_topology('benchmarks/topologies/rich.yaml')])\n"
        "assert 'numba' not in sys.modules\n"
        "both = [load_topology(f) for f in ('benchmarks/topologies/rich.yaml',\n"
        "                                    'topologies/orders.yaml')]\n"
        "assert warm_kernels(both) and 'numba' in sys.modules\n"
        "assert warm_kernels(both)  # found loaded\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr


def test_a_numba_that_cannot_be_imported_leaves_the_numpy_paths(tmp_path: Any) -> None:
    """numba found but failing to import (built for another numpy): the worker's warm-up
    logs it, :data:`COMPILED` turns false, and the kernels run as plain Python."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "numba"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('Numba needs NumPy 1.x')\n")
    code = (
        "import streamfeat.operators.kernels as k\n"
        "assert k.COMPILED\n"
        "k.warm()\n"
        "assert not k.COMPILED\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
    assert "cannot be imported" in run.stderr
