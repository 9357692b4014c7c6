"""``streamfeat monitor baseline | show | verify``: value monitoring (issue #17).

``streamfeat.cli`` calls :func:`add_monitor_commands` with its sub-parsers. The work is in
:mod:`streamfeat.monitoring` (baselines, the Redis keys, the verify job) and, for
``verify``, :func:`streamfeat.replay.verify`; this module reads flags and prints.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from streamfeat.cli_common import ignore_stop_signals
from streamfeat.config import resolve_redis
from streamfeat.errors import ConfigError

if TYPE_CHECKING:
    import redis

    from streamfeat.monitoring import Baseline, IntervalSummary, ValueSketch
    from streamfeat.topology import TopologyDef

__all__ = ["add_monitor_commands"]

LIVE_INTERVALS = 3
"""A worker's summary older than this many of its intervals is shown as stale (not merged)."""


def _topology(path: str) -> TopologyDef:
    from streamfeat.topology import load_topology

    return load_topology(path)


def _client(url: str | None) -> redis.Redis:
    from streamfeat.sinks.redis import check, connect

    target = resolve_redis(url)
    check(target)  # answers, or one line saying what to check (exit 2)
    return connect(target)


def _partitions(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--partitions {text!r}: give partition numbers separated by "
                          "commas, e.g. 0,3") from None


# ------------------------------------------------------------------------------ baseline


def _baseline(args: argparse.Namespace) -> int:
    from streamfeat.monitoring import (
        baseline_from_snapshots,
        baseline_from_training_set,
        parse_instant,
        write_baseline,
    )
    from streamfeat.monitoring.store import delete_baseline

    topology = _topology(args.topology)
    if args.delete:
        client = _client(args.redis)
        try:
            gone = delete_baseline(client, topology.name)
        finally:
            client.close()
        print(f"{topology.name}: baseline {'deleted' if gone else 'was not there'}")
        return 0
    if args.training_set:
        if args.snapshot_dir or args.start or args.end:
            raise ConfigError("give either --training-set FILE or --snapshot-dir DIR with "
                              "--start and --end, not both")
        fields = [f for f in args.fields.split(",") if f] if args.fields else None
        client = _client(args.redis)
        baseline = baseline_from_training_set(topology, args.training_set, fields)
    elif args.snapshot_dir:
        if not (args.start and args.end):
            raise ConfigError("--snapshot-dir needs --start and --end (event time, UTC: "
                              "2026-12-01T10:00:00Z, 2026-12-01 or epoch ms)")
        client = _client(args.redis)
        baseline = baseline_from_snapshots(
            topology, args.snapshot_dir, parse_instant(args.start, "--start"),
            parse_instant(args.end, "--end"), only=_partitions(args.partitions))
    else:
        raise ConfigError("give --training-set FILE, or --snapshot-dir DIR with --start and "
                          "--end, or --delete")
    try:
        write_baseline(client, baseline)
    finally:
        client.close()
    print(f"{topology.name}: baseline stored ({baseline.source}); workers use it from their "
          "next interval")
    _print_baseline(baseline)
    return 0


# ------------------------------------------------------------------------------ show


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}g}"


