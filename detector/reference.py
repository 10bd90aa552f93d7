"""Reference distributions and the distances of recent windows from them.

A *reference* is what a feature (or the label, or the prediction) looked like
in training data (a profile written by ``drift-detector profile``) or, without a
profile, in the first ``reference.warmup`` values of a model version.

Numeric references keep quantile bin edges with their counts and a sample of
values; categorical references keep the top categories with counts plus
``other``. Windows are the last ``reference.window`` values, evaluated at every
``reference.evaluate_every``-th value of the stream, so the windows, and hence
the distances, do not depend on how Kafka batched the messages.

Definitions (``p`` reference shares, ``q`` window shares over the same bins):

* ``psi``: sum over bins of (q - p) ln(q / p), shares below 1e-4 raised to 1e-4;
* ``js``: Jensen-Shannon distance, base 2 (0 = same, 1 = disjoint);
* ``ks``: two-sample Kolmogorov-Smirnov statistic, window vs reference sample;
* ``chi2``: p-value of the chi-square test of homogeneity of the 2 x k table
  (reference counts, window counts), no continuity correction; the statistic is
  scaled by the stream's ``effective_fraction`` (dependent values carry less
  information), as the KS threshold is raised by it (``monitor.ReferenceStream``).

A stream evaluates all the window boundaries of a batch at once
(``window_distances``): every value is coded once against the reference (``codes``:
its bin, and its place among the sample values), the counts of all the windows come
from one ``bincount``, KS from each window's sorted codes, and every distance of every
window is computed with the same floating-point operations, summed in the same order,
as ``distances`` computes it for that window alone, so the values are equal to the last
bit (``tests/unit/test_reference.py`` proves it on random streams and on 1M values).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = NumericReference.from_values(rng.normal(0, 1, 5000), bins=10)
>>> same, shifted = rng.normal(0, 1, 1000), rng.normal(1, 1, 1000)
>>> round(psi(ref.shares(), ref.window_shares(same)), 3) < 0.1
True
>>> round(psi(ref.shares(), ref.window_shares(shifted)), 2) > 0.25
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy.stats import chi2 as _chi2

from detector.calibrate_scores import Calibrator, LossTable, model_from_json

Method = Literal["psi", "js", "ks", "chi2"]
OTHER = "__other__"
PSI_FLOOR = 1e-4
#: the largest reference sample kept for the KS test
SAMPLE_SIZE = 5000
#: windows evaluated together hold at most about this many values (bounds the memory)
CHUNK_VALUES = 1 << 18


def psi(p: np.ndarray, q: np.ndarray) -> float:
    """Population stability index of window shares ``q`` against reference shares ``p``.

    >>> psi(np.array([0.5, 0.5]), np.array([0.5, 0.5]))
    0.0
    """
    p = np.maximum(p, PSI_FLOOR)
    q = np.maximum(q, PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def js(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2) between two share vectors.

    >>> js(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    1.0
    """
    m = (p + q) / 2.0

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(np.sqrt(max(0.0, (kl(p) + kl(q)) / 2.0)))


