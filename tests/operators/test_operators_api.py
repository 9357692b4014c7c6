"""The public surface of streamfeat.operators: sorted, complete, importable; its imports."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import streamfeat.operators as operators

PACKAGE = Path(operators.__file__).parent
ALLOWED = ("streamfeat.operators", "streamfeat.topology", "streamfeat.errors", "numpy",
           "msgspec", "numba")  # numba: kernels.py compiles the rings' loops


def isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_exported() -> None:
    names = operators.__all__
    assert names == sorted(names, key=isort_key)
    for name in names:
        assert hasattr(operators, name), name


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_imports_only_topology_errors_numpy_msgspec_numba_and_the_standard_library() -> None:
    """Pure computation: no records, pipeline, state, sinks, runtime, Kafka, Redis..."""
    for path in sorted(PACKAGE.glob("*.py")):
        for module in imported_modules(path):
            top = module.split(".")[0]
            ok = top in sys.stdlib_module_names or any(
                module == a or module.startswith(a + ".") for a in ALLOWED)
            assert ok, f"{path.name} imports {module}"
