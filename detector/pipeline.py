"""The pure part of the data flow: records in, monitor state and detections out.

``Pipeline.process`` decodes a batch, applies the model and feature caps, joins
labels to predictions and updates the monitors. It does no I/O and reads no
clock: the caller passes ``now``. Everything the metrics collector exports is
read from here.

>>> from detector.config import Settings
>>> p = Pipeline(Settings())
>>> batch = [Record("prediction", b'{"model": "m", "prediction_id": "1", '
...                 b'"features": {"x": 1.0}, "prediction": 1}', 0.0),
...          Record("label", b'{"model": "m", "prediction_id": "1", "label": 1}', 1.0),
...          Record("label", b'not json', 1.0)]
>>> result = p.process(batch, now=2.0)
>>> p.models["m"].events, p.models["m"].join, p.rejected[("label", "invalid_json")]
({'prediction': 1, 'label': 1}, {'matched': 1, 'expired': 0, 'orphan': 0}, 1)
"""

from __future__ import annotations

import json
import logging
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from detector.config import Settings
from detector.errors import ConfigError
from detector.events import (
    REJECT_REASONS,
    Kind,
    Label,
    Prediction,
    Rejection,
    Target,
    decode,
)
from detector.join import JoinBuffer
from detector.monitor import Detection, ModelMonitor, infer_task
from detector.reference import Profile

log = logging.getLogger(__name__)

JOIN_OUTCOMES = ("matched", "expired", "orphan")
KINDS: tuple[Kind, ...] = ("prediction", "label")


@dataclass(frozen=True, slots=True)
class Record:
    """One message from a source: its kind (by topic), raw value and the
    source's timestamp in epoch seconds (used when the event carries none)."""

    kind: Kind
    value: bytes | None
    timestamp: float | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1


@dataclass(slots=True)
class BatchResult:
    detections: list[Detection] = field(default_factory=list)
    #: the record that caused each detection, index for index
    origins: list[Record] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    #: whole messages rejected, with the message (for a dead-letter topic)
    dead: list[tuple[Rejection, Record]] = field(default_factory=list)
    events: int = 0


class ModelState:
    """Everything kept for one model: its versions' monitors and its counters."""

    __slots__ = ("name", "versions", "events", "join", "newest_event_time")

    def __init__(self, name: str) -> None:
        self.name = name
        self.versions: OrderedDict[str, ModelMonitor] = OrderedDict()
        self.events = dict.fromkeys(KINDS, 0)
        self.join = dict.fromkeys(JOIN_OUTCOMES, 0)
        self.newest_event_time: float | None = None


