"""Event schemas and ``decode``: bytes in, a typed event or a ``Rejection`` out.

Validation happens here once; later stages trust what they receive.

>>> decode(b'{"model": "fraud", "prediction_id": "a1", "features": {"amount": 12.5},'
...        b' "prediction": 1, "score": 0.87}', "prediction")
Prediction(model='fraud', version='unversioned', prediction_id='a1', timestamp=None, features={'amount': 12.5}, prediction=1, score=0.87, label=None)
>>> decode(b'{"model": "fraud", "prediction_id": "a1", "label": 0}', "label").label
0
>>> decode(b'{"model": "fraud"', "label").reason
'invalid_json'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

Kind = Literal["prediction", "label"]
FeatureValue = float | str | None
Target = float | int | str | bool

RejectReason = Literal[
    "empty",
    "oversized",
    "invalid_json",
    "not_object",
    "missing_field",
    "invalid_type",
    "invalid_value",
    "non_finite",
    "invalid_timestamp",
    "too_many_features",
    "unknown_model",
    "model_cap",
    "feature_cap",
    "label_type",
    "internal_error",
]
REJECT_REASONS: tuple[str, ...] = RejectReason.__args__  # type: ignore[attr-defined]

UNVERSIONED = "unversioned"
MAX_NAME_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Prediction:
    """One model output. ``features`` maps names to floats (numeric), strings
    (categorical) or ``None`` (missing). ``timestamp`` is epoch seconds or ``None``."""

    model: str
    version: str
    prediction_id: str
    timestamp: float | None
    features: dict[str, FeatureValue]
    prediction: Target
    score: float | None
    label: Target | None


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for an earlier prediction, matched by ``(model, prediction_id)``."""

    model: str
    prediction_id: str
    label: Target
    timestamp: float | None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message is not an event. ``reason`` is from a fixed set (a metric label)."""

    kind: str
    reason: RejectReason
    detail: str


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
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
    return Prediction(
        model=_name(obj, "model"),
        version=_version(obj.get("model_version")),
        prediction_id=_identifier(obj),
        timestamp=_timestamp(obj.get("timestamp")),
        features=_features(features),
        prediction=_target(_field(obj, "prediction"), "prediction"),
        score=score,
        label=None if label is None else _target(label, "label"),
    )


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


def _name(obj: dict[str, Any], key: str) -> str:
    value = _field(obj, key)
    if not isinstance(value, str):
        raise _Invalid("invalid_type", f"{key}: expected a string")
    if not value or len(value) > MAX_NAME_LENGTH:
        raise _Invalid("invalid_value", f"{key}: must have 1 to {MAX_NAME_LENGTH} characters")
    return value


def _version(value: Any) -> str:
    if value is None:
        return UNVERSIONED
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Invalid("invalid_type", "model_version: expected a string or an integer")
    text = str(value)
    if not text or len(text) > MAX_NAME_LENGTH:
        raise _Invalid("invalid_value", f"model_version: must have 1 to {MAX_NAME_LENGTH} characters")
    return text


def _identifier(obj: dict[str, Any]) -> str:
    value = _field(obj, "prediction_id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Invalid("invalid_type", "prediction_id: expected a string or an integer")
    text = str(value)
    if not text:
        raise _Invalid("invalid_value", "prediction_id: must not be empty")
    return text


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("invalid_type", f"{key}: expected a number")
    try:
        number = float(value)
    except OverflowError:
        raise _Invalid("non_finite", f"{key}: integer too large") from None
    if not math.isfinite(number):
        raise _Invalid("non_finite", f"{key}: {value} is not finite")
    return number


def _target(value: Any, key: str) -> Target:
    """A prediction or label: class (str, int, bool) or real value (finite float)."""
    if isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise _Invalid("non_finite", f"{key}: integer too large")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid("non_finite", f"{key}: {value} is not finite")
        return value
    raise _Invalid("invalid_type", f"{key}: expected a number, string or boolean")


def _features(raw: dict[str, Any]) -> dict[str, FeatureValue]:
    out: dict[str, FeatureValue] = {}
    for name, value in raw.items():
        if not name or len(name) > MAX_NAME_LENGTH:
            _feature_name(name)
        if type(value) is float and value - value == 0.0:  # fast path: a finite float
            out[name] = value
        else:
            out[name] = _feature_value(name, value)
    return out


def _feature_name(name: str) -> str:
    if not name or len(name) > MAX_NAME_LENGTH:
        raise _Invalid("invalid_value", f"feature names must have 1 to {MAX_NAME_LENGTH} characters")
    return name


def _feature_value(name: str, value: Any) -> FeatureValue:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return _number(value, f"features.{name}")
    raise _Invalid("invalid_type", f"features.{name}: expected a number, string or null")


def _timestamp(value: Any) -> float | None:
    """Epoch seconds from an ISO 8601 string or a number (seconds, or milliseconds
    when above 10^11, as Kafka producers often send)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid("invalid_timestamp", f"timestamp: {value[:40]!r} is not ISO 8601") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise _Invalid("invalid_timestamp", f"timestamp: {value} is not a valid time")
        return seconds / 1000.0 if seconds > 1e11 else seconds
    raise _Invalid("invalid_timestamp", "timestamp: expected an ISO 8601 string or epoch seconds")
