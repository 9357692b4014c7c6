"""The ``streamfeat`` command (contract section 7)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from streamfeat import logs
from streamfeat.config import RUNTIMES, resolve_kafka, resolve_redis
from streamfeat.connections import parse_redis_url, resolve_kafka_config
from streamfeat.errors import ConfigError, StreamfeatError
from streamfeat.redact import redact

if TYPE_CHECKING:
    from streamfeat.topology import TopologyDef

__all__ = ["main"]


def _validate(args: argparse.Namespace) -> int:
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
                  f"{_path_of(topology)})")
    return 1 if failed else 0


def _path_of(topology: TopologyDef) -> str:
    """How the worker reaches the topology's events, in words (validate, registry)."""
    from streamfeat.pipeline.rekey import is_rekeyed, repartition_topic

    src = topology.source
    if is_rekeyed(topology):
        return (f"re-keyed by {src.key} through {repartition_topic(topology)}: "
                f"{src.topic} is not keyed by the entity")
    return f"aggregated from {src.topic} directly: its records are keyed by {src.key}"


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
    if args.unhealthy_after <= 0:
        raise ConfigError(f"--unhealthy-after must be above 0 seconds, got {args.unhealthy_after}")
    topologies = [load_topology(p) for p in args.topologies]  # a bad one: before anything
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
        snapshot_every_s=args.snapshot_every,
        commit_every_s=args.commit_every,
        generation=args.generation,
        runtime=args.runtime,
        unhealthy_after_s=args.unhealthy_after,
        instance_id=args.instance_id,
        checkpoint_dir=_checkpoint_dir(args),
    )
    check_connections(config)  # Kafka and Redis answer, or one line saying what to check
    if args.processes > 1:
        from streamfeat.runtime.supervisor import run_processes

        return run_processes(_worker_argv(args), args.processes, args.metrics_port)
    return Worker(config).run()


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
    return argv


def _get(args: argparse.Namespace) -> int:
    from streamfeat.client import Client

    client = Client(_redis(args.redis))
    features = args.features.split(",") if args.features else None
    rows = client.get(args.topology, args.entities, features=features)
    json.dump(rows, sys.stdout, indent=2, sort_keys=True, default=str)
    print()
    return 0


