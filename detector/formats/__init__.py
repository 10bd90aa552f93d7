"""Model servers' own formats, turned into our prediction events before the pipeline.

A model server logs each inference as two messages: its request (the features) and its
response (the outputs). ``Inputs.convert`` takes a batch of records, passes those of
the native topics through unchanged, reads those of the topics named in ``inputs``
(``oip``: Open Inference Protocol V2, JSON or protobuf; ``cloudevents``: KServe's
payload logger, binary or structured mode, V1 or V2 bodies), pairs each request with
its response by their id in a bounded join (``input_join``), and puts one native
prediction record per row in place of the half that completed the pair: ``model``,
``model_version``, ``prediction_id`` = ``<request id>/<row>``, the row's features,
prediction and score, the request's time (its CloudEvent's ``time``, else the
message's). The pipeline then sees nothing but native events; labels still come from the labels topic, keyed by that ``prediction_id``.

The request id is, in this order: the ``x-request-id`` header (Seldon Core v2), the
Kafka message key (MLServer's Kafka server puts it there), the body's ``id``; for a
CloudEvent, its ``id`` (KServe gives request and response the same one). The model is
the input's ``model`` setting, else the topic regex's ``model`` group, else the
event's ``inferenceservicename``, else the response's (then the request's)
``model_name``, else the ``mlserver-model`` header; the version is the input's
``version`` setting, else the response's (then the request's) ``model_version``, else
the ``mlserver-version`` header, else none (``unversioned``).

A message that cannot be read is rejected with kind ``payload`` and a reason of
``REASONS``; a pair whose request and response disagree on the number of rows, or
that names no model, too. Halves that never meet their partner leave the join as
``expired`` (a request without response), ``orphan`` (a response without request),
``request_evicted`` or ``response_evicted`` (the join was full), counted per format
in ``drift_input_pairs_total{format, outcome}`` with the ``matched`` ones. A half whose
id was paired within the last ``input_join.ttl_seconds`` (the last
``input_join.capacity`` pairs) is a repeat, a retried post or a redelivery, and counts
as ``duplicate`` without becoming a second prediction.

>>> from detector.config import Settings
>>> inputs = Inputs(Settings(inputs=[{"format": "oip", "requests": "mlserver-input",
...                                   "responses": "mlserver-output"}]))
>>> req = Record("prediction", b'{"inputs": [{"name": "x", "datatype": "FP64", '
...              b'"shape": [2, 1], "data": [0.5, 1.5]}]}', 1.7e9, "mlserver-input", 0, 7,
...              key=b"r1", headers=(("mlserver-model", b"iris"),))
>>> res = Record("prediction", b'{"id": "r1", "model_name": "iris", "model_version": "v1", '
...              b'"outputs": [{"name": "predict", "datatype": "INT64", "shape": [2, 1], '
...              b'"data": [0, 1]}]}', 1.7e9, "mlserver-output", 0, 3, key=b"r1")
>>> out = inputs.convert([req, res], now=0.0)
>>> [json.loads(r.value) for r in out.records][1]
{'model': 'iris', 'model_version': 'v1', 'prediction_id': 'r1/1', 'timestamp': 1700000000.0, 'features': {'x': 1.5}, 'prediction': 1}
>>> inputs.pairs[("oip", "matched")], out.rejected
(1, [])
"""

from __future__ import annotations

import json
import re
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from detector.config import InputSettings, Settings
from detector.events import Rejection
from detector.formats import cloudevents
from detector.formats.bodies import Half, Side, oip, request_body, response_body
from detector.formats.tensors import Invalid
from detector.join import JoinBuffer
from detector.records import PartitionCounts, Record

#: ``drift_events_rejected_total{kind="payload", reason}``: why a server's message is not used
REASONS: tuple[str, ...] = (
    "empty", "oversized", "invalid_encoding", "invalid_json", "invalid_protobuf",
    "invalid_cloudevent", "invalid_payload", "invalid_tensor", "missing_id",
    "missing_model", "missing_output", "feature_mismatch", "row_mismatch")
KIND = "payload"
#: ``drift_input_pairs_total{format, outcome}``
PAIR_OUTCOMES: tuple[str, ...] = ("matched", "expired", "orphan", "request_evicted",
                                  "response_evicted", "duplicate")
#: the join's outcome names (``detector.join.Dropped``) as pair outcomes
_DROPPED = {"expired": "expired", "orphan": "orphan", "prediction_evicted": "request_evicted",
            "label_evicted": "response_evicted"}
