"""docs/tutorial.md, run: every ``bash`` block, in order, in one shell, in an empty directory.

Blocks preceded by ``<!-- tutorial: not run (...) -->`` are shown to readers only (installing,
starting servers); the suite's own Kafka and Redis stand in for them. The tutorial's names
(topic, topology, port) are made unique per run so that reruns never meet old data.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from streamfeat.sinks.values import parse_version

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
_BLOCK = re.compile(r"(?P<mark><!-- tutorial: not run[^>]*-->\n)?```bash\n(?P<code>.*?)```",
                    re.DOTALL)

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def blocks(text: str) -> list[str]:
    """The tutorial's ``bash`` blocks that are run, in order."""
    return [m["code"] for m in _BLOCK.finditer(text) if not m["mark"]]


def test_the_tutorial_is_parsed_as_expected() -> None:
    text = TUTORIAL.read_text()
    every = text.count("```bash")
    skipped = text.count("<!-- tutorial: not run")
    run = blocks(text)
    assert len(run) == every - skipped >= 8, (every, skipped, len(run))
    script = "\n".join(run)
    for step in ("streamfeat validate", "streamfeat generate", "streamfeat worker",
                 "streamfeat get", "python model.py", "streamfeat serve",
                 "streamfeat verify", "streamfeat replay", "streamfeat training-set",
                 "python train.py"):
        assert step in script, f"the tutorial no longer runs {step!r}"


def test_the_tutorial_runs(tmp_path: Path, kafka_bootstrap: str, redis_url: str,
                           unique_id: str) -> None:
    text = TUTORIAL.read_text()
    tag = unique_id.replace("-", "_")
    topology, topic, port = f"page_views_{tag}", f"page-views-{tag}", free_port()
    script = "\n".join(blocks(text))
    script = (script.replace("page_views", topology).replace("page-views", topic)
              .replace("localhost:8000", f"localhost:{port}").replace("--port 8000",
                                                                       f"--port {port}"))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "STREAMFEAT_KAFKA": kafka_bootstrap, "STREAMFEAT_REDIS": redis_url,
           "PYTHONUNBUFFERED": "1"}
    env.pop("STREAMFEAT_TOPOLOGIES", None)
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    said = f"--- stdout\n{ran.stdout[-6000:]}\n--- stderr\n{ran.stderr[-6000:]}"
    assert ran.returncode == 0, said
    work = tmp_path / "tutorial"
    # What each step says it leaves behind is there.
    assert "ok (4 features, 6 Redis fields" in ran.stdout, said
    assert "produced 20000 events" in ran.stdout, said
    assert re.search(r"summary: consumed 20,000 records", ran.stderr), said
    assert '"views__1h"' in ran.stdout, said  # serve's answer
    assert "100.0" in ran.stdout or "100%" in ran.stdout, said  # verify's match rate
    assert (work / "train.parquet").is_file() and (work / "labels.csv").is_file()
    labels = (work / "labels.csv").read_text().splitlines()
    assert f"{len(labels) - 1} rows:" in ran.stdout, said
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.exists(f"sf:{topology}:v1")
        written = client.hget(f"sf:{topology}:v1", "_v")
        assert written is not None and parse_version(written)[0] == 1  # the backfill's
    finally:
        for key in client.scan_iter(f"sf:{topology}:*", count=1000):
            client.delete(key)
        client.close()
