"""``streamfeat registry``: the features of topologies, as a table or one JSON document.

``streamfeat.cli`` calls :func:`add_registry_command` with its sub-parsers; the entries and
their rendering are :mod:`streamfeat.registry`'s.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_registry_command"]


def _registry(args: argparse.Namespace) -> int:
    from streamfeat.connections import parse_redis_url
    from streamfeat.registry import (
        feature_entries,
        partial_marks,
        render_json,
        render_table,
        select,
        topology_entries,
    )
    from streamfeat.topology import load_topology

    topologies = [load_topology(p) for p in args.topologies]
    partial = None
    if args.redis:
        parse_redis_url(args.redis)  # a bad URL or TLS file is named now; its password hidden
        partial = {t.name: partial_marks(args.redis, t.name) for t in topologies}
    features = select(feature_entries(topologies, partial), args.feature, topologies)
    shown = {e["topology"] for e in features}
    about = [t for t in topology_entries(topologies) if t["topology"] in shown]
    if args.json:
        render_json(about, features, sys.stdout)
    else:
        render_table(about, features, sys.stdout)
    return 0


def add_registry_command(sub: Any) -> None:
    """Add ``registry`` to the ``streamfeat`` sub-commands."""
    p = sub.add_parser(
        "registry", help="list features with owner, entity, source, lineage, version, "
                         "description and tags",
        description="List the features of TOPOLOGY files: a table per topology, one row per "
                    "Redis field (feature and window), or with --json one JSON document "
                    '{"topologies": [...], "features": [...]} whose feature entries keep the '
                    "keys of earlier versions' JSON lines. An unknown --feature exits 2.")
    p.add_argument("topologies", nargs="+", metavar="TOPOLOGY", help="topology YAML files")
    p.add_argument("--feature", metavar="NAME",
                   help="show only this feature (every window) or field (orders__1h)")
    p.add_argument("--json", action="store_true",
                   help="one JSON document instead of the table, for tools")
    p.add_argument("--redis", metavar="URL",
                   help="also show, from this Redis (redis:// or rediss://, as for the worker), "
                        "the feature-windows whose history was cut short when they were "
                        "computed after a definition change (partial_since_ms)")
    p.set_defaults(run=_registry)
