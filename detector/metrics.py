"""Prometheus export: a collector that reads monitor state at scrape time, and the
HTTP server with ``/metrics``, ``/healthz``, ``/readyz`` and ``/detections``.

No gauge is set per event: ``collect()`` builds fresh metric families from the
pipeline's state under the same lock the run loop holds while it applies a
batch, so a scrape always sees whole batches.

>>> import threading
>>> from detector.config import Settings
>>> from detector.pipeline import Pipeline, Record
>>> p = Pipeline(Settings())
>>> _ = p.process([Record("prediction", b'{"model": "m", "prediction_id": "1", '
...                b'"features": {"x": 2.0}, "prediction": 1}')], now=0.0)
>>> ex = Exporter(p, threading.Lock(), RunStatus())
>>> ex.registry.get_sample_value("drift_events_total", {"kind": "prediction", "model": "m"})
1
>>> ex.registry.get_sample_value("drift_detections_total", {"model": "m",
...     "version": "unversioned", "signal": "feature", "feature": "x", "category": "",
...     "detector": "adwin"})
0
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from detector import __version__
from detector.config import MetricsSettings
from detector.monitor import Detection
from detector.pipeline import Pipeline

log = logging.getLogger(__name__)

STREAM_LABELS = ["model", "version", "signal", "feature", "category", "detector"]
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RunStatus:
    """What the run loop reports about itself: connection, freshness, lag, recent detections."""

    def __init__(self, stale_after: float = 30.0, keep_detections: int = 1000) -> None:
        self.stale_after = stale_after
        self.connected = False
        self.last_poll = float("-inf")
        self.lag: dict[tuple[str, int], int] = {}
        self.detections: deque[Detection] = deque(maxlen=keep_detections)
        self.stopping = False
        self.checkpoint_at: float | None = None
        #: messages each enabled sink (``dead_letter``, ``drift_events``) handled, by outcome
        #: (written or why not); every series exists from start-up (``enable_sink``)
        self.sink_messages: dict[tuple[str, str], int] = {}
        #: partitions of each kind's topic held back so that the other topic's catch up
        self.join_backpressure: dict[str, int] = {"prediction": 0, "label": 0}
        #: each configured topic: True while the cluster does not have it
        self.topic_missing: dict[str, bool] = {}

    def readiness(self, now: float) -> tuple[bool, str]:
        """Ready, or why not.

        >>> status = RunStatus()
        >>> status.connected, status.last_poll = True, 100.0
        >>> status.topic_missing = {"predictions": False, "labelz": True}
        >>> status.readiness(101.0)
        (False, 'topic labelz does not exist')
        """
        if self.stopping:
            return False, "stopping"
        if not self.connected:
            return False, "not connected to Kafka"
        missing = sorted(topic for topic, gone in self.topic_missing.items() if gone)
        if missing:
            verb = "does" if len(missing) == 1 else "do"
            return False, f"topic{'s' * (len(missing) > 1)} {', '.join(missing)} {verb} not exist"
        if now - self.last_poll > self.stale_after:
            return False, f"no poll for {now - self.last_poll:.0f} s"
        return True, "consuming"

    def enable_sink(self, sink: str, outcomes: Iterable[str]) -> None:
        """Start a sink's counts at 0 for every outcome (before the HTTP server starts:
        later counts only change values, never the set of keys a scrape iterates).

        >>> status = RunStatus()
        >>> status.enable_sink("dead_letter", ("written", "too_large"))
        >>> status.count_sink("dead_letter", {"too_large": 1})
        >>> status.sink_messages
        {('dead_letter', 'written'): 0, ('dead_letter', 'too_large'): 1}
        """
        for outcome in outcomes:
            self.sink_messages.setdefault((sink, outcome), 0)

    def count_sink(self, sink: str, outcomes: Mapping[str, int]) -> None:
        """Add one publish call's outcome counts."""
        for outcome, n in outcomes.items():
            self.sink_messages[(sink, outcome)] = self.sink_messages.get((sink, outcome), 0) + n


