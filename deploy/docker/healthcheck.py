"""Docker HEALTHCHECK for the drift-detector image: GET /healthz on the configured port.

It follows the settings the service itself uses: ``metrics.port`` and
``metrics.tls_certfile`` of the config file (the first argument; the image's
``/etc/drift-detector/config.yaml`` by default), overridden by
``DRIFT_METRICS__PORT`` and ``DRIFT_METRICS__TLS_CERTFILE`` as in ``load_settings``.
With a certificate it speaks HTTPS (the loopback name is not checked); with
``tls_client_cafile`` it presents the server's own certificate and key as the client's.
Standard library and PyYAML only: it must answer well within the 3 s timeout, and
importing ``detector.config`` alone takes about a second.

Exit status 0 when /healthz answers 200, 1 otherwise (Docker's contract).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from typing import Any

import yaml

DEFAULT_CONFIG = "/etc/drift-detector/config.yaml"
DEFAULT_PORT = 10108


def metrics_settings(config_path: str) -> dict[str, Any]:
    """The ``metrics`` section of ``config_path`` with the ``DRIFT_METRICS__*`` overrides.

    Parameters
    ----------
    config_path : str
        The YAML config file; a missing file counts as empty (every default).

    Returns
    -------
    dict
        ``port`` (int), ``tls_certfile``, ``tls_keyfile`` and ``tls_client_cafile``
        (str or None).
    """
    try:
        with open(config_path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        data = {}
    section = dict(data.get("metrics") or {})
    for key in ("port", "tls_certfile", "tls_keyfile", "tls_client_cafile"):
        value = os.environ.get(f"DRIFT_METRICS__{key.upper()}")
        if value is not None:
            section[key] = value
    return {"port": int(section.get("port", DEFAULT_PORT)),
            **{k: section.get(k) or None
               for k in ("tls_certfile", "tls_keyfile", "tls_client_cafile")}}


def probe(settings: dict[str, Any], timeout: float = 2.0) -> bool:
    """Whether ``/healthz`` on 127.0.0.1 answers 200.

    Parameters
    ----------
    settings : dict
        As returned by :func:`metrics_settings`.
    timeout : float
        Seconds for the whole request.

    Returns
    -------
    bool
        True for a 200 answer; False for any other status or a failed connection.
    """
    context = None
    scheme = "http"
    if settings["tls_certfile"]:
        scheme = "https"
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if settings["tls_client_cafile"]:
            context.load_cert_chain(settings["tls_certfile"], settings["tls_keyfile"])
    url = f"{scheme}://127.0.0.1:{settings['port']}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
            return answer.status == 200
    except OSError:  # refused, timed out, TLS failure, or an HTTP error status
        return False


if __name__ == "__main__":
    sys.exit(0 if probe(metrics_settings(sys.argv[1] if len(sys.argv) > 1
                                         else DEFAULT_CONFIG)) else 1)
