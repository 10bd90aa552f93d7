"""Data quality of features against the reference, through the real pipeline and the
collector: every reason counted where it happens and nowhere else, whatever the batches."""

from __future__ import annotations

import csv
import json
import random
import threading
from pathlib import Path

import pytest

from detector.config import Settings
from detector.data_quality import Expectation, judge, learn
from detector.metrics import DriftCollector, RunStatus
from detector.pipeline import Pipeline
from detector.profile import build_profile
from detector.records import Record


def _prediction(i: int, features: dict, version: str = "1") -> Record:
    return Record("prediction", json.dumps({
        "model": "m", "model_version": version, "prediction_id": str(i),
        "features": features, "prediction": 0}).encode())


def _issues(p: Pipeline, version: str = "1") -> dict[str, dict[str, int]]:
    quality = p.models["m"].versions[version].quality
    assert quality is not None
    return {name: dict(f.issues) for name, f in quality.features.items()}


def _stable(rng: random.Random, i: int) -> dict:
    """amount in [0, 100], country one of three, email null in 10 % of events."""
    return {"amount": rng.uniform(0.0, 100.0), "country": rng.choice(["DE", "FR", "IT"]),
            "email": None if i % 10 == 0 else rng.choice(["a", "b"])}


def _stream(n_warm: int = 1000) -> list[Record]:
    """A warm-up of stable events, then one of each problem, then 100 stable events
    without ``email`` (it stopped arriving)."""
    rng = random.Random(4)
    records = [_prediction(i, _stable(rng, i)) for i in range(n_warm)]
    odd = [
        {"amount": 250.0, "country": "DE", "email": "a"},          # out of range
        {"amount": -1.0, "country": "DE", "email": "a"},           # out of range
        {"amount": "12.5", "country": "DE", "email": "a"},         # type change (numeric)
        {"amount": 10.0, "country": 49.0, "email": "a"},           # type change (categorical)
        {"amount": 10.0, "country": "ES", "email": "a"},           # unseen category
        {"amount": 10.0, "email": "a"},                            # country absent
        {"amount": None, "country": "DE", "email": "a"},           # amount null
        {"amount": 10.0, "country": "DE", "email": "a", "promo": "x"},   # unannounced
    ]
    records += [_prediction(n_warm + k, f) for k, f in enumerate(odd)]
    start = n_warm + len(odd)
    records += [_prediction(start + k, {"amount": 5.0, "country": "IT"}) for k in range(100)]
    return records


WANT = {"amount": {"missing": 1, "out_of_range": 2, "type_mismatch": 1},
        "country": {"missing": 1, "unseen_category": 1, "type_mismatch": 1},
        "email": {"missing": 100, "unseen_category": 0, "type_mismatch": 0},
        "promo": {"unannounced": 1}}


@pytest.mark.parametrize("batch", [1, 7, 333, 2000])
def test_every_reason_is_counted_once_whatever_the_batches(batch: int) -> None:
    """After a warm-up reference: each odd event counts under its reason only, and the
    counts do not depend on how the stream was cut into batches (the warm-up may end in
    the middle of one)."""
    p = Pipeline(Settings())
    records = _stream()
    for i in range(0, len(records), batch):
        p.process(records[i:i + batch], now=0.0)
    assert _issues(p) == WANT
    quality = p.models["m"].versions["1"].quality
    assert quality.features["email"].expect.reference_missing == pytest.approx(0.1)
    assert quality.features["amount"].expect.reference_missing == 0.0


def test_nothing_is_judged_during_the_warm_up_but_its_type_changes() -> None:
    """Warm-up values are the reference: only values of the other kind in it count."""
    p = Pipeline(Settings(quality={"warmup": 100}))
    rng = random.Random(1)
    records = [_prediction(i, {"x": rng.gauss(0, 1) if i % 25 else "junk"}) for i in range(99)]
    p.process(records, now=0.0)
    assert p.models["m"].versions["1"].quality.features == {}
    p.process([_prediction(99, {"x": 0.0})], now=0.0)
    assert _issues(p) == {"x": {"missing": 0, "out_of_range": 0, "type_mismatch": 4}}


