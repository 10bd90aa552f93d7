from __future__ import annotations

import json
import time
import threading
import urllib.error
import urllib.request

from detector.config import MetricsSettings, Settings
from detector.metrics import DriftCollector, Exporter, MetricsServer, RunStatus
from detector.pipeline import Pipeline, Record
from prometheus_client import CollectorRegistry


def _shifted_pipeline(hold: float) -> Pipeline:
    p = Pipeline(Settings(detectors={"feature": ["adwin"], "prediction": []},
                          metrics={"detection_hold_seconds": hold}))
    recs = [Record("prediction", json.dumps({"model": "m", "prediction_id": str(i),
            "features": {"x": 0.0 if i < 500 else 10.0}, "prediction": 0}).encode())
            for i in range(700)]
    p.process(recs, now=100.0)
    return p


def test_drift_detected_is_latched_for_the_hold_period() -> None:
    p = _shifted_pipeline(hold=60)
    clock = [130.0]
    reg = CollectorRegistry()
    reg.register(DriftCollector(p, threading.Lock(), RunStatus(), clock=lambda: clock[0]))
    labels = {"model": "m", "version": "unversioned", "signal": "feature", "feature": "x",
              "category": "", "detector": "adwin"}
    # the series' first exposition is 0, though the detector fired in the first batch,
    # so that Prometheus' increase() sees the jump to the real count at the next scrape
    assert reg.get_sample_value("drift_detections_total", labels) == 0
    assert reg.get_sample_value("drift_detections_total", labels) >= 1
    assert reg.get_sample_value("drift_detected", labels) == 1.0
    clock[0] = 161.0
    assert reg.get_sample_value("drift_detected", labels) == 0.0
    assert reg.get_sample_value("drift_detections_total", labels) >= 1   # the counter stays


def test_every_rejection_reason_and_join_outcome_exists_at_zero() -> None:
    p = Pipeline(Settings())
    p.process([Record("label", b'{"model": "m", "prediction_id": "1", "label": 1}')], now=0.0)
    reg = Exporter(p, threading.Lock(), RunStatus()).registry
    assert reg.get_sample_value("drift_events_rejected_total",
                                {"kind": "prediction", "reason": "oversized"}) == 0
    for outcome in ("matched", "expired", "orphan"):
        assert reg.get_sample_value("drift_label_join_total",
                                    {"model": "m", "outcome": outcome}) == 0


def test_http_endpoints_on_a_real_server() -> None:
    status = RunStatus()
    server = MetricsServer(Exporter(_shifted_pipeline(60), threading.Lock(), status),
                           MetricsSettings(host="127.0.0.1", port=0)).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        body = urllib.request.urlopen(base + "/metrics").read().decode()
        assert "drift_build_info{" in body and "drift_batch_seconds_bucket" in body
        assert urllib.request.urlopen(base + "/healthz").status == 200
        try:
            urllib.request.urlopen(base + "/readyz")
            raise AssertionError("ready before connecting")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        status.connected, status.last_poll = True, time.time()
        assert urllib.request.urlopen(base + "/readyz").status == 200
    finally:
        server.stop()
