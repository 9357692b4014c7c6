"""Reading a dead-letter topic's offsets right after it was created (real Kafka)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamfeat.runtime.deadletters import _watermarks


def test_offsets_of_a_topic_not_there_yet_are_read_once_it_is(
        kafka_bootstrap: str, new_topic: Callable[..., str], unique_id: str) -> None:
    """A topic without a leader yet (here: created 1.5 s after the first attempt) answers
    UNKNOWN_PARTITION or NOT_LEADER; the reader tries again instead of stopping the worker in
    the middle of an assignment (seen: a freshly created DLQ on a starved broker)."""
    reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{unique_id}-r"})
    try:
        with pytest.raises(KafkaException):  # what a single attempt gets
            reader.get_watermark_offsets(TopicPartition(f"{unique_id}-late", 0), timeout=5)
        made: list[str] = []
        maker = threading.Timer(1.5, lambda: made.append(new_topic("late")))
        maker.start()
        started = time.monotonic()
        assert _watermarks(reader, TopicPartition(f"{unique_id}-late", 0), within_s=30) == (0, 0)
        assert made and time.monotonic() - started >= 1.4
        maker.join()
        with pytest.raises(KafkaException):  # and it gives up in time
            _watermarks(reader, TopicPartition(f"{unique_id}-never", 0), within_s=1)
    finally:
        reader.close()
