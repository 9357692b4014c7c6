"""Progress of long commands, told through logging: :class:`Tracker`.

A library never prints, and the offline commands run their partitions in other processes,
whose log records already reach the command's process (:mod:`streamfeat.replay.jobs`). So
progress is a log record too, on a ``<logger>.progress`` child logger, carrying a
:class:`Step` in its ``progress`` attribute:

* every :data:`STEP_EVERY_S` at DEBUG, for a display that draws a bar (the command line's,
  :mod:`streamfeat.cli_progress`, turns these into a rich progress bar);
* every :data:`LINE_EVERY_S` at INFO, a line a person or a log collector can read.

Whoever shows the log decides: at INFO the lines, with a bar the steps, or nothing.

Must not import anything of streamfeat: every layer may use it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LINE_EVERY_S", "STEP_EVERY_S", "Step", "Tracker", "announce", "progress_logger"]

STEP_EVERY_S = 0.25
"""The least time between two steps of one tracker (DEBUG records, for a bar)."""
LINE_EVERY_S = 5.0
"""The least time between two progress lines of one tracker (INFO records)."""


@dataclass(frozen=True, slots=True)
class Step:
    """Where one piece of work stands. ``task`` names the whole (``replay orders``), ``part``
    the piece this tracker follows (a partition), ``total`` the planned amount (``None``:
    unknown); ``finished`` is the last step of the part. Plain data: it crosses processes."""

    task: str
    part: str
    done: int
    total: int | None
    unit: str = "records"
    finished: bool = False


def progress_logger(base: str) -> logging.Logger:
    """The logger of the progress of ``base``'s work (``streamfeat.replay.progress``)."""
    return logging.getLogger(f"{base}.progress")


class Tracker:
    """Reports the progress of one part of a task on ``logger`` (see the module docstring).

    ``label`` starts each line (``replay orders[3]``); ``detail``, if given, adds to it
    (a rate, the files read).
    """

    def __init__(self, logger: logging.Logger, task: str, part: str, total: int | None, *,
                 label: str = "", unit: str = "records",
                 detail: Callable[[int], str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.task = task
        self.part = part
        self.total = total
        self.label = label or f"{task}[{part}]"
        self.unit = unit
        self.detail = detail
        self.clock = clock
        self.done = 0
        self._last_step = self._last_line = clock()
        self._emit(logging.DEBUG, finished=False)  # started: a bar shows the part's total

    def update(self, done: int) -> None:
        """The part has done ``done`` (cumulative) so far."""
        self.done = done
        now = self.clock()
        if now - self._last_line >= LINE_EVERY_S:
            self._last_line = self._last_step = now
            self._emit(logging.INFO, finished=False)
        elif now - self._last_step >= STEP_EVERY_S:
            self._last_step = now
            self._emit(logging.DEBUG, finished=False)

    def advance(self, n: int) -> None:
        self.update(self.done + n)

    def finish(self) -> None:
        """The part is done (its total becomes what was done: offsets may have gaps)."""
        self.total = self.done
        self._emit(logging.DEBUG, finished=True)

    def _emit(self, level: int, *, finished: bool) -> None:
        if not self.logger.isEnabledFor(level):
            return
        total = self.total
        of = "" if total is None else f" of {total:,}"
        pct = f" ({100.0 * self.done / total:.0f}%)" if total else ""
        more = f", {self.detail(self.done)}" if self.detail is not None else ""
        step = Step(self.task, self.part, self.done, total, self.unit, finished)
        self.logger.log(level, "%s: %s%s %s%s%s", self.label, f"{self.done:,}", of, self.unit,
                        pct, more, extra={"progress": step})


def announce(logger: logging.Logger, task: str, total: int | None, unit: str = "records") -> None:
    """The planned amount of the whole ``task`` (before its parts start, which may be in
    other processes): a bar shows its share from the first step."""
    logger.debug("%s: %s %s planned", task, "?" if total is None else f"{total:,}", unit,
                 extra={"progress": Step(task, "", 0, total, unit)})
