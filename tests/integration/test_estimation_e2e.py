"""End to end: performance estimated before the labels arrive, through the real programs
(broker → drift-detector → Prometheus with the shipped rules → Alertmanager → webhook).

A scored classifier whose labels are drawn from a known true model: its score
calibrator is fitted on the first labelled pairs of the version, then the estimates
follow the realised metrics within their band. Then the concept changes (same inputs,
another relation between inputs and labels): the scores cannot see it, the realised
metrics do, and ``ModelEstimateDisagrees`` reaches the webhook. The dashboard's panels
of the estimates return data on the live Prometheus.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from detector.alerting import LocalAlerting
from tests.conftest import wait_for
from tests.integration.test_alerting_e2e import stack  # noqa: F401 (a fixture)
from tests.unit.test_estimation import labelled_stream

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture
def stack_settings() -> dict:
    return {"rolling_window": 500, "estimation": {"warmup": 1000},
            "models": {"fraud": {"task": "classification", "thresholds": {"accuracy": 0.6}}}}


def _produce(topics, rng: np.random.Generator, start: int, n: int, concept: bool) -> None:
    labels, predictions, scores = labelled_stream(rng, n, shift=False, concept=concept)
    topics.produce(topics.predictions, [
        {"model": "fraud", "model_version": "1", "prediction_id": f"p{start + i}",
         "features": {"tenure": float(scores[i])}, "prediction": int(predictions[i]),
         "score": float(scores[i]), "timestamp": time.time()} for i in range(n)])
    topics.produce(topics.labels, [{"model": "fraud", "prediction_id": f"p{start + i}",
                                    "label": int(labels[i])} for i in range(n)])


def _rolling(prom: LocalAlerting, name: str, metric: str) -> float | None:
    result = prom.query(f'{name}{{metric="{metric}", window="rolling"}}')
    return float(result[0]["value"][1]) if result else None


def test_concept_shift_fires_the_disagreement_alert(topics, stack) -> None:  # noqa: F811
    webhook, prom = stack["webhook"], stack["prometheus"]
    rng = np.random.default_rng(16)

    # the first 1,000 pairs fit the calibrator, the next 2,000 predictions are estimated:
    # the gap of the last rolling window is within its band
    _produce(topics, rng, 0, 1000, concept=False)
    stack["detector"].wait_events("label", "fraud", 1000)
    _produce(topics, rng, 1000, 2000, concept=False)
    stack["detector"].wait_events("label", "fraud", 3000)
    gap = "drift_model_quality_estimate_gap_ratio"
    wait_for(lambda: prom.query(f'{gap}{{window="cumulative"}} > -1')
             and _rolling(prom, "drift_model_quality_estimated_ratio", "accuracy") is not None,
             30, "Prometheus to scrape the estimates")
    wait_for(lambda: prom.query('drift_events_total{kind="label"} >= 3000'),
             30, "Prometheus to scrape the whole stable phase")
    stable_gap = _rolling(prom, gap, "accuracy")
    limit = _rolling(prom, "drift_model_quality_estimate_gap_limit_ratio", "accuracy")
    estimated = _rolling(prom, "drift_model_quality_estimated_ratio", "accuracy")
    realised = _rolling(prom, "drift_model_quality_ratio", "accuracy")
    assert abs(stable_gap) <= limit, (stable_gap, limit)
    assert _rolling(prom, "drift_model_quality_estimated_lower_ratio", "accuracy") <= realised \
        <= _rolling(prom, "drift_model_quality_estimated_upper_ratio", "accuracy")

    # the concept changes: labels follow another true model, the inputs do not move
    concept_started = time.time()
    _produce(topics, rng, 3000, 2000, concept=True)
    t_alert, alert = wait_for(
        lambda: webhook.first("ModelEstimateDisagrees", model="fraud", metric="accuracy"), 60,
        "the disagreement alert at the webhook", every=0.1)
    shifted_gap = _rolling(prom, gap, "accuracy")
    print(f"\nstable: estimated accuracy {estimated:.3f}, realised {realised:.3f}, gap "
          f"{stable_gap:+.3f} within ±{limit:.3f}; after the concept change: gap "
          f"{shifted_gap:+.3f}; ModelEstimateDisagrees at the webhook "
          f"{t_alert - concept_started:.2f} s after the first changed labels")
    assert alert["labels"]["severity"] == "warning" and alert["labels"]["window"] == "rolling"
    assert "disagrees" in alert["annotations"]["summary"]
    assert shifted_gap < -limit

    # the dashboard's panels of the estimates parse and return data (the regression
    # ones parse: this model is a classifier)
    dashboard = json.loads((DEPLOY / "grafana" / "drift-detector.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            if "_estimate" not in expr:
                continue
            # raises, saying why, if it does not parse
            answer = prom.query(expr.replace("$model", "fraud").replace("$namespace", ".*")
                                .replace("$job", ".*"))
            if "drift_model_error" not in expr:
                assert answer, f"{panel['title']!r} has no data: {expr}"
