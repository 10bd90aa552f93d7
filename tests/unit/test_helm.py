"""The Helm chart deploy/helm/drift-detector, rendered by Helm's own engine for the default
values and each variant; every object validated against the Kubernetes schemas
(kubernetes-validate, strict) and the prometheus-operator objects against the operator's
own schemas (types, enums, patterns, required fields) and for unknown keys; Pod Security
Standard "restricted" on every Pod spec.

The operator's schemas come from the npm package @kubernetes-models/prometheus-operator
(generated from prometheus-operator's API types, kubebuilder validation included), the one
registry package that ships them: it holds them compiled into validators, so they run in
node, installed with npm once into ~/.cache/drift-detector (the test installs node and npm
from Debian if they are missing).

No `helm` executable installs from the registries this project can reach (Debian has none,
npm's `helm-cli` downloads at install time, PyPI has none for Linux), so the chart is
rendered and linted with helm-python-sdk: Helm's Go SDK (v4) built as a C library, the same
engine `helm template` and `helm lint` run.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from detector.config import load_settings
from tests.install import apt_install, one_at_a_time

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "drift-detector"
KUBERNETES_VERSION = "1.35.0"
RELEASE = "dd"
NAMESPACE = "ml"

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "sidecar": {"mode": "sidecar"},
    "sidecar-example": {"mode": "sidecar", "sidecar": {"example": {"enabled": True}}},
    "servicemonitor": {"monitoring": {"kind": "ServiceMonitor"}},
    "tls": {"config": {"metrics": {"port": 9200, "tls_certfile": "/tls/tls.crt",
                                   "tls_keyfile": "/tls/tls.key"}},
            "monitoring": {"tlsConfig": {"insecureSkipVerify": True}}},
    "no-monitor": {"monitoring": {"kind": "none"}, "prometheusRule": {"enabled": False},
                   "dashboard": {"enabled": False}},
}


def _module(name: str, distribution: str) -> ModuleType:
    """Import ``name``; install ``distribution`` with pip first when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", distribution],
                              check=False, capture_output=True, text=True)
        assert done.returncode == 0, f"pip install {distribution}:\n{done.stderr[-2000:]}"
        importlib.invalidate_caches()
        return importlib.import_module(name)


@pytest.fixture(scope="module")
def helm() -> ModuleType:
    return _module("helm_python", "helm-python-sdk>=0.2.2")


@pytest.fixture(scope="module")
def kubernetes_validate() -> ModuleType:
    return _module("kubernetes_validate", "kubernetes-validate>=1.33")


@pytest.fixture(scope="module")
def render(helm: ModuleType) -> Callable[[dict[str, Any]], list[dict]]:
    """``render(values)``: the objects `helm template dd CHART -n ml` makes of ``values``."""
    chart = helm.Chart.load(CHART)

    def _render(values: dict[str, Any]) -> list[dict]:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        return [doc for path, text in sorted(manifests.items()) if path.endswith(".yaml")
                for doc in yaml.safe_load_all(text) if doc]
    return _render


def _pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    """(where, Pod spec) of every Deployment and of the sidecar snippet ConfigMap."""
    specs = [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in objects
             if o["kind"] == "Deployment"]
    for o in objects:
        if o["kind"] == "ConfigMap" and "containers.yaml" in o["data"]:
            specs.append((o["metadata"]["name"], {
                "securityContext": yaml.safe_load(o["data"]["podSecurityContext.yaml"]),
                "containers": yaml.safe_load(o["data"]["containers.yaml"]),
                "volumes": yaml.safe_load(o["data"]["volumes.yaml"])}))
    return specs


def _one(objects: list[dict], kind: str) -> dict:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


