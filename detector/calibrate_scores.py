"""Models that turn a prediction into what its label is expected to be, fitted on labelled
pairs: the score calibrator of a classifier and the expected-loss table of a regressor.

Both are plain numbers (``to_json``/``from_json``), stored in a profile or fitted on the
first labelled pairs of a model version, and applied to whole columns at once.

**Calibrator: isotonic regression.** ``Calibrator`` maps a score to the probability
that the label is the positive class: the pool-adjacent-violators fit of the 0/1
outcomes on the scores (the monotone step function closest to them in squared error),
linearly interpolated between the ends of its steps and clipped outside the fitted
range. Isotonic rather than Platt (a logistic curve of the score) or beta calibration (a
three-parameter family): the estimates are averages of calibrated probabilities over a
window, so a calibrator's *bias* is what survives the averaging, and a parametric curve
is biased wherever the model's miscalibration does not have its shape (a tree ensemble's
plateaus, a score squashed at one end), while isotonic regression assumes only that a
higher score does not mean a lower probability. Its variance is larger on few pairs, but
that averages out over a window, and the fit keeps the mean exactly (the calibrated
probabilities of the fitting pairs sum to their positives). It is also the choice NannyML
made for CBPE. ``bench/estimation.py`` measures the difference.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> score = rng.uniform(0, 1, 20_000)
>>> truth = score ** 2                                 # an over-confident model
>>> cal = fit_calibrator(score, rng.uniform(0, 1, score.size) < truth, positive_label=1)
>>> np.round(cal.apply(np.array([0.1, 0.5, 0.9])), 2)
array([0.  , 0.25, 0.83])

**Expected loss (regression).** ``LossTable`` is a direct-loss-estimation model in its
simplest sound form: the reference's predictions cut into quantile bins, and per bin the
mean and variance of the absolute and of the squared error of the pairs in it. The
expected error of a new prediction is its bin's mean. It sees the error change with the
predicted value (heteroscedastic noise, a model that is worse at the extremes), not with
inputs that leave the prediction unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import isotonic_regression

from detector.events import Target

#: pairs of a loss table bin (at least), and bins at most
MIN_BIN_PAIRS = 50
MAX_BINS = 20


@dataclass(frozen=True, eq=False)
class Calibrator:
    """Isotonic map from a score to P(label == ``positive_label``).

    ``x`` are increasing scores, ``y`` the non-decreasing probabilities at them; between
    knots the map is linear, outside them constant.
    """

    x: np.ndarray
    y: np.ndarray
    positive_label: Target
    #: labelled pairs it was fitted on
    pairs: int

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``scores`` (an array of finite floats)."""
        return np.interp(scores, self.x, self.y)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "isotonic", "positive_label": self.positive_label, "pairs": self.pairs,
                "x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Calibrator:
        """Raises ``ValueError`` saying what is wrong."""
        x, y = _floats(d, "x"), _floats(d, "y")
        if x.size == 0 or x.size != y.size or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError("calibrator: 'x' and 'y' must be non-decreasing, of equal length")
        if np.any((y < 0) | (y > 1)):
            raise ValueError("calibrator: 'y' must be probabilities")
        return cls(x, y, _target(d.get("positive_label")), int(d.get("pairs", 0)))


def fit_calibrator(scores: np.ndarray, positive: np.ndarray, positive_label: Target) -> Calibrator:
    """The isotonic calibrator of 0/1 outcomes ``positive`` on ``scores``.

    Equal scores are pooled first (weighted by their count); each step of the fit keeps
    its two ends as knots, so the map is flat on a step and linear between steps.

    >>> cal = fit_calibrator(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]), 1)
    >>> cal.x.tolist(), cal.y.tolist()
    ([0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.5, 1.0])
    """
    scores = np.asarray(scores, dtype=np.float64)
    outcome = np.asarray(positive, dtype=np.float64)
    if scores.size == 0 or scores.shape != outcome.shape or not np.all(np.isfinite(scores)):
        raise ValueError("calibrator: needs at least one pair of a finite score and an outcome")
    unique, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=outcome) / counts
    fitted = isotonic_regression(means, weights=counts.astype(np.float64)).x
    # keep the first and last point of every constant step
    change = np.diff(fitted) != 0
    keep = np.zeros(unique.size, dtype=bool)
    keep[0] = keep[-1] = True
    keep[:-1] |= change
    keep[1:] |= change
    return Calibrator(unique[keep], np.clip(fitted[keep], 0.0, 1.0), positive_label,
                      int(scores.size))


