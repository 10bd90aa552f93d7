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


def _reason(raw: bytes | str, kind: str = "prediction") -> str | None:
    out = decode(raw.encode() if isinstance(raw, str) else raw, kind)
    return out.reason if isinstance(out, Rejection) else None


def _with(**fields) -> bytes:
    return json.dumps({**VALID, **fields}).encode()


_HUGE = b"1" + b"0" * 5000                                      # over Python's 4,300 digits
_NESTED = b"[" * 100_000 + b"]" * 100_000
#: The poison pills of issue 10: message, kind, and the reasons it may be rejected with
#: (``None``: decoded). tests/unit/test_decode_fast.py also checks decode's paths agree on them.
POISON_PILLS: list[tuple[bytes, str, tuple[str | None, ...]]] = [
    (b'{"model": "m", "prediction_id": 1, "label": ' + _HUGE + b"}", "label", ("out_of_range",)),
    (_with(timestamp=10**400), "prediction", ("invalid_timestamp",)),
    (_with(score=1e200), "prediction", ("out_of_range",)),
    (_with(prediction=2**60), "prediction", ("out_of_range",)),
    # an encoded surrogate: not UTF-8
    (b'{"model": "m\xed\xa0\x80", "prediction_id": 1, "label": 1}', "label",
     ("invalid_encoding",)),
    *((_with(**{field: "bad\ud800"}), "prediction", ("invalid_encoding",))
      for field in ("model", "model_version", "prediction_id", "prediction")),
    (_with(model="a\nb"), "prediction", ("invalid_value",)),
    (_with(model="m" * 201), "prediction", ("too_long",)),
    (_with(model_version="v" * 201), "prediction", ("too_long",)),
    (_with(prediction_id="i" * 257), "prediction", ("too_long",)),
    (_with(prediction_id="i" * 256), "prediction", (None,)),
    (_with(prediction="c" * 201), "prediction", ("too_long",)),
    (b'{"model": "m", "x": ' + _NESTED + b"}", "prediction", ("invalid_json", None)),
]
#: A prediction with one bad value (or name) of each kind among its features.
BAD_FEATURES = _with(features={"ok": 1.0, "nan": float("nan"), "big": 1e300, "list": [1],
                               "long": "c" * 201, "sur": "x\ud800", "ctl": "a\x00b",
                               "bad\ud800name": 1.0, "": 2.0, "n" * 201: 3.0})


def test_poison_pills_of_issue_10_are_rejections_with_reasons() -> None:
    for raw, kind, reasons in POISON_PILLS:
        assert _reason(raw, kind) in reasons, raw[:60]


def test_a_bad_feature_value_costs_that_value_only() -> None:
    e = decode(BAD_FEATURES, "prediction")
    assert isinstance(e, Prediction)
    assert e.features == {"ok": 1.0, "nan": None, "big": None, "list": None, "long": None,
                          "sur": None, "ctl": None}
    assert sorted((r.kind, r.reason) for r in e.invalid) == sorted([
        ("feature", "non_finite"), ("feature", "out_of_range"), ("feature", "invalid_type"),
        ("feature", "too_long"), ("feature", "invalid_encoding"), ("feature", "invalid_value"),
        ("feature", "invalid_encoding"), ("feature", "invalid_value"), ("feature", "too_long")])


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["model", "model_version", "prediction_id", "prediction"]))
def test_every_kept_string_encodes_as_utf8(text: str, field: str) -> None:
    """Whatever a string holds, what decode keeps can be exported (UTF-8, no surrogate)."""
    e = decode(_with(**{field: text}, features={text: text, "x": 1.0}), "prediction")
    if isinstance(e, Prediction):
        for s in (e.model, e.version, e.prediction_id, str(e.prediction), *e.features,
                  *(v for v in e.features.values() if isinstance(v, str))):
            s.encode("utf-8")
