"""The source stream: raw Kafka records -> decoded events (key, event time, fields)."""

from __future__ import annotations

from streamfeat.source.decode import DecodedBatch, Decoder, RawRecord

__all__ = ["DecodedBatch", "Decoder", "RawRecord"]
