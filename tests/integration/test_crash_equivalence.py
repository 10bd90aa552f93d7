"""kill -9 at random points and restarts give exactly the detections and final metric
values of a run that never stopped, with no event lost or counted twice."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tests.conftest import DetectorProcess, Topics, sample, wait_for

N = 24_000
COMPARED = ("drift_events_total", "drift_events_rejected_total", "drift_detections_total",
            "drift_detector_firings_total", "drift_stream_values_total",
            "drift_feature_missing_total", "drift_model_quality_ratio", "drift_model_error",
            "drift_feature_distance", "drift_feature_pvalue", "drift_label_join_total")


def _events(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(N):
        x = float(rng.normal(1.5 if i >= 8000 else 0.0, 1.0))
        y = float(rng.normal(40.0 + (20.0 if i >= 16000 else 0.0), 10.0))
        z = None if rng.random() < 0.03 else float(rng.lognormal(0, 1))
        c = str(rng.choice(["a", "b", "c"], p=[0.2, 0.3, 0.5] if i >= 12000 else [0.5, 0.3, 0.2]))
        pred = int(rng.random() < 0.4)
        right = rng.random() < (0.9 if i < 18000 else 0.65)
        out.append({"model": "m", "model_version": "1", "prediction_id": str(i),
                    "features": {"x": x, "y": y, "z": z, "c": c}, "prediction": pred,
                    "score": float(rng.random()), "label": pred if right else 1 - pred})
    return out


def _detections(procs: list[DetectorProcess]) -> set[tuple]:
    return {(r["model"], r["model_version"], r["signal"], r["feature"], r["detector"], r["index"])
            for p in procs for r in p.log_records() if r.get("event") == "drift_detected"}


def _final(proc: DetectorProcess) -> dict:
    proc.metrics()                                   # every series announced once
    m = proc.metrics()
    return {k: v for k, v in m.items() if k[0] in COMPARED}


def _run_to_end(proc: DetectorProcess, topics: Topics) -> dict:
    proc.wait_events("prediction", "m", N, timeout=120)
    return wait_for(lambda: (lambda s: s if sample(s, "drift_consumer_lag_messages",
                                                     topic=topics.predictions, partition="0") == 0
                             else None)(proc.metrics()), 30, "lag 0")


def _uninterrupted(spawn, topics: Topics, client: str) -> tuple[set[tuple], dict]:
    proc = spawn(topics, {"kafka": {"client": client}, "checkpoint": {"enabled": False}})
    _run_to_end(proc, topics)
    detections, final = _detections([proc]), _final(proc)
    proc.terminate()
    assert len(detections) >= 4          # the stream has real changes
    return detections, final


def _assert_same(runs: list[DetectorProcess], final: DetectorProcess, metrics: dict,
                 expected_detections: set[tuple], expected: dict) -> None:
    assert sample(metrics, "drift_events_total", kind="prediction", model="m") == N  # 0 lost, 0 twice
    assert _detections(runs) == expected_detections
    got = _final(final)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == value, key


@pytest.mark.parametrize(("store", "client"), [("topic", "kafka-python"), ("file", "confluent")])
def test_kills_at_random_points_change_nothing(tansu, spawn, tmp_path, store: str,
                                               client: str) -> None:
    """Eleven SIGKILLs, the first before any state was saved, the others anywhere
    (checkpoints every 1,000 events, so some land during a write or a commit)."""
    # On Tansu only: noida-db keeps a SIGKILLed member's partitions until the group's
    # rebalance timeout (300 s), where Kafka frees them after the session timeout.
    topics = Topics(tansu)
    topics.produce(topics.predictions, _events(seed=8))
    expected_detections, expected = _uninterrupted(spawn, topics, client)

    topics.group = topics.group + "-crashy"
    config = {"checkpoint": {"interval_events": 1000, "interval_seconds": 3600},
              "kafka": {"max_poll_records": 250, "client": client}}
    if store == "file":
        config["checkpoint"]["path"] = str(tmp_path / "state")
    rng = random.Random(2026)
    kill_points = [rng.randrange(100, 900)] + sorted(rng.sample(range(N // 20, N * 19 // 20), 10))
    runs = []
    for point in kill_points:
        proc = spawn(topics, config)
        runs.append(proc)
        proc.wait_events("prediction", "m", point, timeout=120)
        proc.kill()                                   # SIGKILL: no goodbye, no final save
    final = spawn(topics, config)
    runs.append(final)
    metrics = _run_to_end(final, topics)
    _assert_same(runs, final, metrics, expected_detections, expected)
    restored = [r for p in runs for r in p.log_records() if r.get("event") == "checkpoint_restored"]
    assert len(restored) >= len(kill_points) - 2     # kills right after a start find the same
    final.terminate()


def test_with_zero_config_a_restart_keeps_every_event(tansu, spawn) -> None:
    """No checkpoint settings at all: state is kept on the group's state topic; a
    SIGKILL, a SIGTERM and a restart change nothing."""
    topics = Topics(tansu)
    topics.produce(topics.predictions, _events(seed=11))
    expected_detections, expected = _uninterrupted(spawn, topics, "kafka-python")

    topics.group = topics.group + "-zero"
    first = spawn(topics)
    first.wait_events("prediction", "m", N // 3, timeout=120)
    first.kill()                                      # before the first periodic save (10 s)
    second = spawn(topics)
    second.wait_events("prediction", "m", N * 2 // 3, timeout=120)
    assert second.terminate() == 0                    # saves, commits, leaves
    assert any(r.get("event") == "checkpoint_saved" for r in second.log_records())
    final = spawn(topics)
    metrics = _run_to_end(final, topics)
    assert any(r.get("event") == "checkpoint_restored" for r in final.log_records())
    _assert_same([first, second, final], final, metrics, expected_detections, expected)
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=topics.bootstrap)
    try:
        assert f"{topics.group}-state" in admin.list_topics()
    finally:
        admin.close()
    final.terminate()
