from __future__ import annotations

import json

from detector.config import Settings
from detector.pipeline import Pipeline, Record


def _pred(model: str, pid: str, version: str = "1", **extra) -> Record:
    return Record("prediction", json.dumps({"model": model, "model_version": version,
                                            "prediction_id": pid, "features": {"x": 1.0},
                                            "prediction": 1, **extra}).encode())


def test_discovered_models_are_capped_and_declared_models_exclusive() -> None:
    p = Pipeline(Settings(max_models=2))
    p.process([_pred(m, "1") for m in ("a", "b", "c", "c")], now=0.0)
    assert sorted(p.models) == ["a", "b"] and p.rejected[("prediction", "model_cap")] == 2
    q = Pipeline(Settings(models={"a": {}}))
    q.process([_pred("a", "1"), _pred("zzz", "2")], now=0.0)
    assert q.rejected[("prediction", "unknown_model")] == 1
    assert "a" in Pipeline(Settings(models={"a": {}})).models   # declared: series from the start


def test_versions_are_bounded_least_recently_seen_first() -> None:
    p = Pipeline(Settings(max_versions=2))
    p.process([_pred("m", "1", "v1"), _pred("m", "2", "v2"), _pred("m", "3", "v1"),
               _pred("m", "4", "v3")], now=0.0)
    assert list(p.models["m"].versions) == ["v1", "v3"] and p.evicted_versions == 1


def test_inline_labels_and_regression_label_type() -> None:
    p = Pipeline(Settings(models={"r": {"task": "regression"}, "c": {}}))
    p.process([_pred("c", "1", label=1), _pred("r", "1", prediction=2.5),
               Record("label", b'{"model": "r", "prediction_id": "1", "label": "high"}')], now=0.0)
    assert p.models["c"].join["matched"] == 1
    assert dict((m, v) for m, w, v in p.models["c"].versions["1"].performance.values()
                if w == "cumulative")["accuracy"] == 1.0
    assert p.rejected[("label", "label_type")] == 1


def test_idle_expiry_counts_per_model() -> None:
    p = Pipeline(Settings(join={"ttl_seconds": 5}))
    p.process([_pred("m", "1"), Record("label", b'{"model": "m", "prediction_id": "q", '
                                                 b'"label": 1}')], now=0.0)
    p.expire(4.0)
    assert p.models["m"].join == {"matched": 0, "expired": 0, "orphan": 0}
    p.expire(5.0)
    assert p.models["m"].join == {"matched": 0, "expired": 1, "orphan": 1}
