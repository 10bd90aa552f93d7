"""Event schemas and ``decode``: bytes in, a typed event or a ``Rejection`` out.

Validation happens here once; later stages trust what they receive. ``decode``
never raises for anything the bytes contain: every problem becomes a reason
from a fixed set (a metric label). A bad value of one feature does not cost
the event: that value counts as missing and its rejection (kind ``feature``)
travels with the event in ``Prediction.invalid``.

>>> decode(b'{"model": "fraud", "prediction_id": "a1", "features": {"amount": 12.5},'
...        b' "prediction": 1, "score": 0.87}', "prediction")
Prediction(model='fraud', version='unversioned', prediction_id='a1', timestamp=None, features={'amount': 12.5}, prediction=1, score=0.87, label=None, invalid=())
>>> decode(b'{"model": "fraud", "prediction_id": "a1", "label": 0}', "label").label
0
>>> decode(b'{"model": "fraud"', "label").reason
'invalid_json'
>>> decode(b'{"model": "bad\\\\ud800", "prediction_id": "a1", "label": 0}', "label").reason
'invalid_encoding'
>>> e = decode(b'{"model": "m", "prediction_id": "1", "features": {"x": NaN, "y": 2},'
...            b' "prediction": 0}', "prediction")
>>> e.features, [(r.kind, r.reason) for r in e.invalid]
({'x': None, 'y': 2.0}, [('feature', 'non_finite')])
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

Kind = Literal["prediction", "label"]
FeatureValue = float | str | None
Target = float | int | str | bool

RejectReason = Literal[
    "empty",
    "oversized",
    "invalid_encoding",
    "invalid_json",
    "not_object",
    "missing_field",
    "invalid_type",
    "invalid_value",
    "too_long",
    "non_finite",
    "out_of_range",
    "invalid_timestamp",
    "future_timestamp",
    "too_many_features",
    "unknown_model",
    "model_cap",
    "version_cap",
    "feature_cap",
    "class_cap",
    "label_type",
    "internal_error",
]
REJECT_REASONS: tuple[str, ...] = RejectReason.__args__  # type: ignore[attr-defined]

#: What can be rejected (the ``kind`` label) and for which reasons: a whole prediction or
#: label message, one feature value of a prediction, or the timestamp of an event (the
#: event itself is processed). Only these pairs are exported.
_MESSAGE = ("empty", "oversized", "invalid_encoding", "invalid_json", "not_object",
            "missing_field", "invalid_type", "invalid_value", "too_long", "non_finite",
            "out_of_range", "invalid_timestamp", "unknown_model", "model_cap", "version_cap",
            "internal_error")
REASONS_BY_KIND: dict[str, tuple[str, ...]] = {
    "prediction": (*_MESSAGE, "too_many_features"),
    "label": (*_MESSAGE, "class_cap", "label_type"),
    "feature": ("invalid_encoding", "invalid_type", "invalid_value", "too_long", "non_finite",
                "out_of_range", "feature_cap"),
    "timestamp": ("future_timestamp",),
}

UNVERSIONED = "unversioned"
#: Longest model, version, feature name, class or category value (characters).
MAX_NAME_LENGTH = 200
#: Longest ``prediction_id`` (characters): ids wait in the label join, so they are bounded.
MAX_ID_LENGTH = 256
#: Largest magnitude of a number: beyond it, sums of squares could overflow a float and
#: poison a baseline for good.
MAX_MAGNITUDE = 1e100

# A lone UTF-16 surrogate (JSON allows "\ud800"; UTF-8 cannot encode it, so a scrape
# would fail on it) or a control character (never part of a name).
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_A_NAME = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message (or one value of it) is not used. ``reason`` is from a fixed set."""

    kind: str
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class Prediction:
    """One model output. ``features`` maps names to floats (numeric), strings
    (categorical) or ``None`` (missing). ``timestamp`` is epoch seconds or ``None``.
    ``invalid`` holds the rejections of single feature values (now ``None``) or names."""

    model: str
    version: str
    prediction_id: str
    timestamp: float | None
    features: dict[str, FeatureValue]
    prediction: Target
    score: float | None
    label: Target | None
    invalid: tuple[Rejection, ...] = ()


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for an earlier prediction, matched by ``(model, prediction_id)``."""

    model: str
    prediction_id: str
    label: Target
    timestamp: float | None


class _Invalid(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def decode(
    raw: bytes | None, kind: Kind, *, max_bytes: int = 1_048_576, max_features: int = 200
) -> Prediction | Label | Rejection:
    """Decode one message of ``kind``; never raises for bad input."""
    if not raw:
        return Rejection(kind, "empty", "empty message")
    if len(raw) > max_bytes:
        return Rejection(kind, "oversized", f"{len(raw)} bytes > max_event_bytes={max_bytes}")
    try:
        # strict UTF-8: json.loads(bytes) would let encoded surrogates through
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(kind, "invalid_encoding", f"not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        obj = json.loads(text, parse_int=_integer)
    except json.JSONDecodeError as exc:
        return Rejection(kind, "invalid_json", str(exc)[:200])
    except RecursionError:
        return Rejection(kind, "invalid_json", "nesting too deep")
    if not isinstance(obj, dict):
        return Rejection(kind, "not_object", f"top level is {type(obj).__name__}, not an object")
    try:
        if kind == "prediction":
            return _prediction(obj, max_features)
        return _label(obj)
    except _Invalid as exc:
        return Rejection(kind, exc.reason, exc.detail)


def _integer(digits: str) -> int | float:
    """JSON integers. One too long for a float (Python would even refuse to convert
    4,300 digits and more) becomes +-1e308, far out of range, so it is rejected where it
    stands (one feature value, or the field it is in) instead of failing the message."""
    if len(digits) < 310:
        return int(digits)
    return -1e308 if digits.startswith("-") else 1e308


def _prediction(obj: dict[str, Any], max_features: int) -> Prediction:
    features = _field(obj, "features")
    if not isinstance(features, dict):
        raise _Invalid("invalid_type", "features: expected an object")
    if len(features) > max_features:
        raise _Invalid("too_many_features", f"{len(features)} features > max_features={max_features}")
    score = obj.get("score")
    if score is not None:
        score = _number(score, "score")
    label = obj.get("label")
    model = _name(obj, "model")
    version = _version(obj.get("model_version"))
    prediction_id = _identifier(obj)
    timestamp = _timestamp(obj.get("timestamp"))
    prediction = _target(_field(obj, "prediction"), "prediction")
    label = None if label is None else _target(label, "label")
    values, invalid = _features(features)
    return Prediction(model, version, prediction_id, timestamp, values, prediction, score, label,
                      invalid)


def _label(obj: dict[str, Any]) -> Label:
    return Label(
        model=_name(obj, "model"),
        prediction_id=_identifier(obj),
        label=_target(_field(obj, "label"), "label"),
        timestamp=_timestamp(obj.get("timestamp")),
    )


def _field(obj: dict[str, Any], key: str) -> Any:
    value = obj.get(key)
    if value is None:
        raise _Invalid("missing_field", f"{key}: required")
    return value


def _check_name(text: str, key: str) -> str:
    """A name that becomes a metric label value: 1 to MAX_NAME_LENGTH characters of
    valid Unicode, no control characters."""
    if not text:
        raise _Invalid("invalid_value", f"{key}: must not be empty")
    if len(text) > MAX_NAME_LENGTH:
        raise _Invalid("too_long", f"{key}: {len(text)} characters > {MAX_NAME_LENGTH}")
    if not text.isascii() or not text.isprintable():
        bad = _NOT_A_NAME.search(text)
        if bad is not None:
            if _SURROGATE.match(bad.group()):
                raise _Invalid("invalid_encoding", f"{key}: lone surrogate at {bad.start()}")
            raise _Invalid("invalid_value", f"{key}: control character at {bad.start()}")
    return text


def _name(obj: dict[str, Any], key: str) -> str:
    value = _field(obj, key)
    if not isinstance(value, str):
        raise _Invalid("invalid_type", f"{key}: expected a string")
    return _check_name(value, key)


def _version(value: Any) -> str:
    if value is None:
        return UNVERSIONED
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Invalid("invalid_type", "model_version: expected a string or an integer")
    if isinstance(value, int):
        if abs(value) >= 10**MAX_NAME_LENGTH:
            raise _Invalid("too_long", "model_version: integer too long")
        return str(value)
    return _check_name(value, "model_version")


def _identifier(obj: dict[str, Any]) -> str:
    value = _field(obj, "prediction_id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Invalid("invalid_type", "prediction_id: expected a string or an integer")
    if isinstance(value, int):
        if abs(value) >= 10**MAX_ID_LENGTH:
            raise _Invalid("too_long", "prediction_id: integer too long")
        return str(value)
    if not value:
        raise _Invalid("invalid_value", "prediction_id: must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise _Invalid("too_long", f"prediction_id: {len(value)} characters > {MAX_ID_LENGTH}")
    if not value.isascii() and _SURROGATE.search(value):
        raise _Invalid("invalid_encoding", "prediction_id: lone surrogate")
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("invalid_type", f"{key}: expected a number")
    try:
        number = float(value)
    except OverflowError:
        raise _Invalid("out_of_range", f"{key}: integer beyond float range") from None
    if not math.isfinite(number):
        raise _Invalid("non_finite", f"{key}: {number} is not finite")
    if not -MAX_MAGNITUDE <= number <= MAX_MAGNITUDE:
        raise _Invalid("out_of_range", f"{key}: {number:.3g} beyond +-{MAX_MAGNITUDE:.0e}")
    return number


def _target(value: Any, key: str) -> Target:
    """A prediction or label: class (str, int, bool) or real value (finite float)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if len(value) > MAX_NAME_LENGTH:
            raise _Invalid("too_long", f"{key}: {len(value)} characters > {MAX_NAME_LENGTH}")
        if not value.isascii() and _SURROGATE.search(value):
            raise _Invalid("invalid_encoding", f"{key}: lone surrogate")
        return value
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise _Invalid("out_of_range", f"{key}: integer beyond 2^53")
        return value
    if isinstance(value, float):
        return _number(value, key)
    raise _Invalid("invalid_type", f"{key}: expected a number, string or boolean")