#: longest request id (characters): ids wait in the join, so they are bounded
MAX_ID = 256


class Route:
    """Where the records of one topic go: the input, the side (None: by the event's
    type) and the model its name gives (the pattern's ``model`` group)."""

    __slots__ = ("index", "input", "model", "side")

    def __init__(self, index: int, cfg: InputSettings, side: Side | None,
                 model: str | None) -> None:
        self.index, self.input, self.side, self.model = index, cfg, side, model


@dataclass(slots=True)
class Converted:
    """A batch after ``Inputs.convert``: native records, and the messages rejected."""

    records: list[Record] = field(default_factory=list)
    rejected: list[tuple[Rejection, Record]] = field(default_factory=list)


class Inputs:
    """Reads the ``inputs`` topics of ``settings`` (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        k = settings.kafka
        self._native = {k.predictions_topic, k.labels_topic}
        self._patterns: list[tuple[int, InputSettings, Side | None, re.Pattern[str]]] = []
        for i, cfg in enumerate(settings.inputs):
            if cfg.format == "cloudevents":
                self._patterns.append((i, cfg, None, re.compile(cfg.topics)))
            else:
                self._patterns.append((i, cfg, "request", re.compile(cfg.requests)))
                self._patterns.append((i, cfg, "response", re.compile(cfg.responses)))
        self._routes: dict[str, Route | None] = {}
        j = settings.input_join
        self.join = JoinBuffer(j.ttl_seconds, j.capacity)
        #: (input, request id) of the pairs made lately -> until when a half with that id
        #: is a repeat; oldest first, at most ``input_join.capacity``
        self.paired: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()
        formats = sorted({cfg.format for cfg in settings.inputs})
        #: ``drift_input_pairs_total`` by (format, outcome); every series from the start
        self.pairs: Counter[tuple[str, str]] = Counter(
            {(f, o): 0 for f in formats for o in PAIR_OUTCOMES})
        #: ``pairs`` by the source partition of the half that decided the outcome, and
        #: the source partition of each half waiting (state moves with its partition)
        self.pairs_in = PartitionCounts(self.pairs)
        self._from: dict[tuple[str, str], int] = {}

    def route(self, topic: str) -> Route | None:
        """The route of ``topic``: the first pattern that matches it whole (None: a
        native topic, or one no input names)."""
        if topic in self._routes:
            return self._routes[topic]
        found = None
        if topic not in self._native:
            for i, cfg, side, pattern in self._patterns:
                m = pattern.fullmatch(topic)
                if m is not None:
                    found = Route(i, cfg, side, m.groupdict().get("model") or None)
                    break
        self._routes[topic] = found
        return found

    def convert(self, records: Iterable[Record], now: float) -> Converted:
        """Native records pass; each server message is read and joined, and a completed
        pair becomes one native prediction record per row, where its second half was."""
        out = Converted()
        for record in records:
            route = self.route(record.topic)
            if route is None:
                out.records.append(record)
                continue
            try:
                key, half = self._read(route, record)
                done = (str(route.index), key)
                if done in self.paired:
                    self.pairs_in.add((route.input.format, "duplicate"), record.partition)
                    continue
                pair = (self.join.add_prediction if half.side == "request"
                        else self.join.add_label)(done[0], key, now, (half, record),
                                                  record.partition)
                if pair is None:
                    self._from[done] = record.partition
                else:
                    self._from.pop(done, None)
                    self.pairs_in.add((route.input.format, "matched"), record.partition)
                    self._remember(done, now, record.partition)
                    out.records += self._events(route, key, pair[0], pair[1])
            except Invalid as exc:
                rejection = Rejection(KIND, exc.reason, exc.detail)  # type: ignore[arg-type]
                out.rejected.append((rejection, record))
        self.expire(now)
        return out

    def _remember(self, done: tuple[str, str], now: float, partition: int) -> None:
        paired, j = self.paired, self.settings.input_join
        paired[done] = (now + j.ttl_seconds, partition)
        if len(paired) > j.capacity:
            paired.popitem(last=False)

    def expire(self, now: float) -> None:
        """Count the halves that waited longer than ``input_join.ttl_seconds``, and
        those replaced or evicted since the last call (call it when idle too); forget
        pairs older than the TTL."""
        paired = self.paired
        while paired and next(iter(paired.values()))[0] <= now:
            paired.popitem(last=False)
        dropped = self.join.expire(now)
        formats, waiting = self.settings.inputs, self._from
        for name, keys in zip(dropped._fields, dropped, strict=True):
            for key in keys:
                self.pairs_in.add((formats[int(key[0])].format, _DROPPED[name]),
                                  waiting.pop(key, -1))

    def _read(self, route: Route, record: Record) -> tuple[str, Half]:
        """The join key (request id) and the decoded half of one message."""
        value = record.value
        if not value:
            raise Invalid("empty", "an empty message")
        if len(value) > self.settings.max_event_bytes:
            raise Invalid("oversized", f"{len(value)} bytes > max_event_bytes")
        headers = {k.lower(): v for k, v in record.headers or ()}
        cfg = route.input
        if route.side is None:
            event = cloudevents.read(value, record.headers)
            data = cloudevents.body(event)
            half = (request_body if event.side == "request" else response_body)(data, cfg)
            ext = event.attributes
            half = half._replace(model=ext.get("inferenceservicename") or half.model,
                                 time=ext.get("time"))
            return _bounded(event.id), half
        half = oip(value, route.side, cfg)
        if route.side == "request":
            model, version = headers.get("mlserver-model"), headers.get("mlserver-version")
            half = half._replace(
                model=half.model or (model.decode(errors="replace") if model else None),
                version=half.version or (version.decode(errors="replace") if version else None))
        for raw in (headers.get("x-request-id"), record.key):
            if raw:
                return _bounded(raw.decode(errors="replace")), half
        if half.id:
            return _bounded(half.id), half
        raise Invalid("missing_id", "no x-request-id header, message key or body id")

    def _events(self, route: Route, key: str, request: tuple[Half, Record],
                response: tuple[Half, Record]) -> list[Record]:
        """One native prediction record per row of a pair."""
        (req, req_record), (res, _) = request, response
        cfg = route.input
        model = cfg.model or route.model or res.model or req.model
        if model is None:
            raise Invalid("missing_model", f"request {key[:60]!r}: no model name in the "
                                           "settings, topic, event or response")
        if len(req.rows) != len(res.rows):
            raise Invalid("row_mismatch", f"request {key[:60]!r} has {len(req.rows)} rows, "
                                          f"its response {len(res.rows)}")
        version = cfg.version or res.version or req.version
        base: dict[str, Any] = {"model": model}
        if version is not None:
            base["model_version"] = version
        out = []
        for i, (features, (prediction, score)) in enumerate(zip(req.rows, res.rows,
                                                                  strict=True)):
            event = {**base, "prediction_id": f"{key}/{i}",
                     "timestamp": req.time or req_record.timestamp,
                     "features": features, "prediction": prediction}
            if score is not None:
                event["score"] = score
            out.append(req_record._replace(value=json.dumps(event).encode(), key=None,
                                           headers=None))
        return out

    def take(self, partition: int, remove: bool = False) -> dict[str, Any]:
        """What a checkpoint of source ``partition`` holds of the inputs: its halves
        waiting, its pair counts and its recent pairs; with ``remove`` they leave (the
        partition moves to another instance)."""
        entries = self.join.take([partition], remove)
        paired = [(done, v) for done, v in self.paired.items() if v[1] == partition]
        waiting = {done: partition for side in entries for done, _ in side}
        counts = self.pairs_in.take(partition, remove)
        if remove:
            for done, _ in paired:
                del self.paired[done]
            for done in waiting:
                self._from.pop(done, None)
        return {"input_join": entries, "input_pairs": counts, "input_paired": paired}

    def put(self, partition: int, state: dict[str, Any]) -> None:
        """Take over the inputs' part of a checkpoint of source ``partition`` (in place:
        the metrics read ``pairs``); a checkpoint without inputs leaves them be."""
        if "input_join" not in state:
            return
        entries = state["input_join"]
        self.join.put(entries)
        self._from.update({done: partition for side in entries for done, _ in side})
        self.pairs_in.put(partition, state["input_pairs"])
        merged = sorted([*self.paired.items(), *state["input_paired"]], key=lambda i: i[1][0])
        self.paired = OrderedDict(merged)


def _bounded(rid: str) -> str:
    if len(rid) > MAX_ID:
        raise Invalid("missing_id", f"a request id longer than {MAX_ID} characters")
    return rid
