"""Detection quality of the defaults: quiet on stable data, quick on real change."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detector import detectors
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


def feature_stream(settings: Settings) -> Stream:
    d = settings.detection
    return Stream("m", "1", "feature", "x", settings.detectors.feature,
                  Standardizer.from_settings(d), d.cooldown)


def found(settings: Settings, values: np.ndarray) -> list:
    """The detections of one feature stream with ``settings``."""
    out: list = []
    feature_stream(settings).flush(0.0, out, values)
    return out


def ar1(rng: np.random.Generator, phi: float, n: int) -> np.ndarray:
    """A stationary AR(1) stream with sd 1."""
    noise = rng.normal(0.0, math.sqrt(1 - phi * phi), n)
    out, prev = np.empty(n), rng.normal()
    for i, e in enumerate(noise.tolist()):
        prev = phi * prev + e
        out[i] = prev
    return out


@pytest.mark.parametrize(("shift", "phi", "target"), [(1.0, 0.0, 60), (2.0, 0.0, 20),
                                                       (2.0, 0.7, 66)])
def test_mean_shift_delay_targets_with_the_defaults(shift: float, phi: float,
                                                     target: int) -> None:
    """Issue 13's targets: a 2 sd shift found within 20 values on average, 1 sd within
    60; its onset within a few values; no false alarm before. In an AR(1) stream with
    phi 0.7 (sd of the stream) the target is 60: the whitened shift is 0.84 sd, and at
    the 10^-9 budget CUSUM needs about 62 values (the README's figures say so)."""
    delays, onsets = [], []
    for run in range(30):
        rng = np.random.default_rng(1000 + run)
        values = ar1(rng, phi, 4000) + np.r_[np.zeros(2000), np.full(2000, shift)]
        out = found(Settings(), values)
        after = [x for x in out if x.index >= 2000]
        assert after, f"run {run}: {shift} sd shift missed"
        assert not [x for x in out if x.index < 2000], f"run {run}: false alarm"
        assert after[0].direction == "up"
        delays.append(after[0].index - 2000)
        onsets.append(abs(after[0].onset - 2000))
    assert np.mean(delays) <= target, delays
    if phi == 0.0:
        assert np.median(onsets) <= 3, onsets


@pytest.mark.parametrize("phi", [0.9, 0.95])
def test_no_false_alarm_over_a_million_autocorrelated_values(phi: float) -> None:
    """10 streams of 10^5 values each (every learning phase counts), AR(1)."""
    for k in range(10):
        values = ar1(np.random.default_rng(50 + k), phi, 100_000)
        assert found(Settings(), values) == [], (phi, k)


def bursts(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """A bursty 0/1 flag: on with probability ``p`` a value, then on for 1 to 50 values."""
    out, i = np.zeros(n), 0
    while i < n:
        if rng.random() < p:
            length = int(rng.integers(1, 51))
            out[i:i + length] = 1.0
            i += length
        i += 1
    return out


@pytest.mark.parametrize("family", ["random walk", "t(2)", "lognormal", "rounded AR(0.9)",
                                    "rare 0/1", "bursty 0/1", "Poisson(0.2)"])
def test_jump_stays_quiet_over_a_million_values_without_a_step(family: str) -> None:
    """Jump at its defaults on streams that wander, spike or skew but never step: a
    random walk (the worst case of autocorrelation), infinite-variance t(2) spikes,
    skewed values, an autocorrelated stream rounded to a coarse grid, and streams that
    mostly hold still (flags on now and then or in bursts, rare counts): their moves are
    of one unit, which is then their typical step."""
    rng = np.random.default_rng(20261124)
    n = 1_000_000
    values = {"random walk": lambda: np.cumsum(rng.normal(size=n)),
              "t(2)": lambda: rng.standard_t(2, n),
              "lognormal": lambda: rng.lognormal(0.0, 1.0, n),
              "rounded AR(0.9)": lambda: np.round(ar1(rng, 0.9, n) * 2),
              "rare 0/1": lambda: (rng.random(n) < 0.01).astype(float),
              "bursty 0/1": lambda: bursts(rng, n, 0.01),
              "Poisson(0.2)": lambda: rng.poisson(0.2, n).astype(float)}[family]()
    stream = Stream("m", "1", "feature", "x", Settings(detectors={"feature": ["jump"]})
                    .detectors.feature, Standardizer(1000, 10, 5.0), 500)
    out: list = []
    stream.flush(0.0, out, values)
    assert out == [] and stream.channels[0].firings == 0


def test_a_stream_that_mostly_holds_still_is_judged_by_the_size_of_its_moves() -> None:
    """A lamp's light: exactly 0 while off (most differences are 0), about 400 and
    flickering while on. Each switch after the first moves has been learned is a jump,
    and every one is its own episode, the same way twice within the cooldown included
    (off, on, off: the light has no trend to continue)."""
    rng = np.random.default_rng(11)
    spans = [80, 60, 70, 60, 50, 60, 90]            # off, on, off, on, ...
    values = np.concatenate([np.zeros(n) if k % 2 == 0 else 400.0 + rng.normal(0, 10, n)
                             for k, n in enumerate(spans)])
    switches = np.cumsum(spans)[:-1].tolist()       # 80 on, 140 off, 210 on, ...
    stream = Stream("m", "1", "feature", "x", Settings().detectors.feature,
                    Standardizer.from_settings(Settings().detection), 500)
    out: list = []
    stream.flush(0.0, out, values)
    jumps = [(d.index, d.onset, d.direction) for d in out if d.detector == "jump"]
    # the first on-span teaches the moves (20 are needed); every switch after it is found
    assert jumps == [(s + 3, s, "up" if k % 2 == 0 else "down")
                     for k, s in enumerate(switches) if k > 0], jumps


def test_a_jump_reached_by_a_short_ramp_has_its_onset_where_the_ramp_began() -> None:
    rng = np.random.default_rng(5)
    ramp = np.r_[np.zeros(100), np.linspace(0.0, 40.0, 6)[1:], np.full(50, 40.0)]
    values = ramp + rng.normal(0.0, 0.5, ramp.size)
    det, fired = detectors.Jump(), []
    for i, x in enumerate(values.tolist()):
        det.update(x)
        if det.drift_detected:
            fired.append((i, i - detectors.onset_age(det) + 1))
    assert len(fired) == 1 and abs(fired[0][1] - 100) <= 1, fired   # not the ramp's end


def test_a_step_that_goes_on_rising_is_found_at_the_step() -> None:
    """A gas concentration when people walk in: one large step, then a climb of 6
    typical steps a value for 15 values. The values after the step spread widely, but
    they do not fall back: a new regime, found 3 values after the step."""
    rng = np.random.default_rng(7)
    level = np.r_[np.zeros(100), 20.0 + np.arange(15) * 6.0, np.full(40, 104.0)]
    det, fired = detectors.Jump(), []
    for i, x in enumerate((level + rng.normal(0.0, 1.0, level.size)).tolist()):
        det.update(x)
        if det.drift_detected:
            fired.append((i, i - detectors.onset_age(det) + 1, detectors.direction(det)))
    assert fired == [(103, 100, 1)], fired


def test_level_steps_of_a_real_series_are_found_where_they_happen() -> None:
    """RunLog (TCPD, River's bundle): a runner's pace steps between running and walking;
    the annotated steps are found within the F1 margin of where they fired."""
    rows, annotations = quality.tcpd_series()["RunLog"]
    fired = quality.through_pipeline(Settings(reference={"enabled": False}), "RunLog", rows,
                                     at="index")
    assert quality.f1(annotations, fired) >= 0.85


def test_on_short_series_with_steps_and_ramps_jump_adds_found_changes() -> None:
    """bench/quality.py section 4 (short AR series with steps and ramps, shaped like the
    TCPD series) on 120 series of its own seed: the defaults beat the zero baseline at the
    index and the onset, and beat themselves without Jump at the index."""
    rng = np.random.default_rng(11)
    series = [quality.short_series(rng) for _ in range(120)]
    def mean_f1(settings: Settings, at: str) -> float:
        return float(np.mean([quality.f1({"a": cps}, quality.through_pipeline(
            settings, f"s{j}", [{"v": float(v)} for v in x], at=at))
            for j, (x, cps) in enumerate(series)]))
    zero = float(np.mean([quality.f1({"a": cps}, []) for _, cps in series]))
    ours = Settings(reference={"enabled": False})
    without = Settings(reference={"enabled": False}, detectors={"feature": ["adwin", "cusum"]})
    assert mean_f1(ours, "onset") > zero
    assert mean_f1(ours, "index") > max(zero, mean_f1(without, "index"))


def test_a_daily_cycle_does_not_page_when_its_period_is_set() -> None:
    settings = Settings(detection={"period": 1440})
    quiet = Settings()
    paged = 0
    for k in range(10):
        rng = np.random.default_rng(70 + k)
        values = 2.0 * np.sin(2 * np.pi * np.arange(100_000) / 1440) + rng.normal(size=100_000)
        assert found(settings, values) == [], k
        paged += len(found(quiet, values))
    assert paged > 100          # without the period it would page


def test_a_change_and_its_return_within_the_cooldown_are_two_episodes() -> None:
    """+2 sd at 2000, back at 2300 (the old cooldown was 500): both reported, with
    their directions, and the new regime is the baseline in between."""
    for run in range(10):
        rng = np.random.default_rng(90 + run)
        values = rng.normal(size=4000) + np.r_[np.zeros(2000), np.full(300, 2.0),
                                                np.zeros(1700)]
        out = found(Settings(), values)
        first = [x for x in out if 2000 <= x.index < 2300]
        back = [x for x in out if 2300 <= x.index]
        assert first and back, (run, [(x.index, x.detector) for x in out])
        assert first[0].direction == "up" and back[0].direction == "down"
        assert not [x for x in out if x.index < 2000]


def test_a_trend_that_keeps_firing_is_one_episode() -> None:
    """After each detection the baseline re-learns; a trend fires again the same way
    within the cooldown, which continues its episode."""
    rng = np.random.default_rng(5)
    values = rng.normal(size=8000) + np.r_[np.zeros(2000), np.arange(6000) / 200]
    stream = feature_stream(Settings())
    out: list = []
    stream.flush(0.0, out, values)
    cusum = next(ch for ch in stream.channels if ch.name == "cusum")
    assert cusum.firings > 5 * cusum.detections
    assert [x.direction for x in out] == ["up"] * len(out) and len(out) <= 3


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
    for at in ("onset", "index"):
        ours = [quality.f1(ann, quality.through_pipeline(settings, name, rows, at=at))
                for name, (rows, ann) in series.items()]
        assert np.mean(ours) > np.mean(list(zero.values())), at


def test_cusum_threshold_holds_the_budget_on_average_over_baselines_learned_from_warmup() -> None:
    """``calibration.cusum_h`` with ``warmup``: streams standardised by a mean and sd each
    estimated from its own ``warmup`` stable values raise, all together, the budgeted
    false alarms per value; the threshold that ignores those errors raises clearly more.
    A two-sided CUSUM (k 0.5, reset at each alarm) over 4,000 streams at once."""
    from detector import calibration

    rate, warmup, streams, length = 1e-3, 100, 4000, 2500
    rng = np.random.default_rng(20261124)
    learned = rng.normal(0.0, 1.0, (streams, warmup))
    loc, scale = learned.mean(axis=1), learned.std(axis=1, ddof=1)

    def alarms(h: float) -> int:
        k, up, down, fired = calibration.K, np.zeros(streams), np.zeros(streams), 0
        values = np.random.default_rng(7).normal(0.0, 1.0, (length, streams))
        for x in (values - loc) / scale:
            up, down = np.maximum(0.0, up + x - k), np.maximum(0.0, down - x - k)
            hit = (up > h) | (down > h)
            fired += int(hit.sum())
            up[hit] = down[hit] = 0.0
        return fired

    budget = rate * streams * length                       # 10,000 false alarms
    h = calibration.cusum_h(rate, calibration.K, warmup)
    assert h < calibration.cusum_h(rate, calibration.K - 2 / math.sqrt(warmup))
    assert 0.75 * budget < alarms(h) < 1.1 * budget
    assert alarms(calibration.cusum_h(rate)) > 1.3 * budget
