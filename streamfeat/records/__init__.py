"""The source stream: raw Kafka records -> decoded events (key, event time, fields)."""

from __future__ import annotations

from streamfeat.records.decode import DecodedBatch, Decoder
from streamfeat.records.records import RawRecord, RecordBatch, as_batch

__all__ = ["DecodedBatch", "Decoder", "RawRecord", "RecordBatch", "as_batch"]
