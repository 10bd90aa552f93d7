"""HTTP ingest (KServe's payload logger) against the real service and a real broker:
every mode, the status codes, TLS and basic auth, the limits, Kafka down, and a kill -9
while a client posts."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent
from prometheus_client.parser import text_string_to_metric_families

from detector.broker import Tansu
from detector.ingest import BATCH, REASONS
from detector.sources import create_topics
from tests.conftest import DetectorProcess, Topics, read_topic, sample, scrape, wait_for

pytestmark = pytest.mark.integration

AUTH = ("logger", "s3cret-pass")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1, self-made."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=server", "-keyout",
             "server.key", "-out", "server.csr", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "san.cnf", cwd=d)
    return d


def kserve_event(request_id: str, kind: str = "request", data: object = None) -> CloudEvent:
    """An event with the attributes KServe's logger sets."""
    return CloudEvent({
        "id": request_id, "source": "http://localhost:9081/",
        "type": f"org.kubeflow.serving.inference.{kind}", "specversion": "1.0",
        "time": datetime(2026, 11, 24, 7, 0, tzinfo=UTC),
        "datacontenttype": "application/json",
        "inferenceservicename": "sklearn-iris", "namespace": "models",
        "component": "predictor", "endpoint": "default"},
        data if data is not None else {"instances": [[6.8, 2.8, 4.8, 1.4]]})


