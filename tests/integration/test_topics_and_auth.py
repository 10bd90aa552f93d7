"""A configured topic that does not exist, and a listener that does not speak the
configured security protocol, against the real test brokers.

- A missing topic is never created by the service (both test brokers create a topic
  that a metadata request names, even when the client asks them not to), is reported
  (``topic_missing`` once, ``drift_topic_missing`` 1, ``/readyz`` 503 with the reason)
  and consumed once it appears; with ``kafka.missing_topics: fail`` the service exits 1.
- SASL against a broker without SASL (Tansu) and TLS against a plaintext listener exit
  1 with one line naming the setting; so do wrong credentials (Tansu requiring SCRAM,
  which knows no user) and a SCRAM exchange the broker cannot do (noida-db), with either
  Kafka client; credentials a broker accepts (noida-db takes any with PLAIN) are consumed
  with; a broker that does not answer at all is still retried (not ready, SIGTERM exits 0
  in under a second).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from detector.broker import Tansu, free_port
from detector.config import KafkaSettings
from detector.errors import SourceUnavailable
from detector.sources import check_listener
from tests.conftest import (DetectorProcess, Topics, http_status, kill, sample, scrape, stop,
                            wait_for)


#: each test also runs with the optional confluent-kafka consumer
CLIENTS = pytest.mark.parametrize("client", ["kafka-python", "confluent"])


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()
    except OSError:
        return 0, ""


def _topic_list(bootstrap: str) -> list[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return admin.list_topics()
    finally:
        admin.close()


def _events(n: int) -> list[dict]:
    return [{"model": "m", "prediction_id": str(i), "features": {"x": float(i % 7)},
             "prediction": i % 2} for i in range(n)]


@CLIENTS
def test_a_missing_topic_is_not_created_and_readiness_waits_for_it(
        broker, tmp_path: Path, client: str) -> None:
    topics = Topics(broker)
    missing = f"{topics.labels}-typo"
    d = DetectorProcess(topics, tmp_path, {"kafka": {"labels_topic": missing, "client": client}})
    proc = d.launch()
    try:
        wait_for(lambda: "exist" in _readyz(d.port)[1], 60, "not ready: topic missing")
        assert _readyz(d.port) == (503, f"topic {missing} does not exist")
        m = scrape(d.port)
        assert sample(m, "drift_topic_missing", topic=missing) == 1
        assert sample(m, "drift_topic_missing", topic=topics.predictions) == 0
        # the topic that exists is consumed meanwhile
        topics.produce(topics.predictions, _events(50))
        wait_for(lambda: sample(scrape(d.port), "drift_events_total", kind="prediction",
                                model="m") == 50, 60, "50 predictions")
        # past at least one more look for the missing topic: still not created by us
        looked_at = time.monotonic()
        wait_for(lambda: time.monotonic() - looked_at > 11 and proc.poll() is None, 15,
                 "a second look")
        assert missing not in _topic_list(topics.bootstrap)
        assert _readyz(d.port) == (503, f"topic {missing} does not exist")

        created = time.monotonic()
        admin = KafkaAdminClient(bootstrap_servers=topics.bootstrap)
        try:
            from kafka.admin import NewTopic
            admin.create_topics([NewTopic(missing, 1, 1)])
        finally:
            admin.close()
        wait_for(lambda: _readyz(d.port)[0] == 200, 40, "ready once the topic exists")
        took = time.monotonic() - created
        assert sample(scrape(d.port), "drift_topic_missing", topic=missing) == 0
        topics.produce(missing, [{"model": "m", "prediction_id": "1", "label": 1}])
        wait_for(lambda: (sample(scrape(d.port), "drift_events_total", kind="label",
                                 model="m") or 0) == 1, 60, "the label from the new topic")
        code, _ = stop(proc)
    finally:
        kill(proc)
    assert code == 0, d.logs()
    warnings = [r for r in d.log_records() if r.get("event") == "topic_missing"]
    assert len(warnings) == 1 and warnings[0]["topic"] == missing, warnings
    assert warnings[0]["setting"] == "kafka.labels_topic" and "action" in warnings[0]
    assert any(r.get("event") == "topic_found" for r in d.log_records())
    print(f"ready {took:.1f} s after the topic was created")


@CLIENTS
def test_missing_topics_fail_exits_1_with_one_line(tansu, tmp_path: Path, client: str) -> None:
    topics = Topics(tansu)
    missing = f"{topics.predictions}-typo"
    d = DetectorProcess(topics, tmp_path, {"kafka": {"predictions_topic": missing,
                                                     "missing_topics": "fail",
                                                     "client": client}})
    started = time.monotonic()
    proc = d.launch()
    try:
        code = proc.wait(30)
    finally:
        kill(proc)
    took = time.monotonic() - started
    lines = [line for line in d.log_path.read_text().splitlines()
             if line.startswith("drift-detector:")]
    assert code == 1, d.logs()
    expected = (f"drift-detector: topic {missing} does not exist at {topics.bootstrap} "
                "(kafka.missing_topics: fail; check kafka.predictions_topic and "
                "kafka.labels_topic)")
    assert lines == [expected], d.logs()
    assert "Traceback" not in d.logs()
    assert missing not in _topic_list(topics.bootstrap)
    print(f"exit 1 after {took:.1f} s")


def _run_env(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen, Path, int]:
    port = free_port()
    log_path = tmp_path / f"run-{port}.log"
    full = {**os.environ, "DRIFT_METRICS__HOST": "127.0.0.1", "DRIFT_METRICS__PORT": str(port),
            "DRIFT_LOG__FORMAT": "json", **env}
    with log_path.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "detector", "run"], stdout=out,
                                stderr=out, env=full)
    return proc, log_path, port


SASL = {"DRIFT_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "DRIFT_KAFKA__SASL_MECHANISM": "PLAIN",
        "DRIFT_KAFKA__SASL_PLAIN_USERNAME": "drift",
        "DRIFT_KAFKA__SASL_PLAIN_PASSWORD": "not-a-real-secret"}


def _fatal_line(env: dict[str, str], tmp_path: Path) -> tuple[int, str, float, str]:
    started = time.monotonic()
    proc, log_path, _ = _run_env(env, tmp_path)
    try:
        code = proc.wait(40)
    finally:
        kill(proc)
    text = log_path.read_text()
    lines = [line for line in text.splitlines() if line.startswith("drift-detector:")]
    assert len(lines) == 1, text[-3000:]
    return code, lines[0], time.monotonic() - started, text


@CLIENTS
def test_sasl_against_a_broker_without_sasl_exits_1_naming_the_setting(
        tansu, tmp_path: Path, client: str) -> None:
    code, line, took, text = _fatal_line(
        {**SASL, "DRIFT_KAFKA__BOOTSTRAP_SERVERS": tansu.bootstrap,
         "DRIFT_KAFKA__CLIENT": client}, tmp_path)
    assert code == 1, text[-3000:]
    assert line == (f"drift-detector: Kafka at {tansu.bootstrap} refused the SASL handshake "
                    "(UNSUPPORTED_SASL_MECHANISM for PLAIN): is kafka.security_protocol "
                    "(SASL_PLAINTEXT) right, and kafka.sasl_mechanism (PLAIN)?"), line
    assert "not-a-real-secret" not in text and "Traceback" not in text
    print(f"exit 1 after {took:.1f} s")


@CLIENTS
def test_tls_against_a_plaintext_listener_exits_1_naming_the_setting(
        broker, tmp_path: Path, client: str) -> None:
    code, line, took, text = _fatal_line(
        {"DRIFT_KAFKA__SECURITY_PROTOCOL": "SSL",
         "DRIFT_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
         "DRIFT_KAFKA__CLIENT": client}, tmp_path)
    assert code == 1, text[-3000:]
    assert line == (f"drift-detector: Kafka at {broker.bootstrap} did not answer the TLS "
                    "handshake but answers without TLS: is kafka.security_protocol (SSL) "
                    "right? The listener is PLAINTEXT or SASL_PLAINTEXT"), line
    assert "Traceback" not in text
    print(f"exit 1 after {took:.1f} s")


@pytest.fixture(scope="module")
def tansu_scram(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    """A Tansu that requires SASL/SCRAM and has no user: every credential is wrong."""
    log = tmp_path_factory.mktemp("tansu-scram") / "tansu.log"
    with Tansu(log_path=log, authentication=True) as b:
        yield b


SCRAM = {**SASL, "DRIFT_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512"}


@CLIENTS
def test_wrong_credentials_exit_1_naming_an_authentication_failure(
        tansu_scram, tmp_path: Path, client: str) -> None:
    code, line, took, text = _fatal_line(
        {**SCRAM, "DRIFT_KAFKA__BOOTSTRAP_SERVERS": tansu_scram.bootstrap,
         "DRIFT_KAFKA__CLIENT": client}, tmp_path)
    assert code == 1, text[-3000:]
    assert line == (f"drift-detector: Kafka at {tansu_scram.bootstrap} refused the "
                    "credentials (unknown-user): check kafka.sasl_plain_username (drift) and "
                    "kafka.sasl_plain_password for kafka.sasl_mechanism (SCRAM-SHA-512)"), line
    assert "not-a-real-secret" not in text and "Traceback" not in text
    print(f"exit 1 after {took:.1f} s")


@CLIENTS
def test_scram_a_broker_cannot_do_exits_1_naming_it(noida, tmp_path: Path,
                                                    client: str) -> None:
    """noida-db accepts the SCRAM handshake, then answers the exchange with nothing."""
    code, line, _, text = _fatal_line(
        {**SASL, "DRIFT_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
         "DRIFT_KAFKA__BOOTSTRAP_SERVERS": noida.bootstrap, "DRIFT_KAFKA__CLIENT": client},
        tmp_path)
    assert code == 1, text[-3000:]
    assert line == (f"drift-detector: Kafka at {noida.bootstrap} refused the credentials (it "
                    "answered b'', no step of SCRAM-SHA-256): check kafka.sasl_plain_username "
                    "(drift) and kafka.sasl_plain_password for kafka.sasl_mechanism "
                    "(SCRAM-SHA-256)"), line


@CLIENTS
def test_credentials_the_broker_accepts_are_consumed_with(noida, spawn, client: str) -> None:
    """noida-db takes any PLAIN credentials: the check lets them through and the service
    consumes over SASL_PLAINTEXT."""
    topics = Topics(noida)
    service = spawn(topics, {"kafka": {"client": client, "security_protocol": "SASL_PLAINTEXT",
                                       "sasl_mechanism": "PLAIN",
                                       "sasl_plain_username": "drift",
                                       "sasl_plain_password": "not-a-real-secret"}})
    topics.produce(topics.predictions, _events(20))
    metrics = service.wait_events("prediction", "m", 20)
    assert sample(metrics, "drift_events_total", kind="prediction", model="m") == 20
    assert "not-a-real-secret" not in service.logs()


@CLIENTS
def test_sasl_to_no_broker_at_all_is_retried_and_sigterm_exits_at_once(tmp_path: Path,
                                                                       client: str) -> None:
    nowhere = free_port()                         # nothing listens there
    proc, log_path, port = _run_env(
        {**SASL, "DRIFT_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{nowhere}",
         "DRIFT_KAFKA__CLIENT": client}, tmp_path)
    try:
        wait_for(lambda: '"source_unavailable"' in log_path.read_text()
                 or proc.poll() is not None, 30, "source_unavailable")
        assert proc.poll() is None, log_path.read_text()
        assert http_status(port, "/readyz") == 503
        code, took = stop(proc)
    finally:
        kill(proc)
    assert code == 0, log_path.read_text()
    assert took < 1.0, f"exit took {took:.2f} s"
    print(f"SIGTERM to exit: {took:.2f} s")


def test_a_server_that_accepts_and_hangs_up_is_retried_not_fatal() -> None:
    # what a TCP proxy without a backend (or a broker shutting down) does: this is "no
    # broker answers", never a protocol mismatch
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def hang_up() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    try:
        for extra in ({"security_protocol": "SSL"},
                      {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                       "sasl_plain_username": "u", "sasl_plain_password": "p"},
                      {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
                       "sasl_plain_username": "u", "sasl_plain_password": "p"}):
            kafka = KafkaSettings(bootstrap_servers=address, **extra)
            try:
                check_listener(kafka, timeout=2.0)
            except SourceUnavailable as exc:
                assert str(exc).startswith(f"no broker answers at {address} ("), exc
            else:
                raise AssertionError(f"{extra['security_protocol']}: no error")
    finally:
        stop.set()
        thread.join(5)
        server.close()
