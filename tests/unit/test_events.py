from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from detector.events import REJECT_REASONS, Label, Prediction, Rejection, decode

VALID = {"model": "fraud", "model_version": 3, "prediction_id": 17,
         "timestamp": "2026-11-22T10:00:00Z",
         "features": {"amount": 12.5, "country": "DE", "age": None, "vip": True},
         "prediction": 1, "score": 0.87}


def test_valid_prediction_is_typed() -> None:
    e = decode(json.dumps(VALID).encode(), "prediction")
    assert isinstance(e, Prediction)
    assert (e.version, e.prediction_id) == ("3", "17")
    assert e.features == {"amount": 12.5, "country": "DE", "age": None, "vip": 1.0}
    assert e.timestamp == 1795341600.0


def test_timestamps_in_seconds_or_milliseconds_agree() -> None:
    a = decode(json.dumps({**VALID, "timestamp": 1795341600}).encode(), "prediction")
    b = decode(json.dumps({**VALID, "timestamp": 1795341600000}).encode(), "prediction")
    assert a.timestamp == b.timestamp == 1795341600.0


def test_inline_label_and_label_event() -> None:
    assert decode(json.dumps({**VALID, "label": 0}).encode(), "prediction").label == 0
    assert isinstance(decode(b'{"model": "m", "prediction_id": "x", "label": "spam"}', "label"),
                      Label)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["prediction", "label"]))
def test_arbitrary_bytes_never_raise(raw: bytes, kind: str) -> None:
    out = decode(raw, kind)
    assert isinstance(out, Prediction | Label | Rejection)
    if isinstance(out, Rejection):
        assert out.reason in REJECT_REASONS


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(VALID) + ["label", "x"]), json_values, max_size=8),
       st.sampled_from(["prediction", "label"]))
def test_arbitrary_json_objects_are_events_or_reasoned_rejections(obj: dict, kind: str) -> None:
    out = decode(json.dumps(obj).encode(), kind)
    if isinstance(out, Rejection):
        assert out.reason in REJECT_REASONS and out.detail
    elif isinstance(out, Prediction):
        assert all(v is None or isinstance(v, str | float) for v in out.features.values())
