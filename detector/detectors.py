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
from collections.abc import Sequence
from typing import Any, Literal, get_args

from river import drift, stats
from river._river_rust.drift import AdaptiveWindowing
from river._river_rust.stats import RsEWMean
from river.base import BinaryDriftDetector, DriftDetector
from river.drift import binary
from river.drift.binary.hddm_w import SampleInfo
from scipy.special import ndtri, stdtr

DetectorType = Literal["adwin", "page_hinkley", "kswin", "cusum", "jump", "ddm", "eddm",
                       "hddm_a", "hddm_w", "fhddm"]


#: CUSUM can learn the tails of its values (``tails`` > 0): over its first ``tails``
#: values, per side, the sums of exp(theta (+-x - k)) on the grid theta = 2k g, g =
#: TAIL_STEP x (TAIL_FIRST, ..., TAIL_FIRST + TAIL_POINTS - 1) = 0.3, 0.4, ..., 1.0
TAIL_STEP = 0.1
TAIL_FIRST = 3
TAIL_POINTS = 8
#: a normal stream's learned factor exceeds 1 by its noise, about TAIL_MARGIN / 2 /
#: sqrt(values learned); the factor is lowered by TAIL_MARGIN / sqrt(values) (two of it)
TAIL_MARGIN = 6.0


def tail_factor(sums: Sequence[float], n: int) -> float:
    """How much one side of a CUSUM must raise ``h`` for the run length it has on normal
    values, from ``sums`` of exp(2k g (x - k)) over ``n`` values on the grid of ``g``.

    A CUSUM's false alarms on a side come at a rate ~exp(-theta h), theta the root of
    mean(exp(theta (x - k))) = 1: 2k for standard normal values, less for a longer tail
    (skewed or heavy-tailed values, even standardised). The factor is 2k / theta (its
    root read off the grid, linear in log mean), at most 1 / 0.3, less the margin of
    its noise, at least 1. Compiled as it is by ``detector.kernels.cusum``.

    >>> import math, random
    >>> rng = random.Random(1)
    >>> up = [0.0] * TAIL_POINTS
    >>> for _ in range(10_000):
    ...     x = min(rng.expovariate(1.0) - 1.0, 4.0)
    ...     for j in range(TAIL_POINTS):
    ...         up[j] += math.exp((TAIL_FIRST + j) * TAIL_STEP * (x - 0.5))
    >>> round(tail_factor(up, 10_000), 2)          # exponential: upper tail too long
    1.35
    """
    prev = 0.0
    margin = TAIL_MARGIN / math.sqrt(n)
    for j in range(TAIL_POINTS - 1, -1, -1):
        total = sums[j]
        m = math.log(total / n) if total > 0.0 else -math.inf
        if m <= 0.0:
            if j == TAIL_POINTS - 1:
                return 1.0
            root = (j + TAIL_FIRST) * TAIL_STEP + TAIL_STEP * (0.0 - m) / (prev - m)
            return max(1.0, 1.0 / root - margin)
        prev = m
    return max(1.0, 1.0 / (TAIL_FIRST * TAIL_STEP) - margin)


