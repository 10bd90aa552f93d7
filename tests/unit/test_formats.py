"""Model servers' formats (``detector.formats``): each way of logging the same
inferences leaves the same monitor state as our own events; malformed messages are
rejected with a reason and cost nothing else of their batch."""

from __future__ import annotations

import json
import re
import struct
import threading
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector import state as checkpoints
from detector.config import Settings
from detector.formats import REASONS, Inputs
from detector.formats.oip_pb import ModelInferRequest, ModelInferResponse
from detector.metrics import DriftCollector, RunStatus
from detector.pipeline import Pipeline
from detector.records import Record
from tests.formats_data import (
    FEATURES,
    inferences,
    kserve,
    native,
    oip_json,
    v2_request,
    v2_response,
)

NOW = 2e9
#: small windows so that the stream's shift is detected within a few hundred rows
ENGINE = {"reference": {"warmup": 100, "window": 100, "evaluate_every": 20},
          "detection": {"warmup": 100}}
MLSERVER = {"format": "oip", "requests": "mlserver-input", "responses": "mlserver-output",
            "score_output": "predict_proba"}
SELDON = {"format": "oip", "requests": r"seldon\.(?P<ns>[^.]+)\.model\.(?P<model>[^.]+)\.inputs",
          "responses": r"seldon\.(?P<ns>[^.]+)\.model\.(?P<model>[^.]+)\.outputs",
          "score_output": "predict_proba"}
KSERVE = {"format": "cloudevents", "topics": "kserve-logs", "feature_names": list(FEATURES),
          "score_output": "predict_proba", "version": "1"}


def state(records: list[Record], inputs: list[dict] | None = None) -> tuple[str, Pipeline]:
    """The exported metrics after ``records`` (converted first when ``inputs``)."""
    s = Settings(**ENGINE, inputs=inputs or [])
    p = Pipeline(s)
    if inputs:
        converted = Inputs(s).convert(records, NOW)
        assert converted.rejected == []
        records = converted.records
    p.process(records, NOW)
    return DriftCollector(p, threading.Lock(), RunStatus()).render(), p


@pytest.fixture(scope="module")
def expected() -> str:
    text, p = state(native(inferences()))
    assert sum(m.events["prediction"] for m in p.models.values()) == 600
    detections = [line for line in text.splitlines()
                  if line.startswith('drift_detected{') and 'feature="amount"' in line
                  and line.endswith(" 1.0")]
    assert detections, "the shift of amount must be detected, or equality proves little"
    return text


def test_mlserver_json_pairs_leave_the_state_of_native_events(expected: str) -> None:
    assert state(oip_json(inferences()), [MLSERVER])[0] == expected


def test_pairs_match_in_either_order_and_across_batches(expected: str) -> None:
    records = oip_json(inferences())
    responses_first = records[1::2] + records[0::2]
    s = Settings(**ENGINE, inputs=[MLSERVER])
    inputs, p = Inputs(s), Pipeline(s)
    for at in range(0, len(responses_first), 37):
        p.process(inputs.convert(responses_first[at:at + 37], NOW).records, NOW)
    assert inputs.pairs[("oip", "matched")] == 150
    assert DriftCollector(p, threading.Lock(), RunStatus()).render() == expected


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize("body", ["v1", "v2"])
def test_kserve_cloudevents_leave_the_state_of_native_events(expected: str, mode: str,
                                                             body: str) -> None:
    assert state(kserve(inferences(), mode, body), [KSERVE])[0] == expected


