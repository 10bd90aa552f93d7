"""What an operator applies: manifests parse and agree with the code's defaults, the
alert rules pass promtool's unit tests, the Alertmanager config passes amtool."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
import yaml

from detector.config import MetricsSettings, Settings, load_settings
from detector.metrics import FAMILIES, Exporter, MetricsServer, RunStatus
from detector.pipeline import Pipeline
from tests.conftest import http_status

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PORT = MetricsSettings().port


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _run(*cmd: str, cwd: Path | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _containers() -> list[tuple[str, dict]]:
    out = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in _docs(path):
            if doc["kind"] == "Deployment":
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    if c["name"] == "drift-detector":
                        out.append((path.name, c))
    return out


def test_every_manifest_has_the_required_fields() -> None:
    kinds = set()
    for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        for doc in _docs(path):
            assert doc.get("apiVersion") and doc.get("kind"), path
            assert doc["metadata"]["name"], path
            kinds.add(doc["kind"])
            if doc["kind"] == "Deployment":
                spec = doc["spec"]
                labels = spec["template"]["metadata"]["labels"]
                assert spec["selector"]["matchLabels"].items() <= labels.items(), path
                assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert kinds >= {"Deployment", "Service", "ConfigMap", "PodMonitor", "ServiceMonitor",
                     "PrometheusRule"}


def test_detector_containers_agree_with_the_code() -> None:
    containers = _containers()
    assert {name for name, _ in containers} == {"sidecar.yaml", "deployment.yaml"}
    for name, c in containers:
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"metrics": PORT}, name
        for probe in ("livenessProbe", "startupProbe"):
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, name
        ready = "/healthz" if name == "sidecar.yaml" else "/readyz"
        assert c["readinessProbe"]["httpGet"] == {"path": ready, "port": "metrics"}, name
        assert c["args"][0] == "run"
        assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
        mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["drift-detector-config"]
        assert c["args"][c["args"].index("--config") + 1].startswith(mount + "/")
    standalone = _docs(DEPLOY / "k8s" / "deployment.yaml")[0]
    assert standalone["spec"]["replicas"] == 2


def test_a_kafka_outage_unreadies_the_standalone_pod_and_never_the_sidecars() -> None:
    """A Pod is Ready only while every container is: the sidecar's readiness probe must
    not be ``/readyz``, which answers 503 while Kafka is unreachable. Each manifest's
    probe paths are asked of a real server that has never reached Kafka."""
    probes = {name: {kind: c[kind]["httpGet"]["path"]
                     for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
              for name, c in _containers()}
    assert "/readyz" not in probes["sidecar.yaml"].values()
    server = _metrics_server()
    try:
        answers = {name: {kind: http_status(server.port, path) for kind, path in paths.items()}
                   for name, paths in probes.items()}
    finally:
        server.stop()
    assert answers == {
        "sidecar.yaml": {"livenessProbe": 200, "readinessProbe": 200, "startupProbe": 200},
        "deployment.yaml": {"livenessProbe": 200, "readinessProbe": 503, "startupProbe": 200}}


def test_service_and_monitors_point_at_the_metrics_port() -> None:
    service = _docs(DEPLOY / "k8s" / "service.yaml")[0]
    assert service["spec"]["ports"][0]["port"] == PORT
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    [pod_monitor] = _docs(DEPLOY / "k8s" / "podmonitor.yaml")
    [service_monitor] = _docs(DEPLOY / "k8s" / "servicemonitor" / "servicemonitor.yaml")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0] == {"port": "metrics", "path": "/metrics",
                                                              "interval": "15s"}
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    for _, doc in ((d["kind"], d) for p in ("sidecar.yaml", "deployment.yaml")
                   for d in _docs(DEPLOY / "k8s" / p)):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_config_maps_are_valid_configs(tmp_path: Path) -> None:
    config_maps = _docs(DEPLOY / "k8s" / "configmap.yaml")
    assert len(config_maps) == 2
    for cm in config_maps:
        f = tmp_path / "config.yaml"
        f.write_text(cm["data"]["config.yaml"])
        settings = load_settings(f)
        assert settings.metrics.port == PORT and settings.models["fraud"].thresholds
    load_settings(DEPLOY / "docker" / "config.yaml")


# --- what `kubectl apply -f deploy/k8s/` creates ------------------------------------------

def _applied(*folders: Path, leave_out: tuple[str, ...] = ()) -> list[dict]:
    """The objects `kubectl apply -f FOLDER` creates for each folder (not recursive)."""
    return [doc for folder in folders for path in sorted(folder.glob("*.yaml"))
            if path.name not in leave_out for doc in _docs(path)]


def _matches(selector: dict, labels: dict) -> bool:
    assert set(selector) == {"matchLabels"}, selector   # all these manifests use
    return selector["matchLabels"].items() <= labels.items()


def _detector_pods(objects: list[dict]) -> dict[str, dict]:
    """Pod templates with a drift-detector container, by Deployment name."""
    return {d["metadata"]["name"]: d["spec"]["template"] for d in objects
            if d["kind"] == "Deployment" and any(
                c["name"] == "drift-detector" for c in d["spec"]["template"]["spec"]["containers"])}


def _scrapes(objects: list[dict]) -> dict[str, int]:
    """How many scrape targets the applied PodMonitors and ServiceMonitors make of each
    detector Pod (per Deployment): 1 is right, 2 doubles every sum."""
    counts = {}
    services = [o for o in objects if o["kind"] == "Service"]
    for name, pod in _detector_pods(objects).items():
        labels = pod["metadata"]["labels"]
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        n = 0
        for o in objects:
            if o["kind"] == "PodMonitor" and _matches(o["spec"]["selector"], labels):
                n += sum(e["port"] in ports for e in o["spec"]["podMetricsEndpoints"])
            elif o["kind"] == "ServiceMonitor":
                for svc in services:
                    if (_matches(o["spec"]["selector"], svc["metadata"]["labels"])
                            and _matches({"matchLabels": svc["spec"]["selector"]}, labels)):
                        targets = {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]}
                        n += sum(targets.get(e["port"]) in ports for e in o["spec"]["endpoints"])
        counts[name] = n
    return counts


def test_applying_the_folder_scrapes_every_detector_pod_exactly_once() -> None:
    k8s = DEPLOY / "k8s"
    assert _scrapes(_applied(k8s)) == {"fraud-model": 1, "drift-detector": 1}
    # the alternative for a Prometheus that selects ServiceMonitors only, applied instead
    # of the PodMonitor as its comment says: the standalone Pods once, never twice
    instead = _applied(k8s, k8s / "servicemonitor", leave_out=("podmonitor.yaml",))
    assert _scrapes(instead) == {"fraud-model": 0, "drift-detector": 1}


def test_sidecar_and_standalone_deployments_use_distinct_consumer_groups() -> None:
    objects = _applied(DEPLOY / "k8s")
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    groups = {}
    for name, pod in _detector_pods(objects).items():
        [container] = [c for c in pod["spec"]["containers"] if c["name"] == "drift-detector"]
        assert not any(e["name"].startswith("DRIFT_KAFKA__GROUP") for e in container["env"])
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        mounted = volumes["drift-detector-config"]["configMap"]["name"]
        config = yaml.safe_load(config_maps[mounted]["data"]["config.yaml"])
        groups[name] = config["kafka"]["group_id"]
    assert len(groups) == 2 and len(set(groups.values())) == 2, groups


def test_prometheus_rule_resource_equals_the_rule_file() -> None:
    rule = _docs(DEPLOY / "k8s" / "prometheusrule.yaml")[0]
    assert rule["spec"] == yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())


def test_dockerfile_runs_as_non_root_with_a_health_check() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    user = re.search(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user and user.group(1).isdigit() and user.group(1) != "0"   # runAsNonRoot checks
    assert f"EXPOSE {PORT}" in text
    health = re.search(r"^HEALTHCHECK .*?$(?:\n\s+.*)*", text, re.MULTILINE).group(0)
    script = "/usr/local/lib/drift-detector/healthcheck.py"
    assert script in health and "/etc/drift-detector/config.yaml" in health
    assert f"COPY deploy/docker/healthcheck.py {script}" in text
    assert re.search(r'^ENTRYPOINT \["drift-detector"\]', text, re.MULTILINE)
    assert re.search(r'^CMD \["run", "--config", "/etc/drift-detector/config.yaml"\]', text,
                     re.MULTILINE)
    ignored = (DEPLOY.parent / ".dockerignore").read_text().split()
    assert ".git" in ignored and "tests" in ignored and "deploy/helm" in ignored


def test_dockerfile_has_two_stages_and_installs_the_lock_file_before_the_source() -> None:
    lines = [ln for ln in (DEPLOY / "Dockerfile").read_text().splitlines()
             if ln and not ln.startswith("#")]
    stages = [i for i, ln in enumerate(lines) if ln.startswith("FROM ")]
    assert len(stages) == 2 and lines[stages[0]].endswith(" AS build")
    build, runtime = lines[stages[0]:stages[1]], lines[stages[1]:]
    at = {key: next(i for i, ln in enumerate(build) if re.match(pattern, ln)) for key, pattern in
          {"lock": r"COPY deploy/constraints\.txt ", "deps": r"RUN pip install --requirement ",
           "source": r"COPY detector ", "package": r"RUN pip install --no-deps \."}.items()}
    assert at["lock"] < at["deps"] < at["source"] < at["package"], at
    assert any(ln.startswith("COPY --from=build /opt/venv /opt/venv") for ln in runtime)
    assert not any(ln.startswith(("COPY detector", "COPY pyproject")) for ln in runtime)
    text = "\n".join(runtime)
    for key in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in text, key
    # numba writes compiled kernels; the manifests mount an emptyDir there (read-only root)
    assert re.search(r"NUMBA_CACHE_DIR=/tmp/numba\b", text)


def test_constraints_pin_every_runtime_dependency() -> None:
    pins = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        assert re.sub(r"[-_.]+", "-", name).lower() in pins, f"{name} is not in constraints.txt"


def test_detector_containers_have_a_writable_numba_cache() -> None:
    for name, c in _containers():
        env = {e["name"]: e.get("value") for e in c["env"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volume = mounts[env["NUMBA_CACHE_DIR"]]
        [pod] = [d["spec"]["template"]["spec"] for d in _docs(DEPLOY / "k8s" / name)]
        assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[volume], name
        assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_every_default_port_is_the_service_default() -> None:
    """The image's health check, the chart and the Prometheus example use the port the
    service listens on by default, and that port is not 9108, the graphite exporter's on
    Prometheus' default port allocations page."""
    assert PORT != 9108
    spec = importlib.util.spec_from_file_location("healthcheck",
                                                  DEPLOY / "docker" / "healthcheck.py")
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    assert healthcheck.DEFAULT_PORT == PORT
    chart = DEPLOY / "helm" / "drift-detector"
    assert yaml.safe_load((chart / "values.yaml").read_text())["config"]["metrics"]["port"] == PORT
    assert f"default {PORT} " in (chart / "templates" / "_helpers.tpl").read_text()
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == [
        f"drift-detector:{PORT}"]


