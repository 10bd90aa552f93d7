"""Detection quality of the defaults: quiet on stable data, quick on real change."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.config import Settings
from detector.detectors import CUSUM, Standardizer
from detector.monitor import ModelMonitor, Stream

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import quality  # noqa: E402  (bench/quality.py: TCPD scoring)


def test_no_false_alarm_per_feature_over_a_million_stable_values_with_the_defaults() -> None:
    rng = np.random.default_rng(20261123)
    n = 1_000_000
    normal = rng.normal(0.0, 1.0, n)
    money = rng.lognormal(3.0, 0.8, n)          # skewed, in other units
    m = ModelMonitor("m", "1", Settings(), now=0.0)
    out: list = []
    for i in range(0, n, 2000):
        for a, b in zip(normal[i:i + 2000].tolist(), money[i:i + 2000].tolist()):
            m.observe({"normal": a, "money": b}, 0, None)
        m.flush(0.0, out, [])
    assert [(d.feature, d.detector, d.index) for d in out if d.signal == "feature"] == []
    assert m.features["normal"].seen == n


@pytest.mark.parametrize("shift, target", [(1.0, 100), (2.0, 30)])
def test_mean_shift_delay_targets_with_the_defaults(shift: float, target: int) -> None:
    settings = Settings()
    delays = []
    for run in range(30):
        rng = random.Random(1000 + run)
        d = settings.detection
        stream = Stream("m", "1", "feature", "x", settings.detectors.feature,
                        Standardizer.from_settings(d), d.cooldown)
        out: list = []
        stream.pending.extend(rng.gauss(shift if i >= 2000 else 0.0, 1.0) for i in range(4000))
        stream.flush(0.0, out)
        after = [x.index - 2000 for x in out if x.index >= 2000]
        assert after, f"run {run}: {shift} sd shift missed"
        assert not [x for x in out if x.index < 2000], f"run {run}: false alarm"
        delays.append(after[0])
    assert np.mean(delays) < target, delays


def _reference_cusum(values: list[float], k: float, h: float) -> list[int]:
    hi = lo = 0.0
    fired = []
    for i, x in enumerate(values):
        hi, lo = max(0.0, hi + x - k), max(0.0, lo - x - k)
        if hi > h or lo > h:
            fired.append(i)
            hi = lo = 0.0
    return fired


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cusum_equals_a_plain_reference_implementation(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) + (1.2 if (i // 700) % 2 else 0.0) for i in range(5000)]
    det, fired = CUSUM(k=0.5, h=6.0), []
    for i, x in enumerate(values):
        det.update(x)
        if det.drift_detected:
            fired.append(i)
    assert fired == _reference_cusum(values, 0.5, 6.0) and len(fired) > 3


def test_repeated_firings_of_one_change_are_one_episode() -> None:
    # a CUSUM on raw values keeps firing on a lasting shift (nothing re-learns the level)
    settings = Settings(detectors={"feature": [{"type": "cusum", "params": {"h": 10.0}}]},
                        detection={"standardize": False, "calibrate": False, "cooldown": 300})
    stream = Stream("m", "1", "feature", "x", settings.detectors.feature, None, 300)
    rng, out = random.Random(4), []
    stream.pending.extend(rng.gauss(0.0 if i < 3000 else 1.0, 1.0) for i in range(6000))
    stream.flush(0.0, out)
    ch = stream.channels[0]
    assert ch.firings > 20 and ch.firings > 10 * ch.detections
    assert ch.detections == len(out)
    starts = [d.index for d in out]
    assert all(b - a > 300 for a, b in zip(starts, starts[1:]))


def test_calibrate_prints_parameters_and_measured_run_lengths() -> None:
    done = subprocess.run([sys.executable, "-m", "detector", "calibrate", "--false-alarm-rate",
                           "1e-3", "--values", "200000"], capture_output=True, text=True,
                          timeout=300, env={**os.environ})
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()
            if line.split() and line.split()[0] in ("adwin", "cusum", "page_hinkley")}
    cusum = rows["cusum"].split()
    alarms = int(cusum[-2].replace(",", ""))
    assert '"h":' in rows["cusum"] and alarms > 0
    assert 200_000 / alarms >= 1000 * 0.8          # at or above the target run length


def test_tcpd_scoring_reproduces_the_published_zero_baseline_and_defaults_beat_it() -> None:
    series = quality.tcpd_series()
    zero = {name: quality.f1(ann, []) for name, (_, ann) in series.items()}
    for name, published in quality.PUBLISHED.items():
        assert round(zero[name], 3) == published["zero"], name
    settings = Settings(reference={"enabled": False})
    ours = [quality.f1(ann, quality.through_pipeline(settings, name, rows))
            for name, (rows, ann) in series.items()]
    assert np.mean(ours) > np.mean(list(zero.values()))
