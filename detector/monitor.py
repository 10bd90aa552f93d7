"""Monitors of one model version: features, predictions and performance.

Every value stream (a numeric feature, the prediction score, the error of
joined pairs) feeds the configured River detectors in arrival order; a
detection records the 0-based index of the value that fired it, which is the
index River reports offline on the same sequence.

>>> import random
>>> from detector.config import Settings
>>> rng = random.Random(7)
>>> m = ModelMonitor("fraud", "3", Settings(), now=0.0)
>>> found = []
>>> for i in range(3000):
...     x = rng.gauss(0.0 if i < 2000 else 3.0, 1.0)
...     _ = m.observe({"amount": x}, prediction=0, score=None, now=float(i), out=found)
>>> [(d.feature, d.detector, d.index) for d in found if d.index >= 2000][:2]
[('amount', 'cusum', 2011)]
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from river import metrics, utils
from scipy.special import ndtri, stdtr

from detector import detectors
from detector.config import DetectorSpec, ModelSettings, ReferenceSettings, Settings
from detector.events import FeatureValue, Target
from detector.reference import (
    OTHER,
    CategoricalReference,
    NumericReference,
    Profile,
    Reference,
)

Signal = Literal["feature", "prediction", "error", "label"]
Window = Literal["cumulative", "rolling"]


@dataclass(frozen=True, slots=True)
class Detection:
    """One detector firing. ``index`` counts values of that stream from 0;
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
    #: the index where the detector estimates the change began (``index`` if unknown)
    onset_index: int | None = None
    #: the category of a categorical feature's share stream ("" for other streams)
    category: str = ""


class Standardizer:
    """Self-starting standardisation of one stream, so one threshold means the same
    on every feature whatever its units.

    Each value is scaled by the mean and standard deviation of the ``n`` values
    *before* it in the current regime. While the baseline is still learning (``n`` below
    ``warmup``), ``t = (x - mean) / (sd * sqrt(1 + 1/n))`` follows Student's t with
    ``n - 1`` degrees of freedom on stable normal data, and is mapped to the normal
    quantile of the same probability, so early values are not heavy-tailed
    (a self-starting transform). Once ``warmup`` values are learned (or when the
    reference profile gives mean and sd) ``z = (x - mean) / sd``. z is clipped to
    ``[-clip, clip]``; the first ``min_samples`` values only teach. After a detection
    the stream ``restart``s: the new regime becomes the baseline.

    >>> s = Standardizer(warmup=1000, min_samples=3, clip=5.0)
    >>> [None if z is None else round(z, 3) for z in (s.transform(x) for x in
    ...     (10.0, 12.0, 14.0, 12.0, 40.0))]
    [None, None, None, 0.0, 3.431]
    """

    __slots__ = ("warmup", "min_samples", "clip", "n", "mean", "m2", "loc", "scale")

    def __init__(self, warmup: int, min_samples: int, clip: float,
                 loc: float | None = None, scale: float | None = None) -> None:
        self.warmup, self.min_samples, self.clip = warmup, min_samples, clip
        self.loc = loc
        self.scale = scale if scale else None
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def transform(self, x: float) -> float | None:
        if self.loc is not None and self.scale is not None:
            z = (x - self.loc) / self.scale
        else:
            n = self.n
            if n >= self.min_samples:
                sd = math.sqrt(self.m2 / (n - 1))
                if sd <= 0:
                    z = 0.0 if x == self.mean else math.copysign(self.clip, x - self.mean)
                elif n < self.warmup:
                    t = (x - self.mean) / (sd * math.sqrt(1.0 + 1.0 / n))
                    z = float(ndtri(stdtr(n - 1, t)))
                else:
                    z = (x - self.mean) / sd
            else:
                z = None
            if n < self.warmup:
                n += 1
                delta = x - self.mean
                self.mean += delta / n
                self.m2 += delta * (x - self.mean)
                self.n = n
            if z is None:
                return None
        c = self.clip
        return c if z > c else -c if z < -c else z

    def restart(self) -> None:
        """Forget the baseline (after a detection): learn the new regime."""
        self.loc = self.scale = None
        self.n, self.mean, self.m2 = 0, 0.0, 0.0


class Channel:
    """One River detector on one stream. Firings within ``cooldown`` values of the
    previous firing continue its episode; ``detections`` counts episodes."""

    __slots__ = ("name", "detector", "scaled", "detections", "firings", "last_at",
                 "last_index", "announced")

    def __init__(self, spec: DetectorSpec) -> None:
        self.name = spec.name
        self.detector = detectors.build(spec.type, spec.params)
        #: binary detectors (DDM, ...) need the raw 0/1 values, the others get z-scores
        self.scaled = not detectors.is_binary(spec.type)
        self.detections = 0
        self.firings = 0
        self.last_at = float("-inf")
        self.last_index = -(1 << 62)
        #: False until a scrape has shown this channel's counter (at 0, see metrics.py)
        self.announced = False


