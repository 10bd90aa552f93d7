"""Training profile → config → live stream through the broker: distances over /metrics
equal scipy's on the final window; the shifted feature, the changed category mix and
the label prior are detected; stable features are not."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp

from detector.reference import Profile
from tests.conftest import sample

CATS = ["web", "app", "pos", "atm"]
TRAIN_MIX = [0.5, 0.3, 0.15, 0.05]
N, CHANGE, WINDOW, EVERY = 6000, 3000, 1000, 100


def test_profile_reference_distances_and_detections(topics, detector, tmp_path) -> None:
    rng = np.random.default_rng(777)
    train = tmp_path / "train.csv"
    with train.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["txn_id", "amount", "age", "channel", "is_fraud"])
        for i in range(20_000):
            w.writerow([i, round(rng.gamma(2, 30), 3), round(rng.normal(40, 10), 2),
                        rng.choice(CATS, p=TRAIN_MIX), int(rng.random() < 0.1)])
    profile_path = tmp_path / "fraud.json"
    done = subprocess.run([sys.executable, "-m", "detector", "profile", str(train), "--model",
                           "fraud", "--label-column", "is_fraud", "--exclude", "txn_id",
                           "-o", str(profile_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    profile = Profile.from_json(json.loads(profile_path.read_text()))

    amount, age, channel, labels = [], [], [], []
    for i in range(N):
        late = i >= CHANGE
        amount.append(round(float(rng.gamma(2, 30)) * (1.6 if late else 1.0), 3))
        age.append(round(float(rng.normal(40, 10)), 2))
        channel.append(str(rng.choice(CATS, p=[0.2, 0.3, 0.15, 0.35] if late else TRAIN_MIX)))
        labels.append(int(rng.random() < (0.3 if late else 0.1)))
    topics.produce(topics.predictions, (
        {"model": "fraud", "model_version": "1", "prediction_id": str(i),
         "features": {"amount": amount[i], "age": age[i], "channel": channel[i]},
         "prediction": 0, "label": labels[i]} for i in range(N)))

    d = detector({"models": {"fraud": {"task": "classification", "profile": str(profile_path)}},
                  "detectors": {"feature": [], "prediction": [], "error": [], "categorical": [],
                                "label": []},
                  "reference": {"window": WINDOW, "evaluate_every": EVERY}})
    m = d.wait_events("prediction", "fraud", N)

    def dist(feature: str, method: str, signal: str = "feature") -> float:
        family = "drift_feature_pvalue" if method == "chi2" else "drift_feature_distance"
        return sample(m, family, model="fraud", model_version="1", signal=signal,
                      feature=feature, method=method)

    def detections(signal: str, feature: str, method: str) -> float:
        return sample(m, "drift_detections_total", model="fraud", model_version="1", signal=signal,
                      feature=feature, category="", detector=method)

    ref = profile.features["amount"]
    win = np.asarray(amount[-WINDOW:])
    p = ref.counts / ref.counts.sum()
    q = np.bincount(np.searchsorted(ref.edges, win, side="right"), minlength=p.size) / WINDOW
    pf, qf = np.clip(p, 1e-4, None), np.clip(q, 1e-4, None)
    assert abs(dist("amount", "psi") - float(((qf - pf) * np.log(qf / pf)).sum())) < 1e-9
    assert abs(dist("amount", "js") - jensenshannon(p, q, base=2)) < 1e-9
    assert abs(dist("amount", "ks") - ks_2samp(win, ref.sample).statistic) < 1e-9
    cref = profile.features["channel"]
    codes = [list(cref.categories).index(c) for c in channel[-WINDOW:]]
    table = np.vstack([cref.counts, np.bincount(codes, minlength=cref.counts.size)])
    table = table[:, table.sum(axis=0) > 0]
    expected = chi2_contingency(table, correction=False).pvalue
    assert abs(dist("channel", "chi2") - expected) <= 1e-9 * max(expected, 1e-300)

    for method in ("psi", "js", "ks"):
        assert detections("feature", "amount", method) >= 1, method
        assert detections("feature", "age", method) == 0, method
    assert detections("feature", "channel", "chi2") >= 1
    assert detections("label", "", "psi") >= 1        # 0/1 labels: a numeric reference
    assert dist("", "psi", signal="label") > 0.1
    assert sample(m, "drift_detected", model="fraud", model_version="1", signal="feature",
                  feature="amount", category="", detector="ks") == 1.0