# --- the prometheus-operator CRDs ---------------------------------------------------------
# kubernetes-validate holds the built-in kinds only. The operator's schemas (below, through
# node) check types, enums, patterns and required fields, but, as a CRD's structural schema
# does, let unknown keys through (the API server drops them): this is the part of
# monitoring.coreos.com/v1 the chart uses, with additionalProperties false, so that a
# misspelt key fails here instead of being silently dropped.

_STR = {"type": "string", "minLength": 1}
_META = {"type": "object", "required": ["name", "labels"],
         "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                                 "maxLength": 63},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}
_SELECTOR = {"type": "object", "required": ["matchLabels"], "additionalProperties": False,
             "properties": {"matchLabels": {"type": "object", "minProperties": 1,
                                            "additionalProperties": {"type": "string"}}}}
_ENDPOINT = {"type": "object", "required": ["port"], "additionalProperties": False,
             "properties": {"port": _STR, "path": _STR,
                            "interval": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                            "scheme": {"enum": ["http", "https"]},
                            "tlsConfig": {"type": "object"}}}
_RULE = {"type": "object", "required": ["alert", "expr", "labels", "annotations"],
         "additionalProperties": False,
         "properties": {"alert": _STR, "expr": _STR,
                        "for": {"type": "string", "pattern": r"^(\d+(ms|s|m|h|d|w|y))+$"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "annotations": {"type": "object",
                                        "additionalProperties": {"type": "string"}}}}


def _crd(spec: dict) -> dict:
    return {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": False,
            "properties": {"apiVersion": {"const": "monitoring.coreos.com/v1"},
                           "kind": _STR, "metadata": _META, "spec": spec}}


CRD_SCHEMAS = {
    "PodMonitor": _crd({"type": "object", "required": ["selector", "podMetricsEndpoints"],
                        "additionalProperties": False,
                        "properties": {"selector": _SELECTOR, "podMetricsEndpoints": {
                            "type": "array", "minItems": 1, "items": _ENDPOINT}}}),
    "ServiceMonitor": _crd({"type": "object", "required": ["selector", "endpoints"],
                            "additionalProperties": False,
                            "properties": {"selector": _SELECTOR, "endpoints": {
                                "type": "array", "minItems": 1, "items": _ENDPOINT}}}),
    "PrometheusRule": _crd({"type": "object", "required": ["groups"],
                            "additionalProperties": False, "properties": {"groups": {
                                "type": "array", "minItems": 1, "items": {
                                    "type": "object", "required": ["name", "rules"],
                                    "additionalProperties": False,
                                    "properties": {"name": _STR, "interval": _STR, "rules": {
                                        "type": "array", "minItems": 1, "items": _RULE}}}}}}),
}


OPERATOR_MODELS = "@kubernetes-models/prometheus-operator@6.0.0"
#: reads a JSON list of objects on stdin; prints "Kind/name: valid" or "Kind/name: INVALID
#: <reasons>" for each, exits 1 if any is invalid
VALIDATOR = """
import { readFileSync } from "node:fs";
const kinds = ["PodMonitor", "ServiceMonitor", "PrometheusRule"];
const models = {};
for (const kind of kinds) {
  models[kind] = (await import(
    `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`))[kind];
}
let bad = 0;
for (const obj of JSON.parse(readFileSync(0, "utf8"))) {
  const where = `${obj.kind}/${obj.metadata.name}`;
  try {
    new models[obj.kind](obj).validate();
    console.log(`${where}: valid against the prometheus-operator schema`);
  } catch (err) {
    bad += 1;
    console.log(`${where}: INVALID ${err.message}`);
  }
}
process.exit(bad ? 1 : 0);
"""


@pytest.fixture(scope="module")
def operator_schemas() -> Callable[[list[dict]], tuple[bool, str]]:
    """``validate(objects)``: (all valid, the validator's report) for prometheus-operator
    objects, by the operator's schemas in node."""
    apt_install(("node", "npm"), ("nodejs", "npm"))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "drift-detector" \
        / OPERATOR_MODELS.replace("@", "").replace("/", "-")
    package = cache / "node_modules" / "@kubernetes-models" / "prometheus-operator"
    with one_at_a_time():
        if not (package / "package.json").exists():
            cache.mkdir(parents=True, exist_ok=True)
            (cache / "package.json").write_text('{"private": true, "type": "module"}\n')
            done = subprocess.run(["npm", "install", "--no-audit", "--no-fund",
                                   "--loglevel=error", OPERATOR_MODELS], cwd=cache,
                                  capture_output=True, text=True, check=False, timeout=600)
            assert done.returncode == 0, f"npm install {OPERATOR_MODELS}:\n{done.stderr[-2000:]}"
    script = cache / "validate.mjs"      # beside node_modules, where node resolves imports
    script.write_text(VALIDATOR)

    def validate(objects: list[dict]) -> tuple[bool, str]:
        done = subprocess.run(["node", str(script)], input=json.dumps(objects),
                              capture_output=True, text=True, check=False, timeout=120)
        assert done.returncode in (0, 1), done.stderr[-2000:]
        return done.returncode == 0, done.stdout
    return validate


# --- tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_chart_lints_without_warnings(helm: ModuleType, variant: str) -> None:
    report = helm.lint(CHART, VARIANTS[variant], strict=True, namespace=NAMESPACE,
                       kube_version=f"v{KUBERNETES_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_object_is_valid(render, kubernetes_validate, operator_schemas,
                                        variant: str) -> None:
    objects = render(VARIANTS[variant])
    assert objects
    checked = []
    operator = [obj for obj in objects if obj["kind"] in CRD_SCHEMAS]
    if operator:
        valid, report = operator_schemas(operator)
        checked += [f"{variant}: {line}" for line in report.splitlines()]
        assert valid, report
    for obj in objects:
        where = f"{variant}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in CRD_SCHEMAS:
            jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
            checked.append(f"{where} has no key outside the {obj['kind']} CRD")
        else:
            version = kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            checked.append(f"{where} valid against Kubernetes {version} (strict)")
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, where
    print("\n".join(checked))
    for name, spec in _pod_specs(objects):  # the sidecar snippet's parts make a valid Pod
        if not name.endswith("-sidecar"):
            continue
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod",
                                      "metadata": {"name": "snippet"}, "spec": spec},
                                     KUBERNETES_VERSION, strict=True)


