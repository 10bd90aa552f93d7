"""A batch mixing many kinds of malformed messages with valid ones: each bad one is
counted under its reason, every valid one is processed, the service stays ready."""

from __future__ import annotations

import json
import uuid
from collections import Counter

from detector.sources import create_topics
from tests.conftest import http_status, read_topic, sample


def _valid(i: int) -> dict:
    return {"model": "fraud", "model_version": "1", "prediction_id": f"ok-{i}",
            "features": {"amount": float(i % 17), "country": "DE"}, "prediction": 0, "score": 0.1}


BAD_PREDICTIONS: dict[str, list[bytes]] = {
    "empty": [b""],
    "oversized": [json.dumps({**_valid(0), "pad": "x" * 10_000}).encode()],
    "invalid_json": [b"{not json", b'{"model": "fraud",'],
    "invalid_encoding": [b"\xff\xfe\x00garbage", b'{"model": "fraud\xed\xa0\x80"}',
                         json.dumps({**_valid(0), "model": "bad\ud800"}).encode()],
    "not_object": [b"[1, 2, 3]", b'"just a string"', b"42"],
    "missing_field": [json.dumps({k: v for k, v in _valid(0).items() if k != "features"}).encode(),
                      json.dumps({k: v for k, v in _valid(0).items() if k != "model"}).encode()],
    "invalid_type": [json.dumps({**_valid(0), "features": []}).encode(),
                     json.dumps({**_valid(0), "score": "high"}).encode()],
    "invalid_value": [json.dumps({**_valid(0), "model": ""}).encode()],
    "non_finite": [b'{"model": "fraud", "prediction_id": "n", "features": {}, "prediction": 0, '
                   b'"score": Infinity}'],
    "out_of_range": [b'{"model": "fraud", "prediction_id": "n", "features": {}, "prediction": 1'
                     + b"0" * 4400 + b'}'],
    "invalid_timestamp": [json.dumps({**_valid(0), "timestamp": "last tuesday"}).encode()],
    "too_many_features": [json.dumps({**_valid(0), "features": {f"f{k}": 1.0 for k in range(40)}}
                                     ).encode()],
    "unknown_model": [json.dumps({**_valid(0), "model": "not-declared"}).encode()],
}
#: valid events with one bad feature value: the value counts as missing, the rest is used
BAD_FEATURES: dict[str, list[bytes]] = {
    "non_finite": [b'{"model": "fraud", "model_version": "1", "prediction_id": "f1", '
                   b'"features": {"amount": NaN, "country": "DE"}, "prediction": 0}'],
    "too_long": [json.dumps({**_valid(0), "features": {"amount": 1.0, "country": "D" * 300}}
                            ).encode()],
    "invalid_type": [json.dumps({**_valid(0), "features": {"amount": [1, 2]}}).encode()],
    "out_of_range": [json.dumps({**_valid(0), "features": {"amount": 1e200}}).encode(),
                     b'{"model": "fraud", "model_version": "1", "prediction_id": "f2", '
                     b'"features": {"amount": 1' + b"0" * 4400 + b'}, "prediction": 0}'],
}
BAD_LABELS: dict[str, list[bytes]] = {
    "missing_field": [b'{"model": "fraud", "prediction_id": "ok-1"}'],
    "invalid_type": [b'{"model": "fraud", "prediction_id": {"a": 1}, "label": 1}'],
}


def test_every_bad_message_is_counted_and_every_good_one_processed(topics, detector) -> None:
    valid = [json.dumps(_valid(i)).encode() for i in range(200)]
    mixed, k = [], 0
    for reason, raws in BAD_PREDICTIONS.items():
        for raw in raws:
            mixed.append(raw)
            mixed.extend(valid[k:k + 5])
            k += 5
    mixed.extend(valid[k:])
    mixed.extend(raw for raws in BAD_FEATURES.values() for raw in raws)
    partial = sum(len(raws) for raws in BAD_FEATURES.values())
    topics.produce(topics.predictions, mixed)
    label_msgs = [raw for raws in BAD_LABELS.values() for raw in raws]
    label_msgs.append(b'{"model": "fraud", "prediction_id": "ok-3", "label": 0}')
    topics.produce(topics.labels, label_msgs)

    dlq = f"dead-letters-{uuid.uuid4().hex[:6]}"
    create_topics(topics.kafka, [dlq])
    d = detector({"max_event_bytes": 8192, "max_features": 30,
                  "models": {"fraud": {"task": "classification"}},
                  "dead_letter": {"enabled": True, "topic": dlq}})
    m = d.wait_events("prediction", "fraud", len(valid) + partial)
    m = d.wait_events("label", "fraud", 1)
    assert len(BAD_PREDICTIONS) >= 10
    for reason, raws in BAD_PREDICTIONS.items():
        assert sample(m, "drift_events_rejected_total", kind="prediction", reason=reason) == len(raws), reason
    for reason, raws in BAD_LABELS.items():
        assert sample(m, "drift_events_rejected_total", kind="label", reason=reason) == len(raws), reason
    for reason, raws in BAD_FEATURES.items():
        assert sample(m, "drift_events_rejected_total", kind="feature", reason=reason) == len(raws), reason
    assert sample(m, "drift_events_total", kind="prediction", model="fraud") == len(valid) + partial
    assert sample(m, "drift_stream_values_total", model="fraud", model_version="1", signal="feature",
                  feature="amount", category="") == len(valid) + 1   # the others: missing
    assert sample(m, "drift_feature_missing_total", model="fraud", model_version="1",
                  feature="amount") == partial - 1
    assert sample(m, "drift_label_join_total", model="fraud", outcome="matched") == 1
    assert http_status(d.port, "/readyz") == 200 and http_status(d.port, "/healthz") == 200
    assert d.proc.poll() is None
    logged = [r for r in d.log_records() if r.get("event") == "event_rejected"]
    assert {r["reason"] for r in logged} >= set(BAD_PREDICTIONS)

    # every rejected message is on the dead-letter topic, unchanged, reason in the headers
    letters = read_topic(topics.bootstrap, dlq)
    reasons = Counter((dict(m.headers)["drift.kind"].decode(), dict(m.headers)["drift.reason"].decode())
                      for m in letters)
    expected = Counter({("prediction", r): len(v) for r, v in BAD_PREDICTIONS.items()})
    expected.update({("label", r): len(v) for r, v in BAD_LABELS.items()})
    assert reasons == expected
    originals = {raw for raws in BAD_PREDICTIONS.values() for raw in raws}
    assert {m.value or b"" for m in letters if dict(m.headers)["drift.kind"] == b"prediction"} \
        == originals
    first = dict(letters[0].headers)
    assert first["drift.topic"].decode() in (topics.predictions, topics.labels)
    assert int(first["drift.offset"]) >= 0 and first["drift.detail"]
