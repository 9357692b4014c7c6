"""A memory cgroup made for one process: the container a worker would run in, on a bare
machine (``harness.py --sf-memory-limit-mb``; ``tests/runtime/test_sizing_cgroup.py``).

A child of this process's own memory cgroup (v1's memory hierarchy, or v2's unified one),
with a memory limit; a command joins it before it starts (:meth:`MemoryCgroup.wrap`), so
``streamfeat worker`` sees the limit as in a container. Needs root and a writable memory
controller: :meth:`MemoryCgroup.make` returns ``None`` where this machine does not allow it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streamfeat.runtime.sizing import memory_cgroups

__all__ = ["MemoryCgroup"]

_MIB = 2**20


@dataclass
class MemoryCgroup:
    path: Path
    v2: bool

    @classmethod
    def make(cls, limit_mb: float | None = None) -> MemoryCgroup | None:
        """A new cgroup under this process's, limited to ``limit_mb`` if given; ``None``
        where none can be made here."""
        if os.geteuid() != 0:
            return None
        for mount, path, limit_file in memory_cgroups():  # as the worker finds its limit
            parent = mount / path.lstrip("/")
            made = cls(parent / f"streamfeat-{uuid.uuid4().hex[:8]}", limit_file == "memory.max")
            try:
                made.path.mkdir()
            except OSError:
                continue
            if (made.path / made._limit_file).exists():
                if limit_mb is not None:
                    made.limit(limit_mb)
                return made
            made.close()
        return None

    @property
    def _limit_file(self) -> str:
        return "memory.max" if self.v2 else "memory.limit_in_bytes"

    def limit(self, mb: float) -> None:
        (self.path / self._limit_file).write_text(str(int(mb * _MIB)))

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        """``cmd``, joining this cgroup first (the same process: ``exec``)."""
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *cmd]

    def peak_mb(self) -> float | None:
        """The most memory (resident and page cache) the cgroup held (v2: kernel 5.19+)."""
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text()) / _MIB
        except (OSError, ValueError):
            return None

    def limit_hits(self) -> int | None:
        """Times the cgroup reached its limit (and the kernel reclaimed or killed)."""
        try:
            if self.v2:
                events = dict(line.split() for line in
                              (self.path / "memory.events").read_text().splitlines())
                return int(events.get("max", 0))
            return int((self.path / "memory.failcnt").read_text())
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Remove the cgroup (once its processes have exited)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()
