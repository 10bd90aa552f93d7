"""Monitors of one model version: features, predictions and performance.

Every value stream (a numeric feature, the prediction score, the error of
joined pairs) feeds the configured detectors in arrival order; a detection
records the 0-based index of the value that fired it, which is the index River
reports offline on the same sequence. Events are queued one by one (``observe``,
``score``) and each stream's column is fed once per batch (``flush``), through a
compiled kernel when its detectors have one.

>>> import random
>>> from detector.config import Settings
>>> rng = random.Random(7)
>>> m = ModelMonitor("fraud", "3", Settings(), now=0.0)
>>> for i in range(3000):
...     x = rng.gauss(0.0 if i < 2000 else 3.0, 1.0)
...     _ = m.observe({"amount": x}, prediction=0, score=None, at=i)
>>> found, origins = [], []
>>> m.flush(now=1.0, out=found, origins=origins)
>>> [(d.feature, d.detector, d.index, at) for d, at in zip(found, origins) if d.index >= 2000][:1]
[('amount', 'cusum', 2010, 2010)]
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import chain
from operator import itemgetter
from typing import Literal, NamedTuple

import numpy as np

from detector import detectors
from detector.config import DetectorSpec, ModelSettings, ReferenceSettings, Settings
from detector.data_quality import VersionQuality
from detector.detectors import Standardizer
from detector.estimation import Estimator
from detector.events import (
    MAX_MAGNITUDE,
    MAX_NAME_LENGTH,
    FeatureValue,
    Rejection,
    Target,
    check_features,
    feature_value,
)
from detector.kernels import standardize, windows
from detector.kernels import stream as stream_kernel
from detector.performance import Performance, infer_task, reconcile
from detector.reference import (
    OTHER,
    CategoricalReference,
    NumericReference,
    Profile,
    Reference,
    effective_fraction,
)
from detector.trace import BatchPositions, EventTrail, StreamTrail, Trace

Signal = Literal["feature", "prediction", "error", "label"]


@dataclass(frozen=True, slots=True)
class Detection:
    """One detector firing. ``index`` counts values of that stream from 0 (the value
    that fired); ``onset`` is the estimated start of the change in the same units;
    ``statistic`` is the detector's public state when it fired."""

    model: str
    version: str
    signal: Signal
    feature: str
    detector: str
    index: int
    value: float
    at: float
    statistic: dict[str, float]
    #: the stream index where the detector estimates the change began (CUSUM: the last
    #: zero of the sum that crossed; ADWIN: its cut; ``index`` when it gives none)
    onset: int | None = None
    #: the category of a categorical feature's share stream ("" for other streams)
    category: str = ""
    #: "up" or "down": the way the standardised values moved ("" on raw values, and for
    #: a reference window's distance)
    direction: str = ""
    #: the events of the version where it fired and where it began (``ModelMonitor.flush``)
    trace: Trace | None = None


class Channel:
    """One River detector on one stream (the per-value engine). Firings within
    ``cooldown`` values of the previous firing continue its episode; ``detections``
    counts episodes."""

    __slots__ = ("name", "detector", "scaled", "detections", "firings", "last_at",
                 "last_index", "last_direction", "announced")

    def __init__(self, spec: DetectorSpec) -> None:
        self.name = spec.name
        self.detector = detectors.build(spec.type, spec.params)
        #: binary detectors (DDM, ...) and jump take the raw values, the others z-scores
        self.scaled = not detectors.takes_raw(spec.type)
        self.detections = 0
        self.firings = 0
        self.last_at = float("-inf")
        self.last_index = -(1 << 62)
        self.last_direction = 0
        #: False until a scrape has shown this channel's counter (at 0, see metrics.py)
        self.announced = False


class KernelChannel:
    """One detector of a stream run by the compiled kernel: what the exposition reads
    of a ``Channel``, the counters from the stream's state (``StreamState.counters``)."""

    __slots__ = ("name", "_counters", "_row", "last_at", "announced")

    def __init__(self, name: str, counters: np.ndarray, row: int) -> None:
        self.name = name
        self._counters, self._row = counters, row
        self.last_at = float("-inf")
        self.announced = False

    @property
    def firings(self) -> int:
        return int(self._counters[self._row, 0])

    @property
    def detections(self) -> int:
        return int(self._counters[self._row, 1])


Engine = Literal["kernel", "river"]
#: ``Detection.direction`` by the sign of a firing
_DIRECTION = {1: "up", -1: "down"}


