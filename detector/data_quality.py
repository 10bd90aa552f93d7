"""Data quality of a model version's features: what its events carry against what the
reference says they should (the checks of SageMaker's constraints and whylogs).

The reference is the model's profile (``drift-detector profile``) when it has one, else
the version's first ``quality.warmup`` predictions. It says which features exist, what
kind each is (numeric or categorical), the range of a numeric one, the categories of a
categorical one and how often each is missing. From then on every batch is judged
against it, feature by feature, and each problem is counted under a reason:

* ``missing``: a prediction of the version without a value for the feature (absent,
  ``null``, or a value rejected with kind ``feature``). A feature that stopped arriving
  is missing from every prediction.
* ``out_of_range``: a number below the reference's smallest or above its largest value.
* ``unseen_category``: a category the reference does not have (judged only when the
  reference lists every category: a warm-up with at most ``quality.max_categories``
  distinct ones, or a profile whose ``other`` count is 0).
* ``type_mismatch``: a string where the reference has numbers, or a number where it has
  categories. The detectors of a numeric feature never see such a value, so without this
  count it would vanish.
* ``unannounced``: a value of a feature the reference does not have (not in the profile,
  or first seen after the warm-up).

Each judged feature also keeps the share of the reference's predictions that had no value
for it (``reference_missing``), to compare the recent missing rate with.

Everything here is pure: batches in, counts out; ``judge`` is the check of one column.

>>> from detector.config import QualitySettings
>>> q = VersionQuality(QualitySettings(warmup=4), profile=None, declared=None)
>>> q.update([{"x": 1.0, "c": "a"}, {"x": 3.0, "c": "b"}, {"x": 2.0}, {"x": 2.5, "c": "a"}],
...          {"x": [1.0, 3.0, 2.0, 2.5], "c": ["a", "b", "a"]})
>>> q.features["x"].expect
Expectation(kind='numeric', low=1.0, high=3.0, categories=None, reference_missing=0.0)
>>> q.update([{"x": 9.0, "c": "z", "new": 1.0}, {"x": "oops"}],
...          {"x": [9.0, "oops"], "c": ["z"], "new": [1.0]})
>>> {name: f.issues for name, f in q.features.items()}
{'x': {'missing': 0, 'out_of_range': 1, 'type_mismatch': 1}, 'c': {'missing': 1, 'unseen_category': 1, 'type_mismatch': 0}, 'new': {'unannounced': 1}}
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from detector.config import QualitySettings
from detector.events import FeatureValue
from detector.reference import NumericReference, Profile, Reference

Reason = Literal["missing", "out_of_range", "unseen_category", "type_mismatch", "unannounced"]
#: every reason, in the order the metrics show them
REASONS: tuple[Reason, ...] = ("missing", "out_of_range", "unseen_category", "type_mismatch",
                               "unannounced")


def digests(categories: Iterable[str]) -> np.ndarray:
    """Each category as a 64-bit digest (BLAKE2b, the same in every process), in order:
    8 bytes however long the name, so a feature's 1,000 categories take 8 KB.

    >>> d = digests(["b", "a", "b"])
    >>> d.dtype, bool(d[0] == d[2]), bool(d[0] == d[1])
    (dtype('uint64'), True, False)
    """
    return np.fromiter((int.from_bytes(hashlib.blake2b(c.encode("utf-8", "surrogatepass"),
                                                       digest_size=8).digest(), "little")
                        for c in categories), dtype=np.uint64)


@dataclass(frozen=True, slots=True, eq=False)
class Expectation:
    """What the reference says of one feature."""

    kind: Literal["numeric", "categorical"]
    #: the smallest and largest value of a numeric feature
    low: float | None = None
    high: float | None = None
    #: every category of a categorical feature (their sorted ``digests``); None when the
    #: reference does not list them all (then unseen categories are not judged)
    categories: np.ndarray | None = None
    #: share of the reference's predictions without a value for the feature
    reference_missing: float = 0.0

    def reasons(self) -> tuple[Reason, ...]:
        """The reasons this feature can be counted under (no series for the others).

        >>> Expectation("categorical").reasons()
        ('missing', 'type_mismatch')
        """
        if self.kind == "numeric":
            return ("missing", "out_of_range", "type_mismatch")
        if self.categories is None:
            return ("missing", "type_mismatch")
        return ("missing", "unseen_category", "type_mismatch")


def from_reference(reference: Reference, column: Mapping[str, Any] | None) -> Expectation:
    """The expectation a profile gives for one feature: its reference, and the profile's
    ``columns`` entry for it (``min``, ``max``, ``missing_share``) when there is one.

    A numeric reference without ``min``/``max`` uses its sample's ends (the profile's
    sample keeps the smallest and the largest value it drew).

    >>> ref = NumericReference.from_values(np.arange(10.0), bins=2)
    >>> from_reference(ref, {"min": -1.0, "max": 12.0, "missing_share": 0.25})
    Expectation(kind='numeric', low=-1.0, high=12.0, categories=None, reference_missing=0.25)
    """
    column = column or {}
    missing = float(column.get("missing_share", 0.0))
    if isinstance(reference, NumericReference):
        return Expectation("numeric", float(column.get("min", reference.sample[0])),
                           float(column.get("max", reference.sample[-1])),
                           reference_missing=missing)
    complete = int(reference.counts[-1]) == 0
    return Expectation("categorical",
                       categories=np.unique(digests(reference.categories)) if complete
                       else None,
                       reference_missing=missing)


def learn(values: Sequence[float | str], rows: int, max_categories: int) -> Expectation:
    """The expectation of a feature from its values in the reference's ``rows``
    predictions: numeric when at least half of them are numbers (as the reference
    windows decide), with their range; else categorical, with its categories if there
    are at most ``max_categories``.

    >>> learn([2.0, 5.0, "x"], rows=4, max_categories=10)
    Expectation(kind='numeric', low=2.0, high=5.0, categories=None, reference_missing=0.25)
    >>> learn(["a", "b", "a"], rows=3, max_categories=1).categories is None
    True
    """
    numbers = [v for v in values if type(v) is float]
    missing = (rows - len(values)) / rows if rows else 0.0
    if len(numbers) * 2 >= len(values):
        return Expectation("numeric", min(numbers), max(numbers), reference_missing=missing)
    categories = {v for v in values if type(v) is str}
    return Expectation("categorical",
                       categories=np.unique(digests(categories))
                       if len(categories) <= max_categories else None,
                       reference_missing=missing)


def judge(values: Sequence[float | str] | np.ndarray, expect: Expectation) -> dict[Reason, int]:
    """Count the problems among one batch's values of a feature (in arrival order,
    missing ones left out): numbers out of the range and strings of a numeric feature,
    unseen categories and numbers of a categorical one.

    >>> e = Expectation("numeric", 0.0, 1.0)
    >>> judge([0.5, 1.5, -0.1, "n/a", 1.0], e)
    {'out_of_range': 2, 'type_mismatch': 1}
    >>> judge(["a", "b", 3.0, "b"], Expectation("categorical", categories=digests(["a"])))
    {'unseen_category': 2, 'type_mismatch': 1}
    """
    if expect.kind == "numeric":
        try:
            column = (values if isinstance(values, np.ndarray)
                      else np.frombuffer(array("d", values), dtype=np.float64))
            mismatched = 0
        except TypeError:       # strings among the numbers
            numbers = [v for v in values if type(v) is float]
            column = np.asarray(numbers, dtype=np.float64)
            mismatched = len(values) - len(numbers)
        outside = int(np.count_nonzero((column < expect.low) | (column > expect.high)))
        return {"out_of_range": outside, "type_mismatch": mismatched}
    counts = Counter(values)
    names = [v for v in counts if type(v) is str]
    mismatched = len(values) - sum(counts[v] for v in names)
    out: dict[Reason, int] = {"type_mismatch": mismatched}
    known = expect.categories
    if known is not None:
        unseen = ~np.isin(digests(names), known)
        out = {"unseen_category": sum(counts[v] for v, new in zip(names, unseen.tolist())
                                      if new), **out}
    return out


class FeatureQuality:
    """The counts of one feature of a model version. ``expect`` is None for a feature
    the reference does not have (counted only as ``unannounced``)."""

    __slots__ = ("announced", "expect", "issues")

    def __init__(self, expect: Expectation | None) -> None:
        self.expect = expect
        reasons = expect.reasons() if expect is not None else ("unannounced",)
        self.issues: dict[Reason, int] = dict.fromkeys(reasons, 0)
        #: False until a scrape has shown this feature's counters (at 0, see metrics.py)
        self.announced = False

    def count(self, counts: Mapping[Reason, int]) -> None:
        issues = self.issues
        for reason, n in counts.items():
            issues[reason] += n


class VersionQuality:
    """The data quality of one model version: its reference and the counts since.

    ``update`` takes each batch: the feature values of every prediction (``rows``, read
    only while the warm-up reference is being taken) and, per monitored feature, its
    values in arrival order without the missing ones (``columns``).
    """

    def __init__(self, cfg: QualitySettings, profile: Profile | None,
                 declared: Sequence[str] | None) -> None:
        self._warmup = cfg.warmup
        self._max_categories = cfg.max_categories
        #: judged and unannounced features, in the order they became known
        self.features: dict[str, FeatureQuality] = {}
        #: names that are never unannounced (declared, or in the profile)
        self._known = frozenset(declared or ())
        #: the warm-up: each feature's values so far and the predictions read (None: the
        #: reference is taken)
        self._warm: dict[str, list[float | str]] | None = {}
        self._rows = 0
        if profile is not None:
            columns = (profile.meta or {}).get("columns") or {}
            self.features = {name: FeatureQuality(from_reference(ref, columns.get(name)))
                             for name, ref in profile.features.items()}
            self._known |= frozenset(profile.features)
            self._warm = None

    def update(self, rows: Sequence[Mapping[str, FeatureValue]],
               columns: Mapping[str, Sequence[float | str]]) -> None:
        """Judge one batch. ``rows`` are the batch's predictions' features (as decoded);
        ``columns`` the values of each monitored feature in them, missing ones left out
        (only these features are judged)."""
        n = len(rows)
        if self._warm is not None:
            taken, skip = self._take_warmup(rows, columns)
            if self._warm is not None or not n - taken:
                return
            n -= taken
            columns = {name: values[skip[name]:] for name, values in columns.items()}
        features = self.features
        for name, values in columns.items():
            feature = features.get(name)
            if feature is None:
                if name in self._known:
                    continue
                feature = features[name] = FeatureQuality(None)
            if feature.expect is None:
                feature.issues["unannounced"] += len(values)
                continue
            feature.count(judge(values, feature.expect))
        for name, feature in features.items():
            if feature.expect is not None:
                feature.issues["missing"] += n - len(columns.get(name, ()))

    def _take_warmup(self, rows: Sequence[Mapping[str, FeatureValue]],
                     columns: Mapping[str, Sequence[float | str]]
                     ) -> tuple[int, Counter[str]]:
        """Add the batch's first predictions to the warm-up, up to ``quality.warmup``;
        learn the reference once it is full. Returns how many rows it took and how many
        of each column's values they hold."""
        warm = self._warm
        assert warm is not None
        need = self._warmup - self._rows
        taken = rows[:need]
        skip: Counter[str] = Counter()
        for row in taken:
            for name, value in row.items():
                if name in columns:
                    values = warm.setdefault(name, [])
                    if value is not None:
                        values.append(value)
                        skip[name] += 1
        self._rows += len(taken)
        if self._rows >= self._warmup:
            for name, values in warm.items():
                if values:      # a feature that was only ever null is known, not judged
                    expect = learn(values, self._rows, self._max_categories)
                    feature = self.features[name] = FeatureQuality(expect)
                    feature.count(_warm_mismatches(values, expect))
            self._known |= frozenset(warm)
            self._warm = None
        return len(taken), skip


def _warm_mismatches(values: Sequence[float | str], expect: Expectation) -> dict[Reason, int]:
    """The values of the other kind among a warm-up's (the reference has no range or
    category list for them)."""
    numbers = sum(1 for v in values if type(v) is float)
    return {"type_mismatch": len(values) - numbers if expect.kind == "numeric" else numbers}
