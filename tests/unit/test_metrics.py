"""The collector and the HTTP server: what is exported, and that ``render`` writes
the same exposition as prometheus_client would from the pre-issue-11 collector."""

from __future__ import annotations

import copy
import json
import logging
import random
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector

from detector import __version__
from detector.config import MetricsSettings, Settings
from detector.metrics import DriftCollector, Exporter, MetricsServer, RunStatus
from detector.pipeline import Pipeline
from detector.records import Record


def _shifted_pipeline(hold: float) -> Pipeline:
    p = Pipeline(Settings(detectors={"feature": ["adwin"], "prediction": []},
                          metrics={"detection_hold_seconds": hold}))
    recs = [Record("prediction", json.dumps({"model": "m", "prediction_id": str(i),
            "features": {"x": 0.0 if i < 500 else 10.0}, "prediction": 0}).encode())
            for i in range(700)]
    p.process(recs, now=100.0)
    return p


def test_drift_detected_is_latched_for_the_hold_period() -> None:
    p = _shifted_pipeline(hold=60)
    clock = [130.0]
    reg = CollectorRegistry()
    reg.register(DriftCollector(p, threading.Lock(), RunStatus(), clock=lambda: clock[0]))
    labels = {"model": "m", "model_version": "unversioned", "signal": "feature", "feature": "x",
              "category": "", "detector": "adwin"}
    # the series' first exposition is 0, though the detector fired in the first batch,
    # so that Prometheus' increase() sees the jump to the real count at the next scrape
    assert reg.get_sample_value("drift_detections_total", labels) == 0
    assert reg.get_sample_value("drift_detections_total", labels) >= 1
    assert reg.get_sample_value("drift_detected", labels) == 1.0
    clock[0] = 161.0
    assert reg.get_sample_value("drift_detected", labels) == 0.0
    assert reg.get_sample_value("drift_detections_total", labels) >= 1   # the counter stays


def test_every_rejection_reason_and_join_outcome_exists_at_zero() -> None:
    p = Pipeline(Settings())
    p.process([Record("label", b'{"model": "m", "prediction_id": "1", "label": 1}')], now=0.0)
    reg = Exporter(p, threading.Lock(), RunStatus()).registry
    assert reg.get_sample_value("drift_events_rejected_total",
                                {"kind": "prediction", "reason": "oversized"}) == 0
    for outcome in ("matched", "expired", "orphan"):
        assert reg.get_sample_value("drift_label_join_total",
                                    {"model": "m", "outcome": outcome}) == 0


def test_http_endpoints_on_a_real_server() -> None:
    status = RunStatus()
    server = MetricsServer(Exporter(_shifted_pipeline(60), threading.Lock(), status),
                           MetricsSettings(host="127.0.0.1", port=0)).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        body = urllib.request.urlopen(base + "/metrics").read().decode()
        assert "drift_build_info{" in body and "drift_batch_seconds_bucket" in body
        assert urllib.request.urlopen(base + "/healthz").status == 200
        try:
            urllib.request.urlopen(base + "/readyz")
            raise AssertionError("ready before connecting")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        status.connected, status.last_poll = True, time.time()
        assert urllib.request.urlopen(base + "/readyz").status == 200
    finally:
        server.stop()


def test_kafka_health_gauges_follow_the_run_status_while_readyz_fails() -> None:
    """``drift_kafka_connected`` and ``drift_last_poll_timestamp_seconds`` say what
    ``/readyz`` says, as numbers an alert can read: 0 and no poll before the first
    connection, then 1 and the poll time, then 0 again while the poll time stays."""
    status = RunStatus()
    reg = Exporter(Pipeline(Settings()), threading.Lock(), status).registry
    assert reg.get_sample_value("drift_kafka_connected") == 0.0
    assert reg.get_sample_value("drift_last_poll_timestamp_seconds") is None
    status.connected, status.last_poll = True, 1_790_000_000.5
    assert status.readiness(1_790_000_001.0) == (True, "consuming")
    assert reg.get_sample_value("drift_kafka_connected") == 1.0
    assert reg.get_sample_value("drift_last_poll_timestamp_seconds") == 1_790_000_000.5
    status.connected = False
    assert status.readiness(1_790_000_001.0) == (False, "not connected to Kafka")
    assert reg.get_sample_value("drift_kafka_connected") == 0.0
    assert reg.get_sample_value("drift_last_poll_timestamp_seconds") == 1_790_000_000.5


