"""HTTP ingest: CloudEvents POSTed by KServe's payload logger (or anything that speaks
CloudEvents over HTTP), written durably to a Kafka topic before they are acknowledged.

The request (binary mode with ``ce-*`` headers, structured mode
``application/cloudevents+json``, or batched mode ``application/cloudevents-batch+json``)
is checked, turned into Kafka messages in **binary content mode as Knative's KafkaSink
writes them** (the event's data as the value, each attribute as a ``ce_<name>`` header
in UTF-8, the data's media type in ``content-type``) keyed by the event's ``id`` (a
request and its response share the id, so both land on the same partition), and
answered 200 only once every in-sync replica has each message. A consumer therefore
reads an event that came over HTTP exactly as one a KafkaSink delivered.

A request that is refused is answered with the status and ``reason: detail`` in the
body, and counted by reason (``REASONS``, ``drift_ingest_rejected_total``):

============================  ======  ==================================================
reason                        status  when
============================  ======  ==================================================
``unauthorized``              401     basic auth is configured and missing or wrong
``length_required``           411     no ``Content-Length`` (chunked bodies are not read)
``too_large``                 413     body over ``ingest.max_body_bytes``, an event's data
                                      over ``max_event_bytes``, a batch over
                                      ``ingest.burst`` events, or Kafka refused the size
``unsupported_media_type``    415     neither ``ce-*`` headers nor a CloudEvents media type
``invalid_json``              400     a structured or batched body, or JSON data, that is
                                      not JSON
``invalid_event``             400     a required attribute missing or invalid, a bad
                                      attribute name or value
``rate_limited``              429     over ``ingest.rate_per_second`` (``Retry-After``)
``unavailable``               503     Kafka is not connected, or did not acknowledge in
                                      ``ingest.ack_timeout_seconds`` (``Retry-After``)
============================  ======  ==================================================

A 503 does not say that nothing was written: a message may have reached the broker
after the wait ended, and a batch may be written in part. A client that retries such a
request may therefore write an event twice, never lose one; consumers drop repeats by
the CloudEvents ``id`` and ``type`` (KServe gives a request and its response the same
id; ``id`` with ``source`` is unique per event by the specification). KServe's logger
does not retry: an event it posts while the answer is 429 or 503 is lost at the logger,
and counted here.

>>> msgs = from_binary({"ce-specversion": "1.0", "ce-id": "r1", "ce-source": "http://m",
...     "ce-type": "org.kubeflow.serving.inference.request", "ce-endpoint": "%20default",
...     "Content-Type": "application/json"}, b'{"instances": [[1, 2]]}', 1 << 20)
>>> key, value, headers = msgs[0]
>>> key, value, headers[-2:]
('r1', b'{"instances": [[1, 2]]}', [('ce_endpoint', b' default'), ('content-type', b'application/json')])
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Any, Literal, NamedTuple, get_args
from urllib.parse import unquote_to_bytes

import msgspec

from detector.config import IngestSettings
from detector.records import Message, Sink

if TYPE_CHECKING:
    from detector.metrics import RunStatus

log = logging.getLogger(__name__)

Reason = Literal["unauthorized", "length_required", "too_large", "unsupported_media_type",
                 "invalid_json", "invalid_event", "rate_limited", "unavailable"]
REASONS: tuple[Reason, ...] = get_args(Reason)
STATUS: dict[Reason, int] = {
    "unauthorized": 401, "length_required": 411, "too_large": 413,
    "unsupported_media_type": 415, "invalid_json": 400, "invalid_event": 400,
    "rate_limited": 429, "unavailable": 503}

#: The CloudEvents spec: attribute names are lower-case ASCII letters and digits.
_NAME = re.compile(r"[a-z0-9]+")
REQUIRED = ("specversion", "id", "source", "type")
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
_JSON_DECODER = msgspec.json.Decoder()


class Refusal(NamedTuple):
    """Why a request is not accepted (``kind`` is for the service's rate-limited log)."""

    reason: Reason
    detail: str
    kind: str = "ingest"

    @property
    def status(self) -> int:
        return STATUS[self.reason]


class BadEvent(ValueError):
    """A request that is not a valid CloudEvent: its ``Refusal``."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.refusal = Refusal(reason, detail)


def _media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` value, without parameters, in lower case.

    >>> _media_type("Application/CloudEvents+JSON; charset=utf-8")
    'application/cloudevents+json'
    """
    return (content_type or "").split(";", 1)[0].strip().lower()


def _is_json(content_type: str | None) -> bool:
    """Whether data of this media type is JSON (``application/json``, ``*/*+json``,
    ``text/json``).

    >>> [_is_json(t) for t in ("application/json; charset=utf-8", "application/x+json",
    ...                         "text/plain", None)]
    [True, True, False, False]
    """
    media = _media_type(content_type)
    return media in ("application/json", "text/json") or media.endswith("+json")


def _check_json(data: bytes, what: str) -> None:
    try:
        _JSON_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise BadEvent("invalid_json", f"{what} is not JSON: {exc}") from None


def _message(attributes: Mapping[str, str], content_type: str | None, data: bytes,
             max_event_bytes: int) -> Message:
    """The Kafka message (binary content mode) of one event whose attributes are
    already strings; raises ``BadEvent`` if it is not a valid CloudEvent."""
    for name in attributes:
        if not _NAME.fullmatch(name):
            raise BadEvent("invalid_event", f"attribute name {name[:50]!r} is not lower-case "
                           "letters and digits")
    missing = [name for name in REQUIRED if not attributes.get(name)]
    if missing:
        raise BadEvent("invalid_event", f"required attribute{'s' * (len(missing) > 1)} "
                       f"{', '.join(missing)} missing or empty")
    if attributes["specversion"] != "1.0":
        raise BadEvent("invalid_event", f"specversion {attributes['specversion'][:20]!r} is "
                       "not supported (1.0 is)")
    if len(data) > max_event_bytes:
        raise BadEvent("too_large", f"the event's data has {len(data)} bytes, more than "
                       f"max_event_bytes ({max_event_bytes})")
    if _is_json(content_type):
        _check_json(data, "the event's data")
    ordered = [*REQUIRED, *sorted(set(attributes) - set(REQUIRED))]
    headers = [(f"ce_{name}", attributes[name].encode()) for name in ordered]
    if content_type:
        headers.append(("content-type", content_type.encode()))
    return attributes["id"], data, headers


def from_binary(headers: Mapping[str, str], body: bytes, max_event_bytes: int) -> list[Message]:
    """The message of an event in HTTP binary mode: attributes from the ``ce-*``
    headers (percent-decoded, as the HTTP binding encodes them), the data's media type
    from ``Content-Type``, the body as the data. Header names are matched in any case.

    >>> from_binary({"ce-specversion": "1.0", "ce-id": "1"}, b"", 100)
    Traceback (most recent call last):
    ...
    detector.ingest.BadEvent: required attributes source, type missing or empty
    """
    attributes: dict[str, str] = {}
    content_type: str | None = None
    for name, value in headers.items():
        lower = name.lower()
        if lower == "content-type":
            content_type = value
        elif lower.startswith("ce-"):
            try:  # http.server reads header bytes as latin-1
                attributes[lower[3:]] = unquote_to_bytes(value.encode("latin-1")).decode()
            except UnicodeError:
                raise BadEvent("invalid_event", f"header {name[:50]} is not percent-encoded "
                               "UTF-8") from None
    # in binary mode the data's media type is the Content-Type header's
    content_type = content_type or attributes.get("datacontenttype")
    attributes.pop("datacontenttype", None)
    return [_message(attributes, content_type, body, max_event_bytes)]


def _attribute(name: str, value: Any) -> str:
    """An attribute's value from the JSON event format as its canonical string.

    >>> _attribute("sequence", 7), _attribute("sampled", True), _attribute("id", "a")
    ('7', 'true', 'a')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    raise BadEvent("invalid_event", f"attribute {name[:50]!r} is a {type(value).__name__}; "
                   "CloudEvents attributes are strings, integers or booleans")


def _structured(event: Any, max_event_bytes: int) -> Message:
    """The message of one event in the JSON event format (already parsed)."""
    if not isinstance(event, dict):
        raise BadEvent("invalid_event", f"an event is a JSON object, not {type(event).__name__}")
    event = dict(event)
    content_type = event.pop("datacontenttype", None)
    if content_type is not None and not isinstance(content_type, str):
        raise BadEvent("invalid_event", "datacontenttype is not a string")
    if "data_base64" in event:
        if "data" in event:
            raise BadEvent("invalid_event", "data and data_base64 are both set")
        encoded = event.pop("data_base64")
        try:
            data = base64.b64decode(encoded, validate=True) if encoded is not None else b""
        except (binascii.Error, TypeError, ValueError):
            raise BadEvent("invalid_event", "data_base64 is not base64") from None
    elif "data" in event:
        value = event.pop("data")
        if isinstance(value, str) and not _is_json(content_type) and content_type is not None:
            data = value.encode()
        else:
            # JSON data: the format's media type is JSON unless the event says otherwise
            content_type = content_type or "application/json"
            data = msgspec.json.encode(value)
    else:
        data = b""
    attributes = {name: _attribute(name, value) for name, value in event.items()
                  if value is not None}   # a null attribute is an absent one
    return _message(attributes, content_type, data, max_event_bytes)


def parse(headers: Mapping[str, str], body: bytes, max_event_bytes: int) -> list[Message]:
    """The messages of one request, by its mode: batched or structured by the media
    type, else binary if it has a ``ce-specversion`` header. Raises ``BadEvent``.

    >>> body = b'[{"specversion": "1.0", "id": "a", "source": "s", "type": "t", "data": 1}]'
    >>> [(key, value) for key, value, _ in parse({"Content-Type": BATCH}, body, 100)]
    [('a', b'1')]
    >>> parse({"Content-Type": "text/plain"}, b"hi", 100)
    Traceback (most recent call last):
    ...
    detector.ingest.BadEvent: not a CloudEvent: no ce-specversion header, and text/plain is not application/cloudevents+json or application/cloudevents-batch+json
    """
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    media = _media_type(content_type)
    if media.startswith(("application/cloudevents-batch", "application/cloudevents+",
                         "application/cloudevents;")) or media == "application/cloudevents":
        if media not in (STRUCTURED, BATCH):
            raise BadEvent("unsupported_media_type", f"{media} is not supported; the JSON "
                           f"event format is ({STRUCTURED}, {BATCH})")
        try:
            parsed = _JSON_DECODER.decode(body)
        except msgspec.DecodeError as exc:
            raise BadEvent("invalid_json", f"the body is not JSON: {exc}") from None
        if media == STRUCTURED:
            return [_structured(parsed, max_event_bytes)]
        if not isinstance(parsed, list):
            raise BadEvent("invalid_event", "a batch is a JSON array of events")
        out = []
        for i, event in enumerate(parsed):
            try:
                out.append(_structured(event, max_event_bytes))
            except BadEvent as exc:
                raise BadEvent(exc.refusal.reason, f"event {i}: {exc.refusal.detail}") from None
        return out
    if not any(k.lower() == "ce-specversion" for k in headers):
        raise BadEvent("unsupported_media_type", "not a CloudEvent: no ce-specversion header, "
                       f"and {media or 'no media type'} is not {STRUCTURED} or {BATCH}")
    return from_binary(headers, body, max_event_bytes)


class TokenBucket:
    """A thread-safe token bucket: ``rate`` tokens a second, at most ``burst`` saved.

    >>> now = [0.0]
    >>> bucket = TokenBucket(rate=10, burst=20, clock=lambda: now[0])
    >>> bucket.take(20), bucket.take(1)        # the burst, then 0.1 s until a token
    (0.0, 0.1)
    >>> now[0] = 0.5
    >>> bucket.take(5), bucket.take(1)
    (0.0, 0.1)
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._at = float(burst), clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> float:
        """Take ``n`` tokens and return 0, or take none and return the seconds until
        ``n`` would be there."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= n:
                self._tokens -= n
                return 0.0
            return round((n - self._tokens) / self.rate, 6)


class Reply(NamedTuple):
    """The HTTP answer to one request."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class Ingest:
    """The ingest endpoint's logic, called from the HTTP server's request threads.

    ``open`` connects the writer (the service retries it while no broker answers);
    until then, and from ``close`` on, requests are answered 503. ``close`` waits for
    the requests that are writing (at most ``ack_timeout_seconds``) before it closes
    the writer, so a stop never cuts an acknowledged write short.

    Counts go to ``status``: refusals by reason in ``ingest_rejected`` (every reason
    at 0 from the start), messages by outcome in ``sink_messages`` under the writer's
    name (``drift_sink_messages_total{sink="ingest"}``).
    """

    def __init__(self, cfg: IngestSettings, writer: Sink, max_event_bytes: int,
                 status: RunStatus, log_refusal: Callable[[Refusal, float], None]) -> None:
        self.cfg, self.path, self.writer = cfg, cfg.path, writer
        self.name, self.topic = writer.name, writer.topic
        self._max_event_bytes = max_event_bytes
        self._status = status
        self._log_refusal = log_refusal
        self._bucket = TokenBucket(cfg.rate_per_second, cfg.burst)
        # counts change under this lock only (request threads); a scrape reads values
        # of keys that exist from here on
        self._lock = threading.Lock()
        status.enable_sink(writer.name, writer.outcomes)
        status.ingest_rejected = dict.fromkeys(REASONS, 0)
        self._idle = threading.Condition()
        self._writing = 0
        self._open = False

    def open(self) -> None:
        self.writer.open()
        with self._idle:
            self._open = True

    def close(self) -> None:
        with self._idle:
            self._open = False
            self._idle.wait_for(lambda: self._writing == 0,
                                timeout=self.cfg.ack_timeout_seconds + 1)
        self.writer.close()

    def refuse(self, reason: Reason, detail: str,
               headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        """Count and log a refusal; the reply that says why."""
        refusal = Refusal(reason, detail)
        with self._lock:
            self._status.ingest_rejected[reason] += 1
        self._log_refusal(refusal, time.time())
        return Reply(refusal.status, f"{reason}: {detail}\n".encode(), headers=headers)

    def handle(self, headers: Mapping[str, str], body: IO[bytes]) -> Reply:
        """Answer one authorised POST whose body ``body`` has not been read yet."""
        cfg = self.cfg
        if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
            return self.refuse("length_required", "chunked bodies are not read; send "
                               "Content-Length")
        length_text = headers.get("Content-Length")
        if length_text is None or not length_text.strip().isdigit():
            return self.refuse("length_required", "send Content-Length with the body's size")
        length = int(length_text)
        if length > cfg.max_body_bytes:
            return self.refuse("too_large", f"the body has {length} bytes, more than "
                               f"ingest.max_body_bytes ({cfg.max_body_bytes})")
        data = body.read(length)
        if len(data) < length:
            return self.refuse("length_required", f"the body ended after {len(data)} of "
                               f"{length} bytes")
        try:
            messages = parse(headers, data, self._max_event_bytes)
        except BadEvent as exc:
            return self.refuse(exc.refusal.reason, exc.refusal.detail)
        if len(messages) > cfg.burst:
            return self.refuse("too_large", f"a batch of {len(messages)} events is more than "
                               f"ingest.burst ({cfg.burst})")
        wait = self._bucket.take(len(messages))
        if wait:
            return self.refuse("rate_limited", f"over ingest.rate_per_second "
                               f"({cfg.rate_per_second:g} events/s)",
                               (("Retry-After", str(max(1, math.ceil(wait)))),))
        return self._write(messages)

    def _write(self, messages: list[Message]) -> Reply:
        retry = (("Retry-After", str(max(1, math.ceil(self.cfg.hold_seconds)))),)
        with self._idle:
            if not self._open:
                return self.refuse("unavailable", "not connected to Kafka (starting or "
                                   "stopping)", retry)
            self._writing += 1
        try:
            outcomes = self.writer.publish(messages)
        finally:
            with self._idle:
                self._writing -= 1
                self._idle.notify_all()
        with self._lock:
            self._status.count_sink(self.name, outcomes)
        written = outcomes.get("written", 0)
        if written == len(messages):
            # 200, not 202: KServe's logger logs any other status as a failed delivery
            return Reply(200, msgspec.json.encode({"written": written}), "application/json")
        failed = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items())
                           if outcome != "written" and n)
        detail = (f"{written} of {len(messages)} events written to {self.topic} "
                  f"({failed}); retry: repeats are dropped by id and type")
        if outcomes.get("too_large"):
            return self.refuse("too_large", f"Kafka refused the size: {detail}")
        return self.refuse("unavailable", detail, retry)