class CUSUM(DriftDetector):
    """Two-sided tabular CUSUM for standardised values (mean 0, sd 1 when stable).

    ``s+ = max(0, s+ + x - k)`` and ``s- = max(0, s- - x - k)``; a drift is
    detected when either exceeds its threshold, and both restart from 0. ``k`` is half
    the shift (in standard deviations) it is tuned to find fastest; ``h`` sets
    the mean run length between false alarms (see ``detector.calibration``) for normal
    values. With ``tails`` > 0 it learns the tails of its first ``tails`` values and
    raises each side's threshold (``h_up``, ``h_down``) by ``tail_factor``, so a skewed
    or heavy-tailed stream keeps that run length too; the learning survives restarts.

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

    def __init__(self, k: float = 0.5, h: float = 19.4, tails: int = 0) -> None:
        super().__init__()
        if isinstance(tails, bool) or not isinstance(tails, int) or tails < 0:
            raise ValueError(f"tails must be a whole number >= 0, got {tails!r}")
        self.k = k
        self.h = h
        self.tails = tails
        self.h_up = self.h_down = float(h)
        self.learned = 0
        self.tail_up = [0.0] * TAIL_POINTS
        self.tail_down = [0.0] * TAIL_POINTS
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self.upper = 0.0
        self.lower = 0.0
        self._upper_age = 0
        self._lower_age = 0
        #: values since the estimated start of the change (last time its sum was 0)
        self.change_age = 0

    def _learn(self, x: float) -> None:
        step = TAIL_STEP * 2.0 * self.k
        up = math.exp(min(step * (x - self.k), 700.0))
        down = math.exp(min(step * (-x - self.k), 700.0))
        pu, pd = up, down               # the grid's first point: up^TAIL_FIRST
        for _ in range(TAIL_FIRST - 1):
            pu *= up
            pd *= down
        for j in range(TAIL_POINTS):
            self.tail_up[j] += pu
            self.tail_down[j] += pd
            pu *= up
            pd *= down
        self.learned += 1
        if self.learned == self.tails:
            self.h_up = self.h * tail_factor(self.tail_up, self.learned)
            self.h_down = self.h * tail_factor(self.tail_down, self.learned)

    def update(self, x: float) -> None:
        if self._drift_detected:
            self._reset()
        if self.learned < self.tails:
            self._learn(x)
        self.upper = max(0.0, self.upper + x - self.k)
        self.lower = max(0.0, self.lower - x - self.k)
        self._upper_age = self._upper_age + 1 if self.upper > 0 else 0
        self._lower_age = self._lower_age + 1 if self.lower > 0 else 0
        if self.upper > self.h_up:
            self._drift_detected, self.change_age = True, self._upper_age
        elif self.lower > self.h_down:
            self._drift_detected, self.change_age = True, self._lower_age


#: a Jump learns the typical step from the median of its first JUMP_START differences,
#: then their running mean (winsorised at JUMP_WINSOR x it, over the last ~JUMP_MEMORY);
#: only moves count (differences of 0 are skipped), so that a stream which mostly holds
#: still (a flag, a rare count, a lamp off) is judged against the size of its moves
JUMP_START = 10
JUMP_WINSOR = 5.0
JUMP_MEMORY = 1000
#: mean |difference| / median |difference| of normal values
JUMP_MEDIAN_TO_MEAN = 1.1830
#: it judges from JUMP_MIN_STEPS differences on, its threshold widened by the error of
#: the learned step (sd / mean of |difference| of normal values is JUMP_SPREAD: two
#: standard errors)
JUMP_MIN_STEPS = 20
JUMP_SPREAD = 0.7555
assert JUMP_MIN_STEPS > JUMP_START     # so a Jump judges only with its typical step learned
#: a step of the window that moved the jump's way by more than this many typical steps
#: was already the ramp into the new level: the onset is placed before it
JUMP_RAMP = 2.5


class Jump(DriftDetector):
    """An abrupt, lasting level shift, judged against the stream's own step-to-step noise.

    It fires when the last ``after`` values all lie beyond every one of the ``window``
    values before them, by more than ``threshold`` typical steps (the winsorised mean
    |difference| of consecutive values that differ), and the newest of them has not
    fallen back by as much as that gap (a new level, or a climb into one, not a shock
    decaying). An outlier does not last ``after`` values, a trend or an autocorrelated
    wander moves a few steps at a time, but a level shift of a smooth or autocorrelated
    stream (a sensor, a broken pipeline writing zeros) is one large step that stays:
    whitened detectors see it as a single spike. The onset is the
    first of the ``after`` values (earlier when the last steps of the window already
    moved its way by more than ``JUMP_RAMP`` typical steps each: a ramp), ``shift`` the
    mean of the ``after`` values less the mean of the ``window`` before them; the next
    firing needs ``window`` values after the first of the ``after`` values.

    Simulated over 2 x 10^7 values each, the largest gap of Gaussian AR(1) streams up to
    a random walk was 6.9 typical steps, of iid t(2), t(3) and lognormal values 5.5
    (``bench/quality.py`` measures the defaults on every stable family), so the default
    ``threshold`` of 8 keeps inside the false-alarm budget. Heavy-tailed shocks that
    decay slowly (AR(1) phi >= 0.7 driven by t(3) or lognormal noise) do fire it: they
    are level changes for a while.

    >>> det, fired = Jump(), []
    >>> for i, x in enumerate([10.0, 10.2, 10.1, 9.9, 10.0] * 8 + [4.0, 4.1, 3.9, 4.0]):
    ...     det.update(x)
    ...     if det.drift_detected:
    ...         fired.append((i, onset_age(det), direction(det)))
    >>> fired
    [(43, 4, -1)]
    """

    def __init__(self, window: int = 5, after: int = 4, threshold: float = 8.0) -> None:
        for name, value, least in (("window", window, 2), ("after", after, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= 100:
                raise ValueError(f"{name} must be a whole number in [{least}, 100], got {value!r}")
        super().__init__()
        self.window, self.after, self.threshold = window, after, threshold
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        size = self.window + self.after
        self.ring = [0.0] * size
        self.start = [0.0] * JUMP_START
        #: ring slot of the next value; values since the start or the last onset
        self.pos = self.run = 0
        self.seen = self.steps = 0
        self.noise = self.last = self.gap = self.shift = 0.0
        self.rise = False
        #: values since the onset, at a firing
        self.age = 0

    def update(self, x: float) -> None:
        self._drift_detected = False
        if self.seen and x != self.last:
            self._learn(abs(x - self.last))
        self.seen += 1
        self.last = x
        size = self.window + self.after
        pos = self.pos
        self.ring[pos] = x
        self.pos = pos + 1 if pos + 1 < size else 0
        self.run += 1
        if self.run < size or self.steps < JUMP_MIN_STEPS:
            return
        # the ring is full: the oldest value is at self.pos; the window, then the after
        ring, p = self.ring, self.pos
        # no gap exceeds |newest - oldest|, and the bound is at least threshold x noise
        most, least = abs(x - ring[p]), self.threshold * self.noise
        if most <= least:
            return
        bound = least / (1.0 - 2.0 * JUMP_SPREAD / math.sqrt(self.steps))
        if most <= bound:
            return
        pre_lo = pre_hi = pre_sum = ring[p]
        for i in range(1, size):
            v = ring[(p + i) % size]
            if i < self.window:
                pre_lo = v if v < pre_lo else pre_lo  # noqa: FURB136
                pre_hi = v if v > pre_hi else pre_hi  # noqa: FURB136
                pre_sum += v
            elif i == self.window:
                post_lo = post_hi = post_sum = v
            else:
                post_lo = v if v < post_lo else post_lo  # noqa: FURB136
                post_hi = v if v > post_hi else post_hi  # noqa: FURB136
                post_sum += v
        up, down = post_lo - pre_hi, pre_lo - post_hi
        if up > bound and post_hi - x < up:
            self.rise, self.gap = True, up
        elif down > bound and x - post_lo < down:
            self.rise, self.gap = False, down
        else:
            return
        self.shift = post_sum / self.after - pre_sum / self.window
        # a ramp into the new level began earlier: walk back over steps of the window
        # that already moved its way by more than JUMP_RAMP typical steps
        way, self.age = (1.0 if self.rise else -1.0), self.after
        here = ring[(p + self.window - 1) % size]
        for i in range(self.window - 1, 0, -1):
            before = ring[(p + i - 1) % size]
            if (here - before) * way <= JUMP_RAMP * self.noise:
                break
            self.age += 1
            here = before
        self._drift_detected = True
        self.run = self.after

    def _learn(self, d: float) -> None:
        k = self.steps
        self.steps = k + 1
        weight = k + 1 if k + 1 < JUMP_MEMORY else JUMP_MEMORY
        if k < JUMP_START:
            self.start[k] = d
            if k + 1 == JUMP_START:
                self.start.sort()
                self.noise = median(self.start) * JUMP_MEDIAN_TO_MEAN
            return
        s = self.noise
        w = d if d < JUMP_WINSOR * s else JUMP_WINSOR * s  # noqa: FURB136
        self.noise = s + (w - s) / weight


_CLASSES: dict[str, type] = {
    "adwin": drift.ADWIN,
    "page_hinkley": drift.PageHinkley,
    "kswin": drift.KSWIN,
    "cusum": CUSUM,
    "jump": Jump,
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
    *(c for c in _CLASSES.values() if c not in (CUSUM, Jump)), SampleInfo, stats.Mean, stats.Var,
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


def takes_raw(kind: DetectorType) -> bool:
    """True for detectors fed the values as they came, not standardised ones: the
    binary detectors (0/1 streams) and ``jump`` (it judges steps against the stream's own
    step-to-step noise, which whitening would hide).

    >>> takes_raw("jump"), takes_raw("ddm"), takes_raw("cusum")
    (True, True, False)
    """
    return kind == "jump" or is_binary(kind)


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
    if isinstance(detector, Jump):
        return detector.age
    if isinstance(detector, drift.ADWIN):
        return int(detector.width)
    return None


def direction(detector: DriftDetector) -> int:
    """+1 when the detector fired on a rise, -1 on a fall, right after it fired:
    CUSUM's upper sum, Page-Hinkley's increase test, the sign of ADWIN's kept window
    (of standardised values); other detectors +1.

    >>> det = CUSUM(k=0.5, h=4.0)
    >>> for x in [0.0] * 50 + [-3.0] * 2:
    ...     det.update(x)
    >>> det.drift_detected, direction(det)
    (True, -1)
    """
    if isinstance(detector, CUSUM):
        return 1 if detector.upper > detector.h_up else -1
    if isinstance(detector, Jump):
        return 1 if detector.rise else -1
    if isinstance(detector, drift.PageHinkley):
        up = detector._sum_increase - detector._min_increase > detector.threshold
        return 1 if up and detector.mode != "down" else -1
    if isinstance(detector, drift.ADWIN):
        return 1 if detector.estimation > 0.0 else -1
    return 1


def statistic(detector: DriftDetector) -> dict[str, float]:
    """The detector's public state at the moment it fired, for drift events.

    >>> det = build("adwin", {})
    >>> for x in [0.0] * 200 + [5.0] * 40:
    ...     det.update(x)
    >>> sorted(statistic(det))
    ['estimation', 'variance', 'width']
    """
    out = {}
    for name in ("estimation", "variance", "width", "p_value", "upper", "lower", "gap", "shift",
                 "noise"):
        value = getattr(detector, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool) or hasattr(value, "item"):
            out[name] = float(value)
    return out


#: winsorising bound of the baseline, in its scale: a value further out is learned as if it
#: were this far (an outlier cannot inflate the scale nor drag the location)
WINSOR = 4.0
#: the AR(1) coefficient is clamped to [0, PHI_MAX] (a unit root cannot be whitened)
PHI_MAX = 0.98
#: with a period, the phase bins learn for this many cycles (or warmup values, if more)
SEASON_CYCLES = 4
#: a learning baseline scores values only once its mean rests on this many effective
#: (independent-equivalent) values, n (1 - phi) / (1 + phi)
MIN_EFFECTIVE = 3.0
#: phi learned from n values is off by about sqrt((1 - phi^2) / n), which leaves the
#: whitened values a long-run variance (1 + phi) / ((1 - phi) n) too large; their scale
#: allows for PHI_ERROR times that (two standard errors)
PHI_ERROR = 4.0
#: an autocorrelated baseline learns until it rests on EFFECTIVE_WARMUP x warmup
#: effective values (100 by default: phi 0.95 learns 3,900 values), at most LONGEST x
#: warmup values
EFFECTIVE_WARMUP = 0.1
LONGEST = 10
#: MAD of normal data x this = its standard deviation
MAD_TO_SD = 1.482602218505602


def median(values: list[float]) -> float:
    """The median by sorting (the mean of the two middle values of an even count)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