# --- render: the same exposition as prometheus_client from the collector before issue 11 ---

STREAM = ["model", "model_version", "signal", "feature", "category"]
ERRORS = {"mae", "rmse"}


class ReferenceCollector(Collector):
    """The metric contract written the plain prometheus_client way (metric families built
    under the lock, series added one by one), kept as the oracle ``render`` is compared
    with: the collector as it was before issue 11, moved to the README's contract."""

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
        cfg = p.settings.metrics
        hold, per_detector = cfg.detection_hold_seconds, cfg.per_detector
        room = cfg.max_feature_series
        detector_labels = STREAM + ["detector"] * per_detector
        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        events = counter("drift_events", "Valid events processed.", labels=["kind", "model"])
        rejected = counter("drift_events_rejected", "Messages rejected, by kind and reason.",
                           labels=["kind", "reason"])
        detected = gauge("drift_detected", "1 while a detection is younger than the hold period.",
                         labels=detector_labels)
        detections = counter("drift_detections", "Detection episodes (firings closer than "
                             "detection.cooldown values are one episode).", labels=detector_labels)
        firings = counter("drift_detector_firings", "Raw detector firings.",
                          labels=detector_labels)
        values = counter("drift_stream_values", "Values fed to a stream's detectors.",
                         labels=STREAM)
        missing = counter("drift_feature_missing", "Missing (null) feature values.",
                          labels=["model", "model_version", "feature"])
        predictions = counter("drift_predictions", "Predictions applied, per model version.",
                              labels=["model", "model_version"])
        issues = counter("drift_feature_issues", "Data quality problems of a feature against "
                         "its reference, by reason (missing, out_of_range, unseen_category, "
                         "type_mismatch, unannounced).",
                         labels=["model", "model_version", "feature", "reason"])
        reference_missing = gauge("drift_feature_reference_missing_ratio", "Share of the "
                                  "reference's predictions without a value for the feature.",
                                  labels=["model", "model_version", "feature"])
        reference = ["model", "model_version", "signal", "feature", "method"]
        distance = gauge("drift_feature_distance", "Distance of the latest window from the "
                         "reference (psi, js, ks; 0: the same).", labels=reference)
        pvalue = gauge("drift_feature_pvalue", "p-value of the latest window against the "
                       "reference (chi2; small: drifted).", labels=reference)
        metric_labels = ["model", "model_version", "metric", "window"]
        quality = gauge("drift_model_quality_ratio", "Model quality on joined labels, a ratio "
                        "with 1 perfect (accuracy, precision, recall, f1, roc_auc, r2).",
                        labels=metric_labels)
        error = gauge("drift_model_error", "Model error on joined labels, in the unit of the "
                      "label (mae, rmse).", labels=metric_labels)
        quality_threshold = gauge("drift_model_quality_threshold_ratio",
                                  "Configured lower bound of a model quality metric.",
                                  labels=["model", "metric"])
        error_threshold = gauge("drift_model_error_threshold",
                                "Configured upper bound of a model error metric.",
                                labels=["model", "metric"])
        join = counter("drift_label_join", "Label join outcomes.", labels=["model", "outcome"])
        pending = gauge("drift_pending_predictions", "Predictions waiting for their label.",
                        labels=["model"])
        newest = gauge("drift_last_event_timestamp_seconds", "Time of the model's newest event "
                       "(its timestamp, else the Kafka record's).", labels=["model"])
        lag = gauge("drift_consumer_lag_messages", "Messages behind the partition's end.",
                    labels=["topic", "partition"])
        checkpoint = gauge("drift_checkpoint_timestamp_seconds",
                           "When the last checkpoint was saved or restored.")
        if self._status.checkpoint_at is not None:
            checkpoint.add_metric([], self._status.checkpoint_at)
        failures = counter("drift_checkpoint_failures", "State that could not be read, "
                           "written or restored, by operation and reason (offsets stay "
                           "uncommitted while writes fail).", labels=["operation", "reason"])
        for (operation, reason), n in sorted(self._status.checkpoint_failures.items()):
            failures.add_metric([operation, reason], n)
        build = gauge("drift_build_info", "drift-detector build.", labels=["version"])
        build.add_metric([__version__], 1)
        dropped = gauge("drift_features_dropped", "Features of this model whose series this "
                        "scrape left out (metrics.max_feature_series).", labels=["model"])

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
                newest.add_metric([name], state.newest_event_time)
        estimated = {
            (unit, kind): gauge(name, doc, labels=metric_labels)
            for unit, kind, name, doc in (
                ("quality", "value", "drift_model_quality_estimated_ratio",
                 ("Model quality estimated from calibrated scores before the labels arrive "
                  "(accuracy, precision, recall, f1, roc_auc).")),
                ("quality", "lower", "drift_model_quality_estimated_lower_ratio",
                 ("Lower end of the estimate's sampling-error band (estimate - 3 standard "
                  "errors).")),
                ("quality", "upper", "drift_model_quality_estimated_upper_ratio",
                 ("Upper end of the estimate's sampling-error band (estimate + 3 standard "
                  "errors).")),
                ("error", "value", "drift_model_error_estimated",
                 ("Model error estimated before the labels arrive, in the unit of the label "
                  "(mae, rmse).")),
                ("error", "lower", "drift_model_error_estimated_lower",
                 "Lower end of the error estimate's sampling-error band."),
                ("error", "upper", "drift_model_error_estimated_upper",
                 "Upper end of the error estimate's sampling-error band."),
                ("quality", "gap", "drift_model_quality_estimate_gap_ratio",
                 "Realised minus estimated quality over the same labelled predictions."),
                ("quality", "limit", "drift_model_quality_estimate_gap_limit_ratio",
                 ("Half-width of the band the quality gap stays within while the calibration "
                  "holds (3 standard errors).")),
                ("error", "gap", "drift_model_error_estimate_gap",
                 "Realised minus estimated error over the same labelled predictions."),
                ("error", "limit", "drift_model_error_estimate_gap_limit",
                 ("Half-width of the band the error gap stays within while the loss model "
                  "holds (3 standard errors).")))}
        for monitor in p.monitors():
            for metric, window, value in monitor.performance.values():
                (error if metric in ERRORS else quality).add_metric(
                    [monitor.model, monitor.version, metric, window], value)
            for e in monitor.estimation.estimates():
                unit = "error" if e.metric in ERRORS else "quality"
                for kind, value in (("value", e.value), ("lower", e.lower), ("upper", e.upper)):
                    estimated[(unit, kind)].add_metric(
                        [monitor.model, monitor.version, e.metric, e.window], value)
            for g in monitor.estimation.gaps():
                unit = "error" if g.metric in ERRORS else "quality"
                for kind, value in (("gap", g.gap), ("limit", g.limit)):
                    estimated[(unit, kind)].add_metric(
                        [monitor.model, monitor.version, g.metric, g.window], value)

        # every version's prediction, error and label, then whole features (with their
        # category share streams) while they fit in max_feature_series
        # (with each feature its data quality; the features only the reference has last)
        model_level, features = [], []
        for monitor in p.monitors():
            predictions.add_metric([monitor.model, monitor.version], monitor.predictions)
            judged = monitor.quality.features if monitor.quality is not None else {}
            for stream in monitor.streams():
                if stream.category:
                    features[-1][2].append(stream)
                elif stream.signal == "feature":
                    features.append((monitor, judged.get(stream.feature), [stream]))
                else:
                    model_level.append(stream)
            features += [(monitor, (name, judged[name]), []) for name in judged
                         if name not in monitor.features]
        left_out = dict.fromkeys(p.models, 0)
        for monitor, judged, group in [(None, None, [stream]) for stream in model_level] + [
                (m, (g[0].feature, j) if g else j, g) for m, j, g in features]:
            rows = []
            for stream in group:
                key = [stream.model, stream.version, stream.signal, stream.feature,
                       stream.category]
                ref = stream.ref
                methods = list(ref.channels) if ref is not None else []
                only_categories = stream.categorical > 0 and stream.seen == 0
                channels = methods if only_categories else [*stream.channels, *methods]
                if per_detector:
                    for ch in channels:
                        shown = ch.announced
                        rows.append((detections, key + [ch.name], ch.detections if shown else 0))
                        rows.append((firings, key + [ch.name], ch.firings if shown else 0))
                        rows.append((detected, key + [ch.name],
                                     1.0 if now - ch.last_at < hold else 0.0))
                elif channels:
                    rows.append((detections, key, sum(ch.detections for ch in channels
                                                      if ch.announced)))
                    rows.append((detected, key, 1.0 if any(now - ch.last_at < hold
                                                           for ch in channels) else 0.0))
                if not only_categories:
                    rows.append((values, key, stream.seen))
                if stream.signal == "feature" and not stream.category:
                    rows.append((missing, [stream.model, stream.version, stream.feature],
                                 stream.missing))
                for ch in methods:
                    if ch.value is not None:
                        rows.append((pvalue if ch.name == "chi2" else distance,
                                     key[:4] + [ch.name], ch.value))
                rows.append((None, channels, 0))
            if judged is not None and judged[1] is not None:
                name, data = judged
                key = [monitor.model, monitor.version, name]
                for reason, n in data.issues.items():
                    rows.append((issues, key + [reason], n if data.announced else 0))
                if data.expect is not None:
                    rows.append((reference_missing, key, data.expect.reference_missing))
                rows.append((None, [data], 0))
            if monitor is not None:
                series = sum(family is not None for family, _, _ in rows)
                if series > room:       # from the first that does not fit on (a feature
                    room = 0            # has at least its missing-values series)
                    left_out[monitor.model] += 1
                    continue
                room -= series
            for family, labels, value in rows:
                if family is None:
                    for ch in labels:
                        ch.announced = True
                else:
                    family.add_metric(labels, value)
        for model, n in left_out.items():
            dropped.add_metric([model], n)
        for model, cfg in p.settings.models.items():
            for metric, value in cfg.thresholds.items():
                (error_threshold if metric in ERRORS else quality_threshold).add_metric(
                    [model, metric], value)
        for (topic, partition), n in sorted(self._status.lag.items()):
            lag.add_metric([topic, str(partition)], n)
        backpressure = gauge("drift_join_backpressure", "Partitions of the topic of this kind "
                             "held back so that the other topic's catch up (a backlog).",
                             labels=["kind"])
        for kind, held in self._status.join_backpressure.items():
            backpressure.add_metric([kind], held)
        sinks = counter("drift_sink_messages", "Messages for the dead-letter, drift-events and "
                        "ingest topics, by outcome: written, or why not (too_large, "
                        "topic_missing, refused, timeout).", labels=["sink", "outcome"])
        for (sink, outcome), n in sorted(self._status.sink_messages.items()):
            sinks.add_metric([sink, outcome], n)
        topic_missing = gauge("drift_topic_missing", "1 while a configured topic does not exist "
                              "(nothing is read from it), else 0.", labels=["topic"])
        for topic, gone in sorted(self._status.topic_missing.items()):
            topic_missing.add_metric([topic], 1.0 if gone else 0.0)
        connected = gauge("drift_kafka_connected", "1 while the consumer holds a live broker "
                          "connection, else 0 (also before the first one): Kafka's health "
                          "without /readyz.")
        connected.add_metric([], 1.0 if self._status.connected else 0.0)
        polled = gauge("drift_last_poll_timestamp_seconds", "When the run loop last polled "
                       "Kafka, whatever the poll returned (no series before the first poll): "
                       "an old one means the loop is stuck.")
        if self._status.last_poll > float("-inf"):
            polled.add_metric([], self._status.last_poll)
        ingest = counter("drift_ingest_rejected", "HTTP ingest requests refused, by reason "
                         "(unauthorized, length_required, too_large, unsupported_media_type, "
                         "invalid_json, invalid_event, rate_limited, unavailable).",
                         labels=["reason"])
        for reason, n in self._status.ingest_rejected.items():
            ingest.add_metric([reason], n)
        pairs = counter("drift_input_pairs", "Model servers' requests and responses (inputs), "
                        "by format and join outcome: matched, or why a half left the join "
                        "alone (expired, orphan, request_evicted, response_evicted, "
                        "duplicate).",
                        labels=["format", "outcome"])
        for (fmt, outcome), n in sorted(self._status.input_pairs.items()):
            pairs.add_metric([fmt, outcome], n)
        out = [events, predictions, rejected, detected, detections, firings, values, missing,
               issues, reference_missing, distance, pvalue, quality, error, *estimated.values(),
               quality_threshold, error_threshold, join, pending, newest, lag, checkpoint,
               failures, build, backpressure, sinks, topic_missing, connected, polled, dropped, ingest,
               pairs]
        return out if per_detector else [f for f in out if f is not firings]


