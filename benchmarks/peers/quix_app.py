"""The benchmark topology as a Quix Streams application (run from the peers venv).

Computes, per user, count / sum / mean of ``amount`` over 5m, 1h and 1d windows and the
count over a 1h tumbling window, and writes them to Redis, one hash per entity
(``sf:{name}:{user}``, fields named like streamfeat's: ``orders__1h``, ``amount_sum__1h``,
``amount_mean__1h``, ``orders_hourly__1h``). Exits once it has consumed ``--events`` input
records and its sinks are flushed.

``--windows tumbling`` replaces every sliding window by a tumbling window of the same size
(Quix's cheapest window: one window per event), for Quix's tumbling throughput on the
same workload. ``--windows sliding`` (default) is the benchmark topology, with sliding
windows as chosen by ``--sliding``:

- ``hopping`` (default): ``hopping_window(W, step=H)`` with streamfeat's default hop H
  (5s, 1m, 10m). That is the same window as streamfeat's ``sliding`` (the contract defines
  sliding W with hop H as hopping W with step S = H). Quix emits every open window an
  event falls into (W/H of them: 60, 60, 144); we write only the first, the one covering
  the most history up to the event, which is the value streamfeat serves.
- ``exact``: Quix's own ``sliding_window(W)`` (a 1 ms step, i.e. streamfeat's
  ``hop: exact``); it scans the key's windows of the last 2W on every event, so its cost
  grows with the number of events per key inside the window.

Idiomatic Quix per its docs: a StreamingDataFrame, one branch per window with
``.agg(...).current()``, a ``BatchingSink`` subclass flushed at every checkpoint,
RocksDB state with changelog topics (the defaults).

    .venv-peers/bin/python benchmarks/peers/quix_app.py --topic T --events N --name NAME
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import timedelta
from typing import Any

import redis
from quixstreams import Application, message_context
from quixstreams.dataframe.windows import Count, Mean, Sum
from quixstreams.sinks import BatchingSink, SinkBatch

# (label, size, streamfeat's default hop for that size)
SLIDING = (("5m", timedelta(minutes=5), timedelta(seconds=5)),
           ("1h", timedelta(hours=1), timedelta(minutes=1)),
           ("1d", timedelta(days=1), timedelta(minutes=10)))
LATENESS = timedelta(minutes=5)
PROGRESS_EVERY = 5000


class RedisHashSink(BatchingSink):
    """Writes the newest window result of each key in a batch as fields of its hash."""

    def __init__(self, client: redis.Redis, name: str, fields: dict[str, str]) -> None:
        super().__init__()
        self._redis = client
        self._prefix = f"sf:{name}:"
        self._fields = fields  # aggregation column -> Redis field

    def write(self, batch: SinkBatch) -> None:
        latest: dict[Any, dict[str, Any]] = {}
        for item in batch:
            latest[item.key] = item.value
        if not latest:
            return
        pipe = self._redis.pipeline(transaction=False)
        now = str(int(time.time() * 1000))
        for key, value in latest.items():
            entity = key.decode() if isinstance(key, bytes) else str(key)
            mapping = {field: _text(value.get(col)) for col, field in self._fields.items()}
            mapping["_updated"] = now
            pipe.hset(self._prefix + entity, mapping=mapping)
        pipe.execute()


def _text(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _first_of_each_message() -> Any:
    """A filter passing only the first window result produced by each input message."""
    last: list[tuple[int, int] | None] = [None]

    def keep(_value: Any) -> bool:
        ctx = message_context()
        mark = (ctx.partition, ctx.offset)
        if mark == last[0]:
            return False
        last[0] = mark
        return True

    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True, help="stop after this many")
    parser.add_argument("--name", required=True, help="Redis key prefix sf:{name}:")
    parser.add_argument("--group", default=None)
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("--windows", choices=("sliding", "tumbling"), default="sliding")
    parser.add_argument("--sliding", choices=("hopping", "exact"), default="hopping")
    parser.add_argument("--kafka", default=os.environ.get("STREAMFEAT_KAFKA", "localhost:9092"))
    parser.add_argument("--redis",
                        default=os.environ.get("STREAMFEAT_REDIS", "redis://localhost:6379/0"))
    args = parser.parse_args()

    client = redis.Redis.from_url(args.redis)
    app = Application(
        broker_address=args.kafka,
        consumer_group=args.group or f"quix-{args.name}",
        auto_offset_reset="earliest",
        state_dir=args.state_dir or tempfile.mkdtemp(prefix="quix-state-"),
        loglevel="WARNING",
    )
    sdf = app.dataframe(app.topic(args.topic, value_deserializer="json"))

    seen = [0]
    started = time.perf_counter()

    def count_input(_value: Any) -> None:
        seen[0] += 1
        if seen[0] % PROGRESS_EVERY == 0:  # lets the harness rate a run it had to stop
            print(json.dumps({"progress": seen[0],
                              "seconds": round(time.perf_counter() - started, 3)}), flush=True)
        if seen[0] >= args.events:
            app.stop()  # finishes this message, then commits and flushes the sinks

    sdf = sdf.update(count_input)

    for label, size, hop in SLIDING:
        if args.windows == "tumbling":
            window = sdf.tumbling_window(size, grace_ms=LATENESS, name=f"window_{label}")
        elif args.sliding == "hopping":
            window = sdf.hopping_window(size, step_ms=hop, grace_ms=LATENESS,
                                        name=f"sliding_{label}")
        else:
            window = sdf.sliding_window(size, grace_ms=LATENESS, name=f"sliding_{label}")
        branch = window.agg(count=Count(), sum=Sum("amount"), mean=Mean("amount")).current()
        branch = branch.filter(_first_of_each_message())
        branch.sink(RedisHashSink(client, args.name, {
            "count": f"orders__{label}", "sum": f"amount_sum__{label}",
            "mean": f"amount_mean__{label}",
        }))
    hourly = sdf.tumbling_window(timedelta(hours=1), grace_ms=LATENESS, name="tumbling_1h")
    hourly = hourly.agg(count=Count()).current()
    hourly.sink(RedisHashSink(client, args.name, {"count": "orders_hourly__1h"}))

    app.run()
    took = time.perf_counter() - started
    print(json.dumps({"peer": f"quix-{args.windows}", "events": seen[0],
                      "seconds": round(took, 3)}))


if __name__ == "__main__":
    main()