class Stream:
    """A sequence of real values (one feature, the prediction, the error) and its detectors."""

    __slots__ = ("model", "version", "signal", "feature", "category", "channels", "seen",
                 "missing", "categorical", "ref", "std", "cooldown", "last")

    def __init__(self, model: str, version: str, signal: Signal, feature: str,
                 specs: tuple[DetectorSpec, ...], std: Standardizer | None = None,
                 cooldown: int = 0, category: str = "") -> None:
        self.model = model
        self.version = version
        self.signal = signal
        self.feature = feature
        #: for the 0/1 share stream of one category of a categorical feature
        self.category = category
        self.channels = [Channel(s) for s in specs]
        self.std = std
        self.cooldown = cooldown
        self.seen = 0
        self.missing = 0
        self.categorical = 0
        #: the version's prediction count when this feature last arrived (see observe)
        self.last = 0
        #: the comparison of this stream with its reference, if enabled
        self.ref: ReferenceStream | None = None

    def update(self, value: float, now: float, out: list[Detection]) -> None:
        """Feed one value (standardised, if enabled) to every detector; append a
        ``Detection`` to ``out`` for each firing that starts an episode."""
        index = self.seen
        self.seen = index + 1
        z = value if self.std is None else self.std.transform(value)
        fired = False
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
                fired = True
                ch.firings += 1
                ch.last_at = now
                if index - ch.last_index > self.cooldown:
                    ch.detections += 1
                    age = detectors.onset_age(det)
                    out.append(Detection(self.model, self.version, self.signal, self.feature,
                                         ch.name, index, value, now, detectors.statistic(det),
                                         index - age + 1 if age else index, self.category))
                ch.last_index = index
        if fired and self.std is not None:
            self.std.restart()

    def observe(self, value: FeatureValue, now: float, out: list[Detection]) -> None:
        """Route a raw feature value: numbers to the detectors, strings (categories) to
        the reference comparison only, ``None`` counted as missing."""
        if value is None:
            self.missing += 1
            return
        if isinstance(value, str):
            self.categorical += 1
        else:
            self.update(value, now, out)
        if self.ref is not None:
            self.ref.add(value)


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