def post(url: str, body: bytes, headers: dict[str, str], auth: tuple[str, str] | None = AUTH,
         ctx: ssl.SSLContext | None = None, timeout: float = 30
         ) -> tuple[int, str, dict[str, str]]:
    """Status, body and headers of one POST (any status)."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    if auth is not None:
        req.add_header("Authorization",
                       "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def ingest_topic(topics: Topics) -> str:
    """A fresh ingest topic of one partition (so that it reads back in order)."""
    topic = f"ingest-{topics.group.removeprefix('group-')}"
    create_topics(topics.kafka, [topic], 1)
    return topic


CLIENTS = pytest.mark.parametrize("client", ["kafka-python", "confluent"])


@CLIENTS
def test_modes_codes_tls_auth_and_limits_as_kafkasink_writes(
        tansu: Tansu, pki: Path, tmp_path: Path, client: str) -> None:
    """Binary, structured and batched events are written as the CloudEvents Kafka binding
    writes them (attributes, content type, value; key = id); bad requests get their
    status and reason and are counted; over TLS, behind basic auth; with either Kafka
    client."""
    topics = Topics(tansu)
    topic = ingest_topic(topics)
    d = DetectorProcess(topics, tmp_path, {
        "kafka": {"client": client},
        "metrics": {"tls_certfile": str(pki / "server.pem"),
                    "tls_keyfile": str(pki / "server.key"),
                    "basic_auth_username": AUTH[0], "basic_auth_password": AUTH[1]},
        "ingest": {"enabled": True, "topic": topic, "path": "/v1/events",
                   "max_body_bytes": 4096, "rate_per_second": 0.01, "burst": 12}})
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    d.proc = d.launch()
    try:
        wait_for(lambda: _ready(d.port, ctx) or d.proc.poll() is not None, 30, "readiness")
        assert d.proc.poll() is None, d.logs()
        _modes_codes_and_limits(tansu, d.port, topic, ctx)
    finally:
        d.kill()


def _ready(port: int, ctx: ssl.SSLContext) -> bool:
    try:
        return urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx,
                                      timeout=5).status == 200
    except OSError:
        return False


def _modes_codes_and_limits(tansu: Tansu, port: int, topic: str, ctx: ssl.SSLContext) -> None:
    url = f"https://127.0.0.1:{port}/v1/events"

    binary = kserve_event("req-1")
    msg = ce_http.to_binary_event(binary)
    assert post(url, msg.body, msg.headers, ctx=ctx)[0] == 200
    response = kserve_event("req-1", "response", {"predictions": [1]})
    msg = ce_http.to_structured_event(response)
    assert post(url, msg.body, msg.headers, ctx=ctx)[0] == 200
    batch = [kserve_event(f"req-{i}") for i in (2, 3)]
    body = json.dumps([json.loads(ce_http.to_structured_event(e).body) for e in batch])
    code, text, _ = post(url, body.encode(), {"Content-Type": BATCH}, ctx=ctx)
    assert (code, json.loads(text)) == (200, {"written": 2})

    written = read_topic(tansu.bootstrap, topic)
    assert len(written) == 4
    for event, record in zip([binary, response, *batch], written, strict=True):
        want = ce_kafka.to_binary_event(event, key_mapper=lambda e: e.get_id())
        assert record.key.decode() == want.key
        assert dict(record.headers) == want.headers
        assert json.loads(record.value) == json.loads(want.value)
    assert written[0].value == ce_http.to_binary_event(binary).body   # binary: unchanged

    good = ce_http.to_binary_event(kserve_event("req-9"))
    refused = {
        "unauthorized": post(url, good.body, good.headers, auth=None, ctx=ctx),
        "wrong_password": post(url, good.body, good.headers, auth=(AUTH[0], "nope"), ctx=ctx),
        "unsupported_media_type": post(url, b"{}", {"Content-Type": "application/json"},
                                       ctx=ctx),
        "invalid_event": post(url, good.body, {**good.headers, "ce-id": ""}, ctx=ctx),
        "invalid_json": post(url, b'{"instances": [1,', good.headers, ctx=ctx),
        "structured_invalid_json": post(url, b"{", {"Content-Type":
                                                    "application/cloudevents+json"}, ctx=ctx),
        "too_large": post(url, b" " * 5000, good.headers, ctx=ctx),
    }
    codes = {name: code for name, (code, _, _) in refused.items()}
    assert codes == {"unauthorized": 401, "wrong_password": 401, "unsupported_media_type": 415,
                     "invalid_event": 400, "invalid_json": 400, "structured_invalid_json": 400,
                     "too_large": 413}
    assert refused["unauthorized"][2]["WWW-Authenticate"].startswith("Basic")
    assert refused["invalid_event"][1].startswith("invalid_event: required attribute id")
    assert refused["too_large"][1].startswith("too_large: the body has 5000 bytes")
    # no plain HTTP next to TLS
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        post(f"http://127.0.0.1:{port}/v1/events", good.body, good.headers)

    # one kept-alive connection carries several events; a refusal that leaves the body
    # unread closes it
    auth = "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    statuses = []
    for headers in (good.headers, good.headers, {**good.headers, "Content-Length": "9999"}):
        conn.request("POST", "/v1/events", good.body, {**headers, "Authorization": auth})
        resp = conn.getresponse()
        resp.read()
        statuses.append((resp.status, resp.getheader("Connection")))
    conn.close()
    assert statuses == [(200, None), (200, None), (413, "close")]

    # the burst (12) is spent: 6 above, then at most 6 more before a 429
    answers = [post(url, good.body, good.headers, ctx=ctx) for _ in range(7)]
    assert [code for code, _, _ in answers] == [200] * 6 + [429]
    assert int(answers[-1][2]["Retry-After"]) >= 1

    req = urllib.request.Request(f"https://127.0.0.1:{port}/metrics",
                                 headers={"Authorization": auth})
    text = urllib.request.urlopen(req, context=ctx, timeout=5).read().decode()
    m = {(s.name, tuple(sorted(s.labels.items()))): s.value
         for f in text_string_to_metric_families(text) for s in f.samples}
    assert {reason: sample(m, "drift_ingest_rejected_total", reason=reason)
            for reason in REASONS} == {
        "unauthorized": 2, "length_required": 0, "too_large": 2, "unsupported_media_type": 1,
        "invalid_json": 2, "invalid_event": 1, "rate_limited": 1, "unavailable": 0}
    assert sample(m, "drift_sink_messages_total", sink="ingest", outcome="written") == 12
    assert len(read_topic(tansu.bootstrap, topic)) == 12


@CLIENTS
def test_kafka_down_is_503_never_2xx(tmp_path: Path, client: str) -> None:
    """With the broker gone, a post is answered 503 with Retry-After within the ack
    timeout (2 s), then at once while the sink holds (1 s), and counted."""
    broker = Tansu(log_path=tmp_path / "tansu.log").start()
    d = None
    try:
        topics = Topics(broker)
        d = DetectorProcess(topics, tmp_path, {"kafka": {"client": client}, "ingest": {
            "enabled": True, "topic": ingest_topic(topics), "ack_timeout_seconds": 2.0,
            "hold_seconds": 1.0}}).start()
        url = f"http://127.0.0.1:{d.port}/ingest"
        msg = ce_http.to_binary_event(kserve_event("before"))
        assert post(url, msg.body, msg.headers, auth=None)[0] == 200
        broker.kill()
        answers, took = [], []
        for _ in range(3):
            started = time.monotonic()
            try:
                answers.append(post(url, msg.body, msg.headers, auth=None, timeout=20))
            except OSError as exc:
                raise AssertionError(f"{exc!r} after {time.monotonic() - started:.1f} s; "
                                     f"exit code {d.proc.poll()}; {d.logs()}") from exc
            took.append(time.monotonic() - started)
        assert [code for code, _, _ in answers] == [503] * 3, answers
        assert max(took) < 5.0, took          # the 2 s ack timeout, and some slack
        assert all(int(h["Retry-After"]) >= 1 for _, _, h in answers)
        assert answers[0][1].startswith("unavailable: 0 of 1 events written")
        m = d.metrics()
        assert sample(m, "drift_ingest_rejected_total", reason="unavailable") == 3
        assert sample(m, "drift_sink_messages_total", sink="ingest", outcome="written") == 1
    finally:
        if d is not None:
            d.kill()
        broker.stop()


@CLIENTS
def test_kill_9_while_posting_loses_no_acknowledged_event(tansu: Tansu, tmp_path: Path,
                                                          client: str) -> None:
    """Four clients post request and response events with unique ids into a service that
    also reads them back (``inputs``); it is killed with SIGKILL in the middle and
    restarted; the clients retry what was not acknowledged (as a retrying logger does).
    Every acknowledged id is in the topic; an id appears twice only if a post of it went
    unanswered; and the monitor counts every pair exactly once: its state (the halves
    waiting, the pairs made) is kept with the offsets it covers."""
    topics = Topics(tansu)
    topic = ingest_topic(topics)
    d = DetectorProcess(topics, tmp_path, {
        "kafka": {"client": client}, "ingest": {"enabled": True, "topic": topic},
        "checkpoint": {"interval_events": 100},
        "inputs": [{"format": "cloudevents", "topics": topic, "version": "1",
                    "feature_names": ["a", "b", "c", "d"]}]})
    d.start()
    url = f"http://127.0.0.1:{d.port}/ingest"
    acked: Counter[tuple[str, str]] = Counter()
    unanswered: Counter[tuple[str, str]] = Counter()   # posts without a 2xx (killed, 503)
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        for i in range(n):
            event_id = f"{uuid.uuid4()}"
            for kind, data in (("request", {"instances": [[i % 7, 1.0, 2.0, 3.0]]}),
                               ("response", {"predictions": [i % 2]})):
                msg = ce_http.to_binary_event(kserve_event(event_id, kind, data))
                while not stop.is_set():
                    try:
                        code = post(url, msg.body, msg.headers, auth=None, timeout=10)[0]
                    except (OSError, http.client.HTTPException):
                        code = 0      # refused, reset, or cut off mid-answer: not answered
                    with lock:
                        if 200 <= code < 300:
                            acked[(event_id, kind)] += 1
                            break
                        unanswered[(event_id, kind)] += 1
                    stop.wait(0.05)   # back off while the service restarts

    clients = [threading.Thread(target=client, args=(150,)) for _ in range(4)]
    try:
        for c in clients:
            c.start()
        wait_for(lambda: sum(acked.values()) >= 300, 60, "300 acknowledged posts")
        d.proc.kill()                 # SIGKILL: no shutdown, nothing flushed or saved
        d.proc.wait()
        with lock:
            acked_at_kill = set(acked)
        d.start()
        for c in clients:
            c.join(120)
        assert not any(c.is_alive() for c in clients)
        m = wait_for(lambda: (lambda s: s if sample(s, "drift_events_total", kind="prediction",
                                                    model="sklearn-iris") == 600 else None)(
            scrape(d.port)), 60, "600 pairs counted")
        assert sample(m, "drift_input_pairs_total", format="cloudevents",
                      outcome="matched") == 600
    finally:
        stop.set()
        d.kill()
    written = Counter(r.key.decode() for r in read_topic(tansu.bootstrap, topic))
    ids = {i for i, _ in acked}
    assert len(acked) == 1200 and ids == set(written)
    assert {i for i, _ in acked_at_kill} <= set(written), "an acknowledged event is lost"
    repeated = {i for i, n in written.items() if n > 2}
    assert repeated <= {i for i, _ in unanswered}, "a repeat of an id that was never retried"
    print(f"acknowledged {len(acked)} (before the kill {len(acked_at_kill)}), posts without "
          f"an answer {sum(unanswered.values())}, repeats in the topic "
          f"{sum(written[i] - 2 for i in repeated)}; 600 pairs counted once each")


def test_both_clients_put_an_id_on_the_same_partition(tansu: Tansu) -> None:
    """The ingest writes an event keyed by its id; a label keyed by the same id (from
    any Java-compatible producer) must land on the same partition number, whichever
    client the service runs."""
    from detector.sources import TopicSink
    from detector.sources_confluent import ConfluentTopicSink

    topics = Topics(tansu)
    placed = {}
    for sink_type in (TopicSink, ConfluentTopicSink):
        topic = f"keys-{sink_type.__name__}-{uuid.uuid4().hex[:6]}"
        create_topics(topics.kafka, [topic], 8)
        sink = sink_type(topics.kafka, topic, "ingest", idempotent=True)
        sink.open()
        try:
            assert sink.publish((f"id-{i}", b"{}", []) for i in range(64))["written"] == 64
        finally:
            sink.close()
        placed[sink_type] = _partitions_of_keys(tansu.bootstrap, topic, 8, 64)
    assert len(placed[TopicSink]) == 64 and len(set(placed[TopicSink].values())) > 1
    assert placed[ConfluentTopicSink] == placed[TopicSink]


def _partitions_of_keys(bootstrap: str, topic: str, partitions: int, n: int) -> dict[str, int]:
    """The partition of each of the ``n`` messages of ``topic``, by key."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: dict[str, int] = {}
    try:
        def read() -> bool:
            for tp, messages in consumer.poll(timeout_ms=200).items():
                out.update((m.key.decode(), tp.partition) for m in messages)
            return len(out) == n
        wait_for(read, 30, f"{n} messages of {topic}", every=0)
    finally:
        consumer.close()
    return out