class DriftCollector(Collector):
    """Reads the pipeline at scrape time and yields the DESIGN.md metric contract."""

    def __init__(self, pipeline: Pipeline, lock: threading.Lock, status: RunStatus,
                 clock: Callable[[], float] = time.time) -> None:
        self._pipeline = pipeline
        self._lock = lock
        self._status = status
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            families = self._families(self._clock())
        yield from families

    def _families(self, now: float) -> list[Metric]:
        p = self._pipeline
        hold = p.settings.metrics.detection_hold_seconds
        events = CounterMetricFamily("drift_events", "Valid events processed.",
                                     labels=["kind", "model"])
        rejected = CounterMetricFamily("drift_events_rejected",
                                       "Messages rejected, by kind and reason.",
                                       labels=["kind", "reason"])
        detected = GaugeMetricFamily("drift_detected",
                                     "1 while a detection is younger than the hold period.",
                                     labels=STREAM_LABELS)
        detections = CounterMetricFamily("drift_detections",
                                         "Detection episodes (firings closer than "
                                         "detection.cooldown values are one episode).",
                                         labels=STREAM_LABELS)
        firings = CounterMetricFamily("drift_detector_firings", "Raw detector firings.",
                                      labels=STREAM_LABELS)
        values = CounterMetricFamily("drift_stream_values", "Values fed to a stream's detectors.",
                                     labels=["model", "version", "signal", "feature", "category"])
        missing = CounterMetricFamily("drift_feature_missing", "Missing (null) feature values.",
                                      labels=["model", "version", "feature"])
        distance = GaugeMetricFamily("drift_feature_distance",
                                     "Distance of the latest window from the reference "
                                     "(chi2: p-value).",
                                     labels=["model", "version", "signal", "feature", "method"])
        model_metric = GaugeMetricFamily("drift_model_metric",
                                         "Model performance on joined labels.",
                                         labels=["model", "version", "metric", "window"])
        thresholds = GaugeMetricFamily("drift_model_metric_threshold",
                                       "Configured threshold of a model metric.",
                                       labels=["model", "metric"])
        join = CounterMetricFamily("drift_label_join", "Label join outcomes.",
                                   labels=["model", "outcome"])
        pending = GaugeMetricFamily("drift_pending_predictions",
                                    "Predictions waiting for their label.", labels=["model"])
        event_lag = GaugeMetricFamily("drift_event_lag_seconds",
                                      "Now minus the newest event timestamp.", labels=["model"])
        lag = GaugeMetricFamily("drift_consumer_lag_messages",
                                "Messages behind the partition's end.",
                                labels=["topic", "partition"])
        checkpoint = GaugeMetricFamily("drift_checkpoint_timestamp_seconds",
                                       "When the last checkpoint was saved or restored.")
        if self._status.checkpoint_at is not None:
            checkpoint.add_metric([], self._status.checkpoint_at)
        build = GaugeMetricFamily("drift_build_info", "drift-detector build.", labels=["version"])
        build.add_metric([__version__], 1)

        for (kind, reason), n in p.rejected.items():
            rejected.add_metric([kind, reason], n)
        for state in p.models.values():
            name = state.name
            for kind, n in state.events.items():
                events.add_metric([kind, name], n)
            for outcome, n in state.join.items():
                join.add_metric([name, outcome], n)
            pending.add_metric([name], p.join.pending(name))
            if state.newest_event_time is not None:
                event_lag.add_metric([name], max(0.0, now - state.newest_event_time))
        for monitor in p.monitors():
            model, version = monitor.model, monitor.version
            for stream in monitor.streams():
                signal, feature, category = stream.signal, stream.feature, stream.category
                values.add_metric([model, version, signal, feature, category], stream.seen)
                if signal == "feature" and not category:
                    missing.add_metric([model, version, feature], stream.missing)
                ref = stream.ref
                channels = (*stream.channels, *(ref.channels if ref is not None else ()))
                for ch in channels:
                    key = [model, version, signal, feature, category, ch.name]
                    # A series' first exposition is 0 even if the detector already fired
                    # (a new version can fire in its first batch): increase() needs a 0
                    # before the first detection to see it.
                    detections.add_metric(key, ch.detections if ch.announced else 0)
                    firings.add_metric(key, ch.firings if ch.announced else 0)
                    ch.announced = True
                    detected.add_metric(key, 1.0 if now - ch.last_at < hold else 0.0)
                if ref is not None:
                    for ch in ref.channels:
                        if ch.value is not None:
                            distance.add_metric([model, version, signal, feature, ch.name],
                                                ch.value)
            for metric, window, value in monitor.performance.values():
                model_metric.add_metric([model, version, metric, window], value)
        for model, cfg in p.settings.models.items():
            for metric, value in cfg.thresholds.items():
                thresholds.add_metric([model, metric], value)
        for (topic, partition), n in sorted(self._status.lag.items()):
            lag.add_metric([topic, str(partition)], n)
        backpressure = GaugeMetricFamily("drift_join_backpressure",
                                         "Partitions of the topic of this kind held back so "
                                         "that the other topic's catch up (a backlog).",
                                         labels=["kind"])
        for kind, held in self._status.join_backpressure.items():
            backpressure.add_metric([kind], held)
        sinks = CounterMetricFamily("drift_sink_messages",
                                    "Messages for the dead-letter and drift-events topics, by "
                                    "outcome: written, or why not (too_large, topic_missing, "
                                    "refused, timeout).", labels=["sink", "outcome"])
        for (sink, outcome), n in sorted(self._status.sink_messages.items()):
            sinks.add_metric([sink, outcome], n)
        topic_missing = GaugeMetricFamily("drift_topic_missing",
                                          "1 while a configured topic does not exist (nothing "
                                          "is read from it), else 0.", labels=["topic"])
        for topic, gone in sorted(self._status.topic_missing.items()):
            topic_missing.add_metric([topic], 1.0 if gone else 0.0)
        return [events, rejected, detected, detections, firings, values, missing, distance, model_metric,
                thresholds, join, pending, event_lag, lag, checkpoint, build, backpressure, sinks,
                topic_missing]


