"""A process's memory settings: the C allocator's (glibc only), Arrow's and the collector's.

The worker sets all three at start (``streamfeat worker``); the offline commands' jobs
(replay, training sets, verify) run with :func:`fewer_collections`, in their helper
processes for good.

**The C allocator.**
glibc raises its mmap threshold each time a large block is freed, so later large blocks
(batch arrays, Arrow buffers, state blobs) come from the heap, whose freed pages fragment
and are never given back: a worker's resident memory then climbs to its peak and stays.
A fixed threshold of 128 KiB (the initial one) keeps large blocks in mmap, returned on
free: the 1M-user harness peaked at 820-875 MiB instead of 1,033-1,069 MiB. The price is
a page fault per page of each such block: about 10 % of the benchmark topology's rate, none
measurable on the rich one (benchmarks/RESULTS.md, "A million users within 1 GiB" and
"Fewer collections, the malloc thresholds confirmed").

**Arrow's allocator.** pyarrow allocates with mimalloc by default, which keeps what is
freed in its own arenas: converting the raw records of a 250,000-record batch for the
snapshot buffer (about 37 MiB of Arrow data) raised a process's resident memory by 148
MiB. :func:`use_system_arrow_pool` has Arrow use the C allocator instead, whose large
blocks the fixed thresholds return on free: the rich topology's worker peaked at
962-973 MiB instead of 1,031-1,070 (benchmarks/RESULTS.md, fifteenth session), at the
same rate. ``ARROW_DEFAULT_MEMORY_POOL``, when set, is left to choose.

**Python's cyclic garbage collector.** Window state is many small container objects
(per-bucket sets, counters, heaps) that are freed by reference counting, not by the
collector, yet each allocation of them counts toward a collection: with the default
threshold (700) a rich topology spent about a sixth of its CPU in collections that found
nothing (``benchmarks/families.py --gc both``: 1.19x faster with these settings).
:func:`tune_collector` collects less often (every 50,000 net allocations) and moves what
is loaded at start (modules, the compiled topologies: objects that live as long as the
process) out of the collector's sight with ``gc.freeze()``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["COLLECTOR_THRESHOLDS", "fewer_collections", "fix_malloc_thresholds",
           "tune_collector", "use_system_arrow_pool"]

log = logging.getLogger("streamfeat.memory")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 128 * 1024

COLLECTOR_THRESHOLDS = (50_000, 20, 10)
"""``gc.set_threshold`` of a worker or a job: the youngest generation is collected every
50,000 net allocations instead of 700, the older ones at about their usual ratios."""


def fix_malloc_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds at 128 KiB; ``False`` where there is no glibc
    ``mallopt`` (other C libraries: nothing changes)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
    log.debug("malloc thresholds fixed at %d bytes: %s", _THRESHOLD, ok)
    return ok


def use_system_arrow_pool() -> str:
    """Have Arrow allocate with the C allocator (unless ``ARROW_DEFAULT_MEMORY_POOL`` says
    otherwise); returns the backend in use."""
    import pyarrow as pa

    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())
    backend: str = pa.default_memory_pool().backend_name
    log.debug("Arrow allocates with %s", backend)
    return backend


def tune_collector() -> None:
    """Collect less often (:data:`COLLECTOR_THRESHOLDS`) and freeze what is loaded by now:
    call once the process has imported and compiled what it runs, before the stream."""
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    gc.freeze()
    log.debug("collector thresholds %s, %d objects frozen", COLLECTOR_THRESHOLDS,
              gc.get_freeze_count())


@contextmanager
def fewer_collections() -> Iterator[None]:
    """:data:`COLLECTOR_THRESHOLDS` within the block, the thresholds there were after it
    (for a job run in a process that goes on: a test, a notebook, the CLI)."""
    before = gc.get_threshold()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
