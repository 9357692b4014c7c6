"""A package's exports imported on first use (PEP 562), so that importing one small part of
streamfeat (the client in a model server, ``streamfeat validate``) does not import the
pipeline, the operators, Arrow and the rest through a package's ``__init__``.

A package lists where each exported name lives; :func:`exports` gives the module-level
``__getattr__`` and ``__dir__`` that import it when it is first read, and keeps it in the
package's namespace from then on. Type checkers read the same names from an ``if
TYPE_CHECKING:`` block of imports.

Must not import anything of streamfeat: every package may use it.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["exports"]


def exports(package: str, where: Mapping[str, str]) -> tuple[
        Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose names of ``where`` (name ->
    module defining it) are imported on first use.

    A name that is also a subpackage's (``streamfeat.replay`` the function, and the package
    of the same name) stays the exported object: importing the subpackage later does not
    replace it (the import system sets the subpackage as an attribute of its parent)."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        types.ModuleType.__setattr__(sys.modules[package], name, value)  # (past _shadowing)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    shadowed = {name for name, module in where.items() if module == f"{package}.{name}"
                or module.startswith(f"{package}.{name}.")}
    if shadowed:
        sys.modules[package].__class__ = _shadowing(shadowed)
    return __getattr__, __dir__


def _shadowing(names: set[str]) -> type[types.ModuleType]:
    """A module class whose ``names`` are not replaced by subpackages of the same name."""

    class Package(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            if name in names and isinstance(value, types.ModuleType):
                return  # the subpackage stays reachable through sys.modules and imports
            super().__setattr__(name, value)

    return Package
