"""Prometheus export: a collector that reads monitor state at scrape time, and the
HTTP server with ``/metrics``, ``/healthz``, ``/readyz``, ``/detections`` and ``/report``.

No gauge is set per event: at every scrape the collector copies the numbers it
shows from the pipeline's state under the same lock the run loop holds while it
applies a batch, so a scrape always sees whole batches; the lock is held only for
that copy, and the text is written after it is released.

The families and their labels are the metric contract of the README ("Metrics"):
``model_version`` names a model's version, ``feature`` is empty on the prediction,
error and label streams (``signal`` tells them apart), ``category`` is set only on the
share streams of a categorical feature, and a family has no series for label
combinations that cannot occur. ``metrics.max_feature_series`` bounds the series of
features in one scrape.

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
...     "model_version": "unversioned", "signal": "feature", "feature": "x", "category": "",
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
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from detector import __version__
from detector.config import MetricsSettings
from detector.data_quality import FeatureQuality
from detector.detections import detection_fields
from detector.estimation import Snapshot
from detector.ingest import Ingest
from detector.monitor import Detection, ModelMonitor, Stream
from detector.pipeline import Pipeline

log = logging.getLogger(__name__)

#: (model, model_version, signal, feature, category): the labels of one value stream
StreamKey = tuple[str, str, str, str, str]
VALUE_LABELS = ("model", "model_version", "signal", "feature", "category")
STREAM_LABELS = (*VALUE_LABELS, "detector")
MISSING_LABELS = ("model", "model_version", "feature")
ISSUE_LABELS = (*MISSING_LABELS, "reason")
REFERENCE_LABELS = ("model", "model_version", "signal", "feature", "method")
MODEL_METRIC_LABELS = ("model", "model_version", "metric", "window")
#: model metrics in the unit of the label (regression errors); the others are ratios
ERROR_METRICS = frozenset({"mae", "rmse"})
#: reference comparisons whose value is a p-value (small means drift); the others are
#: distances (large means drift)
PVALUE_METHODS = frozenset({"chi2"})
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RunStatus:
    """What the run loop reports about itself: connection, freshness, lag, recent detections."""

    def __init__(self, stale_after: float = 30.0, keep_detections: int = 1000) -> None:
        self.stale_after = stale_after
        #: whether the consumer holds a live broker connection (the run loop checks every
        #: second) and when the loop last polled: ``readiness`` and the gauges
        #: ``drift_kafka_connected`` and ``drift_last_poll_timestamp_seconds``
        self.connected = False
        self.last_poll = float("-inf")
        self.lag: dict[tuple[str, int], int] = {}
        self.detections: deque[Detection] = deque(maxlen=keep_detections)
        self.stopping = False
        self.checkpoint_at: float | None = None
        #: why state cannot be saved, while it cannot (not ready until a save succeeds)
        self.checkpoint_error: str | None = None
        #: state reads, writes and restores that failed, by (operation, reason)
        self.checkpoint_failures: dict[tuple[str, str], int] = {}
        #: messages each enabled sink (``dead_letter``, ``drift_events``) handled, by outcome
        #: (written or why not); every series exists from start-up (``enable_sink``)
        self.sink_messages: dict[tuple[str, str], int] = {}
        #: partitions of each kind's topic held back so that the other topic's catch up
        self.join_backpressure: dict[str, int] = {"prediction": 0, "label": 0}
        #: each configured topic: True while the cluster does not have it
        self.topic_missing: dict[str, bool] = {}
        #: HTTP ingest requests refused, by reason (every reason from start-up when enabled)
        self.ingest_rejected: dict[str, int] = {}
        #: model servers' requests and responses by (format, pair outcome): the
        #: ``pairs`` counter of ``detector.formats.Inputs`` (every series from start-up)
        self.input_pairs: Mapping[tuple[str, str], int] = {}

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
        if self.checkpoint_error is not None:
            return False, self.checkpoint_error
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




#: The drift collector's families in exposition order: name, type, help, label names
#: (with ``metrics.per_detector``; see ``families``).
FAMILIES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("drift_events", "counter", "Valid events processed.", ("kind", "model")),
    ("drift_predictions", "counter", "Predictions applied, per model version.",
     ("model", "model_version")),
    ("drift_events_rejected", "counter", "Messages rejected, by kind and reason.",
     ("kind", "reason")),
    ("drift_detected", "gauge", "1 while a detection is younger than the hold period.",
     STREAM_LABELS),
    ("drift_detections", "counter",
     ("Detection episodes (firings closer than detection.cooldown values are one "
      "episode)."), STREAM_LABELS),
    ("drift_detector_firings", "counter", "Raw detector firings.", STREAM_LABELS),
    ("drift_stream_values", "counter", "Values fed to a stream's detectors.", VALUE_LABELS),
    ("drift_feature_missing", "counter", "Missing (null) feature values.", MISSING_LABELS),
    ("drift_feature_issues", "counter",
     ("Data quality problems of a feature against its reference, by reason (missing, "
      "out_of_range, unseen_category, type_mismatch, unannounced)."), ISSUE_LABELS),
    ("drift_feature_reference_missing_ratio", "gauge",
     "Share of the reference's predictions without a value for the feature.", MISSING_LABELS),
    ("drift_feature_distance", "gauge",
     "Distance of the latest window from the reference (psi, js, ks; 0: the same).",
     REFERENCE_LABELS),
    ("drift_feature_pvalue", "gauge",
     "p-value of the latest window against the reference (chi2; small: drifted).",
     REFERENCE_LABELS),
    ("drift_model_quality_ratio", "gauge",
     ("Model quality on joined labels, a ratio with 1 perfect (accuracy, precision, recall, "
      "f1, roc_auc, r2)."), MODEL_METRIC_LABELS),
    ("drift_model_error", "gauge",
     "Model error on joined labels, in the unit of the label (mae, rmse).",
     MODEL_METRIC_LABELS),
    ("drift_model_quality_estimated_ratio", "gauge",
     ("Model quality estimated from calibrated scores before the labels arrive (accuracy, "
      "precision, recall, f1, roc_auc)."), MODEL_METRIC_LABELS),
    ("drift_model_quality_estimated_lower_ratio", "gauge",
     "Lower end of the estimate's sampling-error band (estimate - 3 standard errors).",
     MODEL_METRIC_LABELS),
    ("drift_model_quality_estimated_upper_ratio", "gauge",
     "Upper end of the estimate's sampling-error band (estimate + 3 standard errors).",
     MODEL_METRIC_LABELS),
    ("drift_model_error_estimated", "gauge",
     ("Model error estimated before the labels arrive, in the unit of the label (mae, "
      "rmse)."), MODEL_METRIC_LABELS),
    ("drift_model_error_estimated_lower", "gauge",
     "Lower end of the error estimate's sampling-error band.", MODEL_METRIC_LABELS),
    ("drift_model_error_estimated_upper", "gauge",
     "Upper end of the error estimate's sampling-error band.", MODEL_METRIC_LABELS),
    ("drift_model_quality_estimate_gap_ratio", "gauge",
     "Realised minus estimated quality over the same labelled predictions.",
     MODEL_METRIC_LABELS),
    ("drift_model_quality_estimate_gap_limit_ratio", "gauge",
     ("Half-width of the band the quality gap stays within while the calibration holds "
      "(3 standard errors)."), MODEL_METRIC_LABELS),
    ("drift_model_error_estimate_gap", "gauge",
     "Realised minus estimated error over the same labelled predictions.", MODEL_METRIC_LABELS),
    ("drift_model_error_estimate_gap_limit", "gauge",
     ("Half-width of the band the error gap stays within while the loss model holds "
      "(3 standard errors)."), MODEL_METRIC_LABELS),
    ("drift_model_quality_threshold_ratio", "gauge",
     "Configured lower bound of a model quality metric.", ("model", "metric")),
    ("drift_model_error_threshold", "gauge",
     "Configured upper bound of a model error metric.", ("model", "metric")),
    ("drift_label_join", "counter", "Label join outcomes.", ("model", "outcome")),
    ("drift_pending_predictions", "gauge", "Predictions waiting for their label.", ("model",)),
    ("drift_last_event_timestamp_seconds", "gauge",
     "Time of the model's newest event (its timestamp, else the Kafka record's).", ("model",)),
    ("drift_consumer_lag_messages", "gauge", "Messages behind the partition's end.",
     ("topic", "partition")),
    ("drift_checkpoint_timestamp_seconds", "gauge",
     "When the last checkpoint was saved or restored.", ()),
    ("drift_checkpoint_failures", "counter",
     ("State that could not be read, written or restored, by operation and reason "
      "(offsets stay uncommitted while writes fail)."), ("operation", "reason")),
    ("drift_build_info", "gauge", "drift-detector build.", ("version",)),
    ("drift_join_backpressure", "gauge",
     ("Partitions of the topic of this kind held back so that the other topic's catch up "
      "(a backlog)."), ("kind",)),
    ("drift_sink_messages", "counter",
     ("Messages for the dead-letter, drift-events and ingest topics, by outcome: written, "
      "or why not (too_large, topic_missing, refused, timeout)."), ("sink", "outcome")),
    ("drift_topic_missing", "gauge",
     "1 while a configured topic does not exist (nothing is read from it), else 0.",
     ("topic",)),
    ("drift_kafka_connected", "gauge",
     ("1 while the consumer holds a live broker connection, else 0 (also before the first "
      "one): Kafka's health without /readyz."), ()),
    ("drift_last_poll_timestamp_seconds", "gauge",
     ("When the run loop last polled Kafka, whatever the poll returned (no series before "
      "the first poll): an old one means the loop is stuck."), ()),
    ("drift_features_dropped", "gauge",
     "Features of this model whose series this scrape left out (metrics.max_feature_series).",
     ("model",)),
    ("drift_ingest_rejected", "counter",
     ("HTTP ingest requests refused, by reason (unauthorized, length_required, too_large, "
      "unsupported_media_type, invalid_json, invalid_event, rate_limited, unavailable)."),
     ("reason",)),
    ("drift_input_pairs", "counter",
     ("Model servers' requests and responses (inputs), by format and join outcome: matched, "
      "or why a half left the join alone (expired, orphan, request_evicted, "
      "response_evicted, duplicate)."), ("format", "outcome")),
)
#: Families with series per stream: rendered from cached label blocks.
_STREAM_FAMILIES = frozenset({"drift_detected", "drift_detections", "drift_detector_firings",
                              "drift_stream_values", "drift_feature_missing",
                              "drift_feature_distance", "drift_feature_pvalue",
                              "drift_feature_issues", "drift_feature_reference_missing_ratio"})


def families(per_detector: bool) -> tuple[tuple[str, str, str, tuple[str, ...]], ...]:
    """The families exported with ``metrics.per_detector``: without it, detections and
    ``drift_detected`` are per stream (no ``detector`` label) and raw firings are left out.

    >>> [(name, labels[-1]) for name, _, _, labels in families(False)
    ...  if name.startswith("drift_detect")]
    [('drift_detected', 'category'), ('drift_detections', 'category')]
    """
    if per_detector:
        return FAMILIES
    return tuple((name, kind, doc, VALUE_LABELS if labels == STREAM_LABELS else labels)
                 for name, kind, doc, labels in FAMILIES if name != "drift_detector_firings")


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


class Shape(NamedTuple):
    """The series one stream exports (a stream shows the same shape until a reference
    is learned, a distance gets its first value, or numbers first arrive)."""

    key: StreamKey
    #: detector series: the online detectors (unless the stream has only ever had
    #: categories), then the reference methods
    detectors: tuple[str, ...]
    #: reference methods with a value: distances, and p-values
    distances: tuple[str, ...]
    pvalues: tuple[str, ...]
    #: whether it has a ``drift_stream_values`` series (not for categories only)
    values: bool
    #: whether it has a ``drift_feature_missing`` series (a feature's own stream)
    missing: bool

    def size(self, per_detector: bool) -> int:
        """How many series the stream exports."""
        detectors = len(self.detectors) * 3 if per_detector else 2 * bool(self.detectors)
        return (detectors + self.values + self.missing + len(self.distances)
                + len(self.pvalues))


def shape(stream: Stream) -> Shape:
    """What ``stream`` exports. Its online detectors and value count are left out while it
    has had categories and no number (a categorical feature, or the prediction or label
    of string classes): they can never count anything there."""
    ref = stream.ref
    methods = ref.channels if ref is not None else ()
    numeric = bool(stream.seen) or not stream.categorical
    online = tuple([ch.name for ch in stream.channels]) if numeric else ()
    valued = [ch.name for ch in methods if ch.value is not None]
    return Shape((stream.model, stream.version, stream.signal, stream.feature, stream.category),
                 online + tuple([ch.name for ch in methods]),
                 tuple([m for m in valued if m not in PVALUE_METHODS]),
                 tuple([m for m in valued if m in PVALUE_METHODS]),
                 numeric, stream.signal == "feature" and not stream.category)


class _StreamBlocks:
    """The label blocks of one stream's series, escaped once and reused between scrapes."""

    __slots__ = ("detectors", "distances", "missing", "pvalues", "values")

    def __init__(self, stream_shape: Shape, per_detector: bool) -> None:
        model, version, signal, feature, _ = key = stream_shape.key
        block = _block(VALUE_LABELS, key)
        self.values = block if stream_shape.values else None
        self.missing = (_block(MISSING_LABELS, (model, version, feature))
                        if stream_shape.missing else None)
        if per_detector:
            self.detectors = [_block(STREAM_LABELS, (*key, name))
                              for name in stream_shape.detectors]
        else:
            self.detectors = [block] if stream_shape.detectors else []
        self.distances = [_block(REFERENCE_LABELS, (model, version, signal, feature, name))
                          for name in stream_shape.distances]
        self.pvalues = [_block(REFERENCE_LABELS, (model, version, signal, feature, name))
                        for name in stream_shape.pvalues]


