"""Sinks: where feature values go. The Redis writer (idempotent, monotonic, fenced) and the
stored value encoding (contract section 4).

Owns: :class:`RedisSink` (one compare-and-set script per chunk of entities), the text
encoding of values and versions (:mod:`.values`), and the plain data a sink is given
(:mod:`.updates`: no Redis there, so the pipeline can produce it without a client).

Must not import: the operators, the pipeline, the runtime, the offline commands, Kafka.
"""

from __future__ import annotations

from streamfeat.sinks.redis import DEFAULT_CHUNK_SIZE, RedisSink
from streamfeat.sinks.updates import Update, UpdateBatch, WriteResult
from streamfeat.sinks.values import decode_value, encode_value, parse_version, version

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "RedisSink",
    "Update",
    "UpdateBatch",
    "WriteResult",
    "decode_value",
    "encode_value",
    "parse_version",
    "version",
]
