"""Model performance estimated before the labels arrive, on the stream.

**Classification** (confidence-based performance estimation): a calibrated score ``p``
is the probability that the prediction's label is the positive class. A prediction of
the positive class is then a true positive with probability ``p`` and a false positive
otherwise; a prediction of another class a false negative with probability ``p``. The
sums of these probabilities over a window are its *expected* confusion matrix, and the
estimated accuracy, precision, recall and F1 are River's formulas on it
(``detector.performance``); the estimated ROC AUC is River's ten-threshold ROC AUC on the
expected positives and negatives of each score cell. Accuracy needs the label of every
prediction, so it is estimated only while the version has seen two classes at most; the
others are those of the positive class (one-vs-rest) and need only ``P(label ==
positive)``, which is what an event's ``score`` is.

**Regression** (direct loss estimation): the expected absolute and squared error of each
prediction from a ``LossTable``; the estimated MAE is their mean, the RMSE the root of
the mean squared error.

**Band.** Given the predictions, a window's realised metric is random only through its
labels, each drawn with its calibrated probability (its bin's error distribution); the
*sampling error* is the standard deviation that implies (delta method for the ratios), and
the band is the estimate ± ``BAND`` (3) of them: where the realised metric of the same
predictions falls unless the calibration no longer holds. It does not include the
calibrator's own error.

**Windows.** Each estimate is cumulative (every prediction since the calibrator or loss
table was known) and rolling (the last ``window`` predictions). The same sums are kept
over the *labelled* predictions (the pairs the realised metrics count, in the same
windows), with the realised confusion matrix beside them: their difference is the gap
between realised and estimated metric over exactly the same predictions, with its own
band. Outside it, the calibration no longer holds: a concept change, which no estimate
from scores can see.

Everything is a sum per group of rows (predicted class x score cell, plus label and
correctness on the labelled side; the loss table's bin for regression), kept as arrays
and updated a batch at a time (``Windows``).

>>> import numpy as np
>>> from detector.calibrate_scores import fit_calibrator
>>> rng = np.random.default_rng(3)
>>> score = rng.uniform(0, 1, 5000)
>>> cal = fit_calibrator(score, rng.uniform(0, 1, 5000) < score, positive_label=1)
>>> est = Estimator("classification", 1, window=1000, warmup=1000, model=cal)
>>> shifted = rng.beta(5, 2, 3000)                    # covariate shift: higher scores
>>> est.observe((shifted > 0.5).astype(int), shifted)
>>> for e in est.estimates()[:2]:
...     print(e.metric, e.window, f"{e.value:.3f} [{e.lower:.3f}, {e.upper:.3f}]")
accuracy cumulative 0.738 [0.715, 0.761]
accuracy rolling 0.741 [0.701, 0.781]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from detector.calibrate_scores import (
    Calibrator,
    LossTable,
    fit_calibrator,
    fit_loss_table,
    model_from_json,
)
from detector.config import ModelSettings, Settings
from detector.events import Target
from detector.performance import (
    N_THRESHOLDS,
    THRESHOLDS,
    Task,
    Window,
    _binary,
    _roc_auc,
    infer_task,
    reconcile,
)
from detector.reference import Profile

#: half-width of the band, in sampling errors (NannyML's convention too)
BAND = 3.0
#: score cells of River's ROC AUC: how many of its thresholds a score exceeds
CELLS = N_THRESHOLDS + 1
#: groups of a scored prediction: predicted class (other, positive) x score cell
GROUPS = 2 * CELLS
_THRESHOLDS = np.asarray(THRESHOLDS)
_WINDOWS: tuple[Window, Window] = ("cumulative", "rolling")


class Estimate(NamedTuple):
    """One estimated metric of one window, with its band."""

    metric: str
    window: Window
    value: float
    lower: float
    upper: float


class Gap(NamedTuple):
    """Realised minus estimated metric over the same labelled predictions, and the band
    half-width it stays within while the calibration holds."""

    metric: str
    window: Window
    gap: float
    limit: float


class Windows:
    """Sums of value columns per group of rows, over every row (cumulative) and over the
    last ``size`` rows (rolling), updated a batch at a time.

    The rolling sums are updated by the batch's rows and those leaving the window, and
    recomputed from the kept rows whenever the window wraps, so rounding never piles up.

    >>> w = Windows(groups=2, columns=1, size=3)
    >>> w.add(np.array([0, 1, 1, 0]), np.ones((4, 1)))
    >>> w.cumulative[0].tolist(), w.rolling[0].tolist()
    ([2.0, 2.0], [1.0, 2.0])
    """

    __slots__ = ("_full", "_group", "_head", "_values", "cumulative", "groups", "rolling",
                 "size")

    def __init__(self, groups: int, columns: int, size: int) -> None:
        self.groups, self.size = groups, size
        self.cumulative = np.zeros((columns, groups))
        self.rolling = np.zeros((columns, groups))
        self._group = np.zeros(size, dtype=np.intp)
        self._values = np.zeros((size, columns))
        self._head, self._full = 0, False

    def _sums(self, group: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(group, weights=values[:, j], minlength=self.groups)
                         for j in range(values.shape[1])]).astype(np.float64, copy=False)

    def add(self, group: np.ndarray, values: np.ndarray) -> None:
        """Add rows: ``group`` (ints below ``groups``) and ``values`` (rows x columns)."""
        n = group.size
        if not n:
            return
        self.cumulative += self._sums(group, values)
        size, head = self.size, self._head
        if n >= size:
            self._group[:], self._values[:] = group[-size:], values[-size:]
            self._head, self._full = 0, True
            self.rolling = self._sums(self._group, self._values)
            return
        where = (head + np.arange(n)) % size
        wraps = head + n >= size
        if self._full and not wraps:
            self.rolling -= self._sums(self._group[where], self._values[where])
        self._group[where], self._values[where] = group, values
        self._head = (head + n) % size
        if wraps:
            self._full = True
            self.rolling = self._sums(self._group, self._values)
        else:
            self.rolling += self._sums(group, values)

    def sums(self, window: Window) -> np.ndarray:
        return self.cumulative if window == "cumulative" else self.rolling

    def to_dict(self) -> dict[str, Any]:
        """The state as numbers and lists: the cumulative sums and the kept rows, oldest
        first (the rolling sums are recomputed from them)."""
        order = (np.r_[self._head:self.size, 0:self._head] if self._full
                 else np.arange(self._head))
        return {"cumulative": self.cumulative.tolist(), "groups": self._group[order].tolist(),
                "values": self._values[order].tolist()}

    def load(self, data: Mapping[str, Any]) -> None:
        """Take the state ``to_dict`` described (``ValueError`` naming what is wrong)."""
        cumulative = np.asarray(data["cumulative"], dtype=np.float64)
        groups = np.asarray(data["groups"], dtype=np.intp)
        values = np.asarray(data["values"], dtype=np.float64).reshape(
            groups.size, self._values.shape[1])
        if (cumulative.shape != self.cumulative.shape or groups.size > self.size
                or np.any((groups < 0) | (groups >= self.groups))):
            raise ValueError("estimation state: sums or rows do not fit the windows")
        self.cumulative = cumulative
        n = groups.size
        self._group[:n], self._values[:n] = groups, values
        self._head, self._full = n % self.size, n == self.size
        self.rolling = self._sums(self._group[:n], self._values[:n])


def score_groups(predicted_positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Group of each scored prediction: ``CELLS`` x predicted positive + its score cell
    (River's ROC AUC cell: how many thresholds the raw score exceeds).

    >>> score_groups(np.array([False, True]), np.array([0.05, 0.95])).tolist()
    [1, 20]
    """
    return CELLS * predicted_positive.astype(np.intp) + np.searchsorted(_THRESHOLDS, scores)


