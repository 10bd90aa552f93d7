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


def test_unusable_state_with_on_invalid_refuse_exits_1_naming_the_reason(
        tansu, tmp_path) -> None:
    from detector.stores import FileStore
    from tests.conftest import DetectorProcess, Topics, kill, wait_for

    topics = Topics(tansu)
    topics.produce(topics.predictions, [{"model": "m", "prediction_id": "1",
                                         "features": {"x": 1.0}, "prediction": 1}])
    FileStore(tmp_path / "state").write({"0": b"not a checkpoint at all"})
    d = DetectorProcess(topics, tmp_path, {"checkpoint": {"path": str(tmp_path / "state"),
                                                          "on_invalid": "refuse"}})
    proc = d.launch()
    try:
        wait_for(lambda: proc.poll() is not None, 60, "the service to refuse and exit")
    finally:
        kill(proc)
    assert proc.returncode == 1, d.logs()
    refused = [r for r in d.log_records() if r.get("event") == "checkpoint_invalid"]
    assert refused and refused[0]["reason"] == "not_a_checkpoint", d.logs()
