"""Model servers' own topics read by the real service (``inputs``), against the real
test broker: a real MLServer answering requests on its Kafka topics; Seldon Core v2's
protobuf topics, picked up by pattern while the service runs, made with MLServer's
generated OIP classes; KServe logger CloudEvents in both content modes. The unit tests
(tests/unit/test_formats.py) prove the exact state; here the whole path runs."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from detector.broker import Tansu, free_port
from detector.sources import create_topics, producer
from tests.conftest import DetectorProcess, Topics, kill, sample, wait_for
from tests.formats_data import FEATURES, inferences, kserve, native, oip_json
from tests.install import one_at_a_time

pytestmark = pytest.mark.integration

#: MLServer pins versions that clash with ours: it gets a virtualenv of its own
VENV = Path.home() / ".cache" / "drift-detector" / "mlserver-venv"
MLSERVER = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1")
ENGINE = {"reference": {"warmup": 100, "window": 100, "evaluate_every": 20},
          "detection": {"warmup": 100}}


@pytest.fixture(scope="session")
def mlserver_python() -> Path:
    """The MLServer virtualenv's python (made, and MLServer installed, if missing)."""
    python = VENV / "bin" / "python"
    with one_at_a_time():
        if not (VENV / "bin" / "mlserver").exists():
            for cmd in ([sys.executable, "-m", "venv", str(VENV)],
                        [str(python), "-m", "pip", "install", "-q", *MLSERVER]):
                done = subprocess.run(cmd, check=False, capture_output=True, text=True)
                assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}"
    return python


TRAIN = """
import json, pathlib, sys
import joblib, numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
out = pathlib.Path(sys.argv[1])
rng = np.random.default_rng(0)
X = pd.DataFrame({"amount": rng.normal(10, 1, 2000), "age": rng.integers(18, 80, 2000) * 1.0,
                  "tenure": rng.normal(5, 2, 2000)})
y = (X["amount"] + 0.05 * X["age"] + rng.normal(0, 1, 2000) > 12.5).astype(int)
joblib.dump(LogisticRegression().fit(X, y), out / "model.joblib")
(out / "model-settings.json").write_text(json.dumps({
    "name": "fraud", "implementation": "mlserver_sklearn.SKLearnModel",
    "parameters": {"uri": "./model.joblib", "version": "v1"}}))
"""


