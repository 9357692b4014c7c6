"""Before a worker starts: Kafka and Redis answer, with the settings given (contract section
12). A worker that cannot reach either stops here, within :data:`CHECK_S` seconds for each,
with one :class:`~streamfeat.errors.ConnectError` naming the address and what to check;
refused credentials and failed TLS handshakes stop it at once. Once running, an outage is
waited out as before (contract section 8: retries, back-pressure, ``/health``).
"""

from __future__ import annotations

from streamfeat.runtime.config import WorkerConfig
from streamfeat.runtime.consumers import ConsumerSettings, check_connection
from streamfeat.sinks.redis import check as check_redis

__all__ = ["CHECK_S", "check_connections"]

CHECK_S = 10.0
"""How long each of Kafka and Redis is given to answer at start."""


def check_connections(config: WorkerConfig, *, timeout_s: float = CHECK_S) -> None:
    """Kafka (every client of ``config.runtime``, with ``config.kafka_config``), then Redis."""
    settings = ConsumerSettings(bootstrap=config.kafka, group_id=config.group,
                                client_config=config.kafka_config)
    check_connection(config.runtime, settings, timeout_s=timeout_s,
                     config_file=config.kafka_config_file)
    check_redis(config.redis, timeout_s=timeout_s)
