"""Object stores: a local directory (:class:`LocalStore`) or a remote bucket.

Paths inside a store are relative, ``/``-separated (``_checkpoints/orders/orders-0/...``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from streamfeat.errors import StateError

__all__ = ["LocalStore", "ObjectStore", "open_store"]


class ObjectStore(Protocol):
    """Objects by relative path; each written whole or not at all."""

    @property
    def url(self) -> str:
        """Where the store is (a path or a URL), for messages."""
        ...

    def put(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path``, replacing it: readers see the old or the new whole."""
        ...

    def get(self, path: str) -> bytes:
        """The object at ``path``; ``FileNotFoundError`` when there is none."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Paths of the objects under ``prefix`` (a folder), at any depth, sorted."""
        ...

    def delete(self, paths: Iterable[str]) -> None:
        """Delete objects (absent ones are ignored)."""
        ...


class LocalStore:
    """A directory: an object is a file, written to a temporary file in its folder, fsynced,
    then renamed over its path."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, path: str) -> Path:
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"object path {path!r} must be relative, without '..'")
        return self.root / path

    def put(self, path: str, data: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def get(self, path: str) -> bytes:
        return self._path(path).read_bytes()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp"))

    def delete(self, paths: Iterable[str]) -> None:
        for path in paths:
            self._path(path).unlink(missing_ok=True)


def open_store(location: str | os.PathLike[str]) -> ObjectStore:
    """The store at ``location``: a local path, or a URL ``scheme://bucket/prefix``."""
    text = os.fspath(location)
    if "://" not in text:
        return LocalStore(text)
    scheme = text.split("://", 1)[0]
    raise StateError(
        f"object store {text!r}: scheme {scheme!r} is not supported yet; use a local path")
