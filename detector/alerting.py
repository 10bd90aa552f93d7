"""Prometheus and Alertmanager on loopback with the shipped alert rules, for seeing alerts
fire locally (``drift-detector demo --alerts``) and for the end-to-end tests.

Both are the Debian packages ``prometheus`` and ``prometheus-alertmanager`` (or the
upstream binaries ``prometheus`` and ``alertmanager`` on ``PATH``); nothing is
downloaded. Each runs in its own process group on a free loopback port, with its data in
a directory the caller owns, and is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Self

import yaml

from detector.broker import free_port
from detector.errors import DriftDetectorError

#: how to install the programs, for the error that says they are missing
INSTALL_HINT = ("apt-get install prometheus prometheus-alertmanager (Debian, Ubuntu), or put "
                "the prometheus and alertmanager binaries of prometheus.io on PATH")


class AlertingUnavailable(DriftDetectorError):
    """Prometheus or Alertmanager is not installed, or did not start."""


def shipped_rules() -> str:
    """The alert rules of ``deploy/prometheus/rules.yml``, as packaged with drift-detector."""
    return resources.files("detector").joinpath("rules.yml").read_text(encoding="utf-8")


def without_waits(rules: str, keep: frozenset[str] = frozenset()) -> str:
    """The rules with every ``for:`` set to 0 s, but those of the alerts named in ``keep``:
    a production debounce of minutes is longer than a demo or a test, and what they show
    is the expression, not the wait.

    >>> print(without_waits("groups:\\n- name: g\\n  rules:\\n  - alert: A\\n    for: 10m\\n"
    ...                     "  - alert: B\\n    for: 2m\\n", keep=frozenset({"B"})), end="")
    groups:
    - name: g
      rules:
      - alert: A
        for: 0s
      - alert: B
        for: 2m
    """
    doc = yaml.safe_load(rules)
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule and rule.get("alert") not in keep:
                rule["for"] = "0s"
    return yaml.safe_dump(doc, sort_keys=False, width=1 << 20)


def find_programs() -> tuple[str, str]:
    """Paths of ``prometheus`` and Alertmanager; ``AlertingUnavailable`` naming what is
    missing and how to install it."""
    prometheus = shutil.which("prometheus")
    alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    missing = [name for name, path in (("prometheus", prometheus),
                                       ("alertmanager", alertmanager)) if path is None]
    if missing:
        raise AlertingUnavailable(f"{' and '.join(missing)} not found: {INSTALL_HINT}")
    assert prometheus is not None and alertmanager is not None
    return prometheus, alertmanager


@dataclass(frozen=True)
class Alert:
    """One alert as Prometheus sees it."""

    name: str
    state: str            # pending or firing
    labels: dict[str, str]
    active_at: str


class LocalAlerting:
    """Prometheus scraping ``targets`` every ``interval`` seconds and evaluating ``rules``
    as often, sending to an Alertmanager of its own; both on free loopback ports.
    Alertmanager groups by alert name, model, feature and metric, notifies at once, and
    posts to ``receiver_url`` (a webhook) if there is one.

    >>> local = LocalAlerting(Path("/tmp/x"), ["127.0.0.1:10108"], "groups: []\\n", 0.5)
    >>> local.prometheus_config()["global"]
    {'scrape_interval': '500ms', 'evaluation_interval': '500ms'}
    """

    def __init__(self, workdir: Path, targets: list[str], rules: str, interval: float = 1.0,
                 job: str = "drift-detector", receiver_url: str | None = None) -> None:
        self.workdir = workdir
        self.receiver_url = receiver_url
        self.targets = targets
        self.rules = rules
        self.interval = interval
        self.job = job
        self.prometheus_port = free_port()
        self.alertmanager_port = free_port()
        self._procs: list[subprocess.Popen[bytes]] = []

    def prometheus_config(self) -> dict[str, Any]:
        every = f"{round(self.interval * 1000)}ms"
        return {
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "rule_files": ["rules.yml"],
            "alerting": {"alertmanagers": [{"static_configs": [
                {"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}]},
            "scrape_configs": [{"job_name": self.job,
                                "static_configs": [{"targets": self.targets}]}],
        }

    def start(self, timeout: float = 30.0) -> Self:
        """Start both and wait until both answer ``/-/ready``."""
        prometheus, alertmanager = find_programs()
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        (w / "rules.yml").write_text(self.rules, encoding="utf-8")
        (w / "prometheus.yml").write_text(yaml.safe_dump(self.prometheus_config()))
        receiver: dict[str, Any] = {"name": "local"}
        if self.receiver_url is not None:
            receiver["webhook_configs"] = [{"url": self.receiver_url, "send_resolved": False}]
        (w / "alertmanager.yml").write_text(yaml.safe_dump({
            "route": {"receiver": "local", "group_by": ["alertname", "model", "feature", "metric"],
                      "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [receiver]}))
        self._launch([alertmanager, f"--config.file={w / 'alertmanager.yml'}",
                      f"--storage.path={w / 'alertmanager-data'}",
                      f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                      "--cluster.listen-address=", "--log.level=warn"], w / "alertmanager.log")
        self._launch([prometheus, f"--config.file={w / 'prometheus.yml'}",
                      f"--storage.tsdb.path={w / 'prometheus-data'}",
                      f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                      "--log.level=warn"], w / "prometheus.log")
        deadline = time.monotonic() + timeout
        for name, port, proc in (("alertmanager", self.alertmanager_port, self._procs[0]),
                                 ("prometheus", self.prometheus_port, self._procs[1])):
            while not _ready(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = (w / f"{name}.log").read_text(errors="replace")[-600:]
                    raise AlertingUnavailable(f"{name} did not start on port {port}: {log}")
                time.sleep(0.05)
        return self

    def _launch(self, cmd: list[str], log: Path) -> None:
        with log.open("ab") as out:
            self._procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True))

    def stop(self) -> None:
        """Stop both (SIGTERM, then SIGKILL after 10 s), each by its process group."""
        for proc in self._procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self._procs = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant PromQL query (``AlertingUnavailable`` on an error)."""
        answer = self._get(f"/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        return answer["data"]["result"]

    def alerts(self) -> list[Alert]:
        """Pending and firing alerts, as Prometheus' rule evaluation has them."""
        answer = self._get("/api/v1/alerts")
        return [Alert(a["labels"]["alertname"], a["state"], a["labels"], a.get("activeAt", ""))
                for a in answer["data"]["alerts"]]

    def notified(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (what it would send to a receiver)."""
        url = f"http://127.0.0.1:{self.alertmanager_port}/api/v2/alerts"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.loads(reply.read())

    def _get(self, path: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.prometheus_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:       # a bad query: Prometheus says why
            raise AlertingUnavailable(f"prometheus: {exc.read().decode(errors='replace')}") \
                from None


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False
