"""Every Faust/aiokafka internal the faust runtime relies on still exists where it is named.

The list lives next to the code that uses it (``FAUST_INTERNALS``); each entry names the test
that checks the behaviour streamfeat relies on. This test fails first on an upgrade that
moves or renames one, before any end-to-end test has to find out why.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from streamfeat.runtime.consumers.faust_app import FAUST_INTERNALS

ROOT = Path(__file__).resolve().parents[2]


def _resolve(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        attr = parts[-1]
        if hasattr(owner, attr):
            return True
        # an attribute set on instances: look for its assignment in the class's source
        return inspect.isclass(owner) and f"self.{attr} =" in inspect.getsource(owner)
    return False


@pytest.mark.parametrize(("dotted", "use", "guard"), FAUST_INTERNALS,
                         ids=[d for d, _, _ in FAUST_INTERNALS])
def test_internal_exists_and_has_a_guard(dotted: str, use: str, guard: str) -> None:
    assert use
    assert _resolve(dotted), f"{dotted} is gone: the faust runtime ({use}) must be adapted"
    for path in guard.split(" and "):
        assert (ROOT / path).is_file(), f"guard test {path} of {dotted} is missing"
