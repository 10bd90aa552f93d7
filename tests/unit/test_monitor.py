from __future__ import annotations

import pickle
import random

import pytest
from river import drift

from detector import detectors
from detector.config import Settings
from detector.monitor import ModelMonitor, Stream
from detector.config import DetectorSpec

ALL = list(detectors._CLASSES)


def _values(kind: str, seed: int, n: int = 3000) -> list[float]:
    rng = random.Random(seed)
    if detectors.is_binary(kind):
        return [float(rng.random() < (0.1 if i < n // 2 else 0.4)) for i in range(n)]
    return [rng.gauss(0.0 if i < n // 2 else 1.5, 1.0) for i in range(n)]


def _fired(det, values) -> list[int]:
    out = []
    for i, v in enumerate(values):
        det.update(v)
        if det.drift_detected:
            out.append(i)
    return out


@pytest.mark.parametrize("kind", ALL)
def test_every_detector_is_river_exact_deterministic_and_picklable(kind: str) -> None:
    values = _values(kind, seed=11)
    stream = Stream("m", "1", "feature", "x", (DetectorSpec(type=kind),))
    found: list = []
    for v in values[:1500]:
        stream.update(v, 0.0, found)
    clone = pickle.loads(pickle.dumps(stream))           # state survives a round trip
    tail_a, tail_b = [], []
    for v in values[1500:]:
        stream.update(v, 0.0, tail_a)
        clone.update(v, 0.0, tail_b)
    ours = [d.index for d in found + tail_a]
    assert [d.index for d in tail_b] == [d.index for d in tail_a]
    reference = detectors._CLASSES[kind](**detectors.effective_params(kind, {}))
    assert ours == _fired(reference, values)


def test_detections_carry_model_version_signal_feature_and_index() -> None:
    m = ModelMonitor("fraud", "3", Settings(detectors={"feature": ["adwin"]}), now=0.0)
    out: list = []
    values = _values("adwin", seed=5)
    for v in values:
        m.observe({"amount": v}, prediction=0, score=None, now=1.0, out=out)
    expected = _fired(drift.ADWIN(), values)
    got = [(d.model, d.version, d.signal, d.feature, d.detector, d.index) for d in out
           if d.signal == "feature"]
    assert got == [("fraud", "3", "feature", "amount", "adwin", i) for i in expected]
    assert expected  # the shift is real


def test_declared_features_only_and_feature_cap() -> None:
    declared = ModelMonitor("m", "1", Settings(models={"m": {"features": ["a", "b"]}}), now=0.0)
    assert declared.observe({"a": 1.0, "z": 2.0}, 0, None, 0.0, []) == 0
    assert sorted(declared.features) == ["a", "b"]      # b exists before its first value
    capped = ModelMonitor("m", "1", Settings(max_features=2), now=0.0)
    assert capped.observe({"a": 1.0, "b": 1.0, "c": 1.0, "d": None}, 0, None, 0.0, []) == 2
    assert sorted(capped.features) == ["a", "b"]
