"""The C allocator's settings for a worker process (glibc only; elsewhere nothing).

glibc raises its mmap threshold each time a large block is freed, so later large blocks
(batch arrays, Arrow buffers, state blobs) come from the heap, whose freed pages fragment
and are never given back: a worker's resident memory then climbs to its peak and stays.
A fixed threshold of 128 KiB (the initial one) keeps large blocks in mmap, returned on
free: the 1M-user harness peaked at 875 MiB instead of 1,033-1,069 MiB at the same speed
(benchmarks/RESULTS.md, "A million users within 1 GiB").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["fix_malloc_thresholds"]

log = logging.getLogger("streamfeat.worker")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 128 * 1024


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