def _healthcheck(config: Path, **env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}
    return subprocess.run([sys.executable, str(DEPLOY / "docker" / "healthcheck.py"),
                           str(config)], env={**clean, **env}, timeout=30, check=False).returncode


def _metrics_server(**cfg: object) -> MetricsServer:
    exporter = Exporter(Pipeline(Settings()), threading.Lock(), RunStatus())
    return MetricsServer(exporter, MetricsSettings(host="127.0.0.1", port=0, **cfg)).start()


def test_health_check_follows_the_configured_port_and_tls(tmp_path: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=drift-detector", "-keyout", "key.pem", "-out", "cert.pem"],
                   cwd=tmp_path, check=True, capture_output=True)
    plain = _metrics_server()
    tls = _metrics_server(tls_certfile=tmp_path / "cert.pem", tls_keyfile=tmp_path / "key.pem")
    config = tmp_path / "config.yaml"
    try:
        config.write_text(f"metrics: {{port: {plain.port}}}\n")
        assert _healthcheck(config) == 0                                   # port from the file
        assert _healthcheck(tmp_path / "none.yaml", DRIFT_METRICS__PORT=str(plain.port)) == 0
        assert _healthcheck(config, DRIFT_METRICS__PORT=str(tls.port)) == 1     # http to TLS
        assert _healthcheck(config, DRIFT_METRICS__PORT=str(tls.port),          # env wins
                            DRIFT_METRICS__TLS_CERTFILE=str(tmp_path / "cert.pem"),
                            DRIFT_METRICS__TLS_KEYFILE=str(tmp_path / "key.pem")) == 0
        config.write_text(f"metrics: {{port: {tls.port}, tls_certfile: {tmp_path}/cert.pem, "
                          f"tls_keyfile: {tmp_path}/key.pem}}\n")
        assert _healthcheck(config) == 0
    finally:
        plain.stop()
        tls.stop()
    assert _healthcheck(tmp_path / "none.yaml", DRIFT_METRICS__PORT=str(plain.port)) == 1


