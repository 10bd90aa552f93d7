"""The broker goes away for more than 20 s and comes back (a broker that keeps its data
on disk): the service keeps serving /metrics and /healthz, /readyz turns false and
back, it reconnects by itself, and every event is counted exactly once."""

from __future__ import annotations

import time

import pytest

from detector.broker import Noida
from tests.conftest import Topics, http_status, sample, wait_for

OUTAGE_S = 22.0


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_broker_outage_loses_nothing_and_counts_nothing_twice(tmp_path, spawn,
                                                              client: str) -> None:
    with Noida(tmp_path / "noida-data") as broker:
        topics = Topics(broker)
        events = [{"model": "m", "prediction_id": str(i), "features": {"x": float(i % 9)},
                   "prediction": i % 2} for i in range(5000)]
        topics.produce(topics.predictions, events[:3000])
        d = spawn(topics, {"kafka": {"client": client}})
        d.wait_events("prediction", "m", 3000)

        broker.stop()
        down_at = time.monotonic()
        wait_for(lambda: http_status(d.port, "/readyz") == 503, 20, "/readyz to turn 503")
        while time.monotonic() - down_at < OUTAGE_S:     # the outage: keep checking
            assert http_status(d.port, "/healthz") == 200
            assert sample(d.metrics(), "drift_events_total", kind="prediction", model="m") == 3000
            time.sleep(0.5)
        broker.start()
        outage = time.monotonic() - down_at

        topics.produce(topics.predictions, events[3000:])
        m = d.wait_events("prediction", "m", 5000, timeout=90)
        wait_for(lambda: http_status(d.port, "/readyz") == 200, 60, "/readyz back to 200")
        m = wait_for(lambda: (lambda s: s if sample(s, "drift_consumer_lag_messages",
                                                     topic=topics.predictions, partition="0") == 0
                              else None)(d.metrics()), 60, "lag 0")
        assert sample(m, "drift_events_total", kind="prediction", model="m") == 5000
        assert d.proc.poll() is None
        print(f"\\nbroker down {outage:.1f} s; service reconnected by itself, 0 lost, 0 twice")
        d.terminate()