@dataclass(slots=True)
class Scrape:
    """What one scrape copied from the pipeline while holding the lock.

    Stream series are kept as flat columns in the order of ``shapes``, so that rendering
    them outside the lock is a zip of cached label blocks with these values.
    """

    #: the series of the families that are not per stream: family → (label values, value)
    series: dict[str, list[tuple[tuple[str, ...], float]]]
    #: every exported stream's shape, in exposition order
    shapes: list[Shape] = field(default_factory=list)
    #: per stream with such a series: values fed, missing values
    seen: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    #: per detector series (per detector, or per stream without metrics.per_detector):
    #: detections and firings as exposed (0 at a series' first exposition), and whether the
    #: latest firing is younger than the hold period
    detections: list[int] = field(default_factory=list)
    firings: list[int] = field(default_factory=list)
    detected: list[bool] = field(default_factory=list)
    #: per distance and p-value series: the latest value
    distances: list[float] = field(default_factory=list)
    pvalues: list[float] = field(default_factory=list)
    #: data quality, per judged feature: its labels, reasons, and whether it has a
    #: reference missing share; then the counts (flat, reason by reason) and the shares
    judged: list[tuple[tuple[str, str, str], tuple[str, ...], bool]] = field(
        default_factory=list)
    issues: list[int] = field(default_factory=list)
    reference_missing: list[float] = field(default_factory=list)
    #: features left out by metrics.max_feature_series
    dropped: int = 0
    #: (model, model_version, estimates' sums) of every version, turned into series after
    #: the lock is released (``add_estimates``)
    estimators: list[tuple[str, str, Snapshot]] = field(default_factory=list)

    def add_estimates(self) -> None:
        """The estimate families' series from the copied sums."""
        series = self.series
        for model, version, snapshot in self.estimators:
            for e in snapshot.estimates():
                unit = "error" if e.metric in ERROR_METRICS else "quality"
                suffix = "" if unit == "error" else "_ratio"
                labels = (model, version, e.metric, e.window)
                for kind, value in (("", e.value), ("_lower", e.lower), ("_upper", e.upper)):
                    series[f"drift_model_{unit}_estimated{kind}{suffix}"].append(
                        (labels, value))
            for g in snapshot.gaps():
                unit = "error" if g.metric in ERROR_METRICS else "quality"
                suffix = "" if unit == "error" else "_ratio"
                labels = (model, version, g.metric, g.window)
                series[f"drift_model_{unit}_estimate_gap{suffix}"].append((labels, g.gap))
                series[f"drift_model_{unit}_estimate_gap_limit{suffix}"].append(
                    (labels, g.limit))

    def samples(self, family: str, per_detector: bool = True
                ) -> Iterator[tuple[tuple[str, ...], float]]:
        """Label values (in ``families`` order) and value of every series of a family."""
        if family not in _STREAM_FAMILIES:
            yield from self.series[family]
            return
        shapes = self.shapes
        if family == "drift_stream_values":
            yield from zip((s.key for s in shapes if s.values), self.seen, strict=True)
        elif family == "drift_feature_missing":
            yield from zip(((s.key[0], s.key[1], s.key[3]) for s in shapes if s.missing),
                           self.missing, strict=True)
        elif family == "drift_feature_issues":
            yield from zip(((*key, reason) for key, reasons, _ in self.judged
                            for reason in reasons), self.issues, strict=True)
        elif family == "drift_feature_reference_missing_ratio":
            yield from zip((key for key, _, ratio in self.judged if ratio),
                           self.reference_missing, strict=True)
        elif family in ("drift_feature_distance", "drift_feature_pvalue"):
            distance = family == "drift_feature_distance"
            keys = ((*s.key[:4], name) for s in shapes
                    for name in (s.distances if distance else s.pvalues))
            yield from zip(keys, self.distances if distance else self.pvalues, strict=True)
        else:
            if per_detector:
                keys: Iterable[tuple[str, ...]] = (
                    (*s.key, name) for s in shapes for name in s.detectors)
            else:
                keys = (s.key for s in shapes if s.detectors)
            if family == "drift_detected":
                values: Iterable[float] = (1.0 if hot else 0.0 for hot in self.detected)
            else:
                values = self.detections if family == "drift_detections" else self.firings
            yield from zip(keys, values, strict=True)


