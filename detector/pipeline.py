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
>>> p.models["m"].events, p.models["m"].join["matched"], p.rejected[("label", "invalid_json")]
({'prediction': 1, 'label': 1}, 1, 1)
"""

from __future__ import annotations

import json
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from detector.config import Settings
from detector.errors import ConfigError
from detector.estimation import profile_mismatch
from detector.events import (
    REASONS_BY_KIND,
    Kind,
    Label,
    Prediction,
    Rejection,
    Target,
    complete,
    decode,
    scan,
)
from detector.join import JoinBuffer
from detector.monitor import Detection, Engine, ModelMonitor
from detector.records import PartitionCounts, Record
from detector.reference import Profile
from detector.trace import BatchPositions

log = logging.getLogger(__name__)

#: outcomes of ``drift_label_join_total``: a pair, or why an entry left the join unmatched
JOIN_OUTCOMES = ("matched", "expired", "orphan", "prediction_evicted", "label_evicted")
KINDS: tuple[Kind, ...] = ("prediction", "label")


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

    __slots__ = ("name", "versions", "events", "join", "newest_event_time", "seq", "partition")

    def __init__(self, name: str, partition: int | None = None) -> None:
        self.name = name
        #: the source partition its events come from: its state is kept, and moves to
        #: another instance, with that partition's (None until its first event)
        self.partition = partition
        self.versions: OrderedDict[str, ModelMonitor] = OrderedDict()
        self.events = dict.fromkeys(KINDS, 0)
        self.join = dict.fromkeys(JOIN_OUTCOMES, 0)
        self.newest_event_time: float | None = None
        #: events of this model read so far, refused ones included (a clock for idleness)
        self.seq = 0


class Pipeline:
    """Monitor state of every model, updated batch by batch."""

    def __init__(self, settings: Settings, engine: Engine = "kernel",
                 tap: Callable[[ModelMonitor], None] | None = None) -> None:
        self.settings = settings
        #: ``"river"`` runs every detector through River's own objects (the reference)
        self.engine = engine
        #: an observer of each batch's values (``ModelMonitor.flush``): the report's recorder
        self.tap = tap
        self.models: dict[str, ModelState] = {}
        self.rejected: Counter[tuple[str, str]] = Counter(
            {(kind, reason): 0 for kind, reasons in REASONS_BY_KIND.items() for reason in reasons}
        )
        self.join = JoinBuffer(settings.join.ttl_seconds, settings.join.capacity)
        self.evicted_versions = 0
        #: ``rejected`` by the source partition of what was rejected (see ``take``)
        self.rejected_in = PartitionCounts(self.rejected)
        #: models whose events came from more than one partition (logged once each)
        self.spread: set[str] = set()
        self._partition = -1           # the source partition of the record being read
        self.profiles = load_profiles(settings)
        #: monitors with values queued in this batch (a dict: flushed in a fixed order)
        self._touched: dict[ModelMonitor, None] = {}
        #: the latest event time believed in this batch (``_future``)
        self._latest = 0.0
        for name in settings.models:
            self.models[name] = ModelState(name)

    def process(self, records: Iterable[Record], now: float) -> BatchResult:
        """Apply a batch. Bad records are counted and skipped; the rest is processed.

        Events are queued in their monitors as they are read, and every stream's values
        of the batch are fed to its detectors at the end, in one go per stream;
        detections are reported in the order of the records behind them."""
        result = BatchResult()
        s = self.settings
        max_bytes, max_features = s.max_event_bytes, s.max_features
        records = records if isinstance(records, list) else list(records)
        scanning, models = self.engine == "kernel", self.models
        self._latest = now + s.max_clock_skew_seconds
        for at, record in enumerate(records):
            self._partition = record.partition
            try:
                event = None
                if scanning:     # the River engine decodes everything: the reference
                    scanned = scan(record.value, record.kind, max_bytes)
                    if scanned is not None:
                        event = complete(scanned, max_features)
                if event is None:
                    event = decode(record.value, record.kind, max_bytes=max_bytes,
                                   max_features=max_features)
                if isinstance(event, Rejection):
                    self._reject(event, result, record)
                    continue
                state = models.get(event.model) or self._model(event.model)
                if state is None:
                    reason = "unknown_model" if not s.discovers_models else "model_cap"
                    self._reject(Rejection(record.kind, reason, f"model {event.model!r}"),
                                 result, record)
                    continue
                self._apply(state, record, event, now, result, at)
            except Exception as exc:  # the one guard of the loop: a bug costs one record
                log.exception("internal_error", extra={"fields": {
                    "kind": record.kind, "topic": record.topic, "partition": record.partition,
                    "offset": record.offset}})
                self._reject(Rejection(record.kind, "internal_error", repr(exc)[:200]), result,
                             record)
        if self._touched:
            detections: list[Detection] = []
            origins: list[int] = []
            positions = BatchPositions(records)
            for monitor in self._touched:
                owner = models.get(monitor.model)
                self._partition = -1 if owner is None or owner.partition is None \
                    else owner.partition
                monitor.flush(now, detections, origins, self.tap, positions)
                for rejection in monitor.take_invalid():
                    self._reject(rejection, result)
            self._touched.clear()
            order = sorted(range(len(origins)), key=origins.__getitem__)
            result.detections = [detections[i] for i in order]
            result.origins = [records[origins[i]] for i in order]
        self.expire(now)
        return result

    def _apply(self, state: ModelState, record: Record, event: Prediction | Label, now: float,
               result: BatchResult, at: int) -> None:
        when = event.timestamp
        if when is None:
            when = record.timestamp if record.timestamp is not None else now
        if when > self._latest:
            when = self._future(when, now, result)
        state.seq += 1
        if state.partition != record.partition:
            self._owner(state, record.partition)
        prediction = type(event) is Prediction
        if prediction:
            monitor = self._monitor(state, event.version, now)
            if monitor is None:
                self._reject(Rejection("prediction", "version_cap", self._version_cap(
                    state, event.version)), result, record)
                return
            for rejection in event.invalid:
                self._reject(rejection, result)
        if when is not None and (state.newest_event_time is None
                                 or when > state.newest_event_time):
            state.newest_event_time = when
        state.events[record.kind] += 1
        result.events += 1
        if prediction:
            self._prediction(state, monitor, event, record.partition, now, result, at)
        else:
            self._label(state, event, record.partition, now, result, at)

    def _future(self, when: float, now: float, result: BatchResult) -> None:
        """An event time (its timestamp, else the record's, else the service clock: the
        time of ``drift_last_event_timestamp_seconds``) more than
        ``max_clock_skew_seconds`` ahead of the clock is not believed (it would hide how
        far behind the events are): counted, and None."""
        self._reject(Rejection("timestamp", "future_timestamp",
                               f"{when - now:.0f} s ahead of the service clock"), result)

    def _owner(self, state: ModelState, partition: int) -> None:
        """The first event of a model makes its partition the owner of its state; events
        from another partition break the partitioning contract (README, "State"): they
        still count, in the owner's state, and the model is logged once."""
        if state.partition is None:
            state.partition = partition
        elif state.name not in self.spread:
            self.spread.add(state.name)
            log.warning("partition_contract_broken", extra={"fields": {
                "model": state.name, "partition": state.partition, "also_from": partition,
                "effect": "its state moves with the first partition only"}})

    def _reject(self, rejection: Rejection, result: BatchResult,
                record: Record | None = None) -> None:
        self.count_rejection(rejection.kind, rejection.reason, self._partition)
        result.rejections.append(rejection)
        if record is not None:
            result.dead.append((rejection, record))

    def count_rejection(self, kind: str, reason: str, partition: int) -> None:
        """Count one rejection of a message read from source ``partition``."""
        self.rejected_in.add((kind, reason), partition)

    def _model(self, name: str) -> ModelState | None:
        state = self.models.get(name)
        if state is None and self.settings.discovers_models and len(self.models) < self.settings.max_models:
            state = self.models[name] = ModelState(name, self._partition)
        return state

    def _monitor(self, state: ModelState, version: str, now: float) -> ModelMonitor | None:
        """The monitor of ``version``, created if new; None when it is refused.

        A model keeps at most ``max_versions``. A new one takes the place of a version
        that had a single event (not the current one), or of the least recently seen
        version once it has been idle for ``idle_events`` events of the model or
        ``version_idle_seconds`` of the service clock. Neither rule reads event
        timestamps, so a few messages with junk versions (or junk times) can never evict a
        live version; until a slot frees, the new version is refused."""
        versions = state.versions
        monitor = versions.get(version)
        if monitor is None:
            if len(versions) >= self.settings.max_versions and not self._make_room(state, now):
                return None
            profile = self.profiles.get((state.name, version)) or self.profiles.get(
                (state.name, None))
            monitor = ModelMonitor(state.name, version, self.settings, now=now,
                                   profile=profile, engine=self.engine)
            versions[version] = monitor
        else:
            versions.move_to_end(version)
        monitor.last_seen, monitor.last_seq = now, state.seq
        monitor.touches += 1
        self._touched[monitor] = None
        return monitor

    def _make_room(self, state: ModelState, now: float) -> bool:
        versions, s = state.versions, self.settings
        once = [(m.last_seq, v) for v, m in versions.items()
                if m.touches == 1 and m.last_seq < state.seq]
        if once:
            victim = min(once)[1]
        else:
            victim, oldest = next(iter(versions.items()))
            if (state.seq - oldest.last_seq <= s.idle_events
                    and now - oldest.last_seen < s.version_idle_seconds):
                return False
        del versions[victim]
        self.evicted_versions += 1
        return True

    def _version_cap(self, state: ModelState, version: str) -> str:
        return (f"model {state.name!r}: new version {version[:40]!r} refused, "
                f"{len(state.versions)} versions seen within version_idle_seconds")

    def _prediction(self, state: ModelState, monitor: ModelMonitor, event: Prediction,
                    partition: int, now: float, result: BatchResult, at: int) -> None:
        dropped = monitor.observe(event.features, event.prediction, event.score, at,
                                  event.checked, event.prediction_id)
        if dropped:
            self._reject(Rejection("feature", "feature_cap",
                                   f"model {state.name!r} has max_features features"), result)
        payload = (event.version, event.prediction, event.score)
        if event.label is not None:
            state.join["matched"] += 1
            self._score(state, payload, event.label, now, result, at, event.prediction_id)
            return
        pair = self.join.add_prediction(state.name, event.prediction_id, now, payload,
                                        partition)
        if pair is not None:
            state.join["matched"] += 1
            self._score(state, pair[0], pair[1], now, result, at, event.prediction_id)

    def _label(self, state: ModelState, event: Label, partition: int, now: float,
               result: BatchResult, at: int) -> None:
        pair = self.join.add_label(state.name, event.prediction_id, now, event.label,
                                   partition)
        if pair is not None:
            state.join["matched"] += 1
            self._score(state, pair[0], pair[1], now, result, at, event.prediction_id)

    def _score(self, state: ModelState, payload: tuple[str, Target, float | None],
               label: Target, now: float, result: BatchResult, at: int,
               prediction_id: str) -> None:
        version, prediction, score = payload
        # the pair's version may have made room for another since its prediction came
        monitor = state.versions.get(version) or self._monitor(state, version, now)
        if monitor is None:
            self._reject(Rejection("label", "version_cap", self._version_cap(state, version)),
                         result)
            return
        self._touched[monitor] = None
        refused = monitor.score(label, prediction, score, at, prediction_id)
        if refused is not None:
            detail = (f"model {state.name!r}: label {str(label)[:40]!r} and prediction "
                      f"{str(prediction)[:40]!r} cannot be compared" if refused == "label_type"
                      else f"model {state.name!r} already has max_classes classes")
            self._reject(Rejection("label", refused, detail), result)

    def expire(self, now: float) -> None:
        """Count join entries that waited longer than the TTL, and those replaced or
        evicted for capacity since the last call (also call it when idle)."""
        dropped = self.join.expire(now)
        for outcome, keys in zip(dropped._fields, dropped, strict=True):
            for model, _ in keys:
                self.models[model].join[outcome] += 1

    def snapshot(self) -> dict:
        """Everything a checkpoint must hold (the caller pickles it under the lock)."""
        return {"models": self.models, "rejected": self.rejected, "join": self.join,
                "evicted_versions": self.evicted_versions}

    def restore(self, state: dict) -> None:
        self.models = state["models"]
        self.rejected.clear()           # in place: ``rejected_in`` counts into it
        self.rejected.update(state["rejected"])
        self.join = state["join"]
        self.evicted_versions = state["evicted_versions"]
        for name in self.settings.models:
            self.models.setdefault(name, ModelState(name))

    def take(self, partition: int, remove: bool = False) -> dict:
        """The state of everything read from source ``partition`` (a checkpoint's part):
        the models it owns, its rejection counts and its entries waiting in the join;
        with ``remove``, they leave this pipeline (the partition moves elsewhere)."""
        models = {name: st for name, st in self.models.items() if st.partition == partition}
        out = {"models": models, "rejected": self.rejected_in.take(partition, remove),
               "join": self.join.take([partition], remove)}
        if remove:
            for name in models:
                del self.models[name]
                if name in self.settings.models:
                    self.models[name] = ModelState(name)
            self.spread -= models.keys()
        return out

    def put(self, partition: int, state: dict) -> None:
        """Take over the state of source ``partition`` (from ``take``, through a
        checkpoint). A model this pipeline already has events of keeps the state with
        more events (the partitioning contract was broken: logged)."""
        for name, st in state["models"].items():
            here = self.models.get(name)
            if here is not None and here.partition is not None:
                keep = sum(st.events.values()) > sum(here.events.values())
                log.warning("partition_state_conflict", extra={"fields": {
                    "model": name, "partition": partition, "kept": "restored" if keep
                    else "current", "current_partition": here.partition}})
                if not keep:
                    continue
            st.partition = partition
            self.models[name] = st
        self.rejected_in.put(partition, state["rejected"])
        self.join.put(state["join"])

    def monitors(self) -> Iterable[ModelMonitor]:
        for state in self.models.values():
            yield from state.versions.values()


def read_profile(path: str | Path, setting: str | None = None) -> Profile:
    """The profile in the JSON file ``path``; ``ConfigError`` (naming ``setting``, when
    the path came from one) if it cannot be read or is not a profile."""
    where = f"{setting}: " if setting else ""
    try:
        return Profile.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"{where}cannot read the profile {path}: {exc.strerror}") from None
    except ValueError as exc:  # JSON syntax or content
        raise ConfigError(f"{where}{path} is not a valid profile: {exc}") from None


def load_profiles(settings: Settings) -> dict[tuple[str, str | None], Profile]:
    """Profiles named in the settings, by (model, version or None for every version).

    Raises ``ConfigError`` naming the setting of a file that is missing or invalid.
    """
    out: dict[tuple[str, str | None], Profile] = {}
    for model, cfg in settings.models.items():
        wanted = [(f"models.{model}.profile", None, cfg.profile)] if cfg.profile else []
        wanted += [(f"models.{model}.profiles.{v}", v, p) for v, p in cfg.profiles.items()]
        for key, version, path in wanted:
            profile = read_profile(path, key)
            if problem := profile_mismatch(profile, cfg):
                raise ConfigError(f"{key}: {path}: {problem}")
            out[(model, version)] = profile
    return out
