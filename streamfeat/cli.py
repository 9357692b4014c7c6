"""The ``streamfeat`` command (contract section 7).

Every sub-command takes its topology first (``streamfeat replay TOPOLOGY ...``); ``-v`` and
``--log-format`` go before or after the sub-command. Exit status: 0 done; 1 a failure, a
verify below 100 %, a dependency lost while running; 2 a bad argument, setting or topology,
an unknown name, a dependency unreachable at start; ``plan`` 3: cannot tell; ``worker`` 4:
stopped while fenced off by a backfill's higher generation (restart it with
``--generation N``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from streamfeat import logs
from streamfeat.cli_common import (
    KAFKA_CONFIG_HELP,
    KAFKA_HELP,
    REDIS_HELP,
    add_common,
    ignore_stop_signals,
    settle_topology,
    streamfeat_version,
)
from streamfeat.config import (
    DEFAULT_BATCH_SECONDS,
    DEFAULT_STATE_CACHE_MB,
    RUNTIMES,
    resolve_kafka,
    resolve_redis,
)
from streamfeat.connections import parse_redis_url, resolve_kafka_config
from streamfeat.errors import ConfigError, StreamfeatError
from streamfeat.redact import redact

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
streamfeat: windowed features declared once in YAML topologies, computed from Kafka into
Redis by workers, replayed exactly from Parquet snapshots.

Each command takes its topology first (streamfeat replay TOPOLOGY ...); -v and --log-format
go before or after the command. Configuration: flags, then STREAMFEAT_KAFKA and
STREAMFEAT_REDIS, then localhost.

exit status: 0 done; 1 a failure, a verify below 100 %, a dependency lost while running;
2 a bad argument, setting or topology, an unknown name, a dependency unreachable at start;
3 (plan) cannot tell; 4 (worker) stopped while fenced off by a backfill's higher generation:
restart it with --generation N."""

TOPOLOGIES_DIR = "topologies"
"""Where ``get`` looks up a bare topology name (``STREAMFEAT_TOPOLOGIES``, ``--topologies-dir``)."""


def _validate(args: argparse.Namespace) -> int:
    from streamfeat.registry import path_of
    from streamfeat.topology import load_topology

    failed = 0
    for path in args.paths:
        try:
            topology = load_topology(path)
        except StreamfeatError as exc:
            failed += 1
            print(exc, file=sys.stderr)
        else:
            fields = len(topology.redis_fields())
            print(f"{path}: ok ({len(topology.features)} features, {fields} Redis fields; "
                  f"{path_of(topology)})")
    return 1 if failed else 0


def _kafka(args: argparse.Namespace) -> tuple[str, dict[str, Any], str | None]:
    """(bootstrap servers, the ``--kafka-config`` properties but them, the file)."""
    props, file = resolve_kafka_config(getattr(args, "kafka_config", None))
    from_file = props.pop("bootstrap.servers", None)
    return resolve_kafka(args.kafka, from_file), props, file


def _redis(flag: str | None) -> str:
    """The Redis URL (``--redis``, ``STREAMFEAT_REDIS``, default), checked before use."""
    url = resolve_redis(flag)
    parse_redis_url(url)  # a bad URL or TLS file is named now; its password is registered
    return url


