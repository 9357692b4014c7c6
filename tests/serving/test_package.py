"""streamfeat.serving keeps the conventions of tests/test_public_api.py (what it must not
import is enforced by an import-linter contract in pyproject.toml)."""

from __future__ import annotations

import streamfeat.serving


def test_all_is_sorted_resolves_and_the_docstring_says_what_it_must_not_import() -> None:
    exported = streamfeat.serving.__all__
    kinds = [(0 if n.isupper() else 1 if n[0].isupper() else 2, n) for n in exported]
    assert kinds == sorted(kinds)
    assert all(hasattr(streamfeat.serving, n) for n in exported)
    assert "must not import" in (streamfeat.serving.__doc__ or "").lower()