class Exporter:
    """The registry our HTTP server exposes: drift metrics, batch timing, process metrics."""

    def __init__(self, pipeline: Pipeline, lock: threading.Lock, status: RunStatus) -> None:
        self.status = status
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DriftCollector(pipeline, lock, status))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._batch = Histogram("drift_batch_seconds", "Time to apply one polled batch.",
                                buckets=BATCH_BUCKETS, registry=self.registry)

    def observe_batch(self, seconds: float) -> None:
        self._batch.observe(seconds)


class MetricsServer:
    """Threaded HTTP(S) server on ``host:port`` (port 0 picks a free one).

    With ``tls_certfile``/``tls_keyfile`` it speaks TLS only; with
    ``tls_client_cafile`` it also requires a client certificate signed by that CA;
    with basic auth, ``/metrics`` and ``/detections`` need the credentials while
    ``/healthz`` and ``/readyz`` (no data) stay open for probes.
    """

    def __init__(self, exporter: Exporter, cfg: MetricsSettings) -> None:
        auth = None
        if cfg.basic_auth_username is not None:
            pair = f"{cfg.basic_auth_username}:{cfg.basic_auth_password.get_secret_value()}"
            auth = b"Basic " + base64.b64encode(pair.encode())
        handler = type("Handler", (_Handler,), {"exporter": exporter, "auth": auth})
        self._server = _Server((cfg.host, cfg.port), handler)
        self._server.daemon_threads = True
        if cfg.tls_certfile is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(cfg.tls_certfile), str(cfg.tls_keyfile))
            if cfg.tls_client_cafile is not None:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(str(cfg.tls_client_cafile))
            # the handshake runs in the request's own thread (see _Handler.setup), so a
            # client that connects and stalls cannot hold up other scrapes
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("http_client_error", extra={"fields": {"client": client_address[0]}},
                  exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    exporter: Exporter
    auth: bytes | None
    server_version = f"drift-detector/{__version__}"
    timeout = 10

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path in ("/metrics", "/detections") and self.auth is not None:
            given = (self.headers.get("Authorization") or "").encode()
            if not hmac.compare_digest(given, self.auth):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="drift-detector"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            try:
                body = encoder(self.exporter.registry)
            except (UnicodeError, ValueError) as exc:
                # decode keeps every label value exportable; if one still is not, say so
                # loudly instead of failing every scrape in silence
                log.error("scrape_failed", exc_info=True, extra={"fields": {"error": repr(exc)}})
                self._send(500, f"scrape failed: {exc!r}\n".encode(), "text/plain")
                return
            self._send(200, body, content_type)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/readyz":
            ready, reason = self.exporter.status.readiness(time.time())
            self._send(200 if ready else 503, f"{reason}\n".encode(), "text/plain")
        elif path == "/detections":
            recent = [asdict(d) for d in list(self.exporter.status.detections)]
            self._send(200, json.dumps(recent).encode(), "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz, /readyz, /detections\n",
                       "text/plain")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("http %s", format % args)