def classification_estimates(sums: np.ndarray, accuracy: bool) -> dict[str, tuple[float, float]]:
    """``metric -> (estimate, sampling error)`` from per-group sums of ``(1, p, p(1-p))``
    (shape ``(3, GROUPS)``); ``accuracy`` False leaves accuracy out (more than two classes).

    >>> sums = np.zeros((3, GROUPS))
    >>> sums[:, CELLS + 9] = [10, 8.0, 1.6]            # 10 positive predictions, p = 0.8
    >>> sums[:, 1] = [10, 2.0, 1.6]                     # 10 negative predictions, p = 0.2
    >>> {m: (round(v, 3), round(s, 3)) for m, (v, s) in classification_estimates(sums, True).items()}
    {'accuracy': (0.8, 0.089), 'precision': (0.8, 0.126), 'recall': (0.8, 0.104), 'f1': (0.8, 0.091), 'roc_auc': (0.8, 0.089)}
    """
    n, p, v = sums
    n_neg, n_pos = float(n[:CELLS].sum()), float(n[CELLS:].sum())
    tp, fn = float(p[CELLS:].sum()), float(p[:CELLS].sum())
    v_tp, v_fn = float(v[CELLS:].sum()), float(v[:CELLS].sum())
    cells = [0.0] * 8          # performance's cells: label positive + 2 pred positive + 4 equal
    cells[7], cells[2], cells[1], cells[4] = tp, n_pos - tp, fn, n_neg - fn
    acc, precision, recall, f1 = _binary(cells)
    out: dict[str, tuple[float, float]] = {}
    total = n_neg + n_pos
    if accuracy:
        out["accuracy"] = (acc, _ratio(math.sqrt(v_tp + v_fn), total))
    out["precision"] = (precision, _ratio(math.sqrt(v_tp), n_pos))
    positives = tp + fn
    out["recall"] = (recall, _ratio(math.sqrt(fn * fn * v_tp + tp * tp * v_fn), positives ** 2))
    d = n_pos + tp + fn
    out["f1"] = (f1, _ratio(2.0 * math.sqrt((n_pos + fn) ** 2 * v_tp + tp * tp * v_fn), d * d))
    m, c, vc = n[:CELLS] + n[CELLS:], p[:CELLS] + p[CELLS:], v[:CELLS] + v[CELLS:]
    auc = _roc_auc(_interleave(m - c, c))
    out["roc_auc"] = (auc, math.sqrt(float(np.sum(roc_auc_gradient(m, c) ** 2 * vc))))
    return out


