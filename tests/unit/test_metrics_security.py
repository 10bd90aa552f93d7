"""The metrics endpoint over TLS with a self-signed CA, client certificates and basic auth."""

from __future__ import annotations

import base64
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from detector.config import MetricsSettings, Settings
from detector.metrics import Exporter, MetricsServer, RunStatus
from detector.pipeline import Pipeline


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all self-made."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
                 *(["-extfile", "san.cnf"] if name == "server" else []), cwd=d)
    return d


def _server(**cfg) -> MetricsServer:
    status = RunStatus()
    exporter = Exporter(Pipeline(Settings()), threading.Lock(), status)
    return MetricsServer(exporter, MetricsSettings(host="127.0.0.1", port=0, **cfg)).start()


def _get(url: str, ctx: ssl.SSLContext | None = None, auth: str | None = None) -> int:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        return urllib.request.urlopen(req, context=ctx, timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_tls_with_required_client_certificates_and_basic_auth(pki: Path) -> None:
    server = _server(tls_certfile=pki / "server.pem", tls_keyfile=pki / "server.key",
                     tls_client_cafile=pki / "ca.pem", basic_auth_username="prom",
                     basic_auth_password="s3cret-pass")
    base = f"https://127.0.0.1:{server.port}"
    try:
        trusted = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _get(base + "/healthz", trusted)             # no client certificate: refused
        with_cert = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with_cert.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
        assert _get(base + "/healthz", with_cert) == 200      # probes need no password
        assert _get(base + "/metrics", with_cert) == 401
        assert _get(base + "/metrics", with_cert, "prom:wrong") == 401
        assert _get(base + "/metrics", with_cert, "prom:s3cret-pass") == 200
        assert _get(base + "/detections", with_cert) == 401
        with pytest.raises((urllib.error.URLError, ConnectionError)):   # no plain HTTP
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        # a client that connects and says nothing does not block other scrapes
        import socket
        with socket.create_connection(("127.0.0.1", server.port)):
            assert _get(base + "/metrics", with_cert, "prom:s3cret-pass") == 200
    finally:
        server.stop()


def test_tls_without_client_certificates(pki: Path) -> None:
    server = _server(tls_certfile=pki / "server.pem", tls_keyfile=pki / "server.key")
    try:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        assert _get(f"https://127.0.0.1:{server.port}/metrics", ctx) == 200
    finally:
        server.stop()


def test_half_configured_security_is_a_config_error() -> None:
    for bad in ({"tls_certfile": "a.pem"}, {"basic_auth_username": "u"},
                {"tls_client_cafile": "ca.pem"}):
        with pytest.raises(ValueError):
            MetricsSettings(**bad)


def test_report_is_behind_the_same_tls_and_auth_and_the_cli_saves_it(pki: Path,
                                                                      tmp_path: Path) -> None:
    """``/report`` needs the credentials like ``/metrics``; ``drift-detector report --url``
    presents the CA, the client certificate and the password and saves the page; a
    server that records no report answers 404 with the setting to change."""
    import json
    import os
    import sys

    from detector.recorder import Recorder
    from detector.records import Record
    from detector.report import render

    settings = Settings()
    recorder = Recorder(settings)
    pipeline = Pipeline(settings, tap=recorder.tap)
    batch = [Record("prediction", json.dumps({"model": "m", "prediction_id": str(i),
                                              "features": {"x": float(i)},
                                              "prediction": 1}).encode()) for i in range(50)]
    recorder.record(pipeline, pipeline.process(batch, now=0.0))
    exporter = Exporter(pipeline, threading.Lock(), RunStatus())
    server = MetricsServer(exporter, MetricsSettings(
        host="127.0.0.1", port=0, tls_certfile=pki / "server.pem", tls_keyfile=pki / "server.key",
        tls_client_cafile=pki / "ca.pem", basic_auth_username="reader",
        basic_auth_password="s3cret-pass"),
        report=lambda: render(recorder.snapshot(pipeline, "test")).encode()).start()
    plain = _server()
    base = f"https://127.0.0.1:{server.port}"
    try:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
        assert _get(base + "/report", ctx) == 401
        assert _get(base + "/report", ctx, "reader:wrong") == 401
        assert _get(base + "/report", ctx, "reader:s3cret-pass") == 200
        with pytest.raises(urllib.error.HTTPError) as off:
            urllib.request.urlopen(f"http://127.0.0.1:{plain.port}/report", timeout=5)
        assert off.value.code == 404 and b"report.enabled" in off.value.read()

        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFT_")}
        root = Path(__file__).resolve().parents[2]
        args = [sys.executable, "-m", "detector", "report", "--url", base, "--user", "reader",
                "--cafile", str(pki / "ca.pem"), "--certfile", str(pki / "client.pem"),
                "--keyfile", str(pki / "client.key"), "-o", str(tmp_path / "r.html")]
        missing = subprocess.run(args, capture_output=True, text=True, env=env, cwd=root,
                                 check=False)
        assert missing.returncode == 2 and "DRIFT_REPORT_PASSWORD" in missing.stderr
        wrong = subprocess.run(args, capture_output=True, text=True, cwd=root, check=False,
                               env={**env, "DRIFT_REPORT_PASSWORD": "wrong"})
        assert wrong.returncode == 1 and "answered 401" in wrong.stderr
        done = subprocess.run(args, capture_output=True, text=True, cwd=root, check=False,
                              env={**env, "DRIFT_REPORT_PASSWORD": "s3cret-pass"})
        assert done.returncode == 0, done.stderr
        page = (tmp_path / "r.html").read_text()
        assert page.startswith("<!doctype html>") and '"source":"test"' in page
    finally:
        server.stop()
        plain.stop()