class Stream:
    """A sequence of real values (one feature, the prediction, the error) and its detectors.

    Values are pushed as they arrive (``pending``) and fed to the detectors a batch at a
    time by ``flush``. When every detector has a compiled kernel (ADWIN, CUSUM,
    Page-Hinkley) the whole column runs in one compiled loop (``detector.kernels.stream``);
    otherwise (KSWIN, the binary detectors, or ``engine="river"``) each value goes
    through River's own objects, the reference the kernels are proven equal to. Both
    engines give the same detections.

    >>> from detector.config import DetectorSpec
    >>> s = Stream("m", "1", "feature", "x", (DetectorSpec(type="adwin"),))
    >>> s.pending.extend([0.0] * 1000 + [5.0] * 100)
    >>> out = []
    >>> s.flush(0.0, out), [(d.detector, d.index) for d in out]
    ([1023], [('adwin', 1023)])
    """

    __slots__ = ("model", "version", "signal", "feature", "category", "channels", "seen",
                 "missing", "categorical", "ref", "std", "cooldown", "first", "last",
                 "pending", "column", "kernel")

    def __init__(self, model: str, version: str, signal: Signal, feature: str,
                 specs: tuple[DetectorSpec, ...], std: Standardizer | None = None,
                 cooldown: int = 0, category: str = "", engine: Engine = "kernel") -> None:
        self.model = model
        self.version = version
        self.signal = signal
        self.feature = feature
        #: for the 0/1 share stream of one category of a categorical feature
        self.category = category
        self.std = std
        self.cooldown = cooldown
        self.seen = 0
        self.missing = 0
        self.categorical = 0
        #: the version's prediction count when this feature first and last arrived
        self.first = self.last = 0
        #: values pushed since the last flush (strings too, for a feature: see flush_raw)
        self.pending: list[float | str] = []
        #: numbers queued as one array (``extend``) while nothing else is queued
        self.column: np.ndarray | None = None
        #: the comparison of this stream with its reference, if enabled
        self.ref: ReferenceStream | None = None
        self.kernel: stream_kernel.StreamState | None = None
        if engine == "kernel" and specs and all(s.type in stream_kernel.KINDS for s in specs):
            kstd = None if std is None else standardize.from_reference(std)
            self.kernel = stream_kernel.new_state([(s.type, s.params) for s in specs], kstd,
                                                  cooldown)
            self.channels: list[Channel] | list[KernelChannel] = [
                KernelChannel(s.name, self.kernel.counters, c) for c, s in enumerate(specs)]
        else:
            self.channels = [Channel(s) for s in specs]

    def update(self, value: float, now: float, out: list[Detection]) -> None:
        """Feed one value at once (``pending`` and ``flush`` feed many)."""
        self.pending.append(value)
        self.flush(now, out)

    def flush(self, now: float, out: list[Detection],
              column: np.ndarray | None = None) -> list[int]:
        """Feed the pending values (finite numbers; ``column``: the same as an array, if
        the caller has it, or the values themselves when none are pending) to every
        detector, standardised if enabled; append a ``Detection`` to ``out`` for each
        firing that starts an episode, and return the position in the values of each."""
        values, self.pending = self.pending, []
        if not values:
            if column is None or not column.size:
                return []
            values = column
        if self.kernel is None:
            return self._flush_river(values if isinstance(values, list) else values.tolist(),
                                     now, out)
        self.seen += len(values)
        if column is None:
            column = np.array(values, dtype=np.float64)
        fired = stream_kernel.update_many(self.kernel, column)
        if not fired.index.size:
            return []
        for c in set(fired.channel.tolist()):
            self.channels[c].last_at = now
        positions = []
        for j in np.flatnonzero(fired.episode).tolist():
            c, p = int(fired.channel[j]), int(fired.position[j])
            names = stream_kernel.statistic_names(self.kernel, c)
            out.append(Detection(self.model, self.version, self.signal, self.feature,
                                 self.channels[c].name, int(fired.index[j]), float(values[p]),
                                 now,
                                 dict(zip(names, fired.statistics[j].tolist())),
                                 int(fired.onset[j]), self.category,
                                 _DIRECTION[int(fired.direction[j])] if self.std else ""))
            positions.append(p)
        return positions

    def _flush_river(self, values: list[float], now: float, out: list[Detection]) -> list[int]:
        positions = []
        for p, value in enumerate(values):
            index = self.seen
            self.seen = index + 1
            z = value if self.std is None else self.std.transform(value)
            if self.std is not None and self.std.settled:
                self._reset_channels()
            fired = False
            shift: float | None = None
            for ch in self.channels:
                if ch.scaled:
                    if z is None:
                        continue
                    x = z
                else:
                    x = value
                det = ch.detector
                det.update(x)
                if det.drift_detected:
                    jumped = isinstance(det, detectors.Jump)
                    if jumped:
                        shift = det.shift
                    else:
                        fired = True
                    ch.firings += 1
                    ch.last_at = now
                    way = detectors.direction(det)
                    near = index - ch.last_index <= self.cooldown
                    # a jump needs a fresh window after the last: always a new step
                    episode = jumped or (not (near and way == ch.last_direction)
                                         if self.std is not None else not near)
                    if episode:
                        ch.detections += 1
                        age = detectors.onset_age(det)
                        out.append(Detection(self.model, self.version, self.signal,
                                             self.feature, ch.name, index, value, now,
                                             detectors.statistic(det),
                                             index - age + 1 if age else index, self.category,
                                             _DIRECTION[way] if self.std is not None else ""))
                        positions.append(p)
                    ch.last_index = index
                    ch.last_direction = way
            if self.std is not None and (fired or shift is not None):
                # the new regime becomes the baseline (after a jump alone: the old one
                # moved by the jump), and every detector of z-scores starts on it
                if fired:
                    self.std.restart()
                else:
                    self.std.relevel(shift)
                self._reset_channels()
        return positions

    def _reset_channels(self) -> None:
        for ch in self.channels:
            if ch.scaled:
                ch.detector._reset()

    def extend(self, column: np.ndarray) -> None:
        """Queue finite numbers, as an array while nothing else is queued (a spread
        column goes to the kernels and the reference windows without a list between)."""
        if self.column is None and not self.pending:
            self.column = column
            return
        self._unpack()
        self.pending.extend(column.tolist())

    def _unpack(self) -> None:
        if self.column is not None:
            self.pending, self.column = self.column.tolist(), None

    def queued(self) -> int:
        """Values queued for the next ``flush_raw``."""
        return len(self.pending) + (0 if self.column is None else self.column.size)

    def queued_values(self) -> list[float | str] | np.ndarray:
        """The values queued for the next ``flush_raw``, in order (an array when they
        came as one column)."""
        return self.pending if self.column is None else self.column

    def push(self, value: FeatureValue) -> None:
        """Queue a raw value: a number for the detectors, a string (a category) for the
        reference comparison only, ``None`` counted as missing."""
        if self.column is not None:
            self._unpack()
        if value is None:
            self.missing += 1
            return
        if type(value) is not float:
            self.categorical += 1
        self.pending.append(value)

    def flush_raw(self, now: float, out: list[Detection]) -> list[int]:
        """``flush`` for values queued by ``push`` (strings among them): the numbers go to
        the detectors, all of them to the reference comparison. Positions are in the
        queued values."""
        column, self.column = self.column, None
        if column is not None:      # extended by a column, nothing pushed since
            positions = self.flush(now, out, column)
            if self.ref is not None:
                positions += self.ref.flush(column, now, out, column)
            return positions
        values = self.pending
        if not values:
            return []
        if self.categorical and not all(type(v) is float for v in values):
            where = [p for p, v in enumerate(values) if type(v) is float]
            self.pending = [values[p] for p in where]
            positions = [where[p] for p in self.flush(now, out)]
            column = None
        else:   # numbers only: one array for the detectors and the reference windows
            column = np.array(values, dtype=np.float64)
            positions = self.flush(now, out, column)
        if self.ref is not None:
            positions += self.ref.flush(values, now, out, column)
        return positions


