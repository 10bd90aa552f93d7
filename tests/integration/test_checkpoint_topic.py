"""Checkpoints on a compacted Kafka topic instead of a volume."""

from __future__ import annotations

import os
import uuid

import pytest

from detector.sources import KafkaCheckpointStore
from tests.conftest import read_topic, sample


def test_store_round_trips_multi_part_blobs_and_deletes_old_generations(topics) -> None:
    topic = f"checkpoints-{uuid.uuid4().hex[:6]}"
    store = KafkaCheckpointStore(topics.kafka, topic, "group-a:host-1")
    assert store.read() is None                           # nothing saved yet
    blobs = [os.urandom(1_300_000), os.urandom(700_000), os.urandom(10)]
    for blob in blobs:
        assert store.write(blob) == len(blob)
    store.close()
    fresh = KafkaCheckpointStore(topics.kafka, topic, "group-a:host-1")
    assert fresh.read() == blobs[-1]                       # a new process reads the newest
    other = KafkaCheckpointStore(topics.kafka, topic, "group-a:host-2")
    assert other.read() is None                            # names do not mix

    messages = read_topic(topics.bootstrap, topic)
    tombstoned = {m.key for m in messages if m.value is None}
    assert len(tombstoned) == 3 + 2                      # parts of the first two generations


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_service_restores_from_the_topic_and_counts_exactly(topics, spawn, client: str) -> None:
    topic = f"checkpoints-{uuid.uuid4().hex[:6]}"
    config = {"checkpoint": {"topic": topic, "name": "replica-0", "key": "k" * 24},
              "kafka": {"client": client}}
    events = [{"model": "m", "prediction_id": str(i), "features": {"x": float(i % 5)},
               "prediction": i % 2} for i in range(4000)]
    topics.produce(topics.predictions, events[:3000])
    first = spawn(topics, config)
    first.wait_events("prediction", "m", 3000)
    assert first.terminate() == 0                          # saves a final checkpoint
    topics.produce(topics.predictions, events[3000:])
    second = spawn(topics, config)
    m = second.wait_events("prediction", "m", 4000)
    assert sample(m, "drift_events_total", kind="prediction", model="m") == 4000
    restored = [r for r in second.log_records() if r.get("event") == "checkpoint_restored"]
    assert restored and restored[0]["events"] == 3000 and topic in restored[0]["store"]
