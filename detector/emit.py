"""A small producer of our events for model servers that log nothing themselves
(BentoML, Ray Serve, MLflow, FastAPI): ``Emitter.log_prediction`` and
``Emitter.log_label`` write the JSON events of the README ("Events") to the
predictions and labels topics, keyed by model (the partitioning contract: a model's
predictions and labels share a partition, and its state moves with it).

They never block and never raise into the serving path. A call only encodes the event
(a few microseconds) and puts it on a bounded in-memory queue; a background thread
hands the queue to a kafka-python producer, which batches (``linger_ms``). What cannot
be sent is dropped and counted (``stats``), and logged as ``emit_dropped`` at most
once per reason every 10 s:

- ``queue_full``: the queue holds ``max_queue`` events (Kafka slower than the model,
  or down);
- ``unavailable``: Kafka did not take the event within ``drop_after_s`` of the call
  (no broker answers, the topic is missing, every retry failed);
- ``invalid``: the event cannot be encoded (an object JSON cannot hold, a non-finite
  prediction or score); a non-finite feature value (NaN from pandas) is sent as
  ``null``, a missing value;
- ``closed``: logged after ``close``, or still queued when its timeout ran out.

``flush`` waits for what was logged so far, ``close`` flushes and stops (call it at
shutdown). The module imports only the standard library and kafka-python: no part of
the service (River, numba, pydantic) is loaded into the model server; it is the one
module besides ``sources`` that imports ``kafka``, for that reason.

Usage (``close`` at shutdown sends what is still queued)::

    emitter = Emitter("kafka:9092")
    emitter.log_prediction("fraud", request_id, {"amount": 12.5, "country": "DE"}, 1,
                           score=0.87, model_version="3")
    emitter.log_label("fraud", request_id, 0)
    emitter.close()
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, get_args

from kafka import KafkaProducer
from kafka.errors import KafkaError

from detector.logs import ThrottledLog

log = logging.getLogger(__name__)

DropReason = Literal["queue_full", "unavailable", "invalid", "closed"]
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)


class _Item(NamedTuple):
    topic: str
    key: bytes
    value: bytes
    at: float        # time.monotonic() of the call


def _finite(value: Any) -> Any:
    """A feature value as JSON takes it: numpy scalars as Python numbers, NaN and
    infinities as None (missing).

    >>> [_finite(v) for v in (1.5, float("nan"), "DE", None, True)]
    [1.5, None, 'DE', None, True]
    """
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plain(value: Any) -> Any:
    """``json.dumps``' fallback: numpy scalars and arrays as Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Emitter:
    """Sends prediction and label events to Kafka from a background thread.

    Parameters
    ----------
    bootstrap_servers
        ``host:port[,host:port...]`` of the Kafka cluster.
    predictions_topic, labels_topic
        Where the events go (the service's ``kafka.predictions_topic`` and
        ``kafka.labels_topic``).
    max_queue
        Events waiting at most; more are dropped (``queue_full``).
    linger_ms
        How long the producer waits to fill a batch.
    drop_after_s
        An event Kafka has not taken this long after the call is dropped
        (``unavailable``).
    **producer_options
        More kafka-python ``KafkaProducer`` options: ``security_protocol``,
        ``sasl_mechanism``, ``ssl_cafile``, ``compression_type``, ...
    """

    def __init__(self, bootstrap_servers: str, *, predictions_topic: str = "predictions",
                 labels_topic: str = "labels", max_queue: int = 10_000, linger_ms: int = 50,
                 drop_after_s: float = 30.0, **producer_options: Any) -> None:
        self.predictions_topic, self.labels_topic = predictions_topic, labels_topic
        self.drop_after_s = drop_after_s
        self._options = {
            "bootstrap_servers": [s.strip() for s in bootstrap_servers.split(",") if s.strip()],
            "client_id": "drift-detector-emitter", "acks": "all", "linger_ms": linger_ms,
            # every wait of the producer ends within drop_after_s
            "bootstrap_timeout_ms": int(min(drop_after_s, 10.0) * 1000),
            "max_block_ms": int(min(drop_after_s, 1.0) * 1000),
            "delivery_timeout_ms": int(drop_after_s * 1000),
            "request_timeout_ms": int(min(drop_after_s / 2, 30.0) * 1000),
            **producer_options}
        self.max_queue = max_queue
        #: events waiting for the background thread, oldest first
        self._queue: deque[_Item] = deque()
        self._counts = dict.fromkeys(("queued", "sent", *DROP_REASONS), 0)
        #: events queued and not yet sent or dropped; ``flush`` waits for 0
        self._pending = 0
        #: guards the queue and the counts; notified when either changes
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._closed = False
        self._log = ThrottledLog(log)
        self._producer: KafkaProducer | None = None
        self._thread = threading.Thread(target=self._run, name="drift-emitter", daemon=True)
        self._thread.start()

    def log_prediction(self, model: str, prediction_id: str | int, features: Mapping[str, Any],
                       prediction: Any, *, score: float | None = None,
                       model_version: str | int | None = None, label: Any = None,
                       timestamp: float | None = None) -> bool:
        """Queue one prediction event; False if it was dropped (and counted).

        ``timestamp`` (epoch seconds) defaults to now; ``label`` is for a truth known
        at once. Features: numbers are numeric, strings categorical, None missing.
        """
        try:
            event: dict[str, Any] = {
                "model": model, "prediction_id": prediction_id,
                "timestamp": time.time() if timestamp is None else timestamp,
                "features": {str(k): _finite(v) for k, v in features.items()},
                "prediction": _finite(prediction)}
            if model_version is not None:
                event["model_version"] = model_version
            if score is not None:
                event["score"] = _finite(score)
            if label is not None:
                event["label"] = _finite(label)
            if event["prediction"] is None or ("score" in event and event["score"] is None):
                raise ValueError("the prediction and the score must be finite")
            value = json.dumps(event, default=_plain, allow_nan=False).encode()
        except (TypeError, ValueError, AttributeError, RecursionError) as exc:
            return self._drop("invalid", 1, repr(exc)[:200])
        return self._put(self.predictions_topic, model, value)

    def log_label(self, model: str, prediction_id: str | int, label: Any, *,
                  timestamp: float | None = None) -> bool:
        """Queue one label event (the truth for an earlier prediction); False if it was
        dropped (and counted)."""
        try:
            event = {"model": model, "prediction_id": prediction_id, "label": _finite(label),
                     "timestamp": time.time() if timestamp is None else timestamp}
            if event["label"] is None:
                raise ValueError("the label must be finite")
            value = json.dumps(event, default=_plain, allow_nan=False).encode()
        except (TypeError, ValueError, AttributeError, RecursionError) as exc:
            return self._drop("invalid", 1, repr(exc)[:200])
        return self._put(self.labels_topic, model, value)

    def stats(self) -> dict[str, int]:
        """Events ``queued`` (accepted by a call), ``sent`` (acknowledged by Kafka), and
        dropped by reason (``DROP_REASONS``) since the start."""
        with self._changed:
            return dict(self._counts)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every event logged so far is sent or dropped; False if some are
        still pending after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._changed.wait_for(lambda: not self._queue, timeout)
        producer = self._producer
        if producer is not None:
            try:
                producer.flush(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError:      # not everything acknowledged in time: counted below
                pass
        with self._changed:
            return self._changed.wait_for(lambda: self._pending == 0,
                                          max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = 30.0) -> bool:
        """Send what is queued (for at most ``timeout`` seconds), then stop; what is left
        is dropped as ``closed``. False if anything was dropped that way."""
        deadline = time.monotonic() + timeout
        with self._changed:
            if self._closed:
                return True
            self._closed = True
        self.flush(timeout)     # while no broker answers, until the queue expires
        self._closing.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError as exc:
                log.warning("emit_close_failed", extra={"fields": {"error": repr(exc)[:300]}})
        with self._changed:
            left, self._pending = self._pending, 0
        self._drop("closed", left, "still queued when close() ended")
        return not left

    def _put(self, topic: str, key: str | int, value: bytes) -> bool:
        item = _Item(topic, str(key).encode(), value, time.monotonic())
        with self._changed:
            if self._closed:
                reason: DropReason | None = "closed"
            elif len(self._queue) >= self.max_queue:
                reason = "queue_full"
            else:
                reason = None
                self._queue.append(item)
                self._counts["queued"] += 1
                self._pending += 1
                self._changed.notify_all()
        if reason is None:
            return True
        return self._drop(reason, 1, "logged after close()" if reason == "closed"
                          else f"{self.max_queue} events waiting")

    def _drop(self, reason: DropReason, n: int, detail: str) -> Literal[False]:
        if n:
            with self._changed:
                self._counts[reason] += n
            self._log.emit(logging.WARNING, "emit_dropped", reason,
                           {"reason": reason, "events": n, "detail": detail})
        return False

    def _done(self, sent: bool, n: int = 1, detail: str = "") -> None:
        """``n`` queued events are sent or dropped as ``unavailable``."""
        with self._changed:
            self._pending -= n
            if sent:
                self._counts["sent"] += n
            self._changed.notify_all()
        if not sent:
            self._drop("unavailable", n, detail)

    def _run(self) -> None:
        """The background thread: connect (again and again while no broker answers,
        dropping what waited longer than ``drop_after_s``), then send what is queued."""
        delay = 0.5
        while not self._closing.is_set():
            if self._producer is None:
                try:
                    producer = KafkaProducer(**self._options)
                except KafkaError as exc:
                    self._expire(repr(exc)[:200])
                    self._closing.wait(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if self._closing.is_set():   # close() gave up waiting for this thread
                    producer.close(timeout=0)
                    break
                self._producer, delay = producer, 0.5
            with self._changed:
                if not self._changed.wait_for(lambda: self._queue, timeout=0.1):
                    continue
                items = list(self._queue)
                self._queue.clear()
                self._changed.notify_all()      # flush waits for an empty queue
            for item in items:
                self._send(self._producer, item)

    def _send(self, producer: KafkaProducer, item: _Item) -> None:
        if time.monotonic() - item.at > self.drop_after_s:
            self._done(False, 1, f"waited more than {self.drop_after_s:g} s")
            return
        try:
            future = producer.send(item.topic, key=item.key, value=item.value)
        except KafkaError as exc:   # no metadata in max_block_ms, the buffer full
            self._done(False, 1, repr(exc)[:200])
            return
        future.add_callback(lambda _: self._done(True))
        future.add_errback(lambda exc: self._done(False, 1, repr(exc)[:200]))

    def _expire(self, error: str) -> None:
        """Drop the queued events that waited longer than ``drop_after_s`` (while no
        broker answers); the queue is in call order."""
        cutoff = time.monotonic() - self.drop_after_s
        expired = 0
        with self._changed:
            while self._queue and self._queue[0].at <= cutoff:
                self._queue.popleft()
                expired += 1
        if expired:
            self._done(False, expired, f"no broker answers: {error}")
