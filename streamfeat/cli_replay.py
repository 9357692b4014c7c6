"""``streamfeat replay``, ``training-set`` and ``verify`` (contract sections 6 and 7).

``streamfeat.cli`` calls :func:`add_replay_commands` with its sub-parsers. The commands
live in :mod:`streamfeat.replay`, which never prints: its progress and warnings go to the
``streamfeat.replay`` logger, which ``streamfeat.cli.main`` shows on stderr (INFO, or DEBUG
with ``-v``). Only the results are printed here.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from streamfeat.config import resolve_redis
from streamfeat.errors import ConfigError

__all__ = ["add_replay_commands"]


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


def _replay(args: argparse.Namespace) -> int:
    from streamfeat.replay import replay

    if args.to_redis:
        _redis_checked(args.to_redis)
    replay(
        args.topology, args.snapshot_dir, partitions=_partitions(args.partitions),
        date_from=args.date_from, date_to=args.date_to, to_redis=args.to_redis,
        to_parquet=args.to_parquet, generation=args.generation, processes=args.processes,
        progress=not args.quiet,
    )
    return 0


def _training_set(args: argparse.Namespace) -> int:
    from streamfeat.replay import training_set

    features = [f for f in args.features.split(",") if f] if args.features else None
    table = training_set(
        args.topology, args.snapshot_dir, args.spine, args.out, features=features,
        as_served=args.as_served, entity_column=args.entity_column,
        timestamp_column=args.timestamp_column, date_from=args.date_from, date_to=args.date_to,
        processes=args.processes,
    )
    print(f"{args.out}: {table.num_rows} rows, {table.num_columns} columns", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from streamfeat.replay import verify

    report = verify(args.topology, args.snapshot_dir, _redis_checked(resolve_redis(args.redis)),
                    sample=args.sample)
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


def add_replay_commands(subparsers: Any) -> None:
    """Register ``replay``, ``training-set`` and ``verify`` on ``argparse`` sub-parsers."""
    p = subparsers.add_parser("replay", help="recompute features from Parquet snapshots")
    p.add_argument("--topology", required=True)
    p.add_argument("--snapshot-dir", required=True)
    p.add_argument("--from", dest="date_from", help="first snapshot date, YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", help="last snapshot date, YYYY-MM-DD (inclusive)")
    p.add_argument("--partitions", help="comma-separated partitions (default: all)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--to-redis", metavar="URL", help="backfill Redis")
    out.add_argument("--to-parquet", metavar="PATH", help="final values per entity")
    p.add_argument("--generation", type=int, default=1,
                   help="write generation (above the worker's 0 to supersede online values)")
    p.add_argument("--processes", type=int, default=None, help="default: one per CPU")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(run=_replay)

    p = subparsers.add_parser("training-set",
                              help="point-in-time-correct features for a spine of labels")
    p.add_argument("--topology", required=True)
    p.add_argument("--snapshot-dir", required=True)
    p.add_argument("--spine", required=True, help="Parquet or CSV with entity and timestamp")
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--features", help="comma-separated feature or field names (default: all)")
    p.add_argument("--as-served", action="store_true",
                   help="only records that had arrived (Kafka timestamp) by each row's time")
    p.add_argument("--entity-column", help="default: the topology's source.key")
    p.add_argument("--timestamp-column", help="default: the topology's source.timestamp")
    p.add_argument("--from", dest="date_from", help="first snapshot date, YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", help="last snapshot date, YYYY-MM-DD (inclusive)")
    p.add_argument("--processes", type=int, default=None, help="default: one per CPU")
    p.set_defaults(run=_training_set)

    p = subparsers.add_parser("verify", help="compare online values with a replay; exit 1 "
                              "below 100%%")
    p.add_argument("--topology", required=True)
    p.add_argument("--snapshot-dir", required=True)
    p.add_argument("--sample", type=int, default=None, help="check N random entities")
    p.add_argument("--redis", help="Redis URL (env STREAMFEAT_REDIS)")
    p.set_defaults(run=_verify)
