"""``streamfeat registry``: the features of topologies, deployed or in files; who owns them,
what they are made from, which models read them, how they changed; as tables or one JSON
document.

Two sources: TOPOLOGY files (as before: the files say everything; ``--redis URL`` adds the
partial-history marks and the models seen reading them), or, without files, the shared
catalog the workers record into (:mod:`streamfeat.registry.shared`, in the Redis of
``--redis``, ``STREAMFEAT_REDIS`` or the default). ``streamfeat.cli`` calls
:func:`add_registry_command` with its sub-parsers; the answers and their rendering are
:mod:`streamfeat.registry`'s.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_registry_command"]

_FILTERS = ("owner", "entity", "source", "tag", "model", "feature")


def _catalog(url: str) -> Any:
    from streamfeat.connections import parse_redis_url
    from streamfeat.registry import SharedCatalog

    parse_redis_url(url)  # a bad URL or TLS file is named now; its password hidden
    return SharedCatalog(url)


def _display(url: str) -> str:
    from streamfeat.connections import parse_redis_url

    return parse_redis_url(url).display


def _topology_name(ref: str) -> str:
    """A topology's name, given as such or as its YAML file."""
    if Path(ref).suffix in (".yaml", ".yml"):
        from streamfeat.topology import load_topology

        return load_topology(ref).name
    return ref


def _registry(args: argparse.Namespace) -> int:
    from streamfeat.errors import ConfigError
    from streamfeat.registry import Filters

    filters = Filters(**{k: getattr(args, k) for k in _FILTERS})
    asked = [flag for flag, value in (("--history", args.history), ("--diff", args.diff),
                                      ("--lineage", args.lineage)) if value is not None]
    if asked and filters != Filters():
        raise ConfigError(f"filters ({filters.describe()}) choose what the listing shows; "
                          f"{asked[0]} answers on its own: leave them out")
    if asked and args.topologies:
        raise ConfigError(f"{asked[0]} reads the shared catalog (--redis URL) or a file of "
                          "its own, not TOPOLOGY files: leave them out")
    if args.history is not None:
        return _history(args)
    if args.diff is not None:
        return _diff(args)
    if args.lineage is not None:
        return _lineage(args)
    return _list(args, filters)


def _list(args: argparse.Namespace, filters: Any) -> int:
    from dataclasses import replace

    from streamfeat.config import resolve_redis
    from streamfeat.registry import (
        Filters,
        deployed_entries,
        feature_entries,
        filter_entries,
        model_rows,
        select,
        topology_entries,
    )
    from streamfeat.registry.render import render_json, render_models, render_table
    from streamfeat.registry.usage import ModelRead
    from streamfeat.topology import load_topology

    usage: list[ModelRead] = []
    partial: dict[str, dict[str, dict[str, int]]] | None = None
    if args.topologies:  # the files say what is declared
        topologies = [load_topology(p) for p in args.topologies]
        about = topology_entries(topologies)
        features = select(feature_entries(topologies), filters.feature, topologies)
        filters = replace(filters, feature=None)  # checked by select, its message as before
        where = ", ".join(t.path or t.name for t in topologies)
        if args.redis:
            with _catalog(args.redis) as catalog:
                names = [t.name for t in topologies]
                partial = catalog.partial(names)
                usage = catalog.usage(names)
    else:  # the shared catalog: what the workers run
        url = resolve_redis(args.redis)
        where = f"the registry at {_display(url)}"
        with _catalog(url) as catalog:
            latest = catalog.latest()
            about, features = deployed_entries(latest)
            partial = catalog.partial(latest)
            usage = catalog.usage()
    if partial is not None:
        for e in features:
            e["partial_since_ms"] = dict(partial.get(e["topology"], {}).get(e["field"], {}))
    rows = model_rows(features, usage)
    features, rows = filter_entries(features, rows, filters, where)
    shown = {e["topology"] for e in features}
    about = [t for t in about if t["topology"] in shown]
    if not features and not rows and filters != Filters():
        print(f"streamfeat: no feature matches {filters.describe()} together",
              file=sys.stderr)
    if args.json:
        render_json(about, features, sys.stdout, models=rows)
        return 0
    if not about and not args.topologies:
        print(f"{where} records no topology yet: each worker records its topologies when "
              "it starts")
    render_table(about, features, sys.stdout, models=rows)
    if filters.model is not None:
        render_models(rows, sys.stdout, f"what {filters.model} reads")
    elif args.feature is not None:
        render_models(rows, sys.stdout,
                      f"models reading {args.feature} (they break if it changes)")
    return 0


def _history(args: argparse.Namespace) -> int:
    import json

    from streamfeat.config import resolve_redis
    from streamfeat.registry import change_summary, diff_versions, field_versions
    from streamfeat.registry.render import render_history

    name = _topology_name(args.history)
    url = resolve_redis(args.redis)
    with _catalog(url) as catalog:
        history = _one(catalog, name, url)
    versions = []
    previous = None
    for v in history.versions:
        changes = "first version" if previous is None else \
            change_summary(diff_versions(previous.document, v.document))
        versions.append({
            "version": v.version, "digest": v.digest, "definition": v.definition,
            "current": v.version == history.latest.version,
            "first_deployed_ms": v.first_ms, "last_deployed_ms": v.last_ms,
            "starts": v.starts, "generation": v.generation, "host": v.host,
            "owner": v.document["topology"].get("owner"),
            "fields": field_versions(v.document), "changes": changes})
        previous = v
    doc = {"topology": name, "current": history.latest.version, "versions": versions}
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        render_history(doc, sys.stdout)
    return 0


