"""Performance estimates before the labels arrive (detector/estimation.py,
detector/calibrate_scores.py): the sums, the band's maths, the coverage of the band on a
covariate shift with a known true model, the gap under a concept shift, and the way in
through the profile and the pipeline."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from detector.calibrate_scores import Calibrator, LossTable, fit_calibrator, fit_loss_table
from detector.config import Settings
from detector.errors import ConfigError
from detector.estimation import (
    CELLS,
    GROUPS,
    Estimator,
    Windows,
    _interleave,
    classification_estimates,
    roc_auc_gradient,
    score_groups,
)
from detector.metrics import DriftCollector, RunStatus
from detector.performance import Performance, _roc_auc
from detector.pipeline import Pipeline
from detector.records import Record
from detector.reference import Profile


def true_probability(x: np.ndarray) -> np.ndarray:
    """The known true model: P(label = 1 | x)."""
    return 1.0 / (1.0 + np.exp(-(1.5 * x[:, 0] - x[:, 1] + 0.5 * x[:, 0] * x[:, 1])))


def model_score(x: np.ndarray) -> np.ndarray:
    """The monitored classifier: a slightly wrong, over-confident logit."""
    return 1.0 / (1.0 + np.exp(-1.7 * (1.2 * x[:, 0] - 0.9 * x[:, 1] + 0.4 * x[:, 0] * x[:, 1])))


def labelled_stream(rng: np.random.Generator, n: int, shift: bool, concept: bool = False
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, predictions, scores): the inputs' mean moves slowly (covariate shift), or
    with ``concept`` the inputs stay and the true model flips its sign for x1."""
    x = rng.normal(0.0, 1.0, (n, 2))
    if shift:
        t = np.arange(n) / n
        x[:, 0] += 1.5 * np.sin(2 * np.pi * t)
        x[:, 1] -= t
    p = true_probability(x)
    if concept:
        p = 1.0 / (1.0 + np.exp(-(1.5 * x[:, 0] + x[:, 1])))
    score = model_score(x)
    return (rng.uniform(size=n) < p).astype(int), (score > 0.5).astype(int), score


def _calibrated(rng: np.random.Generator, n: int = 20_000) -> Calibrator:
    x = rng.normal(0.0, 1.0, (n, 2))
    return fit_calibrator(model_score(x), rng.uniform(size=n) < true_probability(x), 1)


def test_windows_keep_the_sums_of_every_row_and_of_the_last_rows() -> None:
    rng = np.random.default_rng(0)
    w = Windows(groups=5, columns=2, size=37)
    groups, values = [], []
    for size in [3, 40, 1, 36, 37, 5, 100, 2] * 3:
        g, v = rng.integers(0, 5, size), rng.normal(size=(size, 2))
        w.add(g, v)
        groups.append(g)
        values.append(v)
        g_all, v_all = np.concatenate(groups), np.concatenate(values)
        for window, (gs, vs) in (("cumulative", (g_all, v_all)),
                                 ("rolling", (g_all[-37:], v_all[-37:]))):
            want = np.stack([np.bincount(gs, weights=vs[:, j], minlength=5) for j in range(2)])
            np.testing.assert_allclose(w.sums(window), want, atol=1e-9)