#: Feature names that need escaping in a label value (names are printable ASCII).
ODD = 'tem"p\\er'
CLOCK = 1_000.0


def _rich_records(rng: random.Random, version: str, start: int, n: int,
                  shift: float) -> list[Record]:
    """Predictions of a scored classifier (labels inline) and of a regression model
    (labels as their own records, some for nothing), a categorical feature with
    escaped categories, missing values, and records that are rejected."""
    out = []
    for i in range(start, start + n):
        mean = shift if i - start >= n // 2 else 0.0
        score = rng.random()
        features = {"tenure": rng.gauss(mean, 1.0), ODD: rng.gauss(-mean, 2.0),
                    "plan": rng.choice(["basic", "pro", 'a"b\\c']),
                    "age": None if i % 7 == 0 else rng.gauss(40.0, 5.0)}
        out.append(Record("prediction", json.dumps({
            "model": "churn", "model_version": version, "prediction_id": f"c{version}-{i}",
            "features": features, "prediction": int(score > 0.5), "score": score,
            "label": int(rng.random() < score)}).encode()))
        out.append(Record("prediction", json.dumps({
            "model": "eta", "model_version": "1", "prediction_id": f"e{i}",
            "features": {"distance": rng.gauss(mean, 1.0)},
            "prediction": rng.gauss(10.0, 2.0)}).encode()))
        if i % 3:
            out.append(Record("label", json.dumps({
                "model": "eta", "prediction_id": f"e{i}" if i % 5 else f"none{i}",
                "label": rng.gauss(10.0, 2.0)}).encode()))
    out += [Record("prediction", b"not json"), Record("label", b'{"model": "eta"}'),
            Record("prediction", json.dumps({"model": "ghost", "prediction_id": "g",
                                             "features": {}, "prediction": 1}).encode())]
    return out


