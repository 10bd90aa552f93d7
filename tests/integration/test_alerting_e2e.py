"""End to end with the real programs on loopback: broker → drift-detector → Prometheus
(the shipped rules) → Alertmanager → a webhook in this test.

One feature drifts, then accuracy falls below its threshold. The webhook must get
a drift alert naming that model and feature, then a threshold alert for accuracy,
and no alert naming an unchanged feature. Every Grafana panel's query must parse
and return data on the live Prometheus, and the drift-events topic must carry the
detection for a retraining pipeline.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from detector.alerting import LocalAlerting, without_waits
from detector.sources import create_topics
from tests.conftest import read_topic, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
FEATURES = ["amount", "age", "tenure", "balance", "visits"]
DRIFTED = "amount"


class Webhook:
    """Collects Alertmanager notifications with their arrival time."""

    def __init__(self) -> None:
        received: list[tuple[float, dict]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def firing(self) -> list[tuple[float, dict]]:
        return [(t, a) for t, n in self.received for a in n["alerts"] if a["status"] == "firing"]

    def first(self, alertname: str, **labels: str) -> tuple[float, dict] | None:
        for t, a in self.firing():
            if a["labels"].get("alertname") == alertname and all(
                    a["labels"].get(k) == v for k, v in labels.items()):
                return t, a
        return None


def _events(rng: np.random.Generator, start: int, n: int, shift: float, correct: float,
            version: str = "5", shift_from: int = 0) -> tuple[list[dict], list[dict]]:
    preds, labels = [], []
    for i in range(start, start + n):
        x = {f: float(rng.normal(0, 1)) for f in FEATURES}
        x[DRIFTED] += shift if i - start >= shift_from else 0.0
        x["visits"] = None if rng.random() < 0.02 else x["visits"]
        x["channel"] = str(rng.choice(["web", "app", "pos"], p=[0.5, 0.3, 0.2]))  # stable
        prediction = int(x["age"] + x["tenure"] > 0)          # amount plays no part
        label = prediction if rng.random() < correct else 1 - prediction
        preds.append({"model": "fraud", "model_version": version, "prediction_id": f"p{i}",
                      "features": x, "prediction": prediction, "timestamp": time.time()})
        labels.append({"model": "fraud", "prediction_id": f"p{i}", "label": label})
    return preds, labels


@pytest.fixture
def stack_settings() -> dict:
    """The detector's settings in ``stack`` (a test module overrides this fixture)."""
    return {"rolling_window": 300,
            "models": {"fraud": {"task": "classification", "thresholds": {"accuracy": 0.85}}}}


@pytest.fixture
def stack(topics, detector, prometheus_tools, stack_settings: dict, tmp_path: Path):
    webhook = Webhook()
    drift_topic = f"drift-events-{uuid.uuid4().hex[:6]}"
    create_topics(topics.kafka, [drift_topic])
    # The default detectors (calibrated, on standardised values): no stable feature may alert.
    det = detector({**stack_settings,
                    "drift_events": {"enabled": True, "topic": drift_topic}})

    # The shipped rules, with every `for:` set to 0s: `for` is a production debounce of
    # minutes; this test checks the expressions, labels and routing, not the waiting.
    rules = without_waits((DEPLOY / "prometheus" / "rules.yml").read_text())
    try:
        with LocalAlerting(tmp_path / "prometheus", [f"127.0.0.1:{det.port}"], rules,
                           receiver_url=f"http://127.0.0.1:{webhook.port}/") as local:
            yield {"webhook": webhook, "detector": det, "prometheus": local,
                   "drift_topic": drift_topic}
    finally:
        webhook.server.shutdown()


