"""A mean shift on one feature, through the real broker and the real service:
/metrics shows it, and every feature's detections equal River's offline."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
from river import drift

from tests.conftest import sample

N, SHIFT_AT, SHIFTED = 6000, 3000, "x2"


def _stream(seed: int) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    cols = {
        "x0": rng.normal(0.0, 1.0, N),
        "x1": rng.normal(5.0, 0.5, N),
        SHIFTED: np.where(np.arange(N) < SHIFT_AT, 0.0, 2.0) + rng.normal(0.0, 1.0, N),
        "x3": rng.uniform(0.0, 1.0, N),
    }
    out = {k: [float(v) for v in col] for k, col in cols.items()}
    # a feature with missing values: the detectors see only the present ones
    out["x4"] = [None if rng.random() < 0.05 else float(v) for v in rng.normal(0.0, 0.3, N)]
    out["score"] = [float(v) for v in rng.uniform(0.0, 1.0, N)]
    return out


def _offline(kind: type, values: list) -> list[int]:
    det, fired = kind(), []
    for i, v in enumerate(x for x in values if x is not None):
        det.update(v)
        if det.drift_detected:
            fired.append(i)
    return fired


def test_mean_shift_is_exported_and_every_feature_matches_river(topics, detector) -> None:
    data = _stream(seed=20261123)
    features = [k for k in data if k != "score"]
    events = ({"model": "credit", "model_version": "7", "prediction_id": f"id-{i}",
               "features": {**{k: data[k][i] for k in features}, "segment": "retail"},
               "prediction": int(data["score"][i] > 0.5), "score": data["score"][i]}
              for i in range(N))
    topics.produce(topics.predictions, events)

    d = detector()
    m = d.wait_events("prediction", "credit", N)
    recent = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{d.port}/detections").read())

    labels = dict(model="credit", version="7", signal="feature")
    for feature in features:
        for name, cls in (("adwin", drift.ADWIN), ("page_hinkley", drift.PageHinkley)):
            expected = _offline(cls, data[feature])
            got = [r["index"] for r in recent if r["signal"] == "feature"
                   and r["feature"] == feature and r["detector"] == name]
            assert got == expected, (feature, name)
            total = sample(m, "drift_detections_total", **labels, feature=feature, detector=name)
            assert total == len(expected), (feature, name)
    # the prediction stream (scores) is checked the same way
    for name, cls in (("adwin", drift.ADWIN), ("page_hinkley", drift.PageHinkley)):
        got = [r["index"] for r in recent if r["signal"] == "prediction" and r["detector"] == name]
        assert got == _offline(cls, data["score"])

    # the shift itself: ADWIN fires after the shift point, and the gauge is latched
    shifted = _offline(drift.ADWIN, data[SHIFTED])
    assert any(SHIFT_AT <= i < SHIFT_AT + 200 for i in shifted)
    assert sample(m, "drift_detected", **labels, feature=SHIFTED, detector="adwin") == 1.0
    for quiet in ("x0", "x1", "x3", "x4"):
        if not _offline(drift.ADWIN, data[quiet]):
            assert sample(m, "drift_detected", **labels, feature=quiet, detector="adwin") == 0.0
    # missing values counted per feature; categorical values are not fed to detectors
    assert sample(m, "drift_feature_missing_total", model="credit", version="7",
                  feature="x4") == sum(v is None for v in data["x4"])
    assert sample(m, "drift_stream_values_total", model="credit", version="7", signal="feature",
                  feature="segment") == 0