def _generate(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from streamfeat.generator import OrderEvents, produce_events
    from streamfeat.runtime.consumers import ConsumerSettings
    from streamfeat.runtime.consumers.check import check_kafka

    kafka, kafka_config, kafka_config_file = _kafka(args)
    settings = ConsumerSettings(kafka, "streamfeat.generate", client_config=kafka_config)
    check_kafka(settings, config_file=kafka_config_file)
    producer = Producer({
        **settings.librdkafka(), "linger.ms": 20,
        "enable.idempotence": True, "compression.type": "lz4",
    })
    events = OrderEvents(
        entities=args.entities, seed=args.seed, malformed_fraction=args.malformed,
        late_fraction=args.late,
    )
    left = produce_events(producer, args.topic, events.events(args.events))
    if left:
        print(f"{left} events were not delivered", file=sys.stderr)
        return 1
    print(f"produced {args.events} events to {args.topic}")
    return 0


def _registry(args: argparse.Namespace) -> int:
    from streamfeat.pipeline.rekey import consumed_topic
    from streamfeat.topology import load_topology

    for path in args.topologies:
        t = load_topology(path)
        partial = _partial_marks(_redis(args.redis), t.name) if args.redis else {}
        for f in t.features:
            for w in f.windows:
                if args.feature and args.feature not in (f.name, f.redis_field(w)):
                    continue
                entry = {
                    "field": f.redis_field(w), "topology": t.name, "owner": t.owner,
                    "entity": t.entity, "source": t.source.topic, "agg": f.agg.value,
                    "input": f.field, "where": f.where, "window": w.canonical(),
                    "version": f.state_hash(w), "file": f"{t.path}:{f.line}",
                    "consumes": consumed_topic(t), "path": _path_of(t),
                }
                if args.redis:
                    # partition -> event time (ms) its recomputed history starts at
                    entry["partial_since_ms"] = partial.get(f.redis_field(w), {})
                print(json.dumps(entry))
    return 0


def _partial_marks(url: str, topology: str) -> dict[str, dict[str, int]]:
    """field -> {partition: event time its history starts at}: feature-windows computed
    from history shorter than their window after a definition change (contract 10)."""
    from redis.exceptions import RedisError

    from streamfeat.connections import parse_redis_url
    from streamfeat.errors import SinkError
    from streamfeat.sinks.redis import connect, partial_key

    target = parse_redis_url(url)
    client = connect(target)
    try:
        raw = client.hgetall(partial_key(topology))
    except RedisError as e:
        raise SinkError(f"reading the partial history marks from Redis at {target.address} "
                        f"({target.display}) failed: {redact(e)}; check --redis") from None
    finally:
        client.close()
    out: dict[str, dict[str, int]] = {}
    for key, since in raw.items():
        text = key.decode() if isinstance(key, bytes) else str(key)
        field, _at, partition = text.rpartition("@")
        out.setdefault(field, {})[partition] = int(since)
    return out


def _plan(args: argparse.Namespace) -> int:
    from streamfeat.runtime.plan import exit_code, plan, render, to_json
    from streamfeat.topology import load_topology

    topologies = [load_topology(p) for p in args.topologies]
    kafka, kafka_config, _file = _kafka(args)
    plans = plan(topologies, args.state_dir, snapshot_dir=args.snapshot_dir,
                 kafka=None if args.no_kafka else kafka, kafka_config=kafka_config)
    if args.json:
        json.dump(to_json(plans), sys.stdout, indent=2)
        print()
    else:
        print(render(plans))
    return exit_code(plans)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamfeat", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check topology files; exit 1 on any problem")
    p.add_argument("paths", nargs="+")
    p.set_defaults(run=_validate)

    p = sub.add_parser("worker", help="run topologies over Kafka, features to Redis")
    p.add_argument("topologies", nargs="+")
    p.add_argument("--kafka", help="bootstrap servers (env STREAMFEAT_KAFKA)")
    p.add_argument("--kafka-config", metavar="FILE",
                   help="Kafka client properties in librdkafka's names (security.protocol, "
                        "sasl.*, ssl.*...), ${ENV_VAR} allowed (env STREAMFEAT_KAFKA_CONFIG)")
    p.add_argument("--redis", help="Redis URL: redis:// or rediss:// (TLS), "
                   "user:password@, TLS files as ?ssl_ca_certs=...&ssl_certfile=...&"
                   "ssl_keyfile=... (env STREAMFEAT_REDIS)")
    p.add_argument("--state-dir", default="./streamfeat-state")
    p.add_argument("--snapshot-dir", default=None)
    p.add_argument("--checkpoint-dir", default=None, metavar="PATH|URL|none",
                   help="where each partition's state is made durable at every commit, so "
                   "that another host can take it over (contract 11); default: "
                   "<snapshot-dir>/_checkpoints when snapshots are on; none: local state only")
    p.add_argument("--metrics-port", type=int, default=None)
    p.add_argument("--stop-at-end", action="store_true",
                   help="process up to the end offsets found at start, flush, exit 0")
    p.add_argument("--group", default=None, help="consumer group (default: from topology names)")
    p.add_argument("--batch-size", type=int, default=20_000)
    p.add_argument("--processes", type=int, default=1,
                   help="worker processes of one group on this host (one core each)")
    p.add_argument("--snapshot-every", type=float, default=60.0,
                   help="seconds between Parquet snapshots (default 60)")
    p.add_argument("--commit-every", type=float, default=5.0,
                   help="seconds between commits of window state and offsets to RocksDB "
                        "(default 5): a restart redoes at most this much, with the same result")
    p.add_argument("--generation", type=int, default=0,
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
    p.set_defaults(run=_worker)

    p = sub.add_parser("get", help="read features of entities from Redis")
    p.add_argument("topology")
    p.add_argument("entities", nargs="+")
    p.add_argument("--features", help="comma-separated feature or field names")
    p.add_argument("--redis")
    p.set_defaults(run=_get)

    p = sub.add_parser("generate", help="produce realistic order events to a topic")
    p.add_argument("--topic", default="orders")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--entities", type=int, default=10_000)
    p.add_argument("--malformed", type=float, default=0.0, help="fraction of malformed records")
    p.add_argument("--late", type=float, default=0.002, help="fraction of late events")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--kafka")
    p.add_argument("--kafka-config", metavar="FILE",
                   help="Kafka client properties in librdkafka's names (security.protocol, "
                        "sasl.*, ssl.*...), ${ENV_VAR} allowed (env STREAMFEAT_KAFKA_CONFIG)")
    p.set_defaults(run=_generate)

    p = sub.add_parser("registry", help="list features with owner, entity, source, version")
    p.add_argument("topologies", nargs="+")
    p.add_argument("--feature", help="show one feature or field")
    p.add_argument("--redis", help="also show, from this Redis, the feature-windows whose "
                   "history was cut short when they were computed (partial_since_ms)")
    p.set_defaults(run=_registry)

    p = sub.add_parser(
        "plan", help="what a worker starting these topologies on this state will recompute, "
                     "from which data, how long; exit 2 when some history is missing")
    p.add_argument("topologies", nargs="+")
    p.add_argument("--state-dir", required=True, help="the workers' --state-dir")
    p.add_argument("--snapshot-dir", default=None)
    p.add_argument("--kafka", help="bootstrap servers (env STREAMFEAT_KAFKA)")
    p.add_argument("--kafka-config", metavar="FILE",
                   help="Kafka client properties in librdkafka's names (security.protocol, "
                        "sasl.*, ssl.*...), ${ENV_VAR} allowed (env STREAMFEAT_KAFKA_CONFIG)")
    p.add_argument("--no-kafka", action="store_true",
                   help="do not ask Kafka: the topic part of the history is unknown")
    p.add_argument("--json", action="store_true", help="the plan as JSON, for tooling")
    p.set_defaults(run=_plan)

    from streamfeat.cli_replay import add_replay_commands
    from streamfeat.cli_serve import add_serve_command

    add_replay_commands(sub)
    add_serve_command(sub)
    return parser


def _excepthook(kind: type[BaseException], exc: BaseException,
                tb: TracebackType | None) -> None:
    """Python's report of an uncaught exception, redacted."""
    print(redact("".join(traceback.format_exception(kind, exc, tb))), end="", file=sys.stderr)


def _thread_excepthook(hook: threading.ExceptHookArgs) -> None:
    if hook.exc_type is SystemExit:
        return
    name = hook.thread.name if hook.thread is not None else "?"
    print(f"Exception in thread {name}:", file=sys.stderr)
    _excepthook(hook.exc_type, hook.exc_value or hook.exc_type(), hook.exc_traceback)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(verbose=args.verbose)
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    try:
        return int(args.run(args))
    except StreamfeatError as exc:
        print(f"streamfeat: {redact(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        from confluent_kafka import KafkaException
        from redis.exceptions import RedisError

        if isinstance(exc, RedisError):  # a command's Redis went away: its words suffice
            logging.getLogger("streamfeat").debug("Redis client error", exc_info=True)
            print(f"streamfeat: Redis: {redact(exc)}", file=sys.stderr)
            return 1
        if not isinstance(exc, KafkaException):
            raise
        # A Kafka client gave up (a broker lost at start, a fatal client error): its own
        # words are the message; the traceback says nothing more.
        logging.getLogger("streamfeat").debug("Kafka client error", exc_info=True)
        err: Any = exc.args[0] if exc.args else exc
        said = err.str() if callable(getattr(err, "str", None)) else str(err)
        print(f"streamfeat: Kafka: {redact(said)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
