"""Event time per partition: stream time and the late decision (contract section 3)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["late_mask"]


def late_mask(
    ts: npt.NDArray[np.int64], stream_time: int | None, lateness_ms: int
) -> tuple[npt.NDArray[np.bool_], int | None]:
    """Which events of a batch (in offset order) are late, and the new stream time.

    Event ``i`` is late iff ``ts[i] < max(stream_time, ts[:i]) - lateness``; the
    very first event of a partition is never late. Vectorized with a running
    maximum, so it equals the sequential scan exactly.
    """
    if ts.size == 0:
        return np.zeros(0, dtype=np.bool_), stream_time
    running = np.maximum.accumulate(ts)
    before = np.empty_like(ts)
    before[1:] = running[:-1]
    if stream_time is None:
        before[0] = ts[0]  # nothing seen yet: the first event is never late
    else:
        before[0] = stream_time
        np.maximum(before, stream_time, out=before)
    late = ts < before - lateness_ms
    end = int(running[-1]) if stream_time is None else max(stream_time, int(running[-1]))
    return late, end