def _worker(args: argparse.Namespace) -> int:
    from streamfeat.runtime import Worker, WorkerConfig
    from streamfeat.runtime.startup import check_connections
    from streamfeat.topology import load_topology

    if args.instance_id is not None and args.processes > 1:
        raise ConfigError(
            "--instance-id names one member of the group, not --processes "
            f"{args.processes} of them: run one worker per id (e.g. one pod of a StatefulSet "
            "each, --instance-id $(POD_NAME)) or leave --instance-id out")
    if args.recompute_max_rate is not None and args.recompute_max_rate <= 0:
        raise ConfigError("--recompute-max-rate must be above 0 records per second, got "
                          f"{args.recompute_max_rate:g}")
    if args.state_cache_mb != "auto" and args.state_cache_mb < 0:
        raise ConfigError(f"--state-cache-mb must be 0 (no limit) or above, or auto, got "
                          f"{args.state_cache_mb:g}")
    if args.unhealthy_after <= 0:
        raise ConfigError(f"--unhealthy-after must be above 0 seconds, got {args.unhealthy_after}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be 1 record or more, got {args.batch_size}")
    if args.batch_seconds <= 0:
        raise ConfigError(f"--batch-seconds must be above 0 seconds, got {args.batch_seconds:g}")
    topologies = [load_topology(p) for p in args.topologies]  # a bad one: before anything
    budget = None
    if args.state_cache_mb == "auto":  # from the container's memory limit, if it has one
        from streamfeat.runtime.sizing import choose_state_budget, container_memory_limit

        budget = choose_state_budget(args.processes, container_memory_limit())
        args.state_cache_mb = budget.mb  # (the processes of --processes are told it)
    kafka, kafka_config, kafka_config_file = _kafka(args)
    config = WorkerConfig(
        topologies=topologies,
        kafka=kafka,
        kafka_config=kafka_config,
        kafka_config_file=kafka_config_file,
        redis=_redis(args.redis),
        state_dir=Path(args.state_dir),
        snapshot_dir=args.snapshot_dir or None,  # a path or a URL: kept as text
        metrics_port=args.metrics_port,
        stop_at_end=args.stop_at_end,
        group_id=args.group,
        batch_size=args.batch_size,
        batch_seconds=args.batch_seconds,
        snapshot_every_s=args.snapshot_every,
        commit_every_s=args.commit_every,
        generation=args.generation,
        runtime=args.runtime,
        unhealthy_after_s=args.unhealthy_after,
        instance_id=args.instance_id,
        checkpoint_dir=_checkpoint_dir(args),
        monitor=args.monitor,
        monitor_interval_s=args.monitor_interval,
        recompute_max_rate=args.recompute_max_rate,
        state_cache_mb=args.state_cache_mb or None,
    )
    check_connections(config)  # Kafka and Redis answer, or one line saying what to check
    if budget is not None:
        logging.getLogger("streamfeat.worker").info("%s", budget.describe())
    if args.processes > 1:
        from streamfeat.runtime.supervisor import run_processes

        status = run_processes(_worker_argv(args), args.processes, args.metrics_port)
    else:
        from streamfeat.memory import (
            fix_malloc_thresholds,
            tune_collector,
            use_system_arrow_pool,
        )
        from streamfeat.operators import warm_kernels

        fix_malloc_thresholds()  # resident memory that falls back after peaks
        use_system_arrow_pool()  # Arrow's freed buffers too (not kept in mimalloc's arenas)
        # numba imported and the kernels loaded before the freeze below: its objects are not
        # scanned by every full collection (a topology without rings never imports it)
        warm_kernels(config.topologies)
        tune_collector()  # no collections that find nothing among the window state
        status = Worker(config).run()
    ignore_stop_signals()
    return status



def _budget_mb(text: str) -> float | str:
    """``--state-cache-mb``: a number of MiB, or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a number of MiB or auto, not {text!r}") from None


def _checkpoint_dir(args: argparse.Namespace) -> str | None:
    """``--checkpoint-dir``: the given place, none for ``none``, else beside the snapshots."""
    if args.checkpoint_dir is not None:
        return None if args.checkpoint_dir == "none" else str(args.checkpoint_dir)
    if args.snapshot_dir:
        return str(args.snapshot_dir).rstrip("/") + "/_checkpoints"
    return None


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The worker's own arguments, for one child process (no --processes/--metrics-port)."""
    argv = [*args.topologies, "--state-dir", args.state_dir, "--batch-size", str(args.batch_size),
            "--batch-seconds", str(args.batch_seconds),
            "--snapshot-every", str(args.snapshot_every), "--generation", str(args.generation),
            "--commit-every", str(args.commit_every),
            "--runtime", args.runtime, "--unhealthy-after", str(args.unhealthy_after)]
    for flag, value in (("--kafka", args.kafka), ("--redis", args.redis),
                        ("--kafka-config", args.kafka_config),
                        ("--snapshot-dir", args.snapshot_dir), ("--group", args.group),
                        ("--checkpoint-dir", args.checkpoint_dir)):
        if value:
            argv += [flag, value]
    if args.stop_at_end:
        argv.append("--stop-at-end")
    argv += ["--monitor-interval", str(args.monitor_interval)]
    if not args.monitor:
        argv.append("--no-monitor")
    if args.recompute_max_rate is not None:
        argv += ["--recompute-max-rate", str(args.recompute_max_rate)]
    argv += ["--state-cache-mb", str(args.state_cache_mb)]  # (auto: resolved before)
    argv += ["--log-format", args.log_format] + (["--verbose"] if args.verbose else [])
    return argv


