"""Data quality end to end: events through the real broker into the service, scraped by a
real Prometheus that evaluates the shipped rules.

After a warm-up of 100 clean predictions, 100 predictions bring every problem at once:
numbers out of the warm-up's range, strings for a number, a new category, numbers for a
category, a feature that stopped arriving and one nobody announced. Prometheus must hold
each count under its reason, and the rules must fire for each feature that has one. A
second test lets a steady stream drop a feature and waits for FeatureStoppedArriving
(its 10-minute window cut to 4 s).
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

from detector.alerting import LocalAlerting, without_waits
from tests.conftest import wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _warm_up(rng: random.Random) -> list[dict]:
    return [{"model": "shop", "model_version": "2", "prediction_id": f"w{i}", "prediction": 0,
             "features": {"amount": rng.uniform(0.0, 100.0),
                          "country": rng.choice(["DE", "FR", "IT"]),
                          "email": None if i % 10 == 0 else rng.choice(["a", "b"])}}
            for i in range(100)]


def _broken(i: int) -> dict:
    """Prediction ``i`` of the second 100: every feature's problem in its own rows."""
    features: dict = {
        "amount": 150.0 + i if i < 30 else "12.5" if i < 35 else 50.0,
        "country": "ES" if 40 <= i < 50 else 49.0 if 50 <= i < 55 else "DE",
    }                                                           # email: never again
    if 60 <= i < 65:
        features["promo"] = "spring"
    return {"model": "shop", "model_version": "2", "prediction_id": f"b{i}", "prediction": 0,
            "features": features}


WANT = {("amount", "missing"): 0, ("amount", "out_of_range"): 30,
        ("amount", "type_mismatch"): 5,
        ("country", "missing"): 0, ("country", "unseen_category"): 10,
        ("country", "type_mismatch"): 5,
        ("email", "missing"): 100, ("email", "unseen_category"): 0,
        ("email", "type_mismatch"): 0,
        ("promo", "unannounced"): 5}
ALERTS = {("FeatureValuesOutOfRange", "amount"), ("FeatureTypeChanged", "amount"),
          ("FeatureUnseenCategories", "country"), ("FeatureTypeChanged", "country"),
          ("FeatureMissingRateHigh", "email"), ("FeatureUnannounced", "promo")}
QUALITY_ALERTS = {"FeatureStoppedArriving", "FeatureMissingRateHigh", "FeatureValuesOutOfRange",
                  "FeatureUnseenCategories", "FeatureTypeChanged", "FeatureUnannounced"}


def test_every_data_quality_signal_reaches_prometheus_and_its_alert(
        topics, detector, prometheus_tools, tmp_path: Path) -> None:
    det = detector({"quality": {"warmup": 100}})
    rules = without_waits((DEPLOY / "prometheus" / "rules.yml").read_text())
    with LocalAlerting(tmp_path / "prometheus", [f"127.0.0.1:{det.port}"], rules,
                       interval=0.5) as local:
        topics.produce(topics.predictions, _warm_up(random.Random(3)))
        det.wait_events("prediction", "shop", 100)
        # the counters exist at 0 in Prometheus before anything is wrong: increase() sees it
        wait_for(lambda: local.query('drift_feature_issues_total{feature="amount"} == 0'), 30,
                 "Prometheus to scrape the zero counters")
        reference = {r["metric"]["feature"]: float(r["value"][1])
                     for r in local.query("drift_feature_reference_missing_ratio")}
        assert reference == {"amount": 0.0, "country": 0.0, "email": 0.1}

        topics.produce(topics.predictions, [_broken(i) for i in range(100)])

        def counts() -> dict[tuple[str, str], float]:
            return {(r["metric"]["feature"], r["metric"]["reason"]): float(r["value"][1])
                    for r in local.query('drift_feature_issues_total{model="shop"}')}

        seen = wait_for(lambda: (now := counts()) == WANT and now, 60,
                        "every issue counted in Prometheus")
        assert local.query("drift_predictions_total")[0]["value"][1] == "200"

        def firing() -> set[tuple[str, str]]:
            return {(a.name, a.labels["feature"]) for a in local.alerts()
                    if a.state == "firing" and a.name in QUALITY_ALERTS}

        # (email's missing share over the rules' 10 minutes is 1/2, so it has not "stopped")
        fired = wait_for(lambda: (now := firing()) >= ALERTS and now, 60,
                         "the data quality alerts")
    print("\nin Prometheus: " + ", ".join(f"{f}/{r}={n:g}" for (f, r), n in sorted(seen.items()))
          + "\nfiring: " + ", ".join(f"{name}({feature})" for name, feature in sorted(fired)))
    assert fired == ALERTS      # and no alert for a problem a feature does not have


def test_a_feature_that_stops_arriving_fires_its_alert(topics, detector, prometheus_tools,
                                                        tmp_path: Path) -> None:
    """FeatureStoppedArriving on real scrapes: the shipped rules with their 10-minute
    windows cut to 4 s, a steady stream that drops ``email`` after the warm-up."""
    det = detector({"quality": {"warmup": 100}})
    rules = without_waits((DEPLOY / "prometheus" / "rules.yml").read_text())
    rules = rules.replace("[10m]", "[4s]")
    stop = threading.Event()

    def without_email() -> None:
        i = 0
        while not stop.is_set():
            topics.produce(topics.predictions, [
                {"model": "shop", "model_version": "2", "prediction_id": f"s{i}-{k}",
                 "prediction": 0, "features": {"amount": 50.0, "country": "DE"}}
                for k in range(20)])
            i += 1
            stop.wait(0.25)

    with LocalAlerting(tmp_path / "prometheus", [f"127.0.0.1:{det.port}"], rules,
                       interval=0.5) as local:
        topics.produce(topics.predictions, _warm_up(random.Random(4)))
        det.wait_events("prediction", "shop", 100)
        wait_for(lambda: local.query('drift_feature_issues_total{feature="email"} == 0'), 30,
                 "Prometheus to scrape the zero counters")
        producer = threading.Thread(target=without_email, daemon=True)
        producer.start()
        try:
            fired = wait_for(lambda: [a for a in local.alerts() if a.state == "firing"
                                      and a.name == "FeatureStoppedArriving"], 60,
                             "FeatureStoppedArriving")
        finally:
            stop.set()
            producer.join(10)
    assert {(a.labels["model"], a.labels["model_version"], a.labels["feature"])
            for a in fired} == {("shop", "2", "email")}
