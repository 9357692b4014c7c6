"""The worker's ValueMonitor without Redis: intervals, drift against a baseline, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamfeat.monitoring import Baseline, ValueMonitor, ValueSketch
from streamfeat.sinks import UpdateBatch, version
from streamfeat.topology import load_topology_text

TOPOLOGY = load_topology_text("""
version: 1
name: mon
source: {topic: t, key: user_id, timestamp: ts}
entity: user
features:
  - {name: orders, agg: count, windows: [1h]}
  - {name: amount_mean, agg: mean, field: amount, windows: [1h]}
  - {name: recent, agg: last_k, k: 2, field: amount, windows: [1h]}
""")
FIELDS = ["orders__1h", "amount_mean__1h", "recent__1h"]


def batch(amounts: list[float | None], asof: int, *, refresh: bool = False) -> UpdateBatch:
    n = len(amounts)
    return UpdateBatch([f"u{i}" for i in range(n)], FIELDS,
                       [list(range(1, n + 1)), amounts,
                        [None if a is None or math.isnan(a) else [a] for a in amounts]],
                       asof, version(0, 0, asof), refresh=refresh)


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_an_interval_counts_what_was_written_and_a_refresh_is_not_counted_twice() -> None:
    registry = CollectorRegistry()
    monitor = ValueMonitor([TOPOLOGY], registry, interval_s=60)
    assert scrape(registry) == {("streamfeat_value_monitor_seconds_total",
                                 (("topology", "mon"),)): 0.0}  # nothing closed yet
    monitor.observe("mon", [batch([10.0, None, 30.0, math.nan], 1000)])
    monitor.observe("mon", [batch([20.0], 3000), batch([99.0] * 50, 4000, refresh=True)])
    report = monitor.close_interval(now_s=100.0)["mon"]
    assert (report.seq, report.asof_min_ms, report.asof_max_ms) == (1, 1000, 3000)
    mean = report.fields["amount_mean__1h"].sketch
    assert (mean.count, mean.nulls, mean.n, mean.mean) == (5, 2, 3, 20.0)
    recent = report.fields["recent__1h"].sketch
    assert (recent.count, recent.nulls, recent.n) == (5, 2, 0)  # counted, not sketched
    assert report.fields["orders__1h"].psi is None  # no baseline

    m = scrape(registry)
    label = (("field", "amount_mean__1h"), ("topology", "mon"))
    assert m[("streamfeat_value_count", label)] == 5
    assert m[("streamfeat_value_null_ratio", label)] == pytest.approx(0.4)
    assert m[("streamfeat_value_mean", label)] == 20.0
    assert m[("streamfeat_value_stddev", label)] == pytest.approx(math.sqrt(200 / 3))
    assert m[("streamfeat_value_quantile", (*label[:1], ("quantile", "0.5"), label[1]))] == \
        pytest.approx(20.0, rel=0.01)
    assert ("streamfeat_value_psi", label) not in m
    assert m[("streamfeat_value_intervals_total", (("topology", "mon"),))] == 1
    assert m[("streamfeat_value_interval_asof_seconds",
              (("bound", "max"), ("topology", "mon")))] == 3.0
    assert ("streamfeat_value_mean", (("field", "recent__1h"), ("topology", "mon"))) not in m

    # the next interval starts empty: counts 0, no moments
    monitor.close_interval(now_s=160.0)
    m = scrape(registry)
    assert m[("streamfeat_value_count", label)] == 0
    assert ("streamfeat_value_mean", label) not in m
    assert m[("streamfeat_value_intervals_total", (("topology", "mon"),))] == 2


def test_drift_against_a_baseline_appears_in_the_interval_after_the_shift() -> None:
    rng = np.random.default_rng(4)
    base = ValueSketch()
    base.add(rng.lognormal(3, 0.5, 20_000).tolist())
    counts = ValueSketch()
    counts.add(list(range(1, 1001)))
    registry = CollectorRegistry()
    monitor = ValueMonitor([TOPOLOGY], registry, interval_s=60)
    monitor.set_baseline(Baseline("mon", 1_700_000_000_000, "test", {
        "amount_mean__1h": base.state(), "orders__1h": counts.state()}))
    monitor.observe("mon", [batch(rng.lognormal(3, 0.5, 2000).tolist(), 1)])
    before = monitor.close_interval()["mon"].fields["amount_mean__1h"]
    monitor.observe("mon", [batch((rng.lognormal(3, 0.5, 2000) * 2).tolist(), 2)])
    after = monitor.close_interval()["mon"].fields["amount_mean__1h"]
    assert before.psi is not None and before.psi < 0.05
    assert after.psi is not None and after.psi > 1.0
    assert before.quantile_distance is not None and before.quantile_distance < 0.1
    assert after.quantile_distance is not None and after.quantile_distance > 1.0
    m = scrape(registry)
    label = (("field", "amount_mean__1h"), ("topology", "mon"))
    assert m[("streamfeat_value_psi", label)] == pytest.approx(after.psi)
    assert m[("streamfeat_value_baseline_null_ratio", label)] == 0.0
    assert m[("streamfeat_value_baseline_timestamp_seconds", (("topology", "mon"),))] == \
        1_700_000_000.0
    # a field without a baseline has no drift
    assert ("streamfeat_value_psi", (("field", "recent__1h"), ("topology", "mon"))) not in m


def test_observe_adds_each_column_once_whatever_the_batching() -> None:
    rng = np.random.default_rng(8)
    values = rng.normal(50, 10, 5000).tolist()
    one, many = ValueMonitor([TOPOLOGY], None), ValueMonitor([TOPOLOGY], None)
    one.observe("mon", [batch(values, 5)])
    for i in range(0, 5000, 700):
        many.observe("mon", [batch(values[i:i + 700], 5)])
    a = one.close_interval()["mon"].fields["amount_mean__1h"].sketch
    b = many.close_interval()["mon"].fields["amount_mean__1h"].sketch
    assert np.array_equal(a.buckets, b.buckets)
    assert a.mean == pytest.approx(b.mean) and a.m2 == pytest.approx(b.m2)


def test_a_batch_the_monitor_cannot_read_never_stops_the_worker(
        caplog: pytest.LogCaptureFixture) -> None:
    monitor = ValueMonitor([TOPOLOGY], None)
    broken = UpdateBatch(["u1"], FIELDS, [[1], [2.0]], 5, version(0, 0, 5))  # a column short
    with caplog.at_level("ERROR", logger="streamfeat.monitoring"):
        monitor.observe("mon", [broken])
        monitor.observe("mon", [broken])
    assert len([r for r in caplog.records if "failed on a batch" in r.message]) == 1
    monitor.observe("mon", [batch([5.0], 6)])
    assert monitor.close_interval()["mon"].fields["amount_mean__1h"].sketch.n >= 1
