"""The shared registry end to end (issue #17), on the real Kafka and Redis: two teams'
topologies, three versions of one deployed by real workers (``--stop-at-end``), the other
recorded as the worker records it, three models reading through the client; every question
``streamfeat registry`` answers, ``plan`` naming the models a change breaks, and a training
set's lineage."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis as redis_lib

from streamfeat.cli import main
from streamfeat.client import Client
from streamfeat.registry import catalog_key, read_lineage, record_deployments, usage_key
from streamfeat.replay import training_set
from streamfeat.snapshot.reader import snapshot_files
from streamfeat.topology import TopologyDef, load_topology

from harness import read_messages, run_to_end

pytestmark = pytest.mark.integration


def payments(name: str, topic: str, owner: str, version: int, fraud: str, limits: str) -> str:
    """Three versions: v2 filters amount_sum (redefined), adds merchants and declares the
    fraud model for every feature; v3 renames amount_sum, drops amount_max, and declares the
    limits model reading merchants."""
    where = "    where: \"status == 'completed'\"\n" if version >= 2 else ""
    models = f"models: [{fraud}]\n" if version >= 2 else ""
    spend = "spend_completed" if version == 3 else "amount_sum"
    merchants = ("  - name: merchants\n    agg: count_distinct\n    field: merchant_id\n"
                 "    windows: [1d]\n" if version >= 2 else "")
    if version == 3:
        merchants += f"    models: [{limits}]\n"
    amount_max = ("  - name: amount_max\n    agg: max\n    field: amount\n    windows: [1d]\n"
                  if version < 3 else "")
    return (f"name: {name}\nowner: {owner}\nentity: user\ndescription: Payments per user\n"
            f"{models}source: {{topic: {topic}, key: user_id, timestamp: ts}}\nlateness: 5m\n"
            "features:\n"
            "  - name: payments\n    agg: count\n    windows: [1h, 1d]\n    tags: [activity]\n"
            f"  - name: {spend}\n    agg: sum\n    field: amount\n{where}    windows: [1h]\n"
            f"{merchants}{amount_max}")


def merchants(name: str, topic: str, owner: str, tag: str, pricing: str) -> str:
    return (f"name: {name}\nowner: {owner}\nentity: merchant\n"
            f"source: {{topic: {topic}, key: merchant_id, timestamp: ts}}\nfeatures:\n"
            "  - name: orders\n    agg: count\n    windows: [1h]\n"
            f"  - name: price_mean\n    agg: mean\n    field: price\n    windows: [1h, 1d]\n"
            f"    tags: [{tag}]\n    models: [{pricing}]\n")


def _fields(t: TopologyDef) -> dict[str, str]:
    return {f.redis_field(w): f.state_hash(w) for f in t.features for w in f.windows}


class Registry:
    """``streamfeat registry ...`` run in this process; its exit status, stdout, stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def run(self, *args: str, command: str = "registry") -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([command, *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> dict[str, Any]:
        code, out, err = self.run(*args, "--json")
        assert code == 0, err
        doc: dict[str, Any] = json.loads(out)
        return doc

    def refused(self, *args: str) -> str:
        code, out, err = self.run(*args)
        assert (code, out) == (2, ""), (code, out, err)
        return err.strip()


def test_two_teams_three_versions_and_the_models_reading_them(
        tmp_path: Path, new_topic: Callable[..., str], kafka_bootstrap: str, redis_url: str,
        unique_id: str, forget: Callable[[str], str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFEAT_KAFKA", kafka_bootstrap)
    monkeypatch.setenv("STREAMFEAT_REDIS", redis_url)  # the registry's default catalog
    uid = unique_id
    pay, shop = forget(f"{uid}-payments"), forget(f"{uid}-merchants")
    fraud, churn, legacy = f"fraud-{uid}", f"churn-{uid}", f"legacy-{uid}"
    limits, pricing = f"limits-{uid}", f"pricing-{uid}"
    owner_a, owner_b = f"risk-{uid}@example.com", f"pricing-{uid}@example.com"
    topic = new_topic("payments", partitions=2)
    paths: dict[int, Path] = {}
    for v in (1, 2, 3):
        paths[v] = tmp_path / f"payments-v{v}.yaml"
        paths[v].write_text(payments(pay, topic, owner_a, v, fraud, limits))
    shop_path = tmp_path / "merchants.yaml"
    shop_path.write_text(merchants(shop, f"{uid}-orders", owner_b, f"pricing-{uid}", pricing))
    v1, v2, v3 = (load_topology(paths[v]) for v in (1, 2, 3))
    registry = Registry(capsys)
    state, snaps = tmp_path / "state", tmp_path / "snapshots"
    worker = ("--snapshot-dir", str(snaps))

    # events of the source with every field the versions read (v2 reads them all)
    assert registry.run(str(paths[2]), "--events", "150", "--entities", "12", "--late", "0",
                        command="generate")[0] == 0

    # -- deployments: real workers record their topology's version at start
    log = run_to_end(paths[1], state, kafka_bootstrap, redis_url, *worker).read_text()
    assert f"registry: {pay} version 1 recorded (new)" in log, log[-3000:]
    with Client(redis_url, model=legacy) as client:  # a model reading v1's amount_max
        client.get(paths[1], ["u1"], ["amount_max"])
    log = run_to_end(paths[1], state, kafka_bootstrap, redis_url, *worker).read_text()
    assert f"registry: {pay} version 1 started again" in log, log[-3000:]
    run_to_end(paths[2], state, kafka_bootstrap, redis_url, *worker)

    # -- plan, before v3 runs, names the models that the rename and the removal break
    plan = (str(paths[3]), "--state-dir", str(state), "--snapshot-dir", str(snaps), "--no-kafka")
    code, out, err = registry.run(*plan, "--json", command="plan")
    assert code == 0, err
    fields = {f["field"]: f for f in json.loads(out)["topologies"][0]["fields"]}
    assert fields["spend_completed__1h"]["status"] == {"renamed (was amount_sum__1h)": [0, 1]}
    assert fields["spend_completed__1h"]["models"] == [fraud]  # declared by v2
    assert fields["amount_max__1d"]["status"] == {"removed": [0, 1]}
    assert fields["amount_max__1d"]["models"] == sorted([fraud, legacy])  # and seen reading
    assert fields["payments__1h"]["models"] == []  # unchanged: nothing to break
    # its state was shared with amount_max's (count and max of one window): recomputed
    assert fields["payments__1d"]["recomputed_in"] == [0, 1]
    assert fields["payments__1d"]["models"] == [fraud]
    code, out, _err = registry.run(*plan, command="plan")
    row = next(line for line in out.splitlines() if line.strip().startswith("amount_max__1d"))
    assert row.rstrip().endswith(", ".join(sorted([fraud, legacy]))), out

    run_to_end(paths[3], state, kafka_bootstrap, redis_url, *worker)
    record_deployments(redis_url, [load_topology(shop_path)], 0)  # what a worker calls

    # -- two models read through the client
    with Client(redis_url, model=fraud) as client:
        for _ in range(3):
            client.get(paths[3], ["u1", "u2"], ["payments", "spend_completed"])
    with Client(redis_url, model=churn) as client:
        for _ in range(2):
            client.get(paths[3], ["u3"], ["merchants__1d"])
            client.get(shop_path, ["m1"], ["orders"])
    read_by = time.time() * 1000

    # -- the listing, filtered
    doc = registry.json("--owner", owner_a)
    assert [t["topology"] for t in doc["topologies"]] == [pay]
    about = doc["topologies"][0]
    assert (about["version"], about["versions"], about["starts"], about["generation"],
            about["owner"], about["entity"], about["source"], about["host"]) == \
        (3, 3, 1, 0, owner_a, "user", topic, socket.gethostname())
    assert {e["field"]: e["version"] for e in doc["features"]} == _fields(v3)
    assert [e["field"] for e in doc["features"]] == list(_fields(v3))

    doc = registry.json("--entity", "merchant")  # other tests' topologies may be there too
    shown = {t["topology"] for t in doc["topologies"]}
    assert shop in shown and pay not in shown
    assert {e["entity"] for e in doc["features"]} == {"merchant"}

    doc = registry.json("--source", topic)
    assert [t["topology"] for t in doc["topologies"]] == [pay]

    doc = registry.json("--tag", f"pricing-{uid}")
    assert [(e["topology"], e["field"]) for e in doc["features"]] == [
        (shop, "price_mean__1h"), (shop, "price_mean__1d")]

    everything = registry.json()
    assert {pay, shop} <= {t["topology"] for t in everything["topologies"]}

    # -- what a model reads: declared and observed, counts and last seen
    doc = registry.json("--model", fraud)
    assert [e["field"] for e in doc["features"]] == list(_fields(v3))  # declared for all
    reads = {r["field"]: (r["declared"], r["reads"]) for r in doc["models"]}
    assert reads == {"payments__1h": (True, 3), "payments__1d": (True, 3),
                     "spend_completed__1h": (True, 3), "merchants__1d": (True, 0)}
    seen = {r["field"]: r["last_seen_ms"] for r in doc["models"]}
    assert seen["merchants__1d"] is None
    assert all(0 < seen[f] <= read_by for f in ("payments__1h", "spend_completed__1h"))

    doc = registry.json("--model", churn)
    assert sorted((r["topology"], r["field"], r["declared"], r["reads"]) for r in doc["models"]) \
        == sorted([(pay, "merchants__1d", False, 2), (shop, "orders__1h", False, 2)])
    assert {t["topology"] for t in doc["topologies"]} == {pay, shop}

    doc = registry.json("--model", legacy)  # read a field v3 no longer has
    assert doc["features"] == []
    assert [(r["field"], r["feature"], r["reads"]) for r in doc["models"]] == \
        [("amount_max__1d", None, 1)]
    code, out, _err = registry.run("--model", legacy)
    assert "amount_max__1d (not in the version shown)" in out

    # -- which models break if a feature changes
    doc = registry.json("--feature", f"{pay}:merchants")
    assert [e["field"] for e in doc["features"]] == ["merchants__1d"]
    assert [(r["model"], r["declared"], r["reads"]) for r in doc["models"]] == sorted(
        [(churn, False, 2), (fraud, True, 0), (limits, True, 0)])
    code, out, _err = registry.run("--feature", f"{pay}:merchants")
    assert f"models reading {pay}:merchants (they break if it changes)" in out
    assert all(m in out for m in (churn, fraud, limits))
    doc = registry.json("--feature", f"{shop}:price_mean")
    assert {(r["model"], r["field"]) for r in doc["models"]} == {
        (pricing, "price_mean__1h"), (pricing, "price_mean__1d")}

    # -- the table: the version deployed and the models per field
    code, out, _err = registry.run("--owner", owner_a)
    assert code == 0 and "version 3 of 3" in out and "Models" in out
    merchants_row = next(line for line in out.splitlines() if "merchants__1d" in line)
    assert churn in merchants_row and limits in merchants_row

    # -- unknown names exit 2 listing what there is
    err = registry.refused("--owner", f"nobody-{uid}")
    assert f"no feature with owner 'nobody-{uid}'" in err and owner_a in err
    err = registry.refused("--model", f"nobody-{uid}")
    assert f"no model 'nobody-{uid}'" in err and fraud in err and churn in err
    err = registry.refused("--feature", f"{pay}:nope")
    assert f"no feature '{pay}:nope' in the registry at {redis_url}" in err
    err = registry.refused("--history", f"nosuch-{uid}")
    assert f"no topology 'nosuch-{uid}'" in err and pay in err

    # -- the history: three versions, a restart only moved v1's last start
    doc = registry.json("--history", pay)
    assert registry.json("--history", str(paths[3])) == doc  # by its YAML file too
    versions = doc["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3] and doc["current"] == 3
    assert [v["starts"] for v in versions] == [2, 1, 1]
    assert [v["current"] for v in versions] == [False, False, True]
    assert [v["fields"] for v in versions] == [_fields(v1), _fields(v2), _fields(v3)]
    first = [v["first_deployed_ms"] for v in versions]
    last = [v["last_deployed_ms"] for v in versions]
    assert first[0] < last[0] < first[1] <= last[1] < first[2] <= last[2] <= read_by
    assert [v["changes"] for v in versions] == [
        "first version", "1 redefined, 1 added; models, metadata of 3 fields changed",
        "1 renamed, 1 removed; metadata of 1 field changed"]
    assert versions[0]["definition"] != versions[1]["definition"] != versions[2]["definition"]
    code, out, _err = registry.run("--history", pay)
    assert "3 (current)" in out and "first version" in out

    # -- what changed between two versions
    diff = registry.json("--diff", pay, "1", "2")
    rows = {r["field"]: r for r in diff["fields"]}
    assert rows["amount_sum__1h"]["status"] == "redefined"
    assert rows["amount_sum__1h"]["changed"]["where"] == [None, "status == 'completed'"]
    assert rows["merchants__1d"]["status"] == "added"
    assert rows["amount_max__1d"]["status"] == "unchanged"
    assert diff["settings"] == {"models": [[], [fraud]]}
    assert (diff["from"]["version"], diff["to"]["version"]) == (1, 2)
    diff = registry.json("--diff", pay, versions[1]["digest"][:6], "current")
    assert {r["field"]: (r["status"], r["was"]) for r in diff["fields"]} == {
        "payments__1h": ("unchanged", None), "payments__1d": ("unchanged", None),
        "spend_completed__1h": ("renamed", "amount_sum__1h"),
        "merchants__1d": ("unchanged", None), "amount_max__1d": ("removed", None)}
    diff = registry.json("--diff", pay, "v1", "v3")
    assert {r["field"]: r["status"] for r in diff["fields"]} == {
        "payments__1h": "unchanged", "payments__1d": "unchanged",
        "spend_completed__1h": "added", "merchants__1d": "added",
        "amount_sum__1h": "removed", "amount_max__1d": "removed"}
    code, out, _err = registry.run("--diff", pay, "1", "2")
    assert "where: - -> status == 'completed'" in out
    err = registry.refused("--diff", pay, "1", "9")
    assert "'9' is not a version of topology" in err and "1 (" in err

    # -- the file mode as before, with the models seen reading it from --redis
    doc = registry.json(str(paths[3]), "--redis", redis_url, "--model", churn)
    assert [(r["field"], r["reads"]) for r in doc["models"]] == [("merchants__1d", 2)]

    # -- no key of one topology meets another's or the features'
    conn = redis_lib.Redis.from_url(redis_url)
    try:
        assert conn.type(catalog_key(pay)) == conn.type(usage_key(pay)) == b"hash"
        allowed = {*_fields(v1), *_fields(v2), *_fields(v3), "_v", "_asof", "_updated"}
        for key in conn.scan_iter(match=f"sf:{pay}:*", count=1000):
            assert {k.decode() for k in conn.hkeys(key)} <= allowed, key
    finally:
        conn.close()

    # -- a training set names its topology version and snapshot range
    records = [m for ms in read_messages(kafka_bootstrap, topic).values() for m in ms]
    chosen = records[:: max(1, len(records) // 5)][:5]
    spine = pa.table({"user_id": [m.key().decode() for m in chosen],
                      "ts": [m.timestamp()[1] for m in chosen]})
    out_file = tmp_path / "train.parquet"
    training_set(paths[3], snaps, spine, out_file, processes=1, progress=False)
    lineage = read_lineage(out_file)
    assert (lineage["topology"], lineage["owner"], lineage["source"], lineage["mode"]) == \
        (pay, owner_a, topic, "event_time")
    assert lineage["definition"] == versions[2]["definition"]
    assert lineage["digest"] == versions[2]["digest"]
    assert lineage["fields"] == _fields(v3)
    snapshots = lineage["snapshots"]
    by_partition: dict[int, list[Any]] = {}
    for m in records:
        by_partition.setdefault(m.partition(), []).append(m)
    assert snapshots["partitions"] == {
        str(p): {"first_offset": 0, "last_offset": len(ms) - 1,
                 "files": len(snapshot_files(snaps, topic, p))}
        for p, ms in sorted(by_partition.items())}
    stamps = [m.timestamp()[1] for m in records]
    assert snapshots["kafka_ts"] == {"first_ms": min(stamps), "last_ms": max(stamps)}
    assert snapshots["topic"] == topic and snapshots["location"] == str(snaps)
    assert lineage["spine"] == {"rows": 5, "entity_column": "user_id", "timestamp_column": "ts",
                                "first_ms": min(spine["ts"].to_pylist()),
                                "last_ms": max(spine["ts"].to_pylist())}
    doc = registry.json("--lineage", str(out_file))  # with the catalog of STREAMFEAT_REDIS
    assert doc["lineage"] == lineage
    assert doc["served_by"] == {"versions": [3], "current": 3,
                                "fields": dict.fromkeys(_fields(v3), "unchanged")}
    assert {(r["model"], r["field"]) for r in doc["models"]} >= {
        (fraud, "payments__1h"), (churn, "merchants__1d"), (limits, "merchants__1d")}
    code, out, _err = registry.run("--lineage", str(out_file))
    assert "versions serving these definitions: 3; current version 3" in out
    assert f"p0 offsets 0-{len(by_partition[0]) - 1}" in out
