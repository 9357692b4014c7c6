"""``streamfeat worker --state-cache-mb auto`` sizes its state budget from the memory limit
of the cgroup it runs in: here a real one, made for the test where this machine lets
a test make one (root, a writable memory hierarchy), and the worker command run inside it
up to its loop (the loop itself replaced: what it was given is printed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamfeat.config import DEFAULT_STATE_CACHE_MB
from streamfeat.runtime.sizing import choose_state_budget, container_memory_limit

ROOT = Path(__file__).resolve().parents[2]


def _memcgroup() -> Any:
    """benchmarks/memcgroup.py, loaded from its file: the benchmarks folder stays off
    ``sys.path`` (its ``harness`` would shadow tests/integration/harness.py)."""
    spec = importlib.util.spec_from_file_location(
        "streamfeat_bench_memcgroup", ROOT / "benchmarks" / "memcgroup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclass looks its module up)
    spec.loader.exec_module(module)
    return module


MemoryCgroup = _memcgroup().MemoryCgroup

GiB = 2**30

CHILD = textwrap.dedent("""
    import sys
    import streamfeat.cli as cli
    import streamfeat.runtime as runtime
    import streamfeat.runtime.startup as startup
    startup.check_connections = lambda *a, **k: None
    cli.check_connections = startup.check_connections
    class Worker:
        def __init__(self, config):
            print("budget", config.state_cache_mb, flush=True)
        def run(self):
            return 0
    runtime.Worker = Worker
    import streamfeat.runtime.supervisor as supervisor
    def run_processes(argv, processes, metrics_port):  # what each process is told
        print("budget", argv[argv.index("--state-cache-mb") + 1], flush=True)
        return 0
    supervisor.run_processes = run_processes
    sys.exit(cli.main(["worker", "topologies/orders.yaml", "--state-dir", sys.argv[1],
                       *sys.argv[2:]]))
""")


def run_worker_command(tmp_path: Path, *extra: str, cgroup: Any = None
                       ) -> tuple[float | None, str]:
    """The budget the worker command gave its worker (``None``: no limit), and its log."""
    cmd = [sys.executable, "-c", CHILD, str(tmp_path / "state"), *extra]
    if cgroup is not None:  # the child joins the cgroup before Python starts
        cmd = cgroup.wrap(cmd)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    budget = [line for line in done.stdout.splitlines() if line.startswith("budget")]
    assert len(budget) == 1, done.stdout
    value = budget[0].split()[1]
    return (None if value == "None" else float(value)), done.stderr


@pytest.fixture
def memory_cgroup() -> Iterator[Any]:
    """A new child of this process's memory cgroup (benchmarks/memcgroup.py, which
    ``harness.py --sf-memory-limit-mb`` runs the worker in); skipped where this machine
    does not let a test make one."""
    made = MemoryCgroup.make()
    if made is None:
        pytest.skip("no writable memory cgroup here (needs root and the memory controller)")
    try:
        yield made
    finally:
        made.close()


def test_a_worker_in_a_two_gib_cgroup_takes_the_budget_its_limit_gives(
        tmp_path: Path, memory_cgroup: Any) -> None:
    cgroup = memory_cgroup
    cgroup.limit(2048)
    budget, log = run_worker_command(tmp_path, "--state-cache-mb", "auto", cgroup=cgroup)
    assert budget == choose_state_budget(1, 2 * GiB).mb == 497
    assert "sized from the container's memory limit of 2048 MiB" in log
    # the processes of --processes share the limit: each is told its budget
    budget, log = run_worker_command(tmp_path, "--state-cache-mb", "auto", "--processes", "2",
                                     cgroup=cgroup)
    assert budget == choose_state_budget(2, 2 * GiB).mb == 128
    # not asked for: the fixed default, whatever the limit, and nothing said
    budget, log = run_worker_command(tmp_path, cgroup=cgroup)
    assert budget == DEFAULT_STATE_CACHE_MB and "state budget" not in log
    budget, _log = run_worker_command(tmp_path, "--state-cache-mb", "0", cgroup=cgroup)
    assert budget is None  # 0: every entity held


def test_auto_is_what_this_machines_limit_gives(tmp_path: Path) -> None:
    """Outside a test cgroup: this machine's own limit (none on a plain VM: the default)."""
    budget, log = run_worker_command(tmp_path, "--state-cache-mb", "auto")
    assert budget == choose_state_budget(1, container_memory_limit()).mb
    assert "state budget" in log
