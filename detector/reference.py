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
  (reference counts, window counts), no continuity correction.

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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import chi2 as _chi2

Method = Literal["psi", "js", "ks", "chi2"]
OTHER = "__other__"
PSI_FLOOR = 1e-4
#: the largest reference sample kept for the KS test
SAMPLE_SIZE = 5000


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


def chi2_pvalue(reference_counts: np.ndarray, window_counts: np.ndarray) -> float:
    """p-value of the chi-square test of homogeneity of two count vectors."""
    table = np.vstack([reference_counts, window_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return float(_chi2.sf(stat, table.shape[1] - 1))


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
        return _distances(self.shares(), self.window_shares(window), methods,
                          {"ks": lambda: ks(self.sample, window)})

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

    def distances(self, window_codes: np.ndarray, methods: Iterable[Method]) -> dict[str, float]:
        wc = np.bincount(window_codes, minlength=self.counts.size)
        return _distances(self.shares(), wc / wc.sum(), methods,
                          {"chi2": lambda: chi2_pvalue(self.counts, wc)})

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

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT, "format_version": PROFILE_VERSION,
            "model": self.model, "model_version": self.version, **(self.meta or {}),
            "features": {name: ref.to_json() for name, ref in self.features.items()},
            "label": self.label.to_json() if self.label else None,
            "prediction": self.prediction.to_json() if self.prediction else None,
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
                  "prediction"}}
        return cls(str(d.get("model", "")), d.get("model_version"), features,
                   reference_from_json(d["label"]) if d.get("label") else None,
                   reference_from_json(d["prediction"]) if d.get("prediction") else None, extra)
