"""The worker fixes glibc's malloc thresholds and tunes the collector
(streamfeat.runtime.allocator)."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys
import textwrap

import pytest

from streamfeat.runtime.allocator import fix_malloc_thresholds


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
        from streamfeat.runtime.allocator import COLLECTOR_THRESHOLDS, tune_collector
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