def seldon(data: list, raw: bool) -> list[Record]:
    """Seldon Core v2's topics: protobuf with the id in ``x-request-id``; values in
    ``raw_*_contents`` (``raw``) or in each tensor's contents."""
    out = []
    for rid, t, rows, outputs in data:
        req, res = ModelInferRequest(), ModelInferResponse(model_name="iris_1",
                                                           model_version="1")
        for name in FEATURES:
            tensor = req.inputs.add(name=name, shape=[len(rows), 1],
                                    datatype="BYTES" if name == "country" else "FP64")
            values = [row[name] for row in rows]
            if raw and name == "country":
                req.raw_input_contents.append(b"".join(
                    struct.pack("<I", len(v)) + v.encode() for v in values))
            elif raw:
                req.raw_input_contents.append(struct.pack(f"<{len(values)}d", *values))
            elif name == "country":
                tensor.contents.bytes_contents.extend(v.encode() for v in values)
            else:
                tensor.contents.fp64_contents.extend(values)
        res.outputs.add(name="predict", shape=[len(outputs), 1], datatype="INT64")
        res.outputs.add(name="predict_proba", shape=[len(outputs), 2], datatype="FP64")
        preds = [p for p, _ in outputs]
        probs = [v for _, s in outputs for v in (1.0 - s, s)]
        if raw:
            res.raw_output_contents.append(struct.pack(f"<{len(preds)}q", *preds))
            res.raw_output_contents.append(struct.pack(f"<{len(probs)}d", *probs))
        else:
            res.outputs[0].contents.int64_contents.extend(preds)
            res.outputs[1].contents.fp64_contents.extend(probs)
        headers = (("x-request-id", rid.encode()), ("pipeline", b"iris"))
        out.append(Record("prediction", req.SerializeToString(), t,
                          "seldon.default.model.iris.inputs", headers=headers))
        out.append(Record("prediction", res.SerializeToString(), t,
                          "seldon.default.model.iris.outputs", headers=headers))
    return out


@pytest.mark.parametrize("raw", [False, True])
def test_seldon_protobuf_leaves_the_state_of_native_events(expected: str, raw: bool) -> None:
    # the model's name comes from the topic (the response says iris_1)
    assert state(seldon(inferences(), raw), [SELDON])[0] == expected


def test_halves_that_never_meet_are_counted_by_outcome() -> None:
    s = Settings(inputs=[MLSERVER], input_join={"ttl_seconds": 10, "capacity": 2})
    inputs = Inputs(s)
    data = inferences(6)
    records = oip_json(data)
    requests, responses = records[0::2], records[1::2]
    # two requests wait, a third pushes the oldest out; a response without request waits
    inputs.convert(requests[:3] + [responses[5]], now=0.0)
    assert inputs.pairs[("oip", "request_evicted")] == 1
    inputs.convert([responses[2]], now=1.0)
    assert inputs.pairs[("oip", "matched")] == 1
    inputs.expire(now=20.0)
    assert dict(inputs.pairs) == {("oip", "matched"): 1, ("oip", "expired"): 1,
                                  ("oip", "orphan"): 1, ("oip", "request_evicted"): 1,
                                  ("oip", "response_evicted"): 0, ("oip", "duplicate"): 0}


def test_a_repeated_half_is_a_duplicate_not_a_second_prediction() -> None:
    """A retried post or a redelivered message repeats a half (or both) of a pair
    already made: counted as a duplicate within the TTL, never monitored twice."""
    s = Settings(inputs=[MLSERVER], input_join={"ttl_seconds": 10, "capacity": 100})
    inputs = Inputs(s)
    records = oip_json(inferences(4))
    first = inputs.convert(records, now=0.0).records
    again = inputs.convert(records[:4] + records[6:7], now=5.0).records
    assert len(first) == 4 * len(inferences(4)[0][2]) and again == []
    assert inputs.pairs[("oip", "matched")] == 4
    assert inputs.pairs[("oip", "duplicate")] == 5
    inputs.expire(now=11.0)                 # past the TTL an id may be used again
    assert len(inputs.convert(records[:2], now=11.0).records) == len(first) // 4
    assert inputs.pairs[("oip", "matched")] == 5


def reasons(records: list[Record], cfg: dict) -> list[str]:
    out = Inputs(Settings(inputs=[cfg])).convert(records, NOW)
    return [r.reason for r, _ in out.rejected]


def test_pairs_that_disagree_are_rejected_with_a_reason() -> None:
    (rid, t, rows, outputs), = inferences(1)
    req = Record("prediction", json.dumps(v2_request(rid, rows)).encode(), t, "mlserver-input")
    short = Record("prediction", json.dumps(v2_response(rid, outputs[:3])).encode(), t,
                   "mlserver-output")
    assert reasons([req, short], MLSERVER) == ["row_mismatch"]
    anonymous = {**v2_response(rid, outputs)}
    del anonymous["model_name"]
    res = Record("prediction", json.dumps(anonymous).encode(), t, "mlserver-output")
    assert reasons([req, res], MLSERVER) == ["missing_model"]
    assert reasons([req], {**MLSERVER, "feature_names": ["a", "b"]}) == ["feature_mismatch"]
    assert reasons([req._replace(value=json.dumps(v2_request(rid, rows, False)).encode())],
                   MLSERVER) == ["missing_id"]
    assert reasons([req, res], {**MLSERVER, "prediction_output": "nope"}) == ["missing_output"]


