"""Value monitoring's tests: the pure ones (sketch, drift, monitor) and the end-to-end ones
on the real Kafka and Redis of the session, which use the integration helpers."""

from __future__ import annotations

import sys
from pathlib import Path

# The end-to-end helpers (tests/integration/harness.py), imported by bare name as there.
_INTEGRATION = str(Path(__file__).resolve().parents[1] / "integration")
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)
