"""The fault-injection suite (issue "survive anything"): real Kafka and Redis, a real worker,
and faults on them (kill -9, SIGTERM, lost state, broker stopped, Redis shut down or frozen,
hostile records in every stream); each test ends with :func:`harness.assert_survived`.

- ``deploy/test`` (CI) runs the short version: one runtime, the shorter faults.
- ``deploy/test -m fault --long``: every case (both runtimes, longer outages, more kills);
  30+ minutes. Add ``-s`` to see each fault's recovery times.
- Each test draws its stream and fault timings from a seed it prints;
  ``STREAMFEAT_FAULT_SEED=N`` repeats a run.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

# The end-to-end helpers (tests/integration/harness.py), imported by bare name as there.
_INTEGRATION = str(Path(__file__).resolve().parents[1] / "integration")
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.fault_cases("runtime,outage_s", short=[...], long=[...])``: the test's
    parameters in the short run, and with ``--long``."""
    mark = metafunc.definition.get_closest_marker("fault_cases")
    if mark is None:
        return
    (argnames,) = mark.args
    cases = mark.kwargs["long" if metafunc.config.getoption("--long") else "short"]
    metafunc.parametrize(argnames, cases)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test with no case in this run (long only) is deselected, not skipped."""
    which = "long" if config.getoption("--long") else "short"
    idle = [item for item in items
            if (mark := item.get_closest_marker("fault_cases")) is not None
            and not mark.kwargs[which]]
    if idle:
        config.hook.pytest_deselected(items=idle)
        items[:] = [item for item in items if item not in idle]


@pytest.fixture
def fault_rng(request: pytest.FixtureRequest) -> random.Random:
    """The test's random source (stream, fault timings): a fresh seed each run, printed;
    ``STREAMFEAT_FAULT_SEED=N`` repeats one."""
    given = os.environ.get("STREAMFEAT_FAULT_SEED")
    seed = int(given) if given else random.SystemRandom().randrange(2**31)
    print(f"\n{request.node.name}: fault seed {seed} (repeat: STREAMFEAT_FAULT_SEED={seed})")
    request.node.user_properties.append(("fault_seed", seed))
    return random.Random(seed)