class Standardizer:
    """Self-starting, robust, whitened standardisation of one stream, so one threshold
    means the same on every feature whatever its units, its outliers, its autocorrelation
    and (with a ``period``) its cycle.

    Per value ``x`` (at stream index ``t``, counted across restarts):

    1. **Season** (``period`` > 0): ``d = x - (mean of x in x's phase bin - mean of the
       bins' means)``,
       ``phases`` bins per period, learned over the regime's first ``max(warmup,
       SEASON_CYCLES * period)`` values; the first ``period`` values of a regime only
       teach. Without a period ``d = x``.
    2. **Robust start**: the first ``min_samples`` values of ``d`` only teach; at the last
       of them the origin is their median and the winsorising scale 1.4826 x their MAD
       (their sd if the MAD is 0), and they are learned winsorised (clipped to
       origin +- ``WINSOR`` x scale).
    3. **Learning** (until ``warmup`` values, longer when autocorrelated: see
       ``EFFECTIVE_WARMUP``): running sums of the winsorised values
       give the location ``loc``, the scale ``scale`` and the lag-1 autocorrelation
       ``phi`` (clamped to [0, ``PHI_MAX``]). A value is whitened,
       ``r = ((d - loc) - phi (d_prev - loc)) / (scale sqrt(1 - phi^2))`` (``d_prev`` as
       it came: an excursion beyond the winsorising bound is real in an AR stream; once
       learned, the scale widened by ``PHI_ERROR`` for the error of phi), and while
       learning mapped through Student's t (``r / sqrt(1 + 1/n)`` with
       ``n (1 - phi^2) / (1 + phi^2) - 1`` degrees of freedom) to the normal quantile of
       the same probability; it only teaches while the effective sample size
       ``n (1 - phi) / (1 + phi)`` is below ``MIN_EFFECTIVE`` (an autocorrelated
       stream learns longer before it may alarm).
    4. **Settled**: after ``warmup`` values (and the season's learning) scale and phi
       stay fixed; ``settled`` is True for the one value at which that happens (the
       stream restarts its detectors there: what they learned from values scored
       against a still-moving baseline would look like a change later). ``loc`` then
       follows the winsorised values with weight ``1 / track`` (0: fixed), so a trend
       far slower than ``track`` values per sd does not page.

    z is clipped to ``[-clip, clip]``. A reference profile's mean and sd (``loc``,
    ``scale``), when given, are used instead (``z = (x - loc) / scale``) until the first
    ``restart``: after a detection the new regime becomes the baseline.

    >>> s = Standardizer(warmup=1000, min_samples=3, clip=5.0)
    >>> [None if z is None else round(z, 3) for z in (s.transform(x) for x in
    ...     (10.0, 12.0, 14.0, 12.0, 40.0))]
    [None, None, None, 0.0, 3.431]
    """

    __slots__ = ("warmup", "min_samples", "clip", "period", "phases", "track", "given",
                 "t", "n", "bin_sum", "bin_count", "mean_sum", "m", "buffer", "origin",
                 "s1", "s2", "sc", "prev", "last", "loc", "scale", "phi", "settled")

    def __init__(self, warmup: int, min_samples: int, clip: float,
                 loc: float | None = None, scale: float | None = None, *, period: int = 0,
                 phases: int = 24, track: int = 0) -> None:
        self.warmup, self.min_samples, self.clip = warmup, min_samples, clip
        self.period, self.phases, self.track = period, min(phases, period), track
        self.given = False
        self.t = 0
        self.settled = False
        self._fresh()
        if loc is not None and scale:
            self.given = True
            self.loc, self.scale = float(loc), float(scale)

    def _fresh(self) -> None:
        self.n = self.m = 0
        self.bin_sum = [0.0] * self.phases
        self.bin_count = [0] * self.phases
        self.mean_sum = 0.0
        self.buffer: list[float] = []
        self.origin = self.s1 = self.s2 = self.sc = self.prev = self.last = 0.0
        self.loc = self.scale = self.phi = 0.0

    def learning(self) -> bool:
        """Whether the baseline still learns (its level, or its season)."""
        return not self.given and (self._level_learning() or self.period > 0 and self.n < max(
            self.warmup, SEASON_CYCLES * self.period))

    def _level_learning(self) -> bool:
        """Fewer than ``warmup`` values learned, or (up to ``LONGEST`` x ``warmup``) fewer
        than ``EFFECTIVE_WARMUP`` x ``warmup`` effective ones."""
        m, phi = self.m, self.phi
        return m < self.warmup or (m * (1.0 - phi) / (1.0 + phi) < EFFECTIVE_WARMUP * self.warmup
                                   and m < LONGEST * self.warmup)

    def transform(self, x: float) -> float | None:
        t = self.t
        self.t = t + 1
        z: float | None
        if self.given:
            z = (x - self.loc) / self.scale
        else:
            was = self.learning()
            d = self._deseason(x, t)
            z = None if d is None else self._level(d)
            self.settled = was and not self.learning()
            if z is None:
                return None
        c = self.clip
        return c if z > c else -c if z < -c else z

    def _deseason(self, x: float, t: int) -> float | None:
        """``x`` less its phase's offset, or None while the first cycle only teaches."""
        if not self.period:
            return x
        n = self.n
        b = (t % self.period) * self.phases // self.period
        d = None
        if n >= self.period:
            d = x - (self.bin_sum[b] / self.bin_count[b] - self.mean_sum / self.phases)
        if n < max(self.warmup, SEASON_CYCLES * self.period):
            count = self.bin_count[b]
            old = self.bin_sum[b] / count if count else 0.0
            self.bin_sum[b] += x
            self.bin_count[b] = count + 1
            self.mean_sum += self.bin_sum[b] / (count + 1) - old
            self.n = n + 1
        return d

    def _level(self, d: float) -> float | None:
        m = self.m
        last, self.last = self.last, d
        if m < self.min_samples:
            self.buffer.append(d)
            self.m = m + 1
            if self.m == self.min_samples:
                self._start()
            return None
        y = d - self.origin
        scale, phi, loc = self.scale, self.phi, self.loc
        learning = self._level_learning()
        if scale <= 0:
            z = 0.0 if d == loc else math.copysign(self.clip, d - loc)
        else:
            widen = 1.0 if learning else 1.0 + PHI_ERROR * (1.0 + phi) / ((1.0 - phi) * m)
            r = ((d - loc) - phi * (last - loc)) / (scale * math.sqrt((1.0 - phi * phi) * widen))
            if learning:
                if m * (1.0 - phi) / (1.0 + phi) < MIN_EFFECTIVE:
                    z = None
                else:
                    df = m * (1.0 - phi * phi) / (1.0 + phi * phi) - 1.0
                    z = float(ndtri(stdtr(df, r / math.sqrt(1.0 + 1.0 / m))))
            else:
                z = r
        if learning:
            w = self._winsor(y, self.s1 / m, scale)
            self._learn(w)
            self.m = m + 1
            self._estimate()
        else:
            w = self._winsor(y, loc - self.origin, scale)
            if self.track:
                self.loc = loc + (w + self.origin - loc) / self.track
        self.prev = w
        return z

    @staticmethod
    def _winsor(y: float, centre: float, scale: float) -> float:
        if scale <= 0:
            return y
        lo, hi = centre - WINSOR * scale, centre + WINSOR * scale
        return lo if y < lo else hi if y > hi else y  # noqa: FURB136

    def _learn(self, w: float) -> None:
        self.s1 += w
        self.s2 += w * w
        self.sc += w * self.prev

    def _estimate(self) -> None:
        m = self.m
        mean = self.s1 / m
        var = (self.s2 - self.s1 * mean) / (m - 1)
        cov = (self.sc - self.s1 * mean) / (m - 1)
        self.loc = self.origin + mean
        if var > 0:
            self.scale = math.sqrt(var)
            ratio = cov / var
            capped = PHI_MAX if ratio > PHI_MAX else ratio  # noqa: FURB136
            self.phi = capped if ratio > 0 else 0.0
        else:
            self.scale = self.phi = 0.0

    def _start(self) -> None:
        """The robust start: median origin, MAD scale, the buffered values winsorised."""
        values, self.buffer = self.buffer, []
        origin = median(values)
        scale = median([abs(v - origin) for v in values]) * MAD_TO_SD
        if scale <= 0:
            mean = 0.0
            for v in values:
                mean += v
            mean /= len(values)
            ss = 0.0
            for v in values:
                ss += (v - mean) * (v - mean)
            scale = math.sqrt(ss / (len(values) - 1))
        self.origin = origin
        self.prev = 0.0
        for v in values:
            w = self._winsor(v - origin, 0.0, scale)
            self._learn(w)
            self.prev = w
        self._estimate()

    def restart(self) -> None:
        """Forget the baseline (after a detection): learn the new regime."""
        self.given = False
        self._fresh()

    def relevel(self, shift: float) -> None:
        """Move the baseline's level by ``shift`` (a ``Jump`` found the values stepped by
        it), keeping what it learned of their scale, autocorrelation and season; a
        baseline still gathering its robust start learns afresh (``restart``)."""
        if not self.given and self.m < self.min_samples:
            self.restart()
            return
        self.origin += shift
        self.loc += shift

    @classmethod
    def from_settings(cls, d: Any, loc: float | None = None, scale: float | None = None
                      ) -> Standardizer:
        """The standardiser ``detection`` settings ``d`` describe (``loc``, ``scale``: a
        reference profile's baseline)."""
        return cls(d.warmup, d.min_samples, d.clip, loc, scale, period=d.period,
                   phases=d.phases, track=d.track)
