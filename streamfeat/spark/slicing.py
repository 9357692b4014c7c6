"""Time slices: more tasks than source partitions for a training set, bit for bit.

A slice of ``slice_ms`` takes the spine rows with ``k * slice_ms <= t < (k + 1) * slice_ms``
of one source partition. Its task reads only the records that can matter to them:

- a value as of ``t`` reads accepted events with ``ts >= t - reach`` (:func:`reach_ms`: the
  longest window plus its hop, twice a tumbling window for ``emit: final``), and a record
  whose stream time (after it) is below ``lo - reach`` has ``ts`` below it too: reading
  starts at the last checkpoint whose stream time before it is below ``lo - reach``, its
  acceptance seeded with that stream time, so every late decision is the stream's;
- an accepted event has ``ts >= stream time - lateness``: once the stream time passes
  ``hi + lateness`` no later record can hold an event before ``hi``, so reading stops at
  the first checkpoint beyond it.

Checkpoints (offset, stream time before it) come from the index pass
(:mod:`streamfeat.spark.tasks`), one per batch read. An entity counts as seen at ``t`` when
its first accepted event (also from the index pass) is at or before ``t``: exactly the
unsliced rule, whether that event falls in the warm-up or long before it.

Exact only when every value depends on a bounded span of event time and acceptance on
nothing but stream time: no ``lifetime`` or ``session`` window among the requested fields,
not ``as_served`` (what had arrived is a prefix of offsets, not a time span), and not a
re-keyed topology (its acceptance drops duplicates by source offset, a state a slice does
not have). :func:`refusal` names the first unmet condition; the engine then runs one task
per partition and logs it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from streamfeat.pipeline.rekey import is_rekeyed
from streamfeat.topology import TopologyDef
from streamfeat.topology.definitions import FeatureDef, WindowDef, WindowKind

__all__ = ["Checkpoint", "reach_ms", "read_range", "refusal"]

Checkpoint = tuple[int, int | None]
"""``(offset, stream time before the record at offset)`` (``None``: no event yet)."""


def _windows(topology: TopologyDef, fields: Sequence[str]) -> list[tuple[FeatureDef, WindowDef]]:
    wanted = set(fields)
    return [(f, w) for f in topology.features for w in f.windows if f.redis_field(w) in wanted]


def refusal(topology: TopologyDef, fields: Sequence[str], *, as_served: bool) -> str | None:
    """Why slicing cannot be exact here (``None``: it can)."""
    if as_served:
        return "--as-served follows arrival (offsets), not event time"
    if is_rekeyed(topology):
        return "a re-keyed topology's acceptance depends on every earlier source offset"
    for f, w in _windows(topology, fields):
        if w.kind in (WindowKind.LIFETIME, WindowKind.SESSION):
            return f"{f.redis_field(w)} is a {w.kind.value} window (unbounded in event time)"
    return None


def reach_ms(topology: TopologyDef, fields: Sequence[str]) -> int:
    """How far back in event time a value of ``fields`` as of ``t`` can read: a sliding or
    hopping window ``size + hop`` (its oldest bucket starts at ``floor((t - W) / H) * H``),
    ``hop: exact`` its size, a tumbling window its size (the open bucket) or twice that
    (``emit: final``: the last closed one); 1 ms more."""
    reach = 0
    for _f, w in _windows(topology, fields):
        size = int(w.size_ms or 0)
        if w.kind is WindowKind.TUMBLING:
            span = 2 * size if w.emit_final else size
        elif w.exact or w.hop_ms is None:
            span = size
        else:
            span = size + int(w.hop_ms)
        reach = max(reach, span)
    return reach + 1


def read_range(
    checkpoints: Sequence[Checkpoint], lo: int, hi: int, reach: int, lateness: int
) -> tuple[int, int | None, int | None]:
    """``(start offset, end offset or None, stream time before start)`` of the records a
    slice ``[lo, hi)`` reads (module docstring); ``checkpoints`` in offset order."""
    start, st = 0, None
    floor = lo - reach
    for offset, before in checkpoints:
        if before is not None and before >= floor:
            break
        start, st = offset, before
    end: int | None = None
    stops = [before for _o, before in checkpoints]
    i = bisect_right([b if b is not None else -(2**62) for b in stops], hi + lateness)
    if i < len(checkpoints):
        end = checkpoints[i][0]
    return start, end, st