def roc_auc_gradient(totals: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Derivative of River's ROC AUC with respect to the positives of each score cell,
    the cell totals held fixed (a label turning positive in that cell).

    With ``c`` positives and ``n`` negatives per cell, River's trapezoid is
    ``S / (N P)`` with ``S = sum over cells 1..9 of n_m (U_m + c_m / 2)``, ``U_m`` the
    positives above cell ``m``; this is its exact gradient.

    >>> totals, positives = np.array([5.0] * CELLS), np.linspace(0.5, 4.5, CELLS)
    >>> grad = roc_auc_gradient(totals, positives)
    >>> k, h = 4, 1e-6
    >>> up = positives.copy(); up[k] += h
    >>> auc = lambda c: _roc_auc(_interleave(totals - c, c))
    >>> bool(abs((auc(up) - auc(positives)) / h - grad[k]) < 1e-6)
    True
    """
    c = positives
    neg = totals - c
    total_pos, total = float(c.sum()), float(totals.sum())
    total_neg = total - total_pos
    if total_pos <= 0 or total_neg <= 0:
        return np.zeros_like(c)
    above = np.concatenate([np.cumsum(c[::-1])[::-1][1:], [0.0]])    # U_k: positives above k
    inner = np.zeros_like(c, dtype=bool)
    inner[1:N_THRESHOLDS] = True
    s = float(np.sum(np.where(inner, neg * (above + c / 2.0), 0.0)))
    below = np.concatenate([[0.0], np.cumsum(np.where(inner, neg, 0.0))[:-1]])
    g = np.where(inner, neg / 2.0 - above - c / 2.0, 0.0) + below
    norm = total_neg * total_pos
    return g / norm - s * (total_neg - total_pos) / (norm * norm)


def regression_estimates(counts: np.ndarray, table: LossTable) -> dict[str, tuple[float, float]]:
    """``metric -> (estimate, sampling error)`` of MAE and RMSE from the count of
    predictions per bin of ``table``.

    >>> from detector.calibrate_scores import LossTable
    >>> t = LossTable(np.array([0.0]), np.array([1.0, 2.0]), np.array([0.5, 1.0]),
    ...               np.array([2.0, 8.0]), np.array([4.0, 40.0]), pairs=100)
    >>> {m: (round(v, 3), round(s, 3)) for m, (v, s) in regression_estimates(np.array([50.0, 50.0]), t).items()}
    {'mae': (1.5, 0.087), 'rmse': (2.236, 0.105)}
    """
    n = float(counts.sum())
    if not n:
        return {}
    mse = float(counts @ table.mean_sq) / n
    rmse = math.sqrt(mse)
    return {"mae": (float(counts @ table.mean_abs) / n,
                    math.sqrt(float(counts @ table.var_abs)) / n),
            "rmse": (rmse, _ratio(math.sqrt(float(counts @ table.var_sq)) / n, 2.0 * rmse))}


def profile_mismatch(profile: Profile, cfg: ModelSettings) -> str | None:
    """Why ``profile``'s estimation model cannot serve a model with settings ``cfg``
    (None if it can, or if it has none).

    >>> from detector.calibrate_scores import Calibrator
    >>> cal = Calibrator(np.array([0.0, 1.0]), np.array([0.0, 1.0]), "fraud", 10)
    >>> profile_mismatch(Profile("m", None, {}, estimation=cal), ModelSettings())
    "its score calibrator is for positive_label 'fraud', the model's positive_label is 1"
    """
    model = profile.estimation
    if model is None:
        return None
    kind = "classification" if isinstance(model, Calibrator) else "regression"
    if cfg.task not in ("auto", kind):
        return f"its estimation model is for {kind}, the model's task is {cfg.task}"
    if isinstance(model, Calibrator):
        pair = reconcile(cfg.positive_label, model.positive_label)
        if pair is None or pair[0] != pair[1]:
            return (f"its score calibrator is for positive_label {model.positive_label!r}, "
                    f"the model's positive_label is {cfg.positive_label!r}")
    return None


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _interleave(negatives: np.ndarray, positives: np.ndarray) -> list[float]:
    """Performance's score cells: ``2 k`` negatives and ``2 k + 1`` positives of cell k."""
    return np.stack([negatives, positives], axis=1).ravel().tolist()


def _bounds(metric: str, value: float, sigma: float) -> tuple[float, float]:
    lower, upper = value - BAND * sigma, value + BAND * sigma
    if metric in ("mae", "rmse"):
        return max(lower, 0.0), upper
    return max(lower, 0.0), min(upper, 1.0)


class Estimator:
    """Estimated metrics of one model version, and their gap to the realised ones.

    The model (calibrator or loss table) comes from the version's profile, or is fitted
    on its first ``warmup`` labelled pairs; predictions and pairs before it is known are
    not estimated. Predictions and pairs are queued (``outputs``, ``pairs``) and applied
    a batch at a time by ``flush``; ``observe`` and ``label`` take whole columns.

    Parameters
    ----------
    task
        ``classification``, ``regression``, or None: inferred as the realised metrics do.
    positive_label
        The class whose probability an event's ``score`` is.
    window
        Predictions in the rolling windows (``rolling_window``).
    warmup
        Labelled pairs that fit the model when no profile gives one.
    model
        A calibrator (classification) or loss table (regression), or None.
    enabled
        False: nothing is estimated (``estimation.enabled``), the queues are only emptied.
    """

    def __init__(self, task: Task | None, positive_label: Target, window: int, warmup: int,
                 model: Calibrator | LossTable | None = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.task: Task | None = task
        self.positive_label = positive_label
        self.window, self.warmup = window, warmup
        self.model: Calibrator | LossTable | None = None
        #: queued since the last flush: (prediction, score), and (label, prediction, score,
        #: outputs queued before it): the order of both, so that the warm-up ends at the
        #: same event whatever the batches
        self.outputs: list[tuple[Target, float | None]] = []
        self.pairs: list[tuple[Target, Target, float | None, int]] = []
        #: distinct classes seen (up to 3): accuracy is estimated for two at most
        self.classes: set[Target] = set()
        self._warm: list[tuple[Target, Target, float | None]] = []
        self.predicted: Windows | None = None
        self.labelled: Windows | None = None
        if model is not None:
            self._use(model)

    @classmethod
    def for_version(cls, settings: Settings, model: str, profile: Profile | None) -> Estimator:
        """The estimator of a new version of ``model``: settings, and the profile's model."""
        cfg = settings.model(model)
        return cls(None if cfg.task == "auto" else cfg.task, cfg.positive_label,
                   settings.rolling_window, settings.estimation.warmup,
                   profile.estimation if profile is not None else None,
                   settings.estimation.enabled)

    def _use(self, model: Calibrator | LossTable) -> None:
        self.model = model
        self.task = "classification" if isinstance(model, Calibrator) else "regression"
        if isinstance(model, Calibrator):
            self.predicted = Windows(GROUPS, 3, self.window)
            # labelled: the group, plus GROUPS x label positive + 2 GROUPS x label correct
            self.labelled = Windows(4 * GROUPS, 3, self.window)
        else:
            bins = model.edges.size + 1
            self.predicted = Windows(bins, 1, self.window)
            self.labelled = Windows(bins, 3, self.window)

    def flush(self) -> None:
        """Apply the queued predictions, then the queued pairs."""
        outputs, self.outputs = self.outputs, []
        pairs, self.pairs = self.pairs, []
        if not self.enabled:
            return
        if self.model is None and pairs:
            # the pair that completes the warm-up fits the model: the predictions after
            # it are the first estimated, as in any other split of the stream in batches
            used = self._warm_up([(y, q, math.nan if s is None else s) for y, q, s, _ in pairs])
            if self.model is None:
                return
            outputs, pairs = outputs[pairs[used - 1][3]:], pairs[used:]
        if outputs:
            predictions, scores = zip(*outputs)
            self.observe(_classes(predictions), _scores(scores))
        if pairs:
            labels, predictions, scores, _ = zip(*pairs)
            self.label(_classes(labels), _classes(predictions), _scores(scores))

    def observe(self, predictions: Sequence[Target] | np.ndarray, scores: np.ndarray) -> None:
        """A batch of predictions with their scores (NaN: none). For a classifier, only
        scored predictions count; for a regressor the scores are not read."""
        model = self.model
        if isinstance(model, Calibrator):
            scored = np.isfinite(scores)
            positive = self._positive(predictions)[scored]
            self._count_classes(predictions)
            p = model.apply(scores[scored])
            self.predicted.add(score_groups(positive, scores[scored]),
                               np.stack([np.ones_like(p), p, p * (1.0 - p)], axis=1))
        elif isinstance(model, LossTable):
            # a prediction that is not a number (a class) is no regressor's: not estimated
            values = predictions if isinstance(predictions, np.ndarray) else np.array(
                [v for v in predictions if isinstance(v, int | float)], dtype=np.float64)
            self.predicted.add(model.bins(values), np.ones((values.size, 1)))

    def label(self, labels: Sequence[Target], predictions: Sequence[Target],
              scores: np.ndarray) -> None:
        """A batch of joined pairs (those the realised metrics counted)."""
        if self.model is None:
            used = self._warm_up(list(zip(_listed(labels), _listed(predictions),
                                          scores.tolist())))
            if self.model is None:
                return
            labels, predictions, scores = labels[used:], predictions[used:], scores[used:]
        model = self.model
        if isinstance(model, Calibrator):
            scored = np.isfinite(scores)
            self._count_classes(labels)
            truth = self._positive(labels)[scored]
            positive = self._positive(predictions)[scored]
            correct = _equal(labels, predictions)[scored]
            p = model.apply(scores[scored])
            group = (score_groups(positive, scores[scored]) + GROUPS * truth
                     + 2 * GROUPS * correct)
            self.labelled.add(group, np.stack([np.ones_like(p), p, p * (1.0 - p)], axis=1))
        else:
            y = np.asarray(labels, dtype=np.float64)
            q = np.asarray(predictions, dtype=np.float64)
            e = y - q
            self.labelled.add(model.bins(q), np.stack([np.ones_like(e), np.abs(e), e * e], axis=1))

    def _warm_up(self, rows: Sequence[tuple[Target, Target, float]]) -> int:
        """Learn from ``rows`` (label, prediction, score; NaN: none) until ``warmup`` of
        them are kept, then fit the model on exactly those; return how many rows were
        read (the rest are the first the model judges)."""
        task = self.task
        used = 0
        for y, q, s in rows:
            used += 1
            if task is None:
                task = self.task = infer_task(q, None if math.isnan(s) else s)
            if task == "regression" or not math.isnan(s):
                self._warm.append((y, q, s))
                if len(self._warm) >= self.warmup:
                    break
        if len(self._warm) < self.warmup:
            return used
        warm, self._warm = self._warm, []
        labels, predictions, scores = zip(*warm)
        if task == "classification":
            self._use(fit_calibrator(np.asarray(scores), self._positive(labels),
                                     self.positive_label))
        else:
            self._use(fit_loss_table(np.asarray(predictions, dtype=np.float64),
                                     np.asarray(labels, dtype=np.float64)))
        return used

    def _positive(self, values: Sequence[Target] | np.ndarray) -> np.ndarray:
        """Whether each value is the positive class (a numeric string read as a number,
        as the realised metrics do)."""
        positive = self.positive_label
        if isinstance(values, np.ndarray) and values.dtype.kind in "biuf" and isinstance(
                positive, int | float):
            return values == positive
        known: dict[Target, bool] = {}
        for v in set(values):
            pair = reconcile(positive, v)
            known[v] = pair is not None and pair[0] == pair[1]
        return np.fromiter(map(known.__getitem__, values), dtype=bool, count=len(values))

    def _count_classes(self, values: Sequence[Target] | np.ndarray) -> None:
        if len(self.classes) <= 2:
            self.classes.update(np.unique(values).tolist() if isinstance(values, np.ndarray)
                                and values.dtype.kind in "biuf" else set(values))

    def to_dict(self) -> dict[str, Any]:
        """The whole state as numbers, strings, booleans and lists (JSON-ready), never a
        pickled object; the queues must be empty (after ``flush``).

        >>> est = Estimator(None, 1, window=3, warmup=2)
        >>> est.label([1.0, 2.0, 4.0], [1.5, 1.0, 3.0], np.full(3, np.nan))
        >>> est.observe([2.0, 5.0], np.full(2, np.nan))
        >>> again = Estimator.from_dict(est.to_dict())
        >>> again.estimates() == est.estimates(), again.to_dict() == est.to_dict()
        (True, True)
        """
        return {"enabled": self.enabled, "task": self.task, "positive_label": self.positive_label,
                "window": self.window, "warmup": self.warmup,
                "model": self.model.to_json() if self.model is not None else None,
                "classes": list(self.classes), "warm": [list(row) for row in self._warm],
                "predicted": self.predicted.to_dict() if self.predicted else None,
                "labelled": self.labelled.to_dict() if self.labelled else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Estimator:
        """The ``Estimator`` that ``to_dict`` described (``ValueError`` naming what is
        wrong)."""
        try:
            est = cls(data["task"], data["positive_label"], int(data["window"]),
                      int(data["warmup"]),
                      model_from_json(data["model"]) if data["model"] is not None else None,
                      bool(data["enabled"]))
            est.classes = set(data["classes"])
            est._warm = [tuple(row) for row in data["warm"]]
            for windows, key in ((est.predicted, "predicted"), (est.labelled, "labelled")):
                if windows is not None:
                    windows.load(data[key])
        except KeyError as e:
            raise ValueError(f"estimation state: missing {e.args[0]!r}") from None
        except TypeError as e:
            raise ValueError(f"estimation state: {e}") from None
        return est

    def snapshot(self) -> Snapshot:
        """A copy of the sums the metrics are computed from (cheap: a scrape takes it
        under the lock and computes the metrics after releasing it)."""
        def copy(windows: Windows | None) -> dict[Window, np.ndarray]:
            if windows is None or not self.enabled:
                return {}
            return {w: windows.sums(w).copy() for w in _WINDOWS if windows.sums(w)[0].any()}

        return Snapshot(self.model, len(self.classes) <= 2, copy(self.predicted),
                        copy(self.labelled))

    def estimates(self) -> list[Estimate]:
        return self.snapshot().estimates()

    def gaps(self) -> list[Gap]:
        return self.snapshot().gaps()


class Snapshot(NamedTuple):
    """What the estimates of one version are computed from, at one moment."""

    model: Calibrator | LossTable | None
    #: at most two classes seen: accuracy can be estimated
    binary: bool
    #: per-group sums of the windows that are not empty
    predicted: dict[Window, np.ndarray]
    labelled: dict[Window, np.ndarray]

    def estimates(self) -> list[Estimate]:
        """Every estimated metric, each cumulative then rolling (none before the model is
        known or while a window is empty)."""
        return [Estimate(metric, window, value, *_bounds(metric, value, sigma))
                for metric, window, value, sigma in self._metrics(self.predicted, False)]

    def gaps(self) -> list[Gap]:
        """Realised minus estimated metric over the labelled predictions of each window."""
        return [Gap(metric, window, value, BAND * sigma)
                for metric, window, value, sigma in self._metrics(self.labelled, True)]

    def _metrics(self, windows: dict[Window, np.ndarray], labelled: bool
                 ) -> list[tuple[str, Window, float, float]]:
        model = self.model
        by_window: dict[Window, dict[str, tuple[float, float]]] = {}
        for window, sums in windows.items():
            if isinstance(model, Calibrator):
                if labelled:
                    estimated = classification_estimates(
                        sums.reshape(3, 4, GROUPS).sum(axis=1), self.binary)
                    realised = _realised_classification(sums[0])
                else:
                    estimated = classification_estimates(sums, self.binary)
            else:
                estimated = regression_estimates(sums[0], model)
                if labelled:
                    n = float(sums[0].sum())
                    realised = {"mae": float(sums[1].sum()) / n,
                                "rmse": math.sqrt(float(sums[2].sum()) / n)}
            by_window[window] = {
                metric: ((realised[metric] - value) if labelled else value, sigma)
                for metric, (value, sigma) in estimated.items()}
        first = next(iter(by_window.values()), {})
        return [(metric, window, *metrics[metric])
                for metric in first for window, metrics in by_window.items()]


def _realised_classification(counts: np.ndarray) -> dict[str, float]:
    """The realised metrics of labelled pairs from their counts per group (River's
    formulas, as ``detector.performance`` computes them)."""
    by = counts.reshape(2, 2, 2, CELLS)         # correct, label positive, predicted positive
    cells = by.sum(axis=3).transpose(0, 2, 1).ravel().tolist()
    accuracy, precision, recall, f1 = _binary(cells)
    per_cell = by.sum(axis=(0, 2))             # label positive x score cell
    return {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1,
            "roc_auc": _roc_auc(_interleave(per_cell[0], per_cell[1]))}


def _scores(scores: Sequence[float | None]) -> np.ndarray:
    """Scores as floats, NaN where there is none."""
    if None not in scores:
        return np.array(scores, dtype=np.float64)
    return np.fromiter((math.nan if s is None else s for s in scores), dtype=np.float64,
                       count=len(scores))


def _classes(values: Sequence[Target]) -> np.ndarray | Sequence[Target]:
    """Classes (or real values) as a numeric array when they are all numbers (booleans
    and integers included), else as they are.

    >>> _classes((1, 0, True)).dtype.kind, _classes((1, "a"))
    ('i', (1, 'a'))
    """
    if all(type(v) in (int, float, bool) for v in values):
        return np.asarray(values)
    return values


def _listed(values: Sequence[Target] | np.ndarray) -> Sequence[Target]:
    """Python values (an integer class stays an ``int``, as ``infer_task`` reads it)."""
    return values.tolist() if isinstance(values, np.ndarray) else values


def _equal(a: Sequence[Target] | np.ndarray, b: Sequence[Target] | np.ndarray) -> np.ndarray:
    """Elementwise ``a == b``."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a == b
    return np.fromiter((x == y for x, y in zip(a, b)), dtype=bool, count=len(a))
