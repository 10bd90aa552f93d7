"""A sidecar never takes its model server out of service: a service with the sidecar
manifest's settings and probes runs against a broker that keeps its data on disk; the
broker stops. The sidecar's readiness and liveness probes keep answering 200 while
``/readyz`` answers 503 and ``drift_kafka_connected`` is 0, and a real Prometheus with the
shipped rules fires ``KafkaDisconnected``. The broker comes back: the gauge returns to 1,
the alert resolves and every event is counted once."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from detector.alerting import LocalAlerting, without_waits
from detector.broker import Noida
from tests.conftest import Topics, http_status, sample, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _sidecar() -> tuple[dict, dict[str, str], float]:
    """The settings the sidecar manifest mounts (without where Kafka and the port are,
    which the test's broker and a free port replace), its container's probe paths, and
    how long its readiness probe must fail before the kubelet marks it unready."""
    [deployment] = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "sidecar.yaml").read_text())
                    if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "drift-detector"]
    probes = {kind: container[kind]["httpGet"]["path"]
              for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    [volume] = [v for v in pod["volumes"] if v["name"] == "drift-detector-config"]
    [config_map] = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "configmap.yaml").read_text())
                    if d and d["metadata"]["name"] == volume["configMap"]["name"]]
    settings = yaml.safe_load(config_map["data"]["config.yaml"])
    for key in ("bootstrap_servers", "group_id", "predictions_topic", "labels_topic"):
        del settings["kafka"][key]
    del settings["metrics"]["port"]
    ready = container["readinessProbe"]
    return settings, probes, ready["periodSeconds"] * ready["failureThreshold"]


def _firing(local: LocalAlerting, name: str, instance: str) -> bool:
    return any(a.name == name and a.state == "firing" and a.labels.get("instance") == instance
               for a in local.alerts())


def test_a_kafka_outage_alerts_and_never_unreadies_the_sidecar(tmp_path, spawn,
                                                               prometheus_tools) -> None:
    """The manifest's settings as they are (kafka-python, the default client; the other
    client's connection state through an outage: test_outage.py)."""
    settings, probes, unready_after = _sidecar()
    assert "/readyz" not in probes.values()
    events = [{"model": "fraud", "prediction_id": str(i), "features": {"amount": float(i % 7)},
               "prediction": i % 2} for i in range(2000)]
    with Noida(tmp_path / "noida-data") as broker:
        topics = Topics(broker)
        topics.produce(topics.predictions, events[:1000])
        d = spawn(topics, settings)
        d.wait_events("prediction", "fraud", 1000)
        instance = f"127.0.0.1:{d.port}"
        rules = without_waits((DEPLOY / "prometheus" / "rules.yml").read_text())
        with LocalAlerting(tmp_path / "prometheus", [instance], rules, interval=0.5) as local:
            wait_for(lambda: local.query("drift_kafka_connected == 1"), 30,
                     "Prometheus to see the sidecar connected")

            broker.stop()
            down_at = time.monotonic()
            wait_for(lambda: http_status(d.port, "/readyz") == 503, 30, "/readyz to turn 503")
            polled = []
            # the outage, until the alert fires and for longer than a failing readiness
            # probe takes to unready the container: every probe of the sidecar answers 200
            fired = None
            while fired is None or time.monotonic() - down_at < unready_after + 5:
                assert time.monotonic() - down_at < 60, "KafkaDisconnected did not fire"
                if fired is None and _firing(local, "KafkaDisconnected", instance):
                    fired = time.monotonic() - down_at
                assert {kind: http_status(d.port, path) for kind, path in probes.items()} \
                    == dict.fromkeys(probes, 200)
                m = d.metrics()
                assert sample(m, "drift_kafka_connected") == 0
                polled.append(time.time() - sample(m, "drift_last_poll_timestamp_seconds"))
                time.sleep(0.2)
            outage = time.monotonic() - down_at
            assert _firing(local, "KafkaDisconnected", instance)
            assert sample(d.metrics(), "drift_kafka_connected") == 0
            assert http_status(d.port, "/readyz") == 503
            assert not _firing(local, "DriftDetectorNotPolling", instance)

            broker.start()
            back_at = time.monotonic()
            wait_for(lambda: sample(d.metrics(), "drift_kafka_connected") == 1, 60,
                     "drift_kafka_connected back to 1")
            reconnected = time.monotonic() - back_at
            topics.produce(topics.predictions, events[1000:])
            m = d.wait_events("prediction", "fraud", 2000, timeout=90)
            wait_for(lambda: http_status(d.port, "/readyz") == 200, 60, "/readyz back to 200")
            wait_for(lambda: not _firing(local, "KafkaDisconnected", instance), 30,
                     "KafkaDisconnected to resolve")
        assert sample(m, "drift_events_total", kind="prediction", model="fraud") == 2000
        assert d.proc.poll() is None
        d.terminate()
    print(f"\nbroker stopped -> KafkaDisconnected firing in {fired:.1f} s (for: 0s); sidecar "
          f"probes 200 throughout the {outage:.1f} s outage; oldest poll seen {max(polled, default=0.0):.1f} s; reconnected "
          f"{reconnected:.1f} s after the broker came back; 2000 events counted once")