def test_certain_probabilities_give_the_realised_metrics_and_no_band() -> None:
    """With probabilities 0 and 1 the expected confusion matrix is the realised one: the
    estimates are River's values of the performance module, the band is empty."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    predictions = np.where(rng.uniform(size=500) < 0.8, labels, 1 - labels)
    scores = rng.uniform(size=500)
    perf = Performance("classification", 1, window=10_000)
    for y, q, s in zip(labels.tolist(), predictions.tolist(), scores.tolist()):
        perf.update(y, q, s)
    p = labels.astype(float)
    group = score_groups(predictions == 1, scores)
    sums = np.stack([np.bincount(group, weights=w, minlength=GROUPS)
                     for w in (np.ones(500), p, p * (1 - p))])
    estimated = classification_estimates(sums, accuracy=True)
    realised = {m: v for m, w, v in perf.values() if w == "cumulative"}
    for metric, (value, sigma) in estimated.items():
        assert value == pytest.approx(realised[metric], abs=1e-12), metric
        assert sigma == 0.0


def test_roc_auc_gradient_is_the_derivative_of_rivers_roc_auc() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        totals = rng.integers(1, 50, CELLS).astype(float)
        positives = totals * rng.uniform(size=CELLS)
        grad = roc_auc_gradient(totals, positives)
        for k in range(CELLS):
            h = 1e-5
            up, down = positives.copy(), positives.copy()
            up[k] += h
            down[k] -= h
            numeric = (_roc_auc(_interleave(totals - up, up))
                       - _roc_auc(_interleave(totals - down, down))) / (2 * h)
            assert grad[k] == pytest.approx(numeric, abs=1e-7)


def test_realised_side_of_the_gap_is_what_performance_computes() -> None:
    """Over the labelled predictions, the gap plus the estimate of those same predictions
    is the performance module's realised metric, for both windows and both tasks."""
    rng = np.random.default_rng(3)
    calibrator = _calibrated(rng)
    table = fit_loss_table(rng.uniform(0, 5, 2000), rng.uniform(0, 5, 2000))
    cases = []
    for task, model in (("classification", calibrator), ("regression", table)):
        # the labelled side, and an estimator that only observes the same predictions
        cases.append((Estimator(task, 1, 300, 10, model), Estimator(task, 1, 300, 10, model),
                      Performance(task, 1, window=300)))
    for _ in range(7):
        y, q, s = labelled_stream(rng, 170, shift=False)
        yr, qr = rng.normal(2, 1, 170).tolist(), rng.uniform(0, 5, 170).tolist()
        for (labelled, observed, perf), (a, b, c) in zip(
                cases, ((y.tolist(), q.tolist(), s), (yr, qr, np.full(170, np.nan)))):
            labelled.label(a, b, c)
            observed.observe(b, c)
            for pair in zip(a, b, c.tolist()):
                perf.update(pair[0], pair[1], None if math.isnan(pair[2]) else pair[2])
    for labelled, observed, perf in cases:
        realised = {(m, w): v for m, w, v in perf.values()}
        estimated = {(e.metric, e.window): e.value for e in observed.estimates()}
        gaps = labelled.gaps()
        assert len(gaps) == len(estimated) == (10 if labelled.task == "classification" else 4)
        for g in gaps:
            assert g.gap + estimated[(g.metric, g.window)] == pytest.approx(
                realised[(g.metric, g.window)], abs=1e-9)


def test_band_covers_the_realised_rolling_metrics_under_covariate_shift() -> None:
    """A known true model, labels drawn from its probabilities, inputs drifting far from
    the reference: the realised rolling accuracy and F1 (River's, on the same last 1,000
    predictions) lie within the reported band at >= 95 % of the evaluation points, on each
    of five seeds; the estimates also follow the realised values closely on average."""
    window, batch = 1000, 100
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        est = Estimator("classification", 1, window, warmup=1000, model=_calibrated(rng))
        perf = Performance("classification", 1, window)
        y, q, s = labelled_stream(rng, 30_000, shift=True)
        inside = {"accuracy": [], "f1": []}
        error = {"accuracy": [], "f1": []}
        for start in range(0, y.size, batch):
            part = slice(start, start + batch)
            est.observe(q[part].tolist(), s[part])
            for a, b, c in zip(y[part].tolist(), q[part].tolist(), s[part].tolist()):
                perf.update(a, b, c)
            if start + batch < window:
                continue
            realised = {m: v for m, w, v in perf.values() if w == "rolling"}
            for e in est.estimates():
                if e.window == "rolling" and e.metric in inside:
                    inside[e.metric].append(e.lower <= realised[e.metric] <= e.upper)
                    error[e.metric].append(abs(realised[e.metric] - e.value))
        for metric, hits in inside.items():
            assert np.mean(hits) >= 0.95, (seed, metric, np.mean(hits))
            assert np.mean(error[metric]) < 0.02, (seed, metric, np.mean(error[metric]))


def test_a_concept_shift_moves_the_gap_beyond_its_limit() -> None:
    """Same inputs, a changed relation between inputs and labels: the estimate cannot see
    it, so the rolling gap leaves its band (while it stays inside before the change)."""
    rng = np.random.default_rng(7)
    est = Estimator("classification", 1, window=1000, warmup=1000, model=_calibrated(rng))
    for concept in (False, True):
        y, q, s = labelled_stream(rng, 3000, shift=False, concept=concept)
        est.observe(q.tolist(), s)
        est.label(y.tolist(), q.tolist(), s)
        rolling = {g.metric: g for g in est.gaps() if g.window == "rolling"}
        outside = {m for m, g in rolling.items() if abs(g.gap) > g.limit}
        if concept:
            assert {"accuracy", "roc_auc"} <= outside and rolling["accuracy"].gap < 0
        else:
            assert outside == set()


