"""Config errors: exit code 2 with the key named; check-config prints the effective config."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_invalid_file_exits_2_and_names_every_key(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  session_timeout_ms: soon\n  bootstrap_server: x\n"
                   "detectors:\n  feature: [adwin, {type: page_hinkley, params: {threshold: -1}}]\n")
    for command in (["run", "--config", str(bad)], ["check-config", str(bad)]):
        out = _cli(*command)
        assert out.returncode == 2
        for key in ("kafka.session_timeout_ms", "kafka.bootstrap_server",
                    "detectors.feature.1"):
            assert key in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_invalid_environment_variable_exits_2_and_names_the_key() -> None:
    out = _cli("run", env={"DRIFT_METRICS__PORT": "70000"})
    assert out.returncode == 2 and "metrics.port" in out.stderr


def test_unreadable_or_malformed_file_exits_2(tmp_path) -> None:
    assert _cli("run", "--config", str(tmp_path / "missing.yaml")).returncode == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("kafka: [unclosed\n")
    out = _cli("check-config", str(broken))
    assert out.returncode == 2 and "not valid YAML" in out.stderr


def test_secrets_are_never_printed(tmp_path) -> None:
    f = tmp_path / "sasl.yaml"
    f.write_text("kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-512\n"
                 "  sasl_plain_username: svc\n  sasl_plain_password: hunter2\n")
    out = _cli("check-config", str(f))
    assert out.returncode == 0 and "hunter2" not in out.stdout + out.stderr


def test_check_config_prints_file_and_environment_merged(tmp_path) -> None:
    f = tmp_path / "ok.yaml"
    f.write_text("kafka:\n  bootstrap_servers: from-file:9092\n  group_id: g\n"
                 "models:\n  fraud:\n    thresholds: {accuracy: 0.9}\n")
    out = _cli("check-config", str(f), env={"DRIFT_KAFKA__BOOTSTRAP_SERVERS": "from-env:9092"})
    assert out.returncode == 0, out.stderr
    effective = yaml.safe_load(out.stdout)
    assert effective["kafka"]["bootstrap_servers"] == "from-env:9092"   # env wins
    assert effective["kafka"]["group_id"] == "g"                         # file kept
    assert effective["models"]["fraud"]["thresholds"] == {"accuracy": 0.9}
    assert [d["name"] for d in effective["detectors"]["feature"]] == ["adwin", "cusum"]
    assert effective["detectors"]["feature"][1]["params"]["h"] > 0       # derived, shown


def test_a_running_service_never_logs_or_exports_its_secrets(tmp_path) -> None:
    import time
    import urllib.request

    from detector.broker import free_port
    port = free_port()
    env = {**os.environ, "DRIFT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
           "DRIFT_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "DRIFT_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
           "DRIFT_KAFKA__SASL_PLAIN_USERNAME": "svc",
           "DRIFT_KAFKA__SASL_PLAIN_PASSWORD": "kafka-secret-123",
           "DRIFT_CHECKPOINT__PATH": str(tmp_path / "state"),
           "DRIFT_CHECKPOINT__KEY": "checkpoint-secret-456",
           "DRIFT_METRICS__PORT": str(port), "DRIFT_LOG__FORMAT": "json",
           "DRIFT_LOG__LEVEL": "DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "detector", "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, body = time.monotonic() + 30, ""
        while time.monotonic() < deadline and not body:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            except OSError:
                time.sleep(0.1)
        assert "drift_build_info" in body
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "source_unavailable" in out                      # it did try, and logged it
    for secret in ("kafka-secret-123", "checkpoint-secret-456"):
        assert secret not in out and secret not in body
