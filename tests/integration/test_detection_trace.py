"""Through the real broker: where a detection happened points at the right messages, and
bad feature values cost only themselves.

A stream with known changes (a feature in every event, one in every other) goes through
the service; each detection of ``/detections``, the drift event sink and ``replay`` names
the events of the version where it fired and began and the messages behind them, which
are read back from the topic by partition and offset. A stream with NaN, ±Infinity,
numbers beyond a float and features that change type keeps every other value, its
predictions and its labels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import numpy as np

from detector.sources import create_topics
from tests.conftest import read_topic, sample, wait_for

SHIFT, SPARSE_SHIFT, N = 3000, 3200, 4500


def _stream() -> list[bytes]:
    """Predictions p0..p{N-1} of model m version 1: ``x`` shifts by 3 sd at event 3000,
    ``sparse`` (in even events only) by 4 sd at event 3200; a junk message every 500
    events takes an offset and is no event."""
    rng = np.random.default_rng(11)
    out = []
    for i in range(N):
        features = {"x": round(float(rng.normal(3.0 if i >= SHIFT else 0.0, 1.0)), 6)}
        if i % 2 == 0:
            features["sparse"] = round(float(rng.normal(4.0 if i >= SPARSE_SHIFT else 0.0)), 6)
        out.append(json.dumps({"model": "m", "model_version": "1", "prediction_id": f"p{i}",
                               "features": features, "prediction": 0}).encode())
        if i % 500 == 250:
            out.append(b"{junk")
    return out


def _check_points_at_its_messages(d: dict, by_offset: dict[int, dict] | None) -> None:
    """The reported events are the reported messages: ``p<index>`` (events of the
    version are p0, p1, ... in order), and the message at the reported offset is it."""
    for prefix in ("", "onset_"):
        pid = d[prefix + "prediction_id"]
        assert pid == f"p{d[prefix + 'index']}", (prefix, d)
        if by_offset is not None:
            assert by_offset[d[prefix + "offset"]]["prediction_id"] == pid, (prefix, d)
            assert d[prefix + "partition"] == 0
    assert d["onset_index"] <= d["index"] and d["onset_value_index"] <= d["value_index"]
    if d["feature"] == "sparse":        # a value in every other event
        assert (d["index"], d["onset_index"]) == (2 * d["value_index"],
                                                  2 * d["onset_value_index"]), d
    elif d["feature"] == "x":
        assert (d["index"], d["onset_index"]) == (d["value_index"], d["onset_value_index"])


def test_every_detection_points_at_the_messages_where_it_fired_and_began(
        topics, detector, tmp_path: Path) -> None:
    drift_topic = f"drift-events-{uuid.uuid4().hex[:8]}"
    create_topics(topics.kafka, [drift_topic])
    messages = _stream()
    topics.produce(topics.predictions, messages)
    d = detector({"drift_events": {"enabled": True, "topic": drift_topic}})
    d.wait_events("prediction", "m", N)

    def found() -> list[dict] | None:
        body = urllib.request.urlopen(f"http://127.0.0.1:{d.port}/detections", timeout=5).read()
        recent = [r for r in json.loads(body) if r["signal"] == "feature"]
        return recent if {"x", "sparse"} <= {r["feature"] for r in recent} else None

    served = wait_for(found, 60, "detections of x and sparse")
    by_offset = {m.offset: json.loads(m.value) for m in read_topic(topics.bootstrap,
                                                                   topics.predictions)
                 if m.value != b"{junk"}
    assert len(by_offset) == N and max(by_offset) == N + N // 500 - 1
    for r in served:
        assert r["topic"] == r["onset_topic"] == topics.predictions
        _check_points_at_its_messages(r, by_offset)
    cusum = {r["feature"]: r for r in served if r["detector"] == "cusum"}
    assert SHIFT - 5 <= cusum["x"]["onset_index"] <= SHIFT + 10 <= cusum["x"]["index"] + 10
    assert SPARSE_SHIFT - 10 <= cusum["sparse"]["onset_index"] <= SPARSE_SHIFT + 20
    assert {r["detector"] for r in served} >= {"cusum", "psi"}      # distances too

    # the drift events say the same, and so does the log line of each
    def drift_events() -> list[dict] | None:
        got = [json.loads(m.value) for m in read_topic(topics.bootstrap, drift_topic)]
        return got if len(got) >= len(served) else None

    published = wait_for(drift_events, 30, "a drift event per detection")
    logged = [r for r in d.log_records() if r.get("event") == "drift_detected"]
    keys = ("feature", "detector", "index", "onset_index", "value_index", "onset_value_index",
            "offset", "onset_offset", "prediction_id", "onset_prediction_id")
    expected = sorted(tuple(r[k] for k in keys) for r in served)
    for name, got in (("drift events", published), ("log", logged)):
        assert sorted(tuple(r[k] for k in keys) for r in got
                      if r["signal"] == "feature") == expected, name

    # replay of the same events as a file: the same events and ids, no offsets
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"".join(m + b"\n" for m in messages))
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DRIFT_")}
    out = subprocess.run([sys.executable, "-m", "detector", "replay", str(jsonl)],
                         capture_output=True, text=True, timeout=300, env=env, check=False)
    assert out.returncode == 0, out.stderr
    replayed = [r for r in json.loads(out.stdout)["detections"] if r["signal"] == "feature"]
    for r in replayed:
        assert r["topic"] is r["offset"] is r["onset_offset"] is None
        _check_points_at_its_messages(r, None)
    same = ("feature", "detector", "index", "onset_index", "prediction_id",
            "onset_prediction_id")
    assert sorted(tuple(r[k] for k in same) for r in replayed) == sorted(
        tuple(r[k] for k in same) for r in served)


def test_bad_values_cost_only_themselves_and_type_changes_are_counted(topics, detector) -> None:
    """NaN, Infinity, -Infinity and 1e400 in ``amount``; ``age`` sent as strings and
    ``country`` as numbers after the quality warm-up: each is counted under its reason,
    and every event, every other value, each prediction and each label still counts."""
    n, warmup = 600, 100
    rng = np.random.default_rng(4)
    bad = {150: b"NaN", 160: b"Infinity", 170: b"-Infinity", 180: b"1e400", 190: b"NaN"}
    retyped_age = set(range(300, 340))          # "41": a producer started quoting numbers
    retyped_country = set(range(400, 410))      # 7: a code instead of a category
    predictions, labels = [], []
    for i in range(n):
        age = f'"{30 + i % 40}"' if i in retyped_age else str(30 + i % 40)
        country = "7" if i in retyped_country else '"DE"' if i % 3 else '"FR"'
        amount = bad.get(i, str(round(float(rng.normal(50, 10)), 4)).encode())
        predictions.append(
            b'{"model": "fraud", "model_version": "2", "prediction_id": "p%d", "features": '
            b'{"amount": %s, "age": %s, "country": %s, "score_in": %f}, "prediction": %d, '
            b'"score": %f}' % (i, amount, age.encode(), country.encode(), rng.random(), i % 2,
                              rng.random()))
        labels.append({"model": "fraud", "prediction_id": f"p{i}", "label": (i // 2) % 2})
    topics.produce(topics.predictions, predictions)
    topics.produce(topics.labels, labels)
    d = detector({"quality": {"warmup": warmup}, "models": {"fraud": {"task": "classification"}}})
    d.wait_events("prediction", "fraud", n)
    m = d.wait_events("label", "fraud", n)

    def values(feature: str, signal: str = "feature") -> float | None:
        return sample(m, "drift_stream_values_total", model="fraud", model_version="2",
                      signal=signal, feature=feature, category="")

    def issues(feature: str, reason: str) -> float | None:
        return sample(m, "drift_feature_issues_total", model="fraud", model_version="2",
                      feature=feature, reason=reason)

    assert sample(m, "drift_events_total", kind="prediction", model="fraud") == n
    assert sample(m, "drift_events_rejected_total", kind="feature", reason="non_finite") == 5
    assert sample(m, "drift_events_rejected_total", kind="prediction",
                  reason="non_finite") == 0
    assert values("amount") == n - 5 and issues("amount", "missing") == 5
    assert values("score_in") == n and issues("score_in", "missing") == 0
    # a number sent as a string is no number for the detectors: counted as a type change
    assert values("age") == n - len(retyped_age)
    assert issues("age", "type_mismatch") == len(retyped_age)
    assert issues("country", "type_mismatch") == len(retyped_country)
    assert values("", "prediction") == n
    assert sample(m, "drift_label_join_total", model="fraud", outcome="matched") == n
    assert values("", "error") == n
