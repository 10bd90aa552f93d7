"""``detector.performance.Performance`` against River's own metric classes.

The reference below is River's ``Accuracy``, ``Precision``, ``Recall``, ``F1``, ``ROCAUC``,
``MAE``, ``RMSE`` and ``R2``, cumulative and in ``utils.Rolling``, fed pair by pair as the
monitor fed them before. Equal means equal: every ``(metric, window, value)`` is compared
by ``repr`` (so -0.0 is not 0.0, and a complex RMSE is a complex RMSE), after every pair
or every few pairs, on binary, multiclass, string and boolean classes, windows 1..50 and
1000, and a 200k-pair stream.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import metrics, utils

from detector.events import Target
from detector.performance import THRESHOLDS, Performance, infer_task

_CLASSIFICATION = {"accuracy": metrics.Accuracy, "precision": metrics.Precision,
                   "recall": metrics.Recall, "f1": metrics.F1}
_REGRESSION = {"mae": metrics.MAE, "rmse": metrics.RMSE, "r2": metrics.R2}

Pair = tuple[Target, Target, "float | None"]


class _EmptyR2:
    """Stands in for ``Rolling(R2, window_size=1)``, which raises on its second pair."""

    def update(self, y_true: float, y_pred: float) -> None:
        pass

    def get(self) -> float:
        return 0.0


class RiverPerformance:
    """The reference: River objects, updated as ``monitor.Performance`` updated them."""

    def __init__(self, task: str | None, positive_label: Target, window: int,
                 max_classes: int = 100) -> None:
        self.task, self.pairs, self.scored = task, 0, 0
        self.max_classes, self.classes = max_classes, set()
        self._positive, self._window = positive_label, window
        self._metrics: list[tuple[str, str, Any]] = []
        self._auc: list[tuple[str, str, Any]] = []
        if task is not None:
            self._build(task)

    def _build(self, task: str) -> None:
        self.task = task
        # River's binary metrics on labels mapped to "is the positive class" (River reads
        # the wrong cell for a pos_val other than 1 or True; see detector.performance)
        kwargs = {"pos_val": True} if task == "classification" else {}
        for name, cls in (_CLASSIFICATION if task == "classification" else _REGRESSION).items():
            kw = kwargs if name != "accuracy" else {}
            self._metrics.append((name, "cumulative", cls(**kw)))
            rolling = (_EmptyR2() if name == "r2" and self._window == 1
                       else utils.Rolling(cls, window_size=self._window, **kw))
            self._metrics.append((name, "rolling", rolling))
        if task == "classification":
            self._auc = [
                ("roc_auc", "cumulative", metrics.ROCAUC(pos_val=True)),
                ("roc_auc", "rolling", utils.Rolling(metrics.ROCAUC, window_size=self._window,
                                                     pos_val=True))]

    def update(self, y_true: Target, y_pred: Target, score: float | None) -> float | None:
        if self.task is None:
            self._build(infer_task(y_pred, score))
        if self.task == "classification" and (
                y_true not in self.classes or y_pred not in self.classes):
            if len(self.classes | {y_true, y_pred}) > self.max_classes:
                return None
            self.classes.update((y_true, y_pred))
        self.pairs += 1
        positive = self._positive
        for name, _, metric in self._metrics:
            if self.task == "classification" and name != "accuracy":
                metric.update(y_true == positive, y_pred == positive)
            else:
                metric.update(y_true, y_pred)
        if score is not None and self._auc:
            self.scored += 1
            for _, _, metric in self._auc:
                metric.update(y_true == positive, score)
        if self.task == "classification":
            return float(y_true != y_pred)
        return abs(float(y_true) - float(y_pred))

    def values(self) -> Iterator[tuple[str, str, Any]]:
        if self.pairs:
            for name, window, metric in self._metrics:
                value = metric.get()
                # River's rolling RMSE can be complex (a mean of squares a hair below 0)
                yield name, window, 0.0 if isinstance(value, complex) else value
        if self.scored:
            for name, window, metric in self._auc:
                yield name, window, metric.get()


def exact(values: Iterator[tuple[str, str, Any]]) -> list[tuple[str, str, str]]:
    """Values by ``repr``: bit for bit, sign of zero and complex results included."""
    return [(name, window, repr(complex(v)) if isinstance(v, complex) else repr(float(v)))
            for name, window, v in values]


def by_name(values: Iterator[tuple[str, str, Any]]) -> dict[tuple[str, str], Any]:
    return {(name, window): value for name, window, value in values}


def run_both(pairs: Sequence[Pair], task: str | None, positive: Target, window: int,
             max_classes: int = 100, every: int = 1) -> Performance:
    """Feed both; compare returns after every pair and values every ``every`` pairs."""
    ours, river = Performance(task, positive, window, max_classes), RiverPerformance(
        task, positive, window, max_classes)  # type: ignore[arg-type]
    for i, (y_true, y_pred, score) in enumerate(pairs):
        assert ours.update(y_true, y_pred, score) == river.update(y_true, y_pred, score)
        if i % every == 0 or i == len(pairs) - 1:
            assert exact(ours.values()) == exact(river.values()), f"after pair {i}"
    assert (ours.task, ours.pairs, ours.scored, set(ours.classes)) == (
        river.task, river.pairs, river.scored, river.classes)
    return ours


ALPHABETS: list[list[Target]] = [
    [0, 1], [0, 1, 2, 3, 4], ["cat", "dog", "ant"], [True, False], [0, 1, True, False, 1.0]]
POSITIVES: list[Target] = [1, 0, True, False, 1.0, 2, "cat", "1"]
# scores at, just beside and between River's thresholds, outside [0, 1], and NaN
EDGES = [t + d for t in THRESHOLDS + tuple(i / 9 for i in range(10)) for d in (0.0, 1e-9, -1e-9)]
SCORES = st.one_of(st.none(), st.floats(0.0, 1.0), st.sampled_from(EDGES),
                   st.floats(-0.5, 1.5), st.just(math.nan))


@st.composite
def classification_streams(draw: st.DrawFn) -> tuple[list[Pair], Target, int, int]:
    alphabet = draw(st.sampled_from(ALPHABETS))
    label = st.sampled_from(alphabet)
    pairs = draw(st.lists(st.tuples(label, label, SCORES), max_size=250))
    return (pairs, draw(st.sampled_from(POSITIVES)), draw(st.integers(1, 50)),
            draw(st.sampled_from([2, 3, 100])))


def test_thresholds_are_rivers() -> None:
    assert list(THRESHOLDS) == metrics.ROCAUC().thresholds


@settings(max_examples=300, deadline=None)
@given(classification_streams())
def test_classification_equals_river_after_every_pair(
        stream: tuple[list[Pair], Target, int, int]) -> None:
    pairs, positive, window, max_classes = stream
    run_both(pairs, "classification", positive, window, max_classes)


@pytest.mark.parametrize("seed", range(12))
def test_seeded_classification_streams(seed: int) -> None:
    rng = np.random.default_rng(seed)
    alphabet = ALPHABETS[seed % len(ALPHABETS)]
    positive = POSITIVES[seed % len(POSITIVES)]
    n = 6000
    truth = rng.integers(0, len(alphabet), n)
    # a prediction right 70 % of the time and a score leaning to the truth
    pred = np.where(rng.random(n) < 0.7, truth, rng.integers(0, len(alphabet), n))
    score = np.clip(0.3 * (truth == 1) + rng.beta(2, 3, n), 0.0, 1.0).round(int(seed % 4) + 1)
    scored = rng.random(n) < 0.8
    pairs = [(alphabet[t], alphabet[p], float(s) if k else None)
             for t, p, s, k in zip(truth.tolist(), pred.tolist(), score.tolist(),
                                   scored.tolist())]
    run_both(pairs, "classification", positive, int(rng.integers(1, 51)), every=7)


def test_long_stream_equals_river() -> None:
    """200k pairs, the default window of 1000, a model that drifts from good to bad."""
    rng = np.random.default_rng(2024)
    n = 200_000
    truth = (rng.random(n) < np.linspace(0.1, 0.4, n)).astype(int)
    skill = np.linspace(2.0, 0.2, n)
    score = 1.0 / (1.0 + np.exp(-(skill * (2 * truth - 1) + rng.normal(0.0, 1.0, n))))
    pred = (score > 0.5).astype(int)
    pairs = list(zip(truth.tolist(), pred.tolist(), score.tolist()))
    perf = run_both(pairs, "classification", 1, 1000, every=997)
    assert perf.pairs == perf.scored == n


@pytest.mark.parametrize("window", [1, 2, 50])
def test_class_cap_refuses_the_pair_and_counts_nothing(window: int) -> None:
    ours = Performance("classification", "a", window, max_classes=3)
    river = RiverPerformance("classification", "a", window, max_classes=3)
    for y_true, y_pred, score in [("a", "b", 0.9), ("c", "a", 0.2), ("a", "a", 0.7)]:
        assert ours.update(y_true, y_pred, score) == river.update(y_true, y_pred, score)
    before = ours.to_dict()
    assert ours.update("d", "a", 0.5) is None and ours.update("a", "e", None) is None
    assert ours.to_dict() == before and list(ours.classes) == ["a", "b", "c"]
    assert ours.update("b", "c", 0.1) == 1.0
    river.update("b", "c", 0.1)
    assert exact(ours.values()) == exact(river.values())


def test_the_positive_label_is_the_positive_class_whatever_its_type() -> None:
    """River 0.26 reads the negative class for pos_val 0 and nothing for a string pos_val
    (precision 0.0); here each is the positive label's, as River gives for pos_val 1."""
    ones: list[Pair] = [(1, 1, 0.8), (0, 0, 0.2), (0, 1, 0.6), (1, 0, 0.3), (1, 1, 0.9)]
    as_ones = by_name(run_both(ones, "classification", 1, 10).values())
    for positive, negative in ((0, 1), ("fraud", "ok"), (False, True)):
        swapped = [(positive if t else negative, positive if p else negative,
                    s) for t, p, s in ones]
        river = metrics.Precision(pos_val=positive)
        for t, p, _ in swapped:
            river.update(t, p)
        assert river.get() != as_ones[("precision", "cumulative")]       # River's mistake
        ours = Performance("classification", positive, 10)
        for t, p, s in swapped:
            ours.update(t, p, s)
        assert by_name(ours.values()) == as_ones, positive


