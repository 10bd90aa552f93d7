"""A mean shift on one feature, through the real broker and the real service:
/metrics shows it, and every feature's detections equal River's detectors run
offline on the same values, standardised the documented way (tests/streams.py)."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
from river import drift

from detector.config import Settings
from tests.conftest import sample
from tests.streams import simulate

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


def _offline(values: list, specs, settings: Settings) -> dict[str, tuple[list[int], list[int]]]:
    return simulate([v for v in values if v is not None], specs, settings)


RIVER_MODE = {"detectors": {"feature": ["adwin", "page_hinkley"],
                             "prediction": ["adwin", "page_hinkley"]},
              "detection": {"standardize": False, "calibrate": False, "cooldown": 0}}


@pytest.mark.parametrize("mode", ["defaults", "river"])
def test_mean_shift_is_exported_and_every_feature_matches_river(topics, detector, mode) -> None:
    """``defaults``: calibrated detectors on standardised values; ``river``: River's own
    default parameters on the raw values, firing for firing as River offline."""
    data = _stream(seed=20261123)
    features = [k for k in data if k != "score"]
    events = ({"model": "credit", "model_version": "7", "prediction_id": f"id-{i}",
               "features": {**{k: data[k][i] for k in features}, "segment": "retail"},
               "prediction": int(data["score"][i] > 0.5), "score": data["score"][i]}
              for i in range(N))
    topics.produce(topics.predictions, events)

    d = detector(RIVER_MODE if mode == "river" else None)
    m = d.wait_events("prediction", "credit", N)
    recent = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{d.port}/detections").read())

    defaults = Settings(**RIVER_MODE) if mode == "river" else Settings()   # what the service runs
    labels = dict(model="credit", model_version="7", signal="feature", category="")
    fired_on = {}
    for feature in features:
        expected = _offline(data[feature], defaults.detectors.feature, defaults)
        for name, (firings, episodes) in expected.items():
            got = [r["value_index"] for r in recent if r["signal"] == "feature"
                   and r["feature"] == feature and r["detector"] == name]
            assert got == episodes, (feature, name)
            assert sample(m, "drift_detections_total", **labels, feature=feature,
                          detector=name) == len(episodes), (feature, name)
            assert sample(m, "drift_detector_firings_total", **labels, feature=feature,
                          detector=name) == len(firings), (feature, name)
            fired_on[(feature, name)] = episodes
    # the prediction stream (scores) is checked the same way
    for name, (_, episodes) in _offline(data["score"], defaults.detectors.prediction,
                                        defaults).items():
        got = [r["value_index"] for r in recent if r["signal"] == "prediction"
               and r["detector"] == name]
        assert got == episodes, name

    # the shift itself is found soon after it starts, and the gauge is latched
    first = min(i for (f, _), eps in fired_on.items() if f == SHIFTED for i in eps
                if i >= SHIFT_AT)
    assert first < SHIFT_AT + 100
    for (feature, name), episodes in fired_on.items():
        assert sample(m, "drift_detected", **labels, feature=feature, detector=name) == (
            1.0 if episodes else 0.0), (feature, name)
    if mode == "river":    # River's own detectors, checked against River's classes directly
        for feature in features:
            for name, cls in (("adwin", drift.ADWIN), ("page_hinkley", drift.PageHinkley)):
                det, fired = cls(), []
                for i, v in enumerate(x for x in data[feature] if x is not None):
                    det.update(v)
                    if det.drift_detected:
                        fired.append(i)
                assert fired_on[(feature, name)] == fired, (feature, name)
    else:                  # calibrated, standardised defaults: quiet until the shift
        assert all(not eps for (f, _), eps in fired_on.items() if f != SHIFTED)
        assert all(i >= SHIFT_AT for (f, _), eps in fired_on.items() for i in eps)
    # missing values counted per feature; categorical values are not fed to detectors, so
    # the categorical feature has no online-detector or value-count series at all
    assert sample(m, "drift_feature_missing_total", model="credit", model_version="7",
                  feature="x4") == sum(v is None for v in data["x4"])
    segment = [(name, dict(lab)) for name, lab in m if dict(lab).get("feature") == "segment"
               and not dict(lab).get("category")]
    assert segment and not [(name, lab) for name, lab in segment
                            if name == "drift_stream_values_total"
                            or lab.get("detector") in ("adwin", "cusum", "page_hinkley")]
