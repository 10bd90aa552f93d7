"""The run loop: poll → decode → join → update → commit, plus the HTTP server.

Side effects live here and only here: polling and committing, the clock,
logging of detections and rejections, the metrics server. A batch is applied
under the lock the collector reads with, then committed; a stop request
(SIGTERM, SIGINT) ends the loop after the batch in hand, so nothing applied is
left uncommitted and nothing committed is left unapplied.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Protocol

from detector import state
from detector.config import Settings
from detector.errors import SourceUnavailable
from detector.events import Rejection
from detector.metrics import Exporter, MetricsServer, RunStatus
from detector.monitor import Detection
from detector.pipeline import BatchResult, Pipeline, Record

log = logging.getLogger(__name__)


class Source(Protocol):
    def open(self) -> None: ...
    def poll(self) -> list[Record]: ...
    def commit(self) -> bool: ...
    def lag(self) -> dict[tuple[str, int], int]: ...
    def connected(self) -> bool: ...
    def positions(self) -> dict[tuple[str, int], int]: ...
    def resume_from(self, offsets: dict[tuple[str, int], int]) -> None: ...
    def close(self) -> None: ...


Message = tuple[str | None, bytes, list[tuple[str, bytes]]]


class Store(Protocol):
    def read(self) -> bytes | None: ...
    def write(self, blob: bytes) -> int: ...
    def close(self) -> None: ...


class Sink(Protocol):
    def publish(self, messages: Iterable[Message]) -> None: ...
    def close(self) -> None: ...


def dead_letter(rejection: Rejection, record: Record) -> Message:
    """A rejected message for the dead-letter topic: the original bytes, the reason
    and where it came from in headers.

    >>> _, value, headers = dead_letter(Rejection("label", "invalid_json", "oops"),
    ...                                 Record("label", b"{", None, "labels", 3, 17))
    >>> value, dict(headers)["drift.reason"], dict(headers)["drift.offset"]
    (b'{', b'invalid_json', b'17')
    """
    headers = [("drift.kind", rejection.kind), ("drift.reason", rejection.reason),
               ("drift.detail", rejection.detail[:500]), ("drift.topic", record.topic),
               ("drift.partition", str(record.partition)), ("drift.offset", str(record.offset))]
    return None, record.value or b"", [(k, v.encode()) for k, v in headers]


def drift_event(d: Detection, origin: Record) -> Message:
    """The retraining hook's message for one detection: ``(key, JSON)``.

    >>> from detector.monitor import Detection
    >>> d = Detection("fraud", "3", "feature", "amount", "adwin", 4095, 88.0, 1.5e9, {"width": 64.0})
    >>> key, raw, _ = drift_event(d, Record("prediction", b"", 1.4e9, "predictions", 2, 77))
    >>> key, json.loads(raw)["id"], json.loads(raw)["partition"]
    ('fraud', 'fraud/3/feature/amount/adwin/4095', 2)
    """
    body = {
        "id": f"{d.model}/{d.version}/{d.signal}/{d.feature}/{d.detector}/{d.index}",
        "model": d.model, "version": d.version, "signal": d.signal, "feature": d.feature,
        "detector": d.detector, "index": d.index, "onset_index": d.onset, "value": d.value,
        "statistic": d.statistic, "detected_at": d.at,
        "event_time": origin.timestamp, "topic": origin.topic,
        "partition": origin.partition, "offset": origin.offset,
    }
    return d.model, json.dumps(body).encode(), []


class RejectionLog:
    """Logs rejections at WARNING, at most once per ``every`` seconds per reason,
    with the number left unlogged since the last line."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def __call__(self, rejection: Rejection, now: float) -> None:
        key = (rejection.kind, rejection.reason)
        if now - self._last.get(key, float("-inf")) < self.every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        log.warning("event_rejected", extra={"fields": {
            "kind": rejection.kind, "reason": rejection.reason, "detail": rejection.detail,
            "suppressed": self._suppressed.pop(key, 0)}})


def log_detection(d: Detection) -> None:
    log.info("drift_detected", extra={"fields": {
        "model": d.model, "version": d.version, "signal": d.signal, "feature": d.feature,
        "detector": d.detector, "index": d.index, "value": d.value}})


