"""The checkpoint's timed commit, a partition at a time (:meth:`Checkpoint.commit_step`)."""

from __future__ import annotations

from streamfeat.runtime.checkpoint import Checkpoint


class Stage:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def commit(self) -> None:
        self.log.append(self.name)


def test_a_timed_commit_stores_one_partition_per_step_then_waits_the_interval() -> None:
    now = [0.0]
    log: list[str] = []
    settled: list[float] = []
    cp = Checkpoint(lambda: settled.append(now[0]), every_s=5.0, clock=lambda: now[0])
    stages = {p: Stage(f"p{p}", log) for p in range(3)}
    cp.track((("t", p), s) for p, s in stages.items())
    assert not cp.due()
    now[0] = 5.0
    assert cp.due()
    assert cp.commit_step() == {("t", 0)}
    cp.track([(("t", 0), stages[0])])  # a new batch of p0 during the round: the next round's
    assert cp.due()  # the round goes on
    now[0] = 5.5
    assert cp.commit_step() == {("t", 1)}
    now[0] = 6.0
    assert cp.commit_step() == {("t", 2)}
    assert log == ["p0", "p1", "p2"]
    assert settled == [5.0, 5.5, 6.0]  # each store waits for the effects submitted so far
    assert not cp.due()  # the round is over: the next one 5 s after it ended
    now[0] = 10.9
    assert not cp.due()
    now[0] = 11.0
    assert cp.due()
    assert cp.commit_step() == {("t", 0)}
    assert not cp.pending


def test_a_full_commit_ends_a_round_and_a_partition_gone_is_skipped() -> None:
    now = [0.0]
    log: list[str] = []
    cp = Checkpoint(lambda: None, every_s=1.0, clock=lambda: now[0])
    cp.track([(("t", 0), Stage("p0", log)), (("t", 1), Stage("p1", log)),
              (("t", 2), Stage("p2", log))])
    now[0] = 1.0
    assert cp.commit_step() == {("t", 0)}
    assert cp.commit({("t", 1)}) == {("t", 1)}  # revoked: stored at once
    assert cp.commit_step() == {("t", 2)}  # p1 is no longer pending: the step goes past it
    assert log == ["p0", "p1", "p2"]
    cp.track([(("t", 0), Stage("p0", log))])
    now[0] = 2.0
    assert cp.due()
    assert cp.commit() == {("t", 0)}  # e.g. at shutdown: everything, and the round ends
    assert not cp.due()
