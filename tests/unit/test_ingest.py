"""CloudEvents from HTTP to Kafka messages (``detector.ingest``): what the SDK's HTTP
binding sends comes out as what its Kafka binding writes; anything else is a
``BadEvent`` with a reason, never another exception."""

from __future__ import annotations

import json
import string

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.ingest import BATCH, REASONS, STATUS, BadEvent, parse

LIMIT = 1 << 20
names = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20).filter(
    lambda n: n not in ("specversion", "id", "source", "type", "time", "datacontenttype",
                        "dataschema", "subject", "data", "data_base64"))
values = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
json_data = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=12)


@st.composite
def events(draw: st.DrawFn) -> CloudEvent:
    attributes = {"id": draw(values), "source": draw(values), "type": draw(values),
                  "specversion": "1.0", "datacontenttype": "application/json",
                  **draw(st.dictionaries(names, values, max_size=4))}
    return CloudEvent(attributes, {"instances": draw(json_data)})


def _expected(event: CloudEvent) -> ce_kafka.KafkaMessage:
    """What the SDK's Kafka binding writes in binary mode, keyed by the event's id."""
    return ce_kafka.to_binary_event(event, key_mapper=lambda e: e.get_id())


@settings(max_examples=150, deadline=None)
@given(events())
def test_every_mode_gives_what_the_kafka_binding_writes(event: CloudEvent) -> None:
    want = _expected(event)
    binary = ce_http.to_binary_event(event)
    structured = ce_http.to_structured_event(event)
    batch = json.dumps([json.loads(structured.body)] * 2).encode()
    for headers, body, n in ((binary.headers, binary.body, 1),
                             (structured.headers, structured.body, 1),
                             ({"Content-Type": BATCH}, batch, 2)):
        got = parse(headers, body, LIMIT)
        assert len(got) == n
        for key, value, kafka_headers in got:
            assert key == want.key
            assert dict(kafka_headers) == want.headers
            assert json.loads(value) == json.loads(want.value)
    assert parse(binary.headers, binary.body, LIMIT)[0][1] == binary.body   # unchanged


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["ce-specversion", "ce-id", "ce-source", "ce-type",
                                        "Content-Type", "ce-x", "CE-Y", "ce-", "ce-Bad_Name"]),
                       st.text(max_size=12), max_size=7),
       st.binary(max_size=64) | json_data.map(lambda d: json.dumps(d).encode()))
def test_any_request_is_messages_or_a_reasoned_refusal(headers: dict, body: bytes) -> None:
    for content_type in (None, "application/cloudevents+json", BATCH, "application/json"):
        if content_type is not None:
            headers = {**headers, "Content-Type": content_type}
        try:
            messages = parse(headers, body, 32)
        except BadEvent as exc:
            assert exc.refusal.reason in REASONS and exc.refusal.status == STATUS[
                exc.refusal.reason] and exc.refusal.detail
            continue
        for key, value, kafka_headers in messages:
            assert key and len(value) <= 32
            assert all(name.startswith("ce_") or name == "content-type"
                       for name, _ in kafka_headers)


def test_refusals_name_the_problem() -> None:
    ok = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"}
    cases = {
        "unsupported_media_type": ({"Content-Type": "application/cloudevents+xml"}, b"<a/>"),
        "invalid_json": ({"Content-Type": BATCH}, b"[{"),
        "too_large": ({**ok, "Content-Type": "text/plain"}, b"x" * 33),
    }
    for reason, (headers, body) in cases.items():
        try:
            parse(headers, body, 32)
        except BadEvent as exc:
            assert exc.refusal.reason == reason, exc
        else:
            raise AssertionError(f"{reason}: accepted")
    invalid = [({**ok, "ce-specversion": "0.3"}, b"", "specversion '0.3' is not supported"),
               ({**ok, "ce-Bad_Name": "x"}, b"", "attribute name 'bad_name'"),
               ({**ok, "ce-id": "%FF"}, b"", "header ce-id is not percent-encoded UTF-8"),
               ({"Content-Type": BATCH}, b'[{"id": "1"}, 3]', "event 0: required attributes"),
               ({"Content-Type": "application/cloudevents+json"},
                b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "n": 1.5}',
                "attribute 'n' is a float")]
    for headers, body, detail in invalid:
        try:
            parse(headers, body, 32)
        except BadEvent as exc:
            assert (exc.refusal.reason, str(exc)[:len(detail)]) == ("invalid_event", detail)
        else:
            raise AssertionError(f"{detail}: accepted")
