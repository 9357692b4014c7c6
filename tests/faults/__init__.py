"""The fault-injection suite (a package, so that its conftest is not imported as the bare
module ``conftest``, which other tests import from tests/conftest.py)."""