class Service:
    """One drift-detector instance: a source, the pipeline, the metrics endpoint."""

    def __init__(self, settings: Settings, source: Source, *, sink: Sink | None = None,
                 dead_letters: Sink | None = None, store: Store | None = None,
                 clock=time.time) -> None:
        self.settings = settings
        self.source = source
        self.sink = sink
        self.dead_letters = dead_letters
        cfg = settings.checkpoint
        self.store = store or (state.FileStore(cfg.path) if cfg.path is not None else None)
        self.clock = clock
        self.pipeline = Pipeline(settings)
        self.lock = threading.Lock()
        poll_s = settings.kafka.poll_timeout_ms / 1000.0
        self.status = RunStatus(stale_after=max(15.0, 10 * poll_s))
        self.exporter = Exporter(self.pipeline, self.lock, self.status)
        self.server: MetricsServer | None = None
        self._rejections = RejectionLog()
        self._fingerprint = state.fingerprint(settings.state_shape())
        self._events = 0                 # messages applied, restored from a checkpoint
        self._saved_events = 0
        self._saved_at = clock()

    def start_http(self) -> int:
        """Serve /metrics, /healthz, /readyz; return the bound port."""
        m = self.settings.metrics
        self.server = MetricsServer(self.exporter, m).start()
        log.info("metrics_listening", extra={"fields": {
            "host": m.host, "port": self.server.port, "tls": m.tls_certfile is not None,
            "client_certs": m.tls_client_cafile is not None,
            "basic_auth": m.basic_auth_username is not None}})
        return self.server.port

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; close everything on the way out."""
        with ExitStack() as stack:
            if self.server is None:
                self.start_http()
            stack.callback(self._stop_http)
            self._restore()
            if not self._open(stop):
                return
            stack.callback(self.source.close)
            for sink in (self.sink, self.dead_letters):
                if sink is not None:
                    stack.callback(sink.close)
            stack.callback(self._mark_stopping)
            if self.store is not None:
                stack.callback(self.store.close)
                stack.callback(self._save)       # runs before the source closes
            self._loop(stop)

    def _stop_http(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _mark_stopping(self) -> None:
        self.status.stopping = True

    def _key(self) -> bytes:
        return self.settings.checkpoint.key.get_secret_value().encode()

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
            ckpt = state.unseal(raw, self._key(), self._fingerprint, str(store))
        except state.CheckpointError as exc:
            if cfg.on_invalid == "refuse":
                raise
            log.error("checkpoint_invalid", extra={"fields": {"error": str(exc),
                                                              "action": "starting fresh"}})
            return
        self.pipeline.restore(ckpt.state)
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
            payload = state.encode(self.pipeline.snapshot(), offsets, self._fingerprint,
                                   self._events)
        size = self.store.write(state.seal(self._key(), payload))
        self._saved_events, self._saved_at = self._events, self.clock()
        self.status.checkpoint_at = self._saved_at
        log.info("checkpoint_saved", extra={"fields": {
            "events": self._events, "bytes": size,
            "seconds": round(time.perf_counter() - started, 3)}})

    def _open(self, stop: threading.Event) -> bool:
        delay = 0.5
        while not stop.is_set():
            try:
                self.source.open()
                log.info("source_open", extra={"fields": {
                    "bootstrap": self.settings.kafka.bootstrap_servers,
                    "group": self.settings.kafka.group_id,
                    "topics": ",".join(self.settings.kafka.topics)}})
                return True
            except SourceUnavailable as exc:
                log.warning("source_unavailable", extra={"fields": {"error": str(exc),
                                                                    "retry_in_s": delay}})
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
        return False

    def _loop(self, stop: threading.Event) -> None:
        source, pipeline, status, clock = self.source, self.pipeline, self.status, self.clock
        next_health = 0.0
        while not stop.is_set():
            records = source.poll()
            now = clock()
            if records:
                started = time.perf_counter()
                with self.lock:
                    result = pipeline.process(records, now)
                self.exporter.observe_batch(time.perf_counter() - started)
                if self.sink is not None and result.detections:
                    self.sink.publish(drift_event(d, o) for d, o in
                                      zip(result.detections, result.origins, strict=True))
                if self.dead_letters is not None and result.dead:
                    self.dead_letters.publish(dead_letter(r, rec) for r, rec in result.dead)
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
                status.lag = source.lag()
                next_health = now + 1.0
        log.info("stopping", extra={"fields": {"events": sum(
            sum(m.events.values()) for m in pipeline.models.values())}})

    def _report(self, result: BatchResult, now: float) -> None:
        for d in result.detections:
            log_detection(d)
        self.status.detections.extend(result.detections)
        for r in result.rejections:
            self._rejections(r, now)