BAD = [
    (b"", "empty"), (b"{", "invalid_json"), (b"[1]", "invalid_payload"),
    (b'{"id": "a"}', "invalid_payload"),
    (b'{"id": "a", "inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [1]}]}',
     "invalid_tensor"),
    (b'{"id": "a", "inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}',
     "invalid_tensor"),
    (b'{"id": "a", "inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": ["1"]}]}',
     "invalid_tensor"),
    (b"\x0a\x05\xff\xfe\xfd\xfc\xfb", "invalid_protobuf"),
]


@pytest.mark.parametrize(("value", "reason"), BAD)
def test_malformed_requests_are_rejected_and_the_rest_of_the_batch_is_kept(
        value: bytes, reason: str) -> None:
    records = oip_json(inferences(2))
    bad = Record("prediction", value, None, "mlserver-input", key=b"bad")
    out = Inputs(Settings(inputs=[MLSERVER])).convert([records[0], bad, *records[1:]], NOW)
    assert [(r.kind, r.reason) for r, _ in out.rejected] == [("payload", reason)]
    assert out.rejected[0][1] is bad
    assert len(out.records) == 8


@pytest.mark.parametrize("variant", ["oip", "binary", "structured"])
def test_a_non_finite_feature_value_costs_that_value_only(variant: str) -> None:
    """Python servers write NaN, Infinity (and a number beyond a float stays one): not
    JSON, but every row of the request is kept, with those values missing."""
    data = inferences(3)
    rows = data[1][2]
    rows[0]["amount"], rows[1]["amount"], rows[2]["age"] = float("nan"), float("inf"), 7e300
    records = oip_json(data) if variant == "oip" else kserve(data, variant, "v2")
    records = [r._replace(value=r.value.replace(b"7e+300", b"1e400")) for r in records]
    s = Settings(inputs=[MLSERVER if variant == "oip" else KSERVE])
    out = Inputs(s).convert(records, NOW)
    assert out.rejected == [] and len(out.records) == 3 * len(rows)
    p = Pipeline(s)
    p.process(out.records, NOW)
    # structured mode carries the data base64-encoded: 7e300 stays, beyond +-1e100
    beyond = "out_of_range" if variant == "structured" else "non_finite"
    assert p.rejected[("feature", "non_finite")] == 3 - (variant == "structured")
    assert p.rejected[("feature", beyond)] >= 1
    streams = next(iter(p.models["iris"].versions.values())).features
    assert (streams["amount"].seen, streams["amount"].missing) == (10, 2)
    assert (streams["age"].seen, streams["age"].missing) == (11, 1)
    assert streams["country"].categorical == 12


def test_cloudevents_without_their_attributes_are_rejected() -> None:
    (rec, _), = [kserve(inferences(1), "binary", "v2")[:2]]
    no_type = rec._replace(headers=tuple(h for h in rec.headers if h[0] != "ce_type"))
    other = rec._replace(headers=tuple((k, b"com.example.thing" if k == "ce_type" else v)
                                       for k, v in rec.headers))
    not_event = Record("prediction", b'{"hello": 1}', None, "kserve-logs")
    xml = rec._replace(headers=tuple((k, b"text/xml" if k == "content-type" else v)
                                     for k, v in rec.headers))
    assert reasons([no_type, other, not_event, xml], KSERVE) == [
        "invalid_cloudevent", "invalid_cloudevent", "invalid_cloudevent", "invalid_payload"]


TOPICS = ["mlserver-input", "mlserver-output", "kserve-logs",
          "seldon.default.model.iris.inputs", "seldon.default.model.iris.outputs"]
header = st.tuples(st.sampled_from(["ce_id", "ce_type", "ce_specversion", "ce_source",
                                    "content-type", "x-request-id", "mlserver-model",
                                    "ce_time"]),
                   st.one_of(st.binary(max_size=20),
                             st.sampled_from([b"1.0", b"org.kubeflow.serving.inference.request",
                                              b"org.kubeflow.serving.inference.response",
                                              b"application/json", b"r1"])))
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "inputs", "outputs", "instances", "predictions", "name",
                         "datatype", "shape", "data", "model_name", "specversion", "type",
                         "source", "data_base64"]), inner, max_size=5),
    max_leaves=20)
