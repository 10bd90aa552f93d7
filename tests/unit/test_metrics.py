"""The collector and the HTTP server: what is exported, and that ``render`` writes
the same exposition as prometheus_client would from the pre-issue-11 collector."""

from __future__ import annotations

import copy
import json
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
from detector.metrics import FAMILIES, DriftCollector, Exporter, MetricsServer, RunStatus
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
    labels = {"model": "m", "version": "unversioned", "signal": "feature", "feature": "x",
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


# --- render: the same exposition as prometheus_client from the collector before issue 11 ---

LEGACY_STREAM_LABELS = ["model", "version", "signal", "feature", "category", "detector"]


class LegacyCollector(Collector):
    """The collector as it was before issue 11 (prometheus_client metric families built
    under the lock), kept verbatim as the oracle that ``render`` is compared with."""

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
                                     labels=LEGACY_STREAM_LABELS)
        detections = CounterMetricFamily("drift_detections",
                                         "Detection episodes (firings closer than "
                                         "detection.cooldown values are one episode).",
                                         labels=LEGACY_STREAM_LABELS)
        firings = CounterMetricFamily("drift_detector_firings", "Raw detector firings.",
                                      labels=LEGACY_STREAM_LABELS)
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


def _rich_pipeline() -> tuple[Pipeline, RunStatus]:
    """Two declared models, two live versions of one, references with distances,
    performance metrics, detections, rejections, and a status with every family."""
    p = Pipeline(Settings(
        models={"churn": {"thresholds": {"accuracy": 0.7, "f1": 0.5}},
                "eta": {"task": "regression", "thresholds": {"mae": 3.0}}},
        max_versions=2, version_idle_seconds=5.0,
        reference={"warmup": 20, "window": 20, "evaluate_every": 10},
        metrics={"detection_hold_seconds": 5.0}))
    rng = random.Random(11)
    p.process(_rich_records(rng, "1", 0, 300, 6.0) + _rich_records(rng, "2", 300, 200, 0.0),
              now=CLOCK - 10.0)
    p.process(_rich_records(rng, "2", 500, 300, 6.0), now=CLOCK - 1.0)
    status = RunStatus()
    status.lag = {("predictions", 1): 12, ("labels", 0): 0}
    status.checkpoint_at = 1_790_000_000.25
    status.enable_sink("dead_letter", ("written", "too_large"))
    status.count_sink("dead_letter", {"written": 3})
    status.topic_missing = {"labels": False, "predictions": True}
    return p, status


def _samples(text: str, parse: Callable[[str], Iterator[Metric]]) -> list[tuple]:
    return [(s.name, tuple(sorted(s.labels.items())), s.value)
            for family in parse(text) for s in family.samples]


def test_render_writes_what_prometheus_client_wrote_before() -> None:
    """On a rich state, scrape after scrape (the first one shows counters at 0), with a
    version evicted and new streams between scrapes: the same bytes in both formats."""
    legacy_pipeline, status = _rich_pipeline()
    pipeline = copy.deepcopy(legacy_pipeline)
    legacy = CollectorRegistry(auto_describe=False)
    legacy.register(LegacyCollector(legacy_pipeline, threading.Lock(), status,
                                    clock=lambda: CLOCK))
    collector = DriftCollector(pipeline, threading.Lock(), status, clock=lambda: CLOCK)
    shown = set()
    for step, openmetrics in enumerate((False, False, True, False, True)):
        if step == 3:    # a third version evicts the idle first; new streams and detections
            for p in (legacy_pipeline, pipeline):
                p.process(_rich_records(random.Random(5), "3", 800, 300, -6.0), now=CLOCK)
        if openmetrics:
            want = generate_openmetrics(legacy).decode()
            got = collector.render(openmetrics=True) + "# EOF\n"
            assert _samples(got, parse_openmetrics) == _samples(want, parse_openmetrics)
        else:
            want = generate_latest(legacy).decode()
            got = collector.render()
            assert _samples(got, parse_text) == _samples(want, parse_text)
        assert got == want, step
        shown |= {line.split("{")[0] + (" >0" if not line.endswith(" 0.0") else "")
                  for line in got.splitlines() if not line.startswith("#")}
        if step == 0:
            assert "drift_detections_total >0" not in shown    # announced at 0 first
    # the state exercised every family, escaping, categories and non-zero counters
    assert {line.split()[0] for line in shown} == {
        name + "_total" * (kind == "counter") for name, kind, _, _ in FAMILIES}
    assert {"drift_detections_total >0", "drift_detected >0",
            "drift_feature_distance >0", "drift_model_metric >0"} <= shown
    lines = collector.render().splitlines()
    assert any('feature="tem\\"p\\\\er"' in line for line in lines)
    assert any('category="a\\"b\\\\c"' in line for line in lines)
    churn = {line.split('version="')[1].split('"')[0] for line in lines
             if line.startswith("drift_detected{") and 'model="churn"' in line}
    assert churn == {"2", "3"}      # version 1 was evicted: its series are gone


def _steady(body: bytes) -> list[str]:
    """The exposition without the lines that change from one call to the next: the
    process collector's (CPU time, memory) and the event lag (the exporter's clock is
    the real one)."""
    out = []
    for line in body.decode().splitlines():
        # escaping=values spells process_cpu_seconds_total as U__process__cpu...
        plain = line.replace("U__", "").replace("__", "_")
        if "event_lag" not in plain and plain.split("process_", 1)[0] not in (
                "", "# HELP ", "# TYPE "):
            out.append(line)
    return out


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
def test_exposition_is_what_the_registry_encodes(accept: str) -> None:
    pipeline, status = _rich_pipeline()
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
