"""Reference distances equal independent numpy/scipy computations on the same windows;
known shifts are detected by their method; long stable streams raise no alarm."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp

from detector.config import Settings
from detector.pipeline import Pipeline, Record
from detector.reference import CategoricalReference, NumericReference, Profile

QUIET = {"feature": [], "prediction": [], "error": [], "categorical": [], "label": []}
CATS = np.array(["DE", "FR", "US", "GB", "NL", "ES", "IT"])
MIX = np.array([0.35, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05])


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    p, q = np.clip(p, 1e-4, None), np.clip(q, 1e-4, None)
    return float(((q - p) * np.log(q / p)).sum())


def _records(rows: list[dict], labels: list | None = None) -> list[Record]:
    out = []
    for i, f in enumerate(rows):
        event = {"model": "m", "model_version": "1", "prediction_id": str(i), "features": f,
                 "prediction": 1}
        if labels is not None:
            event["label"] = labels[i]
        out.append(Record("prediction", json.dumps(event).encode()))
    return out


def _feed(pipeline: Pipeline, records: list[Record], batch: int) -> list:
    found = []
    for k in range(0, len(records), batch):
        found += pipeline.process(records[k:k + batch], now=0.0).detections
    return found


@pytest.mark.parametrize("batch", [1, 37, 1000])
def test_distances_equal_scipy_on_the_last_window_whatever_the_batching(batch: int) -> None:
    rng = np.random.default_rng(batch)
    train_x, train_c = rng.normal(0, 1, 20_000), rng.choice(CATS, 20_000, p=MIX)
    profile = Profile("m", None, {
        "x": NumericReference.from_values(train_x, bins=10),
        "c": CategoricalReference.from_counts(dict(zip(*np.unique(train_c, return_counts=True)))
                                              , top_k=5)})
    settings = Settings(detectors=QUIET, reference={"window": 500, "evaluate_every": 50})
    p = Pipeline(settings)
    p.profiles[("m", None)] = profile
    n = 2_050                                    # a multiple of evaluate_every
    x = rng.normal(0.3, 1.2, n)
    c = rng.choice(CATS, n, p=MIX[::-1] / MIX.sum())
    _feed(p, _records([{"x": float(a), "c": str(b)} for a, b in zip(x, c)]), batch)
    mon = p.models["m"].versions["1"]
    got = {(r.feature, ch.name): ch.value for r in mon.references() for ch in r.channels}

    ref_x = profile.features["x"]
    win = x[-500:]
    p_ref = ref_x.counts / ref_x.counts.sum()
    q = np.bincount(np.searchsorted(ref_x.edges, win, side="right"),
                    minlength=ref_x.counts.size) / win.size
    assert got[("x", "psi")] == pytest.approx(_psi(p_ref, q), abs=1e-9)
    assert got[("x", "js")] == pytest.approx(jensenshannon(p_ref, q, base=2), abs=1e-9)
    assert got[("x", "ks")] == pytest.approx(ks_2samp(win, ref_x.sample).statistic, abs=1e-9)

    ref_c = profile.features["c"]
    top = list(ref_c.categories)
    codes = np.array([top.index(v) if v in top else len(top) for v in c[-500:]])
    wc = np.bincount(codes, minlength=len(top) + 1)
    pc = ref_c.counts / ref_c.counts.sum()
    assert got[("c", "psi")] == pytest.approx(_psi(pc, wc / wc.sum()), abs=1e-9)
    assert got[("c", "js")] == pytest.approx(jensenshannon(pc, wc / wc.sum(), base=2), abs=1e-9)
    table = np.vstack([ref_c.counts, wc])
    table = table[:, table.sum(axis=0) > 0]
    expected = chi2_contingency(table, correction=False).pvalue
    assert got[("c", "chi2")] == pytest.approx(expected, rel=1e-9, abs=1e-300)


def _stream(seed: int, n: int, change_at: int | None) -> tuple[list[dict], list[int]]:
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for i in range(n):
        late = change_at is not None and i >= change_at
        rows.append({"shifted": float(rng.normal(1.0 if late else 0.0, 1.0)),
                     "stable_norm": float(rng.normal(5, 2)),
                     "stable_lognorm": float(rng.lognormal(0, 1)),
                     "stable_int": float(rng.integers(0, 6)),
                     "mix": str(rng.choice(CATS, p=MIX[::-1] / MIX.sum() if late else MIX)),
                     "stable_cat": str(rng.choice(CATS, p=MIX))})
        labels.append(int(rng.random() < (0.5 if late else 0.2)))
    return rows, labels


@pytest.mark.parametrize("seed", [11, 12])
def test_no_false_alarm_over_50000_stable_events_with_the_defaults(seed: int) -> None:
    rows, labels = _stream(seed, 50_000, change_at=None)
    p = Pipeline(Settings(detectors=QUIET))
    found = _feed(p, _records(rows, labels), 500)
    assert found == []
    mon = p.models["m"].versions["1"]
    assert all(ch.value is not None for r in mon.references() for ch in r.channels)


def test_each_known_shift_is_detected_by_its_method_and_nothing_else_fires() -> None:
    rows, labels = _stream(21, 12_000, change_at=6_000)
    p = Pipeline(Settings(detectors=QUIET))
    found = _feed(p, _records(rows, labels), 500)
    fired = {(d.signal, d.feature, d.detector) for d in found}
    assert {("feature", "shifted", m) for m in ("psi", "js", "ks")} <= fired
    assert {("feature", "mix", m) for m in ("psi", "chi2")} <= fired
    assert ("label", "", "psi") in fired               # 0/1 labels: a numeric reference
    assert {f for s, f, _ in fired if s == "feature"} == {"shifted", "mix"}
    assert all(d.index >= 6_000 for d in found)
    first = min(d.index for d in found if d.feature == "shifted")
    assert first < 6_000 + 1_000                 # within one window of the change


def test_online_share_streams_catch_a_category_mix_change() -> None:
    rows, _ = _stream(5, 12_000, change_at=6_000)
    p = Pipeline(Settings(detectors={**QUIET, "categorical": ["adwin"]}))
    found = _feed(p, _records(rows), 250)
    shares = {(d.feature, d.category) for d in found if d.detector == "adwin"}
    assert shares and all(f == "mix" and c for f, c in shares), shares
    assert ("mix", "DE") in shares                # DE falls from 35 % to 5 %
    mon = p.models["m"].versions["1"]
    names = {s.category for s in mon.streams() if s.feature == "stable_cat" and s.category}
    assert len(names) == Settings().reference.share_streams + 1   # top 5 + __other__
    assert "__other__" in names


def test_a_profile_catches_drift_that_a_warmup_reference_learns_as_normal() -> None:
    rng = np.random.default_rng(3)
    profile = Profile("m", None, {"x": NumericReference.from_values(rng.normal(0, 1, 10_000),
                                                                    bins=10)})
    served = [{"x": float(v)} for v in rng.normal(1.5, 1, 4_000)]   # shifted from the start
    warm = Pipeline(Settings(detectors=QUIET))
    assert _feed(warm, _records(served), 500) == []
    with_profile = Pipeline(Settings(detectors=QUIET))
    with_profile.profiles[("m", None)] = profile
    found = _feed(with_profile, _records(served), 500)
    assert {d.detector for d in found} == {"psi", "js", "ks"}
    assert min(d.index for d in found) == 999     # the first full window
