"""The benchmark topology as a plain Faust app (faust-streaming, run from the peers venv).

Windowed tables updated per event, the way Faust's docs teach: one table per aggregation
and window (``count`` and ``sum`` of ``amount``; the mean is sum / count), ``.hopping(W,
H)`` for streamfeat's sliding windows (same hops: 5s, 1m, 10m) and ``.tumbling(1h)``;
in-memory table store with changelog topics (Faust's default). For each event the agent
reads the entity's values as of that event (``.delta(W - H)``: the oldest open window
that contains the event, i.e. the most history up to it; ``.current()`` would be the
newest, nearly empty one) and a timer writes the changed entities to Redis every 0.5 s,
one hash per entity (``sf:{name}:{user}``). Exits after ``--events`` input records once
the last values are in Redis.

    .venv-peers/bin/python benchmarks/peers/faust_app.py --topic T --events N --name NAME
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import tempfile
import time
from datetime import timedelta
from typing import Any

import faust
import redis.asyncio as aioredis

# (label, size s, streamfeat's default hop for that size, s)
SLIDING = (("5m", 300.0, 5.0), ("1h", 3600.0, 60.0), ("1d", 86400.0, 600.0))
HOUR = 3600.0
LATENESS = 300.0
PROGRESS_EVERY = 1000


def build(args: argparse.Namespace) -> tuple[faust.App, dict[str, Any]]:
    app = faust.App(
        args.group or f"faust-{args.name}",
        broker=f"kafka://{args.kafka}",
        store="memory://",
        topic_partitions=args.partitions,
        datadir=args.state_dir or tempfile.mkdtemp(prefix="faust-state-"),
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
    )
    topic = app.topic(args.topic, key_type=bytes, key_serializer="raw",
                      value_serializer="json", partitions=args.partitions)
    tables = {}
    for label, size, hop in SLIDING:
        expires = timedelta(seconds=size + LATENESS)
        tables[f"orders__{label}"] = (
            app.Table(f"orders_{label}", default=int, partitions=args.partitions)
            .hopping(size, hop, expires=expires), size - hop)
        tables[f"amount_sum__{label}"] = (
            app.Table(f"amount_sum_{label}", default=float, partitions=args.partitions)
            .hopping(size, hop, expires=expires), size - hop)
    hourly = (app.Table("orders_hourly", default=int, partitions=args.partitions)
              .tumbling(HOUR, expires=timedelta(seconds=HOUR + LATENESS)))

    run: dict[str, Any] = {"seen": 0, "dirty": {}, "done": asyncio.Event(), "t0": 0.0}
    client = aioredis.Redis.from_url(args.redis)
    prefix = f"sf:{args.name}:"

    async def flush() -> None:
        dirty, run["dirty"] = run["dirty"], {}
        if not dirty:
            return
        now = str(int(time.time() * 1000))
        async with client.pipeline(transaction=False) as pipe:
            for key, mapping in dirty.items():
                mapping["_updated"] = now
                pipe.hset(prefix + key.decode(), mapping=mapping)
            await pipe.execute()

    @app.agent(topic)
    async def aggregate(stream: faust.Stream) -> None:
        async for event in stream.events():
            key, order = event.key, event.value
            amount = float(order["amount"])
            values: dict[str, str] = {}
            for label, _size, _hop in SLIDING:
                counts, back = tables[f"orders__{label}"]
                sums, _ = tables[f"amount_sum__{label}"]
                counts[key] += 1
                sums[key] += amount
                n = counts[key].delta(back)
                total = sums[key].delta(back)
                values[f"orders__{label}"] = str(n)
                values[f"amount_sum__{label}"] = repr(total)
                values[f"amount_mean__{label}"] = repr(total / n) if n else ""
            hourly[key] += 1
            values["orders_hourly__1h"] = str(hourly[key].current())
            run["dirty"][key] = values
            run["seen"] += 1
            if run["seen"] % PROGRESS_EVERY == 0:  # lets the harness rate a stopped run
                print(json.dumps({"progress": run["seen"],
                                  "seconds": round(time.perf_counter() - run["t0"], 3)}),
                      flush=True)
            if run["seen"] >= args.events:
                run["done"].set()

    @app.timer(0.5)
    async def writer() -> None:
        await flush()

    @app.task
    async def stop_at_end() -> None:
        run["t0"] = time.perf_counter()
        await run["done"].wait()
        await flush()
        took = time.perf_counter() - run["t0"]
        print(json.dumps({"peer": "faust", "events": run["seen"], "seconds": round(took, 3)}),
              flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful shutdown

    return app, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True, help="stop after this many")
    parser.add_argument("--name", required=True, help="Redis key prefix sf:{name}:")
    parser.add_argument("--partitions", type=int, default=4, help="of the source topic")
    parser.add_argument("--group", default=None)
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("--kafka", default=os.environ.get("STREAMFEAT_KAFKA", "localhost:9092"))
    parser.add_argument("--redis",
                        default=os.environ.get("STREAMFEAT_REDIS", "redis://localhost:6379/0"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    app, _run = build(args)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