def _features(raw: dict[str, Any]) -> tuple[dict[str, FeatureValue], tuple[Rejection, ...]]:
    out: dict[str, FeatureValue] = {}
    invalid: list[Rejection] = []
    for name, value in raw.items():
        if not 0 < len(name) <= MAX_NAME_LENGTH or not name.isascii() or not name.isprintable():
            try:
                _check_name(name, "feature name")
            except _Invalid as exc:
                invalid.append(Rejection("feature", exc.reason, f"{name[:40]!r}: {exc.detail}"))
                continue
        if type(value) is float and -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
            out[name] = value   # fast path: a finite float in range
            continue
        try:
            out[name] = _feature_value(name, value)
        except _Invalid as exc:
            out[name] = None
            invalid.append(Rejection("feature", exc.reason, exc.detail))
    return out, tuple(invalid)


def _feature_value(name: str, value: Any) -> FeatureValue:
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) > MAX_NAME_LENGTH:
            raise _Invalid("too_long", f"features.{name[:40]}: category of {len(value)} "
                           f"characters > {MAX_NAME_LENGTH}")
        if not value.isascii() or not value.isprintable():
            _check_name(value, f"features.{name[:40]}")
        return value
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return _number(value, f"features.{name[:40]}")
    raise _Invalid("invalid_type", f"features.{name[:40]}: expected a number, string or null")


def _timestamp(value: Any) -> float | None:
    """Epoch seconds from an ISO 8601 string or a number (seconds, or milliseconds
    when above 10^11, as Kafka producers often send)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return moment.timestamp()
        except (ValueError, OverflowError):
            raise _Invalid("invalid_timestamp", f"timestamp: {value[:40]!r} is not an ISO 8601 "
                           "time") from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            raise _Invalid("invalid_timestamp", "timestamp: number beyond float range") from None
        if not math.isfinite(seconds) or not 0 <= seconds < 1e14:  # 1e14 ms: year 5138
            raise _Invalid("invalid_timestamp", f"timestamp: {seconds:.6g} is not a valid time")
        return seconds / 1000.0 if seconds > 1e11 else seconds
    raise _Invalid("invalid_timestamp", "timestamp: expected an ISO 8601 string or epoch seconds")
