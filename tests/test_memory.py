"""The worker fixes glibc's malloc thresholds and tunes the collector
(streamfeat.memory)."""

from __future__ import annotations

import ctypes.util
import gc
import platform
import subprocess
import sys
import textwrap

import pytest

from streamfeat.memory import COLLECTOR_THRESHOLDS, fewer_collections, fix_malloc_thresholds


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or ctypes.util.find_library("c") is None,
                    reason="glibc only (mallopt)")
def test_glibc_accepts_the_fixed_thresholds() -> None:
    assert fix_malloc_thresholds() is True


def test_the_collector_runs_less_often_and_still_frees_cycles() -> None:
    """In a child process (the test run's own collector is left alone): after
    tune_collector the thresholds are the worker's, what was loaded is frozen, and a cycle
    made afterwards is still collected."""
    child = textwrap.dedent("""
        import gc, weakref
        from streamfeat.memory import COLLECTOR_THRESHOLDS, tune_collector
        tune_collector()
        assert gc.isenabled()
        assert gc.get_threshold() == COLLECTOR_THRESHOLDS, gc.get_threshold()
        assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
        class Node: pass
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None  # fewer than 50,000 allocations since: not yet
        kept = [[] for _ in range(COLLECTOR_THRESHOLDS[0] + 10)]  # net allocations
        assert gone() is None, "a cycle outlived the collection its allocations trigger"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_fewer_collections_holds_within_the_block_and_restores_after() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold() == COLLECTOR_THRESHOLDS
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("a job failed")
    assert gc.get_threshold() == before


def test_replay_jobs_run_with_fewer_collections() -> None:
    from streamfeat.replay.jobs import run_jobs

    assert run_jobs(_threshold, [0, 1], processes=1) == [COLLECTOR_THRESHOLDS] * 2
    # here and in a spawned helper (on a machine of two or more CPUs)
    assert run_jobs(_threshold, [0, 1, 2, 3], processes=2) == [COLLECTOR_THRESHOLDS] * 4


def _threshold(_job: int) -> tuple[int, int, int]:
    return gc.get_threshold()


@pytest.mark.parametrize(("topology", "rings"), [("topologies/orders.yaml", True),
                                                 ("benchmarks/topologies/rich.yaml", False)])
def test_the_worker_loads_numba_before_it_freezes_what_is_loaded(topology: str,
                                                                 rings: bool) -> None:
    """numba is imported at the first kernel call (``kernels.warm``): the worker warms the
    kernels before ``tune_collector``, so numba's ~80k objects are frozen with the rest and
    no full collection scans them (each would cost ~40 ms). Only moments rings call the
    kernels: a topology without one (rich: sketches, sets, sessions, an exact window) does
    not import numba at all. Arrow allocates with the C allocator, or with the one
    ``ARROW_DEFAULT_MEMORY_POOL`` names. In a child process: the command runs up to the
    worker's loop (connections and the loop itself replaced)."""
    child = textwrap.dedent("""
        import gc, sys
        import streamfeat.cli as cli
        import streamfeat.runtime as runtime
        import streamfeat.runtime.startup as startup
        from streamfeat.operators import kernels
        assert kernels.COMPILED
        startup.check_connections = lambda *a, **k: None
        cli.check_connections = startup.check_connections
        seen = {}
        class Worker:
            def __init__(self, config): pass
            def run(self):
                import pyarrow as pa
                seen["arrow"] = pa.default_memory_pool().backend_name
                seen["numba"] = "numba" in sys.modules
                seen["unfrozen"] = len(gc.get_objects())
                return 0
        runtime.Worker = Worker
        cli.main(["worker", sys.argv[3], "--state-dir", sys.argv[1]])
        assert seen["numba"] == (sys.argv[4] == "rings"), seen
        assert seen["arrow"] == sys.argv[2], seen  # the C allocator, unless told otherwise
        assert seen["unfrozen"] < 20_000, seen  # (numba alone leaves ~78k)
        print("ok")
    """)
    import os
    import tempfile

    for told, backend in ((None, "system"), ("jemalloc", "jemalloc")):
        env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
        if told is not None:
            env["ARROW_DEFAULT_MEMORY_POOL"] = told
        with tempfile.TemporaryDirectory() as state:
            done = subprocess.run([sys.executable, "-c", child, state, backend, topology,
                                   "rings" if rings else "none"], env=env,
                                  capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
