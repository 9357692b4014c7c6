"""The state budget a worker takes when not told: from its container's memory limit.

The cgroup trees here are directories laid out as the kernel mounts them (v1 and v2, on a
host and inside a container's namespace); ``tests/runtime/test_sizing_cgroup.py`` runs
the worker command inside a real memory cgroup where this machine lets a test make one.
"""

from __future__ import annotations

from pathlib import Path

from streamfeat.config import DEFAULT_STATE_CACHE_MB
from streamfeat.runtime.sizing import (
    LEAST_MB,
    LIMIT_SHARE,
    PEAK_PER_BUDGET_MB,
    RESERVE_MB,
    choose_state_budget,
    container_memory_limit,
)

GiB = 2**30
MACHINE = 24 * GiB


def cgroups(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "sys-fs-cgroup"
    for name, text in files.items():
        file = root / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text + "\n")
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cgroup").write_text(proc)
    return root, tmp_path / "cgroup"


def limit(tmp_path: Path, proc: str, files: dict[str, str]) -> int | None:
    root, cgroup_file = cgroups(tmp_path, proc, files)
    return container_memory_limit(root, cgroup_file, machine_bytes=MACHINE)


def test_v2_the_lowest_limit_from_the_process_cgroup_up_to_the_root(tmp_path: Path) -> None:
    assert limit(tmp_path, "0::/kubepods/pod1/worker\n", {
        "memory.max": "max",
        "kubepods/memory.max": str(20 * GiB),
        "kubepods/pod1/memory.max": str(2 * GiB),
        "kubepods/pod1/worker/memory.max": "max",
    }) == 2 * GiB


def test_v2_inside_a_container_namespace_the_mount_root_is_its_own(tmp_path: Path) -> None:
    # the container sees "0::/" and its own cgroup mounted at /sys/fs/cgroup
    assert limit(tmp_path, "0::/\n", {"memory.max": str(GiB)}) == GiB


def test_v1_the_memory_controller_hierarchy(tmp_path: Path) -> None:
    # Docker on cgroup v1: /proc/self/cgroup names the host's path, which the container's
    # mount does not show; its root is the container's cgroup
    proc = "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n"
    assert limit(tmp_path, proc, {"memory/memory.limit_in_bytes": str(3 * GiB)}) == 3 * GiB
    # on a host: the process's own cgroup under the mount
    assert limit(tmp_path, "4:memory:/a/b\n", {
        "memory/memory.limit_in_bytes": "9223372036854771712",
        "memory/a/b/memory.limit_in_bytes": str(GiB // 2),
    }) == GiB // 2


def test_no_limit_unlimited_or_at_the_machines_memory_or_unreadable(tmp_path: Path) -> None:
    assert limit(tmp_path / "a", "0::/\n", {"memory.max": "max"}) is None
    assert limit(tmp_path / "b", "4:memory:/\n",
                 {"memory/memory.limit_in_bytes": "9223372036854771712"}) is None
    assert limit(tmp_path / "c", "0::/x\n", {"x/memory.max": str(MACHINE)}) is None
    assert limit(tmp_path / "d", "0::/\n", {"memory.max": "garbage"}) is None
    assert limit(tmp_path / "e", "", {}) is None
    assert container_memory_limit(tmp_path / "none", tmp_path / "no-such-file") is None


def test_the_budget_from_a_limit() -> None:
    assert choose_state_budget(1, None).mb == DEFAULT_STATE_CACHE_MB
    assert choose_state_budget(1, None).limit_mb is None
    two = choose_state_budget(1, 2 * GiB)
    assert two.mb == int((LIMIT_SHARE * 2048 - RESERVE_MB) / PEAK_PER_BUDGET_MB) == 497
    assert two.limit_mb == 2048
    assert "2048 MiB" in two.describe() and "497 MiB" in two.describe()
    # each process of --processes has its own reserve
    assert choose_state_budget(2, 4 * GiB).mb == two.mb
    assert choose_state_budget(1, 8 * GiB).mb > 4 * two.mb
    # a small container: the least budget, never a negative one
    assert choose_state_budget(1, GiB // 2).mb == LEAST_MB
    assert choose_state_budget(4, 2 * GiB).mb == LEAST_MB


def test_a_one_gib_limit_gives_the_default_and_the_budget_follows_the_limit() -> None:
    """The default (no limit) is what a million-user worker was measured to run with in a
    1 GiB cgroup (benchmarks/RESULTS.md); a larger limit gives more, more processes less."""
    assert choose_state_budget(1, GiB).mb == DEFAULT_STATE_CACHE_MB
    budgets = [choose_state_budget(1, n * GiB // 4).mb for n in range(2, 64)]
    assert budgets == sorted(budgets) and budgets[-1] > 20 * budgets[0]
    assert [choose_state_budget(n, 16 * GiB).mb for n in (1, 2, 4, 8)] == sorted(
        (choose_state_budget(n, 16 * GiB).mb for n in (1, 2, 4, 8)), reverse=True)
