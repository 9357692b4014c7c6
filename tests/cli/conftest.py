"""tests/cli: the ``streamfeat`` command as users run it. The end-to-end helpers
(tests/integration/harness.py) and the worker core's in-memory stand-ins
(tests/runtime/memory.py) are imported by bare name, as there."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

for _folder in ("integration", "runtime"):
    _path = str(Path(__file__).resolve().parents[1] / _folder)
    if _path not in sys.path:
        sys.path.insert(0, _path)


@pytest.fixture(autouse=True)
def _command_line_undone() -> Iterator[None]:
    """``streamfeat.cli.main`` configures the process (the root logger's handler and level,
    the exception hooks) as a command does; each test here gets them back as they were."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, sys.excepthook, threading.excepthook)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    sys.excepthook, threading.excepthook = saved[2], saved[3]
