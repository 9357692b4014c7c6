"""Compiled loops of the moments rings (:class:`~streamfeat.operators.rings.MomentsRing`).

A ring's update and query are loops over events and cells with a few float operations
each. numpy runs them as some fifty array calls per ring per batch, each a few µs however
small the batch, and Python runs them at a few µs per event: small batches (freshness at
modest rates) paid both. The functions here are the same loops, compiled by numba to
machine code on first use (and cached next to this file): a batch costs its events, not
a fixed toll per call.

They do the float operations of the ring's Python paths (``_update_few``, ``_values_few``)
in the same order, one at a time, without fast-math (no reordering, no fused
multiply-add), so the cells, values and change times are bit for bit those of the numpy and
Python paths (``tests/operators/test_rings_kernels.py``). numba is the optional ``jit``
extra (``pip install streamfeat[jit]``): importing it adds about 150 MiB to a process's
resident memory and a fifth of a second, so it is imported, and the kernels compiled (or
loaded from the cache), on the first call of a kernel (:func:`warm`: the worker's start),
not when this module is imported: a process that never runs a ring (the client, ``validate``,
the registry's commands) never pays for it. Without numba, or with ``STREAMFEAT_JIT=0``,
:data:`COMPILED` is false and the rings keep those paths.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np

__all__ = ["COMPILED", "query_rows", "update_groups", "warm"]

F = TypeVar("F", bound=Callable[..., Any])


def _wanted() -> bool:
    """numba is installed (the ``jit`` extra) and ``STREAMFEAT_JIT`` does not turn it off;
    found without importing it."""
    if os.environ.get("STREAMFEAT_JIT", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return importlib.util.find_spec("numba") is not None


COMPILED = _wanted()
_warm = False  # warm() has run
"""Whether the rings call the kernels compiled (numba is imported at the first call); else
the rings keep their numpy and Python paths, and the kernels are plain Python (tests)."""

_COMPILING = threading.Lock()


def _jit(fn: F) -> F:
    """``fn`` compiled by numba on its first call, when :data:`COMPILED` (plain Python
    otherwise): the module's name is then bound to numba's dispatcher, so later calls
    through the module go to it directly."""

    @functools.wraps(fn)
    def first_call(*args: Any) -> Any:
        return _compiled(fn)(*args)

    return cast(F, first_call)


def _compiled(fn: F) -> F:
    """numba's dispatcher of ``fn`` (compiled, or loaded from the cache, once); ``fn`` itself
    when numba is off, or installed but cannot be imported (then :data:`COMPILED` turns
    false and the rings keep their numpy paths from then on, as without numba)."""
    global COMPILED  # (turned off once if numba cannot be imported)
    if not COMPILED:
        return fn
    with _COMPILING:
        dispatcher = _DISPATCHERS.get(fn.__name__)
        if dispatcher is None:
            try:
                import numba  # (the jit extra; COMPILED says it is installed)
            except ImportError as exc:  # e.g. built for another numpy
                COMPILED = False
                logging.getLogger(__name__).warning(
                    "numba is installed but cannot be imported (%s); the rings run without "
                    "compiled kernels: reinstall it (pip install 'streamfeat[jit]') or set "
                    "STREAMFEAT_JIT=0", exc)
                return fn
            # (The GIL is kept: the calls are short, and a thread that lets go of it waits up
            # to the switch interval, 5 ms, to get it back from a busy thread, such as the
            # sink's.)
            dispatcher = _DISPATCHERS[fn.__name__] = numba.njit(
                cache=True, nogil=False, fastmath=False)(fn)
            globals()[fn.__name__] = dispatcher
    return cast(F, dispatcher)


_DISPATCHERS: dict[str, Any] = {}
"""numba's dispatcher of each kernel compiled so far, by name."""


@_jit
def update_groups(e: Any, b: Any, orig: Any, xs: Any, oks: Any, keep: int, head: Any,
                  cell_next: Any, cell_bucket: Any, cell_row: Any, cell_moments: Any,
                  cell_extremes: Any, minmax: bool, free: Any, used: int) -> tuple[int, int]:
    """Add events sorted by ``(row, ts, offset)`` to their cells, one ``(row, bucket)``
    group at a time, each group's values in offset order (``MomentsRing._update_few``).

    ``e``, ``b``, ``orig``: each event's row, bucket and position in the batch; ``xs``,
    ``oks``: the batch's numbers and their validity by position. A group without a cell
    takes one from the end of ``free`` (cells free for reuse), else the next unused cell
    from ``used``; the caller makes the table large enough for every event to need one,
    and links it into the row's chain (``head``, ``cell_next``: newest bucket first).
    Returns how many cells of ``free`` were taken and the new high-water mark.
    """
    n = e.size
    taken = 0
    nfree = free.size
    i = 0
    while i < n:
        row = e[i]
        bucket = b[i]
        j = i + 1
        while j < n and e[j] == row and b[j] == bucket:
            j += 1
        if bucket < keep:  # a whole group: its bucket can no longer be read
            i = j
            continue
        before = -1
        cid = int(head[row])
        while cid >= 0 and cell_bucket[cid] > bucket:
            before = cid
            cid = int(cell_next[cid])
        fresh = False
        if cid < 0 or cell_bucket[cid] != bucket:
            older = cid
            if taken < nfree:
                cid = free[nfree - 1 - taken]
                taken += 1
            else:
                cid = used
                used += 1
            cell_next[cid] = older
            if before < 0:
                head[row] = cid
            else:
                cell_next[before] = cid
            fresh = True
        lo = np.inf
        hi = -np.inf
        if fresh:
            cell_bucket[cid] = bucket
            cell_row[cid] = row
            count = 0.0
            numbers = 0.0
            shift = 0.0
            s1 = 0.0
            s2 = 0.0
        else:
            count = cell_moments[cid, 0]
            numbers = cell_moments[cid, 1]
            shift = cell_moments[cid, 2]
            s1 = cell_moments[cid, 3]
            s2 = cell_moments[cid, 4]
            if minmax:
                lo = cell_extremes[cid, 0]
                hi = cell_extremes[cid, 1]
        # offset order (offsets are distinct); no copy for the many groups of one event
        group = orig[i:j] if j - i == 1 else np.sort(orig[i:j])
        count += j - i
        if numbers == 0:
            for k in range(group.size):
                if oks[group[k]]:
                    shift = xs[group[k]]
                    break
        for k in range(group.size):
            at = group[k]
            if oks[at]:
                numbers += 1.0
                d = xs[at] - shift
                if minmax:
                    x = xs[at] + 0.0  # -0.0 as 0.0, as in MomentsRing.update
                    if x < lo:
                        lo = x
                    if x > hi:
                        hi = x
            else:
                d = 0.0
            s1 += d
            s2 += d * d
        cell_moments[cid, 0] = count
        cell_moments[cid, 1] = numbers
        cell_moments[cid, 2] = shift
        cell_moments[cid, 3] = s1
        cell_moments[cid, 4] = s2
        if minmax:
            cell_extremes[cid, 0] = lo
            cell_extremes[cid, 1] = hi
        i = j
    return taken, used