def _rich_pipeline(**metrics: object) -> tuple[Pipeline, RunStatus]:
    """Two declared models, two live versions of one, references with distances,
    performance metrics, detections, rejections, and a status with every family
    (``metrics``: more metrics settings)."""
    p = Pipeline(Settings(
        models={"churn": {"thresholds": {"accuracy": 0.7, "f1": 0.5}},
                "eta": {"task": "regression", "thresholds": {"mae": 3.0}}},
        max_versions=2, version_idle_seconds=5.0,
        reference={"warmup": 20, "window": 20, "evaluate_every": 10},
        estimation={"warmup": 60}, rolling_window=50,
        metrics={"detection_hold_seconds": 5.0, **metrics}))
    rng = random.Random(11)
    p.process(_rich_records(rng, "1", 0, 300, 6.0) + _rich_records(rng, "2", 300, 200, 0.0),
              now=CLOCK - 10.0)
    p.process(_rich_records(rng, "2", 500, 300, 6.0), now=CLOCK - 1.0)
    status = RunStatus()
    status.lag = {("predictions", 1): 12, ("labels", 0): 0}
    status.checkpoint_at = 1_790_000_000.25
    status.checkpoint_failures = {("write", "read_only"): 3, ("restore", "checksum"): 1}
    status.connected, status.last_poll = True, CLOCK - 0.5
    status.enable_sink("dead_letter", ("written", "too_large"))
    status.count_sink("dead_letter", {"written": 3})
    status.topic_missing = {"labels": False, "predictions": True}
    status.ingest_rejected = {"too_large": 2, "rate_limited": 0}
    status.input_pairs = {("oip", "matched"): 7, ("oip", "expired"): 1}
    return p, status


