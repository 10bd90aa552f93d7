"""``drift-detector demo``: the bundled broker, a drifting model stream, the
service, and a live terminal view, all in one process.

The stream is a fraud classifier with ten numeric features and one categorical
one. Labels arrive one to three seconds after their prediction; a few never
arrive, a few arrive for predictions that never existed, a few messages are
malformed. Two changes are injected at announced event indices:

* **A**, a mean shift of ``amount`` (its log moves by +0.9 standard deviations);
* **B**, a concept change: the true fraud rule changes, the model does not,
  so accuracy falls.

>>> s = Scenario(seed=1, shift_at=5, concept_at=8)
>>> e = s.prediction(0)
>>> sorted(e["features"])[:3], e["model"]
(['account_age_days', 'age', 'amount'], 'fraud')
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.alerting import (
    Alert,
    AlertingUnavailable,
    LocalAlerting,
    shipped_rules,
    without_waits,
)
from detector.broker import Tansu
from detector.config import MetricsSettings, Settings
from detector.monitor import Detection
from detector.service import Service
from detector.sources import KafkaSource, create_topics, producer

MODEL = "fraud"
SHIFTED_FEATURE = "amount"
COUNTRIES = ("DE", "FR", "US", "GB", "NL", "ES", "IT", "PL")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass
class Scenario:
    """Synthetic events of the ``fraud`` model, drifting at ``shift_at`` and ``concept_at``."""

    seed: int
    shift_at: int
    concept_at: int
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def features(self, i: int) -> dict[str, Any]:
        r = self.rng
        log_amount_mean = 3.5 + (0.72 if i >= self.shift_at else 0.0)
        return {
            "amount": round(float(r.lognormal(log_amount_mean, 0.8)), 2),
            "age": round(float(r.normal(41, 12)), 1),
            "account_age_days": round(float(r.exponential(400)), 1),
            "items": int(r.poisson(3)),
            "hour": round(float(r.uniform(0, 24)), 2),
            "distance_km": round(float(r.lognormal(2, 1)), 2),
            "velocity_1h": int(r.poisson(1.5)),
            "merchant_risk": round(float(r.beta(2, 5)), 4),
            "device_score": round(float(r.normal(0.6, 0.15)), 4),
            "txn_count_30d": int(r.poisson(20)),
            "country": COUNTRIES[int(r.integers(len(COUNTRIES)))],
        }

    @staticmethod
    def _model_logit(f: dict[str, Any]) -> float:
        z_amount = (math.log(max(f["amount"], 0.01)) - 3.5) / 0.8
        z_risk = (f["merchant_risk"] - 0.286) / 0.16
        z_vel = (f["velocity_1h"] - 1.5) / 1.22
        z_age = (f["account_age_days"] - 400) / 400
        return -1.6 + 1.3 * z_amount + 1.6 * z_risk + 0.9 * z_vel - 0.6 * z_age

    def _true_logit(self, i: int, f: dict[str, Any]) -> float:
        if i < self.concept_at:
            return self._model_logit(f)
        # After B fraud follows distance and device, not merchant risk.
        z_dist = (math.log(max(f["distance_km"], 0.01)) - 2.0) / 1.0
        z_dev = (f["device_score"] - 0.6) / 0.15
        return -1.6 + 1.8 * z_dist - 1.4 * z_dev + 0.4 * (f["velocity_1h"] - 1.5) / 1.22

    def prediction(self, i: int) -> dict[str, Any]:
        f = self.features(i)
        score = _sigmoid(self._model_logit(f))
        truth = int(self.rng.random() < _sigmoid(3.0 * self._true_logit(i, f)))
        return {"model": MODEL, "model_version": "3", "prediction_id": f"p{i}",
                "timestamp": time.time(), "features": f, "prediction": int(score > 0.5),
                "score": round(score, 5), "_truth": truth}


def demo_settings(bootstrap: str, port: int) -> Settings:
    """The demo's settings: the product defaults, a short label TTL and detection hold.
    Built in code, so no ``DRIFT_*`` variable reaches them: the demo talks to its own
    broker only, whatever the environment says (e.g. in a pod)."""
    return Settings(
        kafka={"bootstrap_servers": bootstrap, "group_id": "drift-demo",
               "session_timeout_ms": 2000, "heartbeat_interval_ms": 500, "poll_timeout_ms": 200},
        metrics={"host": "127.0.0.1", "port": port, "detection_hold_seconds": 20},
        join={"ttl_seconds": 15},
        models={MODEL: {"task": "classification", "thresholds": {"accuracy": 0.8, "f1": 0.5}}},
        discover_models=True,
    )


class Producer(threading.Thread):
    """Sends predictions at ``rate`` per second and their labels 1-3 s later."""

    def __init__(self, scenario: Scenario, bootstrap_settings: Any, rate: float,
                 stop: threading.Event) -> None:
        super().__init__(name="demo-producer", daemon=True)
        self.scenario, self.rate, self.stop = scenario, rate, stop
        self.kafka = bootstrap_settings
        self.sent = 0
        self.labels_sent = 0
        self.sent_at: dict[int, float] = {}

    def run(self) -> None:
        prod = producer(self.kafka, linger_ms=5)
        rng = np.random.default_rng(self.scenario.seed + 1)
        pending: deque[tuple[float, bytes]] = deque()
        started = time.monotonic()
        try:
            while not self.stop.is_set():
                due = int((time.monotonic() - started) * self.rate)
                while self.sent < due:
                    i = self.sent
                    event = self.scenario.prediction(i)
                    truth = event.pop("_truth")
                    if i in (self.scenario.shift_at, self.scenario.concept_at):
                        self.sent_at[i] = time.time()
                    if rng.random() < 0.0005:
                        prod.send("predictions", b'{"model": "fraud", "features": oops')
                    prod.send("predictions", json.dumps(event).encode())
                    if rng.random() > 0.03:  # 3 % of labels never come
                        label = {"model": MODEL, "prediction_id": event["prediction_id"],
                                 "label": truth, "timestamp": time.time()}
                        pending.append((time.monotonic() + rng.uniform(1, 3),
                                        json.dumps(label).encode()))
                    if rng.random() < 0.002:  # a label for a prediction that never existed
                        prod.send("labels", json.dumps({"model": MODEL, "prediction_id": f"x{i}",
                                                        "label": 0}).encode())
                    self.sent += 1
                now = time.monotonic()
                ready = sorted((p for p in pending if p[0] <= now), key=lambda p: p[0])
                if ready:
                    pending = deque(p for p in pending if p[0] > now)
                    for _, raw in ready:
                        prod.send("labels", raw)
                        self.labels_sent += 1
                self.stop.wait(0.01)
        finally:
            prod.flush()
            prod.close()


#: alerts about the scrape target itself keep their waits: before Prometheus' first scrape
#: the demo's service has no ``up`` series yet, and it connects to Kafka after Prometheus
#: starts (``drift_kafka_connected`` 0 meanwhile); neither is an outage
TARGET_ALERTS = frozenset({"DriftDetectorAbsent", "DriftDetectorDown", "KafkaDisconnected",
                           "DriftDetectorNotPolling"})
#: the labels that tell one alert of a rule from another, in the order they are shown
ALERT_LABELS = ("model", "model_version", "feature", "category", "metric", "detector", "topic")


def describe(alert: Alert) -> str:
    """An alert in one line: its name and the labels that identify it.

    >>> describe(Alert("FeatureDriftDetected", "firing", {"alertname": "FeatureDriftDetected",
    ...     "model": "fraud", "feature": "amount", "severity": "warning"}, ""))
    'FeatureDriftDetected model=fraud feature=amount'
    """
    return " ".join([alert.name, *(f"{k}={alert.labels[k]}" for k in ALERT_LABELS
                                   if alert.labels.get(k))])


class AlertWatch:
    """What the demo shows of its Prometheus: the alerts pending or firing now, and when
    each first fired (seconds after the demo started)."""

    def __init__(self, local: LocalAlerting, started: float) -> None:
        self.local = local
        self.started = started
        self.now: list[Alert] = []
        self.first: dict[str, float] = {}

    def poll(self) -> list[Alert]:
        """Ask Prometheus (keeping the last answer if it does not give one)."""
        try:
            self.now = self.local.alerts()
        except (OSError, AlertingUnavailable):
            return self.now
        for alert in self.now:
            if alert.state == "firing":
                self.first.setdefault(describe(alert), time.time() - self.started)
        return self.now

    def firing(self) -> int:
        return sum(alert.state == "firing" for alert in self.now)

    def summary(self) -> str:
        """The alerts that fired, in order, and what Alertmanager holds."""
        try:
            received = len(self.local.notified())
        except OSError:
            received = 0
        lines = [f"Alerts fired (Prometheus with the shipped rules): {len(self.first)}"]
        lines += [f"   {at:5.1f} s  {name}" for name, at in
                  sorted(self.first.items(), key=lambda kv: kv[1])]
        lines.append(f"Alertmanager received {received} of them")
        return "\n".join(lines)


def _snapshot(service: Service) -> dict[str, Any]:
    with service.lock:
        state = service.pipeline.models.get(MODEL)
        if state is None:
            return {}
        mon = next(reversed(state.versions.values()), None)
        return {
            "events": dict(state.events),
            "join": dict(state.join),
            "pending": service.pipeline.join.pending(MODEL),
            "metrics": {(m, w): v for m, w, v in mon.performance.values()} if mon else {},
            "rejected": sum(service.pipeline.rejected.values()),
        }


def _render(service: Service, prod: Producer, started: float, port: int, rate_hist: deque,
            scenario: Scenario, duration: float, watch: AlertWatch | None) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    snap = _snapshot(service)
    now = time.time()
    processed = sum(snap.get("events", {}).values())
    rate_hist.append((now, processed))
    while len(rate_hist) > 2 and now - rate_hist[0][0] > 3:
        rate_hist.popleft()
    (t0, n0), (t1, n1) = rate_hist[0], rate_hist[-1]
    eps = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    head = Table.grid(padding=(0, 2))
    head.add_row("elapsed", f"{now - started:5.1f} s" + (f" / {duration:.0f} s" if duration else ""),
                 "metrics", f"http://127.0.0.1:{port}/metrics")
    head.add_row("produced", f"{prod.sent:,} predictions, {prod.labels_sent:,} labels",
                 "processed", f"{processed:,} events  ({eps:,.0f}/s)")
    j = snap.get("join", {})
    head.add_row("label join", f"matched {j.get('matched', 0):,}  expired {j.get('expired', 0):,}  "
                 f"orphan {j.get('orphan', 0):,}  pending {snap.get('pending', 0):,}",
                 "rejected", f"{snap.get('rejected', 0):,} messages")

    plan = Table("injected drift", "at event", "status", box=None)
    for label, at in ((f"A: {SHIFTED_FEATURE} mean shift", scenario.shift_at),
                      ("B: concept change (accuracy falls)", scenario.concept_at)):
        plan.add_row(label, f"{at:,}", "injected" if prod.sent > at else "upcoming")

    perf = Table("metric", "cumulative", "rolling 1000", "threshold", box=None)
    thresholds = service.settings.model(MODEL).thresholds
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        m = snap.get("metrics", {})
        if (name, "cumulative") in m:
            th = thresholds.get(name)
            roll = m[(name, "rolling")]
            style = "bold red" if th is not None and roll < th else ""
            perf.add_row(name, f"{m[(name, 'cumulative')]:.3f}", Text(f"{roll:.3f}", style=style),
                         f"{th:.2f}" if th is not None else "")

    det = Table("time", "signal", "feature", "detector", "index", box=None)
    for d in list(service.status.detections)[-8:]:
        where = f"{d.feature}={d.category}" if d.category else d.feature
        det.add_row(time.strftime("%H:%M:%S", time.localtime(d.at)), d.signal, where or "-",
                    d.detector, f"{d.index:,}")
    panels = [Panel(head, title="drift-detector demo"), Panel(plan, title="plan"),
              Panel(perf, title=f"model {MODEL}"), Panel(det, title="detections (newest last)")]
    if watch is not None:
        alerts = Table("state", "alert", "first fired", box=None)
        now = sorted(watch.poll(), key=lambda a: (a.state == "firing", a.active_at))
        for alert in now[-8:]:      # the newest firing last, as the detections
            name = describe(alert)
            at = watch.first.get(name)
            alerts.add_row(Text(alert.state, style="bold red" if alert.state == "firing" else ""),
                           name, "" if at is None else f"{at:5.1f} s")
        more = f", {len(now) - 8} more" if len(now) > 8 else ""
        panels.append(Panel(alerts, title=f"alerts: {watch.firing()} firing{more} (Prometheus "
                                          f"http://127.0.0.1:{watch.local.prometheus_port}"
                                          "/alerts)"))
    return Group(*panels)


def summarize(detections: list[Detection], scenario: Scenario, sent_at: dict[int, float],
              produced: int) -> str:
    """Text summary: what was injected where, what was detected, with what delay."""
    lines = ["", "Summary", "======="]
    a, b = scenario.shift_at, scenario.concept_at
    t_a, t_b = sent_at.get(a, math.inf), sent_at.get(b)

    def first(signal: str, after_index: int | None = None, after_time: float | None = None,
              feature: str | None = None) -> Detection | None:
        return next((d for d in detections if d.signal == signal
                     and (feature is None or d.feature == feature)
                     and (after_index is None or d.index >= after_index)
                     and (after_time is None or d.at >= after_time)), None)

    shift = first("feature", a, feature=SHIFTED_FEATURE)
    lines.append(f"A  {SHIFTED_FEATURE} mean shift injected at event {a:,}: " + (
        f"detected by {shift.detector} at event {shift.index:,} (delay {shift.index - a} events)"
        if shift else ("not detected" if produced > a else "not reached")))
    pred = first("prediction", a)
    if pred:
        lines.append(f"   and what follows from it: prediction drift ({pred.detector}, delay "
                     f"{pred.index - a} events)")
    label = first("label", after_time=t_a)
    if label:
        lines.append(f"   and label drift ({label.detector}): the true fraud rate depends on "
                     f"{SHIFTED_FEATURE}, so its shift moves the labels too")
    concept = first("error", after_time=t_b) if t_b is not None else None
    lines.append(f"B  concept change injected at event {b:,}: " + (
        f"detected on the error stream by {concept.detector} {concept.at - t_b:.1f} s later "
        "(labels arrive 1-3 s after their predictions)" if concept else
        ("not detected" if t_b is not None else "not reached")))
    false = [d for d in detections if d.signal == "feature" and not (
        d.feature == SHIFTED_FEATURE and d.index >= a)]
    early = [d for d in detections if d.signal != "feature" and d.at < t_a]
    lines.append(f"False alarms (features where nothing was injected): {len(false)}" + (
        "  (" + ", ".join(f"{d.feature}/{d.detector}@{d.index}" for d in false[:8]) + ")"
        if false else ""))
    if early:
        lines.append(f"Detections on predictions, labels or errors before anything was "
                     f"injected: {len(early)}")
    return "\n".join(lines)


def run_demo(duration: float = 60.0, rate: float = 2000.0, seed: int = 7,
             port: int | None = None, live: bool = True, alerts: bool = False) -> int:
    """Run the whole demo; return the exit code. ``port`` None: the service's default
    port (another free one if it is taken). ``alerts``: also run Prometheus and
    Alertmanager with the shipped rules (``AlertingUnavailable`` if they are not
    installed), show their alerts and stop them at the end."""
    if port is None:
        port = MetricsSettings().port
    span = duration if duration > 0 else 60.0
    scenario = Scenario(seed=seed, shift_at=int(rate * span * 0.25),
                        concept_at=int(rate * span * 0.55))
    print("Starting the bundled Kafka-compatible broker (Tansu) ...", flush=True)
    with Tansu() as broker, contextlib.ExitStack() as stack:
        settings = demo_settings(broker.bootstrap, port)
        create_topics(settings.kafka, settings.kafka.topics)
        service = Service(settings, KafkaSource(settings.kafka))
        try:
            port = service.start_http()
        except OSError:
            settings = demo_settings(broker.bootstrap, 0)
            service = Service(settings, KafkaSource(settings.kafka))
            port = service.start_http()
        print(f"broker {broker.bootstrap}; metrics http://127.0.0.1:{port}/metrics\n"
              f"plan: {rate:.0f} predictions/s; A = {SHIFTED_FEATURE} mean shift at event "
              f"{scenario.shift_at:,}; B = concept change at event {scenario.concept_at:,}\n"
              "detectors: the defaults (ADWIN and CUSUM on standardised values, calibrated to one "
              "false alarm per 10^9 values;\nJump on abrupt steps; PSI/JS/KS/chi2 against the "
              "first 1,000 values)\n"
              "Ctrl-C to stop.", flush=True)
        watch = _start_alerting(stack, port) if alerts else None
        stop_service, stop_producer = threading.Event(), threading.Event()
        worker = threading.Thread(target=service.run, args=(stop_service,), name="service")
        worker.start()
        prod = Producer(scenario, settings.kafka, rate, stop_producer)
        prod.start()
        started = time.time()
        if watch is not None:
            watch.started = started
        rate_hist: deque = deque()
        interactive = live and sys.stdout.isatty()
        try:
            if interactive:
                from rich.live import Live
                with Live(_render(service, prod, started, port, rate_hist, scenario, duration,
                                  watch), refresh_per_second=4) as view:
                    while not duration or time.time() - started < duration:
                        time.sleep(0.25)
                        view.update(_render(service, prod, started, port, rate_hist, scenario,
                                            duration, watch))
            else:
                next_line = started
                while not duration or time.time() - started < duration:
                    if watch is not None:
                        fired = set(watch.first)
                        watch.poll()
                        for name in sorted(set(watch.first) - fired, key=watch.first.get):
                            print(f"[{watch.first[name]:5.1f} s] alert firing: {name}", flush=True)
                    if time.time() >= next_line:
                        snap = _snapshot(service)
                        acc = snap.get("metrics", {}).get(("accuracy", "rolling"))
                        print(f"[{time.time() - started:5.1f} s] produced {prod.sent:,} processed "
                              f"{sum(snap.get('events', {}).values()):,} detections "
                              f"{len(service.status.detections)} rolling accuracy "
                              f"{'-' if acc is None else f'{acc:.3f}'}" + (
                                  "" if watch is None else f" alerts firing {watch.firing()}"),
                              flush=True)
                        next_line += 5
                    time.sleep(0.25 if watch is not None else 0.1)
        except KeyboardInterrupt:
            pass
        finally:
            stop_producer.set()
            prod.join(10)
            _drain(service, prod)
            stop_service.set()
            worker.join(15)
        print(summarize(list(service.status.detections), scenario, prod.sent_at, prod.sent))
        if watch is not None:
            watch.poll()
            print(watch.summary())
    return 0


def _start_alerting(stack: contextlib.ExitStack, port: int) -> AlertWatch:
    """Prometheus (scraping the demo's service every second) and Alertmanager on free
    loopback ports with the shipped rules, each ``for:`` at 0 s so that alerts fire
    within the demo; stopped, and their data removed, when ``stack`` closes."""
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="drift-demo-")))
    rules = without_waits(shipped_rules(), keep=TARGET_ALERTS)
    local = stack.enter_context(LocalAlerting(workdir, [f"127.0.0.1:{port}"], rules,
                                              interval=1.0))
    print(f"alerts: Prometheus http://127.0.0.1:{local.prometheus_port}/alerts and "
          f"Alertmanager http://127.0.0.1:{local.alertmanager_port} with the shipped rules "
          "(deploy/prometheus/rules.yml, every for: set to 0 s but those of "
          f"{', '.join(sorted(TARGET_ALERTS))}), scraping every second", flush=True)
    return AlertWatch(local, time.time())


def _drain(service: Service, prod: Producer, timeout: float = 5.0) -> None:
    """Give the service a moment to process what was produced before stopping."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        snap = _snapshot(service)
        if snap.get("events", {}).get("prediction", 0) >= prod.sent:
            return
        time.sleep(0.1)