def _get(args: argparse.Namespace) -> int:
    from streamfeat.client import Client
    from streamfeat.registry import check_features, find_topology

    directory = args.topologies_dir or os.environ.get("STREAMFEAT_TOPOLOGIES") or TOPOLOGIES_DIR
    topology = find_topology(args.topology, directory)
    features = [f for f in args.features.split(",") if f] if args.features else None
    if features is not None:
        check_features(topology, features)
    with Client(_redis(args.redis)) as client:
        rows = client.get(topology, args.entities, features=features)
    json.dump(rows, sys.stdout, indent=2, sort_keys=True, default=str)
    print()
    return 0


def _generate(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from streamfeat.generator import OrderEvents, produce_events
    from streamfeat.runtime.consumers import ConsumerSettings
    from streamfeat.runtime.consumers.check import check_kafka

    if args.events < 0 or args.entities < 1:
        raise ConfigError(f"--events must be >= 0 and --entities >= 1, got {args.events} and "
                          f"{args.entities}")
    for flag, fraction in (("--malformed", args.malformed), ("--late", args.late)):
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"{flag} is a fraction of the events, 0 to 1; got {fraction}")
    rate = _event_rate(args.span, args.events)
    if args.topology is not None:
        from streamfeat.generator import TopologyEvents
        from streamfeat.topology import load_topology

        topology = load_topology(args.topology)
        topic = args.topic or topology.source.topic
        events: Any = TopologyEvents(
            topology, entities=args.entities, seed=args.seed, events_per_second=rate,
            malformed_fraction=args.malformed, late_fraction=args.late)
    else:
        topic = args.topic or "orders"
        events = OrderEvents(
            entities=args.entities, seed=args.seed, malformed_fraction=args.malformed,
            late_fraction=args.late, events_per_second=rate,
        )
    kafka, kafka_config, kafka_config_file = _kafka(args)
    settings = ConsumerSettings(kafka, "streamfeat.generate", client_config=kafka_config)
    check_kafka(settings, config_file=kafka_config_file)
    producer = Producer({
        **settings.librdkafka(), "linger.ms": 20,
        "enable.idempotence": True, "compression.type": "lz4",
    })
    left = produce_events(producer, topic, events.events(args.events))
    if left:
        print(f"{left} events were not delivered", file=sys.stderr)
        return 1
    print(f"produced {args.events} events to {topic}")
    return 0


def _event_rate(span: str | None, events: int) -> float:
    """Events per second of event time: ``events`` over ``span`` (a duration), else 200."""
    if span is None:
        return 200.0
    from streamfeat.topology.loader import parse_duration

    try:
        span_ms = parse_duration(span)
    except ValueError as e:
        raise ConfigError(f"--span {span!r}: {e}") from None
    if span_ms <= 0:
        raise ConfigError(f"--span must be above 0, got {span!r}")
    return max(events, 1) * 1000.0 / span_ms


def _plan(args: argparse.Namespace) -> int:
    from streamfeat.runtime.plan import exit_code, plan, render, to_json
    from streamfeat.topology import load_topology

    topologies = [load_topology(p) for p in args.topologies]
    kafka, kafka_config, _file = _kafka(args)
    plans = plan(topologies, args.state_dir, snapshot_dir=args.snapshot_dir,
                 kafka=None if args.no_kafka else kafka, kafka_config=kafka_config,
                 models=_models_reading(args.redis, [t.name for t in topologies]))
    if args.json:
        json.dump(to_json(plans), sys.stdout, indent=2)
        print()
    else:
        print(render(plans))
    return exit_code(plans)


def _models_reading(flag: str | None, names: list[str]) -> dict[str, dict[str, list[str]]]:
    """For ``plan``: the models the shared catalog knows to read the topologies' fields
    (``--redis`` or ``STREAMFEAT_REDIS``; none named: only those the files declare)."""
    url = flag or os.environ.get("STREAMFEAT_REDIS")
    if not url:
        return {}
    from streamfeat.registry import SharedCatalog, models_reading

    try:
        parse_redis_url(url)
        with SharedCatalog(url) as catalog:
            return models_reading(catalog, names)
    except StreamfeatError as exc:
        logging.getLogger("streamfeat").warning(
            "the models named are only those the topologies declare: %s", exc)
        return {}


