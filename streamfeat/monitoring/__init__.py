"""Monitoring of the features themselves (issue #17): the distribution of the values the
workers write, drift from a baseline, and the consistency of online values with a replay.

Owns:
- :mod:`.sketch`: :class:`ValueSketch`, a fixed-size mergeable summary of one field's values
  (count, nulls, mean and variance, quantiles in logarithmic buckets), vectorised;
- :mod:`.drift`: PSI over the baseline's deciles and a quantile distance;
- :mod:`.monitor`: the worker's :class:`ValueMonitor` (per interval, per topology and field,
  exported to the worker's Prometheus registry and stored in Redis);
- :mod:`.baseline`: reference distributions from a training set or from a replay of the
  snapshots; :mod:`.store`: baselines and interval summaries in Redis
  (``sfmeta:{topology}:baseline``, ``sfmeta:{topology}:monitor``);
- :mod:`.verification`: the periodic ``monitor verify`` job and its metrics.

Must not import: :mod:`streamfeat.runtime`, :mod:`streamfeat.replay`, :mod:`streamfeat.serving`
or the CLI (the worker imports this package; ``streamfeat.cli_monitor`` joins it with the
replay), nor Kafka clients. It may use the pipeline, snapshots, sinks and topology.
"""

from __future__ import annotations

from streamfeat.monitoring.baseline import (
    baseline_from_snapshots,
    baseline_from_training_set,
    parse_instant,
)
from streamfeat.monitoring.drift import PSI_ALERT, Reference, psi, quantile_distance
from streamfeat.monitoring.monitor import (
    DEFAULT_INTERVAL_S,
    IntervalReport,
    NullMonitor,
    ValueMonitor,
    open_monitor,
)
from streamfeat.monitoring.sketch import ValueKind, ValueSketch, field_kinds
from streamfeat.monitoring.store import (
    Baseline,
    IntervalSummary,
    baseline_key,
    monitor_key,
    read_baseline,
    read_summaries,
    write_baseline,
)
from streamfeat.monitoring.verification import VerifyJob

__all__ = [
    "DEFAULT_INTERVAL_S",
    "PSI_ALERT",
    "Baseline",
    "IntervalReport",
    "IntervalSummary",
    "NullMonitor",
    "Reference",
    "ValueKind",
    "ValueMonitor",
    "ValueSketch",
    "VerifyJob",
    "baseline_from_snapshots",
    "baseline_from_training_set",
    "baseline_key",
    "field_kinds",
    "monitor_key",
    "open_monitor",
    "parse_instant",
    "psi",
    "quantile_distance",
    "read_baseline",
    "read_summaries",
    "write_baseline",
]
