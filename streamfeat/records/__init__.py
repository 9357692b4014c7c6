"""Raw records and decoding: Kafka records as columns -> events (key, event time, fields).

Owns :class:`RecordBatch` (records of one partition as columns: no object per record on
the hot path) and :class:`Decoder` (the malformed-record rules, the same in the worker and
in replay).

Must not import: operators, pipeline, sinks, state, snapshot, runtime, replay, Kafka or
Redis clients. May import :mod:`streamfeat.topology` and :mod:`streamfeat.errors`.
"""

from __future__ import annotations

from streamfeat.records.decode import DecodedBatch, Decoder
from streamfeat.records.records import (
    ORIGIN_OFFSET_HEADER,
    ORIGIN_PARTITION_HEADER,
    Origins,
    RawRecord,
    RecordBatch,
    as_batch,
)

__all__ = [
    "ORIGIN_OFFSET_HEADER",
    "ORIGIN_PARTITION_HEADER",
    "DecodedBatch",
    "Decoder",
    "Origins",
    "RawRecord",
    "RecordBatch",
    "as_batch",
]
