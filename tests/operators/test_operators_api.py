"""The public surface of streamfeat.operators: sorted, complete, importable."""

from __future__ import annotations

import streamfeat.operators as operators


def isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_exported() -> None:
    names = operators.__all__
    assert names == sorted(names, key=isort_key)
    for name in names:
        assert hasattr(operators, name), name