value = st.one_of(st.binary(max_size=200), json_value.map(lambda v: json.dumps(v).encode()))


EVERY_FORMAT = Settings(inputs=[MLSERVER, SELDON, KSERVE])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(TOPICS), value,
                          st.lists(header, max_size=6).map(tuple)), max_size=8))
def test_fuzzed_messages_never_raise_and_never_cost_good_pairs(messages: list) -> None:
    good = oip_json(inferences(2))
    junk = [Record("prediction", v, None, t, key=b"r1", headers=h) for t, v, h in messages]
    out = Inputs(EVERY_FORMAT).convert([good[0], *junk, *good[1:]], NOW)
    ids = [json.loads(r.value)["prediction_id"] for r in out.records]
    assert {f"req-{r}/{i}" for r in range(2) for i in range(4)} <= set(ids)
    assert all(r.kind == "payload" for r, _ in out.rejected)


def test_the_readme_configs_of_each_server_are_valid_and_read_their_topics() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Model servers\n")[1].split("\n## ")[0]
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)]
    assert len(blocks) == 4
    routes = {}
    for block in blocks:
        inputs = Inputs(Settings(**block))
        for topic in ("mlserver-input", "mlserver-output", "kserve-payloads",
                      "seldon.default.model.iris.inputs", "seldon.prod.model.iris.outputs",
                      "seldon.default.pipeline.p.inputs"):
            route = inputs.route(topic)
            if route is not None:
                routes[topic] = (route.input.format, route.side, route.model)
    assert routes == {"mlserver-input": ("oip", "request", None),
                      "mlserver-output": ("oip", "response", None),
                      "kserve-payloads": ("cloudevents", None, None),
                      "seldon.default.model.iris.inputs": ("oip", "request", "iris"),
                      "seldon.prod.model.iris.outputs": ("oip", "response", "iris")}


def test_waiting_halves_and_counts_survive_a_checkpoint() -> None:
    """A request read before a checkpoint meets its response read after the restart."""
    s = Settings(inputs=[MLSERVER])
    before = Inputs(s)
    records = oip_json(inferences(2))
    before.convert(records[:3], NOW)            # one pair, and the second request waits
    moved = {p: checkpoints.decode(checkpoints.encode(before.take(p, remove=True), {}, "fp"),
                                   "fp").state
             for p in {r.partition for r in records}}
    assert not before.join.waiting_predictions and not before.pairs[("oip", "matched")]
    after = Inputs(s)
    for partition, saved in moved.items():
        after.put(partition, saved)
    out = after.convert(records[3:], NOW)
    assert [json.loads(r.value)["prediction_id"] for r in out.records] == [
        f"req-1/{i}" for i in range(4)]
    assert after.pairs[("oip", "matched")] == 2


def test_models_named_by_topics_stay_within_the_model_caps() -> None:
    """A new model's topics are converted, but the pipeline's caps still hold."""
    s = Settings(inputs=[SELDON], max_models=1)
    inputs, p = Inputs(s), Pipeline(s)
    data = inferences(2)
    first = seldon(data[:1], raw=False)
    second = [r._replace(topic=r.topic.replace(".iris.", ".wine."))
              for r in seldon(data[1:], raw=False)]
    p.process(inputs.convert(first + second, NOW).records, NOW)
    assert list(p.models) == ["iris"]
    assert p.rejected[("prediction", "model_cap")] == 4


VALID = seldon(inferences(1), raw=True) + seldon(inferences(1), raw=False)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(VALID))), st.lists(st.tuples(
    st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["set", "insert", "cut"])),
    min_size=1, max_size=4))
def test_mutated_protobuf_messages_are_rejected_or_read_never_raise(
        which: int, edits: list) -> None:
    """Valid Seldon messages with bytes changed, inserted or cut out: each is read (a
    mutation may leave a valid message) or rejected with a reason of ``REASONS``."""
    record = VALID[which]
    raw = bytearray(record.value)
    for at, byte, how in edits:
        at %= len(raw) + 1
        if how == "insert":
            raw.insert(at, byte)
        elif how == "cut":
            del raw[at:at + 1 + byte % 8]
        elif at < len(raw):
            raw[at] = byte
    out = Inputs(EVERY_FORMAT).convert([record._replace(value=bytes(raw))], NOW)
    assert all(r.kind == "payload" and r.reason in REASONS for r, _ in out.rejected)