class DriftCollector(Collector):
    """Reads the pipeline at scrape time and yields the README's metric contract.

    The lock is held only to copy numbers into a ``Scrape`` (``scrape``); metric
    families (``collect``, for a prometheus_client registry) or the exposition text
    (``render``, for ``/metrics``) are built from that copy after the lock is released.
    ``render`` writes the text itself from label blocks escaped once per stream and
    kept between scrapes; it gives the same bytes as prometheus_client's encoders.

    Every model version's prediction, error and label streams are exported (at most
    ``max_models`` x ``max_versions`` x a few dozen series); then each version's features
    in the order they were first seen, a feature with the share streams of its
    categories, as long as their series fit in ``metrics.max_feature_series``. From the
    first feature that does not fit on, features are left out and counted per model in
    ``drift_features_dropped``.
    """

    def __init__(self, pipeline: Pipeline, lock: threading.Lock, status: RunStatus,
                 clock: Callable[[], float] = time.time) -> None:
        self._pipeline = pipeline
        self._lock = lock
        self._status = status
        self._clock = clock
        cfg = pipeline.settings.metrics
        self._per_detector = cfg.per_detector
        self._max_feature_series = cfg.max_feature_series
        self._hold = cfg.detection_hold_seconds
        self.families = families(cfg.per_detector)
        #: label blocks by stream shape; replaced at every render, so streams that are
        #: gone (an evicted version or feature) leave it
        self._blocks: dict[Shape, _StreamBlocks] = {}
        #: the same for the data quality series of a feature: its counters' blocks (one
        #: per reason) and its reference missing share's
        self._quality_blocks: dict[tuple[tuple[str, str, str], tuple[str, ...], bool],
                                   tuple[list[str], str | None]] = {}
        #: features left out at the previous scrape (logged when it becomes or stops being 0)
        self._dropped = 0

    def collect(self) -> Iterator[Metric]:
        scrape = self.scrape()
        for name, kind, doc, labels in self.families:
            family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_type(name, doc, labels=list(labels))
            for values, value in scrape.samples(name, self._per_detector):
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
        {category="",detector="cusum",feature="",model="m",model_version="1",signal="prediction"} 0.0
        {category="",detector="adwin",feature="x",model="m",model_version="1",signal="feature"} 0.0
        """
        scrape = self.scrape()
        old, blocks = self._blocks, {}
        streams: list[_StreamBlocks] = []
        per_detector = self._per_detector
        for stream_shape in scrape.shapes:
            entry = old.get(stream_shape)
            if entry is None:
                entry = _StreamBlocks(stream_shape, per_detector)
            blocks[stream_shape] = entry
            streams.append(entry)
        self._blocks = blocks
        old_quality, quality = self._quality_blocks, {}
        for judged in scrape.judged:
            entry = old_quality.get(judged)
            if entry is None:
                key, reasons, ratio = judged
                entry = ([_block(ISSUE_LABELS, (*key, reason)) for reason in reasons],
                         _block(MISSING_LABELS, key) if ratio else None)
            quality[judged] = entry
        self._quality_blocks = quality
        detectors = [block for entry in streams for block in entry.detectors]
        number = _number
        headers = _HEADERS[openmetrics]
        out: list[str] = []
        for name, kind, _, labels in self.families:
            out.append(headers[name])
            sample = name + "_total" if kind == "counter" else name
            if name == "drift_detected":
                out += [f"{sample}{b} {'1.0' if hot else '0.0'}\n"
                        for b, hot in zip(detectors, scrape.detected, strict=True)]
            elif name in ("drift_detections", "drift_detector_firings"):
                counts = scrape.detections if name == "drift_detections" else scrape.firings
                out += [f"{sample}{b} {number(n)}\n"
                        for b, n in zip(detectors, counts, strict=True)]
            elif name == "drift_stream_values":
                out += [f"{sample}{b} {number(n)}\n" for b, n in zip(
                    [e.values for e in streams if e.values is not None], scrape.seen, strict=True)]
            elif name == "drift_feature_missing":
                out += [f"{sample}{b} {number(n)}\n" for b, n in zip(
                    [e.missing for e in streams if e.missing is not None], scrape.missing,
                    strict=True)]
            elif name == "drift_feature_issues":
                out += [f"{sample}{b} {number(n)}\n" for b, n in zip(
                    [b for entry in quality.values() for b in entry[0]], scrape.issues,
                    strict=True)]
            elif name == "drift_feature_reference_missing_ratio":
                out += [f"{sample}{b} {floatToGoString(v)}\n" for b, v in zip(
                    [entry[1] for entry in quality.values() if entry[1] is not None],
                    scrape.reference_missing, strict=True)]
            elif name in ("drift_feature_distance", "drift_feature_pvalue"):
                distance = name == "drift_feature_distance"
                out += [f"{sample}{b} {floatToGoString(v)}\n" for b, v in zip(
                    [b for e in streams for b in (e.distances if distance else e.pvalues)],
                    scrape.distances if distance else scrape.pvalues, strict=True)]
            else:
                out += [f"{sample}{_block(labels, values)} {number(value)}\n"
                        for values, value in scrape.series[name]]
        return "".join(out)

    def scrape(self) -> Scrape:
        """Copy what the families show, holding the lock (and only for this)."""
        with self._lock:
            scrape = self._scrape(self._clock())
        scrape.add_estimates()
        if bool(scrape.dropped) != bool(self._dropped):
            fields = {"max_feature_series": self._max_feature_series,
                      "features_dropped": scrape.dropped}
            if scrape.dropped:
                log.warning("metrics_series_capped", extra={"fields": fields})
            else:
                log.info("metrics_series_uncapped", extra={"fields": fields})
        self._dropped = scrape.dropped
        return scrape

    def _scrape(self, now: float) -> Scrape:
        p, status = self._pipeline, self._status
        series: dict[str, list[tuple[tuple[str, ...], float]]] = {
            name: [] for name, _, _, _ in FAMILIES if name not in _STREAM_FAMILIES}
        out = Scrape(series)
        events, join = series["drift_events"], series["drift_label_join"]
        pending = series["drift_pending_predictions"]
        newest = series["drift_last_event_timestamp_seconds"]
        series["drift_events_rejected"] = [((kind, reason), n)
                                           for (kind, reason), n in p.rejected.items()]
        for state in p.models.values():
            name = state.name
            events += [((kind, name), n) for kind, n in state.events.items()]
            join += [((name, outcome), n) for outcome, n in state.join.items()]
            pending.append(((name,), p.join.pending(name)))
            if state.newest_event_time is not None:
                newest.append(((name,), state.newest_event_time))
        quality, error = series["drift_model_quality_ratio"], series["drift_model_error"]
        monitors = list(p.monitors())
        for monitor in monitors:
            model, version = monitor.model, monitor.version
            for metric, window, value in monitor.performance.values():
                (error if metric in ERROR_METRICS else quality).append(
                    ((model, version, metric, window), value))
            out.estimators.append((model, version, monitor.estimation.snapshot()))
        dropped = dict.fromkeys(p.models, 0)
        self._copy_streams(out, monitors, now, dropped)
        out.dropped = sum(dropped.values())
        series["drift_features_dropped"] = [((model,), n) for model, n in dropped.items()]
        thresholds = [(model, metric, value) for model, cfg in p.settings.models.items()
                      for metric, value in cfg.thresholds.items()]
        series["drift_model_quality_threshold_ratio"] = [
            ((model, metric), value) for model, metric, value in thresholds
            if metric not in ERROR_METRICS]
        series["drift_model_error_threshold"] = [
            ((model, metric), value) for model, metric, value in thresholds
            if metric in ERROR_METRICS]
        series["drift_consumer_lag_messages"] = [
            ((topic, str(partition)), n) for (topic, partition), n in sorted(status.lag.items())]
        if status.checkpoint_at is not None:
            series["drift_checkpoint_timestamp_seconds"] = [((), status.checkpoint_at)]
        series["drift_checkpoint_failures"] = [(key, n) for key, n
                                               in sorted(status.checkpoint_failures.items())]
        series["drift_build_info"] = [((__version__,), 1)]
        series["drift_join_backpressure"] = [((kind,), held) for kind, held
                                             in status.join_backpressure.items()]
        series["drift_sink_messages"] = [((sink, outcome), n) for (sink, outcome), n
                                         in sorted(status.sink_messages.items())]
        series["drift_topic_missing"] = [((topic,), 1.0 if gone else 0.0) for topic, gone
                                         in sorted(status.topic_missing.items())]
        series["drift_kafka_connected"] = [((), 1.0 if status.connected else 0.0)]
        if status.last_poll > float("-inf"):
            series["drift_last_poll_timestamp_seconds"] = [((), status.last_poll)]
        series["drift_ingest_rejected"] = [((reason,), n) for reason, n
                                           in status.ingest_rejected.items()]
        series["drift_input_pairs"] = [(key, n) for key, n in sorted(status.input_pairs.items())]
        return out

    def _copy_streams(self, out: Scrape, monitors: list[ModelMonitor], now: float,
                      dropped: dict[str, int]) -> None:
        """Copy the series of every version's prediction, error and label streams into
        ``out``, then those of each feature (with its share streams) while they fit in
        ``metrics.max_feature_series``; count the features left out in ``dropped`` by
        model. Once a feature does not fit, a version's features are only counted."""
        room = self._max_feature_series
        predictions = out.series["drift_predictions"]
        for monitor in monitors:
            predictions.append(((monitor.model, monitor.version), monitor.predictions))
            for stream in (monitor.prediction, monitor.error, monitor.label):
                self._copy(out, stream, shape(stream), now)
        for monitor in monitors:
            features = monitor.features
            judged = monitor.quality.features if monitor.quality is not None else {}
            if not room:
                dropped[monitor.model] += len(features) + len(judged.keys() - features.keys())
                continue
            # the features the reference has and no stream yet (from a profile) come last
            names = [*features, *(name for name in judged if name not in features)]
            for done, name in enumerate(names):
                stream = features.get(name)
                group = [] if stream is None else [
                    stream, *(stream.ref.shares if stream.ref is not None else ())]
                shapes = [shape(member) for member in group]
                quality = judged.get(name)
                size = sum(member.size(self._per_detector) for member in shapes) + (
                    _quality_size(quality) if quality is not None else 0)
                if size > room:
                    room = 0        # the first feature that does not fit ends the export
                    dropped[monitor.model] += len(names) - done
                    break
                room -= size
                for member, member_shape in zip(group, shapes, strict=True):
                    self._copy(out, member, member_shape, now)
                if quality is not None:
                    _copy_quality(out, (monitor.model, monitor.version, name), quality)

    def _copy(self, out: Scrape, stream: Stream, stream_shape: Shape, now: float) -> None:
        """Append the values of one stream's series to ``out``."""
        hold = self._hold
        out.shapes.append(stream_shape)
        if stream_shape.values:
            out.seen.append(stream.seen)
        if stream_shape.missing:
            out.missing.append(stream.missing)
        ref = stream.ref
        methods = ref.channels if ref is not None else ()
        channels = [*stream.channels, *methods] if stream_shape.values else methods
        # A series' first exposition is 0 even if the detector already fired (a new version
        # can fire in its first batch): increase() needs a 0 before the first detection.
        shown = [ch.detections if ch.announced else 0 for ch in channels]
        hot = [now - ch.last_at < hold for ch in channels]
        if self._per_detector:
            out.detections += shown
            out.firings += [ch.firings if ch.announced else 0 for ch in channels]
            out.detected += hot
        elif channels:
            out.detections.append(sum(shown))
            out.detected.append(any(hot))
        for ch in channels:
            ch.announced = True
        for ch in methods:
            if ch.value is not None:
                (out.pvalues if ch.name in PVALUE_METHODS else out.distances).append(ch.value)