@pytest.fixture
def mlserver(mlserver_python: Path, tansu: Tansu, tmp_path: Path
             ) -> Iterator[tuple[Topics, str, str]]:
    """A real MLServer serving a scikit-learn model (``fraud``, version ``v1``), its
    Kafka server consuming requests from one topic and writing responses to another:
    the test's topics and those two."""
    topics = Topics(tansu)
    requests, responses = f"mlserver-in-{topics.group}", f"mlserver-out-{topics.group}"
    create_topics(topics.kafka, [requests, responses])
    model = tmp_path / "model"
    model.mkdir()
    done = subprocess.run([str(mlserver_python), "-c", TRAIN, str(model)], check=False,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (model / "settings.json").write_text(json.dumps({
        "kafka_enabled": True, "kafka_servers": tansu.bootstrap,
        "kafka_topic_input": requests, "kafka_topic_output": responses,
        "http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 0}))
    log = tmp_path / "mlserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(VENV / "bin" / "mlserver"), "start", str(model)],
                                stdout=out, stderr=out)
    try:
        wait_for(lambda: "Reading messages from consumer" in log.read_text()
                 or proc.poll() is not None, 120, "MLServer's Kafka consumer")
        assert proc.poll() is None, log.read_text()[-3000:]
        yield topics, requests, responses
    finally:
        kill(proc)


def test_mlserver_requests_and_responses_become_monitored_predictions(
        mlserver: tuple[Topics, str, str], tmp_path: Path) -> None:
    topics, requests, responses = mlserver
    d = DetectorProcess(topics, tmp_path, {
        **ENGINE, "kafka": {"fetch_max_wait_ms": 10},
        "inputs": [{"format": "oip", "requests": requests, "responses": responses,
                    "score_output": "predict_proba"}]})
    try:
        d.start()
        # 150 requests of 4 rows; amount moves up 3 standard deviations after 75
        prod = producer(topics.kafka)
        for rid, _, rows, _ in inferences(150):
            columns = {"amount": [row["amount"] for row in rows],
                       "age": [row["age"] for row in rows],
                       "tenure": [random.Random(f"{rid}/{i}").gauss(5.0, 2.0)
                                  for i in range(len(rows))]}
            body = {"parameters": {"content_type": "pd"}, "inputs": [
                {"name": name, "shape": [len(rows), 1], "datatype": "FP64", "data": data}
                for name, data in columns.items()],
                "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
            prod.send(requests, json.dumps(body).encode(), key=rid.encode(),
                      headers=[("mlserver-model", b"fraud")])
        # labels, keyed by <request id>/<row>, for the first 20 requests
        for r in range(20):
            for i in range(4):
                prod.send(topics.labels, json.dumps({"model": "fraud", "label": i % 2,
                                                     "prediction_id": f"req-{r}/{i}"}).encode())
        prod.flush()
        prod.close()
        m = d.wait_events("prediction", "fraud", 600, timeout=120)
        assert sample(m, "drift_input_pairs_total", format="oip", outcome="matched") == 150
        wait_for(lambda: sample(d.metrics(), "drift_label_join_total", model="fraud",
                                outcome="matched") == 80, 30, "80 labels joined")
        m = d.metrics()
        for feature in ("amount", "age", "tenure"):
            assert sample(m, "drift_stream_values_total", model="fraud", model_version="v1",
                          signal="feature", feature=feature, category="") == 600
        fired = {(feature, detector): sample(
            m, "drift_detected", model="fraud", model_version="v1", signal="feature",
            feature=feature, category="", detector=detector)
            for feature in ("amount", "tenure") for detector in ("adwin", "cusum")}
        assert fired == {("amount", "adwin"): 0, ("amount", "cusum"): 1,
                         ("tenure", "adwin"): 0, ("tenure", "cusum"): 0}
        assert sample(m, "drift_events_rejected_total", kind="payload",
                      reason="invalid_payload") == 0
    finally:
        d.kill()


SELDON_PB = """
import json, struct, sys
from mlserver.grpc import dataplane_pb2 as pb
out = []
for rid, t, rows, outputs in json.load(sys.stdin):
    req = pb.ModelInferRequest(model_name="seldon-iris", id=rid)
    for name in ("amount", "age", "country"):
        t_ = req.inputs.add(name=name, shape=[len(rows), 1],
                            datatype="BYTES" if name == "country" else "FP64")
        values = [row[name] for row in rows]
        if name == "country":
            req.raw_input_contents.append(b"".join(struct.pack("<I", len(v)) + v.encode()
                                                   for v in values))
        else:
            req.raw_input_contents.append(struct.pack(f"<{len(values)}d", *values))
    res = pb.ModelInferResponse(model_name="seldon-iris_1", model_version="1", id=rid)
    p = res.outputs.add(name="predict", shape=[len(outputs), 1], datatype="INT64")
    p.contents.int64_contents.extend(o[0] for o in outputs)
    s = res.outputs.add(name="predict_proba", shape=[len(outputs), 2], datatype="FP64")
    s.contents.fp64_contents.extend(v for o in outputs for v in (1.0 - o[1], o[1]))
    out.append([rid, req.SerializeToString().hex(), res.SerializeToString().hex()])
json.dump(out, sys.stdout)
"""


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_seldon_topics_found_by_pattern_and_kserve_events_match_native_events(
        mlserver_python: Path, tansu: Tansu, tmp_path: Path, client: str) -> None:
    topics = Topics(tansu)
    tag = topics.group
    base = f"seldon-{tag}.default.model.seldon-iris"
    create_topics(topics.kafka, [f"kserve-{tag}"])
    d = DetectorProcess(topics, tmp_path, {
        **ENGINE, "kafka": {"client": client, "fetch_max_wait_ms": 10,
                            "topic_check_seconds": 0.5},
        "inputs": [
            {"format": "oip", "score_output": "predict_proba",
             "requests": rf"seldon-{tag}\.default\.model\.(?P<model>[^.]+)\.inputs",
             "responses": rf"seldon-{tag}\.default\.model\.(?P<model>[^.]+)\.outputs"},
            {"format": "cloudevents", "topics": f"kserve-{tag}", "version": "1",
             "feature_names": list(FEATURES), "score_output": "predict_proba"}]})
    try:
        d.start()
        data = inferences()
        # the same inferences, in the same order: as native events, as KServe logger
        # events (content mode and body version taking turns), as Seldon's protobuf
        # topics of a model whose topics appear only now
        prod = producer(topics.kafka)
        for record in native(data, model="native-iris"):
            prod.send(topics.predictions, record.value)
        modes = [("binary", "v1"), ("binary", "v2"), ("structured", "v1"), ("structured", "v2")]
        for i, inference in enumerate(data):
            for r in kserve([inference], *modes[i % 4], model="kserve-iris"):
                prod.send(f"kserve-{tag}", r.value, key=r.key, headers=list(r.headers))
        prod.flush()
        made = subprocess.run([str(mlserver_python), "-c", SELDON_PB], input=json.dumps(data),
                              check=False, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr[-2000:]
        # a new model: its topics appear while the service runs
        create_topics(topics.kafka, [f"{base}.inputs", f"{base}.outputs"])
        for rid, req, res in json.loads(made.stdout):
            headers = [("x-request-id", rid.encode())]
            prod.send(f"{base}.outputs", bytes.fromhex(res), headers=headers)
            prod.send(f"{base}.inputs", bytes.fromhex(req), headers=headers)
        prod.flush()
        prod.close()
        for model in ("native-iris", "kserve-iris", "seldon-iris"):
            d.wait_events("prediction", model, 600, timeout=90)
        m = d.metrics()
        assert sample(m, "drift_input_pairs_total", format="oip", outcome="matched") == 150
        assert sample(m, "drift_input_pairs_total", format="cloudevents",
                      outcome="matched") == 150

        def series(model: str) -> dict:
            return {(name, tuple((k, v) for k, v in labels if k != "model")): value
                    for (name, labels), value in m.items()
                    if ("model", model) in labels
                    and name != "drift_last_event_timestamp_seconds"}
        want = series("native-iris")
        assert len(want) > 50
        assert series("kserve-iris") == want
        assert series("seldon-iris") == want
        assert any(name == "drift_detected" and value == 1 for (name, _), value in want.items())
    finally:
        d.kill()


def test_requests_waiting_at_a_restart_meet_their_responses_after_it(
        tansu: Tansu, tmp_path: Path) -> None:
    """The halves waiting in the join are in the checkpoint: requests read (and
    committed) before a stop are paired with responses read after the restart."""
    topics = Topics(tansu)
    requests, responses = f"in-{topics.group}", f"out-{topics.group}"
    create_topics(topics.kafka, [requests, responses])
    records = oip_json(inferences(20))
    config = {"kafka": {"fetch_max_wait_ms": 10},
              "checkpoint": {"path": str(tmp_path / "state"), "key": "k" * 16,
                             "interval_seconds": 1},
              "inputs": [{"format": "oip", "requests": requests, "responses": responses,
                          "score_output": "predict_proba"}]}

    def send(topic: str, part: list) -> None:
        prod = producer(topics.kafka)
        for r in part:
            prod.send(topic, r.value, key=r.key, headers=list(r.headers or ()))
        prod.flush()
        prod.close()

    first = DetectorProcess(topics, tmp_path, config)
    try:
        first.start()
        send(requests, records[0::2])
        wait_for(lambda: topics.committed(topic=requests) == 20, 60, "requests committed")
        assert first.terminate() == 0, first.logs()
    finally:
        first.kill()
    second = DetectorProcess(topics, tmp_path, config)
    try:
        second.start()
        send(responses, records[1::2])
        m = second.wait_events("prediction", "iris", 80)
        assert sample(m, "drift_input_pairs_total", format="oip", outcome="matched") == 20
        assert sample(m, "drift_input_pairs_total", format="oip", outcome="orphan") == 0
    finally:
        second.kill()
