"""Request and response bodies of a model server, read into a ``Half``: its id, the
model and version it names, and its rows (features for a request, ``(prediction,
score)`` for a response).

Open Inference Protocol (V2) bodies come as JSON (``{"id", "inputs": [tensor, ...]}``,
``{"model_name", "model_version", "id", "outputs": [...]}``) or as protobuf
``ModelInferRequest`` / ``ModelInferResponse``; KServe V1 bodies as JSON
(``{"instances": [...]}``, ``{"predictions": [...]}``).

>>> from detector.config import InputSettings
>>> cfg = InputSettings(format="oip", requests="in", responses="out")
>>> req = request_json(b'{"id": "r1", "inputs": [{"name": "age", "datatype": "INT64", '
...                    b'"shape": [2], "data": [41, 37]}]}', cfg)
>>> req.id, req.rows
('r1', [{'age': 41}, {'age': 37}])
>>> res = response_json(b'{"model_name": "iris", "model_version": "2", "id": "r1", '
...                     b'"outputs": [{"name": "predict", "datatype": "INT64", '
...                     b'"shape": [2, 1], "data": [1, 0]}]}', cfg)
>>> res.model, res.version, res.rows
('iris', '2', [(1, None), (0, None)])
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, NamedTuple

import msgspec

from detector.config import InputSettings
from detector.formats.tensors import (
    Invalid,
    Tensor,
    Value,
    check_shape,
    feature_rows,
    from_raw,
    output_rows,
    tensor_from_json,
    text,
    v1_feature_rows,
    v1_output_rows,
)

Side = Literal["request", "response"]


class Half(NamedTuple):
    """One side of an inference, decoded."""

    side: Side
    #: the id the body carries (None: the pairing takes it from headers or the key)
    id: str | None
    model: str | None
    version: str | None
    #: features per row (request) or ``(prediction, score)`` per row (response)
    rows: list[Any]
    #: when it happened, if the message says (a CloudEvent's ``time``)
    time: str | None = None


def parse_json(raw: bytes) -> Any:
    """The JSON value of ``raw``. ``NaN``, ``Infinity``, ``-Infinity`` and numbers
    beyond a float are not JSON, but Python servers write them for non-finite values
    (``json.dumps``' default): a body with one is read by ``json`` instead, the number
    becomes a float, and that one feature value is refused downstream (rejected as
    ``non_finite``, counted as missing) instead of every row of the message.

    >>> parse_json(b'{"data": [1.5, NaN, -Infinity, 1e400]}')
    {'data': [1.5, nan, -inf, inf]}
    """
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        problem = str(exc)
        if problem == "Number out of range" or _NON_FINITE.search(raw):
            try:
                return json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError):   # UnicodeDecodeError and JSON's errors
                pass
        reason = "invalid_encoding" if "UTF-8" in problem else "invalid_json"
        raise Invalid(reason, problem[:200]) from None


#: what json reads as a non-finite number, and msgspec refuses
_NON_FINITE = re.compile(rb"NaN|Infinity")


def _names(obj: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """``(id, model_name, model_version)`` of a body, each a string or None."""
    out = []
    for key in ("id", "model_name", "model_version"):
        value = obj.get(key)
        if value is not None and type(value) is not str:
            raise Invalid("invalid_payload", f"{key} must be a string")
        out.append(value or None)
    return out[0], out[1], out[2]


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("invalid_payload", "the body is not a JSON object")
    return body


def request_body(body: Any, cfg: InputSettings) -> Half:
    """A request from its JSON value: V2 (``inputs``) or V1 (``instances``)."""
    obj = _object(body)
    rid, model, version = _names(obj)
    if "inputs" in obj:
        inputs = obj["inputs"]
        if not isinstance(inputs, list):
            raise Invalid("invalid_payload", "inputs must be a list of tensors")
        rows = feature_rows([tensor_from_json(t) for t in inputs], cfg.feature_names)
    elif "instances" in obj:
        rows = v1_feature_rows(obj["instances"], cfg.feature_names)
    else:
        raise Invalid("invalid_payload", "a request has inputs (V2) or instances (V1)")
    return Half("request", rid, model, version, rows)


def response_body(body: Any, cfg: InputSettings) -> Half:
    """A response from its JSON value: V2 (``outputs``) or V1 (``predictions``)."""
    obj = _object(body)
    rid, model, version = _names(obj)
    if "outputs" in obj:
        outputs = obj["outputs"]
        if not isinstance(outputs, list):
            raise Invalid("invalid_payload", "outputs must be a list of tensors")
        rows: list[tuple[Value, Value]] = output_rows(
            [tensor_from_json(t) for t in outputs], cfg.prediction_output,
            cfg.score_output, cfg.score_column)
    elif "predictions" in obj:
        rows = v1_output_rows(obj["predictions"], cfg.score_column)
    else:
        raise Invalid("invalid_payload", "a response has outputs (V2) or predictions (V1)")
    return Half("response", rid, model, version, rows)


def request_json(raw: bytes, cfg: InputSettings) -> Half:
    return request_body(parse_json(raw), cfg)


def response_json(raw: bytes, cfg: InputSettings) -> Half:
    return response_body(parse_json(raw), cfg)


def _pb_tensors(tensors: Any, raw: Any, side: str) -> list[Tensor]:
    """Tensors of a protobuf message: values from ``raw_*_contents`` (one per tensor,
    in order) when there are any, else from each tensor's ``contents``."""
    from detector.formats.oip_pb import CONTENTS_FIELD

    if raw and len(raw) != len(tensors):
        raise Invalid("invalid_tensor", f"{len(tensors)} {side} tensors, {len(raw)} raw "
                                        "contents")
    out = []
    for i, t in enumerate(tensors):
        if raw:
            out.append(from_raw(t.name, t.datatype, list(t.shape), raw[i]))
            continue
        field = CONTENTS_FIELD.get(t.datatype)
        if field is None:
            raise Invalid("invalid_tensor", f"tensor {t.name[:60]!r}: datatype "
                                            f"{t.datatype[:20]!r} has no contents field")
        values = list(getattr(t.contents, field))
        if t.datatype == "BYTES":
            values = [text(v, t.name) for v in values]
        out.append(Tensor(t.name, t.datatype,
                          check_shape(t.name, t.datatype, list(t.shape), len(values)), values))
    return out


def _pb_message(raw: bytes, name: str) -> Any:
    try:
        from google.protobuf.message import DecodeError

        from detector.formats import oip_pb
    except ImportError:
        raise Invalid("invalid_protobuf", "protobuf is not installed: pip install "
                                          "'drift-detector[protobuf]'") from None
    try:
        return getattr(oip_pb, name).FromString(raw)
    except (DecodeError, RecursionError) as exc:
        raise Invalid("invalid_protobuf", f"not a {name}: {str(exc)[:150]}") from None


def request_protobuf(raw: bytes, cfg: InputSettings) -> Half:
    """A request from a protobuf ``ModelInferRequest``."""
    m = _pb_message(raw, "ModelInferRequest")
    rows = feature_rows(_pb_tensors(m.inputs, m.raw_input_contents, "input"),
                        cfg.feature_names)
    return Half("request", m.id or None, m.model_name or None, m.model_version or None, rows)


def response_protobuf(raw: bytes, cfg: InputSettings) -> Half:
    """A response from a protobuf ``ModelInferResponse``."""
    m = _pb_message(raw, "ModelInferResponse")
    rows = output_rows(_pb_tensors(m.outputs, m.raw_output_contents, "output"),
                       cfg.prediction_output, cfg.score_output, cfg.score_column)
    return Half("response", m.id or None, m.model_name or None, m.model_version or None, rows)


def oip(raw: bytes, side: Side, cfg: InputSettings) -> Half:
    """An OIP message of ``side``: JSON when it starts with ``{`` or ``[`` (after white
    space), else protobuf (a request or response never starts with those bytes: they
    would open fields 15 and 11 as groups)."""
    if raw.lstrip()[:1] in (b"{", b"["):
        return (request_json if side == "request" else response_json)(raw, cfg)
    return (request_protobuf if side == "request" else response_protobuf)(raw, cfg)
