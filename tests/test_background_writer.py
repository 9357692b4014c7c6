"""BackgroundWriter: order, back-pressure, drain, and failure handling."""

from __future__ import annotations

import threading
import time

import pytest

from streamfeat.runtime.background import BackgroundWriter


def test_jobs_run_in_order_and_drain_waits_for_all() -> None:
    done: list[int] = []
    w = BackgroundWriter("t")

    def job(i: int) -> None:
        time.sleep(0.001 * (i % 3))
        done.append(i)

    for i in range(50):
        w.submit(lambda i=i: job(i))  # type: ignore[misc]
    w.drain()
    assert done == list(range(50))
    w.close()


def test_submit_blocks_beyond_depth() -> None:
    gate = threading.Event()
    w = BackgroundWriter("t", depth=2)
    w.submit(gate.wait)  # running
    w.submit(lambda: None)  # waiting: 1
    w.submit(lambda: None)  # waiting: 2 = depth
    blocked = threading.Thread(target=w.submit, args=(lambda: None,))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # back-pressure: the producer waits
    gate.set()
    blocked.join(5)
    assert not blocked.is_alive()
    w.drain()
    w.close()


def test_a_failed_job_stops_later_ones_and_is_raised() -> None:
    ran: list[str] = []
    w = BackgroundWriter("t", depth=5)

    def boom() -> None:
        raise RuntimeError("redis said no")

    w.submit(lambda: ran.append("a"))
    w.submit(boom)
    w.submit(lambda: ran.append("c"))  # dropped: its batch must not look written
    with pytest.raises(RuntimeError, match="redis said no"):
        w.drain()
    assert ran == ["a"] and w.failed
    with pytest.raises(RuntimeError):
        w.submit(lambda: ran.append("d"))
    w.close()
    assert ran == ["a"]


def test_system_exit_in_a_job_reaches_the_caller() -> None:
    w = BackgroundWriter("t")

    def stop() -> None:
        raise SystemExit(1)

    w.submit(stop)
    with pytest.raises(SystemExit):
        w.drain()
    w.close()
