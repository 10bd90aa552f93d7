"""One stream of inferences written the way each model server logs it, for the format
tests: native events, OIP JSON (MLServer's pandas codec), OIP protobuf (Seldon Core
v2: ``x-request-id`` headers, raw contents), KServe logger CloudEvents built with the
``cloudevents`` SDK (binary Kafka headers, structured; V1 and V2 bodies). Every
variant carries the same rows, so each must leave the same monitor state."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

from detector.records import Record

FEATURES = ("amount", "age", "country")
#: rows per request (a batch): prediction ids are <request id>/<row>
ROWS = 4
T0 = 1.7e9


def inferences(requests: int = 150, seed: int = 7, shift_after: int = 75
               ) -> list[tuple[str, float, list[dict[str, Any]], list[tuple[int, float]]]]:
    """``(request id, time, feature rows, (prediction, score) rows)`` per request; the
    mean of ``amount`` moves by 3 standard deviations after ``shift_after`` requests."""
    rng = random.Random(seed)
    out = []
    for r in range(requests):
        rows, outputs = [], []
        for _ in range(ROWS):
            amount = rng.gauss(10.0 + (3.0 if r >= shift_after else 0.0), 1.0)
            rows.append({"amount": amount, "age": float(rng.randint(18, 80)),
                         "country": rng.choice(["DE", "FR", "IT"])})
            score = round(rng.random(), 6)
            outputs.append((int(score > 0.5), score))
        out.append((f"req-{r}", T0 + r, rows, outputs))
    return out


def native(data: list, model: str = "iris", version: str | None = "1") -> list[Record]:
    """Our own events, one per row."""
    out = []
    for rid, t, rows, outputs in data:
        for i, (features, (pred, score)) in enumerate(zip(rows, outputs, strict=True)):
            event = {"model": model, "prediction_id": f"{rid}/{i}", "timestamp": t,
                     "features": features, "prediction": pred, "score": score}
            if version is not None:
                event["model_version"] = version
            out.append(Record("prediction", json.dumps(event).encode(), t, "predictions"))
    return out


def v2_request(rid: str, rows: list[dict[str, Any]], with_id: bool = True) -> dict[str, Any]:
    """A V2 request as MLServer's pandas codec writes it: one input per column."""
    body: dict[str, Any] = {"parameters": {"content_type": "pd"}, "inputs": [
        {"name": name, "shape": [len(rows), 1],
         "datatype": "BYTES" if name == "country" else "FP64",
         "data": [row[name] for row in rows]} for name in FEATURES]}
    if with_id:
        body["id"] = rid
    return body


def v2_response(rid: str, outputs: list[tuple[int, float]], model: str = "iris",
                version: str = "1") -> dict[str, Any]:
    """A V2 response with ``predict`` and a two-column ``predict_proba``."""
    return {"model_name": model, "model_version": version, "id": rid, "outputs": [
        {"name": "predict", "shape": [len(outputs), 1], "datatype": "INT64",
         "data": [p for p, _ in outputs]},
        {"name": "predict_proba", "shape": [len(outputs), 2], "datatype": "FP64",
         "data": [v for _, s in outputs for v in (1.0 - s, s)]}]}


def oip_json(data: list) -> list[Record]:
    """MLServer's Kafka server: requests keyed by id with the model in a header,
    responses with the id in the body and the key."""
    out = []
    for rid, t, rows, outputs in data:
        out.append(Record("prediction", json.dumps(v2_request(rid, rows, False)).encode(), t,
                          "mlserver-input", key=rid.encode(),
                          headers=(("mlserver-model", b"iris"),)))
        out.append(Record("prediction", json.dumps(v2_response(rid, outputs)).encode(), t,
                          "mlserver-output", key=rid.encode()))
    return out


def cloudevent(rid: str, t: float, side: str, body: dict[str, Any], mode: str,
               model: str = "iris") -> Record:
    """A KServe logger event (the attributes its worker sets) as a Kafka message in
    ``mode`` (``binary``: ``ce_`` headers as Knative's KafkaSink writes them;
    ``structured``: the event as JSON), built with the ``cloudevents`` SDK."""
    from cloudevents.v1.http import CloudEvent
    from cloudevents.v1.kafka import to_binary, to_structured

    event = CloudEvent({
        "id": rid, "type": f"org.kubeflow.serving.inference.{side}",
        "source": f"http://localhost:9081/v1/models/{model}:predict",
        "time": datetime.fromtimestamp(t, UTC).isoformat(),
        "inferenceservicename": model, "namespace": "default", "component": "predictor",
        "endpoint": "default", "metadata": "{}", "datacontenttype": "application/json"},
        json.dumps(body).encode())
    convert = to_binary if mode == "binary" else to_structured
    message = convert(event, key_mapper=lambda e: e["id"], data_marshaller=lambda d: d)
    headers = tuple((k, v) for k, v in message.headers.items())
    key = message.key.encode() if isinstance(message.key, str) else message.key
    return Record("prediction", message.value, t, "kserve-logs", key=key, headers=headers)


def v1_request(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"instances": [[row[name] for name in FEATURES] for row in rows]}


def v1_response(outputs: list[tuple[int, float]]) -> dict[str, Any]:
    """``predict_proba`` through KServe V1: a probability per class and row."""
    return {"predictions": [[1.0 - s, s] for _, s in outputs]}


def kserve(data: list, mode: str, body: str, model: str = "iris") -> list[Record]:
    """KServe logger events of every inference, in content ``mode``, V1 or V2 ``body``."""
    out = []
    for rid, t, rows, outputs in data:
        req = v1_request(rows) if body == "v1" else v2_request(rid, rows)
        res = v1_response(outputs) if body == "v1" else v2_response(rid, outputs, model)
        out += [cloudevent(rid, t, "request", req, mode, model),
                cloudevent(rid, t, "response", res, mode, model)]
    return out
