"""Every compiled kernel against its reference implementation, on >= 1M values each:
River's own ``ADWIN`` and ``PageHinkley``, our ``CUSUM``, ``Standardizer`` and
``Stream``. Equal means equal: the same detection indices, and statistics compared
with ``==`` (bit for bit), after every detection and at the end."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable

import numpy as np
import pytest
from river import drift

from detector import detectors
from detector.config import Settings
from detector.detectors import Standardizer
from detector.kernels import adwin, cusum, jump, page_hinkley, standardize, stream
from detector.monitor import Stream

MILLION = 1_000_000


def regimes(seed: int, n: int = MILLION, length: int = 20_000) -> np.ndarray:
    """Normal values whose mean and sd change every ``length`` values."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=n)
    for start in range(0, n, length):
        part = values[start:start + length]
        part *= rng.uniform(0.5, 2.0)
        part += rng.normal(0.0, 0.7)
    return values


def coin_flips(seed: int, n: int = MILLION) -> np.ndarray:
    """0/1 values whose rate changes every 25k values (an error or share stream)."""
    rng = np.random.default_rng(seed)
    rates = np.repeat(rng.uniform(0.02, 0.6, n // 25_000 + 1), 25_000)[:n]
    return (rng.random(n) < rates).astype(np.float64)


def heavy_tails(seed: int, n: int = MILLION) -> np.ndarray:
    """Student t with 2 degrees of freedom (infinite variance), shifted every 50k."""
    rng = np.random.default_rng(seed)
    return rng.standard_t(2, n) + np.repeat(rng.normal(0.0, 0.5, n // 50_000 + 1), 50_000)[:n]


def river_run(det, values: np.ndarray, read: Callable) -> tuple[list[int], list]:
    """Feed ``det`` one value at a time: where it fired and ``read(det)`` there."""
    fired, seen = [], []
    for i, x in enumerate(values.tolist()):
        det.update(x)
        if det.drift_detected:
            fired.append(i)
            seen.append(read(det))
    return fired, seen


def adwin_view(det: drift.ADWIN) -> tuple[float, float, float]:
    return det.estimation, det.variance, det.width


@pytest.mark.parametrize(("values", "params"), [
    pytest.param(regimes(1), {}, id="normal-shifts"),
    pytest.param(coin_flips(2), {}, id="zero-one"),
    pytest.param(heavy_tails(3), {}, id="heavy-tails"),
    pytest.param(regimes(4), {"delta": 3.2e-08}, id="calibrated"),
    pytest.param(coin_flips(5), {"clock": 1, "max_buckets": 3,
                                          "min_window_length": 10, "grace_period": 50},
                 id="every-value"),
])
def test_adwin_equals_river(values: np.ndarray, params: dict) -> None:
    state = adwin.new_state(params)
    ours = adwin.update_many(state, values)
    river = drift.ADWIN(**params)
    fired, seen = river_run(river, values, adwin_view)
    assert fired and ours.index.tolist() == fired
    assert [tuple(row) for row in ours.statistics.tolist()] == seen     # bit for bit
    assert ours.statistic(0) == dict(zip(("estimation", "variance", "width"), seen[0]))
    assert ours.onset_age.tolist() == [int(width) for _, _, width in seen]
    end = adwin.statistics(state)
    assert (end["estimation"], end["variance"], end["width"]) == adwin_view(river)
    assert end["total"] == river.total


def test_adwin_onset_age_is_the_width_after_firing() -> None:
    values = np.r_[np.zeros(1000), np.full(100, 5.0)]
    state = adwin.new_state()
    river = drift.ADWIN()
    for x in values:
        fired = adwin.update_many(state, [x])
        river.update(x)
        assert bool(fired.index.size) == river.drift_detected
        if river.drift_detected:
            assert adwin.onset_age(state) == detectors.onset_age(river) == fired.onset_age[0]


@pytest.mark.parametrize("params", [
    {}, {"delta": 0.5, "threshold": 22.249, "min_instances": 30},
    {"mode": "up", "threshold": 5.0}, {"mode": "down", "threshold": 5.0, "alpha": 0.99}],
    ids=["river-defaults", "calibrated", "up", "down"])
def test_page_hinkley_equals_river(params: dict) -> None:
    values = regimes(6)
    state = page_hinkley.new_state(params)
    ours = page_hinkley.update_many(state, values)
    river = drift.PageHinkley(**params)
    fired, _ = river_run(river, values, lambda det: None)
    assert fired and ours.index.tolist() == fired
    end = page_hinkley.statistics(state)
    assert (end["n"], end["mean"], end["sum_increase"], end["sum_decrease"],
            end["min_increase"], end["max_decrease"]) == (
        river._x_mean.n, river._x_mean.get(), river._sum_increase, river._sum_decrease,
        river._min_increase, river._max_decrease)


def skewed(seed: int, n: int = MILLION, length: int = 20_000) -> np.ndarray:
    """Standardised exponential values (a long upper tail) clipped at 4, whose mean
    changes every ``length`` values."""
    rng = np.random.default_rng(seed)
    values = np.minimum(rng.exponential(size=n) - 1.0, 4.0)
    for start in range(0, n, length):
        values[start:start + length] += rng.normal(0.0, 0.5)
    return values


@pytest.mark.parametrize(("values", "params"), [
    pytest.param(regimes(7), {"k": 0.5, "h": 8.0}, id="often"),
    pytest.param(regimes(7), {"k": 0.5, "h": 22.249}, id="calibrated"),
    pytest.param(regimes(7), {"k": 0.5, "h": 20.692, "tails": 10_000}, id="tails"),
    pytest.param(skewed(13), {"k": 0.5, "h": 20.692, "tails": 10_000}, id="tails-skewed"),
    pytest.param(skewed(14) * -1.0, {"k": 0.4, "h": 5.0, "tails": 777_777}, id="tails-late"),
])
def test_cusum_equals_ours(values: np.ndarray, params: dict) -> None:
    state = cusum.new_state(params)
    ours = cusum.update_many(state, values)
    reference = detectors.build("cusum", params)
    fired, seen = river_run(reference, values,
                            lambda det: (det.upper, det.lower, det.change_age))
    assert fired and ours.index.tolist() == fired
    assert [(*row, age) for row, age in zip(ours.statistics.tolist(),
                                            ours.onset_age.tolist())] == seen
    end = cusum.statistics(state)
    assert (end["upper"], end["lower"], end["change_age"], end["h_up"], end["h_down"],
            end["learned"]) == (reference.upper, reference.lower, reference.change_age,
                                reference.h_up, reference.h_down, reference.learned)
    if params.get("tails"):
        learned = min(params["tails"], values.size)
        assert end["learned"] == learned
        if learned < params["tails"]:
            assert end["h_up"] == end["h_down"] == params["h"]


def steps(seed: int, n: int = MILLION) -> np.ndarray:
    """A smooth, strongly autocorrelated stream (AR(1) phi 0.98) whose level jumps by
    2-40 times its step noise at random moments (every ~2,000 values), with t(3)
    outliers: what Jump is for, and what it must not fire on."""
    rng = np.random.default_rng(seed)
    level = np.cumsum(np.where(rng.random(n) < 5e-4, rng.uniform(-40, 40, n), 0.0))
    noise = np.empty(n)
    prev = 0.0
    for i, e in enumerate(rng.normal(0.0, 1.0, n).tolist()):
        prev = 0.98 * prev + e
        noise[i] = prev
    spikes = np.where(rng.random(n) < 1e-3, rng.standard_t(3, n) * 10, 0.0)
    return level + noise + spikes


@pytest.mark.parametrize(("values", "params"), [
    pytest.param(steps(8), {}, id="steps"),
    pytest.param(regimes(9) * 0.01 + np.repeat(np.arange(MILLION // 500) % 7, 500),
                 {"window": 3, "after": 2, "threshold": 4.0}, id="staircase"),
    pytest.param(np.round(steps(12)), {}, id="rounded"),
])
def test_jump_equals_ours(values: np.ndarray, params: dict) -> None:
    state = jump.new_state(params)
    ours = jump.update_many(state, values)
    reference = detectors.build("jump", params)
    fired, seen = river_run(reference, values,
                            lambda det: (det.gap, det.shift, det.noise, det.age))
    assert len(fired) > 30 and ours.index.tolist() == fired
    assert [(*row, age) for row, age in zip(ours.statistics.tolist(),
                                            ours.onset_age.tolist())] == seen
    end = jump.statistics(state)
    assert (end["noise"], end["gap"], end["shift"], end["steps"]) == (
        reference.noise, reference.gap, reference.shift, reference.steps)


def ar1(seed: int, phi: float, n: int = MILLION) -> np.ndarray:
    """A stable AR(1) stream with coefficient ``phi`` and a daily-like cycle of 1440."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=n)
    out = np.empty(n)
    prev = 0.0
    for i, e in enumerate(noise.tolist()):
        prev = phi * prev + e
        out[i] = prev
    return out + 2.0 * np.sin(2 * np.pi * np.arange(n) / 1440)


@pytest.mark.parametrize(("loc", "scale", "season", "values"), [
    (None, None, {}, regimes(8)),
    (0.2, 1.3, {}, regimes(8)),
    (None, None, {"period": 1440, "phases": 24, "track": 20_000}, ar1(8, 0.7)),
], ids=["self-starting", "given-baseline", "autocorrelated-seasonal-tracking"])
def test_standardizer_equals_ours_across_restarts(loc, scale, season, values) -> None:
    """Restarts at random points keep the learning phase (robust start, Student t ->
    normal through SciPy's stdtr and ndtri, the season's first cycle) in a good part of
    the values."""
    rng = np.random.default_rng(9)
    cuts = np.unique(np.r_[0, rng.integers(0, MILLION, 200), MILLION])
    state = standardize.new_state(1000, 10, 5.0, loc, scale, **season)
    reference = Standardizer(1000, 10, 5.0, loc, scale, **season)
    z_ours, valid_ours, z_ref = [], [], []
    for a, b in itertools.pairwise(cuts):
        if a:
            standardize.restart(state)
            reference.restart()
        z, valid = standardize.transform_many(state, values[a:b])
        z_ours.append(z)
        valid_ours.append(valid)
        z_ref.extend(reference.transform(x) for x in values[a:b].tolist())
    z, valid = np.concatenate(z_ours), np.concatenate(valid_ours)
    assert valid.tolist() == [v is not None for v in z_ref]
    assert z[valid].tolist() == [v for v in z_ref if v is not None]
    assert (~valid).sum() >= 10 * (cuts.size - 2)      # each restart's robust start teaches
    assert standardize.statistics(state) == baseline(reference)


def baseline(reference: Standardizer) -> dict[str, float]:
    """The reference's state as ``standardize.statistics`` shows it."""
    return {"t": reference.t, "n": reference.n, "m": reference.m, "loc": reference.loc,
            "scale": reference.scale, "phi": reference.phi}


def stream_pair(settings: Settings):
    """A reference ``Stream`` as the monitor builds it, and the kernel's state for it."""
    d = settings.detection
    reference = Stream("m", "1", "feature", "x", settings.detectors.feature,
                       Standardizer.from_settings(d) if d.standardize else None,
                       d.cooldown, engine="river")
    std = standardize.from_reference(reference.std) if d.standardize else None
    state = stream.new_state([(s.type, s.params) for s in settings.detectors.feature], std,
                             d.cooldown)
    return reference, state


def detections_of(state: stream.StreamState, firings: stream.Firings, values: np.ndarray,
                  names: list[str]) -> list[tuple]:
    out = []
    for j in np.flatnonzero(firings.episode):
        c = int(firings.channel[j])
        stats = dict(zip(stream.statistic_names(state, c), firings.statistics[j].tolist()))
        out.append((int(firings.index[j]), names[c], int(firings.onset[j]),
                    float(values[firings.position[j]]), stats,
                    int(firings.direction[j]) if state.config[0] else None))
    return out


#: a detection's direction as the kernel gives it (none on raw values)
_WAY = {"up": 1, "down": -1}
CALIBRATED = Settings(reference={"enabled": False})
RIVER_MODE = Settings(reference={"enabled": False},
                      detectors={"feature": ["adwin", "page_hinkley", "cusum"]},
                      detection={"standardize": False, "calibrate": False, "cooldown": 0})
EVERY_KIND = Settings(reference={"enabled": False},
                      detectors={"feature": ["cusum", "page_hinkley", "adwin"]})
#: an autocorrelated daily cycle with its period set, the location tracking
SEASONAL = Settings(reference={"enabled": False},
                    detectors={"feature": ["cusum", "page_hinkley", "adwin"]},
                    detection={"period": 1440, "track": 5000})
#: a Jump between detectors of z-scores (its firings move their baseline's level)
WITH_JUMP = Settings(reference={"enabled": False},
                     detectors={"feature": ["cusum", "jump", "page_hinkley", "adwin"]})
#: River's parameters on raw values with episodes: a lasting shift fires again and again
EPISODES = Settings(reference={"enabled": False},
                    detection={"standardize": False, "calibrate": False, "cooldown": 500})


@pytest.mark.parametrize(("settings", "values"), [
    pytest.param(CALIBRATED, regimes(10) * 3.0 + 10.0, id="calibrated-defaults"),
    pytest.param(RIVER_MODE, regimes(11), id="river-mode"),
    pytest.param(EVERY_KIND, heavy_tails(17), id="calibrated-every-kind-heavy-tails"),
    pytest.param(EPISODES, regimes(18), id="raw-values-with-cooldown"),
    pytest.param(SEASONAL, ar1(19, 0.8) + regimes(19), id="seasonal-autocorrelated"),
    pytest.param(CALIBRATED, steps(20), id="calibrated-defaults-jumps"),
    pytest.param(WITH_JUMP, regimes(21) + steps(21), id="every-kind-with-jump"),
])
def test_stream_equals_monitor_stream(settings: Settings, values: np.ndarray) -> None:
    reference, state = stream_pair(settings)
    firings = stream.update_many(state, values)
    if settings is EPISODES:
        assert firings.episode.sum() < firings.index.size / 2   # most continue an episode
    out: list = []
    for x in values.tolist():
        reference.update(x, 0.0, out)
    names = [ch.name for ch in reference.channels]
    expected = [(d.index, d.detector, d.onset, d.value, d.statistic, _WAY.get(d.direction))
                for d in out]
    assert len(expected) > 30
    assert detections_of(state, firings, values, names) == expected
    assert state.counters.tolist() == [
        [ch.firings, ch.detections, ch.last_index, ch.last_direction]
        for ch in reference.channels]
    assert firings.index.size == sum(ch.firings for ch in reference.channels)
    assert int(state.seen[0]) == MILLION
    for (kind, row), ch in zip(state.channels.tolist(), reference.channels):
        det = ch.detector
        if kind == stream.KINDS.index("adwin"):
            end = adwin.statistics(state.adwin, row)
            assert (end["estimation"], end["variance"], end["width"]) == adwin_view(det)
        elif kind == stream.KINDS.index("cusum"):
            end = cusum.statistics(state.cusum, row)
            assert (end["upper"], end["lower"], end["change_age"]) == (
                det.upper, det.lower, det.change_age)
        elif kind == stream.KINDS.index("jump"):
            end = jump.statistics(state.jump, row)
            assert (end["noise"], end["steps"], end["seen"]) == (
                det.noise, det.steps, det.seen)
        else:
            end = page_hinkley.statistics(state.page_hinkley, row)
            assert (end["sum_increase"], end["sum_decrease"]) == (
                det._sum_increase, det._sum_decrease)
    if reference.std is not None:
        r = reference.std
        assert standardize.statistics(state.std) == baseline(r)


def test_stream_with_a_profile_baseline_equals_monitor_stream() -> None:
    """A reference profile gives loc and scale until the first detection restarts."""
    values = regimes(12) * 2.0 + 5.0
    reference, _ = stream_pair(EVERY_KIND)
    reference.std = Standardizer(1000, 5, 5.0, loc=5.1, scale=2.1)
    state = stream.new_state([(s.type, s.params) for s in EVERY_KIND.detectors.feature],
                             standardize.new_state(1000, 5, 5.0, 5.1, 2.1), 500)
    firings = stream.update_many(state, values)
    out: list = []
    for x in values.tolist():
        reference.update(x, 0.0, out)
    names = [ch.name for ch in reference.channels]
    assert out and detections_of(state, firings, values, names) == [
        (d.index, d.detector, d.onset, d.value, d.statistic, _WAY.get(d.direction)) for d in out]


def test_batch_boundaries_do_not_matter() -> None:
    values = regimes(13) * 3.0 + 10.0
    whole_state = stream_pair(CALIBRATED)[1]
    whole = stream.update_many(whole_state, values)
    rng = np.random.default_rng(14)
    sizes = rng.choice([0, 1, 2, 7, 500, 2000, 30_000], size=2000)
    chunked_state = stream_pair(CALIBRATED)[1]
    parts, start = [], 0
    for size in sizes:
        part = stream.update_many(chunked_state, values[start:start + size])
        parts.append(part._replace(position=part.position + start))
        start += size
    parts.append(stream.update_many(chunked_state, values[start:]))
    parts[-1] = parts[-1]._replace(position=parts[-1].position + start)
    for name, column in whole._asdict().items():
        assert np.array_equal(column, np.concatenate([getattr(p, name) for p in parts]),
                              equal_nan=True), name
    assert whole.episode.sum() > 30
    chunked = stream.to_arrays(chunked_state)
    for name, array in stream.to_arrays(whole_state).items():
        assert np.array_equal(array, chunked[name]), name


def test_state_is_plain_arrays_that_round_trip_without_pickle() -> None:
    values = regimes(15, n=300_000)
    straight = stream_pair(CALIBRATED)[1]
    expected = stream.update_many(straight, values)
    state = stream_pair(CALIBRATED)[1]
    first = stream.update_many(state, values[:100_000])
    buffer = io.BytesIO()
    np.savez(buffer, **stream.to_arrays(state))
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        restored = stream.from_arrays({name: saved[name] for name in saved.files})
    rest = stream.update_many(restored, values[100_000:])
    assert (first.index.tolist() + rest.index.tolist()) == expected.index.tolist()
    assert expected.index.size > 10
    ends = stream.to_arrays(straight)
    for name, array in stream.to_arrays(restored).items():
        assert np.array_equal(array, ends[name]), name


@pytest.mark.parametrize(("name", "change", "error"), [
    ("adwin.sums", None, "no array 'adwin.sums'"),
    ("channels", lambda a: a.astype(np.float64), "is float64, not"),
    ("counters", lambda a: a[:1], "inconsistent shapes"),
    ("channels", lambda a: a + 5, "does not hold"),
    ("adwin.sizes", lambda a: a + 99, "out of its bounds"),
])
def test_a_damaged_state_is_refused(name: str, change, error: str) -> None:
    """The kernel does not check bounds: a state read back is checked once instead."""
    arrays = stream.to_arrays(stream_pair(CALIBRATED)[1])
    if change is None:
        del arrays[name]
    else:
        arrays[name] = change(arrays[name])
    with pytest.raises(ValueError, match=error):
        stream.from_arrays(arrays)


def test_stacked_detectors_run_independently() -> None:
    values = regimes(16, n=100_000)
    one, two = adwin.new_state(), adwin.new_state({"delta": 1e-5, "max_buckets": 9})
    both = adwin.stack([one, two])
    assert adwin.update_many(both, values, row=1).index.tolist() == \
        adwin.update_many(two, values).index.tolist()
    assert adwin.update_many(both, values, row=0).index.tolist() == \
        adwin.update_many(one, values).index.tolist()


def test_bad_input_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="finite"):
        adwin.update_many(adwin.new_state(), [0.0, float("nan")])
    with pytest.raises(ValueError, match="1-D"):
        cusum.update_many(cusum.new_state(), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="delta"):
        adwin.new_state({"delta": 2.0})
    with pytest.raises(ValueError, match="mode"):
        page_hinkley.new_state({"mode": "sideways"})
    with pytest.raises(ValueError, match="no kernel for detector 'kswin'"):
        stream.new_state([("kswin", {})])
    with pytest.raises(IndexError, match="row 1"):
        cusum.update_many(cusum.new_state(), [1.0], row=1)


def drifting_events(seed: int, n: int = 60_000) -> list:
    """Predictions and labels of two versions with numeric, categorical and sometimes
    missing or absent features; the numbers, the categories, the scores and the error
    rate all change during the stream. Labels come late, some in a later batch."""
    from detector.records import Record

    rng = np.random.default_rng(seed)
    records, waiting = [], []
    for i in range(n):
        late = i > n // 2
        x = rng.normal(3.0 if late and i % 3 else 0.0, 1.0, 4)
        features: dict = {f"x{j}": round(float(x[j]), 6) for j in range(4)}
        if rng.random() < 0.1:
            features["x1"] = None
        if rng.random() < 0.1:
            del features["x2"]
        if rng.random() < 0.02:
            features["x3"] = "n/a"
        features["colour"] = str(rng.choice(["red", "green", "blue"],
                                             p=[0.2, 0.2, 0.6] if late else [0.6, 0.3, 0.1]))
        score = float(1 / (1 + np.exp(-x[0])))
        version = "2" if rng.random() < 0.3 else "1"
        event = {"model": "m", "model_version": version, "prediction_id": f"p{i}",
                 "features": features, "prediction": int(score > 0.5), "score": round(score, 6)}
        records.append(Record("prediction", json.dumps(event).encode(), float(i),
                              "predictions", 0, i))
        truth = int(rng.random() < (0.1 if late else score))     # errors rise late
        waiting.append(json.dumps({"model": "m", "prediction_id": f"p{i}",
                                   "label": truth}).encode())
        if rng.random() < 0.5:
            raw = waiting.pop(int(rng.integers(len(waiting))))
            records.append(Record("label", raw, float(i), "labels", 0, i))
    return records


def everything(pipeline) -> list:
    """What the exposition shows of a pipeline, stream by stream."""
    out = []
    for m in pipeline.monitors():
        for s in m.streams():
            out.append((m.version, s.signal, s.feature, s.category, s.seen, s.missing,
                        s.categorical, [(c.name, c.firings, c.detections, c.last_at)
                                        for c in s.channels]))
            if s.ref is not None:
                out.append([(c.name, c.value, c.detections) for c in s.ref.channels])
        out.append(sorted(m.performance.values()))
    return out


@pytest.mark.parametrize("settings", [
    pytest.param(Settings(), id="defaults"),
    pytest.param(Settings(detectors={"feature": ["adwin", "page_hinkley", "cusum"],
                                     "error": ["ddm", "adwin"]},
                          detection={"standardize": False, "calibrate": False}),
                 id="river-mode-with-a-binary-detector"),
])
def test_pipeline_on_kernels_equals_pipeline_on_river(settings: Settings) -> None:
    """The whole pipeline, every stream fed a batch at a time through the kernels, gives
    the detections (and their origins), counters, distances and metrics of the same
    pipeline running River's objects value by value."""
    from detector.pipeline import Pipeline

    records = drifting_events(21)
    rng = np.random.default_rng(22)
    kernel, river = Pipeline(settings), Pipeline(settings, engine="river")
    found = {"kernel": [], "river": []}
    start = 0
    while start < len(records):
        size = int(rng.choice([1, 3, 50, 500, 2000]))
        batch, start = records[start:start + size], start + size
        for name, p in (("kernel", kernel), ("river", river)):
            result = p.process(batch, now=float(start))
            found[name] += [(d, (o.topic, o.offset)) for d, o in
                            zip(result.detections, result.origins, strict=True)]
    assert len(found["kernel"]) > 30
    assert {d.signal for d, _ in found["kernel"]} >= {"feature", "prediction", "error"}
    assert any(d.category for d, _ in found["kernel"])
    assert found["kernel"] == found["river"]
    assert everything(kernel) == everything(river)
    engines = {name: {s.kernel is not None for m in p.monitors() for s in m.streams()}
               for name, p in (("kernel", kernel), ("river", river))}
    assert True in engines["kernel"] and engines["river"] == {False}


def unusual_events(seed: int, n: int = 20_000) -> list:
    """``drifting_events``' kind of stream where one message in four is unusual: valid in
    a less common way (integer ids and versions, milliseconds, ISO times, integers where
    floats go, a new feature, an escape), or with bad values or names (out of range, too
    long, control characters, booleans, NaN), or bad as a whole."""
    from detector.records import Record

    rng = np.random.default_rng(seed)
    long = "c" * 201

    def feature_variant(features: dict) -> str | None:
        k = int(rng.integers(9))
        if k == 0:
            features["x0"] = 1e150 * float(rng.choice([-1, 1]))
        elif k == 1:
            features["colour"] = long
        elif k == 2:
            features["x1"] = int(rng.integers(-5, 5))
        elif k == 3:
            features[f"new{int(rng.integers(3))}"] = float(rng.normal())
        elif k == 4:
            features["x2"] = True
        elif k == 5:
            return json.dumps(features).replace('"x3": ', '"x3": 1e999, "y": ', 1)
        elif k == 6:
            features["bad\u0001name"] = 1.0
        elif k == 7:
            features["colour"] = "caf\u00e9"
        else:
            features["x0"] = 10**30
        return None

    records = []
    for i in range(n):
        features: dict = {f"x{j}": round(float(v), 4) for j, v in enumerate(rng.normal(0, 1, 4))}
        features["colour"] = str(rng.choice(["red", "green", "blue"]))
        event: dict = {"model": "m", "model_version": "1", "prediction_id": f"p{i}",
                       "features": features, "prediction": int(rng.integers(2)),
                       "score": round(float(rng.random()), 4)}
        raw_features = None
        if rng.random() < 0.25:
            k = int(rng.integers(14))
            if k == 0:
                event["model_version"] = 1
            elif k == 1:
                event["prediction_id"] = i
            elif k == 2:
                event["timestamp"] = 1_700_000_000_000 + i
            elif k == 3:
                event["timestamp"] = "2026-11-24T06:00:00+00:00"
            elif k == 4:
                event["timestamp"] = 9e12      # far ahead of the clock
            elif k == 5:
                event["score"] = 1e200
            elif k == 6:
                event["label"] = 1
            elif k == 7:
                event["extra"] = {"nested": [1, 2]}
            elif k == 8:
                event["model"] = f"other{int(rng.integers(3))}"
            elif k == 9:
                event["prediction"] = 2**60
            elif k == 10:
                event["prediction_id"] = "q" * 300
            elif k == 11:
                event["model_version"] = "v\u00e9"
            elif k == 12:
                del event["prediction"]
            else:
                raw_features = feature_variant(features)
        raw = json.dumps(event)
        if raw_features is not None:
            raw = raw.replace(json.dumps(features), raw_features)
        records.append(Record("prediction", raw.encode(), float(i), "predictions", 0, i))
        if rng.random() < 0.5:
            label: dict = {"model": "m", "prediction_id": f"p{int(rng.integers(i + 1))}",
                           "label": int(rng.integers(2))}
            if rng.random() < 0.2:
                label["label"] = [None, "1", 1.5, True, "x" * 300, 2**60][int(rng.integers(6))]
            records.append(Record("label", json.dumps(label).encode(), float(i), "labels", 0,
                                  i))
    return records


def test_the_kernel_pipelines_scanner_gives_what_decode_gives() -> None:
    """The kernel engine reads ordinary messages with ``events.scan`` and checks feature
    values as it spreads them into columns; the River engine decodes every message with
    ``decode``. On a stream full of unusual, bad and borderline messages both end with the
    same counters of events, rejections (by reason) and joins, and the same monitors."""
    from detector.pipeline import Pipeline

    records = unusual_events(5)
    kernel, river = Pipeline(Settings()), Pipeline(Settings(), engine="river")
    rng = np.random.default_rng(6)
    start = 0
    while start < len(records):
        size = int(rng.choice([1, 7, 300, 2000]))
        batch, start = records[start:start + size], start + size
        for p in (kernel, river):
            p.process(batch, now=1_800_000_000.0 + start)

    def counters(p: Pipeline) -> list:
        return [p.rejected, [(s.name, s.events, s.join, s.newest_event_time, s.seq,
                              list(s.versions)) for s in p.models.values()]]

    rejected = {key for key, count in kernel.rejected.items() if count}
    assert {("feature", r) for r in ("out_of_range", "too_long", "invalid_value",
                                     "non_finite")} <= rejected
    assert {("prediction", "missing_field"), ("timestamp", "future_timestamp"),
            ("label", "too_long"), ("label", "missing_field")} <= rejected
    assert counters(kernel) == counters(river)
    assert everything(kernel) == everything(river)


def test_cusum_raises_the_threshold_of_the_long_tail_only() -> None:
    """Skewed standardised values: the side of the long tail gets a higher threshold
    (``detectors.tail_factor``), the short side keeps ``h``; so does a normal stream."""
    params = {"k": 0.5, "h": 20.0, "tails": 10_000}
    rng = np.random.default_rng(15)
    exponential = np.minimum(rng.exponential(size=10_000) - 1.0, 4.0)
    for values, up, down in ((exponential, True, False), (-exponential, False, True),
                             (rng.normal(size=10_000), False, False)):
        state = cusum.new_state(params)
        cusum.update_many(state, values)
        end = cusum.statistics(state)
        assert (end["h_up"] > 24.0, end["h_down"] > 24.0) == (up, down)
        assert min(end["h_up"], end["h_down"]) == 20.0
