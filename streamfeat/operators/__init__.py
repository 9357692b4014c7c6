"""Windows and aggregations of one topology on one Kafka partition: pure, mergeable, fast.

This package owns the computation of feature values from events (contract sections
2 and 3): the late decision (:func:`late_mask`), the window state of every entity of
a partition and its exact serialized form (:class:`PartitionOperator`, whose bytes are
versioned by :data:`STATE_FORMAT_VERSION`), and the mergeable aggregation states and
sketches behind them.

It is pure computation: it may import :mod:`streamfeat.topology`,
:mod:`streamfeat.errors`, numpy and msgspec, and must NOT import
``streamfeat.records``, ``pipeline``, ``state``, ``sinks``, ``snapshot``, ``replay``,
``runtime`` or ``cli``, nor Kafka, Redis or Faust clients: the worker and the offline
replay drive it the same way, which is what makes a replay equal the stream.

Modules: :mod:`~.partition` (the operator and its plan), :mod:`~.slots` (the
``Slot`` protocol every window kind implements, and the batch it is fed),
:mod:`~.windows` (bucket arithmetic, bucketed, session and exact windows),
:mod:`~.rings` (the numpy moments ring), :mod:`~.aggregations` (one state class per
family of aggregations), :mod:`~.sketches` (HyperLogLog, DDSketch),
:mod:`~.eventtime` (lateness). Only what other packages use is exported here.
"""

from streamfeat.operators.eventtime import late_mask
from streamfeat.operators.partition import (
    EMPTY_STATE,
    LATEST_QUERY_MS,
    STATE_FORMAT_VERSION,
    PartitionOperator,
    ProcessResult,
    warm_kernels,
)

__all__ = [
    "EMPTY_STATE",
    "LATEST_QUERY_MS",
    "STATE_FORMAT_VERSION",
    "PartitionOperator",
    "ProcessResult",
    "late_mask",
    "warm_kernels",
]