class Pipeline:
    """Monitor state of every model, updated batch by batch."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, ModelState] = {}
        self.rejected: Counter[tuple[str, str]] = Counter(
            {(kind, reason): 0 for kind in (*KINDS, "feature") for reason in REJECT_REASONS}
        )
        self.join = JoinBuffer(settings.join.ttl_seconds, settings.join.capacity)
        self.evicted_versions = 0
        self.profiles = load_profiles(settings)
        self._touched: set[ModelMonitor] = set()
        for name in settings.models:
            self.models[name] = ModelState(name)

    def process(self, records: Iterable[Record], now: float) -> BatchResult:
        """Apply a batch. Bad records are counted and skipped; the rest is processed."""
        result = BatchResult()
        s = self.settings
        max_bytes, max_features = s.max_event_bytes, s.max_features
        for record in records:
            event = decode(record.value, record.kind, max_bytes=max_bytes,
                           max_features=max_features)
            if isinstance(event, Rejection):
                self._reject(event, result, record)
                continue
            state = self._model(event.model)
            if state is None:
                reason = "unknown_model" if not s.discovers_models else "model_cap"
                self._reject(Rejection(record.kind, reason, f"model {event.model!r}"), result,
                             record)
                continue
            before = len(result.detections)
            try:
                self._apply(state, record, event, now, result)
            except Exception as exc:  # the one guard of the loop: a bug costs one record
                log.exception("internal_error", extra={"fields": {"model": event.model}})
                self._reject(Rejection(record.kind, "internal_error", repr(exc)[:200]), result,
                             record)
            result.origins.extend([record] * (len(result.detections) - before))
        if self._touched:
            before = len(result.detections)
            for monitor in self._touched:
                monitor.flush(now, result.detections)
            self._touched.clear()
            result.origins.extend([record] * (len(result.detections) - before))
        self.expire(now)
        return result

    def _apply(self, state: ModelState, record: Record, event: Prediction | Label, now: float,
               result: BatchResult) -> None:
        when = event.timestamp if event.timestamp is not None else (
            record.timestamp if record.timestamp is not None else now)
        if state.newest_event_time is None or when > state.newest_event_time:
            state.newest_event_time = when
        state.events[record.kind] += 1
        result.events += 1
        if isinstance(event, Prediction):
            self._prediction(state, event, now, result)
        else:
            self._label(state, event, now, result)

    def _reject(self, rejection: Rejection, result: BatchResult,
                record: Record | None = None) -> None:
        self.rejected[(rejection.kind, rejection.reason)] += 1
        result.rejections.append(rejection)
        if record is not None:
            result.dead.append((rejection, record))

    def _model(self, name: str) -> ModelState | None:
        state = self.models.get(name)
        if state is None and self.settings.discovers_models and len(self.models) < self.settings.max_models:
            state = self.models[name] = ModelState(name)
        return state

    def _monitor(self, state: ModelState, version: str, prediction: Target,
                 score: float | None, now: float) -> ModelMonitor:
        monitor = state.versions.get(version)
        if monitor is None:
            profile = self.profiles.get((state.name, version)) or self.profiles.get(
                (state.name, None))
            monitor = ModelMonitor(state.name, version, self.settings, now=now,
                                   task=infer_task(prediction, score), profile=profile)
            state.versions[version] = monitor
            if len(state.versions) > self.settings.max_versions:
                state.versions.popitem(last=False)
                self.evicted_versions += 1
        else:
            state.versions.move_to_end(version)
        self._touched.add(monitor)
        return monitor

    def _prediction(self, state: ModelState, event: Prediction, now: float,
                    result: BatchResult) -> None:
        monitor = self._monitor(state, event.version, event.prediction, event.score, now)
        dropped = monitor.observe(event.features, event.prediction, event.score, now,
                                  result.detections)
        if dropped:
            self._reject(Rejection("feature", "feature_cap",
                                   f"model {state.name!r} has max_features features"), result)
        payload = (event.version, event.prediction, event.score)
        if event.label is not None:
            state.join["matched"] += 1
            self._score(state, payload, event.label, now, result)
            return
        pair = self.join.add_prediction(state.name, event.prediction_id, now, payload)
        if pair is not None:
            state.join["matched"] += 1
            self._score(state, pair[0], pair[1], now, result)

    def _label(self, state: ModelState, event: Label, now: float,
               result: BatchResult) -> None:
        pair = self.join.add_label(state.name, event.prediction_id, now, event.label)
        if pair is not None:
            state.join["matched"] += 1
            self._score(state, pair[0], pair[1], now, result)

    def _score(self, state: ModelState, payload: tuple[str, Target, float | None],
               label: Target, now: float, result: BatchResult) -> None:
        version, prediction, score = payload
        monitor = self._monitor(state, version, prediction, score, now)
        if not monitor.score(label, prediction, score, now, result.detections):
            self._reject(Rejection("label", "label_type",
                                   f"model {state.name!r}: regression needs numeric labels"),
                         result)

    def expire(self, now: float) -> None:
        """Count join entries that waited longer than the TTL (also call it when idle)."""
        expired, orphans = self.join.expire(now)
        for model, _ in expired:
            self.models[model].join["expired"] += 1
        for model, _ in orphans:
            self.models[model].join["orphan"] += 1

    def snapshot(self) -> dict:
        """Everything a checkpoint must hold (the caller pickles it under the lock)."""
        return {"models": self.models, "rejected": self.rejected, "join": self.join,
                "evicted_versions": self.evicted_versions}

    def restore(self, state: dict) -> None:
        self.models = state["models"]
        self.rejected = state["rejected"]
        self.join = state["join"]
        self.evicted_versions = state["evicted_versions"]
        for name in self.settings.models:
            self.models.setdefault(name, ModelState(name))

    def monitors(self) -> Iterable[ModelMonitor]:
        for state in self.models.values():
            yield from state.versions.values()


def load_profiles(settings: Settings) -> dict[tuple[str, str | None], Profile]:
    """Profiles named in the settings, by (model, version or None for every version).

    Raises ``ConfigError`` naming the setting of a file that is missing or invalid.
    """
    out: dict[tuple[str, str | None], Profile] = {}
    for model, cfg in settings.models.items():
        wanted = [(f"models.{model}.profile", None, cfg.profile)] if cfg.profile else []
        wanted += [(f"models.{model}.profiles.{v}", v, p) for v, p in cfg.profiles.items()]
        for key, version, path in wanted:
            try:
                profile = Profile.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
            except OSError as exc:
                raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
            except ValueError as exc:  # JSON syntax or content
                raise ConfigError(f"{key}: {path} is not a valid profile: {exc}") from None
            out[(model, version)] = profile
    return out
