"""Config errors: exit code 2 with the key named; check-config prints the effective config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
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
    assert [d["name"] for d in effective["detectors"]["feature"]] == ["adwin", "cusum", "jump"]
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
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "detector", "run"], env=env,
                                stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline, body = time.monotonic() + 30, ""
        while time.monotonic() < deadline and not body:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            except OSError:
                time.sleep(0.1)
        assert "drift_build_info" in body
        # a stop is honoured at once, even mid-connection: wait until one attempt (10 s
        # bootstrap timeout) has failed and been logged
        while time.monotonic() < deadline and "source_unavailable" not in log_path.read_text():
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out = log_path.read_text()
    assert "source_unavailable" in out                      # it did try, and logged it
    for secret in ("kafka-secret-123", "checkpoint-secret-456"):
        assert secret not in out and secret not in body


# --- secrets in validation errors -------------------------------------------------------

#: bad values for a secret setting, and the text of each that must never be shown
BAD_SECRETS: dict[str, tuple[object, str]] = {
    "number": (987654321987, "987654321987"),
    "float": (31415.9265358, "31415.9265358"),
    "list": (["lst-s3cret-0001"], "lst-s3cret-0001"),
    "mapping": ({"v": "map-s3cret-0002"}, "map-s3cret-0002"),
    "too short": ("shrt-s3cret", "shrt-s3cret"),
}


def _nested(path: tuple[str, ...], value: object) -> dict:
    """``{"a": {"b": value}}`` for ``("a", "b")``; ``*`` (any key or index) becomes ``x``."""
    for part in reversed(path[1:]):
        value = {"x" if part == "*" else part: value}
    return {path[0]: value}


def _config_error(monkeypatch, data: dict | None = None, env: dict[str, str] | None = None,
                  tmp_path=None) -> str:
    from detector.config import load_settings
    from detector.errors import ConfigError

    for name in [k for k in os.environ if k.startswith("DRIFT_")]:
        monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    path = None
    if data is not None:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    return str(err.value)


def test_secret_fields_are_derived_from_the_settings_models() -> None:
    from detector.config import SECRET_FIELDS

    assert {".".join(p) for p in SECRET_FIELDS} == {
        "kafka.sasl_plain_password", "kafka.ssl_password", "metrics.basic_auth_password",
        "checkpoint.key"}


def test_a_bad_secret_is_never_shown_whether_from_yaml_or_the_environment(
        tmp_path, monkeypatch) -> None:
    from detector.config import SECRET_FIELDS

    for path in SECRET_FIELDS:
        name = ".".join(path)
        var = "DRIFT_" + "__".join(path).upper()
        section = "DRIFT_" + path[0].upper()
        for kind, (value, text) in BAD_SECRETS.items():
            # max_models: 0 is a second error, so that every case fails and prints a message
            cases = {
                "yaml": _config_error(monkeypatch, {**_nested(path, value), "max_models": 0},
                                      tmp_path=tmp_path),
                "variable": _config_error(monkeypatch, env={
                    var: json.dumps(value) if isinstance(value, list | dict) else str(value),
                    "DRIFT_MAX_MODELS": "0"}),
                "json variable": _config_error(monkeypatch, env={
                    section: json.dumps(_nested(path, value)[path[0]]),
                    "DRIFT_MAX_MODELS": "0"}),
            }
            for source, message in cases.items():
                assert text not in message, (name, kind, source, message)
                assert "max_models" in message, message
            if kind == "number":   # a typed wrong value is reported under its key, masked
                assert name in cases["yaml"] and name in cases["json variable"], cases


def test_a_variable_that_is_not_json_never_echoes_the_secret_in_it(monkeypatch) -> None:
    from detector.config import SECRET_FIELDS

    for path in SECRET_FIELDS:
        secret = f"json-s3cret-{'-'.join(path)}"
        broken = json.dumps(_nested(path, secret)[path[0]])[:-1] + ", "   # cut off
        message = _config_error(monkeypatch, env={"DRIFT_" + path[0].upper(): broken})
        assert secret not in message and path[0] in message, message


def test_a_misspelt_secret_key_is_named_but_its_value_never_shown(tmp_path,
                                                                  monkeypatch) -> None:
    message = _config_error(monkeypatch, {"checkpoint": {"kye": "typo-s3cret-0004"}},
                            tmp_path=tmp_path)
    assert "checkpoint.kye" in message and "typo-s3cret-0004" not in message


def test_a_file_with_numbers_as_keys_is_a_config_error(tmp_path) -> None:
    bad = tmp_path / "numbers.yaml"
    bad.write_text("1: x\nkafka:\n  2: y\n")
    out = _cli("check-config", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "1: Extra inputs are not permitted" in out.stderr


# --- DRIFT_* variables: unknown names and values that are not the JSON expected ----------

def _settings(monkeypatch, env: dict[str, str]):
    from detector.config import load_settings

    for name in [k for k in os.environ if k.upper().startswith("DRIFT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.mark.parametrize("variable, value, suggestion", [
    ("DRIFT_METRIC__PORT", "1", "DRIFT_METRICS__PORT"),           # a typo at the top level
    ("DRIFT_MAXMODELS", "5", "DRIFT_MAX_MODELS"),
    ("DRIFT_METRICS_PORT", "9200", "DRIFT_METRICS__PORT"),         # "_" for "__"
    ("DRIFT_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092", "DRIFT_KAFKA__BOOTSTRAP_SERVERS"),
    ("DRIFT_METRICS__PROT", "1", "DRIFT_METRICS__PORT"),          # in a section
    ("DRIFT_MODELS__FRAUD__TSK", "classification", "DRIFT_MODELS__FRAUD__TASK"),  # in a model
    ("DRIFT_KAFKA__SASL_PLAIN_PASSWRD", "typo-s3cret-0005", "DRIFT_KAFKA__SASL_PLAIN_PASSWORD"),
    ("DRIFT_METRICS__PORT__X", "1", "metrics.port has no keys below it"),
    ("DRIFT_DETECTORS__FEATURE__TYPE", "adwin", "as JSON in DRIFT_DETECTORS__FEATURE"),
    ("DRIFT_KAFKA__", "x", "an empty name"),
])
def test_an_unknown_variable_is_an_error_that_names_it(monkeypatch, variable, value,
                                                         suggestion) -> None:
    message = _config_error(monkeypatch, env={variable: value})
    assert f"{variable}: no such setting" in message and suggestion in message, message
    assert value not in message or value in variable   # a misspelt secret is never shown


def test_a_variable_that_is_not_the_json_expected_names_variable_and_example(
        monkeypatch) -> None:
    message = _config_error(monkeypatch, env={"DRIFT_DETECTORS__FEATURE": "adwin"})
    assert ('DRIFT_DETECTORS__FEATURE (detectors.feature): expected a JSON list such as '
            '["adwin", "cusum"]') in message, message
    message = _config_error(monkeypatch, env={"DRIFT_MODELS__FRAUD__FEATURES": "amount"})
    assert "DRIFT_MODELS__FRAUD__FEATURES (models.fraud.features): expected a JSON list" \
        in message, message
    message = _config_error(monkeypatch, env={"DRIFT_REFERENCE": "off"})
    assert "DRIFT_REFERENCE (reference): expected a JSON object such as {" in message, message


def test_every_legitimate_variable_form_is_read(monkeypatch) -> None:
    s = _settings(monkeypatch, {
        "DRIFT_MAX_MODELS": "5",
        "DRIFT_DRIFT_EVENTS__ENABLED": "true",                     # a field with "_" in it
        "DRIFT_KAFKA": '{"group_id": "g", "client_id": "from-json"}',  # a section as JSON ...
        "DRIFT_KAFKA__CLIENT_ID": "c",                             # ... and a key below it
        "drift_metrics__port": "9200",                             # names in any case
        "DRIFT_DETECTORS__FEATURE": '["adwin"]',
        "DRIFT_REFERENCE__THRESHOLDS__PSI": "0.3",                 # two levels down
        "DRIFT_MODELS__FRAUD__TASK": "classification",             # a model's key
        "DRIFT_MODELS__FRAUD__THRESHOLDS__ACCURACY": "0.9",        # a map in a model
        "DRIFT_MODELS__FRAUD__DETECTORS__FEATURE": '["cusum"]',
        "DRIFT_MODELS__FRAUD__PROFILES__3": "/profiles/fraud-3.json",
        "DRIFT_MODELS__CHURN": '{"task": "regression"}',           # a whole model as JSON
    })
    assert s.max_models == 5 and s.drift_events.enabled and s.metrics.port == 9200
    assert (s.kafka.group_id, s.kafka.client_id) == ("g", "c")
    assert [d.name for d in s.detectors.feature] == ["adwin"]
    assert s.reference.thresholds.psi == 0.3
    fraud = s.models["fraud"]
    assert fraud.task == "classification" and fraud.thresholds == {"accuracy": 0.9}
    assert [d.name for d in fraud.detectors.feature] == ["cusum"]
    assert str(fraud.profiles["3"]) == "/profiles/fraud-3.json"
    assert s.models["churn"].task == "regression"


def test_map_keys_in_variable_names_are_lower_case_and_mixed_case_is_refused(
        monkeypatch) -> None:
    # pydantic-settings reads variable names in lower case: FRAUD (the usual spelling of
    # a variable) is the model "fraud"; "FraudV2" cannot be meant as "fraudv2", so it is
    # refused with the way to spell it; JSON keeps the case
    assert set(_settings(monkeypatch, {"DRIFT_MODELS__FRAUD__TASK": "regression"}).models) \
        == {"fraud"}
    message = _config_error(monkeypatch, env={"DRIFT_MODELS__FraudV2__TASK": "regression"})
    assert "DRIFT_MODELS__FraudV2__TASK" in message and "set DRIFT_MODELS as JSON" in message
    s = _settings(monkeypatch, {"DRIFT_MODELS": '{"FraudV2": {"task": "regression"}}'})
    assert set(s.models) == {"FraudV2"}


def _setting_paths(model, prefix=()):
    """Every settings path, with ``m`` for a mapping's key, down to the leaves (a list
    is a leaf: it is given whole, as JSON)."""
    from types import UnionType
    from typing import get_args, get_origin

    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        path = (*prefix, name)
        yield path
        union = get_origin(field.annotation) is UnionType
        for t in get_args(field.annotation) if union else (field.annotation,):
            if isinstance(t, type) and issubclass(t, BaseModel):
                yield from _setting_paths(t, path)
        if get_origin(field.annotation) is dict:
            value = get_args(field.annotation)[-1]
            yield (*path, "m")
            if isinstance(value, type) and issubclass(value, BaseModel):
                yield from _setting_paths(value, (*path, "m"))


def test_every_setting_has_a_variable_that_is_accepted_and_read_where_it_says(
        monkeypatch) -> None:
    from pydantic_settings import EnvSettingsSource

    from detector.config import Settings, _variable_problem

    paths = list(_setting_paths(Settings))
    assert len(paths) > 100
    for name in [k for k in os.environ if k.upper().startswith("DRIFT_")]:
        monkeypatch.delenv(name)
    for path in paths:
        name = "DRIFT_" + "__".join(path).upper()
        problem = _variable_problem(name, "1")           # JSON, so only the name is checked
        assert problem is None, problem
        with monkeypatch.context() as m:                 # pydantic-settings reads it there
            m.setenv(name, "1")
            data = EnvSettingsSource(Settings)()
        for key in path:
            assert key in data, (name, data)
            data = data[key]


def test_settings_built_in_code_ignore_the_environment(monkeypatch) -> None:
    from detector.config import Settings
    from detector.demo import demo_settings

    monkeypatch.setenv("DRIFT_KAFKA__BOOTSTRAP_SERVERS", "production-kafka:9092")
    monkeypatch.setenv("DRIFT_KAFKA__GROUP_ID", "production-group")
    assert Settings().kafka.bootstrap_servers == "localhost:9092"
    demo = demo_settings("127.0.0.1:39092", 0)
    assert (demo.kafka.bootstrap_servers, demo.kafka.group_id) == ("127.0.0.1:39092",
                                                                   "drift-demo")
    assert _settings(monkeypatch, {"DRIFT_KAFKA__BOOTSTRAP_SERVERS": "production-kafka:9092"}
                     ).kafka.bootstrap_servers == "production-kafka:9092"   # run reads them


def test_kubernetes_service_links_are_not_taken_for_settings(monkeypatch) -> None:
    # what Kubernetes puts into every container of the namespace for the shipped Service
    # drift-detector (port "metrics" 10108): they start with DRIFT_ but are no settings
    links = {
        "DRIFT_DETECTOR_SERVICE_HOST": "10.96.0.12", "DRIFT_DETECTOR_SERVICE_PORT": "10108",
        "DRIFT_DETECTOR_SERVICE_PORT_METRICS": "10108",
        "DRIFT_DETECTOR_PORT": "tcp://10.96.0.12:10108",
        "DRIFT_DETECTOR_PORT_10108_TCP": "tcp://10.96.0.12:10108",
        "DRIFT_DETECTOR_PORT_10108_TCP_PROTO": "tcp", "DRIFT_DETECTOR_PORT_10108_TCP_PORT": "10108",
        "DRIFT_DETECTOR_PORT_10108_TCP_ADDR": "10.96.0.12",
    }
    s = _settings(monkeypatch, {**links, "DRIFT_METRICS__PORT": "9200"})
    assert s.metrics.port == 9200
    # a setting is still a setting, checked as one; a "link" without its Service's
    # _SERVICE_HOST is a typo, not a link
    message = _config_error(monkeypatch, env={**links, "DRIFT_METRICS__PORT": "x"})
    assert "metrics.port" in message and "DRIFT_DETECTOR" not in message
    message = _config_error(monkeypatch, env={**links, "DRIFT_METRICS_PORT": "9200"})
    assert "DRIFT_METRICS_PORT: no such setting" in message and "DRIFT_DETECTOR" not in message