def test_the_operator_schemas_refuse_what_prometheus_operator_refuses(render,
                                                                       operator_schemas) -> None:
    """The validator is no rubber stamp: a misspelt duration, a numeric port name and a
    rule group without a name are refused, each with its reason."""
    objects = {o["kind"]: o for o in render(VARIANTS["default"])}
    rule, monitor = objects["PrometheusRule"], objects["PodMonitor"]
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    monitor["spec"]["podMetricsEndpoints"][0]["port"] = 10108
    nameless = {**rule, "metadata": {**rule["metadata"], "name": "nameless"},
                "spec": {"groups": [{"rules": rule["spec"]["groups"][0]["rules"]}]}}
    valid, report = operator_schemas([rule, monitor, nameless])
    print(report)
    assert not valid
    lines = report.splitlines()
    assert "/rules/0/for must match pattern" in lines[0]
    assert "/podMetricsEndpoints/0/port must be string" in lines[1]
    assert "/groups/0 must have required property name" in lines[2]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_spec_meets_the_restricted_pod_security_standard(render, variant: str) -> None:
    specs = _pod_specs(render(VARIANTS[variant]))
    assert specs
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                       "persistentVolumeClaim", "projected", "secret"}
    for where, spec in specs:
        pod = spec.get("securityContext", {})
        assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        assert "runAsUser" not in pod, f"{where}: a fixed UID breaks OpenShift's restricted SCC"
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= allowed_volumes, (where, volume)
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            assert pod.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True, where
            assert sc.get("runAsNonRoot") is not False and sc.get("runAsUser") != 0, where
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert set(sc["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}
            assert not sc.get("privileged"), (where, c["name"])
            assert sc.get("seccompProfile", pod["seccompProfile"])["type"] == "RuntimeDefault"
            if c["name"] == "drift-detector":   # numba's cache on a read-only root filesystem
                assert sc["readOnlyRootFilesystem"] is True
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                env = {e["name"]: e.get("value") for e in c["env"]}
                cache = {v["name"]: v for v in spec["volumes"]}[mounts[env["NUMBA_CACHE_DIR"]]]
                assert "emptyDir" in cache


def _scrape_targets(objects: list[dict]) -> dict[str, int]:
    """Scrape targets the chart's monitors make of each detector Pod template (by owner)."""
    services = [o for o in objects if o["kind"] == "Service"]
    counts = {}
    for o in objects:
        if o["kind"] != "Deployment":
            continue
        labels = o["spec"]["template"]["metadata"]["labels"]
        n = 0
        for m in objects:
            selector = m.get("spec", {}).get("selector", {}).get("matchLabels", {})
            if m["kind"] == "PodMonitor" and selector.items() <= labels.items():
                n += len(m["spec"]["podMetricsEndpoints"])
            elif m["kind"] == "ServiceMonitor":
                n += sum(len(m["spec"]["endpoints"]) for s in services
                         if selector.items() <= s["metadata"]["labels"].items()
                         and s["spec"]["selector"].items() <= labels.items())
        counts[o["metadata"]["name"]] = n
    return counts


def test_one_scrape_object_and_every_detector_pod_scraped_once(render, helm) -> None:
    default = render({})
    assert [o["kind"] for o in default if "Monitor" in o["kind"]] == ["PodMonitor"]
    assert _scrape_targets(default) == {"dd-drift-detector": 1}
    service_monitor = render(VARIANTS["servicemonitor"])
    assert [o["kind"] for o in service_monitor if "Monitor" in o["kind"]] == ["ServiceMonitor"]
    assert _scrape_targets(service_monitor) == {"dd-drift-detector": 1}
    sidecar = render(VARIANTS["sidecar-example"])
    assert _scrape_targets(sidecar) == {"dd-drift-detector-model": 1}
    # the snippet's label is the one the PodMonitor selects
    snippet = _one([o for o in sidecar if o["kind"] == "ConfigMap"
                    and "labels.yaml" in o["data"]], "ConfigMap")
    assert yaml.safe_load(snippet["data"]["labels.yaml"]) == \
        _one(sidecar, "PodMonitor")["spec"]["selector"]["matchLabels"]
    assert not [o for o in render(VARIANTS["no-monitor"]) if "Monitor" in o["kind"]]
    with pytest.raises(helm.HelmRenderError, match="sidecars have no Service"):
        render({"mode": "sidecar", "monitoring": {"kind": "ServiceMonitor"}})
    with pytest.raises(helm.HelmRenderError, match="monitoring.kind must be"):
        render({"monitoring": {"kind": "Both"}})


def test_release_label_on_every_prometheus_operator_object(render) -> None:
    for values in ({}, VARIANTS["servicemonitor"], {"monitoring": {"release": "prom"}}):
        release = values.get("monitoring", {}).get("release", "kube-prometheus-stack")
        for o in render(values):
            if o["apiVersion"] == "monitoring.coreos.com/v1":
                assert o["metadata"]["labels"]["release"] == release, o["kind"]


@pytest.mark.parametrize("base", [
    "https://github.com/drift-detector/drift-detector/blob/main/README.md",
    "https://runbooks.example.com/drift"])
def test_prometheus_rule_is_the_rule_file_with_absolute_runbook_urls(render, base: str) -> None:
    rule = _one(render({"prometheusRule": {"runbookBaseUrl": base}}), "PrometheusRule")
    expected = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    for group in expected["groups"]:
        for r in group["rules"]:
            anchor = r["annotations"]["runbook_url"].split("#")[1]
            r["annotations"]["runbook_url"] = f"{base}#{anchor}"
    assert rule["spec"] == expected
    urls = [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert urls and all(u.startswith(base + "#") for u in urls)


def test_dashboard_config_map_is_the_dashboard_for_grafanas_sidecar(render) -> None:
    dashboard = [o for o in render({}) if o["kind"] == "ConfigMap"
                 and "drift-detector.json" in o["data"]]
    [cm] = dashboard
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["drift-detector.json"]) == \
        json.loads((DEPLOY / "grafana" / "drift-detector.json").read_text())


def test_chart_files_are_the_deploy_originals() -> None:
    for copy, original in (("rules.yml", DEPLOY / "prometheus" / "rules.yml"),
                           ("drift-detector.json", DEPLOY / "grafana" / "drift-detector.json")):
        assert (CHART / "files" / copy).read_bytes() == original.read_bytes(), copy


def _config(objects: list[dict], tmp_path: Path):
    cm = [o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o["data"]]
    (tmp_path / "config.yaml").write_text(cm[0]["data"]["config.yaml"])
    return load_settings(tmp_path / "config.yaml")


def test_config_map_is_a_valid_config_and_sets_ports_groups_and_schemes(
        render, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("DRIFT_")]:
        monkeypatch.delenv(key)
    standalone, sidecar = render({}), render(VARIANTS["sidecar-example"])
    groups = {_config(o, tmp_path).kafka.group_id for o in (standalone, sidecar)}
    assert groups == {"dd-drift-detector-standalone", "dd-drift-detector-sidecar"}
    assert _config(render({"config": {"kafka": {"group_id": "mine"}}}), tmp_path) \
        .kafka.group_id == "mine"
    tls = render(VARIANTS["tls"])
    settings = _config(tls, tmp_path)
    assert settings.metrics.port == 9200 and str(settings.metrics.tls_certfile) == "/tls/tls.crt"
    [(_, spec)] = [s for s in _pod_specs(tls)]
    [container] = spec["containers"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9200, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    assert _one(tls, "Service")["spec"]["ports"][0]["port"] == 9200
    endpoint = _one(tls, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"] == {"insecureSkipVerify": True}
    [(_, plain)] = _pod_specs(standalone)
    assert plain["containers"][0]["livenessProbe"]["httpGet"]["scheme"] == "HTTP"


@pytest.mark.parametrize("variant, ready", [("default", "/readyz"), ("tls", "/readyz"),
                                            ("sidecar", "/healthz"),
                                            ("sidecar-example", "/healthz")])
def test_only_the_standalone_readiness_probe_depends_on_kafka(render, variant: str,
                                                              ready: str) -> None:
    """Standalone, ready means consuming (``/readyz``); in a sidecar the container's
    readiness is the process serving (``/healthz``), since a Pod is Ready only while every
    container is and a Kafka outage must not take the model server out of service."""
    detectors = [(where, c) for where, spec in _pod_specs(render(VARIANTS[variant]))
                 for c in spec["containers"] if c["name"] == "drift-detector"]
    assert detectors
    for where, c in detectors:       # the example Deployment's and the snippet's
        probes = {kind: c[kind]["httpGet"]["path"]
                  for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
        assert probes == {"livenessProbe": "/healthz", "readinessProbe": ready,
                          "startupProbe": "/healthz"}, where


def test_disruption_budget_covers_the_standalone_pods_only(render) -> None:
    objects = render({})
    pdb, deployment = _one(objects, "PodDisruptionBudget"), _one(objects, "Deployment")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1 and deployment["spec"]["replicas"] == 2
    sidecar = render(VARIANTS["sidecar"])
    assert not [o for o in sidecar if o["kind"] in ("PodDisruptionBudget", "Service",
                                                    "Deployment")]