class DistanceChannel:
    """One distance method on one reference stream: latest value and threshold crossings.
    Exported like a detector channel (``detector`` = the method's name). A crossing is an
    episode; the channel re-arms only when the distance is clearly back (below 0.8 x the
    threshold; for chi2 a p-value above 100 x it), so a distance hovering at the
    threshold does not raise an alarm storm."""

    __slots__ = ("name", "threshold", "value", "above", "detections", "last_at", "announced")

    def __init__(self, name: str, threshold: float) -> None:
        self.name = name
        self.threshold = threshold
        self.value: float | None = None
        self.above = False
        self.detections = 0      # one per crossing: a crossing is an episode
        self.last_at = float("-inf")
        self.announced = False

    @property
    def firings(self) -> int:
        return self.detections

    def alarming(self, value: float) -> bool:
        return value < self.threshold if self.name == "chi2" else value > self.threshold

    def calm(self, value: float) -> bool:
        if self.name == "chi2":
            return value > min(1.0, self.threshold * 100)
        return value < self.threshold * 0.8

    def quiet(self, values: np.ndarray) -> bool:
        """Whether the channel is not in an episode and none of ``values`` starts one."""
        if self.above:
            return False
        return not np.any(values < self.threshold if self.name == "chi2"
                          else values > self.threshold)