def test_every_alert_rule_has_severity_summary_description_and_a_promtool_case(
        prometheus_tools) -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    tests = (DEPLOY / "prometheus" / "rules.test.yml").read_text()
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            names.append(rule["alert"])
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            for key in ("summary", "description", "runbook_url"):
                assert rule["annotations"][key], (rule["alert"], key)
            if "model" in rule["expr"] or "by (model" in rule["expr"]:
                assert "$labels.model" in rule["annotations"]["description"], rule["alert"]
            if 'signal="feature"' in rule["expr"]:
                assert "$labels.feature" in rule["annotations"]["description"]
            assert re.search(rf"alertname: {rule['alert']}\n\s+exp_alerts:\n\s+- exp_labels", tests), \
                f"no firing promtool case for {rule['alert']}"
    readme = (DEPLOY.parent / "README.md").read_text().lower()
    for anchor in {r["annotations"]["runbook_url"].split("#")[1]
                   for g in rules["groups"] for r in g["rules"]}:
        assert f"### {anchor.replace('-', ' ')}" in readme, f"README has no runbook for {anchor}"
    _run(prometheus_tools["promtool"], "check", "rules", "rules.yml", cwd=DEPLOY / "prometheus")
    _run(prometheus_tools["promtool"], "check", "config", "prometheus.yml",
         cwd=DEPLOY / "prometheus")
    out = _run(prometheus_tools["promtool"], "test", "rules", "rules.test.yml",
               cwd=DEPLOY / "prometheus")
    assert "SUCCESS" in out