def test_warm_up_pairs_fit_the_calibrator_and_the_loss_table() -> None:
    rng = np.random.default_rng(8)
    est = Estimator(None, 1, window=100, warmup=500)
    y, q, s = labelled_stream(rng, 400, shift=False)
    est.observe(q.tolist(), s)
    est.label(y.tolist(), q.tolist(), s)
    assert est.model is None and est.estimates() == []
    est.label(y[:100].tolist(), q[:100].tolist(), s[:100])
    assert isinstance(est.model, Calibrator) and est.model.pairs == 500
    est.observe(q.tolist(), s)
    assert {e.metric for e in est.estimates()} == {"accuracy", "precision", "recall", "f1",
                                                    "roc_auc"}
    reg = Estimator(None, 1, window=100, warmup=200)
    pred = rng.uniform(0, 10, 200)
    reg.label((pred + rng.normal(0, 1, 200)).tolist(), pred.tolist(), np.full(200, np.nan))
    assert isinstance(reg.model, LossTable) and reg.task == "regression"
    reg.observe(pred.tolist(), np.full(200, np.nan))
    mae = next(e for e in reg.estimates() if e.metric == "mae" and e.window == "rolling")
    assert mae.lower < math.sqrt(2 / math.pi) < mae.upper       # E|N(0, 1)|


def test_more_than_two_classes_leave_accuracy_out() -> None:
    """A score is the probability of the positive class only: with three classes the
    one-vs-rest metrics of the positive class are estimated, accuracy is not."""
    rng = np.random.default_rng(9)
    est = Estimator("classification", "a", window=100, warmup=10,
                    model=fit_calibrator(rng.uniform(size=500), rng.uniform(size=500) < 0.5, "a"))
    predictions = rng.choice(["a", "b", "c"], 300).tolist()
    est.observe(predictions, rng.uniform(size=300))
    assert {e.metric for e in est.estimates()} == {"precision", "recall", "f1", "roc_auc"}


def _records(rng: np.random.Generator, start: int, n: int, concept: bool = False
             ) -> list[Record]:
    y, q, s = labelled_stream(rng, n, shift=False, concept=concept)
    return [Record("prediction", json.dumps({
        "model": "fraud", "model_version": "1", "prediction_id": str(start + i),
        "features": {"amount": float(s[i])}, "prediction": int(q[i]), "score": float(s[i]),
        "label": int(y[i])}).encode()) for i in range(n)]


