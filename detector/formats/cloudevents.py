"""CloudEvents read from Kafka messages, in either content mode of the Kafka protocol
binding: binary (attributes in ``ce_*`` headers, the data as the message value, its
type in ``content-type``; how Knative's KafkaSink writes them) or structured (the whole
event as a JSON object, ``content-type: application/cloudevents+json``).

KServe's payload logger sends one event per request and one per response, of types
``org.kubeflow.serving.inference.request`` and ``...response``, sharing their ``id``,
with the InferenceService's name, namespace, component and endpoint as extensions.

>>> e = read(b'{"instances": [[1, 2]]}', (("ce_specversion", b"1.0"), ("ce_id", b"r1"),
...          ("ce_type", b"org.kubeflow.serving.inference.request"),
...          ("ce_source", b"http://m/"), ("ce_inferenceservicename", b"iris"),
...          ("content-type", b"application/json")))
>>> e.id, e.side, e.attributes["inferenceservicename"], e.data
('r1', 'request', 'iris', b'{"instances": [[1, 2]]}')
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, NamedTuple

from detector.formats.bodies import Side, parse_json
from detector.formats.tensors import Invalid

REQUIRED = ("specversion", "id", "source", "type")
#: longest attribute value kept (characters)
MAX_ATTRIBUTE = 1024


class CloudEvent(NamedTuple):
    id: str
    side: Side
    #: every context attribute and extension, as text
    attributes: dict[str, str]
    #: the data: bytes, or (structured mode, JSON data) its value already parsed
    data: bytes | Any
    content_type: str


def _side(type_: str) -> Side:
    if type_.endswith(".request"):
        return "request"
    if type_.endswith(".response"):
        return "response"
    raise Invalid("invalid_cloudevent", f"type {type_[:100]!r} ends in neither .request "
                                        "nor .response")


def _event(attributes: dict[str, str], data: bytes | Any, content_type: str) -> CloudEvent:
    missing = [a for a in REQUIRED if not attributes.get(a)]
    if missing:
        raise Invalid("invalid_cloudevent", f"no {', '.join(missing)} attribute")
    if attributes["specversion"] != "1.0":
        raise Invalid("invalid_cloudevent", f"specversion {attributes['specversion'][:20]!r}"
                                            ", not 1.0")
    return CloudEvent(attributes["id"], _side(attributes["type"]), attributes, data,
                      content_type)


def _text(raw: bytes, what: str) -> str:
    try:
        value = raw.decode()
    except UnicodeDecodeError:
        raise Invalid("invalid_encoding", f"{what} is not UTF-8") from None
    if len(value) > MAX_ATTRIBUTE:
        raise Invalid("invalid_cloudevent", f"{what} is longer than {MAX_ATTRIBUTE}")
    return value


def read(value: bytes, headers: tuple[tuple[str, bytes], ...] | None) -> CloudEvent:
    """The CloudEvent of one Kafka message: binary mode if any header starts with
    ``ce_`` (any case), else structured mode."""
    attributes: dict[str, str] = {}
    content_type = ""
    for name, raw in headers or ():
        lower = name.lower()
        if lower.startswith("ce_"):
            attributes[lower[3:]] = _text(raw or b"", f"header {name[:40]!r}")
        elif lower == "content-type":
            content_type = _text(raw or b"", "content-type")
    if attributes:
        return _event(attributes, value, content_type)
    return structured(value, content_type)


def structured(value: bytes, content_type: str = "") -> CloudEvent:
    """An event in structured mode: a JSON object with the attributes at the top level
    and ``data`` (a JSON value) or ``data_base64``. The data's content type is its
    ``datacontenttype``, else the message's ``content-type`` unless that names the
    event format (the Python SDK moves ``datacontenttype`` there), else JSON."""
    obj = parse_json(value)
    if not isinstance(obj, dict):
        raise Invalid("invalid_cloudevent", "a structured event is a JSON object")
    attributes = {}
    for key, v in obj.items():
        if key in ("data", "data_base64"):
            continue
        if not isinstance(v, str | int | bool) or len(str(v)) > MAX_ATTRIBUTE:
            raise Invalid("invalid_cloudevent", f"attribute {key[:40]!r} is no short "
                                                "string, integer or boolean")
        attributes[key.lower()] = str(v).lower() if type(v) is bool else str(v)
    if content_type.startswith("application/cloudevents"):
        content_type = ""
    content_type = attributes.get("datacontenttype") or content_type or "application/json"
    if "data_base64" in obj:
        try:
            data: bytes | Any = base64.b64decode(obj["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise Invalid("invalid_cloudevent", "data_base64 is not base64") from None
    else:
        data = obj.get("data")
        if isinstance(data, str):      # JSON sent as a string: its text
            data = data.encode()
    return _event(attributes, data, content_type)


def body(event: CloudEvent) -> Any:
    """The event's data as a JSON value (KServe's payloads are JSON)."""
    data = event.data
    if isinstance(data, bytes):
        ct = event.content_type.split(";")[0].strip().lower()
        if ct and ct != "application/json" and not ct.endswith("+json"):
            raise Invalid("invalid_payload", f"data of content type {ct[:60]!r}, not JSON")
        return parse_json(data)
    return data

