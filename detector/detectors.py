"""Build River drift detectors from their configured name and parameters.

Every detector is River's own class, so a detection here is exactly the one
River gives offline on the same values.

>>> det = build("adwin", {})
>>> fired = []
>>> for i, x in enumerate([0.0] * 1000 + [5.0] * 100):
...     det.update(x)
...     if det.drift_detected:
...         fired.append(i)
>>> fired[0]
1023
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

from river import drift, stats
from river._river_rust.drift import AdaptiveWindowing
from river._river_rust.stats import RsEWMean
from river.base import BinaryDriftDetector, DriftDetector
from river.drift import binary
from river.drift.binary.hddm_w import SampleInfo
from scipy.special import ndtri, stdtr

DetectorType = Literal["adwin", "page_hinkley", "kswin", "cusum", "ddm", "eddm", "hddm_a",
                       "hddm_w", "fhddm"]


class CUSUM(DriftDetector):
    """Two-sided tabular CUSUM for standardised values (mean 0, sd 1 when stable).

    ``s+ = max(0, s+ + x - k)`` and ``s- = max(0, s- - x - k)``; a drift is
    detected when either exceeds ``h``, and both restart from 0. ``k`` is half
    the shift (in standard deviations) it is tuned to find fastest; ``h`` sets
    the mean run length between false alarms (see ``detector.calibration``).

    >>> import random
    >>> rng = random.Random(42)
    >>> det, fired = CUSUM(k=0.5, h=8.0), []
    >>> for i in range(2000):
    ...     det.update(rng.gauss(0.0 if i < 1500 else 1.0, 1.0))
    ...     if det.drift_detected:
    ...         fired.append(i)
    >>> fired[:3]    # a lasting shift fires again and again: see Standardizer and episodes
    [1509, 1534, 1552]
    """

    def __init__(self, k: float = 0.5, h: float = 19.4) -> None:
        super().__init__()
        self.k = k
        self.h = h
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self.upper = 0.0
        self.lower = 0.0
        self._upper_age = 0
        self._lower_age = 0
        #: values since the estimated start of the change (last time its sum was 0)
        self.change_age = 0

    def update(self, x: float) -> None:
        if self._drift_detected:
            self._reset()
        self.upper = max(0.0, self.upper + x - self.k)
        self.lower = max(0.0, self.lower - x - self.k)
        self._upper_age = self._upper_age + 1 if self.upper > 0 else 0
        self._lower_age = self._lower_age + 1 if self.lower > 0 else 0
        if self.upper > self.h:
            self._drift_detected, self.change_age = True, self._upper_age
        elif self.lower > self.h:
            self._drift_detected, self.change_age = True, self._lower_age


_CLASSES: dict[str, type] = {
    "adwin": drift.ADWIN,
    "page_hinkley": drift.PageHinkley,
    "kswin": drift.KSWIN,
    "cusum": CUSUM,
    "ddm": binary.DDM,
    "eddm": binary.EDDM,
    "hddm_a": binary.HDDMA,
    "hddm_w": binary.HDDMW,
    "fhddm": binary.FHDDM,
}
assert set(_CLASSES) == set(get_args(DetectorType))

#: Every River class a detector's state holds besides the detectors themselves (what a
#: checkpoint may hold: ``detector.state.ALLOWED``): ADWIN's and EWMean's compiled
#: helpers, HDDM-W's samples, the statistics DDM, EDDM, HDDM and KSWIN keep.
STATE_CLASSES: tuple[type, ...] = (
    *(c for c in _CLASSES.values() if c is not CUSUM), SampleInfo, stats.Mean, stats.Var,
    stats.EWMean, AdaptiveWindowing, RsEWMean)
#: those of them written by River's own serialisation (compiled, no ``__dict__``)
COMPILED_STATE: tuple[type, ...] = (AdaptiveWindowing, RsEWMean)
#: methods River's detectors keep bound to themselves (Page-Hinkley's test of its mode)
STATE_METHODS: dict[type, frozenset[str]] = {
    drift.PageHinkley: frozenset({"_test_increase", "_test_decrease", "_test_both"})}

#: Parameters added when the user gives none, so that runs are reproducible.
_DEFAULT_PARAMS: dict[str, dict[str, Any]] = {"kswin": {"seed": 0}}

#: Open intervals a parameter must lie in; River itself does not check them.
_BOUNDS: dict[tuple[str, str], tuple[float, float]] = {
    ("adwin", "delta"): (0.0, 1.0),
    ("page_hinkley", "threshold"): (0.0, math.inf),
    ("page_hinkley", "alpha"): (0.0, 1.0 + 1e-12),
    ("kswin", "alpha"): (0.0, 1.0),
    ("cusum", "k"): (0.0, math.inf),
    ("cusum", "h"): (0.0, math.inf),
}


def is_binary(kind: DetectorType) -> bool:
    """True for detectors that take a 0/1 stream (error indicators), not real values.

    >>> is_binary("ddm"), is_binary("adwin")
    (True, False)
    """
    return issubclass(_CLASSES[kind], BinaryDriftDetector)


def effective_params(kind: DetectorType, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a detector is built with: the user's over our reproducibility defaults."""
    return {**_DEFAULT_PARAMS.get(kind, {}), **params}


def build(kind: DetectorType, params: dict[str, Any]) -> DriftDetector:
    """A fresh River detector of ``kind``.

    Raises ``ValueError`` naming the parameter when a value is out of range or unknown.
    """
    cls = _CLASSES[kind]
    full = effective_params(kind, params)
    for name, value in full.items():
        bounds = _BOUNDS.get((kind, name))
        if bounds is None:
            continue
        if not isinstance(value, int | float) or not bounds[0] < value < bounds[1]:
            raise ValueError(f"{name} must be a number in ({bounds[0]}, {bounds[1]}), got {value!r}")
    try:
        return cls(**full)
    except TypeError as exc:  # unknown keyword argument
        raise ValueError(f"invalid parameters for {kind}: {exc}") from None


def onset_age(detector: DriftDetector) -> int | None:
    """How many values ago the change began, by the detector's own estimate, right
    after it fired: CUSUM's last zero of the sum that crossed, ADWIN's cut point.

    >>> det = CUSUM(k=0.5, h=4.0)
    >>> for x in [0.0] * 50 + [3.0] * 2:
    ...     det.update(x)
    >>> det.drift_detected, onset_age(det)
    (True, 2)
    """
    if isinstance(detector, CUSUM):
        return detector.change_age
    if isinstance(detector, drift.ADWIN):
        return int(detector.width)
    return None


def statistic(detector: DriftDetector) -> dict[str, float]:
    """The detector's public state at the moment it fired, for drift events.

    >>> det = build("adwin", {})
    >>> for x in [0.0] * 200 + [5.0] * 40:
    ...     det.update(x)
    >>> sorted(statistic(det))
    ['estimation', 'variance', 'width']
    """
    out = {}
    for name in ("estimation", "variance", "width", "p_value", "upper", "lower"):
        value = getattr(detector, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool) or hasattr(value, "item"):
            out[name] = float(value)
    return out


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