@dataclass(frozen=True, eq=False)
class LossTable:
    """Expected absolute and squared error of a regressor's prediction, by its bin.

    ``edges`` cut predictions into ``edges.size + 1`` bins (``searchsorted(...,
    "right")``); per bin the mean and variance of ``|y - ŷ|`` and of ``(y - ŷ)²``.
    """

    edges: np.ndarray
    mean_abs: np.ndarray
    var_abs: np.ndarray
    mean_sq: np.ndarray
    var_sq: np.ndarray
    pairs: int

    def bins(self, predictions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.edges, predictions, side="right")

    def to_json(self) -> dict[str, Any]:
        return {"kind": "loss_table", "pairs": self.pairs, "edges": self.edges.tolist(),
                "mean_abs": self.mean_abs.tolist(), "var_abs": self.var_abs.tolist(),
                "mean_sq": self.mean_sq.tolist(), "var_sq": self.var_sq.tolist()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LossTable:
        """Raises ``ValueError`` saying what is wrong."""
        edges = _floats(d, "edges")
        columns = [_floats(d, key) for key in ("mean_abs", "var_abs", "mean_sq", "var_sq")]
        if any(c.size != edges.size + 1 or np.any(c < 0) for c in columns) or np.any(
                np.diff(edges) <= 0):
            raise ValueError("loss table: increasing 'edges' and one value >= 0 per bin needed")
        return cls(edges, *columns, pairs=int(d.get("pairs", 0)))


def fit_loss_table(predictions: np.ndarray, labels: np.ndarray) -> LossTable:
    """The loss table of labelled pairs: quantile bins of the predictions with at least
    ``MIN_BIN_PAIRS`` pairs each (at most ``MAX_BINS``).

    >>> rng = np.random.default_rng(1)
    >>> pred = rng.uniform(0, 10, 5000)
    >>> table = fit_loss_table(pred, pred + rng.normal(0, 1 + pred / 5, pred.size))
    >>> table.edges.size + 1, round(float(table.mean_abs[0]), 1), round(float(table.mean_abs[-1]), 1)
    (20, 0.8, 2.6)
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if predictions.size == 0 or predictions.shape != labels.shape or not (
            np.all(np.isfinite(predictions)) and np.all(np.isfinite(labels))):
        raise ValueError("loss table: needs at least one pair of finite numbers")
    bins = max(1, min(MAX_BINS, predictions.size // MIN_BIN_PAIRS))
    edges = np.unique(np.quantile(predictions, np.arange(1, bins) / bins))
    code = np.searchsorted(edges, predictions, side="right")
    k = edges.size + 1
    n = np.bincount(code, minlength=k).astype(np.float64)
    error = labels - predictions
    absolute, squared = np.abs(error), error * error
    out = []
    for values in (absolute, squared):
        mean = np.bincount(code, weights=values, minlength=k) / np.maximum(n, 1.0)
        second = np.bincount(code, weights=values * values, minlength=k) / np.maximum(n, 1.0)
        out += [mean, np.maximum(second - mean * mean, 0.0)]
    return LossTable(edges, *out, pairs=int(predictions.size))


def model_from_json(d: Mapping[str, Any]) -> Calibrator | LossTable:
    """The model a profile's ``estimation`` entry describes (``ValueError`` if none)."""
    if not isinstance(d, Mapping):
        raise ValueError("estimation: not an object")
    kind = d.get("kind")
    if kind == "isotonic":
        return Calibrator.from_json(d)
    if kind == "loss_table":
        return LossTable.from_json(d)
    raise ValueError(f"estimation: unknown kind {kind!r} (isotonic, loss_table)")


def _floats(d: Mapping[str, Any], key: str) -> np.ndarray:
    try:
        values = np.asarray(d[key], dtype=np.float64)
    except KeyError:
        raise ValueError(f"estimation: missing {key!r}") from None
    except (TypeError, ValueError):
        raise ValueError(f"estimation: {key!r} must be a list of numbers") from None
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError(f"estimation: {key!r} must be a list of finite numbers")
    return values


def _target(value: Any) -> Target:
    if isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise ValueError("calibrator: 'positive_label' must be a class")
