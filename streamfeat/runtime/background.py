"""One background thread running the worker's sink writes in order: :class:`BackgroundWriter`.

The worker hands each batch's Redis writes to this thread and goes on with the next batch,
so the Redis round trip (and the script's run on the server) overlaps the next batch's
decoding and aggregation. Order and safety are kept by three rules:

- jobs run one at a time in submission order (a later batch never overtakes an earlier);
- at most ``depth`` jobs wait; :meth:`BackgroundWriter.submit` blocks beyond that, so a
  slow or unavailable Redis pauses consumption (back-pressure) instead of growing memory;
- :meth:`BackgroundWriter.drain` waits until every submitted job is done. The worker
  drains before it commits state, so no offset is stored before its writes are.

A job that raises stops the writer: later jobs are dropped (their batches are not
committed either, so a restart redoes them) and the error is raised by the next
``submit`` or ``drain``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

__all__ = ["BackgroundWriter"]

Job = Callable[[], None]


class BackgroundWriter:
    """Runs submitted jobs on one thread, in order, with at most ``depth`` waiting."""

    def __init__(self, name: str, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        """Whether a job raised (the writer then runs nothing more)."""
        return self._error is not None

    def submit(self, job: Job) -> None:
        """Queue ``job`` (blocks while ``depth`` jobs wait); raises an earlier job's error."""
        self._raise()
        self._jobs.put(job)

    def drain(self) -> None:
        """Wait until every submitted job has run; raises the error of one that failed."""
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        """Run what is queued, then stop the thread (errors are not raised here)."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as exc:
                self._error = exc
            finally:
                self._jobs.task_done()