def _samples(text: str, parse: Callable[[str], Iterator[Metric]]) -> list[tuple]:
    return [(s.name, tuple(sorted(s.labels.items())), s.value)
            for family in parse(text) for s in family.samples]


@pytest.mark.parametrize("metrics", [{}, {"per_detector": False},
                                     {"max_feature_series": 100},
                                     {"per_detector": False, "max_feature_series": 40}])
def test_render_writes_what_prometheus_client_writes(metrics: dict) -> None:
    """On a rich state, scrape after scrape (the first one shows counters at 0), with a
    version evicted and new streams between scrapes: the same bytes in both formats as
    the contract written with prometheus_client's families, per detector or per stream,
    with every stream or within a series budget."""
    oracle_pipeline, status = _rich_pipeline(**metrics)
    pipeline = copy.deepcopy(oracle_pipeline)
    oracle = CollectorRegistry(auto_describe=False)
    oracle.register(ReferenceCollector(oracle_pipeline, threading.Lock(), status,
                                       clock=lambda: CLOCK))
    collector = DriftCollector(pipeline, threading.Lock(), status, clock=lambda: CLOCK)
    shown = set()
    for step, openmetrics in enumerate((False, False, True, False, True)):
        if step == 3:    # a third version evicts the idle first; new streams and detections
            for p in (oracle_pipeline, pipeline):
                p.process(_rich_records(random.Random(5), "3", 800, 300, -6.0), now=CLOCK)
        if openmetrics:
            want = generate_openmetrics(oracle).decode()
            got = collector.render(openmetrics=True) + "# EOF\n"
            assert _samples(got, parse_openmetrics) == _samples(want, parse_openmetrics)
        else:
            want = generate_latest(oracle).decode()
            got = collector.render()
            assert _samples(got, parse_text) == _samples(want, parse_text)
        assert got == want, step
        shown |= {line.split("{")[0] + (" >0" if not line.endswith(" 0.0") else "")
                  for line in got.splitlines() if not line.startswith("#")}
        if step == 0:
            assert "drift_detections_total >0" not in shown    # announced at 0 first
    if "max_feature_series" in metrics:
        assert "drift_features_dropped >0" in shown
        return
    # the state exercised every family, escaping, categories and non-zero counters
    assert {line.split()[0] for line in shown} == {
        name + "_total" * (kind == "counter") for name, kind, _, _ in collector.families}
    assert {"drift_detections_total >0", "drift_detected >0", "drift_feature_distance >0",
            "drift_feature_pvalue >0", "drift_model_quality_ratio >0",
            "drift_model_error >0"} <= shown
    lines = collector.render().splitlines()
    assert any('feature="tem\\"p\\\\er"' in line for line in lines)
    assert any('category="a\\"b\\\\c"' in line for line in lines)
    churn = {line.split('model_version="')[1].split('"')[0] for line in lines
             if line.startswith("drift_detected{") and 'model="churn"' in line}
    assert churn == {"2", "3"}      # version 1 was evicted: its series are gone


