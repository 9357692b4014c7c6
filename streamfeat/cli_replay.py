"""``streamfeat replay``, ``training-set`` and ``verify`` (contract sections 6 and 7).

``streamfeat.cli`` calls :func:`add_replay_commands` with its sub-parsers. The commands
live in :mod:`streamfeat.replay`, which never prints: its progress and warnings go to the
``streamfeat.replay`` logger, which ``streamfeat.cli.main`` shows on stderr (INFO, or DEBUG
with ``-v``), its progress as a bar on a terminal (:mod:`streamfeat.cli_progress`). Only the
results are printed here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamfeat.cli_common import REDIS_HELP, add_progress, add_topology, settle_topology
from streamfeat.config import resolve_redis
from streamfeat.errors import ConfigError

if TYPE_CHECKING:
    from streamfeat.topology import TopologyDef

__all__ = ["add_replay_commands"]

_TOPOLOGY_HELP = "topology YAML file (the old --topology FILE still works, with a warning)"
_SNAPSHOTS_HELP = "the worker's --snapshot-dir: a directory or s3://bucket/prefix"


def _partitions(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(
            f"--partitions {text!r}: give partition numbers separated by commas, e.g. 0,3"
        ) from None


def _redis_checked(url: str) -> str:
    """``url`` once Redis answers there (one line saying what to check otherwise)."""
    from streamfeat.sinks.redis import check

    check(url)
    return url


def _topology(args: argparse.Namespace) -> TopologyDef:
    """The topology, loaded once and before any server is reached: one that cannot be read
    is refused with its file and line whether or not Redis runs."""
    from streamfeat.topology import load_topology

    return load_topology(Path(args.topology))


def _spark(args: argparse.Namespace) -> Any:
    """:mod:`streamfeat.spark` (and its session on ``--spark-master``) for ``--engine spark``."""
    try:
        import streamfeat.spark as engine
    except ImportError as exc:
        raise ConfigError(
            f"--engine spark needs PySpark ({exc}); install it with "
            "pip install 'streamfeat[spark]' (and a Java 17 or 21 runtime)"
        ) from None
    return engine


def _local_only(args: argparse.Namespace, *flags: str) -> None:
    given = [f for f in flags if getattr(args, f.lstrip("-").replace("-", "_"), None)]
    if given and args.engine != "spark":
        raise ConfigError(f"{', '.join(given)} needs --engine spark")


def _display(args: argparse.Namespace) -> Any:
    from streamfeat.cli_progress import ProgressDisplay, choose_mode

    return ProgressDisplay(choose_mode(args.progress))


def _replay(args: argparse.Namespace) -> int:
    settle_topology(args)  # main did; a direct call (tests) too
    from streamfeat.replay import replay

    topology = _topology(args)
    if args.to_redis:
        _redis_checked(args.to_redis)
    _local_only(args, "--output-table")
    if args.engine == "spark":
        engine = _spark(args)
        with _display(args) as display:
            engine.replay(
                topology, args.snapshot_dir, master=args.spark_master,
                partitions=_partitions(args.partitions), date_from=args.date_from,
                date_to=args.date_to, to_redis=args.to_redis, to_parquet=args.to_parquet,
                to_table=args.output_table, generation=args.generation,
                progress=display.enabled,
            )
        return 0
    with _display(args) as display:
        replay(
            topology, args.snapshot_dir, partitions=_partitions(args.partitions),
            date_from=args.date_from, date_to=args.date_to, to_redis=args.to_redis,
            to_parquet=args.to_parquet, generation=args.generation, processes=args.processes,
            progress=display.enabled,
        )
    return 0


def _training_set(args: argparse.Namespace) -> int:
    settle_topology(args)  # main did; a direct call (tests) too
    from streamfeat.replay import training_set

    features = [f for f in args.features.split(",") if f] if args.features else None
    _local_only(args, "--output-table", "--slice")
    if args.out is None and args.output_table is None:
        raise ConfigError("training-set needs an output: pass --out FILE (or, with --engine "
                          "spark, --output-table NAME)")
    if args.engine == "spark":
        engine = _spark(args)
        with _display(args) as display:
            engine.training_set(
                args.topology, args.snapshot_dir, args.spine, args.out,
                master=args.spark_master, features=features, as_served=args.as_served,
                entity_column=args.entity_column, timestamp_column=args.timestamp_column,
                date_from=args.date_from, date_to=args.date_to, slice_seconds=args.slice,
                to_table=args.output_table, progress=display.enabled,
            )
        print(f"{args.out or args.output_table}: written by the Spark engine", file=sys.stderr)
        return 0
    with _display(args) as display:
        table = training_set(
            args.topology, args.snapshot_dir, args.spine, args.out, features=features,
            as_served=args.as_served, entity_column=args.entity_column,
            timestamp_column=args.timestamp_column, date_from=args.date_from,
            date_to=args.date_to, processes=args.processes, progress=display.enabled,
        )
    print(f"{args.out}: {table.num_rows} rows, {table.num_columns} columns", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    settle_topology(args)  # main did; a direct call (tests) too
    from streamfeat.replay import verify

    topology = _topology(args)
    redis_url = _redis_checked(resolve_redis(args.redis))
    if args.engine == "spark":
        report = _spark(args).verify(topology, args.snapshot_dir, redis_url,
                                     master=args.spark_master, sample=args.sample)
    else:
        with _display(args) as display:
            report = verify(topology, args.snapshot_dir, redis_url, sample=args.sample,
                            progress=display.enabled)
    for m in report.mismatches[:50]:
        print(f"mismatch {m.entity_id}.{m.field} (_v {m.version}): online={m.online!r} "
              f"replay={m.replayed!r}")
    print(f"checked {report.checked} entities, match rate {report.match_rate:.6%}, "
          f"{len(report.mismatches)} mismatched fields, {report.skipped} skipped (offset not "
          "in the snapshots yet)")
    if report.checked == 0:
        print("nothing verified: no entity in Redis has its offset in the snapshots",
              file=sys.stderr)
        return 1
    return 0 if report.match_rate >= 1.0 else 1


def _dates(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD",
                   help="first snapshot date (UTC); a warning when it is before the snapshots")
    p.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD",
                   help="last snapshot date (UTC, inclusive); a warning when it is after them")


def _processes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="partitions replayed in parallel processes (default: one per CPU)")


def _engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="local: one process per partition here (default); spark: Spark tasks "
                        "(pip install 'streamfeat[spark]'; docs/spark.md)")
    p.add_argument("--spark-master", metavar="URL", default=None,
                   help="with --engine spark: the master (default: spark-submit's, else "
                        "SPARK_MASTER, else local[*])")


def _output_table(p: argparse.ArgumentParser | Any) -> None:
    p.add_argument("--output-table", metavar="NAME",
                   help="with --engine spark: write the values to this Spark table (replaced)")


def add_replay_commands(subparsers: Any) -> None:
    """Register ``replay``, ``training-set`` and ``verify`` on ``argparse`` sub-parsers."""
    p = subparsers.add_parser(
        "replay", help="recompute features from Parquet snapshots",
        description="Recompute TOPOLOGY's features from the worker's Parquet snapshots, "
                    "through the worker's own code: into Redis (a backfill) or a Parquet file "
                    "of final values.")
    add_topology(p, _TOPOLOGY_HELP)
    p.add_argument("--snapshot-dir", required=True, metavar="PATH|URL", help=_SNAPSHOTS_HELP)
    _dates(p)
    p.add_argument("--partitions", metavar="P,P...",
                   help="comma-separated partitions (default: all)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--to-redis", metavar="URL",
                     help="backfill this Redis (redis:// or rediss://)")
    out.add_argument("--to-parquet", metavar="PATH",
                     help="write the final values per entity to this Parquet file (with "
                          "--engine spark: a directory of Parquet parts)")
    _output_table(out)
    p.add_argument("--generation", type=int, default=1, metavar="N",
                   help="write generation (above the worker's 0 to supersede online values)")
    _processes(p)
    _engine(p)
    add_progress(p)
    p.add_argument("--quiet", dest="progress", action="store_false", default=None,
                   help="same as --no-progress (kept for existing scripts)")
    p.set_defaults(run=_replay)

    p = subparsers.add_parser(
        "training-set", help="point-in-time-correct features for a spine of labels",
        description="For each row of a spine (entity id and time), every feature of TOPOLOGY "
                    "as of that time, from the snapshots: nothing after it leaks in. A warning "
                    "names spine times outside what the snapshots hold.")
    add_topology(p, _TOPOLOGY_HELP)
    p.add_argument("--snapshot-dir", required=True, metavar="PATH|URL", help=_SNAPSHOTS_HELP)
    p.add_argument("--spine", required=True, metavar="FILE",
                   help="Parquet or CSV with entity and timestamp")
    p.add_argument("--out", metavar="FILE",
                   help="output Parquet file (with --engine spark: a directory of parts)")
    _output_table(p)
    p.add_argument("--features", metavar="NAMES",
                   help="comma-separated feature or field names (default: all)")
    p.add_argument("--as-served", action="store_true",
                   help="only records that had arrived (Kafka timestamp) by each row's time")
    p.add_argument("--entity-column", metavar="NAME",
                   help="the spine's entity id column (default: the topology's source.key)")
    p.add_argument("--timestamp-column", metavar="NAME",
                   help="the spine's time column (default: the topology's source.timestamp)")
    _dates(p)
    _processes(p)
    _engine(p)
    p.add_argument("--slice", type=float, default=None, metavar="SECONDS",
                   help="with --engine spark: one task per partition and event-time slice of "
                        "this many seconds, each after a warm-up of its longest window "
                        "(not for lifetime or session windows or --as-served: then one task "
                        "per partition, with a warning)")
    add_progress(p)
    p.set_defaults(run=_training_set)

    p = subparsers.add_parser(
        "verify", help="compare online values with a replay; exit 1 below 100%%",
        description="Compare the values Redis holds for TOPOLOGY's entities with a replay "
                    "of the snapshots cut at the offset each was written at; exit 1 below a "
                    "100% match.")
    add_topology(p, _TOPOLOGY_HELP)
    p.add_argument("--snapshot-dir", required=True, metavar="PATH|URL", help=_SNAPSHOTS_HELP)
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="check N random entities (default: all)")
    p.add_argument("--redis", metavar="URL", help=REDIS_HELP)
    _engine(p)
    add_progress(p)
    p.set_defaults(run=_verify)
