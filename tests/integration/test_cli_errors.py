"""The command line as a newcomer and an operator meet it, with real processes: help
that lists every command, one-line errors with exit code 2 for a taken port and for bad
demo arguments, a demo that never touches the broker named in the environment, and one
name for a detection's onset (``onset_index``) and model version (``model_version``,
with ``version`` as its deprecated alias) in every output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from detector.broker import Tansu
from detector.cli import _parser
from detector.sources import create_topics
from tests.conftest import Topics, read_topic, wait_for


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120
         ) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("DRIFT_")}
    return subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True,
                          text=True, timeout=timeout, env={**base, **(env or {})}, check=False)


def test_help_lists_every_command_without_markup() -> None:
    out = _cli("--help")
    assert out.returncode == 0
    commands = next(a for a in _parser()._actions if a.dest == "command").choices
    assert set(commands) == {"run", "check-config", "replay", "report", "profile", "calibrate",
                             "demo"}
    listed = {line.split()[0] for line in out.stdout.splitlines()
              if line.startswith("    ") and not line[4].isspace()}
    assert listed == set(commands), out.stdout
    assert "``" not in out.stdout and "Exit codes" in out.stdout


def test_a_metrics_port_in_use_is_one_line_naming_port_and_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _cli("run", env={"DRIFT_METRICS__PORT": str(port),
                               "DRIFT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        (f"drift-detector: cannot serve metrics on 0.0.0.0:{port}: Address already in use "
         "(setting metrics.port)")], out.stderr


def test_unreadable_metrics_tls_files_are_one_line_naming_the_settings(tmp_path: Path) -> None:
    out = _cli("run", env={"DRIFT_METRICS__PORT": "0", "DRIFT_METRICS__HOST": "127.0.0.1",
                           "DRIFT_METRICS__TLS_CERTFILE": str(tmp_path / "missing.pem"),
                           "DRIFT_METRICS__TLS_KEYFILE": str(tmp_path / "missing.key"),
                           "DRIFT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "metrics.tls_certfile" in out.stderr and "Traceback" not in out.stderr


def test_the_confluent_client_without_its_package_is_one_line_naming_the_extra() -> None:
    # None in sys.modules makes `import confluent_kafka` fail as an absent package does
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("DRIFT_")}
    out = subprocess.run(
        [sys.executable, "-c", ("import sys; sys.modules['confluent_kafka'] = None; "
                                "from detector.cli import main; sys.exit(main())"), "run"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**base, "DRIFT_KAFKA__CLIENT": "confluent", "DRIFT_METRICS__PORT": "0",
             "DRIFT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        ("drift-detector: kafka.client is confluent but confluent-kafka is not installed: "
         "pip install 'drift-detector[confluent]'")], out.stderr


def test_an_unknown_variable_stops_run_naming_it() -> None:
    out = _cli("run", env={"DRIFT_METRIC__PORT": "1"})
    assert out.returncode == 2
    assert "DRIFT_METRIC__PORT" in out.stderr and "DRIFT_METRICS__PORT" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args, option", [
    (["--port", "99999"], "--port"), (["--port", "-1"], "--port"), (["--port", "x"], "--port"),
    (["--duration", "-5"], "--duration"), (["--duration", "inf"], "--duration"),
    (["--rate", "0"], "--rate"), (["--rate", "-3"], "--rate"), (["--rate", "nan"], "--rate"),
    (["--seed", "-1"], "--seed"),
])
def test_bad_demo_arguments_are_usage_errors(args: list[str], option: str) -> None:
    out = _cli("demo", "--no-live", *args)
    assert out.returncode == 2
    error = out.stderr.splitlines()[-1]
    assert error.startswith(f"drift-detector demo: error: argument {option}: "), out.stderr
    assert "Traceback" not in out.stderr and not out.stdout


def _end_offsets(bootstrap: str) -> dict[tuple[str, int], int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        names = admin.list_topics()
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t)]
        return {(tp.topic, tp.partition): n for tp, n in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def test_the_demo_never_writes_to_the_broker_named_in_the_environment(tansu: Tansu) -> None:
    before = _end_offsets(tansu.bootstrap)
    out = _cli("demo", "--duration", "4", "--rate", "300", "--port", "0", "--no-live",
               env={"DRIFT_KAFKA__BOOTSTRAP_SERVERS": tansu.bootstrap,
                    "DRIFT_KAFKA__GROUP_ID": "pod-group", "DRIFT_METRICS__PORT": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    own = next(line for line in out.stdout.splitlines() if line.startswith("broker "))
    assert tansu.bootstrap not in own, own                  # its own bundled broker
    assert "produced" in out.stdout and "Summary" in out.stdout
    assert _end_offsets(tansu.bootstrap) == before          # no topic, no message there


def test_a_detection_has_one_onset_name_in_every_output(tansu: Tansu, spawn,
                                                        tmp_path: Path) -> None:
    """The same detection through /detections, the drift_detected log line, the drift
    event and ``replay``: each calls its onset ``onset_index``, with the same value."""
    topics = Topics(tansu)
    drift_topic = f"drift-events-{uuid.uuid4().hex[:8]}"
    create_topics(topics.kafka, [drift_topic])
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0, 1, 3000), rng.normal(3, 1, 1000)])
    events = [{"model": "m", "model_version": "1", "prediction_id": f"p{i}",
               "features": {"x": round(float(v), 6)}, "prediction": 0}
              for i, v in enumerate(values)]
    service = spawn(topics, {"drift_events": {"enabled": True, "topic": drift_topic},
                             "reference": {"enabled": False}})
    topics.produce(topics.predictions, events)

    def first_detection() -> dict | None:
        body = urllib.request.urlopen(f"http://127.0.0.1:{service.port}/detections",
                                      timeout=5).read()
        return next((d for d in json.loads(body) if d["feature"] == "x"), None)

    served = wait_for(first_detection, 60, "a detection of feature x")
    assert "onset" not in served and 2950 <= served["onset_index"] <= served["index"]
    logged = wait_for(lambda: next((r for r in service.log_records()
                                    if r["event"] == "drift_detected" and r["feature"] == "x"),
                                   None), 30, "the drift_detected log line")
    published = wait_for(lambda: [json.loads(m.value) for m in
                                  read_topic(topics.bootstrap, drift_topic)], 30, "drift events")
    jsonl, config = tmp_path / "events.jsonl", tmp_path / "replay.yaml"
    jsonl.write_text("".join(json.dumps(e) + "\n" for e in events))
    config.write_text("reference: {enabled: false}\n")
    replay = _cli("replay", "--config", str(config), str(jsonl))
    assert replay.returncode == 0, replay.stderr
    replayed = json.loads(replay.stdout)["detections"]

    def same(found: list[dict]) -> dict:
        return next(d for d in found if d["feature"] == "x"
                    and d["detector"] == served["detector"])

    for name, d in (("/detections", served), ("log", same([logged])),
                    ("drift event", same(published)), ("replay", same(replayed))):
        assert "onset" not in d, (name, d)
        assert (d["index"], d["onset_index"]) == (served["index"], served["onset_index"]), name
        # the model version as the metrics name it, and its old name for one release
        assert d["model_version"] == d["version"] == "1", (name, d)
