"""State on a compacted Kafka topic (the default), named here; signed with a key."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import sample


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_service_restores_from_the_topic_and_counts_exactly(topics, spawn, client: str) -> None:
    topic = f"checkpoints-{uuid.uuid4().hex[:6]}"
    config = {"checkpoint": {"topic": topic, "key": "k" * 24},
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