def _one(catalog: Any, name: str, url: str) -> Any:
    from streamfeat.errors import ConfigError

    found = catalog.histories([name])
    if name not in found:
        known = ", ".join(catalog.names()) or "none yet (each worker records its topologies "\
                                               "when it starts)"
        raise ConfigError(f"no topology {name!r} in the registry at {_display(url)}; known: "
                          f"{known}")
    return found[name]


def _diff(args: argparse.Namespace) -> int:
    import json

    from streamfeat.config import resolve_redis
    from streamfeat.registry import change_summary, diff_versions
    from streamfeat.registry.render import render_diff

    ref, v1, v2 = args.diff
    name = _topology_name(ref)
    url = resolve_redis(args.redis)
    with _catalog(url) as catalog:
        history = _one(catalog, name, url)
    a, b = history.version(v1), history.version(v2)
    diff = diff_versions(a.document, b.document)
    doc = {"topology": name,
           "from": {"version": a.version, "digest": a.digest, "definition": a.definition},
           "to": {"version": b.version, "digest": b.digest, "definition": b.definition},
           "summary": change_summary(diff), **diff}
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        render_diff(doc, sys.stdout)
    return 0


def _lineage(args: argparse.Namespace) -> int:
    import json

    from streamfeat.registry import model_rows, read_lineage, served_by
    from streamfeat.registry.render import render_lineage

    lineage = read_lineage(args.lineage)
    doc: dict[str, Any] = {"file": args.lineage, "lineage": lineage, "served_by": None,
                           "models": []}
    url = args.redis or os.environ.get("STREAMFEAT_REDIS")
    name = lineage.get("topology")
    if url and isinstance(name, str):  # the catalog, when one is named
        with _catalog(url) as catalog:
            histories = catalog.histories([name])
            usage = catalog.usage([name])
        fields = set(lineage.get("fields", {}))
        features = []
        if name in histories:
            doc["served_by"] = served_by(lineage, histories[name])
            features = [e for e in histories[name].latest.document["features"]
                        if e["field"] in fields]
        doc["models"] = [r for r in model_rows(features, usage) if r["field"] in fields]
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        render_lineage(doc, sys.stdout)
    return 0


def add_registry_command(sub: Any) -> None:
    """Add ``registry`` to the ``streamfeat`` sub-commands."""
    p = sub.add_parser(
        "registry", help="the feature registry: what is deployed, who owns it, its sources, "
                         "versions and lineage, which models read it",
        description="Without TOPOLOGY files, the shared catalog in Redis (--redis URL, "
                    "STREAMFEAT_REDIS, or the default): the version of every topology the "
                    "workers started last (each worker records its topologies at start), with "
                    "the models declared as reading each feature-window and those seen "
                    "reading it (Client(model=...), streamfeat serve's model). With TOPOLOGY "
                    "files, what they declare. A table per topology, one row per Redis field "
                    "(feature and window), or with --json one JSON document "
                    '{"topologies": [...], "features": [...], "models": [...]} whose feature '
                    "entries keep the keys of earlier versions' JSON lines. Filters combine; "
                    "one that matches nothing, and an unknown --feature, --model, topology or "
                    "version, exit 2 listing what there is.")
    p.add_argument("topologies", nargs="*", metavar="TOPOLOGY",
                   help="topology YAML files (default: the shared catalog in Redis)")
    p.add_argument("--redis", metavar="URL",
                   help="the Redis of the shared catalog (redis:// or rediss://, as for the "
                        "worker; default STREAMFEAT_REDIS, then redis://localhost:6379/0). "
                        "With TOPOLOGY files, also show from it the models seen reading them "
                        "and the feature-windows whose history was cut short when they were "
                        "computed after a definition change (partial_since_ms)")
    p.add_argument("--feature", metavar="NAME",
                   help="only this feature (every window) or field (orders__1h), or "
                        "TOPOLOGY:NAME; with the models that read it (they break if it "
                        "changes)")
    p.add_argument("--owner", metavar="OWNER", help="only the topologies of this owner")
    p.add_argument("--entity", metavar="ENTITY", help="only the topologies of this entity")
    p.add_argument("--source", metavar="TOPIC",
                   help="only the topologies aggregating this Kafka topic")
    p.add_argument("--tag", metavar="TAG", help="only the features with this tag")
    p.add_argument("--model", metavar="MODEL",
                   help="only what this model reads, declared (models: in the YAML) or seen "
                        "(reads counted by the readers), with counts and when last seen")
    questions = p.add_mutually_exclusive_group()
    questions.add_argument("--history", metavar="TOPOLOGY",
                           help="the versions of TOPOLOGY (a name, or its YAML file) the "
                                "workers ran: digests, first and last start, generation, "
                                "what changed")
    questions.add_argument("--diff", nargs=3, metavar=("TOPOLOGY", "V1", "V2"),
                           help="the feature-windows added, removed, redefined or renamed from "
                                "version V1 of TOPOLOGY to V2 (a number, a digest or its "
                                "prefix, or current), and the settings changed")
    questions.add_argument("--lineage", metavar="FILE",
                           help="what the training set FILE (Parquet, written by "
                                "streamfeat training-set) was computed from: topology version, "
                                "snapshot range, spine; with --redis or STREAMFEAT_REDIS, the "
                                "deployed versions serving those definitions and the models "
                                "reading them")
    p.add_argument("--json", action="store_true",
                   help="one JSON document instead of tables, for tools")
    p.set_defaults(run=_registry)