def ks(sorted_reference: np.ndarray, window: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (the largest CDF gap)."""
    w = np.sort(window)
    points = np.concatenate([sorted_reference, w])
    f_ref = np.searchsorted(sorted_reference, points, side="right") / sorted_reference.size
    f_win = np.searchsorted(w, points, side="right") / w.size
    return float(np.max(np.abs(f_ref - f_win)))


def chi2_pvalue(reference_counts: np.ndarray, window_counts: np.ndarray,
                fraction: float = 1.0) -> float:
    """p-value of the chi-square test of homogeneity of two count vectors, each count
    worth ``fraction`` of an independent one (``effective_fraction``)."""
    table = np.vstack([reference_counts, window_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected)) * fraction
    return float(_chi2.sf(stat, table.shape[1] - 1))


def effective_fraction(codes: np.ndarray, categorical: bool) -> float:
    """The effective sample size of a stretch of a stream over its length, from its
    lag-1 dependence ``rho``: ``(1 - rho) / (1 + rho)`` (an AR(1)'s, for the mean), with
    ``rho`` clamped to [0, 0.98]. Numeric ``codes`` (they rise with the values): their
    lag-1 autocorrelation (of ranks); categorical: how much more often a value repeats
    the one before than independent draws would, ``(P(same) - sum p^2) / (1 - sum p^2)``.
    Tests that assume independent values (KS, chi-square) are corrected with it.

    >>> effective_fraction(np.array([0, 1] * 50), categorical=False)
    1.0
    >>> round(effective_fraction(np.repeat(np.arange(10), 10), categorical=True), 3)
    0.053
    """
    if codes.size < 3:
        return 1.0
    if categorical:
        shares = np.bincount(codes) / codes.size
        chance = float(np.sum(shares * shares))
        same = float(np.mean(codes[1:] == codes[:-1]))
        rho = (same - chance) / (1.0 - chance) if chance < 1.0 else 0.0
    else:
        x = codes.astype(np.float64) - codes.mean()
        var = float(np.dot(x, x))
        rho = float(np.dot(x[1:], x[:-1])) / var if var > 0 else 0.0
    rho = min(max(rho, 0.0), 0.98)
    return (1.0 - rho) / (1.0 + rho)


def psi_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``psi(p, row)`` for every row of ``q`` (equal to the last bit).

    >>> q = np.array([[0.5, 0.5], [0.9, 0.1]])
    >>> psi_rows(np.array([0.5, 0.5]), q).tolist() == [psi(np.array([0.5, 0.5]), r) for r in q]
    True
    """
    p = np.maximum(p, PSI_FLOOR)
    q = np.maximum(q, PSI_FLOOR)
    return _row_sums((q - p) * np.log(q / p))


def js_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``js(p, row)`` for every row of ``q`` (equal to the last bit)."""
    m = (p + q) / 2.0
    half = (_kl_rows(p, m) + _kl_rows(q, m)) / 2.0
    return np.sqrt(np.where(half > 0.0, half, 0.0))      # max(0.0, half), as ``js``


def _kl_rows(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``js``'s ``kl`` for every row of ``m``, ``a`` one share vector for all of them
    (1-D) or one per row (2-D): the sum of a log2(a / m) over the positive a."""
    nz = a > 0
    if nz.all():
        return _row_sums(a * np.log2(a / m))
    if a.ndim == 1:                                 # the same columns in every row
        return _row_sums(a[nz] * np.log2(a[nz] / m[:, nz]))
    kept = a[nz]
    return _packed_row_sums(kept * np.log2(kept / m[nz]), nz)


def _row_sums(x: np.ndarray) -> np.ndarray:
    """``np.sum(row)`` of every row of ``x``, to the last bit: numpy sums each row of a
    C-contiguous array pairwise, as a 1-D array; in another layout (``m[:, mask]`` is
    Fortran-ordered) it would add in another order."""
    return np.ascontiguousarray(x).sum(axis=1)


def _packed_row_sums(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row i: ``np.sum(x[i][mask[i]])``, given ``values = x[mask]``.

    numpy sums a row pairwise, so a sum depends on where each term sits in its row:
    the kept terms are packed to the left of their row and the rows of each length
    are summed together, each exactly as the sum of its own compressed row.
    """
    lengths = mask.sum(axis=1)
    packed = np.zeros(mask.shape)
    packed[np.nonzero(mask)[0], (np.cumsum(mask, axis=1) - 1)[mask]] = values
    out = np.empty(mask.shape[0])
    for length in np.unique(lengths).tolist():
        rows = lengths == length
        out[rows] = _row_sums(packed[rows, :length])
    return out


def chi2_rows(reference_counts: np.ndarray, counts: np.ndarray, fraction: float = 1.0
              ) -> np.ndarray:
    """``chi2_pvalue(reference_counts, row, fraction)`` for every row of ``counts`` (equal to the
    last bit). The categories empty on both sides are left out of a row's table, as
    there; rows keeping the same number of categories are tested together."""
    n, k = counts.shape
    table = np.empty((n, 2, k))
    table[:, 0], table[:, 1] = reference_counts, counts
    kept = table.sum(axis=1) > 0
    widths = kept.sum(axis=1)
    out = np.ones(n)
    for width in np.unique(widths[widths >= 2]).tolist():
        rows = widths == width
        order = np.argsort(~kept[rows], axis=1, kind="stable")[:, None, :width]
        t = np.take_along_axis(table[rows], order, axis=2)
        # integer counts: every sum below is exact, whatever the order
        expected = (t.sum(axis=2, keepdims=True) * t.sum(axis=1, keepdims=True)
                    / t.sum(axis=(1, 2), keepdims=True))
        terms = (t - expected) ** 2 / expected
        out[rows] = _chi2.sf(_row_sums(terms.reshape(-1, 2 * width)) * fraction, width - 1)
    return out


def window_counts_at(codes: np.ndarray, ends: np.ndarray, window: int, size: int
                     ) -> np.ndarray:
    """Counts of the codes ``0 .. size - 1`` in ``codes[e - window:e]`` for each ``e`` in
    ``ends``, one row per window (one ``bincount`` for all: window i counts its codes
    shifted by ``i * size``).

    >>> window_counts_at(np.array([0, 1, 1, 2, 0]), np.array([3, 5]), 3, 3).tolist()
    [[1, 2, 0], [1, 1, 1]]
    """
    shifted = windows_at(codes, ends, window) + (np.arange(ends.size) * size)[:, None]
    return np.bincount(shifted.ravel(), minlength=ends.size * size).reshape(-1, size)


def windows_at(values: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """The windows ``values[e - window:e]``, ``e`` in ``ends``, as the rows of an array
    (one window: a view, not to be written).

    >>> windows_at(np.arange(6), np.array([3, 6]), 3).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    if ends.size == 1:
        start = int(ends[0]) - window
        return values[None, start:start + window]
    rows = as_strided(values, (values.size - window + 1, window), values.strides * 2,
                      writeable=False)
    return rows[ends - window]


@cache
def steps(window: int) -> np.ndarray:
    """``i / window`` for i = 0 .. window: the share of a window in its i smallest values."""
    steps = np.arange(window + 1) / window
    steps.flags.writeable = False
    return steps


def _in_chunks(rows: Callable[[np.ndarray], dict[str, np.ndarray]], ends: np.ndarray,
               window: int) -> dict[str, np.ndarray]:
    """``rows(ends)``, a few windows at a time so that the arrays stay small."""
    step = max(1, CHUNK_VALUES // window)
    if ends.size <= step:
        return rows(ends)
    parts = [rows(ends[i:i + step]) for i in range(0, ends.size, step)]
    return {m: np.concatenate([part[m] for part in parts]) for m in parts[0]}


class _Lookup(NamedTuple):
    """What a numeric reference needs to know of a value, by code (``codes``)."""

    points: np.ndarray    # the distinct edges and sample values, increasing
    bins: np.ndarray      # code -> bin of the value
    below: np.ndarray     # code -> values of the sample below the value
    upto: np.ndarray      # code -> values of the sample at or below the value
    below_share: np.ndarray   # below / the sample's size
    upto_share: np.ndarray    # upto / the sample's size


def _distances(p: np.ndarray, q: np.ndarray, methods: Iterable[Method],
               tests: dict[str, Any]) -> dict[str, float]:
    """psi and js on the shares; every other method by its own test in ``tests``."""
    out = {}
    for m in methods:
        out[m] = psi(p, q) if m == "psi" else js(p, q) if m == "js" else tests[m]()
    return out


@dataclass(frozen=True)
class NumericReference:
    """Quantile bins of the reference and a sorted sample of its values."""

    edges: np.ndarray      # inner edges; bin i holds edges[i-1] <= x < edges[i]
    counts: np.ndarray     # len(edges) + 1
    sample: np.ndarray     # sorted, at most SAMPLE_SIZE values
    mean: float
    std: float

    kind = "numeric"

    @classmethod
    def from_values(cls, values: np.ndarray, bins: int, sample: np.ndarray | None = None
                    ) -> NumericReference:
        values = np.asarray(values, dtype=float)
        pool = values if sample is None else np.asarray(sample, dtype=float)
        edges = quantile_edges(pool, bins)
        counts = np.bincount(np.searchsorted(edges, values, side="right"),
                             minlength=edges.size + 1)
        return cls(edges, counts, np.sort(thin(pool)), float(values.mean()),
                   float(values.std()))

    def shares(self) -> np.ndarray:
        return self.counts / self.counts.sum()

    def window_counts(self, window: np.ndarray) -> np.ndarray:
        return np.bincount(np.searchsorted(self.edges, window, side="right"),
                           minlength=self.edges.size + 1)

    def window_shares(self, window: np.ndarray) -> np.ndarray:
        return self.window_counts(window) / window.size

    def distances(self, window: np.ndarray, methods: Iterable[Method]) -> dict[str, float]:
        """The distances of one window of values: the definition that
        ``window_distances`` computes for many windows at once."""
        return _distances(self.shares(), self.window_shares(window), methods,
                          {"ks": lambda: ks(self.sample, window)})

    def __getstate__(self) -> dict:
        """Pickle without ``_lookup``: it is rebuilt from the sample when first needed
        (five times the reference's own size, not worth a checkpoint's bytes)."""
        state = self.__dict__.copy()
        state.pop("_lookup", None)
        return state

    @cached_property
    def _lookup(self) -> _Lookup:
        points = np.unique(np.concatenate([self.edges, self.sample]))
        on = np.arange(1, 2 * points.size, 2)     # the code of a value equal to a point
        gap = on + 1                              # ... and of a value above it, below the next
        bins = np.zeros(2 * points.size + 1, dtype=np.int32)
        bins[on] = bins[gap] = np.searchsorted(self.edges, points, side="right")
        below, upto = np.zeros_like(bins), np.zeros_like(bins)
        below[on] = np.searchsorted(self.sample, points, side="left")
        upto[on] = upto[gap] = below[gap] = np.searchsorted(self.sample, points, side="right")
        size = self.sample.size
        return _Lookup(points, bins, below, upto, below / size, upto / size)

    def codes(self, values: np.ndarray) -> np.ndarray:
        """Where each value lies among the edges and the sample: ``2i - 1`` when it equals
        the i-th distinct point, ``2i`` when it lies between the i-th and the next. Values
        with one code share their bin and their rank in the sample; codes increase with
        the values.

        >>> ref = NumericReference.from_values(np.arange(10.0), bins=2)
        >>> ref.codes(np.array([-1.0, 0.0, 0.5, 4.5, 9.0, 99.0])).tolist()
        [0, 1, 2, 11, 21, 22]
        """
        look = self._lookup
        order = np.argsort(values)   # in sorted order, each search starts where the last ended
        after = np.empty(values.size, dtype=np.int32)
        after[order] = np.searchsorted(look.points, values[order], side="right")
        # after == 0 compares with the last point, which is above the value
        return 2 * after - (look.points[after - 1] == values)

    def window_distances(self, codes: np.ndarray, ends: np.ndarray, window: int,
                         methods: Iterable[Method]) -> dict[str, np.ndarray]:
        """``distances`` of every window ``codes[e - window:e]`` (``codes`` of the values,
        ``e`` in the increasing ``ends``), equal to the last bit, one array per method.

        KS: the gap between the CDFs is largest just below or at a value of the window,
        so ``ks`` is the largest, over the window's values in sorted order (the i-th from
        0), of (sample share below it) - i / window and (i + 1) / window - (sample share at
        or below it): exact at the first and the last of equal values, lower between them.
        Each is the same division and subtraction of the same counts as in ``ks``.

        >>> rng = np.random.default_rng(1)
        >>> ref = NumericReference.from_values(rng.normal(size=2000), bins=10)
        >>> x = rng.normal(0.5, 1.0, 400)
        >>> d = ref.window_distances(ref.codes(x), np.array([200, 300, 400]), 200, ["ks"])
        >>> d["ks"].tolist() == [ref.distances(x[e - 200:e], ["ks"])["ks"] for e in (200, 300, 400)]
        True
        """
        methods = tuple(methods)
        look, p = self._lookup, self.shares()

        def shares(ends: np.ndarray) -> np.ndarray:
            start = int(ends[0]) - window
            bins = look.bins[codes[start:ends[-1]]]
            return window_counts_at(bins, ends - start, window, self.counts.size) / window

        def ks_rows(ends: np.ndarray) -> np.ndarray:
            ranked = np.sort(windows_at(codes, ends, window), axis=1)
            share = steps(window)
            return np.maximum(np.max(look.below_share[ranked] - share[:-1], axis=1),
                              np.max(share[1:] - look.upto_share[ranked], axis=1))

        def rows(ends: np.ndarray) -> dict[str, np.ndarray]:
            q = shares(ends) if "psi" in methods or "js" in methods else None
            make = {"psi": lambda: psi_rows(p, q), "js": lambda: js_rows(p, q),
                    "ks": lambda: ks_rows(ends)}
            return {m: make[m]() for m in methods}

        return _in_chunks(rows, ends, window)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "numeric", "edges": self.edges.tolist(), "counts": self.counts.tolist(),
                "sample": self.sample.tolist(), "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NumericReference:
        edges = np.asarray(d["edges"], dtype=float)
        counts = np.asarray(d["counts"], dtype=np.int64)
        sample = np.sort(np.asarray(d["sample"], dtype=float))
        if counts.size != edges.size + 1 or np.any(np.diff(edges) <= 0) or sample.size == 0:
            raise ValueError("numeric reference needs increasing edges, len(edges)+1 counts "
                             "and a non-empty sample")
        return cls(edges, counts, sample, float(d["mean"]), float(d["std"]))


@dataclass(frozen=True)
class CategoricalReference:
    """Counts of the top categories; everything else (and unseen values) is ``other``."""

    categories: tuple[str, ...]
    counts: np.ndarray     # len(categories) + 1, the last for OTHER

    kind = "categorical"

    @classmethod
    def from_counts(cls, counts: Counter[str] | dict[str, int], top_k: int,
                    other: int = 0) -> CategoricalReference:
        # a literal OTHER value is counted with the rest, so its share stream stays unique
        other += counts.get(OTHER, 0)
        ranked = sorted(((c, n) for c, n in counts.items() if c != OTHER),
                        key=lambda kv: (-kv[1], kv[0]))
        top = ranked[:top_k]
        rest = other + sum(n for _, n in ranked[top_k:])
        return cls(tuple(c for c, _ in top), np.array([n for _, n in top] + [rest],
                                                      dtype=np.int64))

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.categories)}

    def codes(self, values: Iterable[str]) -> np.ndarray:
        idx, other = self.index(), len(self.categories)
        return np.fromiter((idx.get(v, other) for v in values), dtype=np.int64)

    def shares(self) -> np.ndarray:
        return self.counts / self.counts.sum()

    def distances(self, window_codes: np.ndarray, methods: Iterable[Method],
                  fraction: float = 1.0) -> dict[str, float]:
        """The distances of one window of codes: the definition that ``window_distances``
        computes for many windows at once (``fraction``: as ``chi2_pvalue``'s)."""
        wc = np.bincount(window_codes, minlength=self.counts.size)
        return _distances(self.shares(), wc / wc.sum(), methods,
                          {"chi2": lambda: chi2_pvalue(self.counts, wc, fraction)})

    def window_distances(self, codes: np.ndarray, ends: np.ndarray, window: int,
                         methods: Iterable[Method], fraction: float = 1.0
                         ) -> dict[str, np.ndarray]:
        """``distances`` of every window ``codes[e - window:e]``, ``e`` in the increasing
        ``ends``, equal to the last bit, one array per method.

        >>> ref = CategoricalReference.from_counts({"a": 60, "b": 30, "c": 10}, top_k=2)
        >>> codes = ref.codes(["a", "b", "a", "z", "z", "b"])
        >>> d = ref.window_distances(codes, np.array([4, 6]), 4, ["chi2"])
        >>> d["chi2"].tolist() == [ref.distances(codes[e - 4:e], ["chi2"])["chi2"] for e in (4, 6)]
        True
        """
        methods, p = tuple(methods), self.shares()

        def rows(ends: np.ndarray) -> dict[str, np.ndarray]:
            counts = window_counts_at(codes, ends, window, self.counts.size)
            q = counts / window
            make = {"psi": lambda: psi_rows(p, q), "js": lambda: js_rows(p, q),
                    "chi2": lambda: chi2_rows(self.counts, counts, fraction)}
            return {m: make[m]() for m in methods}

        return _in_chunks(rows, ends, window)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "categorical",
                "categories": dict(zip(self.categories, self.counts[:-1].tolist(), strict=True)),
                "other": int(self.counts[-1])}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CategoricalReference:
        cats = d["categories"]
        if not isinstance(cats, dict) or not cats:
            raise ValueError("categorical reference needs a non-empty `categories` mapping")
        if OTHER in cats:
            raise ValueError(f"{OTHER!r} is reserved for the categories outside the top ones")
        return cls(tuple(str(c) for c in cats),
                   np.array([int(n) for n in cats.values()] + [int(d.get("other", 0))],
                            dtype=np.int64))


Reference = NumericReference | CategoricalReference


def reference_from_json(d: dict[str, Any]) -> Reference:
    if d.get("kind") == "numeric":
        return NumericReference.from_json(d)
    if d.get("kind") == "categorical":
        return CategoricalReference.from_json(d)
    raise ValueError(f"unknown reference kind {d.get('kind')!r}")


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Distinct inner edges at the 1/bins, ..., (bins-1)/bins quantiles.

    >>> quantile_edges(np.arange(100.0), 4).tolist()
    [24.75, 49.5, 74.25]
    """
    qs = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def thin(values: np.ndarray) -> np.ndarray:
    """At most SAMPLE_SIZE values, evenly spaced in sorted order (deterministic)."""
    if values.size <= SAMPLE_SIZE:
        return values
    ordered = np.sort(values)
    picks = np.linspace(0, values.size - 1, SAMPLE_SIZE).round().astype(int)
    return ordered[picks]


PROFILE_FORMAT = "drift-detector-profile"
PROFILE_VERSION = 1


@dataclass(frozen=True)
class Profile:
    """References of one model (version) from training data: per feature, label, prediction."""

    model: str
    version: str | None
    features: dict[str, Reference]
    label: Reference | None = None
    prediction: Reference | None = None
    meta: dict[str, Any] | None = None
    #: the score calibrator (classification) or loss table (regression) of the
    #: performance estimates, fitted on the labelled reference
    estimation: Calibrator | LossTable | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT, "format_version": PROFILE_VERSION,
            "model": self.model, "model_version": self.version, **(self.meta or {}),
            "features": {name: ref.to_json() for name, ref in self.features.items()},
            "label": self.label.to_json() if self.label else None,
            "prediction": self.prediction.to_json() if self.prediction else None,
            "estimation": self.estimation.to_json() if self.estimation else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Profile:
        """Raises ``ValueError`` saying what is wrong."""
        if not isinstance(d, dict) or d.get("format") != PROFILE_FORMAT:
            raise ValueError(f"not a drift-detector profile (missing format: {PROFILE_FORMAT})")
        if d.get("format_version") != PROFILE_VERSION:
            raise ValueError(f"profile format_version {d.get('format_version')!r} is not "
                             f"supported (this build reads {PROFILE_VERSION})")
        features = {}
        for name, ref in (d.get("features") or {}).items():
            try:
                features[name] = reference_from_json(ref)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"feature {name!r}: {exc}") from None
        extra = {k: v for k, v in d.items() if k not in
                 {"format", "format_version", "model", "model_version", "features", "label",
                  "prediction", "estimation"}}
        return cls(str(d.get("model", "")), d.get("model_version"), features,
                   reference_from_json(d["label"]) if d.get("label") else None,
                   reference_from_json(d["prediction"]) if d.get("prediction") else None, extra,
                   model_from_json(d["estimation"]) if d.get("estimation") else None)