FINITE = st.one_of(st.floats(-1e6, 1e6), st.integers(-1000, 1000), st.just(0.0),
                   st.floats(-1.0, 1.0))


@st.composite
def regression_streams(draw: st.DrawFn) -> tuple[list[Pair], int]:
    values = draw(st.lists(st.tuples(FINITE, FINITE), max_size=250))
    # many exact predictions: the errors leaving the window are the only non-zero ones
    exact_share = draw(st.sampled_from([0.0, 0.5, 0.9]))
    pairs = [(y, y if (i * 7919 % 100) < exact_share * 100 else p, None)
             for i, (y, p) in enumerate(values)]
    return pairs, draw(st.integers(1, 50))


@settings(max_examples=300, deadline=None)
@given(regression_streams())
def test_regression_equals_river_after_every_pair(stream: tuple[list[Pair], int]) -> None:
    pairs, window = stream
    run_both(pairs, "regression", 1, window)


@pytest.mark.parametrize("seed", range(6))
def test_seeded_regression_streams(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 20_000
    y = rng.normal(100.0, 30.0, n) * rng.choice([1.0, 1e-3, 1e4], n)
    pred = np.where(rng.random(n) < 0.3, y, y + rng.standard_t(3, n))
    if seed % 2:
        y, pred = y.round(), pred.round()
    run_both([(a, b, None) for a, b in zip(y.tolist(), pred.tolist())], "regression", 1,
             int(rng.integers(1, 60)), every=5)


def test_long_regression_stream_equals_river() -> None:
    rng = np.random.default_rng(99)
    n = 200_000
    y = rng.normal(0.0, 1.0, n).cumsum()
    pred = y + rng.normal(0.0, np.linspace(0.1, 3.0, n))
    run_both([(a, b, None) for a, b in zip(y.tolist(), pred.tolist())], "regression", 1,
             1000, every=1009)


def test_rolling_rmse_is_zero_where_rivers_is_complex() -> None:
    """River's rolling mean of squared errors drifts below 0 when the last large error
    leaves a window of exact predictions: its RMSE is then complex, which no exposition
    can print. Ours is 0.0 there."""
    pairs: list[Pair] = [(0.0, 0.0 if i % 5 else 77.7 * (i % 13), None) for i in range(200)]
    river = utils.Rolling(metrics.RMSE, window_size=3)
    ours = Performance("regression", 1, 3)
    complexes = 0
    for y_true, y_pred, _ in pairs:
        river.update(y_true, y_pred)
        ours.update(y_true, y_pred, None)
        rmse = by_name(ours.values())[("rmse", "rolling")]
        if isinstance(river.get(), complex):
            complexes += 1
            assert rmse == 0.0
        else:
            assert rmse == river.get()
    assert complexes > 10


def test_river_rolling_r2_of_one_pair_raises_and_ours_is_zero() -> None:
    rolling = utils.Rolling(metrics.R2, window_size=1)
    rolling.update(1.0, 2.0)
    with pytest.raises(ZeroDivisionError):
        rolling.update(3.0, 2.5)
    ours = Performance("regression", 1, 1)
    for y_true, y_pred in [(1.0, 2.0), (3.0, 2.5), (4.0, 4.0)]:
        ours.update(y_true, y_pred, None)
    assert by_name(ours.values())[("r2", "rolling")] == 0.0


@pytest.mark.parametrize("first", [(1, 1, None), (0.4, 0.37, None), (1.0, 1.0, 0.8),
                                   ("a", "b", None), (True, False, 0.1)])
def test_task_is_inferred_from_the_first_pair(first: Pair) -> None:
    more = [first] * 3
    ours = run_both(more, None, 1, 5)
    assert ours.task == infer_task(first[1], first[2])
    assert list(Performance(None, 1, 5).values()) == []


def _json(perf: Performance) -> Performance:
    return Performance.from_dict(json.loads(json.dumps(perf.to_dict())))


@settings(max_examples=150, deadline=None)
@given(st.one_of(classification_streams().map(lambda s: ("classification", s[0], s[1], s[2])),
                 regression_streams().map(lambda s: ("regression", s[0], 1, s[1]))),
       st.integers(0, 250))
def test_to_dict_round_trip_continues_identically(
        stream: tuple[str, list[Pair], Target, int], cut: int) -> None:
    task, pairs, positive, window = stream
    cut = min(cut, len(pairs))
    ours = Performance(task, positive, window)  # type: ignore[arg-type]
    for pair in pairs[:cut]:
        ours.update(*pair)
    restored = _json(ours)
    assert restored.to_dict() == ours.to_dict()
    for pair in pairs[cut:]:
        assert restored.update(*pair) == ours.update(*pair)
        assert exact(restored.values()) == exact(ours.values())
    assert (restored.pairs, restored.scored, restored.classes) == (
        ours.pairs, ours.scored, ours.classes)


def test_round_trip_before_any_pair_keeps_the_task_open() -> None:
    restored = _json(Performance(None, True, 10))
    assert restored.task is None
    assert restored.update(True, False, 0.3) == 1.0 and restored.task == "classification"


@pytest.mark.parametrize(("change", "message"), [
    ({"counts": [0] * 7}, "'counts' must be 8"),
    ({"window_pairs": [0] * 11}, "'window_pairs' must be at most 10"),
    ({"window_scores": [22]}, "in 0..21"),
    ({"task": "ranking"}, "unknown task"),
    ({"scored": None}, "performance state"),
])
def test_from_dict_refuses_a_bad_state(change: dict[str, Any], message: str) -> None:
    perf = Performance("classification", 1, 10)
    perf.update(1, 0, 0.4)
    with pytest.raises(ValueError, match=message):
        Performance.from_dict(perf.to_dict() | change)
    data = perf.to_dict()
    del data["score_counts"]
    with pytest.raises(ValueError, match="missing 'score_counts'"):
        Performance.from_dict(data)


def test_from_dict_refuses_a_bad_regression_window() -> None:
    perf = Performance("regression", 1, 4)
    perf.update(1.0, 0.5, None)
    data = perf.to_dict()
    data["window_pairs"]["abs"] = [0.5, 0.5]
    with pytest.raises(ValueError, match="unequal length"):
        Performance.from_dict(data)