def _utc(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _sketch_row(s: ValueSketch) -> dict[str, Any]:
    q = s.quantiles([0.5, 0.9, 0.99])
    return {"count": s.count, "null_rate": s.null_rate, "mean": s.mean if s.n else None,
            "stddev": s.stddev, "p50": q[0] if s.n else None, "p90": q[1] if s.n else None,
            "p99": q[2] if s.n else None}


def _table(rows: dict[str, dict[str, Any]], columns: Sequence[str]) -> str:
    width = max([len("field"), *(len(name) for name in rows)])
    lines = ["  " + "field".ljust(width) + "".join(f"{c:>11}" for c in columns)]
    for name, row in rows.items():
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append(f"{v:>11}" if isinstance(v, int) and not isinstance(v, bool)
                         else f"{_fmt(v):>11}")
        lines.append("  " + name.ljust(width) + "".join(cells))
    return "\n".join(lines)


_STATS = ("count", "null_rate", "mean", "stddev", "p50", "p90", "p99")


def _baseline_rows(baseline: Baseline) -> dict[str, dict[str, Any]]:
    from streamfeat.monitoring import ValueSketch

    return {name: _sketch_row(ValueSketch.from_state(state))
            for name, state in baseline.fields.items()}


def _print_baseline(baseline: Baseline) -> None:
    print(f"baseline of {baseline.topology}: created {_utc(baseline.created_ms)}, "
          f"{baseline.source}")
    print(_table(_baseline_rows(baseline), _STATS))


def _merged(topology: TopologyDef, baseline: Baseline | None,
            summaries: Sequence[IntervalSummary], now_ms: int) -> tuple[
                dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Per field, the live workers' last intervals with values merged (and their drift);
    per worker, that interval, how many idle ones closed since, and whether it is live."""
    from streamfeat.monitoring import Reference, ValueSketch

    refs = {}
    if baseline is not None:
        for name, state in baseline.fields.items():
            try:
                refs[name] = Reference(ValueSketch.from_state(state))
            except ValueError:
                continue
    workers = []
    merged: dict[str, ValueSketch] = {}
    for s in summaries:
        interval_ms = max(1, s.end_ms - s.start_ms)
        live = now_ms - s.heard <= LIVE_INTERVALS * interval_ms
        workers.append({"worker": s.worker, "seq": s.seq, "interval_s": interval_ms / 1000,
                        "closed": _utc(s.end_ms), "age_s": round((now_ms - s.end_ms) / 1000, 1),
                        "heard": _utc(s.heard), "idle_intervals": s.idle_intervals,
                        "live": live, "asof_min": _utc(s.asof_min_ms),
                        "asof_max": _utc(s.asof_max_ms)})
        if not live:
            continue
        for name, f in s.fields.items():
            try:
                sketch = ValueSketch.from_state(f.sketch)
            except ValueError:
                continue
            merged.setdefault(name, ValueSketch()).merge(sketch)
    rows: dict[str, dict[str, Any]] = {}
    for name in topology.redis_fields():
        values = merged.get(name)
        if values is None:
            continue
        row = _sketch_row(values)
        ref = refs.get(name)
        row["psi"] = None if ref is None else ref.psi(values)
        row["qdist"] = None if ref is None else ref.quantile_distance(values)
        row["base_null"] = None if ref is None else ref.sketch.null_rate
        rows[name] = row
    return rows, workers


def _show(args: argparse.Namespace) -> int:
    from streamfeat.monitoring import read_baseline, read_summaries

    topology = _topology(args.topology)
    client = _client(args.redis)
    try:
        try:
            baseline = read_baseline(client, topology.name)
        except ValueError as e:
            print(f"streamfeat: warning: {e}", file=sys.stderr)
            baseline = None
        summaries = read_summaries(client, topology.name)
    finally:
        client.close()
    now_ms = int(time.time() * 1000)
    rows, workers = _merged(topology, baseline, summaries, now_ms)
    if args.json:
        json.dump({"topology": topology.name,
                   "baseline": None if baseline is None else {
                       "created": _utc(baseline.created_ms), "source": baseline.source,
                       "fields": _baseline_rows(baseline)},
                   "workers": workers, "latest": rows}, sys.stdout, indent=2)
        print()
        return 0
    if baseline is None:
        print(f"{topology.name}: no baseline (streamfeat monitor baseline {args.topology} ...)")
    else:
        _print_baseline(baseline)
    print()
    live = [w for w in workers if w["live"]]
    if not workers:
        print(f"{topology.name}: no worker has stored an interval (is a worker running, "
              "without --no-monitor?)")
        return 0
    print(f"latest intervals of {len(live)} live worker(s), merged"
          + (" (drift against the baseline)" if baseline is not None else "") + ":")
    print(_table(rows, (*_STATS, "base_null", "psi", "qdist")))
    print()
    for w in workers:
        state = "live" if w["live"] else "stale"
        print(f"  {w['worker']}: interval {w['seq']} of {w['interval_s']:g} s closed "
              f"{w['closed']} ({w['age_s']:g} s ago, {state}); values as of {w['asof_min']} "
              f".. {w['asof_max']}"
              + (f"; then {w['idle_intervals']} interval(s) without values (the stream "
                 f"paused), the last closed {w['heard']}" if w["idle_intervals"] else ""))
    return 0


# ------------------------------------------------------------------------------ verify


def _verify(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from streamfeat.monitoring import VerifyJob
    from streamfeat.replay import verify
    from streamfeat.sinks.redis import check

    topology = _topology(args.topology)
    if args.sample is not None and args.sample < 1:
        raise ConfigError(f"--sample must be at least 1, got {args.sample}")
    redis_url = resolve_redis(args.redis)
    check(redis_url)
    registry = CollectorRegistry()
    job = VerifyJob(topology.name, lambda run: verify(
        topology, args.snapshot_dir, redis_url, sample=args.sample, seed=run),
        registry, every_s=args.every)
    server = None
    if args.metrics_port is not None:
        server, _thread = start_http_server(args.metrics_port, registry=registry)
    stop = threading.Event()

    def stopping(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    try:
        job.run(stop, runs=args.runs)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    ignore_stop_signals()
    return 0


def add_monitor_commands(sub: Any) -> None:
    """Add ``monitor`` (``baseline``, ``show``, ``verify``) to the ``streamfeat`` commands."""
    monitor = sub.add_parser(
        "monitor", help="value monitoring: baselines, drift, consistency with a replay",
        description="Monitoring of the features themselves: the workers sketch the values "
                    "they write every --monitor-interval and export their distribution and "
                    "drift from a baseline (streamfeat_value_*). These commands store that "
                    "baseline, show it with the latest intervals, and check online values "
                    "against a replay periodically.")
    commands = monitor.add_subparsers(dest="monitor_command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "baseline", help="store the reference distribution of each feature-window in Redis",
        description="Compute TOPOLOGY's reference distributions, from a training set (its "
                    "columns named as the Redis fields) or from the values a replay of the "
                    "snapshots writes as of event times in [--start, --end), and store them "
                    "in Redis (sfmeta:{topology}:baseline), where every worker reloads them "
                    "at each interval.")
    p.add_argument("topology", metavar="TOPOLOGY", help="topology YAML file")
    p.add_argument("--training-set", metavar="FILE",
                   help="Parquet file with a column per Redis field (streamfeat training-set)")
    p.add_argument("--fields", metavar="FIELDS",
                   help="with --training-set: only these comma-separated fields")
    p.add_argument("--snapshot-dir", metavar="PATH|URL",
                   help="the worker's snapshots (a directory or s3://bucket/prefix)")
    p.add_argument("--start", metavar="TIME",
                   help="with --snapshot-dir: first event time (2026-12-01T10:00:00Z, "
                        "2026-12-01 or epoch ms; UTC)")
    p.add_argument("--end", metavar="TIME", help="with --snapshot-dir: end (excluded)")
    p.add_argument("--partitions", metavar="P,P...",
                   help="with --snapshot-dir: only these partitions (default: all)")
    p.add_argument("--delete", action="store_true",
                   help="delete the stored baseline (the workers stop exporting drift)")
    p.add_argument("--redis", metavar="URL", help="Redis URL (env STREAMFEAT_REDIS)")
    p.set_defaults(run=_baseline)

    p = commands.add_parser(
        "show", help="the stored baseline and the workers' latest intervals, with drift",
        description="Print TOPOLOGY's baseline and the last interval each worker stored "
                    "(sfmeta:{topology}:monitor): the live workers' intervals merged, per "
                    "field, with PSI and quantile distance against the baseline.")
    p.add_argument("topology", metavar="TOPOLOGY", help="topology YAML file")
    p.add_argument("--redis", metavar="URL", help="Redis URL (env STREAMFEAT_REDIS)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_show)

    p = commands.add_parser(
        "verify", help="compare a sample of online values with a replay, periodically, "
                       "as metrics",
        description="Every --every seconds, run streamfeat verify on --sample random "
                    "entities (a new sample each run) and export the share that match as "
                    "streamfeat_verify_consistency_ratio on --metrics-port. Runs until "
                    "SIGTERM (or --runs runs).")
    p.add_argument("topology", metavar="TOPOLOGY", help="topology YAML file")
    p.add_argument("--snapshot-dir", required=True, metavar="PATH|URL",
                   help="the worker's snapshots (a directory or s3://bucket/prefix)")
    p.add_argument("--every", type=float, default=300.0, metavar="SECONDS",
                   help="seconds from one run's start to the next (default 300)")
    p.add_argument("--sample", type=int, default=1000, metavar="N",
                   help="entities checked per run (default 1000)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve /metrics (Prometheus) on this port")
    p.add_argument("--runs", type=int, default=None, metavar="N",
                   help="stop after N runs (default: run until stopped)")
    p.add_argument("--redis", metavar="URL", help="Redis URL (env STREAMFEAT_REDIS)")
    p.set_defaults(run=_verify)