def _series(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in parse_text(text) for s in family.samples]


def test_no_series_for_label_combinations_that_cannot_occur() -> None:
    """On the rich state: categories only on features' share streams, ``feature`` empty
    exactly on the prediction, error and label streams, missing values only of features,
    p-values only of chi2 and distances never, no distance of the error stream, no online
    detector or value count on a stream that only ever had categories, model metrics in
    the family of their unit."""
    pipeline, status = _rich_pipeline()
    series = _series(DriftCollector(pipeline, threading.Lock(), status,
                                    clock=lambda: CLOCK).render())
    categorical = {("churn", "plan")}     # string values only
    checked = set()
    for name, labels, _ in series:
        # version is the software's (drift_build_info); a model's is model_version
        assert "version" not in labels or name == "drift_build_info", (name, labels)
        if "signal" in labels:
            signal, feature = labels["signal"], labels["feature"]
            assert (signal == "feature") == bool(feature), (name, labels)
            assert not labels.get("category") or signal == "feature", (name, labels)
            if name.startswith(("drift_feature_distance", "drift_feature_pvalue")):
                assert signal != "error", (name, labels)
                assert (labels["method"] == "chi2") == (name == "drift_feature_pvalue")
                checked.add(name)
            if (labels["model"], feature) in categorical and "detector" in labels \
                    and not labels["category"]:
                assert labels["detector"] in ("psi", "js", "chi2"), (name, labels)
                checked.add("categories only")
        if name == "drift_feature_missing_total":
            assert set(labels) == {"model", "model_version", "feature"}
        if name.startswith("drift_model_quality"):
            assert labels["metric"] in {"accuracy", "precision", "recall", "f1", "roc_auc",
                                        "r2"}
            checked.add(name)
        if name.startswith("drift_model_error"):
            assert labels["metric"] in {"mae", "rmse"}, labels
            checked.add(name)
    assert checked >= {"drift_feature_distance", "drift_feature_pvalue", "categories only",
                       "drift_model_quality_ratio", "drift_model_error",
                       "drift_model_quality_threshold_ratio", "drift_model_error_threshold"}
    # and no stream of the categorical feature counts values fed to online detectors
    assert not [labels for name, labels, _ in series if name == "drift_stream_values_total"
                and labels["feature"] == "plan" and not labels["category"]]