def test_kserve_logger_posts_reach_the_monitor_through_ingest(tansu: Tansu,
                                                              tmp_path: Path) -> None:
    """The whole KServe path in one service: the logger's request and response events
    are POSTed to /ingest, written to the ingest topic, read back from it as CloudEvents
    (``inputs``), paired by id and monitored as one prediction per row."""
    topics = Topics(tansu)
    topic = ingest_topic(topics)
    d = DetectorProcess(topics, tmp_path, {
        "ingest": {"enabled": True, "topic": topic},
        "inputs": [{"format": "cloudevents", "topics": topic, "version": "1",
                    "feature_names": ["sepal_length", "sepal_width", "petal_length",
                                      "petal_width"]}]})
    d.start()
    try:
        url = f"http://127.0.0.1:{d.port}/ingest"
        pairs = 40
        for i in range(pairs):
            rows = [[5.0 + i % 7 * 0.1, 3.0, 1.4 + i % 5 * 0.2, 0.2]]
            for kind, data in (("request", {"instances": rows}),
                               ("response", {"predictions": [i % 3]})):
                msg = ce_http.to_binary_event(kserve_event(f"req-{i}", kind, data))
                assert post(url, msg.body, msg.headers, auth=None)[0] == 200
        wait_for(lambda: sample(scrape(d.port), "drift_input_pairs_total",
                                format="cloudevents", outcome="matched") == pairs, 60,
                 "every request paired with its response")
        m = scrape(d.port)
        assert sample(m, "drift_events_total", kind="prediction", model="sklearn-iris") == pairs
        assert sample(m, "drift_ingest_rejected_total", reason="invalid_event") == 0
        assert sample(m, "drift_sink_messages_total", sink="ingest",
                      outcome="written") == 2 * pairs
    finally:
        d.kill()

