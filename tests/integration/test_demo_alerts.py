"""``drift-detector demo --alerts`` for real: the demo starts Prometheus and Alertmanager
with the shipped rules, shows the alerts as they fire and in its summary, and stops them
at the end; without them installed it says how to install them and exits 2."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path


def _demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("DRIFT_")}
    return subprocess.run([sys.executable, "-m", "detector", "demo", *args],
                          capture_output=True, text=True, timeout=180, check=False,
                          env={**base, **(env or {})})


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_demo_shows_the_alerts_the_shipped_rules_fire(prometheus_tools) -> None:
    out = _demo("--alerts", "--duration", "40", "--rate", "500", "--port", "0", "--no-live")
    print(out.stdout[-4000:])
    assert out.returncode == 0, out.stderr[-3000:]
    ports = re.search(r"alerts: Prometheus http://127\.0\.0\.1:(\d+)/alerts and "
                      r"Alertmanager http://127\.0\.0\.1:(\d+)", out.stdout)
    assert ports, out.stdout[:2000]
    # as they fire, in the progress lines
    assert re.search(r"^\[\s*[\d.]+ s\] alert firing: FeatureDriftDetected model=fraud "
                     r"model_version=3 feature=amount", out.stdout, re.MULTILINE)
    assert re.search(r"alerts firing [1-9]", out.stdout)
    # and in the summary, the drift of A and the accuracy of B; no target alert
    summary = out.stdout.split("\nSummary\n", 1)[1]
    fired = re.findall(r"^\s+[\d.]+ s  (\S+)", summary, re.MULTILINE)
    assert {"FeatureDriftDetected", "ModelMetricBelowThreshold"} <= set(fired), summary
    assert not {"DriftDetectorAbsent", "DriftDetectorDown", "KafkaDisconnected",
                "DriftDetectorNotPolling"} & set(fired), summary
    received = re.search(r"Alertmanager received (\d+) of them", summary)
    assert received and int(received.group(1)) >= 2, summary
    # both stopped with the demo
    assert not any(_listening(int(port)) for port in ports.groups())


def test_without_prometheus_the_demo_says_how_to_install_it(tmp_path: Path) -> None:
    out = _demo("--alerts", "--duration", "5", env={"PATH": str(tmp_path)})
    assert out.returncode == 2
    assert not out.stdout                         # nothing was started
    [line] = out.stderr.splitlines()
    assert line.startswith("drift-detector demo: --alerts needs Prometheus and Alertmanager: "
                           "prometheus and alertmanager not found: "), line
    assert "apt-get install prometheus prometheus-alertmanager" in line