def _connections(p: argparse.ArgumentParser, *, redis: bool = False) -> None:
    p.add_argument("--kafka", metavar="HOST:PORT", help=KAFKA_HELP)
    p.add_argument("--kafka-config", metavar="FILE", help=KAFKA_CONFIG_HELP)
    if redis:
        p.add_argument("--redis", metavar="URL", help=REDIS_HELP)


def _add_worker(sub: Any) -> None:
    p = sub.add_parser(
        "worker", help="run topologies over Kafka, features to Redis",
        description="Consume each TOPOLOGY's source topic in a consumer group, keep window "
                    "state in RocksDB and the features in Redis. Exit status: 0 stopped "
                    "(SIGTERM, or caught up with --stop-at-end); 1 failed; 2 a bad setting "
                    "or Kafka/Redis unreachable at start; 4 stopped while fenced off by a "
                    "backfill's higher generation: restart with --generation N. Ends with a "
                    "summary line in the log (records consumed, late, malformed, entity writes, "
                    "elapsed time).")
    p.add_argument("topologies", nargs="+", metavar="TOPOLOGY",
                   help="topology YAML files; one consumer group runs them all")
    _connections(p, redis=True)
    p.add_argument("--state-dir", default="./streamfeat-state", metavar="DIR",
                   help="local window state (RocksDB, one store per partition); default "
                        "./streamfeat-state")
    p.add_argument("--snapshot-dir", default=None, metavar="PATH|URL",
                   help="write Parquet snapshots of the raw records here (a directory or "
                        "s3://bucket/prefix), for replay, training-set and verify; default: none")
    p.add_argument("--checkpoint-dir", default=None, metavar="PATH|URL|none",
                   help="where each partition's state is made durable at every commit, so "
                   "that another host can take it over (contract 11); default: "
                   "<snapshot-dir>/_checkpoints when snapshots are on; none: local state only")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve /metrics (Prometheus) and /health on this port; default: off")
    p.add_argument("--stop-at-end", action="store_true",
                   help="process up to the end offsets found at start, flush, exit 0")
    p.add_argument("--group", default=None, metavar="GROUP",
                   help="consumer group (default: streamfeat.<topology names joined by +>)")
    p.add_argument("--batch-size", type=int, default=250_000, metavar="N",
                   help="records per poll at most (default 250000); the worker starts at "
                        "20000 and asks for more while it is behind (see --batch-seconds)")
    p.add_argument("--batch-seconds", type=float, default=DEFAULT_BATCH_SECONDS,
                   metavar="SECONDS",
                   help="while behind, batches grow toward this much work each (default "
                        f"{DEFAULT_BATCH_SECONDS:g}): larger batches cost less per event; a "
                        "worker that keeps up gets what is ready, whatever the size")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="worker processes of one group on this host (one core each)")
    p.add_argument("--snapshot-every", type=float, default=60.0, metavar="SECONDS",
                   help="seconds between Parquet snapshots (default 60)")
    p.add_argument("--commit-every", type=float, default=5.0, metavar="SECONDS",
                   help="seconds between commits of window state and offsets to RocksDB "
                        "(default 5; a partition per turn of the loop): a restart redoes at "
                        "most this much, with the same result")
    p.add_argument("--generation", type=int, default=0, metavar="N",
                   help="write generation; raise it after a backfill into the serving Redis")
    p.add_argument("--runtime", choices=RUNTIMES, default=RUNTIMES[0],
                   help="consumer runtime: faust (faust-streaming) or kafka (confluent-kafka)")
    p.add_argument("--unhealthy-after", type=float, default=10.0, metavar="SECONDS",
                   help="/health turns unhealthy once Kafka, Redis or the snapshots have been "
                        "failing this long (default 10)")
    p.add_argument("--instance-id", default=None, metavar="ID",
                   help="Kafka static group membership (group.instance.id): a worker "
                        "restarted with the same id gets its partitions back at once instead "
                        "of after the 10 s session timeout. Give each worker a stable id of "
                        "its own, e.g. its StatefulSet pod name (default: none, dynamic)")
    p.add_argument("--no-monitor", dest="monitor", action="store_false",
                   help="do not monitor the values written (distributions, drift; on by default)")
    p.add_argument("--monitor-interval", type=float, default=60.0, metavar="SECONDS",
                   help="seconds per value-monitoring interval (default 60)")
    p.add_argument("--recompute-max-rate", type=float, default=None, metavar="RECORDS_PER_S",
                   help="after a definition change, read history (snapshots, then the topic) "
                        "at most this fast, per partition, to spare the brokers and the "
                        "object store (default: as fast as the worker computes)")
    p.add_argument("--state-cache-mb", type=_budget_mb, default=DEFAULT_STATE_CACHE_MB,
                   metavar="MB|auto",
                   help="window state held in memory by each worker process, shared by its "
                        "partitions; the state of entities not used lately stays in the "
                        "state store (RocksDB) until an event or a window expiry needs it. "
                        "0: hold every entity. auto: sized from the container's memory "
                        "limit (497 for 2 GiB and one process; measured on count/sum/mean "
                        "topologies: see docs/operations.md before using it with sketches, "
                        f"sets or sessions) (default {DEFAULT_STATE_CACHE_MB})")
    p.set_defaults(run=_worker)