class ReferenceStream:
    """Windows of one stream compared with its reference.

    Values are buffered per event (``add``) and evaluated per batch (``flush``) with
    numpy. Without a given reference, the first ``warmup`` values become it. After
    that, at every ``evaluate_every``-th value the last ``window`` values are compared
    with the reference; a method whose distance crosses its threshold counts one
    detection, and it re-arms when the distance is back on the safe side.
    """

    __slots__ = ("model", "version", "signal", "feature", "reference", "cfg", "channels",
                 "pending", "warm", "warmup_used", "history", "seen", "shares",
                 "_share_specs", "_index", "_make")

    def __init__(self, model: str, version: str, signal: Signal, feature: str,
                 cfg: ReferenceSettings, reference: Reference | None,
                 share_specs: tuple[DetectorSpec, ...], make_stream) -> None:
        self.model, self.version, self.signal, self.feature = model, version, signal, feature
        self.cfg = cfg
        self.reference: Reference | None = None
        self.channels: list[DistanceChannel] = []
        self.pending: list[float | str] = []
        self.warm: list[float | str] = []
        self.warmup_used = 0
        self.history: np.ndarray = np.empty(0)
        self.seen = 0              # values compared since the reference was set
        self.shares: list[Stream] = []
        self._share_specs = share_specs
        self._make = make_stream
        self._index: dict[str, int] = {}
        if reference is not None:
            self._set(reference)

    def add(self, value: float | str) -> None:
        self.pending.append(value)

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

    def flush(self, now: float, out: list[Detection]) -> None:
        if not self.pending:
            return
        values, self.pending = self.pending, []
        if self.reference is None:
            need = self.cfg.warmup - len(self.warm)
            self.warm.extend(values[:need])
            values = values[need:]
            if len(self.warm) < self.cfg.warmup:
                return
            self._learn()
            if self.reference is None:
                return
        # values of the other kind (a string in a numeric stream) are left out
        if isinstance(self.reference, NumericReference):
            new = np.asarray([v for v in values if not isinstance(v, str)], dtype=float)
        else:
            kept = [v for v in values if isinstance(v, str)]
            other = len(self._index)
            new = np.fromiter((self._index.get(v, other) for v in kept), dtype=np.int64,
                              count=len(kept))
            self._update_shares(new, now, out)
        if new.size:
            self._evaluate(new, now, out)

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

    def _update_shares(self, codes: np.ndarray, now: float, out: list[Detection]) -> None:
        """Feed each share stream 1 or 0. The share streams follow the reference's
        categories in order, so a category's code is its stream; the last is the rest."""
        if not self.shares:
            return
        other = len(self.shares) - 1
        for code in codes.tolist():
            hit = code if code < other else other
            for i, stream in enumerate(self.shares):
                stream.update(1.0 if i == hit else 0.0, now, out)

    def _evaluate(self, new: np.ndarray, now: float, out: list[Detection]) -> None:
        w, every = self.cfg.window, self.cfg.evaluate_every
        combined = np.concatenate([self.history.astype(new.dtype), new])
        start, self.seen = self.seen, self.seen + new.size
        offset = self.seen - combined.size      # stream position of combined[0]
        first = (start // every + 1) * every
        lowest = -(-w // every) * every         # the first multiple of every with a full window
        for end in range(max(first, lowest), self.seen + 1, every):
            window = combined[end - w - offset: end - offset]
            self._judge(self.reference.distances(window, (c.name for c in self.channels)),
                        end, now, out)
        self.history = combined[-w:]

    def _judge(self, distances: dict[str, float], end: int, now: float,
               out: list[Detection]) -> None:
        index = self.warmup_used + end - 1
        for ch in self.channels:
            value = distances[ch.name]
            ch.value = value
            if ch.alarming(value):
                if not ch.above:
                    ch.detections += 1
                    out.append(Detection(self.model, self.version, self.signal, self.feature,
                                         ch.name, index, value, now,
                                         {"threshold": ch.threshold}))
                ch.above = True
                ch.last_at = now
            elif ch.above and ch.calm(value):
                ch.above = False


_CLASSIFICATION = {
    "accuracy": metrics.Accuracy,
    "precision": metrics.Precision,
    "recall": metrics.Recall,
    "f1": metrics.F1,
}
_REGRESSION = {"mae": metrics.MAE, "rmse": metrics.RMSE, "r2": metrics.R2}


def reconcile(y_true: Target, y_pred: Target) -> tuple[Target, Target] | None:
    """Make a label and a prediction comparable when one is a string and the other is not:
    the string is read as a number (or a boolean, beside a boolean). ``None`` when it
    cannot be, so the pair is refused instead of being scored as always wrong.

    >>> reconcile("1", 1), reconcile(0, "0"), reconcile("true", True), reconcile(2.5, "2.5")
    ((1, 1), (0, 0), (True, True), (2.5, 2.5))
    >>> reconcile("cat", 1) is None, reconcile("cat", "dog")
    (True, ('cat', 'dog'))
    """
    if isinstance(y_true, str) == isinstance(y_pred, str):
        return y_true, y_pred
    if isinstance(y_true, str):
        value = _parse_class(y_true, y_pred)
        return None if value is None else (value, y_pred)
    value = _parse_class(y_pred, y_true)  # type: ignore[arg-type]
    return None if value is None else (y_true, value)


_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def _parse_class(text: str, like: Target) -> Target | None:
    text = text.strip()
    if isinstance(like, bool):
        return _BOOLEANS.get(text.lower())
    if isinstance(like, int) and text.lstrip("+-").isdigit() and len(text) <= 16:
        return int(text)
    try:
        number = float(text) if len(text) <= 40 else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class Performance:
    """River metrics on joined (label, prediction) pairs, cumulative and rolling.

    With ``task=None`` (``auto``) the task is inferred from the first scored pair, not
    from the first prediction: a stray first message cannot decide it for good, and a
    pair is what the metrics are about. At most ``max_classes`` distinct classes are
    scored: River's confusion matrices grow with every class, so a pair bringing one more
    is refused (``update`` returns None).
    """

    def __init__(self, task: Literal["classification", "regression"] | None,
                 positive_label: Target, window: int, max_classes: int = 100) -> None:
        self.task = task
        self.pairs = 0
        self.scored = 0
        self.max_classes = max_classes
        self.classes: set[Target] = set()
        self._positive, self._window = positive_label, window
        self._metrics: list[tuple[str, Window, metrics.base.Metric]] = []
        self._auc: list[tuple[str, Window, metrics.base.Metric]] = []
        if task is not None:
            self._build(task)

    def _build(self, task: Literal["classification", "regression"]) -> None:
        self.task = task
        positive_label, window = self._positive, self._window
        kwargs = {"pos_val": positive_label} if task == "classification" else {}
        for name, cls in (_CLASSIFICATION if task == "classification" else _REGRESSION).items():
            kw = kwargs if name != "accuracy" else {}
            self._metrics.append((name, "cumulative", cls(**kw)))
            self._metrics.append((name, "rolling", utils.Rolling(cls, window_size=window, **kw)))
        if task == "classification":
            self._auc = [
                ("roc_auc", "cumulative", metrics.ROCAUC(pos_val=positive_label)),
                ("roc_auc", "rolling",
                 utils.Rolling(metrics.ROCAUC, window_size=window, pos_val=positive_label)),
            ]

    def update(self, y_true: Target, y_pred: Target, score: float | None) -> float | None:
        """Update every metric; return the error of this pair (0/1, or absolute error), or
        None (nothing updated) when the pair would bring more than ``max_classes`` classes."""
        if self.task is None:
            self._build(infer_task(y_pred, score))
        if self.task == "classification":
            classes = self.classes
            if y_true not in classes or y_pred not in classes:
                grown = len(classes | {y_true, y_pred})
                if grown > self.max_classes:
                    return None
                classes.update((y_true, y_pred))
        self.pairs += 1
        for _, _, metric in self._metrics:
            metric.update(y_true, y_pred)
        if score is not None and self._auc:
            self.scored += 1
            for _, _, metric in self._auc:
                metric.update(y_true, score)
        if self.task == "classification":
            return float(y_true != y_pred)
        return abs(float(y_true) - float(y_pred))

    def values(self) -> Iterator[tuple[str, Window, float]]:
        """``(metric, window, value)`` for every metric that has seen data."""
        if self.pairs:
            for name, window, metric in self._metrics:
                yield name, window, metric.get()
        if self.scored:
            for name, window, metric in self._auc:
                yield name, window, metric.get()


def infer_task(prediction: Target, score: float | None) -> Literal["classification", "regression"]:
    """Classification when the output is a class (string, boolean, integer) or has a score.

    >>> infer_task(1, None), infer_task(0.37, None), infer_task(1.0, 0.8)
    ('classification', 'regression', 'classification')
    """
    if score is not None or isinstance(prediction, str | bool | int):
        return "classification"
    return "regression"


class ModelMonitor:
    """All monitors of one model version."""

    def __init__(self, model: str, version: str, settings: Settings, *, now: float,
                 profile: Profile | None = None) -> None:
        cfg: ModelSettings = settings.model(model)
        self._refcfg = settings.reference if settings.reference.enabled else None
        self._profile = profile
        self._detection = settings.detection
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
        self.predictions = 0

    def _stream(self, signal: Signal, feature: str, specs: tuple[DetectorSpec, ...],
                reference: Reference | None, category: str = "") -> Stream:
        d = self._detection
        std = None
        if d.standardize:
            loc = scale = None
            if isinstance(reference, NumericReference) and reference.std > 0:
                loc, scale = reference.mean, reference.std
            std = Standardizer(d.warmup, d.min_samples, d.clip, loc, scale)
        return Stream(self.model, self.version, signal, feature, specs, std, d.cooldown, category)

    def _with_reference(self, stream: Stream, reference: Reference | None) -> Stream:
        if self._refcfg is not None:
            stream.ref = ReferenceStream(self.model, self.version, stream.signal, stream.feature,
                                         self._refcfg, reference, self._sets.categorical,
                                         self._stream)
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

    def flush(self, now: float, out: list[Detection]) -> None:
        """Evaluate the reference windows of values buffered since the last flush."""
        for ref in self.references():
            ref.flush(now, out)

    def observe(self, features: dict[str, FeatureValue], prediction: Target, score: float | None,
                now: float, out: list[Detection]) -> int:
        """Feed one prediction event; return how many feature values were dropped
        because the version already has ``max_features`` features, none of them idle.

        When the slots are full, a discovered feature that arrived only once (not now), or
        in none of the version's last ``idle_events`` predictions, makes room for a new one:
        one message of junk names cannot take every slot for good."""
        n = self.predictions = self.predictions + 1
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
            stream.last = n
            if type(value) is float:
                stream.update(value, now, out)
                if stream.ref is not None:
                    stream.ref.pending.append(value)
            else:
                stream.observe(value, now, out)
        output = score if score is not None else prediction
        self.prediction.observe(output if isinstance(output, str) else float(output), now, out)
        return dropped

    def _evict_idle_feature(self, n: int) -> bool:
        once = [(s.last, name) for name, s in self.features.items()
                if s.last < n and s.seen + s.missing + s.categorical == 1]
        if once:
            del self.features[min(once)[1]]
            return True
        name, stream = min(self.features.items(), key=lambda kv: kv[1].last)
        if n - stream.last <= self._idle_events:
            return False
        del self.features[name]
        return True

    def score(self, y_true: Target, y_pred: Target, score: float | None, now: float,
              out: list[Detection]) -> Literal["label_type", "class_cap"] | None:
        """Feed one joined pair to the metrics and the error stream.

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
        self.error.update(error, now, out)
        self.label.observe(y_true if isinstance(y_true, str) else float(y_true), now, out)
        return None
