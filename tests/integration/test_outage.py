"""The broker goes away for more than 30 s while a producer keeps sending, and comes back
(a broker that keeps its data on disk): the service keeps serving /metrics and
/healthz, /readyz turns false and back, it reconnects by itself, its state (kept on
the broker by default) is saved again, and every event is counted exactly once."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kafka import KafkaProducer

from detector.broker import Noida
from tests.conftest import Topics, http_status, sample, wait_for

OUTAGE_S = 32.0


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

        # the events keep coming: a producer sends through the outage (its client
        # buffers and retries them until the broker is back)
        prod = KafkaProducer(bootstrap_servers=topics.bootstrap, linger_ms=5,
                             delivery_timeout_ms=180_000, request_timeout_ms=10_000)
        sent = threading.Event()

        def keep_sending() -> None:
            for e in events[3000:]:
                prod.send(topics.predictions, json.dumps(e).encode())
                time.sleep(OUTAGE_S / 2000)
            prod.flush(timeout=180)
            sent.set()

        broker.stop()
        down_at, down_at_wall = time.monotonic(), time.time()
        wait_for(lambda: http_status(d.port, "/readyz") == 503, 20, "/readyz to turn 503")
        sender = threading.Thread(target=keep_sending, daemon=True)
        sender.start()                  # (once the broker is gone: noida's port lingers)
        while time.monotonic() - down_at < OUTAGE_S:     # the outage: keep checking
            assert http_status(d.port, "/healthz") == 200
            assert sample(d.metrics(), "drift_events_total", kind="prediction", model="m") == 3000
            time.sleep(0.5)
        broker.start()
        outage = time.monotonic() - down_at

        wait_for(sent.is_set, 120, "the producer to deliver what it kept")
        prod.close()
        m = d.wait_events("prediction", "m", 5000, timeout=90)
        wait_for(lambda: http_status(d.port, "/readyz") == 200, 60, "/readyz back to 200")
        m = wait_for(lambda: (lambda s: s if sample(s, "drift_consumer_lag_messages",
                                                     topic=topics.predictions, partition="0") == 0
                              else None)(d.metrics()), 60, "lag 0")
        assert sample(m, "drift_events_total", kind="prediction", model="m") == 5000
        assert d.proc.poll() is None
        wait_for(lambda: any(r.get("event") == "checkpoint_saved"
                             and r["time"] > down_at_wall + outage for r in d.log_records()),
                 30, "the state to be saved again after the outage")
        print(f"\\nbroker down {outage:.1f} s; service reconnected by itself, 0 lost, 0 twice")
        d.terminate()