def test_drift_then_accuracy_drop_reach_the_webhook(topics, stack) -> None:
    webhook, prometheus = stack["webhook"], stack["prometheus"]
    rng = np.random.default_rng(4242)

    # stable phase: accurate model, no drift; Prometheus must have seen the counters at 0
    preds, labels = _events(rng, 0, 3000, shift=0.0, correct=0.97)
    topics.produce(topics.predictions, preds)
    topics.produce(topics.labels, labels)
    stack["detector"].wait_events("label", "fraud", 3000)
    wait_for(lambda: prometheus.query('drift_detections_total{feature="amount"} == 0'),
             30, "Prometheus to scrape the zero counters")

    # one feature drifts (+2 sigma); the model ignores it, so accuracy holds
    drift_started = time.time()
    preds, labels = _events(rng, 3000, 3000, shift=2.0, correct=0.97)
    topics.produce(topics.predictions, preds)
    topics.produce(topics.labels, labels)
    t_drift, drift_alert = wait_for(
        lambda: webhook.first("FeatureDriftDetected", model="fraud", feature=DRIFTED), 60,
        "the feature drift alert at the webhook", every=0.1)

    # then the concept changes: labels disagree with the model, accuracy falls below 0.85
    concept_started = time.time()
    preds, labels = _events(rng, 6000, 2000, shift=2.0, correct=0.5)
    topics.produce(topics.predictions, preds)
    topics.produce(topics.labels, labels)
    t_acc, acc_alert = wait_for(
        lambda: webhook.first("ModelMetricBelowThreshold", model="fraud", metric="accuracy"), 60,
        "the accuracy threshold alert at the webhook", every=0.1)

    print(f"\nfirst drifted event -> FeatureDriftDetected at the webhook: "
          f"{t_drift - drift_started:.2f} s")
    print(f"first wrong labels -> ModelMetricBelowThreshold at the webhook: "
          f"{t_acc - concept_started:.2f} s")
    assert t_drift < t_acc
    assert drift_alert["labels"]["severity"] == "warning"
    assert "amount" in drift_alert["annotations"]["description"]
    assert "fraud" in acc_alert["annotations"]["summary"]
    named = {a["labels"]["feature"] for _, a in webhook.firing() if "feature" in a["labels"]}
    assert named == {DRIFTED}, f"alerts named unchanged features: {named - {DRIFTED}}"

    # a new model version whose drift fires inside its very first batch, before any scrape
    # could show its counter: the series is exposed at 0 first, so the alert still comes
    new_version_started = time.time()
    preds, _ = _events(rng, 8000, 1000, shift=4.0, correct=1.0, version="6", shift_from=500)
    topics.produce(topics.predictions, preds)
    t_new, _ = wait_for(lambda: webhook.first("FeatureDriftDetected", model="fraud",
                                              model_version="6", feature=DRIFTED), 60,
                        "the drift alert of the new version", every=0.1)
    print(f"new version, drift in its first batch -> alert at the webhook: "
          f"{t_new - new_version_started:.2f} s")
    named = {a["labels"]["feature"] for _, a in webhook.firing() if "feature" in a["labels"]}
    assert named == {DRIFTED}

    # every Grafana panel and annotation query parses and returns data on the live
    # Prometheus (with the variables at "All"), but the regression errors of this classifier
    # and the performance estimates of its scores, which its events do not carry
    # (test_estimation_e2e.py shows those)
    dashboard = json.loads((DEPLOY / "grafana" / "drift-detector.json").read_text())
    queries = [(panel["title"], target["expr"]) for panel in dashboard["panels"]
               for target in panel["targets"]]
    queries += [(a["name"], a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]
    for title, expr in queries:
        expr = (expr.replace("$__rate_interval", "1m").replace("$model", "fraud")
                .replace("$namespace", ".*").replace("$job", ".*"))
        answer = prometheus.query(expr)          # raises, saying why, if it does not parse
        if not re.search(r"drift_model_error|_estimate", expr):
            assert answer, f"{title!r} has no data: {expr}"

    # the retraining hook: the detection was published with its origin
    events = [json.loads(m.value) for m in read_topic(topics.bootstrap, stack["drift_topic"])]
    hits = [e for e in events if e["feature"] == DRIFTED and e["detector"] in ("adwin", "cusum")]
    assert hits, events[:5]
    first = hits[0]
    assert first["model"] == "fraud" and first["model_version"] == "5" and first["index"] >= 3000
    assert 3000 <= first["onset_index"] <= first["index"]    # the change began at event 3000
    assert first["topic"] == topics.predictions and first["offset"] >= 3000
    assert first["statistic"]          # the detector's public state when it fired
    assert first["id"] == f"fraud/5/feature/{DRIFTED}//{first['detector']}/{first['index']}"
