"""The run loop: poll → decode → join → update → commit, plus the HTTP server.

Side effects live here and only here: polling and committing, the clock,
logging of detections and rejections, the metrics server. A batch is applied
under the lock the collector reads with, then committed; a stop request
(SIGTERM, SIGINT) ends the loop after the batch in hand, so nothing applied is
left uncommitted and nothing committed is left unapplied.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from contextlib import ExitStack
from typing import Protocol
from urllib.parse import quote

from detector import kernels, state
from detector.config import Settings
from detector.detections import detection_fields
from detector.errors import SourceUnavailable
from detector.events import Rejection
from detector.ingest import Ingest
from detector.formats import KIND as PAYLOAD
from detector.formats import REASONS as PAYLOAD_REASONS
from detector.formats import Inputs
from detector.join import JoinGate
from detector.kernels import _jit
from detector.metrics import Exporter, MetricsServer, RunStatus
from detector.monitor import Detection
from detector.pipeline import BatchResult, Pipeline
from detector.recorder import Recorder
from detector.records import Message, Record, Sink
from detector.report import render

log = logging.getLogger(__name__)


#: log events of the join's back-pressure, by the kind of topic held back
_PAUSED = {"prediction": "predictions_paused", "label": "labels_paused"}
_RESUMED = {"prediction": "predictions_resumed", "label": "labels_resumed"}


class Source(Protocol):
    def open(self) -> None: ...
    def poll(self) -> list[Record]: ...
    def commit(self) -> bool: ...
    def lag(self) -> dict[tuple[str, int], int]: ...
    def connected(self) -> bool: ...
    def missing_topics(self) -> frozenset[str]: ...
    def positions(self) -> dict[tuple[str, int], int]: ...
    def resume_from(self, offsets: dict[tuple[str, int], int]) -> None: ...
    def partition_lags(self, topic: str) -> dict[int, int | None]: ...
    def hold(self, partitions: set[tuple[str, int]]) -> None: ...
    def close(self) -> None: ...


class Store(Protocol):
    def read(self) -> bytes | None: ...
    def write(self, blob: bytes) -> int: ...
    def close(self) -> None: ...


def _unless_stopped(step: Callable[[], None], stop: threading.Event,
                    undo: Callable[[], None] | None = None, every: float = 0.05) -> bool:
    """Run ``step`` in a helper thread and wait for it or for ``stop``, whichever comes
    first: True once ``step`` has returned (its exception is raised here), False as soon
    as ``stop`` is set. An abandoned step runs on in its daemon thread, and ``undo``
    runs after it if it succeeds (e.g. closes the connection it opened).

    >>> stop = threading.Event()
    >>> _unless_stopped(lambda: None, stop)
    True
    >>> stop.set()
    >>> _unless_stopped(lambda: None, stop)
    False
    """
    if stop.is_set():
        return False
    done: Future[None] = Future()

    def target() -> None:
        try:
            step()
        except BaseException as exc:  # not handled here: raised again by the waiting thread
            done.set_exception(exc)
        else:
            done.set_result(None)

    threading.Thread(target=target, name="startup-step", daemon=True).start()
    while not wait_for_futures([done], timeout=every).done:
        if stop.is_set():
            if undo is not None:
                done.add_done_callback(lambda f: undo() if f.exception() is None else None)
            return False
    done.result()
    return True


def dead_letter(rejection: Rejection, record: Record) -> Message:
    """A rejected message for the dead-letter topic: the original bytes, the reason
    and where it came from in headers, then the original headers (a CloudEvent in
    binary mode keeps its attributes there).

    >>> _, value, headers = dead_letter(Rejection("label", "invalid_json", "oops"),
    ...                                 Record("label", b"{", None, "labels", 3, 17))
    >>> value, dict(headers)["drift.reason"], dict(headers)["drift.offset"]
    (b'{', b'invalid_json', b'17')
    """
    headers = [("drift.kind", rejection.kind), ("drift.reason", rejection.reason),
               ("drift.detail", rejection.detail[:500]), ("drift.topic", record.topic),
               ("drift.partition", str(record.partition)), ("drift.offset", str(record.offset))]
    return None, record.value or b"", [(k, v.encode()) for k, v in headers] + [
        (k, v or b"") for k, v in record.headers or ()]


def drift_event(d: Detection, origin: Record) -> Message:
    """The retraining hook's message for one detection: ``(key, JSON)``.

    >>> from detector.monitor import Detection
    >>> d = Detection("fraud", "3", "feature", "amount", "adwin", 4095, 88.0, 1.5e9, {"width": 64.0})
    >>> key, raw, _ = drift_event(d, Record("prediction", b"", 1.4e9, "predictions", 2, 77))
    >>> key, json.loads(raw)["id"], json.loads(raw)["partition"]
    ('fraud', 'fraud/3/feature/amount//adwin/4095', 2)
    """
    body = {
        "id": "/".join(quote(str(part), safe="") for part in (
            d.model, d.version, d.signal, d.feature, d.category, d.detector, d.index)),
        **detection_fields(d), "value": d.value, "statistic": d.statistic, "detected_at": d.at,
        "event_time": origin.timestamp, "topic": origin.topic,
        "partition": origin.partition, "offset": origin.offset,
    }
    return d.model, json.dumps(body).encode(), []


class Reasoned(Protocol):
    kind: str
    reason: str
    detail: str


class RejectionLog:
    """Logs rejections (events, or ingest requests with ``event`` ``ingest_refused``) at
    WARNING, at most once per ``every`` seconds per reason, with the number left
    unlogged since the last line."""

    def __init__(self, every: float = 10.0, event: str = "event_rejected") -> None:
        self.every = every
        self.event = event
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def __call__(self, rejection: Reasoned, now: float) -> None:
        key = (rejection.kind, rejection.reason)
        if now - self._last.get(key, float("-inf")) < self.every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        log.warning(self.event, extra={"fields": {
            "kind": rejection.kind, "reason": rejection.reason, "detail": rejection.detail,
            "suppressed": self._suppressed.pop(key, 0)}})


def log_detection(d: Detection) -> None:
    log.info("drift_detected", extra={"fields": {**detection_fields(d), "value": d.value}})


def tune_gc() -> None:
    """Tune Python's cyclic garbage collector for the run loop (call once start-up is
    done). A batch allocates thousands of short-lived objects (decoded events, queued
    values); with the default thresholds the collector runs every 700 allocations and
    often sweeps the long-lived monitor state as well: about a tenth of the CPU at 20
    features. What start-up built is frozen (never scanned again) and the youngest
    generation is collected every 50,000 allocations; full collections still happen, so
    cycles left by evicted versions are freed.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def _warm_up() -> None:
    """Compile the kernels (or load them from numba's cache) before the consumer joins
    its group, so that the first batch after the join does not wait for a compiler."""
    started = time.perf_counter()
    kernels.warm_up()
    log.info("kernels_ready", extra={"fields": {
        "seconds": round(time.perf_counter() - started, 2), "cached": _jit.CACHED}})


