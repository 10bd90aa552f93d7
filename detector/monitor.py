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
[('amount', 'page_hinkley', 2012), ('amount', 'adwin', 2015)]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from river import metrics, utils

from detector import detectors
from detector.config import DetectorSpec, ModelSettings, Settings
from detector.events import FeatureValue, Target

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


class Channel:
    """One River detector on one stream, with its detection count and last firing time."""

    __slots__ = ("name", "detector", "detections", "last_at", "announced")

    def __init__(self, spec: DetectorSpec) -> None:
        self.name = spec.name
        self.detector = detectors.build(spec.type, spec.params)
        self.detections = 0
        self.last_at = float("-inf")
        #: False until a scrape has shown this channel's counter (at 0, see metrics.py)
        self.announced = False


class Stream:
    """A sequence of real values (one feature, the prediction, the error) and its detectors."""

    __slots__ = ("model", "version", "signal", "feature", "channels", "seen", "missing",
                 "categorical")

    def __init__(self, model: str, version: str, signal: Signal, feature: str,
                 specs: tuple[DetectorSpec, ...]) -> None:
        self.model = model
        self.version = version
        self.signal = signal
        self.feature = feature
        self.channels = [Channel(s) for s in specs]
        self.seen = 0
        self.missing = 0
        self.categorical = 0

    def update(self, value: float, now: float, out: list[Detection]) -> None:
        """Feed one value to every detector; append a ``Detection`` per firing to ``out``."""
        index = self.seen
        self.seen = index + 1
        for ch in self.channels:
            det = ch.detector
            det.update(value)
            if det.drift_detected:
                ch.detections += 1
                ch.last_at = now
                out.append(Detection(self.model, self.version, self.signal, self.feature,
                                     ch.name, index, value, now, detectors.statistic(det)))

    def observe(self, value: FeatureValue, now: float, out: list[Detection]) -> None:
        """Route a raw feature value: numbers to the detectors, the rest counted."""
        if value is None:
            self.missing += 1
        elif isinstance(value, str):
            self.categorical += 1
        else:
            self.update(value, now, out)


_CLASSIFICATION = {
    "accuracy": metrics.Accuracy,
    "precision": metrics.Precision,
    "recall": metrics.Recall,
    "f1": metrics.F1,
}
_REGRESSION = {"mae": metrics.MAE, "rmse": metrics.RMSE, "r2": metrics.R2}


class Performance:
    """River metrics on joined (label, prediction) pairs, cumulative and rolling."""

    def __init__(self, task: Literal["classification", "regression"], positive_label: Target,
                 window: int) -> None:
        self.task = task
        self.pairs = 0
        self.scored = 0
        kwargs = {"pos_val": positive_label} if task == "classification" else {}
        self._metrics: list[tuple[str, Window, metrics.base.Metric]] = []
        self._auc: list[tuple[str, Window, metrics.base.Metric]] = []
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

    def update(self, y_true: Target, y_pred: Target, score: float | None) -> float:
        """Update every metric; return the error of this pair (0/1, or absolute error)."""
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
                 task: Literal["classification", "regression"] = "classification") -> None:
        cfg: ModelSettings = settings.model(model)
        self.model = model
        self.version = version
        self.task = task if cfg.task == "auto" else cfg.task
        self.created_at = now
        self.last_seen = now
        self._sets = settings.detectors_for(model)
        self._max_features = settings.max_features
        self._declared = frozenset(cfg.features) if cfg.features is not None else None
        self.features: dict[str, Stream] = {}
        for name in cfg.features or ():
            self._add_feature(name)
        self.prediction = Stream(model, version, "prediction", "", self._sets.prediction)
        self.error = Stream(model, version, "error", "", self._sets.error)
        self.performance = Performance(self.task, cfg.positive_label, settings.rolling_window)
        self.predictions = 0

    def _add_feature(self, name: str) -> Stream:
        stream = Stream(self.model, self.version, "feature", name, self._sets.feature)
        self.features[name] = stream
        return stream

    def streams(self) -> Iterator[Stream]:
        yield from self.features.values()
        yield self.prediction
        yield self.error

    def observe(self, features: dict[str, FeatureValue], prediction: Target, score: float | None,
                now: float, out: list[Detection]) -> int:
        """Feed one prediction event; return how many feature values were dropped
        because the model already has ``max_features`` features."""
        self.predictions += 1
        self.last_seen = now
        dropped = 0
        streams = self.features
        for name, value in features.items():
            stream = streams.get(name)
            if stream is None:
                if self._declared is not None:
                    continue
                if len(streams) >= self._max_features:
                    dropped += 1
                    continue
                stream = self._add_feature(name)
            if type(value) is float:
                stream.update(value, now, out)
            else:
                stream.observe(value, now, out)
        output = score if score is not None else prediction
        if isinstance(output, str):
            self.prediction.categorical += 1
        else:
            self.prediction.update(float(output), now, out)
        return dropped

    def score(self, y_true: Target, y_pred: Target, score: float | None, now: float,
              out: list[Detection]) -> bool:
        """Feed one joined pair to the metrics and the error stream.

        Returns False (nothing updated) when a regression pair is not numeric.
        """
        if self.task == "regression" and (isinstance(y_true, str) or isinstance(y_pred, str)):
            return False
        error = self.performance.update(y_true, y_pred, score)
        self.error.update(error, now, out)
        return True
