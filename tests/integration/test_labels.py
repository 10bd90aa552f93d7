"""Predictions, then delayed labels in shuffled order: exported model metrics equal
River's on the joined pairs; unlabelled predictions expire and unknown labels are orphans."""

from __future__ import annotations

import numpy as np
from river import metrics, utils

from tests.conftest import sample, wait_for

N, WINDOW, TTL = 3000, 500, 3.0


def _river(task: str, pairs: list[tuple]) -> dict[tuple[str, str], float]:
    if task == "classification":
        makers = {"accuracy": (metrics.Accuracy, {}), "precision": (metrics.Precision, {}),
                  "recall": (metrics.Recall, {}), "f1": (metrics.F1, {})}
    else:
        makers = {"mae": (metrics.MAE, {}), "rmse": (metrics.RMSE, {}), "r2": (metrics.R2, {})}
    out = {}
    for name, (cls, kw) in makers.items():
        cum, roll = cls(**kw), utils.Rolling(cls, window_size=WINDOW, **kw)
        for y, p, _ in pairs:
            cum.update(y, p)
            roll.update(y, p)
        out[(name, "cumulative")], out[(name, "rolling")] = cum.get(), roll.get()
    if task == "classification":
        cum, roll = metrics.ROCAUC(), utils.Rolling(metrics.ROCAUC, window_size=WINDOW)
        for y, _, s in pairs:
            cum.update(y, s)
            roll.update(y, s)
        out[("roc_auc", "cumulative")], out[("roc_auc", "rolling")] = cum.get(), roll.get()
    return out


def test_joined_metrics_equal_river_and_failures_are_counted(topics, detector) -> None:
    rng = np.random.default_rng(99)
    score = rng.uniform(0, 1, N)
    truth = (rng.uniform(0, 1, N) < score).astype(int)        # a calibrated classifier
    eta_pred = rng.gamma(4.0, 5.0, N)
    eta_true = eta_pred + rng.normal(0, 3.0, N)               # a regression model
    predictions = []
    for i in range(N):
        predictions.append({"model": "churn", "model_version": "2", "prediction_id": f"c{i}",
                            "features": {"tenure": float(rng.normal())},
                            "prediction": int(score[i] > 0.5), "score": float(score[i])})
        predictions.append({"model": "eta", "model_version": "1", "prediction_id": f"e{i}",
                            "features": {"distance": float(rng.gamma(2, 2))},
                            "prediction": float(eta_pred[i])})
    topics.produce(topics.predictions, predictions)

    d = detector({"join": {"ttl_seconds": TTL}, "rolling_window": WINDOW,
                  "models": {"churn": {"thresholds": {"accuracy": 0.7}},
                             "eta": {"task": "regression"}}})
    d.wait_events("prediction", "churn", N)
    d.wait_events("prediction", "eta", N)

    # labels come later, in another order; a tenth never comes; some match nothing
    labelled = rng.permutation(N)[: N * 9 // 10]
    labels, churn_pairs, eta_pairs = [], [], []
    for i in labelled:
        labels.append({"model": "churn", "prediction_id": f"c{i}", "label": int(truth[i])})
        churn_pairs.append((int(truth[i]), int(score[i] > 0.5), float(score[i])))
        labels.append({"model": "eta", "prediction_id": f"e{i}", "label": float(eta_true[i])})
        eta_pairs.append((float(eta_true[i]), float(eta_pred[i]), None))
    orphans = [{"model": "churn", "prediction_id": f"nobody-{k}", "label": 1} for k in range(40)]
    topics.produce(topics.labels, labels + orphans)

    m = d.wait_events("label", "churn", len(labelled) + len(orphans))
    m = d.wait_events("label", "eta", len(labelled))
    for model, task, pairs in (("churn", "classification", churn_pairs),
                               ("eta", "regression", eta_pairs)):
        assert sample(m, "drift_label_join_total", model=model, outcome="matched") == len(pairs)
        for (metric, window), value in _river(task, pairs).items():
            family = ("drift_model_error" if metric in ("mae", "rmse")
                      else "drift_model_quality_ratio")
            got = sample(m, family, model=model, model_version="2" if model == "churn"
                         else "1", metric=metric, window=window)
            assert got is not None and abs(got - value) < 1e-12, (model, metric, window, got, value)
    assert sample(m, "drift_model_quality_threshold_ratio", model="churn",
                  metric="accuracy") == 0.7

    # after the TTL, unlabelled predictions are expired and stray labels orphans
    def settled() -> dict | None:
        now = d.metrics()
        ok = (sample(now, "drift_label_join_total", model="churn", outcome="expired") == N - len(labelled)
              and sample(now, "drift_label_join_total", model="churn", outcome="orphan") == len(orphans)
              and sample(now, "drift_label_join_total", model="eta", outcome="expired") == N - len(labelled))
        return now if ok else None
    m = wait_for(settled, TTL + 20, "expiry of unmatched entries", every=0.25)
    assert sample(m, "drift_pending_predictions", model="churn") == 0
    assert sample(m, "drift_label_join_total", model="eta", outcome="orphan") == 0