class ReferenceStream:
    """Windows of one stream compared with its reference.

    The values of a batch are evaluated together (``flush``): a numeric stream's windows
    by the compiled ``kernels.windows`` (the ``kernel`` engine) or by the reference's own
    numpy code (``river``), the same to the last bit; categorical ones by numpy. Without
    a given reference, the first ``warmup`` values become it. After
    that, at every ``evaluate_every``-th value the last ``window`` values are compared
    with the reference; a method whose distance crosses its threshold counts one
    detection, and it re-arms when the distance is back on the safe side.
    """

    __slots__ = ("model", "version", "signal", "feature", "reference", "cfg", "channels",
                 "warm", "warmup_used", "history", "seen", "shares", "fraction",
                 "_share_specs", "_index", "_make", "_compiled")

    def __init__(self, model: str, version: str, signal: Signal, feature: str,
                 cfg: ReferenceSettings, reference: Reference | None,
                 share_specs: tuple[DetectorSpec, ...], make_stream,
                 engine: Engine = "kernel") -> None:
        self.model, self.version, self.signal, self.feature = model, version, signal, feature
        self._compiled = engine == "kernel"
        self.cfg = cfg
        self.reference: Reference | None = None
        self.channels: list[DistanceChannel] = []
        self.warm: list[float | str] = []
        self.warmup_used = 0
        self.history: np.ndarray = np.empty(0)
        self.seen = 0              # values compared since the reference was set
        #: effective sample size / window (``reference.effective_fraction`` of the first
        #: window compared), None before it
        self.fraction: float | None = None
        self.shares: list[Stream] = []
        self._share_specs = share_specs
        self._make = make_stream
        self._index: dict[str, int] = {}
        if reference is not None:
            self._set(reference)

    def _set(self, reference: Reference) -> None:
        self.reference = reference
        t = self.cfg.thresholds
        methods = (self.cfg.numeric_methods if isinstance(reference, NumericReference)
                   else self.cfg.categorical_methods)
        self.channels = [DistanceChannel(m, getattr(t, m)) for m in methods]
        if isinstance(reference, CategoricalReference):
            self._index = reference.index()
            if self.signal == "feature" and self._share_specs:
                names = [*reference.categories[: self.cfg.share_streams], OTHER]
                self.shares = [self._make("feature", self.feature, self._share_specs, None, c)
                               for c in names]

    def flush(self, values: list[float | str], now: float, out: list[Detection],
              column: np.ndarray | None = None) -> list[int]:
        """Compare one batch of the stream's values (in arrival order; ``column``: the
        same as an array, when all of them are numbers) with the reference; feed a categorical feature's share
        streams. Returns, for each ``Detection`` appended to ``out``, the position in
        ``values`` of the value behind it (for a distance, the batch's last value)."""
        offset = 0
        if self.reference is None:
            need = self.cfg.warmup - len(self.warm)
            head = values[:need]
            self.warm.extend(head.tolist() if isinstance(head, np.ndarray) else head)
            offset, values = need, values[need:]
            if len(self.warm) < self.cfg.warmup:
                return []
            self._learn()
            if self.reference is None:
                return []
        positions: list[int] = []
        # values of the other kind (a string in a numeric stream) are left out
        if isinstance(self.reference, NumericReference):
            new = column[offset:] if column is not None else np.array(
                [v for v in values if not isinstance(v, str)], dtype=np.float64)
        else:
            kept = [p for p, v in enumerate(values) if isinstance(v, str)]
            other = len(self._index)
            new = np.fromiter((self._index.get(values[p], other) for p in kept),
                              dtype=np.int64, count=len(kept))
            positions = [offset + kept[p] for p in self._update_shares(new, now, out)]
        if new.size:
            before = len(out)
            self._evaluate(new, now, out)
            positions += [offset + len(values) - 1] * (len(out) - before)
        return positions

    def _learn(self) -> None:
        warm, self.warm = self.warm, []
        self.warmup_used = len(warm)
        numbers = [v for v in warm if not isinstance(v, str)]
        if len(numbers) * 2 >= len(warm):
            self._set(NumericReference.from_values(np.asarray(numbers, dtype=float),
                                                   self.cfg.bins))
        else:
            self._set(CategoricalReference.from_counts(
                Counter(v for v in warm if isinstance(v, str)), self.cfg.top_k))

    def _update_shares(self, codes: np.ndarray, now: float, out: list[Detection]) -> list[int]:
        """Feed each share stream its 0/1 column (1 where the value is its category) and
        return the position in ``codes`` behind each detection. The share streams follow
        the reference's categories in order, so a category's code is its stream; the last
        is the rest."""
        positions: list[int] = []
        if not self.shares:
            return positions
        hits = np.minimum(codes, len(self.shares) - 1)
        for i, stream in enumerate(self.shares):
            positions += stream.flush(now, out, (hits == i).astype(np.float64))
        return positions

    def _evaluate(self, new: np.ndarray, now: float, out: list[Detection]) -> None:
        """Compare every window that ends in this batch with the reference, all at once.

        ``new`` holds the batch's values (numbers, or the codes of categories). They are
        coded against the reference once (``NumericReference.codes``); ``history`` keeps
        the codes of the last ``window`` values for the windows of the next batch.
        """
        w, every = self.cfg.window, self.cfg.evaluate_every
        ref = self.reference
        numeric = isinstance(ref, NumericReference)
        codes = (new if not numeric else windows.codes(ref, new) if self._compiled
                 else ref.codes(new))
        combined = np.concatenate([self.history.astype(codes.dtype), codes])
        start, self.seen = self.seen, self.seen + new.size
        offset = self.seen - combined.size      # stream position of combined[0]
        first = (start // every + 1) * every
        lowest = -(-w // every) * every         # the first multiple of every with a full window
        ends = np.arange(max(first, lowest), self.seen + 1, every)
        if ends.size:
            if self.fraction is None:
                self._correct(combined[:w], numeric)
            methods = [c.name for c in self.channels]
            distances = (windows.window_distances(ref, combined, ends - offset, w, methods)
                         if numeric and self._compiled
                         else ref.window_distances(combined, ends - offset, w, methods)
                         if numeric
                         else ref.window_distances(combined, ends - offset, w, methods,
                                                   self.fraction))
            self._judge(distances, ends, now, out)
        self.history = combined[-w:]

    def _correct(self, codes: np.ndarray, numeric: bool) -> None:
        """Estimate the stream's effective fraction from its first window, and correct the
        tests that assume independent values with it: chi2 scales its statistic, the KS
        threshold rises by ``1 / sqrt(fraction)`` (its null spread grows so)."""
        self.fraction = effective_fraction(codes, categorical=not numeric)
        for ch in self.channels:
            if ch.name == "ks":
                ch.threshold = min(1.0, self.cfg.thresholds.ks / np.sqrt(self.fraction))

    def _judge(self, distances: dict[str, np.ndarray], ends: np.ndarray, now: float,
               out: list[Detection]) -> None:
        """Pass each window's distances (in order; ``ends`` are their ends in the stream)
        through the channels: a crossing counts one detection until the distance is
        calm again."""
        if all(ch.quiet(distances[ch.name]) for ch in self.channels):     # the usual case
            for ch in self.channels:
                ch.value = float(distances[ch.name][-1])
            return
        columns = [(ch, distances[ch.name].tolist()) for ch in self.channels]
        for k, end in enumerate(ends.tolist()):
            index = self.warmup_used + end - 1
            for ch, values in columns:
                value = values[k]
                ch.value = value
                if ch.alarming(value):
                    if not ch.above:
                        ch.detections += 1
                        out.append(Detection(self.model, self.version, self.signal,
                                             self.feature, ch.name, index, value, now,
                                             {"threshold": ch.threshold}))
                    ch.above = True
                    ch.last_at = now
                elif ch.above and ch.calm(value):
                    ch.above = False


def _kept(value: FeatureValue) -> bool:
    """Whether a feature value of an event reached its stream: not missing, and not
    refused (an unchecked event's number beyond the bounds or over-long category, which
    ``observe`` turned into a missing value)."""
    if value is None:
        return False
    if type(value) is float:
        return -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE
    return type(value) is not str or len(value) <= MAX_NAME_LENGTH


def _trace(d: Detection, stream: Stream, trail: StreamTrail, event: int,
           events: EventTrail) -> Trace:
    """The trace of a detection of ``stream`` whose value is in ``event``: for a distance
    (no onset estimate: the firing is its onset), the batch's last event, made exact
    through the value maps when the stream's values are all of its reference's kind.

    The value indices of a detection count what its detector saw: the stream's numbers;
    for a share stream the strings after the reference's warm-up, and for a distance the
    values compared (the warm-up's included), both known exactly only while the feature
    has had values of one kind."""
    ref = stream.ref
    if d.onset is None:
        numeric = isinstance(ref.reference, NumericReference)
        kind, other = ((trail.numbers, trail.strings) if numeric
                       else (trail.strings, trail.numbers))
        exact = None if other.count else kind.event(d.index)
        event = event if exact is None else exact
        onset: int | None = event
    elif d.onset == d.index:
        onset = event
    elif d.category:
        onset = (trail.strings.event(ref.warmup_used + d.onset)
                 if not trail.numbers.count else None)
    else:
        onset = trail.numbers.event(d.onset)
    return Trace(event, events.position(event), onset,
                 None if onset is None else events.position(onset))


class Schema(NamedTuple):
    """The feature names of an event, split by the type of their values in it."""

    names: frozenset[str]
    numeric: tuple[str, ...]
    others: tuple[str, ...]


class ModelMonitor:
    """All monitors of one model version."""

    def __init__(self, model: str, version: str, settings: Settings, *, now: float,
                 profile: Profile | None = None, engine: Engine = "kernel") -> None:
        cfg: ModelSettings = settings.model(model)
        self._refcfg = settings.reference if settings.reference.enabled else None
        self._profile = profile
        self._detection = settings.detection
        self._engine = engine
        self.model = model
        self.version = version
        #: service clock and model event count at this version's last event, and how many
        #: events it has had (kept by the pipeline, to choose which version makes room)
        self.last_seen = now
        self.last_seq = 0
        self.touches = 0
        self._sets = settings.detectors_for(model)
        self._max_features = settings.max_features
        self._idle_events = settings.idle_events
        self._declared = frozenset(cfg.features) if cfg.features is not None else None
        self.features: dict[str, Stream] = {}
        for name in cfg.features or ():
            self._add_feature(name)
        self.prediction = self._with_reference(
            self._stream("prediction", "", self._sets.prediction,
                         profile.prediction if profile else None),
            profile.prediction if profile else None)
        self.error = self._stream("error", "", self._sets.error, None)
        self.label = self._with_reference(
            self._stream("label", "", self._sets.label, profile.label if profile else None),
            profile.label if profile else None)
        self.performance = Performance(None if cfg.task == "auto" else cfg.task,
                                       cfg.positive_label, settings.rolling_window,
                                       settings.max_classes)
        #: performance estimated from the scores before the labels arrive
        self.estimation = Estimator.for_version(settings, model, profile)
        self.predictions = 0
        self.quality = (VersionQuality(settings.quality, profile, cfg.features)
                        if settings.quality.enabled else None)
        #: this batch's predictions (batch position, features) and scored pairs (batch
        #: position): where each queued value came from, for the detections' origins
        self._batch: list[tuple[int, dict[str, FeatureValue]]] = []
        self._pairs: list[int] = []
        #: the feature names of the last event, when every one has a stream: an event with
        #: the same names is only queued (``_rows``) and spread into columns in one go
        self._schema: Schema | None = None
        self._rows: list[dict[str, FeatureValue]] = []
        self._rows_last = 0
        #: rejections of feature values found while queueing (``take_invalid``)
        self._invalid: list[Rejection] = []
        #: pairs scored so far; where the last predictions and pairs were read, this
        #: batch's prediction ids, and each stream's value-to-event map (``detector.trace``)
        self.scored = 0
        self.trail = EventTrail()
        self.pair_trail = EventTrail()
        self._ids: list[str | None] = []
        self._pair_ids: list[str | None] = []
        self._maps: dict[tuple[Signal, str], StreamTrail] = {}

    def _stream(self, signal: Signal, feature: str, specs: tuple[DetectorSpec, ...],
                reference: Reference | None, category: str = "") -> Stream:
        d = self._detection
        std = None
        if d.standardize:
            loc = scale = None
            if isinstance(reference, NumericReference) and reference.std > 0:
                loc, scale = reference.mean, reference.std
            std = Standardizer.from_settings(d, loc, scale)
        return Stream(self.model, self.version, signal, feature, specs, std, d.cooldown, category,
                      self._engine)

    def _with_reference(self, stream: Stream, reference: Reference | None) -> Stream:
        if self._refcfg is not None:
            stream.ref = ReferenceStream(self.model, self.version, stream.signal, stream.feature,
                                         self._refcfg, reference, self._sets.categorical,
                                         self._stream, self._engine)
        return stream

    def _add_feature(self, name: str) -> Stream:
        reference = self._profile.features.get(name) if self._profile else None
        stream = self._with_reference(
            self._stream("feature", name, self._sets.feature, reference), reference)
        self.features[name] = stream
        return stream

    def streams(self) -> Iterator[Stream]:
        """Every value stream, including the share streams of categorical features."""
        for stream in self.features.values():
            yield stream
            if stream.ref is not None:
                yield from stream.ref.shares
        yield self.prediction
        yield self.error
        yield self.label

    def references(self) -> Iterator[ReferenceStream]:
        for stream in (*self.features.values(), self.prediction, self.label):
            if stream.ref is not None:
                yield stream.ref

    def flush(self, now: float, out: list[Detection], origins: list[int],
              tap: Callable[[ModelMonitor], None] | None = None,
              positions: BatchPositions | None = None) -> None:
        """Feed every stream the values queued since the last flush (the batch), in
        order; append each detection to ``out`` and the batch position of the event
        behind it to ``origins``. ``tap``, if given, is called first, when every stream holds
        its values of the batch (``Stream.queued_values``) and ``seen`` counts those before.

        Each detection gets its ``trace``: the event indices of the version where it
        fired and where it began, and, given the batch's ``positions``, where those events
        were read (``detector.trace``)."""
        self._spread()
        if tap is not None:
            tap(self)
        batch, self._batch = self._batch, []
        pairs, self._pairs = self._pairs, []
        ids, self._ids = self._ids, []
        pair_ids, self._pair_ids = self._pair_ids, []
        rows = [at for at, _ in batch]
        if positions is not None:
            self.trail.add(positions, rows, ids)
            self.pair_trail.add(positions, pairs, pair_ids)
        if self.quality is not None and batch:
            self.quality.update([features for _, features in batch],
                                {name: s.queued_values() for name, s in self.features.items()})
        base, paired = self.predictions - len(rows), self.scored - len(pairs)
        for name, stream in self.features.items():
            k = stream.queued()
            if not k:
                continue
            # a feature absent from some events (or added mid-batch): the events of its values
            steps = None if k == len(rows) else [
                j for j, (_, features) in enumerate(batch) if _kept(features.get(name))][-k:]
            self._feed(stream, base, steps, rows, self.trail, now, out, origins)
        self._feed(self.prediction, base, None, rows, self.trail, now, out, origins)
        self._feed(self.error, paired, None, pairs, self.pair_trail, now, out, origins)
        self._feed(self.label, paired, None, pairs, self.pair_trail, now, out, origins)
        self.estimation.flush()

    def _feed(self, stream: Stream, base: int, steps: list[int] | None, rows: list[int],
              events: EventTrail, now: float, out: list[Detection], origins: list[int]) -> None:
        """Flush one stream whose queued values came from the events ``base + steps`` of
        its kind (None: one from each, from ``base`` on), found at ``rows`` in the batch;
        trace its detections."""
        key = (stream.signal, stream.feature)
        trail = self._maps.get(key)
        if trail is None:
            trail = self._maps[key] = StreamTrail()
        trail.add(base, steps, stream.queued_values(), stream.categorical)
        start = len(out)
        for n, p in enumerate(stream.flush_raw(now, out), start):
            t = _trace(out[n], stream, trail, base + (p if steps is None else steps[p]),
                       events)
            out[n] = replace(out[n], trace=t)
            origins.append(rows[t.event - base])

    def observe(self, features: dict[str, FeatureValue], prediction: Target, score: float | None,
                at: int = 0, checked: bool = True, prediction_id: str | None = None) -> int:
        """Queue one prediction event (``at``: its position in the batch) for ``flush``;
        return how many feature values were dropped because the version already has
        ``max_features`` features, none of them idle.

        ``checked``: whether ``decode`` checked the feature names and values; those of a
        scanned event (``events.scan``) are checked here, the values of an event with the
        last event's names only when they are spread into columns, all at once. Each
        value refused is None (missing) and its rejection is kept for ``take_invalid``.

        When the slots are full, a discovered feature that arrived only once (not now), or
        in none of the version's last ``idle_events`` predictions, makes room for a new one:
        one message of junk names cannot take every slot for good."""
        n = self.predictions = self.predictions + 1
        self._batch.append((at, features))
        self._ids.append(prediction_id)
        output = score if score is not None else prediction
        self.estimation.outputs.append((prediction, score))
        self.prediction.push(output if isinstance(output, str) else float(output))
        if self._schema is not None and features.keys() == self._schema.names:
            self._rows.append(features)
            self._rows_last = n
            return 0
        self._spread()
        if not checked:
            features, invalid = check_features(features)
            self._invalid.extend(invalid)
        dropped = 0
        streams = self.features
        for name, value in features.items():
            stream = streams.get(name)
            if stream is None:
                if self._declared is not None:
                    continue
                if len(streams) >= self._max_features and not self._evict_idle_feature(n):
                    dropped += 1
                    continue
                stream = self._add_feature(name)
                stream.first = n
            stream.last = n
            stream.push(value)
        self._schema = None if dropped or not features.keys() <= streams.keys() else Schema(
            frozenset(features), tuple(k for k, v in features.items() if type(v) is float),
            tuple(k for k, v in features.items() if type(v) is not float))
        return dropped

    def _spread(self) -> None:
        """Move the values of the queued same-schema events into their streams, in
        order: the numbers of every event and feature in one C-level conversion (one that
        is not a number after all falls back to value by value), the rest one by one."""
        rows, self._rows = self._rows, []
        if not rows:
            return
        schema, streams = self._schema, self.features
        numeric = schema.numeric
        try:
            flat = array("d", chain.from_iterable(map(itemgetter(*numeric), rows))
                         if len(numeric) > 1 else (row[numeric[0]] for row in rows)
                         ) if numeric else None
        except TypeError:       # a string or a null among them
            flat = None
        columns = None if flat is None else np.frombuffer(flat, dtype=np.float64).reshape(
            len(rows), len(numeric)).T.copy()       # a row per feature, contiguous
        if columns is not None and (np.abs(columns) <= MAX_MAGNITUDE).all():
            for name, column in zip(numeric, columns):
                streams[name].extend(column)
            others = schema.others
        else:                   # not all of them plain numbers: value by value
            others = numeric + schema.others
        invalid = self._invalid
        for name in others:
            push = streams[name].push
            for row in rows:
                value = row[name]
                if (type(value) is float and not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE
                        or type(value) is str and len(value) > MAX_NAME_LENGTH):
                    value, rejection = feature_value(name, value)
                    invalid.append(rejection)
                push(value)
        for name in schema.names:
            streams[name].last = self._rows_last

    def take_invalid(self) -> list[Rejection]:
        """The rejections of feature values found since the last call (after ``flush``,
        all of the batch's)."""
        invalid, self._invalid = self._invalid, []
        return invalid

    def _evict_idle_feature(self, n: int) -> bool:
        # called after _spread: every stream's ``last`` is current
        once = [(s.last, name) for name, s in self.features.items()
                if s.last < n and s.last == s.first]
        if once:
            name = min(once)[1]
        else:
            name, stream = min(self.features.items(), key=lambda kv: kv[1].last)
            if n - stream.last <= self._idle_events:
                return False
        del self.features[name]
        self._maps.pop(("feature", name), None)
        return True

    def score(self, y_true: Target, y_pred: Target, score: float | None,
              at: int = 0, prediction_id: str | None = None
              ) -> Literal["label_type", "class_cap"] | None:
        """Feed one joined pair to the metrics, and queue its error and label for ``flush``
        (``at``: the position in the batch of the event that completed the pair).

        Returns why nothing was updated: ``label_type`` when label and prediction cannot be
        compared (a regression pair that is not numeric, or a class string that is not a
        number beside a numeric class), ``class_cap`` when the pair brings one class too many.
        """
        pair = reconcile(y_true, y_pred)
        if pair is None:
            return "label_type"
        y_true, y_pred = pair
        task = self.performance.task or infer_task(y_pred, score)
        if task == "regression" and (isinstance(y_true, str) or isinstance(y_pred, str)):
            return "label_type"
        error = self.performance.update(y_true, y_pred, score)
        if error is None:
            return "class_cap"
        self._pairs.append(at)
        self._pair_ids.append(prediction_id)
        self.scored += 1
        est = self.estimation
        est.pairs.append((y_true, y_pred, score, len(est.outputs)))
        self.error.pending.append(error)
        self.label.push(y_true if isinstance(y_true, str) else float(y_true))
        return None
