"""Sinks: the Redis writer (idempotent, monotonic, fenced) and the stored value encoding."""

from __future__ import annotations

from streamfeat.sinks.redis import (
    DEFAULT_CHUNK_SIZE,
    RESERVED_FIELDS,
    RedisSink,
    Update,
    UpdateBatch,
    WriteResult,
)
from streamfeat.sinks.values import decode_value, encode_value, parse_version, version

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "RESERVED_FIELDS",
    "RedisSink",
    "Update",
    "UpdateBatch",
    "WriteResult",
    "decode_value",
    "encode_value",
    "parse_version",
    "version",
]
