"""Restarts and shutdown: committed offsets are honoured, SIGTERM exits 0 and commits."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Topics, sample, wait_for

#: each test also runs with the optional confluent-kafka consumer
CLIENTS = pytest.mark.parametrize("client", ["kafka-python", "confluent"])


def _events(start: int, n: int) -> list[dict]:
    return [{"model": "m", "prediction_id": str(i), "features": {"x": float(i % 11)},
             "prediction": 0.5 * (i % 3)} for i in range(start, start + n)]



@CLIENTS
def test_sigterm_exits_zero_quickly_and_commits(topics, detector, client: str) -> None:
    topics.produce(topics.predictions, _events(0, 2500))
    d = detector({"kafka": {"client": client}})
    d.wait_events("prediction", "m", 2500)
    started = time.monotonic()
    assert d.terminate() == 0, d.logs()
    assert time.monotonic() - started < 5
    assert topics.committed() == 2500
    assert any(r.get("event") == "stopping" for r in d.log_records())
    # the consumer is the configured one (only ConfluentSource logs under its module)
    assert any(r.get("logger") == "detector.sources_confluent"
               for r in d.log_records()) == (client == "confluent")


@CLIENTS
def test_restart_in_the_same_group_skips_nothing_and_repeats_nothing(topics, detector,
                                                                     client: str) -> None:
    """The state saved at the SIGTERM is restored: the counts go on from it."""
    topics.produce(topics.predictions, _events(0, 3000))
    first = detector({"kafka": {"client": client}})
    first.wait_events("prediction", "m", 3000)
    assert first.terminate() == 0
    topics.produce(topics.predictions, _events(3000, 2000))
    second = detector({"kafka": {"client": client}})
    m = second.wait_events("prediction", "m", 2000)
    # caught up: lag 0 on the predictions partition, and exactly the new events counted
    m = wait_for(lambda: (lambda s: s if sample(s, "drift_consumer_lag_messages",
                                                 topic=topics.predictions, partition="0") == 0
                          else None)(second.metrics()), 20, "lag 0")
    assert sample(m, "drift_events_total", kind="prediction", model="m") == 5000


@CLIENTS
def test_after_kill_9_the_restart_resumes_from_the_last_commit(tansu, spawn, client: str) -> None:
    """Without state (``checkpoint.enabled: false``) offsets are committed after every
    batch: a restart after SIGKILL starts fresh from the last commit."""
    # On Tansu only: noida-db keeps a SIGKILLed member's partitions until the group's
    # rebalance timeout (300 s), where Kafka frees them after the session timeout.
    topics = Topics(tansu)

    def detector(config=None):
        config = config or {}
        return spawn(topics, {**config, "kafka": {**config.get("kafka", {}), "client": client},
                              "checkpoint": {"enabled": False}})

    total = 60_000
    topics.produce(topics.predictions, _events(0, total))
    first = detector({"kafka": {"max_poll_records": 500}})
    first.wait_events("prediction", "m", 1000)
    first.kill()                                          # SIGKILL mid-stream
    committed = topics.committed()
    assert first.proc.returncode != 0
    assert 0 < committed < total, committed  # killed mid-stream, not after the end
    second = detector()
    m = second.wait_events("prediction", "m", total - committed)
    m = wait_for(lambda: (lambda s: s if sample(s, "drift_consumer_lag_messages",
                                                 topic=topics.predictions, partition="0") == 0
                          else None)(second.metrics()), 20, "lag 0")
    assert sample(m, "drift_events_total", kind="prediction", model="m") == total - committed
    second.kill()
