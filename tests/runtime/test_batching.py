"""The worker's batch size (issue #18): larger while behind, toward ``--batch-seconds`` of
work, never above ``--batch-size`` nor beyond what the state budget can take."""

from __future__ import annotations

import pytest

from streamfeat.runtime.batching import START_RECORDS, BatchSizer


def test_starts_at_the_former_fixed_size_or_the_ceiling() -> None:
    assert BatchSizer(250_000, 2.0).size == START_RECORDS
    assert BatchSizer(500, 2.0).size == 500


def test_grows_while_polls_come_back_full_toward_the_target_time() -> None:
    sizer = BatchSizer(1_000_000, 2.0)
    sizes = []
    for _ in range(8):  # 50k records/s: 2 s of work is 100k records
        sizes.append(sizer.observe(sizer.size, sizer.size / 50_000))
    assert sizes[:2] == [80_000, 100_000]  # at most 4 times larger at a step
    assert sizes[-1] == 100_000
    sizer = BatchSizer(1_000_000, 4.0)
    sizes = [sizer.observe(sizer.size, sizer.size / 500_000) for _ in range(4)]
    assert sizes == [80_000, 320_000, 1_000_000, 1_000_000]


def test_never_above_the_ceiling() -> None:
    sizer = BatchSizer(30_000, 2.0)
    for _ in range(5):
        sizer.observe(sizer.size, 0.01)
    assert sizer.size == 30_000


def test_a_short_poll_does_not_grow_it() -> None:
    """Caught up: the poll brought what was ready; asking for more changes nothing."""
    sizer = BatchSizer(1_000_000, 2.0)
    assert sizer.observe(3_000, 0.01) == START_RECORDS


def test_slow_batches_shrink_it_halving_at_most_not_below_the_start() -> None:
    sizer = BatchSizer(1_000_000, 2.0)
    sizer.size = 200_000
    assert sizer.observe(200_000, 8.0) == 100_000  # 25k/s: 50k would take 2 s
    assert sizer.observe(100_000, 4.0) == 50_000
    assert sizer.observe(50_000, 4.0) == 25_000
    assert sizer.observe(25_000, 2.5) == START_RECORDS  # 10k/s: not below the start
    for _ in range(5):
        sizer.observe(sizer.size, 1000.0)
    assert sizer.size == START_RECORDS
    sizer.size = 80_000
    assert sizer.observe(5_000, 9.0) == 40_000  # a short poll that took too long


def test_kept_within_the_room_of_the_state_budget() -> None:
    sizer = BatchSizer(1_000_000, 2.0)
    assert sizer.observe(20_000, 0.01, room=22_000) == 22_000
    assert sizer.observe(22_000, 0.01, room=22_000) == 22_000
    assert sizer.observe(22_000, 0.01, room=None) == 88_000
    assert sizer.observe(88_000, 0.01, room=5_000) == 5_000  # below the start if it must
    assert sizer.observe(5_000, 0.01, room=10) == 1_000  # never below the least


@pytest.mark.parametrize("ceiling, target", [(0, 2.0), (10, 0.0), (10, -1.0)])
def test_refuses_sizes_that_make_no_sense(ceiling: int, target: float) -> None:
    with pytest.raises(ValueError):
        BatchSizer(ceiling, target)