def _add_get(sub: Any) -> None:
    p = sub.add_parser(
        "get", help="read features of entities from Redis (JSON on stdout)",
        description="Print, as JSON, the features of ENTITY ids of TOPOLOGY from Redis; an "
                    "entity never seen gets the topology's defaults. An unknown --features "
                    "name exits 2, listing the features there are.")
    p.add_argument("topology", metavar="TOPOLOGY",
                   help="a topology YAML file, or a topology's name, looked up in "
                        "--topologies-dir")
    p.add_argument("entities", nargs="+", metavar="ENTITY", help="entity ids")
    p.add_argument("--features", metavar="NAMES",
                   help="comma-separated feature or field names (default: all)")
    p.add_argument("--topologies-dir", metavar="DIR",
                   help="where a topology given by name is looked up (env "
                        f"STREAMFEAT_TOPOLOGIES; default ./{TOPOLOGIES_DIR})")
    p.add_argument("--redis", metavar="URL", help=REDIS_HELP)
    p.set_defaults(run=_get)


def _add_generate(sub: Any) -> None:
    p = sub.add_parser(
        "generate", help="produce realistic events to a topic: a topology's, or demo orders",
        description="Produce events to Kafka, keyed by entity, the event time as the Kafka "
                    "timestamp: skewed entity popularity, some disorder, late and malformed "
                    "records on request. With TOPOLOGY, events of its source: its key and "
                    "event-time fields and every field its features and where filters read, "
                    "numbers or strings as they use them, in its format (json, msgpack, avro, "
                    "protobuf). Without, the demo's order events (topologies/orders.yaml).")
    p.add_argument("topology", nargs="?", metavar="TOPOLOGY",
                   help="topology YAML file whose source to produce (default: demo orders)")
    p.add_argument("--topic", default=None,
                   help="topic to produce to (default: the topology's source topic, or orders)")
    p.add_argument("--events", type=int, default=100_000, metavar="N",
                   help="how many events (default 100000)")
    p.add_argument("--entities", type=int, default=10_000, metavar="M",
                   help="how many distinct entities (default 10000)")
    p.add_argument("--malformed", type=float, default=0.0, metavar="FRACTION",
                   help="fraction of malformed records (default 0)")
    p.add_argument("--late", type=float, default=0.002, metavar="FRACTION",
                   help="fraction of events later than the topology's lateness (default 0.002)")
    p.add_argument("--seed", type=int, default=7,
                   help="random seed: the same seed gives the same events (default 7)")
    p.add_argument("--span", default=None, metavar="DURATION",
                   help="event times spread evenly over this much time, ending now, e.g. 2h or "
                        "3d (default: 200 events per second of event time)")
    _connections(p)
    p.set_defaults(run=_generate)