@pytest.mark.parametrize("labels, receivers", [
    ({"severity": "critical", "model": "fraud", "alertname": "ModelMetricBelowThreshold"},
     "ml-oncall-pager,fraud-team"),
    ({"severity": "warning", "model": "churn", "alertname": "FeatureDriftDetected"}, "ml-team"),
    ({"severity": "warning", "model": "fraud", "alertname": "FeatureDriftDetected"}, "fraud-team"),
])
def test_alertmanager_config_is_valid_and_routes_by_severity_and_model(
        prometheus_tools, labels, receivers) -> None:
    config = str(DEPLOY / "alertmanager" / "alertmanager.yml")
    _run(prometheus_tools["amtool"], "check-config", config)
    out = _run(prometheus_tools["amtool"], "config", "routes", "test", f"--config.file={config}",
               *(f"{k}={v}" for k, v in labels.items()))
    assert out.splitlines()[0].strip() == receivers


#: every metric name of the contract as PromQL sees it (counters with _total)
CONTRACT = {name + "_total" * (kind == "counter") for name, kind, _, _ in FAMILIES} | {
    "drift_batch_seconds_bucket", "drift_batch_seconds_count", "drift_batch_seconds_sum"}


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bdrift_[a-z_]+[a-z]\b(?=\s*[{\[)]|\s*$|\s*[<>=!])", text,
                          re.MULTILINE))


