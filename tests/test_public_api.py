"""The public surface: every package's ``__all__`` is sorted, complete and importable."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

PACKAGES = [
    "streamfeat",
    "streamfeat.topology",
    "streamfeat.operators",
    "streamfeat.records",
    "streamfeat.state",
    "streamfeat.sinks",
    "streamfeat.snapshot",
    "streamfeat.replay",
    "streamfeat.runtime",
    "streamfeat.runtime.consumers",
    "streamfeat.registry",  # (with the root, these export names on first use: streamfeat.lazy)
    "streamfeat.serving",
]


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions."""
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


PUBLIC_API = [
    "Client",
    "ConfigError",
    "DecodeError",
    "EntityFeatures",
    "ReplayResult",
    "SinkError",
    "StateError",
    "StreamfeatError",
    "TopologyDef",
    "TopologyError",
    "VerifyReport",
    "load_topology",
    "replay",
    "training_set",
    "verify",
]


def test_the_public_api_is_pinned() -> None:
    """Adding to or removing from the package root's API is a decision: change it here too."""
    import streamfeat

    assert streamfeat.__all__ == PUBLIC_API
    for name in PUBLIC_API:  # (most are imported on first use)
        getattr(streamfeat, name)
    public = {n for n, v in vars(streamfeat).items()
              if not n.startswith("_") and not isinstance(v, types.ModuleType)
              and n != "annotations"}  # from __future__
    assert public == set(PUBLIC_API), "names at the package root that are not in __all__"
    assert set(dir(streamfeat)) >= set(PUBLIC_API)


def test_the_root_replay_stays_the_function_whatever_is_imported_first() -> None:
    """``streamfeat.replay`` is the function, also when the ``streamfeat.replay`` package
    was imported before it was first read (the import system sets a subpackage on its
    parent)."""
    code = ("import sys, streamfeat.replay.backfill\n"
            "b = sys.modules['streamfeat.replay.backfill']\n"
            "import streamfeat\n"
            "assert streamfeat.replay is b.replay, streamfeat.replay\n"
            "from streamfeat import replay\n"
            "assert replay is b.replay\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stderr


#: what a model server's ``import streamfeat.client`` must not bring in (numba alone is
#: ~150 MiB of resident memory; with these the import took 1.2 s and 153 MiB, without them
#: 0.4 s and 47 MiB)
NOT_FOR_READERS = ("numba", "pyarrow", "faust", "confluent_kafka", "rocksdict",
                   "streamfeat.operators", "streamfeat.pipeline", "streamfeat.replay",
                   "streamfeat.runtime", "streamfeat.registry.catalog")


@pytest.mark.parametrize("module", ["streamfeat", "streamfeat.client",
                                    "streamfeat.registry.usage"])
def test_readers_import_no_engine(module: str) -> None:
    """The client, the package root and the usage recorder the readers share import no
    engine (operators, pipeline, Arrow, Kafka, RocksDB, numba): a model server pays for
    what it reads features with, not for the worker."""
    code = (f"import sys, {module}\n"
            f"print(sorted(m for m in sys.modules if m.startswith({NOT_FOR_READERS!r})))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_every_package_says_what_it_owns_and_must_not_import() -> None:
    for name in PACKAGES[1:]:
        doc = importlib.import_module(name).__doc__ or ""
        assert "must not import" in doc.lower(), name


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported, key=_isort_key), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported)
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"


def test_importing_has_no_side_effects() -> None:
    """Importing streamfeat must not read argv, touch the network or configure logging."""
    code = (
        "import logging, sys; sys.argv = ['x', '--bogus'];"
        "import streamfeat, streamfeat.runtime, streamfeat.cli;"
        "assert not logging.getLogger().handlers, logging.getLogger().handlers"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stderr


def test_validate_command_reports_file_line_and_exits_nonzero(tmp_path: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.yaml"
    bad.write_text(
        "version: 1\nname: shop\nsource: {topic: t, key: user_id}\n"
        "features:\n  - name: n\n    agg: cnt\n    windows: [5m]\n"
        "  - name: s\n    agg: sum\n    windows: [5x]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "streamfeat.cli", "validate", str(bad)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert done.returncode == 1
    assert f"{bad}:6:" in done.stderr  # unknown aggregation
    assert f"{bad}:8:" in done.stderr or f"{bad}:9:" in done.stderr  # sum without field
    assert f"{bad}:10:" in done.stderr  # bad duration
    good = subprocess.run(
        [sys.executable, "-m", "streamfeat.cli", "validate", "topologies/orders.yaml"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert good.returncode == 0, good.stderr


def test_the_command_line_parser_imports_no_engine_and_no_server() -> None:
    """Every command builds the whole parser (``serve``'s defaults included) before it runs:
    building it imports no engine and no HTTP server, so ``streamfeat validate`` or
    ``registry`` start in a fraction of the worker's imports."""
    code = ("import sys\n"
            "from streamfeat.cli import build_parser\n"
            "build_parser().parse_args(['validate', 'x.yaml'])\n"
            f"print(sorted(m for m in sys.modules if m.startswith("
            f"{(*NOT_FOR_READERS, 'starlette', 'uvicorn', 'streamfeat.serving.app')!r})))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