def test_a_profile_is_the_reference_from_the_first_event(tmp_path: Path) -> None:
    """With a profile: its range, categories and missing share judge the first event;
    a feature it does not have is unannounced, one it has that never comes is missing."""
    train = tmp_path / "train.csv"
    rng = random.Random(2)
    with train.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["amount", "country", "age"])
        for i in range(500):
            w.writerow([f"{rng.uniform(0, 100):.3f}", rng.choice(["DE", "FR"]),
                        "" if i % 4 == 0 else str(rng.randint(18, 90))])
    profile, _ = build_profile(train, "m", show_progress=False)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile.to_json()))
    p = Pipeline(Settings(models={"m": {"profile": str(path)}}))
    p.process([_prediction(0, {"amount": 150.0, "country": "XX", "new": 1.0}),
               _prediction(1, {"amount": "n/a", "country": "DE"})], now=0.0)
    assert _issues(p) == {
        "amount": {"missing": 0, "out_of_range": 1, "type_mismatch": 1},
        "country": {"missing": 0, "unseen_category": 1, "type_mismatch": 0},
        "age": {"missing": 2, "out_of_range": 0, "type_mismatch": 0},
        "new": {"unannounced": 1}}
    quality = p.models["m"].versions["1"].quality
    assert quality.features["age"].expect.reference_missing == pytest.approx(0.25)
    # the profile-only feature is exported too, its counters at 0 the first time
    collector = DriftCollector(p, threading.Lock(), RunStatus())
    assert _quality_series(collector)[("drift_feature_issues_total", ("age", "missing"))] == 0
    series = _quality_series(collector)
    assert series[("drift_feature_issues_total", ("age", "missing"))] == 2.0
    assert series[("drift_feature_reference_missing_ratio", ("age",))] == pytest.approx(0.25)
    assert ("drift_feature_reference_missing_ratio", ("new",)) not in series
    assert series[("drift_predictions_total", ())] == 2.0


def _quality_series(collector: DriftCollector) -> dict[tuple[str, tuple[str, ...]], float]:
    """One scrape's quality series, by family and (feature, reason)."""
    out = {}
    for line in collector.render().splitlines():
        if line.startswith(("drift_feature_issues_total", "drift_feature_reference_missing",
                            "drift_predictions_total")):
            name, rest = line.split("{", 1)
            labels = dict(part.split("=", 1) for part in rest.split("}")[0].split(","))
            key = tuple(labels[k].strip('"') for k in ("feature", "reason") if k in labels)
            out[(name, key)] = float(line.rsplit(" ", 1)[1])
    return out


def test_declared_features_only_and_no_quality_when_disabled() -> None:
    """Declared features are the only ones monitored: others are neither judged nor
    unannounced. ``quality.enabled: false`` exports no quality series at all."""
    p = Pipeline(Settings(models={"m": {"features": ["a"]}}, quality={"warmup": 10}))
    p.process([_prediction(i, {"a": float(i), "b": "x"}) for i in range(12)], now=0.0)
    assert set(_issues(p)) == {"a"}
    off = Pipeline(Settings(quality={"enabled": False}))
    off.process([_prediction(i, {"a": float(i)}) for i in range(12)], now=0.0)
    assert off.models["m"].versions["1"].quality is None
    text = DriftCollector(off, threading.Lock(), RunStatus()).render()
    assert "\ndrift_feature_issues_total{" not in text
    assert "\ndrift_feature_reference_missing_ratio{" not in text


def test_a_feature_only_null_in_the_warm_up_is_known_but_not_judged() -> None:
    p = Pipeline(Settings(quality={"warmup": 10}))
    p.process([_prediction(i, {"x": float(i), "later": None}) for i in range(10)], now=0.0)
    p.process([_prediction(10, {"x": 1.0, "later": "a"})], now=0.0)
    assert _issues(p) == {"x": {"missing": 0, "out_of_range": 0, "type_mismatch": 0}}


def test_each_version_has_its_own_reference() -> None:
    """A new model version takes its own warm-up: version 2's range is its own."""
    p = Pipeline(Settings(quality={"warmup": 10}))
    p.process([_prediction(i, {"x": float(i)}) for i in range(10)], now=0.0)
    p.process([_prediction(100 + i, {"x": 100.0 + i}, "2") for i in range(10)], now=0.0)
    p.process([_prediction(200, {"x": 105.0}, "2"), _prediction(201, {"x": 105.0})], now=0.0)
    assert _issues(p, "2")["x"]["out_of_range"] == 0
    assert _issues(p, "1")["x"]["out_of_range"] == 1


def test_judge_and_learn_edges() -> None:
    assert judge([], Expectation("numeric", 0.0, 1.0)) == {"out_of_range": 0, "type_mismatch": 0}
    assert judge([float("-0.0"), 1.0], Expectation("numeric", 0.0, 1.0))["out_of_range"] == 0
    # a numeric-looking string is a string: a producer that quotes numbers changed types
    assert judge(["1.0"], Expectation("numeric", 0.0, 2.0))["type_mismatch"] == 1
    assert learn(["a", 1.0], rows=2, max_categories=5).kind == "numeric"   # a tie is numeric
    too_many = learn([str(i) for i in range(6)], rows=6, max_categories=5)
    assert too_many.reasons() == ("missing", "type_mismatch")


def test_the_counts_survive_a_checkpoint() -> None:
    """A restored pipeline goes on counting from where the checkpoint was (warm-up
    included)."""
    from detector import state

    records = _stream()
    p = Pipeline(Settings())
    p.process(records[:700], now=0.0)
    print_ = state.fingerprint(p.settings.state_shape())
    restored = Pipeline(Settings())
    restored.restore(state.decode(state.encode(p.snapshot(), {}, print_), print_).state)
    restored.process(records[700:], now=0.0)
    assert _issues(restored) == WANT