@_jit
def query_rows(rows: Any, keep: int, lo: int, hi: int, head: Any, cell_next: Any,
               cell_bucket: Any, cell_moments: Any, cell_extremes: Any, minmax: bool,
               change: int, size: int, hop: int, final: bool, t: int, never: int, width: int,
               out: Any, nxt: Any) -> None:
    """Each row's window moments as of ``t`` (``MomentsRing._values_few``): its cells of
    buckets ``lo .. hi`` summed in bucket order onto the shift of the oldest with a number.

    ``out[r]``: ``count numbers shift sum_dev sum_sq_dev min max`` of row ``rows[r]``;
    ``nxt[r]``: the earliest time after ``t`` a kept cell (bucket at least ``keep``) enters
    or leaves the window. ``change``: 0 never (lifetime), 1 tumbling, 2 sliding/hopping
    (``Span.next_change``, with ``size``, ``hop`` and ``final``). ``width``: the most kept
    cells a row has (``MomentsRing.ring_size``; more are taken in any case).
    """
    picked = np.empty(max(width, 1), dtype=np.int64)
    for r in range(rows.size):
        row = rows[r]
        soonest = never
        m = 0
        # The row's chain holds its buckets newest first; the kept ones (at least keep)
        # come before the rest. Picked newest first, then read in bucket order.
        cid = int(head[row])
        while cid >= 0:
            bucket = cell_bucket[cid]
            if bucket < keep:
                break
            here = cid
            cid = int(cell_next[cid])
            if change == 2:
                when = size + (bucket + 1) * hop
            elif change == 1:
                when = (bucket + 1) * size
                if final and when <= t:
                    when += size
            else:
                when = never
            if when < soonest:
                soonest = when
            if lo <= bucket <= hi:
                if m == picked.size:
                    more = np.empty(2 * m, dtype=np.int64)
                    more[:m] = picked
                    picked = more
                picked[m] = here
                m += 1
        nxt[r] = soonest
        k0 = 0.0
        for q in range(m - 1, -1, -1):
            if cell_moments[picked[q], 1] > 0:
                k0 = cell_moments[picked[q], 2]
                break
        count = 0.0
        numbers = 0.0
        s1 = 0.0
        s2 = 0.0
        for q in range(m - 1, -1, -1):
            cid = picked[q]
            nc = cell_moments[cid, 1]
            a1 = cell_moments[cid, 3]
            delta = cell_moments[cid, 2] - k0 if nc > 0 else 0.0
            count += cell_moments[cid, 0]
            numbers += nc
            s1 += a1 + nc * delta
            s2 += cell_moments[cid, 4] + 2.0 * delta * a1 + nc * delta * delta
        mn = np.inf
        mx = -np.inf
        if minmax:
            for q in range(m - 1, -1, -1):
                cid = picked[q]
                if cell_extremes[cid, 0] < mn:
                    mn = cell_extremes[cid, 0]
                if cell_extremes[cid, 1] > mx:
                    mx = cell_extremes[cid, 1]
        out[r, 0] = count
        out[r, 1] = numbers
        out[r, 2] = k0
        out[r, 3] = s1
        out[r, 4] = s2
        out[r, 5] = mn
        out[r, 6] = mx


def warm() -> None:
    """Compile (or load from the cache) both kernels now, on a tiny ring, rather than in
    the first batch (the worker calls it at start); once."""
    global _warm
    if _warm:
        return
    head = np.full(1, -1, dtype=np.int32)
    cell_next = np.full(2, -1, dtype=np.int32)
    bucket = np.zeros(2, dtype=np.int64)
    row = np.zeros(2, dtype=np.int64)
    moments = np.zeros((2, 5), dtype=np.float64)
    extremes = np.zeros((2, 2), dtype=np.float64)
    one = np.zeros(1, dtype=np.int64)
    update_groups(one, one, one, np.ones(1), np.ones(1, dtype=np.bool_), 0, head, cell_next,
                  bucket, row, moments, extremes, True, np.empty(0, dtype=np.int64), 0)
    query_rows(one, 0, 0, 0, head, cell_next, bucket, moments, extremes, True, 2, 2, 1, False,
               0, np.iinfo(np.int64).max, 2, np.empty((1, 7)), np.empty(1, dtype=np.int64))
    _warm = True
