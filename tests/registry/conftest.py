"""The registry's tests: the pure ones (the topology's ``models:``, versions and their
differences) and those on the real Kafka and Redis of the session, which use the
integration helpers and leave no catalog entry behind."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The end-to-end helpers (tests/integration/harness.py), imported by bare name as there.
_INTEGRATION = str(Path(__file__).resolve().parents[1] / "integration")
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)


@pytest.fixture
def forget(redis_url: str) -> Iterator[Callable[[str], str]]:
    """``forget(name)`` returns ``name`` and, after the test, deletes every key of that
    topology from the session's Redis: its features, its catalog entries, its model reads,
    and its name from the registry's sets (the Redis is shared with other tests)."""
    import redis as redis_lib

    from streamfeat.registry import READ_SET, TOPOLOGY_SET

    names: list[str] = []

    def add(name: str) -> str:
        names.append(name)
        return name

    yield add
    client = redis_lib.Redis.from_url(redis_url)
    try:
        for name in names:
            keys = [*client.scan_iter(match=f"sf:{name}:*", count=1000),
                    *client.scan_iter(match=f"sfmeta:{name}:*", count=1000)]
            if keys:
                client.delete(*keys)
            client.srem(TOPOLOGY_SET, name)
            client.srem(READ_SET, name)
    finally:
        client.close()
