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


def test_a_store_that_cannot_be_written_is_reported_never_a_crash(tansu, tmp_path) -> None:
    """The state directory cannot be created (a file is in the way, as a read-only or
    full volume would refuse it): the service keeps consuming, counts the failures,
    reports not ready with the reason, and commits nothing; once the volume is back it
    saves, commits everything and is ready again."""
    from tests.conftest import DetectorProcess, Topics, http_status, kill, scrape, wait_for

    topics = Topics(tansu)
    blocker = tmp_path / "volume"
    blocker.write_text("a file where the state directory should be")
    d = DetectorProcess(topics, tmp_path, {"checkpoint": {"path": str(blocker / "state"),
                                                          "interval_seconds": 0.5}})
    proc = d.launch()
    try:
        wait_for(lambda: http_status(d.port, "/healthz") == 200, 30, "/healthz")
        topics.produce(topics.predictions, [{"model": "m", "prediction_id": str(i),
                                             "features": {"x": float(i % 5)},
                                             "prediction": i % 2} for i in range(500)])
        wait_for(lambda: (sample(scrape(d.port), "drift_checkpoint_failures_total",
                                 operation="write", reason="io") or 0) >= 2, 60,
                 "failed saves to be counted")
        assert http_status(d.port, "/readyz") == 503
        assert sample(scrape(d.port), "drift_events_total", kind="prediction", model="m") == 500
        assert topics.committed() == 0                   # nothing durable, nothing committed
        failed = [r for r in d.log_records() if r.get("event") == "checkpoint_failed"]
        assert len(failed) == 1 and failed[0]["reason"] == "io", failed   # logged once

        blocker.unlink()                                  # the volume is back
        wait_for(lambda: http_status(d.port, "/readyz") == 200, 30, "ready again")
        wait_for(lambda: topics.committed() == 500, 30, "the offsets committed")
        assert proc.poll() is None
        assert any(r.get("event") == "checkpoint_recovered" for r in d.log_records())
    finally:
        kill(proc)
