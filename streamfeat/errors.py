"""The one exception family of streamfeat.

Every error says where (file:line, or topic/partition/offset) and what to do.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConnectError",
    "DecodeError",
    "SinkError",
    "StateError",
    "StreamfeatError",
    "TopologyError",
]


class StreamfeatError(Exception):
    """Base class of every error streamfeat raises on purpose."""


class ConfigError(StreamfeatError):
    """A flag, environment variable or setting is invalid; fix it and start again."""


class ConnectError(StreamfeatError):
    """Kafka or Redis cannot be reached, or refused the connection, at start: the message
    names the address and what to check (address, credentials, TLS files)."""


class TopologyError(StreamfeatError):
    """A topology file is invalid. ``problems`` lists every ``file:line: reason``.

    Fix each listed problem; ``streamfeat validate PATH`` re-checks the file.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class DecodeError(StreamfeatError):
    """A record could not be decoded or lacks a required field.

    The worker sends such records to the dead-letter topic ``<topic>.dlq``;
    fix the producer, then replay the dead letters if their features matter.
    """


class StateError(StreamfeatError):
    """Window state could not be read or written; check ``--state-dir``."""


class SinkError(StreamfeatError):
    """The online store (Redis) refused or could not be reached."""


class SourceError(StreamfeatError):
    """Reading the source (Kafka) outside the consumer group failed; retried."""
