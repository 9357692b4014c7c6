"""``streamfeat worker --processes N``: N worker processes of one group on this host.

Python runs one core per process; the partitions of the topics are shared among the
processes by the consumer group, exactly as among workers on different hosts. They share
``--state-dir`` (a partition's store is only ever open in the process that owns it).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["run_processes"]


def run_processes(worker_argv: Sequence[str], processes: int,
                  metrics_port: int | None = None) -> int:
    """Start ``processes`` copies of ``streamfeat worker`` and wait for all of them.

    ``worker_argv`` are the worker's arguments without ``--processes`` and
    ``--metrics-port``; process ``i`` serves its metrics on ``metrics_port + i``.
    SIGTERM and SIGINT are passed on; the exit status is the worst of the children's.
    """
    children: list[subprocess.Popen[bytes]] = []
    for i in range(processes):
        argv = [sys.executable, "-m", "streamfeat.cli", "worker", *worker_argv]
        if metrics_port is not None:
            argv += ["--metrics-port", str(metrics_port + i)]
        children.append(subprocess.Popen(argv))  # noqa: S603 - our own command line

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max((abs(c) for c in codes), default=0)
