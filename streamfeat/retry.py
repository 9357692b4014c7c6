"""Retry with exponential backoff: the one rule every writer of streamfeat waits by.

A dependency that is down (Redis, Kafka) is retried, never skipped: the caller's work is
not stored until the call succeeds, so waiting is what back-pressure means here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["backoff_s", "call_with_retry"]

T = TypeVar("T")


def backoff_s(attempt: int, *, first_s: float = 0.05, cap_s: float = 5.0) -> float:
    """Seconds before retry ``attempt`` (0-based): doubling from ``first_s`` up to ``cap_s``."""
    return min(cap_s, first_s * float(1 << min(max(attempt, 0), 16)))


def call_with_retry(
    call: Callable[[], T],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    attempts: int | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
    first_s: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()`` until it returns, waiting :func:`backoff_s` between failures.

    ``attempts`` bounds the number of calls (``None``: forever); the last failure is raised.
    ``on_retry(attempt, exc)`` runs before each wait (metrics, logs); it may raise to give up.
    """
    attempt = 0
    while True:
        try:
            return call()
        except retry_on as exc:
            if attempts is not None and attempt + 1 >= attempts:
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            sleep(backoff_s(attempt, first_s=first_s))
            attempt += 1