def _warm(n_numeric: int, n_categorical: int, **metrics: object) -> Pipeline:
    """One version with ``n_numeric`` numeric and ``n_categorical`` categorical features
    (seven categories each), scored and labelled, every reference warm."""
    p = Pipeline(Settings(metrics=metrics))
    rng = random.Random(2)
    records = []
    for i in range(2100):
        features: dict[str, object] = {f"x{j}": rng.gauss(0.0, 1.0) for j in range(n_numeric)}
        features.update({f"c{j}": rng.choice("abcdefg") for j in range(n_categorical)})
        score = rng.random()
        records.append(Record("prediction", json.dumps({
            "model": "m", "model_version": "1", "prediction_id": str(i), "features": features,
            "prediction": int(score > 0.5), "score": score,
            "label": int(rng.random() < score)}).encode()))
    # the first 1,000 pairs fit the score calibrator (estimation.warmup), the rest are
    # estimated
    p.process(records[:1000], now=0.0)
    p.process(records[1000:], now=0.0)
    return p


@pytest.mark.parametrize("per_detector, numeric, categorical, version", [
    (True, 27, 41, 106), (False, 11, 28, 76)])
def test_series_budget_per_feature_and_version(per_detector: bool, numeric: int,
                                               categorical: int, version: int) -> None:
    """The cardinality budget of the README: series per numeric feature, per categorical
    feature (five share streams and the rest) and per version of a scored classifier with
    labels, with the default detectors, references warm and performance estimated."""
    def count(p: Pipeline, feature: str | None = None) -> int:
        return sum(1 for name, labels, _ in _series(
            DriftCollector(p, threading.Lock(), RunStatus()).render())
            if labels.get("model_version") == "1" and (
                feature is None or labels.get("feature") == feature))

    base = _warm(1, 1, per_detector=per_detector)
    assert count(base, "x0") == numeric
    assert count(base, "c0") == categorical
    assert count(base) == version + numeric + categorical
    assert count(_warm(3, 1, per_detector=per_detector)) == version + 3 * numeric + categorical


def test_max_feature_series_keeps_whole_features_in_order_and_counts_the_rest() -> None:
    """With room for two features, the version's own streams and the first two features
    are exported, the third is left out and counted; once it fits, its counters start
    at 0."""
    pipeline = _warm(3, 0, max_feature_series=2 * 27 + 26)
    collector = DriftCollector(pipeline, threading.Lock(), RunStatus())
    series = _series(collector.render())
    assert {labels["feature"] for _, labels, _ in series if labels.get("signal") == "feature"} \
        == {"x0", "x1"}
    assert {labels["signal"] for _, labels, _ in series if "signal" in labels} == {
        "prediction", "error", "label", "feature"}
    assert [(name, labels, value) for name, labels, value in series
            if name == "drift_features_dropped"] == [
        ("drift_features_dropped", {"model": "m"}, 1.0)]
    # the same state with room for everything: x2 appears, its counters at 0 first
    roomy = DriftCollector(pipeline, threading.Lock(), RunStatus())
    roomy._max_feature_series = 10**6
    x2 = [(name, value) for name, labels, value in _series(roomy.render())
          if labels.get("feature") == "x2" and name == "drift_detections_total"]
    assert len(x2) == 6 and all(value == 0 for _, value in x2)


