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


from hypothesis import given, settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                         st.sampled_from(["model", "prediction_id", "features", "prediction",
                                          "label", "score", "timestamp", "model_version", "x"]),
                         inner, max_size=6), max_leaves=15)
_message = st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode()),
                     st.builds(lambda f, p, l: json.dumps({"model": "m", "prediction_id": "1",
                                                          "features": f, "prediction": p,
                                                          "label": l}).encode(),
                               st.dictionaries(st.text(max_size=4), _json, max_size=4),
                               _json, _json))


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["prediction", "label"]), _message), max_size=30))
def test_whole_pipeline_processes_or_rejects_every_message(batch) -> None:
    """Fuzz: no exception escapes, and every message is an event or a counted rejection."""
    p = Pipeline(Settings(reference={"warmup": 10, "window": 10, "evaluate_every": 5}))
    result = p.process([Record(kind, raw) for kind, raw in batch], now=0.0)
    rejected = [r for r in result.rejections if r.kind != "feature" and r.reason != "label_type"]
    assert result.events + len(rejected) == len(batch)
    assert p.rejected[("prediction", "internal_error")] == 0
    assert p.rejected[("label", "internal_error")] == 0