def _quality_size(quality: FeatureQuality) -> int:
    """How many series a feature's data quality exports: a counter per reason that can
    occur, and the reference's missing share of a judged feature."""
    return len(quality.issues) + (quality.expect is not None)


def _copy_quality(out: Scrape, key: tuple[str, str, str], quality: FeatureQuality) -> None:
    """Append a feature's data quality series to ``out`` (its counters at 0 the first
    time, as every counter)."""
    issues, expect = quality.issues, quality.expect
    out.judged.append((key, tuple(issues), expect is not None))
    out.issues += issues.values() if quality.announced else [0] * len(issues)
    quality.announced = True
    if expect is not None:
        out.reference_missing.append(expect.reference_missing)


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
    with basic auth, ``/metrics``, ``/detections``, ``/report`` and the ingest path
    (``ingest``: POST only) need the credentials while ``/healthz`` and ``/readyz`` (no
    data) stay open for probes. ``report`` gives the body of ``/report`` (an HTML page),
    if the service records one.
    """

    def __init__(self, exporter: Exporter, cfg: MetricsSettings, ingest: Ingest | None = None,
                 report: Callable[[], bytes] | None = None) -> None:
        auth = None
        if cfg.basic_auth_username is not None:
            pair = f"{cfg.basic_auth_username}:{cfg.basic_auth_password.get_secret_value()}"
            auth = b"Basic " + base64.b64encode(pair.encode())
        handler = type("Handler", (_Handler,), {"exporter": exporter, "auth": auth,
                                                "ingest": ingest,
                                                "report": staticmethod(report) if report
                                                else None})
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
        # polled every 0.1 s for shutdown (the default 0.5 s would be most of a stop)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
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
    #: connections waiting to be accepted (socketserver's default, 5, resets the
    #: connections of a burst of clients, such as a model server's payload loggers)
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("http_client_error", extra={"fields": {"client": client_address[0]}},
                  exc_info=True)


_CHALLENGE = 'Basic realm="drift-detector"'


class _Handler(BaseHTTPRequestHandler):
    exporter: Exporter
    auth: bytes | None
    ingest: Ingest | None
    report: Callable[[], bytes] | None
    server_version = f"drift-detector/{__version__}"
    #: keep-alive: a logger posting one event per request does not connect (and shake
    #: hands over TLS) each time; every answer has a Content-Length, and a connection
    #: whose request body was not read is closed (see do_POST)
    protocol_version = "HTTP/1.1"
    #: headers and body go out in two writes: without this, a kept-alive client's
    #: delayed ACK holds the body back ~40 ms
    disable_nagle_algorithm = True
    #: also how long an idle kept-alive connection holds its thread
    timeout = 10

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path in ("/metrics", "/detections", "/report") and not self._authorized():
            self._send(401, b"", "text/plain", (("WWW-Authenticate", _CHALLENGE),))
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
            recent = []
            for d in list(self.exporter.status.detections):
                entry = {**asdict(d), **detection_fields(d)}
                del entry["trace"]      # detection_fields gives it, flat
                del entry["onset"]      # detection_fields names it onset_value_index
                recent.append(entry)
            self._send(200, json.dumps(recent).encode(), "application/json")
        elif path == "/report" and self.report is not None:
            self._send(200, self.report(), "text/html; charset=utf-8")
        elif path == "/report":
            self._send(404, b"no report: this service does not record one (report.enabled: "
                       b"false)\n", "text/plain")
        else:
            self._send(404, b"not found: try /metrics, /healthz, /readyz, /detections, "
                       b"/report\n", "text/plain")

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        ingest = self.ingest
        if ingest is None or self.path.split("?", 1)[0] != ingest.path:
            self.close_connection = True
            self._send(404, b"not found: POST goes to the ingest path (ingest.enabled)\n",
                       "text/plain", (("Connection", "close"),))
            return
        if not self._authorized():
            reply = ingest.refuse("unauthorized", "basic auth credentials missing or wrong",
                                  (("WWW-Authenticate", _CHALLENGE),))
        else:
            reply = ingest.handle(self.headers, self.rfile)
        if reply.status != 200:   # the body may be left unread: not the next request
            self.close_connection = True
            reply = reply._replace(headers=(*reply.headers, ("Connection", "close")))
        self._send(reply.status, reply.body, reply.content_type, reply.headers)

    def _authorized(self) -> bool:
        if self.auth is None:
            return True
        given = (self.headers.get("Authorization") or "").encode()
        return hmac.compare_digest(given, self.auth)

    def _send(self, code: int, body: bytes, content_type: str,
              headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("http %s", format % args)
