"""One job per partition, run in parallel processes: how the offline commands use the cores.

Partitions are independent (the worker runs each on its own too), so they are spread over
``spawn``-ed processes, at most one per CPU; with a single job or process everything runs
here, which keeps tests and debuggers simple. Jobs and their results cross the process
boundary by pickling: keep them plain data.

What a job logs on ``streamfeat.replay`` (progress, warnings) is forwarded to this
process's logger of that name through a queue, at this process's level, so a spawned
job reports exactly like one run in place: a library never configures logging itself,
and a child process would otherwise have none. Its progress records
(``streamfeat.replay.progress``, :mod:`streamfeat.progress`) go the same way, at the level
this process shows them (DEBUG steps only when a progress bar wants them).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from logging.handlers import QueueHandler, QueueListener
from multiprocessing.queues import Queue as ProcessQueue
from typing import Any

from streamfeat.progress import progress_logger

__all__ = ["LOGGER", "run_jobs"]

#: The logger of every offline command; the CLI shows its INFO records (progress).
LOGGER = "streamfeat.replay"


class _ToLogger(logging.Handler):
    """Hands a record forwarded from a job to the logger it was logged on, here."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


def _forward_logs(queue: ProcessQueue[Any], level: int, progress_level: int) -> None:
    """In a job's process: send ``streamfeat.replay`` records at ``level`` (its progress
    records at ``progress_level``) to the parent."""
    log = logging.getLogger(LOGGER)
    log.setLevel(level)
    log.addHandler(QueueHandler(queue))
    log.propagate = False
    progress_logger(LOGGER).setLevel(progress_level)


def run_jobs(
    fn: Callable[[Any], Any], jobs: Sequence[Any], processes: int | None
) -> list[Any]:
    """``fn`` over ``jobs``: in this process when one worker suffices, else in spawned ones."""
    cpus = os.cpu_count() or 1
    n = min(len(jobs), cpus if processes is None else max(1, min(processes, cpus)))
    if n <= 1:
        return [fn(j) for j in jobs]
    ctx = multiprocessing.get_context("spawn")
    logs = ctx.Queue()
    listener = QueueListener(logs, _ToLogger())
    listener.start()
    try:
        with ProcessPoolExecutor(
            max_workers=n, mp_context=ctx, initializer=_forward_logs,
            initargs=(logs, logging.getLogger(LOGGER).getEffectiveLevel(),
                      progress_logger(LOGGER).getEffectiveLevel()),
        ) as pool:
            return list(pool.map(fn, jobs))
    finally:
        listener.stop()  # after the processes ended: every record they sent is handled
        logs.close()
        logs.join_thread()