def test_profile_calibrator_estimates_from_the_first_event(tmp_path: Path) -> None:
    """``drift-detector profile --label-column --score-column`` stores the calibrator; a
    pipeline with that profile exports estimates after one batch, no warm-up; a profile
    for another positive label is refused at start-up."""
    rng = np.random.default_rng(10)
    x = rng.normal(0.0, 1.0, (5000, 2))
    labels = (rng.uniform(size=5000) < true_probability(x)).astype(int)
    data = tmp_path / "train.csv"
    data.write_text("amount,label,score\n" + "".join(
        f"{a},{b},{c}\n" for a, b, c in zip(x[:, 0], labels, model_score(x))))
    out = tmp_path / "profile.json"
    done = subprocess.run([sys.executable, "-m", "detector", "profile", str(data), "--model",
                           "fraud", "--label-column", "label", "--score-column", "score", "-o",
                           str(out)], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert "score calibrator (isotonic) fitted on 5,000 labelled rows" in done.stdout
    profile = Profile.from_json(json.loads(out.read_text()))
    assert isinstance(profile.estimation, Calibrator) and profile.estimation.positive_label == 1

    p = Pipeline(Settings(models={"fraud": {"profile": str(out)}}, rolling_window=200))
    p.process(_records(rng, 0, 300), now=0.0)
    registry_values = {
        (name, labels.get("metric"), labels.get("window")): value
        for name, labels, value in _parse(DriftCollector(p, threading.Lock(), RunStatus()))}
    est = registry_values[("drift_model_quality_estimated_ratio", "accuracy", "rolling")]
    low = registry_values[("drift_model_quality_estimated_lower_ratio", "accuracy", "rolling")]
    high = registry_values[("drift_model_quality_estimated_upper_ratio", "accuracy", "rolling")]
    realised = registry_values[("drift_model_quality_ratio", "accuracy", "rolling")]
    assert low < est < high and low <= realised <= high
    assert ("drift_model_quality_estimate_gap_ratio", "f1", "rolling") in registry_values

    with pytest.raises(ConfigError, match="positive_label"):
        Pipeline(Settings(models={"fraud": {"profile": str(out), "positive_label": 0}}))


def test_disabled_estimation_exports_nothing() -> None:
    rng = np.random.default_rng(11)
    p = Pipeline(Settings(estimation={"enabled": False, "warmup": 10}))
    p.process(_records(rng, 0, 200), now=0.0)
    p.process(_records(rng, 200, 200), now=0.0)
    assert not [n for n, _, _ in _parse(DriftCollector(p, threading.Lock(), RunStatus()))
                if "estimate" in n]


def _parse(collector: DriftCollector) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families
    return [(s.name, s.labels, s.value)
            for family in text_string_to_metric_families(collector.render())
            for s in family.samples]


def test_a_warm_up_through_the_pipeline_infers_the_task_as_the_realised_metrics_do() -> None:
    """Integer classes without scores are a classifier that cannot be estimated (no
    calibrator is fitted); real-valued predictions are a regressor with a loss table."""
    rng = np.random.default_rng(12)
    p = Pipeline(Settings(estimation={"warmup": 50}))
    records = [Record("prediction", json.dumps({
        "model": model, "prediction_id": str(i), "features": {"x": 1.0},
        "prediction": value, "label": label}).encode())
        for i in range(100)
        for model, value, label in (("classes", int(i % 2), int(rng.integers(0, 2))),
                                    ("real", float(rng.normal()), float(rng.normal())))]
    p.process(records, now=0.0)
    classes = p.models["classes"].versions["unversioned"]
    real = p.models["real"].versions["unversioned"]
    assert classes.performance.task == classes.estimation.task == "classification"
    assert classes.estimation.model is None
    assert real.estimation.task == "regression" and isinstance(real.estimation.model, LossTable)


def test_a_class_among_a_regressors_predictions_is_left_out() -> None:
    """The realised metrics refuse such a pair (label_type); the estimate leaves the
    prediction out, and nothing else of the batch."""
    reg = Estimator("regression", 1, window=10, warmup=10,
                    model=fit_loss_table(np.arange(100.0), np.arange(100.0) + 1.0))
    reg.outputs += [(2.5, None), ("cat", None), (7, None)]
    reg.flush()
    assert reg.predicted.cumulative[0].sum() == 2


def test_state_round_trips_through_json_and_goes_on_the_same() -> None:
    """``to_dict`` is plain JSON (no pickle); the restored estimator continues exactly as
    the original, with the rolling window partly filled or wrapped."""
    rng = np.random.default_rng(13)
    calibrator = _calibrated(rng)
    for sizes in ((300,), (700, 900), (2500,)):
        est = Estimator("classification", 1, window=1000, warmup=10, model=calibrator)
        reg = Estimator(None, 1, window=1000, warmup=200)
        for n in sizes:
            y, q, s = labelled_stream(rng, n, shift=True)
            est.observe(q.tolist(), s)
            est.label(y.tolist(), q.tolist(), s)
            pred = rng.uniform(0, 10, n)
            reg.label((pred + rng.normal(0, 1, n)).tolist(), pred.tolist(), np.full(n, np.nan))
            reg.observe(pred.tolist(), np.full(n, np.nan))
        for original in (est, reg):
            copy = Estimator.from_dict(json.loads(json.dumps(original.to_dict())))
            y, q, s = labelled_stream(rng, 400, shift=True)
            for e in (original, copy):
                if e.task == "classification":
                    e.observe(q.tolist(), s)
                    e.label(y.tolist(), q.tolist(), s)
                else:
                    e.observe((s * 10).tolist(), np.full(400, np.nan))
                    e.label((s * 10 + 1).tolist(), (s * 10).tolist(), np.full(400, np.nan))
            for got, want in ((copy.estimates(), original.estimates()),
                              (copy.gaps(), original.gaps())):
                assert [row[:2] for row in got] == [row[:2] for row in want] and want
                assert np.allclose([row[2:] for row in got], [row[2:] for row in want],
                                   rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="missing 'model'"):
        Estimator.from_dict({"task": None, "positive_label": 1, "window": 3, "warmup": 2})
