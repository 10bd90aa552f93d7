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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

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


# Events are treated as immutable but not frozen: a frozen dataclass sets each field
# through object.__setattr__, which made building one 5x slower (0.68 vs 0.13 µs).
# unsafe_hash keeps the hash a frozen dataclass had (fields, in order).
@dataclass(slots=True, unsafe_hash=True)
class Prediction:
    """One model output. ``features`` maps names to floats (numeric), strings
    (categorical) or ``None`` (missing). ``timestamp`` is epoch seconds or ``None``.
    ``invalid`` holds the rejections of single feature values (now ``None``) or names;
    ``checked`` is False when the feature names and values are still to be checked (an
    event from ``scan``, see ``complete``)."""

    model: str
    version: str
    prediction_id: str
    timestamp: float | None
    features: dict[str, FeatureValue]
    prediction: Target
    score: float | None
    label: Target | None
    invalid: tuple[Rejection, ...] = ()
    checked: bool = field(default=True, repr=False, compare=False)


@dataclass(slots=True, unsafe_hash=True)
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
    """Decode one message of ``kind``; never raises for bad input.

    A valid event of the documented shape is decoded by a typed msgspec decoder, which
    checks types, lengths and ranges in C (``_decode_fast``). Anything else is decoded by
    ``json.loads`` and checked field by field in Python, which gives every rejection its
    reason and detail. The result is the same either way: tests/unit/test_decode_fast.py
    compares it with this function as it was before the fast path.
    """
    if not raw:
        return Rejection(kind, "empty", "empty message")
    if len(raw) > max_bytes:
        return Rejection(kind, "oversized", f"{len(raw)} bytes > max_event_bytes={max_bytes}")
    event = _decode_fast(raw, kind, max_features)
    if event is not None:
        return event
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


