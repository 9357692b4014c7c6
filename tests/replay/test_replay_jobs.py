"""Jobs in spawned processes report on the ``streamfeat.replay`` logger like jobs run here."""

from __future__ import annotations

import logging

import pytest

from streamfeat.replay.jobs import LOGGER, run_jobs


def _square_and_log(n: int) -> int:
    logging.getLogger(LOGGER).info("job %d", n)
    logging.getLogger(LOGGER).debug("below the parent's level %d", n)
    return n * n


@pytest.mark.parametrize("processes", [1, 2])
def test_results_in_order_and_logs_reach_this_process(
    caplog: pytest.LogCaptureFixture, processes: int
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert run_jobs(_square_and_log, [1, 2, 3], processes) == [1, 4, 9]
    got = sorted(r.getMessage() for r in caplog.records if r.name == LOGGER)
    assert got == ["job 1", "job 2", "job 3"]
