"""Model performance on joined (label, prediction) pairs, from plain counts.

The values are River's, to the bit: ``Accuracy``, ``Precision``, ``Recall``, ``F1`` and
``ROCAUC`` for classification, ``MAE``, ``RMSE`` and ``R2`` for regression, each
cumulative and over a ``utils.Rolling`` window of the last ``window`` pairs. The state
is not River's objects but what those objects compute from:

- classification: each pair is one of 8 cells (label is the positive class, prediction
  is, label equals prediction); a cumulative count per cell, and a ring of the last
  ``window`` cells with their counts. One pair costs one cell and one ring slot where
  River pays 28 confusion-matrix updates and 14 reverts.
- ROC AUC: each scored pair is one of 22 cells (how many of River's 10 thresholds the
  score exceeds, label is positive); per-threshold confusion counts are sums of those,
  and the curve is integrated by River's own call, ``-scipy.integrate.trapezoid``.
- regression: River's running means and Welford variance, the same floating-point
  operations in the same order (values depend on that order), with a ring of the last
  ``window`` pairs' terms for the reverts.

State is numbers, lists and byte arrays (``to_dict``/``from_dict``), never pickled
objects.

Three departures from River 0.26, each where River is wrong:

- River's binary metrics compare each label with ``pos_val`` and then read the
  confusion-matrix cell keyed by ``pos_val`` itself. With ``pos_val`` 1 or ``True`` that
  is the positive class, and the values here are River's; with 0 or ``False`` River
  reports the *negative* class (a negative ROC AUC), with a string class (``"fraud"``)
  or 2 it reports 0.0. Here precision, recall, F1 and ROC AUC are always those of
  ``positive_label``: River's own values on the labels mapped to ``label ==
  positive_label`` with ``pos_val=True``.
- ``Rolling(RMSE)`` can return a complex number (its running mean of squared errors
  drifts a hair below 0 once the large errors have left the window); here it is 0.0.
- River's ``Rolling(R2)`` with ``window=1`` raises ZeroDivisionError on the second pair
  (its revert divides by the empty count); here that rolling R2 is 0.0, River's value
  for fewer than two pairs.

>>> perf = Performance("classification", positive_label=1, window=2)
>>> for y_true, y_pred, score in [(1, 1, 0.9), (0, 1, 0.6), (1, 0, 0.4), (0, 0, 0.1)]:
...     _ = perf.update(y_true, y_pred, score)
>>> for name, window, value in perf.values():
...     print(f"{name} {window} {value:.4f}")
accuracy cumulative 0.5000
accuracy rolling 0.5000
precision cumulative 0.5000
precision rolling 0.0000
recall cumulative 0.5000
recall rolling 0.0000
f1 cumulative 0.5000
f1 rolling 0.0000
roc_auc cumulative 0.7500
roc_auc rolling 1.0000
>>> list(Performance.from_dict(perf.to_dict()).values()) == list(perf.values())
True
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from scipy import integrate

from detector.events import Target

Task = Literal["classification", "regression"]
Window = Literal["cumulative", "rolling"]

#: River's ``ROCAUC`` default number of thresholds, and its thresholds, computed as it does
N_THRESHOLDS = 10
THRESHOLDS: tuple[float, ...] = tuple(
    t - 1e-7 if i == 0 else t + 1e-7 if i == N_THRESHOLDS - 1 else t
    for i, t in enumerate(i / (N_THRESHOLDS - 1) for i in range(N_THRESHOLDS)))

# A classification pair's cell, 3 bits: 1 the label is the positive class, 2 the
# prediction is, 4 the label equals the prediction.
_CELLS = 8
# A scored pair's cell: 2 * (thresholds the score exceeds) + (label is the positive class)
_SCORE_CELLS = 2 * (N_THRESHOLDS + 1)
# Cumulative regression state: count, MAE mean, MSE mean, label mean, Welford S, RSS
_REGRESSION_STATE = 6


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


def infer_task(prediction: Target, score: float | None) -> Literal["classification", "regression"]:
    """Classification when the output is a class (string, boolean, integer) or has a score.

    >>> infer_task(1, None), infer_task(0.37, None), infer_task(1.0, 0.8)
    ('classification', 'regression', 'classification')
    """
    if score is not None or isinstance(prediction, str | bool | int):
        return "classification"
    return "regression"


class Performance:
    """River's metrics on joined (label, prediction) pairs, cumulative and rolling.

    With ``task=None`` (``auto``) the task is inferred from the first scored pair, not
    from the first prediction: a stray first message cannot decide it for good, and a
    pair is what the metrics are about. At most ``max_classes`` distinct classes are
    scored (as when River's confusion matrices grew with every class): a pair bringing
    one more is refused (``update`` returns None).

    Parameters
    ----------
    task
        ``classification``, ``regression``, or None to infer it from the first pair.
    positive_label
        River's ``pos_val`` for precision, recall, F1 and ROC AUC.
    window
        Pairs in the rolling window (scored pairs for the rolling ROC AUC), at least 1.
    max_classes
        Distinct classes scored (classification).
    """

    def __init__(self, task: Task | None, positive_label: Target, window: int,
                 max_classes: int = 100) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        if task not in (None, "classification", "regression"):
            raise ValueError(f"unknown task {task!r}")
        self.task: Task | None = None
        self.pairs = 0
        self.scored = 0
        self.max_classes = max_classes
        #: the classes scored, in order of arrival (a dict as an ordered set: the state
        #: written by ``to_dict`` does not depend on hashing)
        self.classes: dict[Target, None] = {}
        self._positive, self._window = positive_label, window
        if task is not None:
            self._build(task)

    def _build(self, task: Task) -> None:
        self.task = task
        w = self._window
        if task == "classification":
            self._counts = [0] * _CELLS
            self._rolling = [0] * _CELLS
            self._ring, self._head, self._full = bytearray(w), 0, False
            self._score_counts = [0] * _SCORE_CELLS
            self._score_rolling = [0] * _SCORE_CELLS
            self._score_ring, self._score_head, self._score_full = bytearray(w), 0, False
        else:
            # count, MAE mean, MSE mean, label mean, Welford S, RSS (River's attributes)
            self._totals = self._window_totals = (0.0,) * _REGRESSION_STATE
            # the terms each pair in the window brings (River recomputes them to revert)
            self._abs, self._sq = array("d", bytes(8 * w)), array("d", bytes(8 * w))
            self._y, self._res = array("d", bytes(8 * w)), array("d", bytes(8 * w))
            self._head, self._full = 0, False

    def update(self, y_true: Target, y_pred: Target, score: float | None) -> float | None:
        """Count one pair; return its error (0/1, or the absolute error), or None (nothing
        counted) when the pair would bring more than ``max_classes`` classes.

        ``score`` is the probability of ``positive_label``; pairs without one do not
        count for ROC AUC.
        """
        task = self.task
        if task is None:
            task = infer_task(y_pred, score)
            self._build(task)
        if task == "classification":
            classes = self.classes
            if y_true not in classes or y_pred not in classes:
                if len(classes) + len({y_true, y_pred}.difference(classes)) > self.max_classes:
                    return None
                classes.setdefault(y_true)
                classes.setdefault(y_pred)
            self.pairs += 1
            positive = self._positive
            label_positive = y_true == positive
            cell = label_positive + 2 * (y_pred == positive) + 4 * (y_true == y_pred)
            self._counts[cell] += 1
            rolling, ring, head = self._rolling, self._ring, self._head
            if self._full:
                rolling[ring[head]] -= 1
            ring[head] = cell
            rolling[cell] += 1
            head += 1
            if head == self._window:
                head, self._full = 0, True
            self._head = head
            if score is not None:
                self.scored += 1
                cell = 2 * bisect_left(THRESHOLDS, score) + label_positive
                self._score_counts[cell] += 1
                rolling, ring, head = self._score_rolling, self._score_ring, self._score_head
                if self._score_full:
                    rolling[ring[head]] -= 1
                ring[head] = cell
                rolling[cell] += 1
                head += 1
                if head == self._window:
                    head, self._score_full = 0, True
                self._score_head = head
            return float(y_true != y_pred)
        self._regress(y_true, y_pred)
        self.pairs += 1
        return abs(float(y_true) - float(y_pred))

    def _regress(self, y_true: Target, y_pred: Target) -> None:
        """River's MAE, MSE (for RMSE) and R2 updates, then ``Rolling``'s revert of the pair
        leaving the window and update, with River's operations in River's order."""
        err = y_true - y_pred  # type: ignore[operator]
        a, s, x, r = float(abs(err)), float(err ** 2), float(y_true), err * err * 1.0
        # cumulative: Mean.update (MAE, MSE), Var.update (R2's label variance), RSS
        n, mae, mse, mean, var_s, rss = self._totals
        n += 1.0
        old = mean
        mean = old + (1.0 / n) * (x - old)
        self._totals = (n, mae + (1.0 / n) * (a - mae), mse + (1.0 / n) * (s - mse), mean,
                        var_s + 1.0 * (x - old) * (x - mean), rss + r)
        # rolling: revert the oldest pair once the window is full, then update
        i = self._head
        n, mae, mse, mean, var_s, rss = self._window_totals
        if self._full:
            ao, so, xo, ro = self._abs[i], self._sq[i], self._y[i], self._res[i]
            n -= 1.0
            if n == 0:  # Mean.revert empties; River's R2 revert would divide by 0 here
                mae = mse = mean = var_s = rss = 0.0
            else:
                mae -= (1.0 / n) * (ao - mae)
                mse -= (1.0 / n) * (so - mse)
                old = mean
                mean = old + (-1.0 / n) * (xo - old)
                var_s += -1.0 * (xo - old) * (xo - mean)
                rss -= ro
        n += 1.0
        old = mean
        mean = old + (1.0 / n) * (x - old)
        self._window_totals = (n, mae + (1.0 / n) * (a - mae), mse + (1.0 / n) * (s - mse),
                               mean, var_s + 1.0 * (x - old) * (x - mean), rss + r)
        self._abs[i], self._sq[i], self._y[i], self._res[i] = a, s, x, r
        i += 1
        if i == self._window:
            i, self._full = 0, True
        self._head = i

    def values(self) -> Iterator[tuple[str, Window, float]]:
        """``(metric, window, value)`` for every metric that has seen data, in the order
        accuracy, precision, recall, f1, roc_auc or mae, rmse, r2; cumulative first."""
        if self.pairs and self.task == "classification":
            cumulative = _binary(self._counts)
            rolling = _binary(self._rolling)
            for name, c, r in zip(("accuracy", "precision", "recall", "f1"), cumulative, rolling):
                yield name, "cumulative", c
                yield name, "rolling", r
            if self.scored:
                yield "roc_auc", "cumulative", _roc_auc(self._score_counts)
                yield "roc_auc", "rolling", _roc_auc(self._score_rolling)
        elif self.pairs:
            n, mae, mse, _, var_s, rss = self._totals
            rn, rmae, rmse, _, rvar_s, rrss = self._window_totals
            yield "mae", "cumulative", mae
            yield "mae", "rolling", rmae
            # River's rolling mean of squared errors can drift a hair below 0 (its
            # root would be complex and break the exposition): that is 0
            yield "rmse", "cumulative", max(mse, 0.0) ** 0.5
            yield "rmse", "rolling", max(rmse, 0.0) ** 0.5
            yield "r2", "cumulative", _r2(n, var_s, rss)
            yield "r2", "rolling", _r2(rn, rvar_s, rrss)

    def to_dict(self) -> dict[str, Any]:
        """The whole state as numbers, strings, booleans and lists (JSON-ready, but a
        non-finite float stays a float). Windows are listed oldest first.

        >>> p = Performance(None, 1, window=3)
        >>> for y, q in [(1.0, 1.5), (2.0, 1.0), (4.0, 3.0), (0.5, 0.0)]:
        ...     _ = p.update(y, q, None)
        >>> d = p.to_dict()
        >>> d["task"], d["pairs"], d["window_pairs"]["abs"]
        ('regression', 4, [1.0, 1.0, 0.5])
        """
        out: dict[str, Any] = {
            "task": self.task, "positive_label": self._positive, "window": self._window,
            "max_classes": self.max_classes, "pairs": self.pairs, "scored": self.scored,
            "classes": list(self.classes)}
        if self.task == "classification":
            out["counts"] = list(self._counts)
            out["window_pairs"] = _oldest_first(self._ring, self._head, self._full)
            out["score_counts"] = list(self._score_counts)
            out["window_scores"] = _oldest_first(self._score_ring, self._score_head,
                                                 self._score_full)
        elif self.task == "regression":
            out["cumulative"] = list(self._totals)
            out["rolling"] = list(self._window_totals)
            out["window_pairs"] = {
                name: _oldest_first(column, self._head, self._full)
                for name, column in (("abs", self._abs), ("squared", self._sq),
                                     ("label", self._y), ("residual", self._res))}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Performance:
        """The ``Performance`` that ``to_dict`` described.

        Raises ``ValueError`` (naming the key) when the data is not such a state.
        """
        try:
            perf = cls(data["task"], data["positive_label"], int(data["window"]),
                       int(data["max_classes"]))
            perf.pairs, perf.scored = int(data["pairs"]), int(data["scored"])
            perf.classes = dict.fromkeys(data["classes"])
            if perf.task == "classification":
                perf._counts = _counts(data, "counts", _CELLS)
                perf._score_counts = _counts(data, "score_counts", _SCORE_CELLS)
                perf._ring, perf._head, perf._full, perf._rolling = _ring(
                    data, "window_pairs", perf._window, _CELLS)
                (perf._score_ring, perf._score_head, perf._score_full,
                 perf._score_rolling) = _ring(data, "window_scores", perf._window, _SCORE_CELLS)
            elif perf.task == "regression":
                perf._totals = _floats(data, "cumulative")
                perf._window_totals = _floats(data, "rolling")
                perf._load_window(data["window_pairs"])
        except KeyError as e:
            raise ValueError(f"performance state: missing {e.args[0]!r}") from None
        except TypeError as e:
            raise ValueError(f"performance state: {e}") from None
        return perf

    def _load_window(self, columns: Mapping[str, list[float]]) -> None:
        names = ("abs", "squared", "label", "residual")
        lengths = {len(columns[name]) for name in names}
        if len(lengths) != 1 or (size := lengths.pop()) > self._window:
            raise ValueError("performance state: 'window_pairs' columns of unequal length "
                             f"or longer than the window {self._window}")
        for name, column in zip(names, (self._abs, self._sq, self._y, self._res)):
            column[:size] = array("d", map(float, columns[name]))
        self._full = size == self._window
        self._head = 0 if self._full else size


def _binary(counts: list[int]) -> tuple[float, float, float, float]:
    """River's Accuracy, Precision, Recall and F1 of the positive class."""
    n = sum(counts)
    correct = counts[4] + counts[5] + counts[6] + counts[7]
    accuracy = correct / n if n else 0.0
    tp = counts[3] + counts[7]  # label and prediction positive
    fp = counts[2] + counts[6]
    fn = counts[1] + counts[5]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall else 0.0
    return accuracy, precision, recall, f1


def _roc_auc(counts: list[int]) -> float:
    """River's ROCAUC: per threshold, the true and false positive rates its confusion
    matrices give, then its trapezoid (with River's ``0.0`` for an empty rate)."""
    tprs = [0.0] * N_THRESHOLDS
    fprs = [0.0] * N_THRESHOLDS
    positives = sum(counts[1::2])
    negatives = sum(counts[0::2])
    above_pos = above_neg = 0
    # threshold j counts a score as above it when it exceeds j + 1 thresholds or more
    for j in range(N_THRESHOLDS - 1, -1, -1):
        above_neg += counts[2 * j + 2]
        above_pos += counts[2 * j + 3]
        tprs[j] = above_pos / positives if positives else 0.0
        fprs[j] = above_neg / negatives if negatives else 0.0
    return float(-integrate.trapezoid(x=fprs, y=tprs))


def _r2(n: float, var_s: float, rss: float) -> float:
    """River's R2 from its label variance (count ``n``, Welford ``S``) and RSS."""
    if n > 1:
        try:
            total_sum_of_squares = (n - 1) * (var_s / (n - 1))
            return 1 - (rss / total_sum_of_squares)
        except ZeroDivisionError:
            return 0.0
    return 0.0


def _oldest_first(ring: bytearray | array, head: int, full: bool) -> list[Any]:
    return list(ring[head:]) + list(ring[:head]) if full else list(ring[:head])


def _counts(data: Mapping[str, Any], key: str, size: int) -> list[int]:
    counts = [int(c) for c in data[key]]
    if len(counts) != size or min(counts) < 0:
        raise ValueError(f"performance state: {key!r} must be {size} counts >= 0")
    return counts


def _ring(data: Mapping[str, Any], key: str, window: int,
          size: int) -> tuple[bytearray, int, bool, list[int]]:
    cells = [int(c) for c in data[key]]
    if len(cells) > window or any(not 0 <= c < size for c in cells):
        raise ValueError(f"performance state: {key!r} must be at most {window} cells "
                         f"in 0..{size - 1}")
    ring = bytearray(window)
    ring[:len(cells)] = bytes(cells)
    rolling = [0] * size
    for c in cells:
        rolling[c] += 1
    full = len(cells) == window
    return ring, 0 if full else len(cells), full, rolling


def _floats(data: Mapping[str, Any], key: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in data[key])
    if len(values) != _REGRESSION_STATE:
        raise ValueError(f"performance state: {key!r} must be {_REGRESSION_STATE} numbers")
    return values
