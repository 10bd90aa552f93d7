"""Soak: drift-detector under a steady stream for a long time; its RSS must stay flat.

    python bench/soak.py [--minutes 30] [--rate 500]

Starts the bundled broker and `drift-detector run` as a separate process, produces
predictions at a steady rate (unique ids, 10 features, a categorical one, 80 % of
labels 1-5 s later, 20 % never) with a join capacity far below the number of
predictions, and prints the service's RSS (from its own process metrics) every
30 s, then start/end figures and the growth over the second half.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import deque

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from detector.broker import Tansu, free_port  # noqa: E402
from detector.config import KafkaSettings  # noqa: E402
from detector.sources import create_topics, producer  # noqa: E402


def scrape(port: int) -> dict[str, float]:
    out = {}
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(("process_resident_memory_bytes", "drift_events_total",
                            "drift_pending_predictions", 'drift_label_join_total')):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=500.0, help="predictions per second")
    args = ap.parse_args()
    with Tansu() as broker:
        k = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(k, k.topics)
        port = free_port()
        env = {**os.environ, "DRIFT_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
               "DRIFT_KAFKA__SESSION_TIMEOUT_MS": "2000", "DRIFT_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
               "DRIFT_METRICS__PORT": str(port), "DRIFT_LOG__LEVEL": "WARNING",
               "DRIFT_JOIN__CAPACITY": "20000"}
        service = subprocess.Popen([sys.executable, "-m", "detector", "run"], env=env)
        deadline = time.monotonic() + 60
        while True:                                   # until the service consumes
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("drift-detector did not become ready within 60 s")
            time.sleep(0.2)
        prod = producer(k, linger_ms=5)
        rng = np.random.default_rng(0)
        pending: deque[tuple[float, bytes]] = deque()
        started = time.monotonic()
        end = started + args.minutes * 60
        sent, next_report, samples = 0, started, []
        try:
            while time.monotonic() < end:
                due = int((time.monotonic() - started) * args.rate)
                while sent < due:
                    x = rng.normal(0, 1, 10)
                    event = {"model": "soak", "model_version": "1", "prediction_id": f"s{sent}",
                             "features": {**{f"f{j}": float(x[j]) for j in range(10)},
                                          "kind": str(rng.choice(["a", "b", "c"]))},
                             "prediction": int(x[0] > 0), "score": float(1 / (1 + np.exp(-x[0])))}
                    prod.send("predictions", json.dumps(event).encode())
                    if rng.random() < 0.8:
                        pending.append((time.monotonic() + rng.uniform(1, 5), json.dumps(
                            {"model": "soak", "prediction_id": f"s{sent}",
                             "label": int(rng.random() < 0.5)}).encode()))
                    sent += 1
                now = time.monotonic()
                while pending and pending[0][0] <= now:
                    prod.send("labels", pending.popleft()[1])
                if now >= next_report:
                    m = scrape(port)
                    rss = m.get("process_resident_memory_bytes", 0) / 2**20
                    samples.append((now - started, rss))
                    done = m.get('drift_events_total{kind="prediction",model="soak"}', 0)
                    waiting = m.get('drift_pending_predictions{model="soak"}', 0)
                    print(f"[{(now - started) / 60:5.1f} min] sent {sent:,}  processed {done:,.0f}"
                          f"  pending {waiting:,.0f}  RSS {rss:.1f} MiB", flush=True)
                    next_report = now + 30
                time.sleep(0.005)
        finally:
            prod.close()
            service.terminate()
            service.wait(20)
        half = [r for t, r in samples if t >= samples[-1][0] / 2]
        print(f"\nRSS start {samples[0][1]:.1f} MiB, after the first report "
              f"{samples[1][1] if len(samples) > 1 else samples[0][1]:.1f} MiB, end "
              f"{samples[-1][1]:.1f} MiB; over the second half {half[0]:.1f} -> {half[-1]:.1f} MiB "
              f"({(half[-1] - half[0]) / max(half[0], 1e-9):+.1%})")


if __name__ == "__main__":
    main()
