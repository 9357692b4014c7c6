"""The shared retry rule: backoff doubles to a cap, failures are retried or re-raised."""

from __future__ import annotations

import pytest

from streamfeat.retry import backoff_s, call_with_retry


def test_backoff_doubles_to_the_cap() -> None:
    waits = [backoff_s(a) for a in range(10)]
    assert waits[:4] == [0.05, 0.1, 0.2, 0.4]
    assert waits[-1] == 5.0
    assert waits == sorted(waits)
    assert backoff_s(10_000) == 5.0


def test_retries_until_success_and_reports_each_failure() -> None:
    calls, seen, slept = [], [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionError(f"down {len(calls)}")
        return "ok"

    got = call_with_retry(flaky, retry_on=ConnectionError,
                          on_retry=lambda a, e: seen.append((a, str(e))), sleep=slept.append)
    assert got == "ok"
    assert seen == [(0, "down 1"), (1, "down 2"), (2, "down 3")]
    assert slept == [backoff_s(0), backoff_s(1), backoff_s(2)]


def test_bounded_attempts_raise_the_last_failure_and_other_errors_pass_through() -> None:
    def down() -> None:
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError, match="still down"):
        call_with_retry(down, retry_on=ConnectionError, attempts=3, sleep=lambda _s: None)

    def broken() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        call_with_retry(broken, retry_on=ConnectionError, sleep=lambda _s: None)


def test_on_retry_may_give_up() -> None:
    def down() -> None:
        raise ConnectionError("down")

    def stop(_attempt: int, _exc: BaseException) -> None:
        raise SystemExit(1)

    with pytest.raises(SystemExit):
        call_with_retry(down, retry_on=ConnectionError, on_retry=stop, sleep=lambda _s: None)