def _add_plan(sub: Any) -> None:
    p = sub.add_parser(
        "plan", help="what a worker starting these topologies on this state will recompute, "
                     "from which data, how long; exit 2 when some history is missing")
    p.add_argument("topologies", nargs="+", metavar="TOPOLOGY", help="topology YAML files")
    p.add_argument("--state-dir", required=True, metavar="DIR", help="the workers' --state-dir")
    p.add_argument("--snapshot-dir", default=None, metavar="PATH|URL",
                   help="the workers' --snapshot-dir, if any: history there counts")
    _connections(p)
    p.add_argument("--no-kafka", action="store_true",
                   help="do not ask Kafka: the topic part of the history is unknown")
    p.add_argument("--redis", metavar="URL",
                   help="the shared catalog (streamfeat registry) to name the models reading "
                        "each changed feature-window from, besides those the topologies "
                        "declare: declared by the version deployed, or seen reading it "
                        "(default STREAMFEAT_REDIS; neither: the declared ones only)")
    p.add_argument("--json", action="store_true", help="the plan as JSON, for tooling")
    p.set_defaults(run=_plan)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamfeat", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"streamfeat {streamfeat_version()}",
                        help="print streamfeat's version and exit")
    add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check topology files; exit 1 on any problem")
    p.add_argument("paths", nargs="+", metavar="TOPOLOGY", help="topology YAML files")
    p.set_defaults(run=_validate)

    _add_worker(sub)
    _add_get(sub)
    _add_generate(sub)

    from streamfeat.cli_registry import add_registry_command

    add_registry_command(sub)
    _add_plan(sub)

    from streamfeat.cli_monitor import add_monitor_commands
    from streamfeat.cli_replay import add_replay_commands
    from streamfeat.cli_serve import add_serve_command

    add_replay_commands(sub)
    add_monitor_commands(sub)
    add_serve_command(sub)
    for command in _commands(parser):  # -v and --log-format after any sub-command too
        add_common(command, top=False)
    return parser


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every sub-command's parser, nested ones (``monitor show``) included."""
    out: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                out += [command, *_commands(command)]
    return out


class _Say:
    """The command's own lines on stderr (an error, a warning): ``streamfeat: ...`` as text,
    or, with ``--log-format json``, log lines like every other (logger ``streamfeat``)."""

    def __init__(self, fmt: str) -> None:
        self.json = fmt == "json"

    def __call__(self, message: str, level: int = logging.ERROR) -> None:
        if self.json:
            logging.getLogger("streamfeat").log(level, "%s", message)
        else:
            warning = "warning: " if level == logging.WARNING else ""
            print(f"streamfeat: {warning}{redact(message)}", file=sys.stderr)

    def warning(self, message: str) -> None:
        self(message, logging.WARNING)

    def uncaught(self, kind: type[BaseException], exc: BaseException,
                 tb: TracebackType | None) -> None:
        """Python's report of an uncaught exception, redacted (``sys.excepthook``)."""
        if self.json:
            logging.getLogger("streamfeat").critical("uncaught %s", kind.__name__,
                                                     exc_info=(kind, exc, tb))
            return
        print(redact("".join(traceback.format_exception(kind, exc, tb))), end="",
              file=sys.stderr)

    def uncaught_in_thread(self, hook: threading.ExceptHookArgs) -> None:
        if hook.exc_type is SystemExit:
            return
        name = hook.thread.name if hook.thread is not None else "?"
        if not self.json:
            print(f"Exception in thread {name}:", file=sys.stderr)
        self.uncaught(hook.exc_type, hook.exc_value or hook.exc_type(), hook.exc_traceback)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(verbose=args.verbose, fmt=args.log_format)
    say = _Say(args.log_format)
    settle_topology(args, warn=say.warning)
    sys.excepthook = say.uncaught
    threading.excepthook = say.uncaught_in_thread
    try:
        return int(args.run(args))
    except BrokenPipeError:  # stdout closed early (| head): stop, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except StreamfeatError as exc:
        say(str(exc))
        return 2
    except Exception as exc:
        from confluent_kafka import KafkaException
        from redis.exceptions import RedisError

        if isinstance(exc, RedisError):  # a command's Redis went away: its words suffice
            logging.getLogger("streamfeat").debug("Redis client error", exc_info=True)
            say(f"Redis: {exc}")
            return 1
        if not isinstance(exc, KafkaException):
            raise
        # A Kafka client gave up (a broker lost at start, a fatal client error): its own
        # words are the message; the traceback says nothing more.
        logging.getLogger("streamfeat").debug("Kafka client error", exc_info=True)
        err: Any = exc.args[0] if exc.args else exc
        said = err.str() if callable(getattr(err, "str", None)) else str(err)
        say(f"Kafka: {said}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
