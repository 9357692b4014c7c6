"""What ``streamfeat serve`` is started with: the bounds a model-serving team sets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from streamfeat.config import DEFAULT_REDIS
from streamfeat.errors import ConfigError

__all__ = ["IO_MODES", "IoMode", "ServeConfig"]

IoMode = Literal["asyncio", "threads"]
IO_MODES: tuple[IoMode, ...] = ("asyncio", "threads")
"""How the server waits for Redis: ``redis.asyncio`` on the event loop, or the client's
synchronous read in a thread pool. The first is the default (benchmarks/serve.py)."""


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Settings of one server process; :meth:`check` says which one is out of range."""

    topologies: tuple[str, ...]
    """Topology YAML files, served under their ``name``."""
    redis: str = DEFAULT_REDIS
    host: str = "127.0.0.1"
    port: int = 8000
    timeout_s: float = 1.0
    """Budget of one request's Redis read, waiting for a pooled connection included;
    exceeded: 504."""
    redis_pool: int = 16
    """Connections to Redis at most (threads too, with ``io='threads'``)."""
    max_entities: int = 10_000
    """Entities in one request at most; more: 413."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Request body size at most; more: 413."""
    max_concurrency: int = 1024
    """Connections and requests in flight at most; more get 503 at once."""
    keep_alive_s: float = 65.0
    """How long an idle keep-alive connection is kept open (above the 60 s idle timeout of
    most load balancers, so the server is not the side that closes it under them)."""
    shutdown_timeout_s: float = 10.0
    """On SIGTERM: how long requests in flight may take to finish before they are cut."""
    io: IoMode = "asyncio"
    access_log: bool = False

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first setting out of range."""
        if not self.topologies:
            raise ConfigError("streamfeat serve needs at least one topology file")
        positive: dict[str, float] = {
            "--timeout": self.timeout_s, "--redis-pool": self.redis_pool,
            "--max-entities": self.max_entities, "--max-body-bytes": self.max_body_bytes,
            "--max-concurrency": self.max_concurrency, "--keep-alive": self.keep_alive_s,
        }
        for flag, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{flag} must be above 0, got {value:g}")
        if self.shutdown_timeout_s < 0:
            raise ConfigError(f"--shutdown-timeout must be 0 or more, got "
                              f"{self.shutdown_timeout_s:g}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0..65535, got {self.port}")
        if self.io not in IO_MODES:
            raise ConfigError(f"--io must be one of {', '.join(IO_MODES)}, got {self.io!r}")
