"""Progress on the command line: the progress records of :mod:`streamfeat.progress` shown as
a rich progress bar on stderr, as log lines, or not at all (``--progress``,
``--no-progress``; by default a bar when stderr is a terminal, else lines).

A bar aggregates the parts of a task (the partitions of a replay, which may run in other
processes) into one bar per task; log lines written meanwhile appear above it
(:func:`streamfeat.logs.setup` writes to whatever ``sys.stderr`` is, and the bar takes it
over while it runs).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from streamfeat.progress import Step, progress_logger

__all__ = ["Mode", "ProgressDisplay", "choose_mode"]

Mode = Literal["bar", "lines", "off"]


def choose_mode(flag: bool | None) -> Mode:
    """``--progress`` (True): a bar; ``--no-progress`` (False): nothing; neither: a bar on
    a terminal, else the log's progress lines."""
    if flag is None:
        return "bar" if sys.stderr.isatty() else "lines"
    return "bar" if flag else "off"


@dataclass
class _Task:
    id: TaskID
    announced: int | None = None
    parts: dict[str, tuple[int, int | None, bool]] = field(default_factory=dict)
    """part -> (done, its first total, finished)."""

    def totals(self) -> tuple[int, int | None]:
        done = sum(d for d, _t, _f in self.parts.values())
        shortfall = sum((t or d) - d for d, t, f in self.parts.values() if f)
        if self.announced is not None:
            return done, max(done, self.announced - shortfall)
        totals = [t for _d, t, _f in self.parts.values()]
        if not totals or any(t is None for t in totals):
            return done, None
        return done, max(done, sum(t for t in totals if t is not None) - shortfall)


class _BarHandler(logging.Handler):
    def __init__(self, display: ProgressDisplay) -> None:
        super().__init__(logging.DEBUG)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        step = getattr(record, "progress", None)
        if isinstance(step, Step):
            self.display.show(step)


class ProgressDisplay:
    """While in its ``with`` block, shows the progress of the work logged on ``bases``
    (``streamfeat.replay``) in ``mode``."""

    def __init__(self, mode: Mode, bases: Sequence[str] = ("streamfeat.replay",)) -> None:
        self.mode = mode
        self.loggers = [progress_logger(b) for b in bases]
        self._saved: list[tuple[int, bool]] = []
        self._handler = _BarHandler(self)
        self._tasks: dict[str, _Task] = {}
        self._bar: Progress | None = None

    def __enter__(self) -> ProgressDisplay:
        self._saved = [(lg.level, lg.propagate) for lg in self.loggers]
        if self.mode == "bar":
            console = Console(stderr=True, force_terminal=True, highlight=False)
            bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[unit]}"), TaskProgressColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                           redirect_stderr=True, redirect_stdout=False)
            bar.start()
            self._bar = bar
        for lg in self.loggers:
            if self.mode == "bar":  # steps to the bar, and no lines: the bar says it
                lg.setLevel(logging.DEBUG)
                lg.propagate = False
                lg.addHandler(self._handler)
            elif self.mode == "lines":  # a line every few seconds, even with -v
                lg.setLevel(logging.INFO)
            else:
                lg.setLevel(logging.WARNING)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for lg, (level, propagate) in zip(self.loggers, self._saved, strict=True):
            lg.removeHandler(self._handler)
            lg.setLevel(level)
            lg.propagate = propagate
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    @property
    def enabled(self) -> bool:
        """Whether progress is shown at all (the work may skip measuring it otherwise)."""
        return self.mode != "off"

    def show(self, step: Step) -> None:
        """One step of a part (or, ``part == ""``, a task's announced total) on its bar."""
        bar = self._bar
        if bar is None:
            return
        task = self._tasks.get(step.task)
        new = task is None
        if task is None:
            task = _Task(TaskID(-1))
        if step.part == "":
            task.announced = step.total
        else:
            first = task.parts.get(step.part, (0, step.total, False))[1]
            task.parts[step.part] = (step.done, first, step.finished)
        done, total = task.totals()
        if new:  # added with its total: never drawn without it
            task.id = bar.add_task(step.task, total=total, completed=done, unit=step.unit)
            self._tasks[step.task] = task
        else:
            bar.update(task.id, completed=done, total=total)