class Service:
    """One drift-detector instance: a source, the pipeline, the metrics endpoint."""

    def __init__(self, settings: Settings, source: Source, *, sink: Sink | None = None,
                 dead_letters: Sink | None = None, store: Store | None = None,
                 ingest: Sink | None = None, clock=time.time) -> None:
        self.settings = settings
        self.source = source
        self.sink = sink
        self.dead_letters = dead_letters
        cfg = settings.checkpoint
        self.store = store or (state.FileStore(cfg.path) if cfg.path is not None else None)
        self.clock = clock
        r = settings.report
        #: samples each batch for ``/report`` (``report.enabled``)
        self.recorder = Recorder(settings, r.points, r.max_detections) if r.enabled else None
        self.pipeline = Pipeline(settings, tap=self.recorder.tap if self.recorder else None)
        #: model servers' topics, read into native events before the pipeline
        self.inputs = Inputs(settings) if settings.inputs else None
        self.lock = threading.Lock()
        poll_s = settings.kafka.poll_timeout_ms / 1000.0
        self.status = RunStatus(stale_after=max(15.0, 10 * poll_s))
        for s in (sink, dead_letters):
            if s is not None:
                self.status.enable_sink(s.name, s.outcomes)
        self.status.topic_missing = dict.fromkeys(settings.kafka.topics, False)
        if self.inputs is not None:
            self.status.input_pairs = self.inputs.pairs
            self._count_payload_rejections()
        self.exporter = Exporter(self.pipeline, self.lock, self.status)
        #: the HTTP ingest endpoint, writing to the ``ingest`` sink (``ingest.enabled``)
        self.ingest = None if ingest is None else Ingest(
            settings.ingest, ingest, settings.max_event_bytes, self.status,
            RejectionLog(event="ingest_refused"))
        self.server: MetricsServer | None = None
        self._rejections = RejectionLog()
        self._fingerprint = state.fingerprint(settings.state_shape())
        self._events = 0                 # messages applied, restored from a checkpoint
        self._saved_events = 0
        self._saved_at = clock()

    def start_http(self) -> int:
        """Serve /metrics, /healthz, /readyz, /detections, /report; return the bound port."""
        m = self.settings.metrics
        self.server = MetricsServer(self.exporter, m, self.ingest,
                                    self.report_page if self.recorder else None).start()
        log.info("metrics_listening", extra={"fields": {
            "host": m.host, "port": self.server.port, "tls": m.tls_certfile is not None,
            "client_certs": m.tls_client_cafile is not None,
            "basic_auth": m.basic_auth_username is not None,
            "ingest": self.ingest.path if self.ingest is not None else None}})
        return self.server.port

    def report_page(self) -> bytes:
        """The HTML report of what this instance has seen since it started (the data is
        copied under the lock, the page is written after it is released)."""
        k = self.settings.kafka
        with self.lock:
            snap = self.recorder.snapshot(self.pipeline, f"service {k.client_id} (group "
                                          f"{k.group_id}, topics {', '.join(k.topics)})")
        return render(snap).encode()

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; close everything on the way out. A stop during
        start-up (checkpoint restore, broker connection) returns at once: nothing has
        been applied or committed yet."""
        with ExitStack() as stack:
            if self.server is None:
                self.start_http()
            stack.callback(self._stop_http)
            if (not _unless_stopped(_warm_up, stop) or not _unless_stopped(self._restore, stop)
                    or not self._open(stop, stack)):
                return
            tune_gc()
            stack.callback(self._mark_stopping)
            if self.store is not None:
                stack.callback(self.store.close)
                stack.callback(self._save_if_applied)   # runs before the source closes
            self._loop(stop)

    def _stop_http(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _mark_stopping(self) -> None:
        self.status.stopping = True

    def _key(self) -> bytes | None:
        key = self.settings.checkpoint.key
        return None if key is None else key.get_secret_value().encode()

    def _restore(self) -> None:
        """Load the newest valid checkpoint, if any; raises ``CheckpointError`` when it is
        unusable and ``checkpoint.on_invalid`` is ``refuse``."""
        cfg, store = self.settings.checkpoint, self.store
        if store is None:
            return
        try:
            raw = store.read()
            if raw is None:
                log.info("checkpoint_none", extra={"fields": {"store": str(store)}})
                return
            ckpt = state.decode(raw, self._fingerprint, self._key(), str(store))
        except state.CheckpointError as exc:
            if cfg.on_invalid == "refuse":
                raise
            log.error("checkpoint_invalid", extra={"fields": {"reason": exc.reason,
                                                              "error": str(exc),
                                                              "action": "starting fresh"}})
            return
        self.pipeline.restore(ckpt.state)
        if self.inputs is not None:
            self.inputs.restore(ckpt.state)
            self._count_payload_rejections()
        self.source.resume_from(ckpt.offsets)
        self._events = self._saved_events = ckpt.events
        self.status.checkpoint_at = ckpt.created
        log.info("checkpoint_restored", extra={"fields": {
            "store": str(store), "events": ckpt.events,
            "age_s": round(self.clock() - ckpt.created, 1),
            "offsets": ",".join(f"{t}/{p}@{o}" for (t, p), o in sorted(ckpt.offsets.items()))}})

    def _save(self) -> None:
        """Checkpoint the state with the positions it corresponds to (between batches)."""
        started = time.perf_counter()
        offsets = self.source.positions()
        with self.lock:
            snapshot = self.pipeline.snapshot()
            if self.inputs is not None:
                snapshot.update(self.inputs.snapshot())
            blob = state.encode(snapshot, offsets, self._fingerprint, self._events, self._key())
        size = self.store.write(blob)
        self._saved_events, self._saved_at = self._events, self.clock()
        self.status.checkpoint_at = self._saved_at
        log.info("checkpoint_saved", extra={"fields": {
            "events": self._events, "bytes": size,
            "seconds": round(time.perf_counter() - started, 3)}})

    def _save_if_applied(self) -> None:
        """The last checkpoint, on the way out, if anything was applied since the one
        before. A stop before the first batch (during the group join, say) keeps the
        restored checkpoint: saving then would pair its state with no positions (nothing
        is assigned yet), and the next start would resume from the group's commits, past
        events that state never saw."""
        if self._events != self._saved_events:
            self._save()

    def _open(self, stop: threading.Event, stack: ExitStack) -> bool:
        """Connect the source, then each sink, retrying while no broker answers; each
        one's ``close`` joins ``stack`` once it is open. False if ``stop`` came first.

        kafka-python's constructors block until a broker answers (up to the bootstrap
        timeout, 10 s), so each attempt runs in a helper thread and a stop request is
        honoured within ~0.1 s. Shorter bootstrap attempts would not do: a slow TLS or
        SASL handshake might never fit in them, and every failed attempt leaves a
        kafka-python I/O thread behind."""
        k = self.settings.kafka
        parts: list[Source | Sink | Ingest] = [self.source]
        parts += [s for s in (self.sink, self.dead_letters, self.ingest) if s is not None]
        for part in parts:
            is_source = part is self.source
            delay = 0.5
            while True:
                try:
                    if not _unless_stopped(part.open, stop, undo=part.close):
                        return False
                    break
                except SourceUnavailable as exc:
                    log.warning("source_unavailable" if is_source else "sink_unavailable",
                                extra={"fields": {"error": str(exc), "retry_in_s": delay}})
                    if stop.wait(delay):
                        return False
                    delay = min(delay * 2, 10.0)
            stack.callback(part.close)
            if is_source:
                missing = self.source.missing_topics()
                self.status.topic_missing = {t: t in missing for t in k.topics}
                log.info("source_open", extra={"fields": {
                    "bootstrap": k.bootstrap_servers, "group": k.group_id,
                    "topics": ",".join(t for t in k.topics if t not in missing)}})
            else:
                log.info("sink_open", extra={"fields": {"sink": part.name, "topic": part.topic}})
        return True

    def _loop(self, stop: threading.Event) -> None:
        source, pipeline, status, clock = self.source, self.pipeline, self.status, self.clock
        gates: dict[int, JoinGate] = {}
        next_health = 0.0
        while not stop.is_set():
            records = source.poll()
            now = clock()
            if records:
                started = time.perf_counter()
                with self.lock:
                    result = self._process(records, now)
                    if self.recorder is not None:
                        self.recorder.record(pipeline, result)
                self.exporter.observe_batch(time.perf_counter() - started)
                if self.sink is not None and result.detections:
                    status.count_sink(self.sink.name, self.sink.publish(
                        drift_event(d, o)
                        for d, o in zip(result.detections, result.origins, strict=True)))
                if self.dead_letters is not None and result.dead:
                    status.count_sink(self.dead_letters.name, self.dead_letters.publish(
                        dead_letter(r, rec) for r, rec in result.dead))
                source.commit()
                self._report(result, now)
                self._events += len(records)
                ck = self.settings.checkpoint
                if self.store is not None and (
                        self._events - self._saved_events >= ck.interval_events
                        or now - self._saved_at >= ck.interval_seconds):
                    self._save()
            else:
                with self.lock:
                    pipeline.expire(now)
                    if self.inputs is not None:
                        self.inputs.expire(now)
            self._balance_join(gates)
            status.last_poll = now
            if now >= next_health:
                connected = source.connected()
                if connected != status.connected:
                    if connected:
                        log.info("broker_connected", extra={"fields": {
                            "bootstrap": self.settings.kafka.bootstrap_servers}})
                    else:
                        log.warning("broker_disconnected", extra={"fields": {
                            "bootstrap": self.settings.kafka.bootstrap_servers,
                            "action": "serving /metrics, not ready, reconnecting"}})
                status.connected = connected
                missing = source.missing_topics()
                status.topic_missing = {t: t in missing for t in status.topic_missing}
                status.lag = source.lag()
                next_health = now + 1.0
        log.info("stopping", extra={"fields": {"events": sum(
            sum(m.events.values()) for m in pipeline.models.values())}})

    def _process(self, records: list[Record], now: float) -> BatchResult:
        """Apply a batch (under the lock): model servers' messages are read into native
        events first (``detector.formats``); what they reject is counted as the
        pipeline's rejections are, and joins the batch's rejections and dead letters."""
        if self.inputs is None:
            return self.pipeline.process(records, now)
        converted = self.inputs.convert(records, now)
        result = self.pipeline.process(converted.records, now)
        for rejection, record in converted.rejected:
            self.pipeline.rejected[(rejection.kind, rejection.reason)] += 1
            result.rejections.append(rejection)
            result.dead.append((rejection, record))
        return result

    def _count_payload_rejections(self) -> None:
        """Every ``drift_events_rejected_total{kind="payload"}`` series from start-up."""
        for reason in PAYLOAD_REASONS:
            self.pipeline.rejected.setdefault((PAYLOAD, reason), 0)

    def _balance_join(self, gates: dict[int, JoinGate]) -> None:
        """Per partition number (producers key both topics alike, so partition p of the
        labels topic holds the labels of partition p's predictions): hold back the
        topic partition that runs ahead while catching up on a backlog, so that the join
        does not overflow, and let it go once its partner caught up (see ``JoinGate``);
        log each change. Each partition pair gets an equal share of ``join.capacity``."""
        k, join = self.settings.kafka, self.pipeline.join
        topics = {"prediction": k.predictions_topic, "label": k.labels_topic}
        lags = {kind: self.source.partition_lags(topic) for kind, topic in topics.items()}
        partitions = set(lags["prediction"]) | set(lags["label"])
        if set(gates) != partitions:        # assignment changed: fresh gates, fair shares
            share = self.settings.join.capacity // max(1, len(partitions))
            gates.clear()
            gates.update({p: JoinGate(share, k.max_poll_records) for p in partitions})
        held: set[tuple[str, int]] = set()
        for p, gate in gates.items():
            waiting = join.waiting_from(p)
            # a partition the other topic does not have is no partner to wait for
            pair = (lags["prediction"].get(p, 0), lags["label"].get(p, 0))
            before, after = gate.holding, gate.update(*waiting, *pair)
            if after is not None:
                held.add((topics[after], p))
            if after != before:
                fields = {"partition": p, "waiting_predictions": waiting[0],
                          "waiting_labels": waiting[1], "predictions_lag": pair[0],
                          "labels_lag": pair[1], "high_water": gate.high,
                          "low_water": gate.low}
                if before is not None:
                    log.info(_RESUMED[before], extra={"fields": {"topic": topics[before],
                                                                 **fields}})
                if after is not None:
                    log.info(_PAUSED[after], extra={"fields": {"topic": topics[after],
                                                               **fields}})
        self.source.hold(held)
        self.status.join_backpressure = {
            kind: sum(topic == topics[kind] for topic, _ in held) for kind in topics}

    def _report(self, result: BatchResult, now: float) -> None:
        for d in result.detections:
            log_detection(d)
        self.status.detections.extend(result.detections)
        for r in result.rejections:
            self._rejections(r, now)
