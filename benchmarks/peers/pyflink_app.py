"""The benchmark topology in Flink SQL, run by PyFlink (apache-flink, from .venv-flink).

One Flink job, submitted from Python to a local mini-cluster (the JVM PyFlink starts as a
child process; no Python runs per record: the job is all SQL):

- source: a ``kafka`` table (flink-sql-connector-kafka, the jar of the Flink version in
  .venv-flink), ``value.format = json`` (``user_id``, ``ts``, ``amount``), read from the
  earliest offset and bounded (``scan.bounded.mode = specific-offsets``) at the topic's
  first ``--events`` records, split over the partitions in proportion to their sizes;
  event time ``TO_TIMESTAMP_LTZ(ts, 3)`` with ``WATERMARK ... - INTERVAL '5' MINUTE``
  (the topology's lateness: later records are dropped by the windows);
- per user, ``COUNT(*)``, ``SUM(amount)``, ``AVG(amount)`` over ``HOP`` windows of 5m, 1h
  and 1d with streamfeat's default hops as slides (5s, 1m, 10m), and ``COUNT(*)`` over a
  1h ``TUMBLE`` window: window table-valued functions ``GROUP BY user_id, window_start,
  window_end``, four INSERTs in one statement set (one job; the source is read once).
  Flink emits each window's row when the watermark passes its end, and every open window
  at the end of the bounded input;
- sink: the ``blackhole`` connector (rows are discarded). Flink has no Redis connector for
  its SQL in the official releases, and a Python sink would put Python back on the
  per-row path; so, unlike streamfeat, Quix, Faust and Bytewax, this peer writes nothing
  to Redis (0 keys) and its figure is an upper bound for Flink with a real sink.

``--parallelism`` sets ``parallelism.default`` (the mini-cluster gets as many slots).
No checkpoints (the other peers' exactly-once or at-least-once commits are not matched:
another reason its figure is an upper bound); heap state backend (the default).

Prints ``{"peer": "pyflink", "events": n, "seconds": t, "job_seconds": j}``: ``seconds``
from the script's start (JVM start and planning included) to the job's end, ``job_seconds``
Flink's net run time of the job (from its start in the cluster to its end).

    .venv-flink/bin/python benchmarks/peers/pyflink_app.py --topic T --events N --jar JAR
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

# (label, size, streamfeat's default hop for that size), as Flink SQL intervals
SLIDING = (("5m", "INTERVAL '5' MINUTE", "INTERVAL '5' SECOND"),
           ("1h", "INTERVAL '1' HOUR", "INTERVAL '1' MINUTE"),
           ("1d", "INTERVAL '1' DAY", "INTERVAL '10' MINUTE"))


def end_offsets(kafka: str, topic: str, events: int) -> dict[int, tuple[int, int]]:
    """Per partition (low, end): the topic's first ``events`` records, split over the
    partitions in proportion to their sizes (as benchmarks/peers/bytewax_app.py)."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": "pyflink-bench-offsets"})
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                 for p in sorted(meta.partitions)}
    finally:
        consumer.close()
    total = sum(high - low for low, high in marks.values())
    if events >= total:
        return {p: (low, high) for p, (low, high) in marks.items()}
    share = {p: (high - low) * events // total for p, (low, high) in marks.items()}
    largest = max(marks, key=lambda p: marks[p][1] - marks[p][0])
    share[largest] += events - sum(share.values())
    return {p: (low, low + share[p]) for p, (low, _high) in marks.items()}


def statements(args: argparse.Namespace, ends: dict[int, tuple[int, int]]) -> list[str]:
    bounds = ";".join(f"partition:{p},offset:{end}" for p, (_low, end) in ends.items())
    ddl = [f"""
        CREATE TABLE orders (
            user_id STRING,
            amount DOUBLE,
            ts BIGINT,
            rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
            WATERMARK FOR rowtime AS rowtime - INTERVAL '5' MINUTE
        ) WITH (
            'connector' = 'kafka',
            'topic' = '{args.topic}',
            'properties.bootstrap.servers' = '{args.kafka}',
            'properties.group.id' = '{args.group}',
            'scan.startup.mode' = 'earliest-offset',
            'scan.bounded.mode' = 'specific-offsets',
            'scan.bounded.specific-offsets' = '{bounds}',
            'value.format' = 'json',
            'value.json.ignore-parse-errors' = 'true'
        )"""]
    inserts = []
    for label, size, hop in SLIDING:
        ddl.append(f"""
            CREATE TABLE sink_{label} (
                user_id STRING, window_end TIMESTAMP(3),
                orders BIGINT, amount_sum DOUBLE, amount_mean DOUBLE
            ) WITH ('connector' = '{args.sink}')""")
        inserts.append(f"""
            INSERT INTO sink_{label}
            SELECT user_id, window_end, COUNT(*), SUM(amount), AVG(amount)
            FROM TABLE(HOP(TABLE orders, DESCRIPTOR(rowtime), {hop}, {size}))
            GROUP BY user_id, window_start, window_end""")  # noqa: S608 (our constants)
    ddl.append(f"""
        CREATE TABLE sink_hourly (user_id STRING, window_end TIMESTAMP(3), orders BIGINT)
        WITH ('connector' = '{args.sink}')""")
    inserts.append("""
        INSERT INTO sink_hourly
        SELECT user_id, window_end, COUNT(*)
        FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(rowtime), INTERVAL '1' HOUR))
        GROUP BY user_id, window_start, window_end""")
    return ddl + inserts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True, help="the topic's first N")
    parser.add_argument("--jar", required=True, help="flink-sql-connector-kafka jar")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--group", default="pyflink-bench")
    parser.add_argument("--sink", choices=("blackhole", "print"), default="blackhole",
                        help="print: every window's row to stdout (to check the results)")
    parser.add_argument("--explain", action="store_true", help="print the plan, run nothing")
    parser.add_argument("--kafka", default=os.environ.get("STREAMFEAT_KAFKA", "localhost:9092"))
    args = parser.parse_args()
    started = time.perf_counter()

    from pyflink.table import EnvironmentSettings, TableEnvironment

    ends = end_offsets(args.kafka, args.topic, args.events)
    events = sum(end - low for low, end in ends.values())
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = env.get_config()
    config.set("pipeline.jars", Path(args.jar).resolve().as_uri())
    config.set("parallelism.default", str(args.parallelism))
    config.set("pipeline.name", f"streamfeat-bench-{args.topic}")
    ddl = statements(args, ends)
    inserts = [s for s in ddl if s.lstrip().startswith("INSERT")]
    for statement in ddl:
        if statement not in inserts:
            env.execute_sql(statement)
    job = env.create_statement_set()
    for statement in inserts:
        job.add_insert_sql(statement)
    if args.explain:
        print(job.explain())
        return
    result = job.execute()
    client = result.get_job_client()
    assert client is not None
    print(json.dumps({"job": str(client.get_job_id()), "parallelism": args.parallelism,
                      "seconds": round(time.perf_counter() - started, 3)}), flush=True)
    done = client.get_job_execution_result().result()
    took = time.perf_counter() - started
    print(json.dumps({"peer": "pyflink", "events": events, "seconds": round(took, 3),
                      "job_seconds": round(done.get_net_runtime() / 1000, 3)}), flush=True)


if __name__ == "__main__":
    main()
