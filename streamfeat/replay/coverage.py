"""What time the snapshots cover, and the warnings when a command asks for more.

A replay or a training set computed over times the snapshots do not hold is silently
wrong: before the first snapshotted record a window lacks the events before it (the
worker ran, or snapshotted, only later), after the last one it lacks what came since (the
snapshots lag the stream by ``--snapshot-every``, or the worker stopped). The commands
say so, one line each, naming the times.

Coverage is read from the Parquet footers of the first and last file of each partition
(the ``kafka_ts`` column's statistics: no data pages are read), so it is the span of the
records' Kafka timestamps, which is also the arrival time ``--as-served`` works with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from streamfeat.errors import StateError
from streamfeat.snapshot.reader import SnapshotFile, open_file

__all__ = ["Coverage", "coverage", "format_ms", "warn_dates", "warn_times"]

_KAFKA_TS = "kafka_ts"


@dataclass(frozen=True, slots=True)
class Coverage:
    """The earliest and latest Kafka timestamps (ms) of the snapshotted records read."""

    first_ms: int
    last_ms: int

    def describe(self) -> str:
        return f"{format_ms(self.first_ms)} to {format_ms(self.last_ms)}"


def format_ms(ms: int) -> str:
    """``2026-11-03T08:12:00Z`` (seconds when whole, else milliseconds)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    spec = "seconds" if ms % 1000 == 0 else "milliseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _bounds(f: SnapshotFile) -> tuple[int, int] | None:
    """(min, max) of a file's ``kafka_ts``: from its footer's statistics, else its column."""
    try:
        pf = open_file(f)
        index = pf.schema_arrow.get_field_index(_KAFKA_TS)
        meta = pf.metadata
        lows: list[int] = []
        highs: list[int] = []
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(index).statistics
            if stats is None or not stats.has_min_max:
                column = pf.read(columns=[_KAFKA_TS]).column(0)
                low, high = pc.min_max(column).values()
                return None if low.as_py() is None else (int(low.as_py()), int(high.as_py()))
            lows.append(int(stats.min))
            highs.append(int(stats.max))
    except (OSError, pa.ArrowException) as exc:
        raise StateError(f"cannot read snapshot file {f.path}: {exc}; restore it or delete it "
                         "and replay the partition from Kafka") from exc
    return (min(lows), max(highs)) if lows else None


def coverage(files: Mapping[int, Sequence[SnapshotFile]]) -> Coverage | None:
    """The span of the records in ``files`` (partition -> its files in offset order), from
    the first and last file of each partition; ``None`` when there are none."""
    lows: list[int] = []
    highs: list[int] = []
    for fs in files.values():
        if not fs:
            continue
        ends = [fs[0]] if len(fs) == 1 else [fs[0], fs[-1]]
        for f, bounds in zip(ends, map(_bounds, ends), strict=True):
            if bounds is None:
                continue
            if f is fs[0]:
                lows.append(bounds[0])
            if f is fs[-1]:
                highs.append(bounds[1])
    if not lows or not highs:
        return None
    return Coverage(min(lows), max(highs))


def warn_times(log: logging.Logger, command: str, what: str, times: Iterable[int | None],
               cover: Coverage | None) -> None:
    """One warning when some of ``times`` (ms; ``None`` ignored) fall outside ``cover``."""
    if cover is None:
        return
    before = after = 0
    low = high = None
    for t in times:
        if t is None:
            continue
        low = t if low is None or t < low else low
        high = t if high is None or t > high else high
        if t < cover.first_ms:
            before += 1
        elif t > cover.last_ms:
            after += 1
    if (not before and not after) or low is None or high is None:
        return
    parts = []
    if before:
        parts.append(f"{_rows(before)} before the first (windows reaching back before it miss "
                     "the events there)")
    if after:
        parts.append(f"{_rows(after)} after the last (records since are not in the snapshots "
                     "yet)")
    log.warning("%s: %s runs from %s to %s, past the snapshots, which hold records from %s "
                "(Kafka timestamps): %s", command, what, format_ms(low), format_ms(high),
                cover.describe(), "; ".join(parts))


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def warn_dates(log: logging.Logger, command: str, date_from: str | None, date_to: str | None,
               days: Sequence[str], cover: Coverage | None) -> None:
    """One warning when ``--from`` is before the first snapshot date (``days``: every date
    folder, sorted) or ``--to`` after the last; ``cover`` (of the files read) names the
    time of the first and last record."""
    if not days:
        return
    parts = []
    if date_from is not None and date_from < days[0]:
        first = days[0] if cover is None else format_ms(cover.first_ms)
        parts.append(f"--from {date_from} is before the first snapshotted record ({first})")
    if date_to is not None and date_to > days[-1]:
        last = days[-1] if cover is None else format_ms(cover.last_ms)
        parts.append(f"--to {date_to} is after the last snapshotted record ({last})")
    if parts:
        log.warning("%s: %s: the snapshots hold nothing there", command, "; ".join(parts))
