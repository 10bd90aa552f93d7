"""Time from `drift-detector run` to the first event processed, for a fresh consumer group,
at several session timeouts (Tansu holds the first JoinGroup for half of it; real Kafka
waits group.initial.rebalance.delay.ms, 3 s by default).

    python bench/startup.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from detector.broker import Tansu, free_port  # noqa: E402
from detector.config import KafkaSettings  # noqa: E402
from detector.sources import create_topics, producer  # noqa: E402


def first_event_seconds(bootstrap: str, session_ms: int, heartbeat_ms: int) -> float:
    tag = uuid.uuid4().hex[:6]
    k = KafkaSettings(bootstrap_servers=bootstrap, predictions_topic=f"p-{tag}",
                      labels_topic=f"l-{tag}", group_id=f"g-{tag}")
    create_topics(k, k.topics)
    prod = producer(k)
    prod.send(k.predictions_topic, json.dumps({"model": "m", "prediction_id": "1",
                                               "features": {"x": 1.0}, "prediction": 1}).encode())
    prod.flush()
    prod.close()
    port = free_port()
    env = {**os.environ, "DRIFT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
           "DRIFT_KAFKA__GROUP_ID": k.group_id, "DRIFT_KAFKA__PREDICTIONS_TOPIC": k.predictions_topic,
           "DRIFT_KAFKA__LABELS_TOPIC": k.labels_topic, "DRIFT_METRICS__PORT": str(port),
           "DRIFT_KAFKA__SESSION_TIMEOUT_MS": str(session_ms),
           "DRIFT_KAFKA__HEARTBEAT_INTERVAL_MS": str(heartbeat_ms), "DRIFT_LOG__LEVEL": "WARNING"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "detector", "run"], env=env)
    try:
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
                if b'drift_events_total{kind="prediction",model="m"} 1.0' in body:
                    return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    with Tansu() as broker:
        for session_ms, heartbeat_ms in ((2000, 500), (6000, 2000), (10000, 3000)):
            t = first_event_seconds(broker.bootstrap, session_ms, heartbeat_ms)
            print(f"session_timeout_ms={session_ms:>5}: first event processed {t:.2f} s after "
                  "process start (includes Python start-up)", flush=True)


if __name__ == "__main__":
    main()