# The fast path's schema: the documented keys, each with the types, lengths and ranges
# that decode's json path accepts. Whatever does not fit fails to decode here and takes
# the json path, which names the reason. That includes JSON that json.loads accepts and
# msgspec refuses (NaN, Infinity, lone surrogates) and integers beyond 64 bits where an
# integer is kept. An integer where a float is expected becomes the correctly rounded
# float, as float(int) does on the json path.
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Real = Annotated[float, msgspec.Meta(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
_Category = Annotated[str, msgspec.Meta(max_length=MAX_NAME_LENGTH)]
_Class = bool | Annotated[int, msgspec.Meta(ge=-(2**53), le=2**53)] | _Real | _Category
_Seconds = Annotated[float, msgspec.Meta(ge=0, lt=1e14)]


class _FastPrediction(msgspec.Struct, forbid_unknown_fields=True):
    model: _Name
    prediction_id: _Id | _Int64
    features: dict[_Name, _Real | _Category | None]
    prediction: _Class
    model_version: _Name | _Int64 | None = None
    timestamp: _Seconds | str | None = None
    score: _Real | None = None
    label: _Class | None = None


class _FastLabel(msgspec.Struct, forbid_unknown_fields=True):
    model: _Name
    prediction_id: _Id | _Int64
    label: _Class
    timestamp: _Seconds | str | None = None


class _OpenPrediction(_FastPrediction, forbid_unknown_fields=False):
    """Other keys are skipped, as the json path ignores them."""


class _OpenLabel(_FastLabel, forbid_unknown_fields=False):
    """Other keys are skipped, as the json path ignores them."""


#: Per kind, the decoder of the documented keys, and the one that skips other keys too.
_DECODERS = {
    "prediction": (msgspec.json.Decoder(_FastPrediction), msgspec.json.Decoder(_OpenPrediction)),
    "label": (msgspec.json.Decoder(_FastLabel), msgspec.json.Decoder(_OpenLabel)),
}
_UNKNOWN_KEY = "Object contains unknown field"
_BACKSLASH, _DEL, _BRACKET = 0x5C, 0x7F, 0x5B


def _decode_fast(raw: bytes, kind: Kind, max_features: int) -> Prediction | Label | None:
    """The event when ``raw`` is a valid event of the documented shape, else ``None``.

    UTF-8 is checked by Python's strict codec, as on the json path. A decoded string
    can hold a control character only if the message has an escape or a DEL byte (raw
    control bytes are invalid JSON), so only then are names searched for one. A lone
    surrogate never decodes. A message with other keys is decoded a second time,
    skipping them, when nothing it skips can nest (no ``[``, no ``{`` but the message's
    and the features'): json.loads gives up on deep nesting even in ignored keys, at a
    depth that msgspec does not share. Messages with the documented keys only pay
    nothing for this. (Should msgspec word its error otherwise, such messages would
    take the json path: slower, the same result.)
    """
    data: bytes | str = raw
    if not raw.isascii():
        try:
            data = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    escaped = _BACKSLASH in raw or _DEL in raw
    documented, open_keys = _DECODERS["prediction" if kind == "prediction" else "label"]
    try:
        try:
            fast = documented.decode(data)
        except msgspec.ValidationError as exc:
            if (not str(exc).startswith(_UNKNOWN_KEY) or _BRACKET in raw
                    or raw.count(b"{") > 2):
                return None
            fast = open_keys.decode(data)
        if kind == "prediction":
            return _fast_prediction(fast, escaped, max_features)
        return _fast_label(fast, escaped)
    except (msgspec.DecodeError, _Invalid):
        return None


def _fast_prediction(fast: _FastPrediction, escaped: bool, max_features: int
                     ) -> Prediction | None:
    features = fast.features
    if len(features) > max_features:
        return None
    version = fast.model_version
    if version is None:
        version = UNVERSIONED
    elif type(version) is int:
        version = str(version)
    if escaped and _NOT_A_NAME.search("".join(
            [fast.model, version, *features, *[v for v in features.values() if type(v) is str]])):
        return None
    prediction_id = fast.prediction_id
    return Prediction(fast.model, version,
                      str(prediction_id) if type(prediction_id) is int else prediction_id,
                      _fast_seconds(fast.timestamp), features, fast.prediction, fast.score,
                      fast.label)


def _fast_label(fast: _FastLabel, escaped: bool) -> Label | None:
    if escaped and _NOT_A_NAME.search(fast.model):
        return None
    prediction_id = fast.prediction_id
    return Label(fast.model, str(prediction_id) if type(prediction_id) is int else prediction_id,
                 fast.label, _fast_seconds(fast.timestamp))


def _fast_seconds(value: float | str | None) -> float | None:
    """``_timestamp`` of a value of the fast path, whose numbers are in [0, 1e14) already."""
    if type(value) is float:
        return value / 1000.0 if value > 1e11 else value
    return None if value is None else _timestamp(value)


class _LoosePrediction(msgspec.Struct, forbid_unknown_fields=True):
    """The documented keys with their JSON types and nothing more: ``scan`` bounds the
    scalars, the caller the feature names and values."""

    model: str
    prediction_id: str | int
    features: dict[str, float | str | None]
    prediction: bool | int | float | str
    model_version: str | int | None = None
    timestamp: float | str | None = None
    score: float | None = None
    label: bool | int | float | str | None = None


class _LooseLabel(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    prediction_id: str | int
    label: bool | int | float | str
    timestamp: float | str | None = None


_SCANNERS = {"prediction": msgspec.json.Decoder(_LoosePrediction),
             "label": msgspec.json.Decoder(_LooseLabel)}
_INT64 = 2**63


def scan(raw: bytes | None, kind: Kind, max_bytes: int) -> _LoosePrediction | _LooseLabel | None:
    """The hot path's decoder: the event of an ordinary message, else None (then
    ``decode`` it, which gives any rejection its reason).

    Ordinary: ASCII with no escape or DEL (so no string holds a control character or
    a surrogate), the documented keys only, no label in a prediction, an ISO timestamp
    neither, and every scalar within ``decode``'s bounds; ids and integer versions come
    back as strings and the timestamp in seconds, as ``decode`` gives them. What this does
    not check is left to the caller, who knows more: the model and version names (one
    already known was valid), the feature names (ditto: the names of a known schema) and
    the feature values (``feature_value`` for those outside the bounds of a plain
    number or category). Unbounded numbers cost 40 % of a 20-feature event's decoding
    when msgspec checks them one by one.

    >>> e = scan(b'{"model": "m", "prediction_id": 7, "features": {"x": 1}, "prediction": 0,'
    ...          b' "timestamp": 1700000000000}', "prediction", 1000)
    >>> e.prediction_id, e.model_version, e.features, e.timestamp
    ('7', 'unversioned', {'x': 1.0}, 1700000000.0)
    >>> scan(b'{"model": "m", "prediction_id": "", "label": 1}', "label", 1000) is None
    True
    """
    if (raw is None or len(raw) > max_bytes or not raw.isascii() or _BACKSLASH in raw
            or _DEL in raw):
        return None
    try:
        event = _SCANNERS[kind].decode(raw)
    except msgspec.DecodeError:
        return None
    pid = event.prediction_id
    if type(pid) is str:
        if not 0 < len(pid) <= MAX_ID_LENGTH:
            return None
    elif -_INT64 <= pid < _INT64:
        event.prediction_id = str(pid)
    else:
        return None
    t = event.timestamp
    if t is not None:
        if type(t) is not float or not 0 <= t < 1e14:
            return None
        event.timestamp = t / 1000.0 if t > 1e11 else t
    if type(event) is _LooseLabel:
        return event if _plain_target(event.label) else None
    score, version = event.score, event.model_version
    if (event.label is not None or not _plain_target(event.prediction)
            or score is not None and not -MAX_MAGNITUDE <= score <= MAX_MAGNITUDE):
        return None
    if version is None:
        event.model_version = UNVERSIONED
    elif type(version) is int:
        if not -_INT64 <= version < _INT64:
            return None
        event.model_version = str(version)
    return event


def complete(event: _LoosePrediction | _LooseLabel, max_features: int
             ) -> Prediction | Label | None:
    """The event ``decode`` gives for a scanned message, or None when ``decode`` must
    tell why not. A prediction's features are not checked (``checked`` False: see
    ``check_features``), which the monitor does only for names it does not know.

    >>> complete(scan(b'{"model": "m", "prediction_id": "1", "label": 0}', "label", 99), 9)
    Label(model='m', prediction_id='1', label=0, timestamp=None)
    """
    try:
        model = _check_name(event.model, "model")
        if type(event) is _LooseLabel:
            return Label(model, event.prediction_id, event.label, event.timestamp)
        if len(event.features) > max_features:
            return None
        return Prediction(model, _check_name(event.model_version, "model_version"),
                          event.prediction_id, event.timestamp, event.features,
                          event.prediction, event.score, None, (), False)
    except _Invalid:
        return None


def _plain_target(value: Target) -> bool:
    """Whether ``_target`` keeps ``value`` as it is (for a scanned value: no surrogate)."""
    kind = type(value)
    if kind is str:
        return len(value) <= MAX_NAME_LENGTH
    if kind is int:
        return -2**53 <= value <= 2**53
    if kind is float:
        return -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE
    return True


def feature_value(name: str, value: FeatureValue) -> tuple[FeatureValue, Rejection | None]:
    """What ``decode`` keeps of a scanned feature value (a float, an ASCII string without
    control characters or None), and the rejection when it keeps None instead.

    >>> feature_value("x", 1e300)
    (None, Rejection(kind='feature', reason='out_of_range', detail='features.x: 1e+300 beyond +-1e+100'))
    """
    try:
        return _feature_value(name, value), None
    except _Invalid as exc:
        return None, Rejection("feature", exc.reason, exc.detail)


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
    values, invalid = check_features(features)
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


def check_features(raw: dict[str, Any]) -> tuple[dict[str, FeatureValue], tuple[Rejection, ...]]:
    """The features ``decode`` keeps of a message's ``features`` object (each value refused
    becomes None, each name refused is left out), and the rejections."""
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
                moment = moment.replace(tzinfo=UTC)
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
