"""``--state-cache-mb auto``: the state budget sized from the memory limit of the worker's
container, as a JVM sizes its heap.

A worker holds the window state of recently used entities in memory, within its state
budget, and the rest in RocksDB (:mod:`streamfeat.pipeline.cache`). The budget decides
how much of a high-cardinality topic's state is read back from disk: on the million-user
case (2M events over 1M uniform users, the benchmark topology's count, sum and mean),
128 MiB ran at 24-26k events/s and 256 MiB at 34k; with 512 MiB every entity stayed held
and the worker ran at 48k (benchmarks/RESULTS.md, "The state budget from the container's
memory limit"). With ``auto``, in a container with a memory limit
(cgroup v2 ``memory.max``, v1 ``memory.limit_in_bytes``, the lowest along the process's
cgroup path) a worker process takes

    (:data:`LIMIT_SHARE` x limit / processes - :data:`RESERVE_MB`) / :data:`PEAK_PER_BUDGET_MB`

and at least :data:`LEAST_MB`: 497 MiB for a 2 GiB limit, 128 MiB (the default) for 1 GiB.
Of the peaks that case reached at budgets of 80 to 1024 MiB, all but one lie under
:data:`RESERVE_MB` + :data:`PEAK_PER_BUDGET_MB` x budget (1,587 MiB at 384, 27 over; the
other run at 384 peaked at 1,288), and the share leaves a tenth of the limit for that
spread. Without a limit below the machine's memory, ``auto`` gives
:data:`~streamfeat.config.DEFAULT_STATE_CACHE_MB`.

**Not the default**, because that rule holds for the topology it was measured on and not
for richer ones: a million users on the rich benchmark topology (distinct counts,
percentiles, top-k, sessions) and on ``topologies/orders.yaml`` were killed for memory in a
2 GiB cgroup with the 497 MiB ``auto`` gives there. Rich held 100-120k entities at a
steady 1.3-1.4 GiB, then rose by over 500 MiB within nine seconds, past the limit: the
transient memory of a batch or a commit over that many rich entities, which the rule does
not model. Lowering the budget once resident memory passed a target (tried) did not catch
that rise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from streamfeat.config import DEFAULT_STATE_CACHE_MB

__all__ = ["LEAST_MB", "LIMIT_SHARE", "PEAK_PER_BUDGET_MB", "RESERVE_MB", "StateBudgetChoice",
           "choose_state_budget", "container_memory_limit", "memory_cgroups"]

LIMIT_SHARE = 0.9
"""The share of the limit a worker process's peak may reach (the rest: spread between runs,
and what else runs in the container)."""
RESERVE_MB = 600.0
"""What a worker process's peak holds besides the state budget's entities: the libraries
(numba's kernels ~110-150 MiB), the batches being decoded and aggregated, the commit's
bytes, RocksDB's write buffers, the sink's value texts and the snapshot buffer. 923 MiB,
the highest peak measured at a 128 MiB budget, less 128 x :data:`PEAK_PER_BUDGET_MB`."""
PEAK_PER_BUDGET_MB = 2.5
"""Peak resident memory per MiB of state budget (the budget counts the state's own bytes;
array slack, the entity index, Python objects and the larger batches a larger budget
allows come on top): 1.9 from 128 to 256 MiB, up to 2.6 from 128 to 384."""
LEAST_MB = 32.0
"""The least budget a limit gives: below it, evicting and reading back would cost more
than the memory saved."""

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")
_MIB = 2**20


@dataclass(frozen=True)
class StateBudgetChoice:
    """The budget a worker process takes, and why (for its start-up log)."""

    mb: float
    limit_mb: float | None  # the container's memory limit it was sized from, if any

    def describe(self) -> str:
        if self.limit_mb is None:
            return (f"state budget {self.mb:g} MiB per worker process (--state-cache-mb "
                    "auto found no container memory limit: the default)")
        return (f"state budget {self.mb:g} MiB per worker process, sized from the "
                f"container's memory limit of {self.limit_mb:g} MiB (--state-cache-mb auto)")


def choose_state_budget(processes: int = 1, limit_bytes: int | None = None
                        ) -> StateBudgetChoice:
    """The budget of each of ``processes`` worker processes sharing a container whose
    memory limit is ``limit_bytes`` (``None``: no limit, the default budget)."""
    if limit_bytes is None:
        return StateBudgetChoice(float(DEFAULT_STATE_CACHE_MB), None)
    limit_mb = limit_bytes / _MIB
    share = LIMIT_SHARE * limit_mb / max(processes, 1)
    mb = max(LEAST_MB, (share - RESERVE_MB) / PEAK_PER_BUDGET_MB)
    return StateBudgetChoice(float(int(mb)), float(int(limit_mb)))


def container_memory_limit(root: Path = _CGROUP_ROOT, cgroup_file: Path = _PROC_CGROUP,
                           machine_bytes: int | None = None) -> int | None:
    """The memory limit of this process's container in bytes: the lowest ``memory.max``
    (cgroup v2) or ``memory.limit_in_bytes`` (v1) from its cgroup up to the root of the
    hierarchy as mounted at ``root``; ``None`` when there is none below the machine's
    memory (``machine_bytes``, default: this machine's), or none can be read."""
    found = [limit for mount, path, name in memory_cgroups(root, cgroup_file)
             for limit in _limits_along(mount, path, name)]
    machine = machine_bytes if machine_bytes is not None else _machine_bytes()
    below = [n for n in found if n < machine]
    return min(below) if below else None


def memory_cgroups(root: Path = _CGROUP_ROOT, cgroup_file: Path = _PROC_CGROUP
                   ) -> list[tuple[Path, str, str]]:
    """This process's cgroups that hold a memory limit, from ``cgroup_file``: (the
    hierarchy's mount under ``root``, the cgroup's path in it, the limit file's name) for
    cgroup v2's unified hierarchy and v1's memory controller; none if it cannot be read."""
    try:
        lines = cgroup_file.read_text().splitlines()
    except OSError:
        return []
    out: list[tuple[Path, str, str]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _id, controllers, path = parts
        if controllers == "":  # v2: one unified hierarchy
            out.append((root, path, "memory.max"))
        elif "memory" in controllers.split(","):  # v1: the memory controller's own
            out.append((root / "memory", path, "memory.limit_in_bytes"))
    return out


def _limits_along(mount: Path, path: str, name: str) -> list[int]:
    """The limits in ``name`` of the cgroup at ``path`` and of each of its ancestors that
    this mount shows (in a container, the mount's root is often the container's own
    cgroup, and the host's path is not there)."""
    parts = [p for p in path.strip("/").split("/") if p and p != ".."]
    out: list[int] = []
    for depth in range(len(parts), -1, -1):
        value = _read_limit(mount.joinpath(*parts[:depth], name))
        if value is not None:
            out.append(value)
    return out


def _read_limit(file: Path) -> int | None:
    try:
        text = file.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


def _machine_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 2**63 - 1
