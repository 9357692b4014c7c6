"""One job per partition, run in parallel processes: how the offline commands use the cores.

Partitions are independent (the worker runs each on its own too), so they are spread over
processes, at most one per CPU: this one and ``spawn``-ed helpers. This process starts on a
job at once, while the helpers start up (a spawned interpreter imports streamfeat again:
about half a second, as long as a third of a million records take); each helper takes the
next job when it is free, this one when it has finished its own, largest jobs first when
their sizes are known. With a single job or process everything runs here, which keeps tests
and debuggers simple. Jobs and their results cross the process boundary by pickling: keep
them plain data.

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
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from logging.handlers import QueueHandler, QueueListener
from multiprocessing.queues import Queue as ProcessQueue
from typing import Any

from streamfeat.memory import fewer_collections, tune_collector
from streamfeat.progress import progress_logger

__all__ = ["LOGGER", "run_jobs"]

#: The logger of every offline command; the CLI shows its INFO records (progress).
LOGGER = "streamfeat.replay"


class _ToLogger(logging.Handler):
    """Hands a record forwarded from a job to the logger it was logged on, here."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


def _start_helper(queue: ProcessQueue[Any], level: int, progress_level: int) -> None:
    """In a job's process: send ``streamfeat.replay`` records at ``level`` (its progress
    records at ``progress_level``) to the parent; collect garbage less often."""
    log = logging.getLogger(LOGGER)
    log.setLevel(level)
    log.addHandler(QueueHandler(queue))
    log.propagate = False
    progress_logger(LOGGER).setLevel(progress_level)
    tune_collector()  # a helper runs jobs only: collect less often for good


def run_jobs(
    fn: Callable[[Any], Any], jobs: Sequence[Any], processes: int | None,
    *, size: Callable[[Any], int] | None = None,
) -> list[Any]:
    """``fn`` over ``jobs``, results in the order of ``jobs``: in this process when one worker
    suffices, else here and in ``processes - 1`` spawned helpers. ``size``: how much work a
    job is (records), to take the largest first."""
    with fewer_collections():  # window state: many objects freed by reference counts
        return _run_jobs(fn, jobs, processes, size)


def _run_jobs(
    fn: Callable[[Any], Any], jobs: Sequence[Any], processes: int | None,
    size: Callable[[Any], int] | None,
) -> list[Any]:
    cpus = os.cpu_count() or 1
    n = min(len(jobs), cpus if processes is None else max(1, min(processes, cpus)))
    if n <= 1:
        return [fn(j) for j in jobs]
    todo = deque(sorted(range(len(jobs)), key=lambda i: -size(jobs[i])) if size is not None
                 else range(len(jobs)))
    results: list[Any] = [None] * len(jobs)
    ctx = multiprocessing.get_context("spawn")
    logs = ctx.Queue()
    listener = QueueListener(logs, _ToLogger())
    listener.start()
    try:
        with ProcessPoolExecutor(
            max_workers=n - 1, mp_context=ctx, initializer=_start_helper,
            initargs=(logs, logging.getLogger(LOGGER).getEffectiveLevel(),
                      progress_logger(LOGGER).getEffectiveLevel()),
        ) as pool:
            running: dict[Future[Any], int] = {}
            try:
                mine: int | None = todo.popleft()  # the largest: no start-up here
                while True:
                    while todo and len(running) < n - 1:  # a helper is free
                        i = todo.popleft()
                        running[pool.submit(fn, jobs[i])] = i
                    if mine is None:
                        break
                    results[mine] = fn(jobs[mine])
                    for future in [f for f in running if f.done()]:
                        results[running.pop(future)] = future.result()
                    mine = todo.popleft() if todo else None
                for future, i in running.items():
                    results[i] = future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return results
    finally:
        listener.stop()  # after the processes ended: every record they sent is handled
        logs.close()
        logs.join_thread()
