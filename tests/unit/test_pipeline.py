from __future__ import annotations

import json
import math

from detector.config import Settings
from detector.kernels import standardize
from detector.pipeline import Pipeline
from detector.records import Record


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


def test_versions_are_bounded_and_junk_versions_cannot_evict_live_ones() -> None:
    p = Pipeline(Settings(max_versions=2, idle_events=10, version_idle_seconds=600))
    live = [_pred("m", f"{v}{i}", v) for i in range(3) for v in ("v1", "v2")]
    p.process(live, now=0.0)
    # new versions while both are live are refused: junk cannot evict a live version,
    # whatever timestamp it carries
    p.process([_pred("m", f"j{i}", f"junk-{i}", timestamp="2026-11-24T00:00:00Z")
               for i in range(3)], now=1.0)
    assert list(p.models["m"].versions) == ["v1", "v2"] and p.evicted_versions == 0
    assert p.rejected[("prediction", "version_cap")] == 3
    # v1 idle for more than idle_events events of the model (refused ones count): v3 enters
    p.process([_pred("m", f"b{i}", "v2") for i in range(8)] + [_pred("m", "n", "v3")], now=2.0)
    assert list(p.models["m"].versions) == ["v2", "v3"] and p.evicted_versions == 1
    # a version with a single event makes room for the next new one at once
    p.process([_pred("m", "x", "v4")], now=3.0)
    assert list(p.models["m"].versions) == ["v2", "v4"]
    # or a version idle for version_idle_seconds of the service clock
    p.process([_pred("m", "y", "v4"), _pred("m", "z", "v5")], now=700.0)
    assert list(p.models["m"].versions) == ["v4", "v5"]


def test_a_backlog_with_junk_versions_keeps_the_live_version() -> None:
    p = Pipeline(Settings())
    old = 1e9
    p.process([_pred("m", str(i), "1", timestamp=old + i) for i in range(100)]
              + [_pred("m", f"j{k}", f"junk{k}", timestamp=2e9) for k in range(3)]
              + [_pred("m", str(i), "1", timestamp=old + i) for i in range(100, 200)], now=2e9)
    assert p.models["m"].versions["1"].features["x"].seen == 200


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
    assert not any(p.models["m"].join.values())
    p.expire(5.0)
    assert {k: v for k, v in p.models["m"].join.items() if v} == {"expired": 1, "orphan": 1}


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
    # whole messages rejected are in ``dead``; the other rejections are of parts of events
    assert result.events + len(result.dead) == len(batch)
    assert p.rejected[("prediction", "internal_error")] == 0
    assert p.rejected[("label", "internal_error")] == 0


def _perf(p: Pipeline, model: str, version: str = "1") -> dict[str, float]:
    return {m: v for m, w, v in p.models[model].versions[version].performance.values()
            if w == "cumulative"}


def test_class_types_are_reconciled_or_refused() -> None:
    p = Pipeline(Settings())
    p.process([_pred("a", "1", prediction=1, label="1"), _pred("a", "2", prediction=0),
               Record("label", b'{"model": "a", "prediction_id": "2", "label": "0"}'),
               _pred("b", "1", prediction=1, label="cat")], now=0.0)
    assert _perf(p, "a")["accuracy"] == 1.0 and _perf(p, "a")["recall"] == 1.0
    assert p.rejected[("label", "label_type")] == 1 and not p.models["b"].versions["1"].performance.pairs


def test_classes_are_capped_per_version() -> None:
    p = Pipeline(Settings(max_classes=3))
    p.process([_pred("m", str(i), prediction=f"c{i % 2}", label=f"c{i}") for i in range(10)],
              now=0.0)
    assert len(p.models["m"].versions["1"].performance.classes) == 3
    assert p.models["m"].versions["1"].performance.pairs == 3     # c0, c1, c2
    assert p.rejected[("label", "class_cap")] == 7


def test_timestamps_far_ahead_of_the_clock_are_counted_and_not_believed() -> None:
    p = Pipeline(Settings(max_clock_skew_seconds=300))
    p.process([_pred("m", "1", timestamp=1000.0), _pred("m", "2", timestamp="2999-01-01T00:00:00Z"),
               _pred("m", "3", timestamp=1250.0)], now=1000.0)
    assert p.models["m"].events["prediction"] == 3
    assert p.rejected[("timestamp", "future_timestamp")] == 1
    assert p.models["m"].newest_event_time == 1250.0
    p.process([_pred("m", "5", timestamp="2999-01-01T00:00:00Z")], now=1300.0)
    assert p.models["m"].newest_event_time == 1250.0                 # not pinned to 2999


def test_extreme_finite_values_in_warm_up_do_not_poison_the_baseline() -> None:
    import random
    rng = random.Random(3)
    p = Pipeline(Settings(reference={"enabled": False}))
    records = [_pred("m", "a", features={"x": 1.7e308}), _pred("m", "b", features={"x": -1.7e308})]
    records += [_pred("m", str(i), features={"x": rng.gauss(0 if i < 3000 else 3, 1)})
                for i in range(5000)]
    found = p.process(records, now=0.0).detections
    assert p.rejected[("feature", "out_of_range")] == 2
    baseline = standardize.statistics(p.models["m"].versions["1"].features["x"].kernel.std)
    assert all(math.isfinite(v) for v in baseline.values())
    assert any(d.feature == "x" and 3000 <= d.index < 3100 for d in found)


def test_generated_series_never_collide_with_user_names() -> None:
    """A numeric feature named like a share stream, or like the prediction stream, stays a
    series of its own: every exported label set is unique."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    import threading
    from detector.metrics import Exporter, RunStatus

    p = Pipeline(Settings(reference={"warmup": 10, "window": 10, "evaluate_every": 5}))
    p.process([_pred("m", str(i), features={"country": "DE" if i % 2 else "__other__",
                                            "country=DE": float(i), "__prediction__": 1.0,
                                            "__label__": 2.0}, label=1, score=0.5)
               for i in range(40)], now=0.0)
    text = generate_latest(Exporter(p, threading.Lock(), RunStatus()).registry).decode()
    seen = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in seen, key
            seen.add(key)
    assert ("drift_feature_distance", (("feature", "country=DE"), ("method", "psi"),
            ("model", "m"), ("model_version", "1"), ("signal", "feature"))) in seen