def test_rules_and_their_tests_use_only_metrics_of_the_contract() -> None:
    for path in ("rules.yml", "rules.test.yml"):
        text = (DEPLOY / "prometheus" / path).read_text()
        exprs = [r["expr"] for g in yaml.safe_load(text).get("groups", []) for r in g["rules"]] \
            if path == "rules.yml" else re.findall(r"series: '([^']+)'", text)
        names = set().union(*(_metric_names(e) for e in exprs))
        assert names and names <= CONTRACT, (path, names - CONTRACT)
        assert "version=" not in text.replace("model_version=", ""), path


def test_dashboard_agrees_with_the_contract_and_shows_units_thresholds_and_detections() -> None:
    dash = json.loads((DEPLOY / "grafana" / "drift-detector.json").read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"datasource", "namespace", "job", "model"} <= variables.keys()
    for name in ("namespace", "job", "model"):   # "All" matches series without the label too
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*", name
    assert "drift_events_total" in variables["model"]["definition"]
    names: set[str] = set()
    for panel in dash["panels"]:
        title, defaults = panel["title"], panel["fieldConfig"]["defaults"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), title
        assert defaults.get("unit"), f"panel {title!r} has no unit"
        for target in panel["targets"]:
            expr = target["expr"]
            assert 'namespace=~"$namespace"' in expr and 'job=~"$job"' in expr, (title, expr)
            assert "version=" not in expr.replace("model_version", ""), (title, expr)
            names |= _metric_names(expr)
        exprs = " ".join(t["expr"] for t in panel["targets"])
        if re.search(r"drift_feature_(distance|pvalue)|consumer_lag|last_event", exprs):
            # a threshold line at the alert's (or the default detection) threshold
            assert defaults["custom"]["thresholdsStyle"]["mode"] == "line", title
            assert len(defaults["thresholds"]["steps"]) >= 2, title
        if re.search(r"drift_model_(quality_ratio|error)\{[^}]*rolling", exprs):
            assert "_threshold" in exprs, f"panel {title!r} lacks its thresholds"
    assert names <= CONTRACT, names - CONTRACT
    assert {"drift_detections_total", "drift_feature_distance", "drift_feature_pvalue",
            "drift_model_quality_ratio", "drift_model_quality_threshold_ratio",
            "drift_model_error", "drift_model_error_threshold", "drift_label_join_total",
            "drift_consumer_lag_messages", "drift_events_total",
            "drift_last_event_timestamp_seconds", "drift_events_rejected_total",
            "drift_features_dropped"} <= names
    [detections] = [a for a in dash["annotations"]["list"] if a.get("expr")]
    assert "drift_detections_total" in detections["expr"] and detections["enable"]
    assert _metric_names(detections["expr"]) <= CONTRACT


def test_readme_metrics_table_is_the_contract() -> None:
    """Every family of the collector is in the README's table with its labels, and the
    table names nothing else."""
    readme = (DEPLOY.parent / "README.md").read_text()
    section = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(drift_[a-z_]+)` \|[^|]+\|([^|]*)\|$", section, re.MULTILINE)
    table = {name: {label.strip() for label in re.sub(r"\([^)]*\)", "", labels).split(",")
                    if label.strip()} for name, labels in rows}
    contract = {name + "_total" * (kind == "counter"): set(labels)
                for name, kind, _, labels in FAMILIES}
    assert table == {**contract, "drift_batch_seconds": set()}
