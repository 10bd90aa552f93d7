"""Prometheus export: a collector that reads monitor state at scrape time, and the
HTTP server with ``/metrics``, ``/healthz``, ``/readyz`` and ``/detections``.

No gauge is set per event: at every scrape the collector copies the numbers it
shows from the pipeline's state under the same lock the run loop holds while it
applies a batch, so a scrape always sees whole batches; the lock is held only for
that copy, and the text is written after it is released.

>>> import threading
>>> from detector.config import Settings
>>> from detector.pipeline import Pipeline
>>> from detector.records import Record
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
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from detector import __version__
from detector.config import MetricsSettings
from detector.monitor import Detection
from detector.pipeline import Pipeline

log = logging.getLogger(__name__)

STREAM_LABELS = ("model", "version", "signal", "feature", "category", "detector")
VALUE_LABELS = ("model", "version", "signal", "feature", "category")
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


#: The drift collector's families in exposition order: name, type, help, label names.
FAMILIES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("drift_events", "counter", "Valid events processed.", ("kind", "model")),
    ("drift_events_rejected", "counter", "Messages rejected, by kind and reason.",
     ("kind", "reason")),
    ("drift_detected", "gauge", "1 while a detection is younger than the hold period.",
     STREAM_LABELS),
    ("drift_detections", "counter",
     ("Detection episodes (firings closer than detection.cooldown values are one "
      "episode)."), STREAM_LABELS),
    ("drift_detector_firings", "counter", "Raw detector firings.", STREAM_LABELS),
    ("drift_stream_values", "counter", "Values fed to a stream's detectors.", VALUE_LABELS),
    ("drift_feature_missing", "counter", "Missing (null) feature values.",
     ("model", "version", "feature")),
    ("drift_feature_distance", "gauge",
     "Distance of the latest window from the reference (chi2: p-value).",
     ("model", "version", "signal", "feature", "method")),
    ("drift_model_metric", "gauge", "Model performance on joined labels.",
     ("model", "version", "metric", "window")),
    ("drift_model_metric_threshold", "gauge", "Configured threshold of a model metric.",
     ("model", "metric")),
    ("drift_label_join", "counter", "Label join outcomes.", ("model", "outcome")),
    ("drift_pending_predictions", "gauge", "Predictions waiting for their label.", ("model",)),
    ("drift_event_lag_seconds", "gauge", "Now minus the newest event timestamp.", ("model",)),
    ("drift_consumer_lag_messages", "gauge", "Messages behind the partition's end.",
     ("topic", "partition")),
    ("drift_checkpoint_timestamp_seconds", "gauge",
     "When the last checkpoint was saved or restored.", ()),
    ("drift_build_info", "gauge", "drift-detector build.", ("version",)),
    ("drift_join_backpressure", "gauge",
     ("Partitions of the topic of this kind held back so that the other topic's catch up "
      "(a backlog)."), ("kind",)),
    ("drift_sink_messages", "counter",
     ("Messages for the dead-letter and drift-events topics, by outcome: written, or why "
      "not (too_large, topic_missing, refused, timeout)."), ("sink", "outcome")),
    ("drift_topic_missing", "gauge",
     "1 while a configured topic does not exist (nothing is read from it), else 0.",
     ("topic",)),
)
#: Families with one series per stream or per channel: rendered from cached label blocks.
_STREAM_FAMILIES = frozenset({"drift_detected", "drift_detections", "drift_detector_firings",
                              "drift_stream_values", "drift_feature_missing",
                              "drift_feature_distance"})


def _escape(value: str) -> str:
    """A label value as the exposition formats quote it (prometheus_client's escaping).

    >>> print(_escape('a "b"\\\\c\\nd'))
    a \\"b\\"\\\\c\\nd
    """
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _block(names: Iterable[str], values: Iterable[str]) -> str:
    """The ``{...}`` part of a sample line: label names sorted, values escaped.

    >>> _block(("model", "kind"), ("m", "prediction"))
    '{kind="prediction",model="m"}'
    >>> _block((), ())
    ''
    """
    pairs = sorted(zip(names, values, strict=True))
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


def _number(value: float) -> str:
    """A sample value as prometheus_client prints it (Go's float formatting), with a
    shortcut for the small non-negative integers that most counters are.

    >>> [_number(v) for v in (0, 7, 999999, 1234567, 0.25, -0.0, float("inf"), True)]
    ['0.0', '7.0', '999999.0', '1.234567e+06', '0.25', '-0.0', '+Inf', '1.0']
    """
    if type(value) is int and 0 <= value < 1_000_000:
        return f"{value}.0"
    return floatToGoString(value)


def _headers(openmetrics: bool) -> dict[str, str]:
    """``# HELP`` and ``# TYPE`` lines of each family, as prometheus_client writes them."""
    out = {}
    for name, kind, doc, _ in FAMILIES:
        if openmetrics:
            shown, doc = name, _escape(doc)
        else:
            shown, doc = name + "_total" * (kind == "counter"), doc.replace(
                "\\", r"\\").replace("\n", r"\n")
        out[name] = f"# HELP {shown} {doc}\n# TYPE {shown} {kind}\n"
    return out


_HEADERS = {False: _headers(False), True: _headers(True)}


class _StreamBlocks:
    """The label blocks of one stream's series, escaped once and reused between scrapes."""

    __slots__ = ("channels", "methods", "missing", "values")

    def __init__(self, key: tuple[str, str, str, str, str], names: tuple[str, ...],
                 methods: int, exports_missing: bool) -> None:
        model, version, signal, feature, _ = key
        self.values = _block(VALUE_LABELS, key)
        self.missing = (_block(("model", "version", "feature"), (model, version, feature))
                        if exports_missing else None)
        self.channels = [_block(STREAM_LABELS, (*key, name)) for name in names]
        self.methods = [_block(("model", "version", "signal", "feature", "method"),
                               (model, version, signal, feature, name))
                        for name in names[len(names) - methods:]]


@dataclass(slots=True)
class Scrape:
    """What one scrape copied from the pipeline while holding the lock.

    Stream series are kept as flat columns in stream order (channels in the order
    of ``stream.channels`` then the reference's), so that rendering them outside the
    lock is a zip of cached label blocks with these values.
    """

    #: the series of the families that are not per stream: family → (label values, value)
    series: dict[str, list[tuple[tuple[str, ...], float]]]
    #: per stream: (model, version, signal, feature, category), the names of its channels
    #: (detectors, then reference methods) and how many of those are reference methods
    streams: list[tuple[tuple[str, str, str, str, str], tuple[str, ...], int]] = field(
        default_factory=list)
    #: per stream: values fed, and missing values (None: the stream does not export it)
    seen: list[int] = field(default_factory=list)
    missing: list[int | None] = field(default_factory=list)
    #: per channel: detections and firings as exposed (0 at a series' first exposition),
    #: and whether the latest firing is younger than the hold period
    detections: list[int] = field(default_factory=list)
    firings: list[int] = field(default_factory=list)
    detected: list[bool] = field(default_factory=list)
    #: per reference method: the latest distance (None before the first window)
    distances: list[float | None] = field(default_factory=list)

    def samples(self, family: str) -> Iterator[tuple[tuple[str, ...], float]]:
        """Label values (in ``FAMILIES`` order) and value of every series of a family."""
        if family not in _STREAM_FAMILIES:
            yield from self.series[family]
            return
        if family == "drift_stream_values":
            yield from zip((key for key, _, _ in self.streams), self.seen, strict=True)
        elif family == "drift_feature_missing":
            for (key, _, _), n in zip(self.streams, self.missing, strict=True):
                if n is not None:
                    yield (key[0], key[1], key[3]), n
        elif family == "drift_feature_distance":
            keys = ((*key[:4], name) for key, names, methods in self.streams
                    for name in names[len(names) - methods:])
            for labels, value in zip(keys, self.distances, strict=True):
                if value is not None:
                    yield labels, value
        else:
            keys = ((*key, name) for key, names, _ in self.streams for name in names)
            if family == "drift_detected":
                values: Iterable[float] = (1.0 if hot else 0.0 for hot in self.detected)
            else:
                values = self.detections if family == "drift_detections" else self.firings
            yield from zip(keys, values, strict=True)


class DriftCollector(Collector):
    """Reads the pipeline at scrape time and yields the DESIGN.md metric contract.

    The lock is held only to copy numbers into a ``Scrape`` (``scrape``); metric
    families (``collect``, for a prometheus_client registry) or the exposition text
    (``render``, for ``/metrics``) are built from that copy after the lock is released.
    ``render`` writes the text itself from label blocks escaped once per stream and
    kept between scrapes; it gives the same bytes as prometheus_client's encoders.
    """

    def __init__(self, pipeline: Pipeline, lock: threading.Lock, status: RunStatus,
                 clock: Callable[[], float] = time.time) -> None:
        self._pipeline = pipeline
        self._lock = lock
        self._status = status
        self._clock = clock
        #: label blocks by (stream labels, channel names, methods); replaced at every
        #: render, so streams that are gone (an evicted version or feature) leave it
        self._blocks: dict[tuple[tuple[str, ...], tuple[str, ...], int], _StreamBlocks] = {}

    def collect(self) -> Iterator[Metric]:
        scrape = self.scrape()
        for name, kind, doc, labels in FAMILIES:
            family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_type(name, doc, labels=list(labels))
            for values, value in scrape.samples(name):
                family.add_metric(list(values), value)
            yield family

    def render(self, openmetrics: bool = False) -> str:
        """The drift families in the text format (or OpenMetrics, without ``# EOF``).

        >>> import threading
        >>> from detector.config import Settings
        >>> from detector.pipeline import Pipeline
        >>> from detector.records import Record
        >>> p = Pipeline(Settings(detectors={"feature": ["adwin"], "prediction": ["cusum"],
        ...                                  "error": [], "label": []}))
        >>> _ = p.process([Record("prediction", b'{"model": "m", "model_version": "1", '
        ...                b'"prediction_id": "1", "features": {"x": 2.0}, "prediction": 1}')],
        ...               now=0.0)
        >>> text = DriftCollector(p, threading.Lock(), RunStatus()).render()
        >>> for line in text.splitlines():
        ...     if line.startswith(("drift_detections_total", "# TYPE drift_detections")):
        ...         print(line.removeprefix("drift_detections_total"))
        # TYPE drift_detections_total counter
        {category="",detector="adwin",feature="x",model="m",signal="feature",version="1"} 0.0
        {category="",detector="cusum",feature="",model="m",signal="prediction",version="1"} 0.0
        """
        scrape = self.scrape()
        old, blocks = self._blocks, {}
        streams: list[_StreamBlocks] = []
        for key, names, methods in scrape.streams:
            cache_key = (key, names, methods)
            entry = old.get(cache_key)
            if entry is None:
                entry = _StreamBlocks(key, names, methods,
                                      key[2] == "feature" and not key[4])
            blocks[cache_key] = entry
            streams.append(entry)
        self._blocks = blocks
        channels = [block for entry in streams for block in entry.channels]
        methods = [block for entry in streams for block in entry.methods]
        number = _number
        headers = _HEADERS[openmetrics]
        out: list[str] = []
        for name, kind, _, labels in FAMILIES:
            out.append(headers[name])
            sample = name + "_total" if kind == "counter" else name
            if name == "drift_detected":
                out += [f"{sample}{b} {'1.0' if hot else '0.0'}\n"
                        for b, hot in zip(channels, scrape.detected, strict=True)]
            elif name in ("drift_detections", "drift_detector_firings"):
                counts = scrape.detections if name == "drift_detections" else scrape.firings
                out += [f"{sample}{b} {number(n)}\n"
                        for b, n in zip(channels, counts, strict=True)]
            elif name == "drift_stream_values":
                out += [f"{sample}{entry.values} {number(n)}\n"
                        for entry, n in zip(streams, scrape.seen, strict=True)]
            elif name == "drift_feature_missing":
                out += [f"{sample}{entry.missing} {number(n)}\n"
                        for entry, n in zip(streams, scrape.missing, strict=True)
                        if n is not None]
            elif name == "drift_feature_distance":
                out += [f"{sample}{b} {floatToGoString(v)}\n"
                        for b, v in zip(methods, scrape.distances, strict=True) if v is not None]
            else:
                out += [f"{sample}{_block(labels, values)} {number(value)}\n"
                        for values, value in scrape.series[name]]
        return "".join(out)

    def scrape(self) -> Scrape:
        """Copy what the families show, holding the lock (and only for this)."""
        with self._lock:
            return self._scrape(self._clock())

    def _scrape(self, now: float) -> Scrape:
        p, status = self._pipeline, self._status
        hold = p.settings.metrics.detection_hold_seconds
        series: dict[str, list[tuple[tuple[str, ...], float]]] = {
            name: [] for name, _, _, _ in FAMILIES if name not in _STREAM_FAMILIES}
        out = Scrape(series)
        events, join = series["drift_events"], series["drift_label_join"]
        pending, event_lag = series["drift_pending_predictions"], series["drift_event_lag_seconds"]
        series["drift_events_rejected"] = [((kind, reason), n)
                                           for (kind, reason), n in p.rejected.items()]
        for state in p.models.values():
            name = state.name
            events += [((kind, name), n) for kind, n in state.events.items()]
            join += [((name, outcome), n) for outcome, n in state.join.items()]
            pending.append(((name,), p.join.pending(name)))
            if state.newest_event_time is not None:
                event_lag.append(((name,), max(0.0, now - state.newest_event_time)))
        streams, seen, missing = out.streams, out.seen, out.missing
        detections, firings, detected = out.detections, out.firings, out.detected
        distances = out.distances
        model_metric = series["drift_model_metric"]
        for monitor in p.monitors():
            model, version = monitor.model, monitor.version
            for stream in monitor.streams():
                signal, feature, category = stream.signal, stream.feature, stream.category
                ref = stream.ref
                methods = ref.channels if ref is not None else ()
                channels = (*stream.channels, *methods)
                streams.append(((model, version, signal, feature, category),
                                tuple([ch.name for ch in channels]), len(methods)))
                seen.append(stream.seen)
                missing.append(stream.missing if signal == "feature" and not category else None)
                for ch in channels:
                    # A series' first exposition is 0 even if the detector already fired
                    # (a new version can fire in its first batch): increase() needs a 0
                    # before the first detection to see it.
                    if ch.announced:
                        detections.append(ch.detections)
                        firings.append(ch.firings)
                    else:
                        detections.append(0)
                        firings.append(0)
                        ch.announced = True
                    detected.append(now - ch.last_at < hold)
                distances += [ch.value for ch in methods]
            model_metric += [((model, version, metric, window), value)
                             for metric, window, value in monitor.performance.values()]
        series["drift_model_metric_threshold"] = [
            ((model, metric), value) for model, cfg in p.settings.models.items()
            for metric, value in cfg.thresholds.items()]
        series["drift_consumer_lag_messages"] = [
            ((topic, str(partition)), n) for (topic, partition), n in sorted(status.lag.items())]
        if status.checkpoint_at is not None:
            series["drift_checkpoint_timestamp_seconds"] = [((), status.checkpoint_at)]
        series["drift_build_info"] = [((__version__,), 1)]
        series["drift_join_backpressure"] = [((kind,), held) for kind, held
                                             in status.join_backpressure.items()]
        series["drift_sink_messages"] = [((sink, outcome), n) for (sink, outcome), n
                                         in sorted(status.sink_messages.items())]
        series["drift_topic_missing"] = [((topic,), 1.0 if gone else 0.0) for topic, gone
                                         in sorted(status.topic_missing.items())]
        return out


class Exporter:
    """The registry our HTTP server exposes: drift metrics, batch timing, process metrics.

    ``registry`` holds all of them (prometheus_client's API: ``get_sample_value``,
    ``generate_latest``); ``exposition`` serves ``/metrics`` from the drift collector's
    own ``render`` followed by prometheus_client's encoding of the rest.
    """

    def __init__(self, pipeline: Pipeline, lock: threading.Lock, status: RunStatus) -> None:
        self.status = status
        self.collector = DriftCollector(pipeline, lock, status)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._batch = Histogram("drift_batch_seconds", "Time to apply one polled batch.",
                                buckets=BATCH_BUCKETS, registry=None)
        #: everything but the drift collector, in the same order as in ``registry``
        self._runtime = CollectorRegistry(auto_describe=False)
        for collector in (ProcessCollector(registry=None), PlatformCollector(registry=None),
                          self._batch):
            self.registry.register(collector)
            self._runtime.register(collector)

    def observe_batch(self, seconds: float) -> None:
        self._batch.observe(seconds)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """Body and content type of a ``/metrics`` reply to this ``Accept`` header: the
        bytes prometheus_client's ``choose_encoder`` would give for ``registry``.

        The drift families are rendered by ``DriftCollector.render``, unless the client
        asks for an escaping that changes metric names (``dots``, ``values``); then the
        whole registry goes through prometheus_client.

        >>> import threading
        >>> from detector.config import Settings
        >>> from detector.pipeline import Pipeline
        >>> ex = Exporter(Pipeline(Settings()), threading.Lock(), RunStatus())
        >>> body, content_type = ex.exposition("application/openmetrics-text; version=1.0.0")
        >>> content_type, body.endswith(b"# EOF\\n")
        ('application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores', True)
        """
        encoder, content_type = choose_encoder(accept)
        escaping = UNDERSCORES
        for token in content_type.split(";"):
            key, _, value = token.strip().partition("=")
            if key == "escaping":
                escaping = value
        if escaping not in (UNDERSCORES, ALLOWUTF8):
            return encoder(self.registry), content_type
        openmetrics = content_type.startswith("application/openmetrics-text")
        return self.collector.render(openmetrics).encode() + encoder(self._runtime), content_type


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
            try:
                body, content_type = self.exporter.exposition(self.headers.get("Accept", ""))
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