def test_a_capped_scrape_is_logged_when_it_starts_and_ends(caplog) -> None:
    pipeline = _warm(3, 0, max_feature_series=27)
    collector = DriftCollector(pipeline, threading.Lock(), RunStatus())
    with caplog.at_level(logging.INFO, logger="detector.metrics"):
        collector.render()
        collector.render()
        collector._max_feature_series = 10**6
        collector.render()
    events = [(r.getMessage(), r.fields["features_dropped"]) for r in caplog.records]
    assert events == [("metrics_series_capped", 2), ("metrics_series_uncapped", 0)]


def _steady(body: bytes) -> list[str]:
    """The exposition without the lines that change from one call to the next: the
    process collector's (CPU time, memory; ``U__process__...`` with escaping=values)."""
    return [line for line in body.decode().splitlines()
            if "process_" not in line.replace("__", "_")]


@pytest.mark.parametrize("accept", [
    "",
    ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),          # Prometheus 2.x
    "application/openmetrics-text",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=underscores",
    "text/plain;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=1.0.0;escaping=values",
])
@pytest.mark.parametrize("metrics", [{}, {"per_detector": False, "max_feature_series": 60}],
                         ids=["defaults", "per-stream-capped"])
def test_exposition_is_what_the_registry_encodes(accept: str, metrics: dict) -> None:
    pipeline, status = _rich_pipeline(**metrics)
    exporter = Exporter(pipeline, threading.Lock(), status)
    exporter.observe_batch(0.003)
    generate_latest(exporter.registry)        # announce every series: both see the same
    encoder, content_type = choose_encoder(accept)
    body, got_type = exporter.exposition(accept)
    assert got_type == content_type
    assert _steady(body) == _steady(encoder(exporter.registry))


def test_promtool_accepts_the_rendered_exposition(prometheus_tools: dict[str, str]) -> None:
    pipeline, status = _rich_pipeline()
    body, _ = Exporter(pipeline, threading.Lock(), status).exposition("")
    done = subprocess.run([prometheus_tools["promtool"], "check", "metrics"], input=body,
                          capture_output=True, timeout=60, check=False)
    lint = (done.stdout + done.stderr).decode()
    # 3: lint only; the lint is about names (another issue), never about the syntax
    assert done.returncode in (0, 3), lint
    assert "error" not in lint.lower(), lint


def test_a_scrape_sees_whole_batches_while_the_loop_runs() -> None:
    """Batches of 50 values applied under the lock in another thread: every scrape's
    count of values is a multiple of 50."""
    p = Pipeline(Settings(detectors={"feature": ["adwin"], "prediction": []}))
    lock = threading.Lock()
    collector = DriftCollector(p, lock, RunStatus())
    stop = threading.Event()

    def loop() -> None:
        i = 0
        while not stop.is_set():
            batch = [Record("prediction", json.dumps({
                "model": "m", "prediction_id": str(i + k), "features": {"x": float(k)},
                "prediction": 0}).encode()) for k in range(50)]
            i += 50
            with lock:
                p.process(batch, now=time.time())

    writer = threading.Thread(target=loop)
    writer.start()
    counts = set()
    try:
        deadline = time.monotonic() + 30
        while len(counts) < 20 and time.monotonic() < deadline:
            values = {s.labels["signal"]: s.value
                      for family in parse_text(collector.render()) for s in family.samples
                      if s.name == "drift_stream_values_total"}
            if "feature" in values:
                counts.add(values["feature"])
                assert values["feature"] % 50 == 0, values
                assert values["prediction"] == values["feature"]
    finally:
        stop.set()
        writer.join()
    assert len(counts) >= 2, counts
