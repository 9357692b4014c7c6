"""Object stores: a local directory (:class:`LocalStore`) or a remote bucket.

Paths inside a store are relative, ``/``-separated (``_checkpoints/orders/orders-0/...``).
"""

from __future__ import annotations

import builtins
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import pyarrow.fs as pafs

from streamfeat.errors import ConfigError

__all__ = ["LocalStore", "ObjectStore", "open_store"]


class ObjectStore(Protocol):
    """Objects by relative path; each written whole or not at all."""

    @property
    def url(self) -> str:
        """Where the store is (a path or a URL), for messages; :func:`open_store` of it opens
        the same store again (in another process, say)."""
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

    def folders(self, prefix: str) -> builtins.list[str]:
        """Names of the folders directly under ``prefix`` (``""``: the root), sorted; one
        listing, without looking inside them (an object store's common prefixes)."""
        ...

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and the root in it: the object at ``path`` is
        ``f"{root}/{path}"`` there (to read Parquet in ranges rather than whole)."""
        ...

    def clean(self, prefix: str) -> None:
        """Delete what interrupted writes left under ``prefix`` (a local store's temporary
        files; nothing in an object store, where an interrupted upload is never visible)."""
        ...


def check_path(path: str) -> str:
    """``path`` when it is relative and without ``..``; else ``ValueError``."""
    if path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"object path {path!r} must be relative, without '..'")
    return path


class LocalStore:
    """A directory: an object is a file, written to a temporary file in its folder, fsynced,
    then renamed over its path."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, path: str) -> Path:
        return self.root / check_path(path)

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

    def folders(self, prefix: str) -> builtins.list[str]:
        base = self._path(prefix) if prefix else self.root
        try:
            with os.scandir(base) as entries:
                return sorted(e.name for e in entries if e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), self.root.absolute().as_posix()

    def clean(self, prefix: str) -> None:
        base = self._path(prefix) if prefix else self.root
        if base.is_dir():
            for leftover in base.rglob("*.tmp"):
                leftover.unlink(missing_ok=True)


def open_store(location: str | os.PathLike[str]) -> ObjectStore:
    """The store at ``location``: a local path (or ``file://`` URL), or an object-store URL
    ``scheme://bucket/prefix`` (:mod:`streamfeat.storage.remote`: ``s3://`` with the standard
    AWS settings, ``gs://`` and the others pyarrow or fsspec know).

    A remote store is checked at once: a bucket that does not exist, credentials refused or
    an endpoint that does not answer raise :class:`~streamfeat.errors.ConfigError` saying
    what to set.
    """
    text = os.fspath(location)
    if "://" not in text:
        return LocalStore(text)
    scheme, rest = text.split("://", 1)
    if scheme.lower() == "file":
        return LocalStore(rest)
    if not rest.strip("/"):
        raise ConfigError(f"object store {text!r} names no bucket; write {scheme}://bucket/prefix")
    from streamfeat.storage.remote import open_remote

    return open_remote(text)
