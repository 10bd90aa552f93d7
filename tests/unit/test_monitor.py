from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest

from detector import detectors
from detector.config import DetectorSpec, Settings
from detector.detectors import Standardizer
from detector.kernels.stream import KINDS as KERNEL_KINDS
from detector.monitor import ModelMonitor, Stream
from tests.streams import simulate

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


@pytest.mark.parametrize("engine", ["kernel", "river"])
@pytest.mark.parametrize("kind", ALL)
def test_every_detector_is_river_exact_deterministic_and_picklable(kind: str,
                                                                   engine: str) -> None:
    values = _values(kind, seed=11)
    stream = Stream("m", "1", "feature", "x", (DetectorSpec(type=kind),), engine=engine)
    assert (stream.kernel is not None) == (engine == "kernel" and kind in KERNEL_KINDS)
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


@pytest.mark.parametrize("standardize", [True, False])
def test_detections_equal_river_on_the_transformed_values(standardize: bool) -> None:
    settings = Settings(detectors={"feature": ["adwin", "cusum", "page_hinkley"]},
                        detection={"standardize": standardize, "cooldown": 50},
                        reference={"enabled": False})
    m = ModelMonitor("fraud", "3", settings, now=0.0)
    out: list = []
    rng = random.Random(5)
    values = [rng.gauss(40 if i < 3000 else 46, 10) for i in range(6000)]   # a 0.6 sd shift
    for v in values:
        m.observe({"amount": v}, prediction=0, score=None)
    m.flush(1.0, out, [])
    expected = simulate(values, settings.detectors.feature, settings)
    stream = m.features["amount"]
    for ch in stream.channels:
        firings, episodes = expected[ch.name]
        got = [d.index for d in out if d.feature == "amount" and d.detector == ch.name]
        assert got == episodes, ch.name
        assert (ch.firings, ch.detections) == (len(firings), len(episodes)), ch.name
    assert all(d.model == "fraud" and d.version == "3" for d in out)
    first = min((i for f, e in expected.values() for i in e if i >= 3000), default=None)
    assert first is not None and first < 3300                      # the shift is found


def test_a_seasonal_autocorrelated_stream_equals_the_independent_simulation() -> None:
    """Period, robust start, whitening, tracking and re-arming as ``tests.streams``
    describes them, on an AR(0.7) stream with a cycle of 500 and a level change every
    3000 values."""
    rng = np.random.default_rng(3)
    noise, values, prev = rng.normal(size=30_000), [], 0.0
    levels = np.repeat(rng.normal(0.0, 2.0, 10), 3000)
    for i, e in enumerate(noise.tolist()):
        prev = 0.7 * prev + e
        values.append(prev + 2.0 * math.sin(2 * math.pi * i / 500) + float(levels[i]))
    out = _equal_to_the_simulation(values, Settings(
        reference={"enabled": False}, detectors={"feature": ["adwin", "cusum", "page_hinkley"]},
        detection={"period": 500, "track": 3000, "warmup": 800}))
    assert len(out) >= 5


def _equal_to_the_simulation(values: list[float], settings: Settings) -> list:
    """One feature stream's detections with ``settings``, checked against
    ``tests.streams.simulate`` (episodes and counts per channel)."""
    d = settings.detection
    stream = Stream("m", "1", "feature", "x", settings.detectors.feature,
                    Standardizer.from_settings(d), d.cooldown)
    out: list = []
    stream.pending.extend(values)
    stream.flush(0.0, out)
    expected = simulate(values, settings.detectors.feature, settings)
    for ch in stream.channels:
        firings, episodes = expected[ch.name]
        assert [x.index for x in out if x.detector == ch.name] == episodes, ch.name
        assert (ch.firings, ch.detections) == (len(firings), len(episodes)), ch.name
    return out


def test_jumps_in_a_smooth_stream_equal_the_independent_simulation() -> None:
    """The default detectors (ADWIN, CUSUM, Jump) on a smooth AR(0.95) stream whose
    level steps by 15-30 times its step noise every 1,500 values (every second step inside
    the baseline's learning): each jump moves the baseline's level, as ``tests.streams``
    describes it, and is found 3 values after it with its onset (nearly always) exact."""
    rng = np.random.default_rng(8)
    steps = np.repeat(np.cumsum(rng.choice([-1.0, 1.0], 12) * rng.uniform(15, 30, 12)), 1500)
    noise, values, prev = rng.normal(size=steps.size), [], 0.0
    for e, level in zip(noise.tolist(), steps.tolist()):
        prev = 0.95 * prev + e
        values.append(prev + level)
    out = _equal_to_the_simulation(values, Settings(reference={"enabled": False}))
    # each step found once, by Jump: the moved baseline keeps CUSUM and ADWIN quiet; the
    # onset is the step, or one value before it when the noise's last step went the
    # jump's way by more than JUMP_RAMP typical steps (taken for the start of a ramp)
    changes = list(range(1500, steps.size, 1500))
    assert [(x.detector, x.index) for x in out] == [("jump", c + 3) for c in changes]
    assert all(0 <= c - x.onset <= 1 for x, c in zip(out, changes))
    assert sum(x.onset == c for x, c in zip(out, changes)) >= len(changes) - 2


def test_declared_features_only_and_feature_cap() -> None:
    declared = ModelMonitor("m", "1", Settings(models={"m": {"features": ["a", "b"]}}), now=0.0)
    assert declared.observe({"a": 1.0, "z": 2.0}, 0, None) == 0
    assert sorted(declared.features) == ["a", "b"]      # b exists before its first value
    capped = ModelMonitor("m", "1", Settings(max_features=2), now=0.0)
    assert capped.observe({"a": 1.0, "b": 1.0, "c": 1.0, "d": None}, 0, None) == 2
    assert sorted(capped.features) == ["a", "b"]
