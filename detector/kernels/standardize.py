"""Robust, whitened, seasonal standardisation over a column: a port of
``detector.detectors.Standardizer`` (see it for the method).

Per value: the phase bin's offset is removed (with a ``period``), the first
``min_samples`` values of a regime only teach and give the robust start (median,
MAD), then running sums of the winsorised values give location, scale and the lag-1
autocorrelation ``phi``; the value is whitened, ``(d - loc - phi (d_prev - loc)) /
(scale sqrt(1 - phi^2))``, mapped from Student's t to the normal while learning, and
clipped. After ``warmup`` values scale and phi are fixed and the location tracks.

``stdtr`` and ``ndtri`` are SciPy's own C functions, called from the compiled loop
through ``scipy.special.cython_special`` (the functions behind the ``scipy.special``
ufuncs), so z is equal to the reference's bit for bit.

State is plain arrays (``StandardizerState``), one row per stream.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import llvmlite.binding as llvm
import numpy as np
from numba import types
from numba.extending import get_cython_function_address
from scipy.special import cython_special

from detector import detectors
from detector.detectors import (
    EFFECTIVE_WARMUP,
    LONGEST,
    MAD_TO_SD,
    MIN_EFFECTIVE,
    PHI_ERROR,
    PHI_MAX,
    SEASON_CYCLES,
    WINSOR,
)
from detector.kernels._jit import as_column, check_row, inline, kernel

# columns of StandardizerState.params, .moments and .counts
_WARMUP, _MIN_SAMPLES, _CLIP, _PERIOD, _PHASES, _TRACK = 0, 1, 2, 3, 4, 5
_ORIGIN, _S1, _S2, _SC, _PREV, _LOC, _SCALE, _PHI, _MEAN_SUM, _LAST = range(10)
_T, _N, _M, _GIVEN = 0, 1, 2, 3
#: columns of each array, for a checkpoint's shape check
WIDTHS = {"params": 6, "moments": 10, "counts": 4}


def _c_function(name: str, signature: str, symbol: str) -> None:
    """Make SciPy's C function ``name`` (the variant with ``signature``) callable from
    compiled code as ``symbol``; the symbol is resolved again in every process, so code
    cached on disk keeps working."""
    for variant in (name, f"__pyx_fuse_0{name}", f"__pyx_fuse_1{name}"):
        capsule = cython_special.__pyx_capi__.get(variant)
        if capsule is not None and f'"{signature}"' in repr(capsule):
            llvm.add_symbol(symbol, get_cython_function_address(
                "scipy.special.cython_special", variant))
            return
    raise ImportError(f"scipy.special.cython_special has no {signature!r} {name}")


_c_function("stdtr", "double (double, double, int __pyx_skip_dispatch)", "detector_stdtr")
_c_function("ndtri", "double (double, int __pyx_skip_dispatch)", "detector_ndtri")
_stdtr = types.ExternalFunction("detector_stdtr",
                                types.float64(types.float64, types.float64, types.intc))
_ndtri = types.ExternalFunction("detector_ndtri", types.float64(types.float64, types.intc))


class StandardizerState(NamedTuple):
    """Standardisers, one per row. ``params``: warmup, min_samples, clip, period,
    phases, track. ``moments``: origin, s1, s2, sc (sums of the winsorised values less
    the origin, their squares and lag-1 products), prev (the last winsorised value less
    the origin), loc, scale, phi, mean_sum (of the phase bins' means), last (the last
    value, as it came, less its season).
    ``counts``: t (values seen, across restarts), n (values the season learned), m
    (values the level learned), given (1 while a profile's loc and scale are used).
    ``buffer[r, :min_samples]``: the robust start's values; ``scratch``: room to sort
    them; ``bins[r, 0]``: sums, ``bins[r, 1]``: counts of the phase bins."""

    params: np.ndarray
    moments: np.ndarray
    counts: np.ndarray
    buffer: np.ndarray
    scratch: np.ndarray
    bins: np.ndarray


def new_state(warmup: int, min_samples: int, clip: float, loc: float | None = None,
              scale: float | None = None, *, period: int = 0, phases: int = 24,
              track: int = 0) -> StandardizerState:
    """One fresh standardiser, with the reference's parameters (a ``scale`` of 0 or
    None means no given baseline, as in the reference)."""
    if warmup < 2 or min_samples < 3 or not clip > 0 or period < 0 or phases < 1 or track < 0:
        raise ValueError("need warmup >= 2, min_samples >= 3, clip > 0, period >= 0, "
                         "phases >= 1 and track >= 0")
    given = loc is not None and bool(scale)
    phases = min(phases, period)
    moments = np.zeros((1, 10))
    if given:
        moments[0, _LOC], moments[0, _SCALE] = loc, scale
    return StandardizerState(
        np.array([[warmup, min_samples, clip, period, phases, track]], dtype=np.float64),
        moments, np.array([[0, 0, 0, int(given)]], dtype=np.int64),
        np.zeros((1, min_samples)), np.zeros((1, min_samples)),
        np.zeros((1, 2, max(phases, 1))))


def from_reference(std: Any) -> StandardizerState:
    """A fresh state with the parameters (and given baseline) of a fresh
    ``detector.detectors.Standardizer``."""
    return new_state(std.warmup, std.min_samples, std.clip,
                     std.loc if std.given else None, std.scale if std.given else None,
                     period=std.period, phases=std.phases or 24, track=std.track)


def statistics(state: StandardizerState, row: int = 0) -> dict[str, float]:
    """The reference's attributes of standardiser ``row``: ``t``, ``n``, ``m``,
    ``loc``, ``scale`` and ``phi``."""
    check_row(state, row)
    c, mo = state.counts[row], state.moments[row]
    return {"t": float(c[_T]), "n": float(c[_N]), "m": float(c[_M]), "loc": float(mo[_LOC]),
            "scale": float(mo[_SCALE]), "phi": float(mo[_PHI])}


@inline
def _winsor(y: float, centre: float, scale: float) -> float:
    if scale <= 0:
        return y
    lo = centre - WINSOR * scale
    hi = centre + WINSOR * scale
    return lo if y < lo else hi if y > hi else y  # noqa: FURB136


@inline
def _learn(s: StandardizerState, r: int, w: float) -> None:
    s.moments[r, _S1] += w
    s.moments[r, _S2] += w * w
    s.moments[r, _SC] += w * s.moments[r, _PREV]


@inline
def _estimate(s: StandardizerState, r: int) -> None:
    m = s.counts[r, _M]
    s1 = s.moments[r, _S1]
    mean = s1 / m
    var = (s.moments[r, _S2] - s1 * mean) / (m - 1)
    cov = (s.moments[r, _SC] - s1 * mean) / (m - 1)
    s.moments[r, _LOC] = s.moments[r, _ORIGIN] + mean
    if var > 0:
        s.moments[r, _SCALE] = math.sqrt(var)
        ratio = cov / var
        capped = PHI_MAX if ratio > PHI_MAX else ratio  # noqa: FURB136
        s.moments[r, _PHI] = capped if ratio > 0 else 0.0
    else:
        s.moments[r, _SCALE] = 0.0
        s.moments[r, _PHI] = 0.0


@inline
def sorted_median(a: np.ndarray, k: int) -> float:
    """Sort ``a[:k]`` in place (insertion sort: ``k`` is small) and return its median."""
    for i in range(1, k):
        v = a[i]
        j = i - 1
        while j >= 0 and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v
    mid = k // 2
    return a[mid] if k % 2 else (a[mid - 1] + a[mid]) / 2.0


def _start(s: StandardizerState, r: int) -> None:
    """The robust start (the reference's ``_start``): compiled on its own, not inlined
    (it runs once per regime, and inlining its sorts into every kernel tripled their
    compile time)."""
    k = s.counts[r, _M]
    buf, tmp = s.buffer[r], s.scratch[r]
    for i in range(k):
        tmp[i] = buf[i]
    origin = sorted_median(tmp, k)
    for i in range(k):
        tmp[i] = abs(buf[i] - origin)
    scale = sorted_median(tmp, k) * MAD_TO_SD
    if scale <= 0:
        mean = 0.0
        for i in range(k):
            mean += buf[i]
        mean /= k
        ss = 0.0
        for i in range(k):
            ss += (buf[i] - mean) * (buf[i] - mean)
        scale = math.sqrt(ss / (k - 1))
    s.moments[r, _ORIGIN] = origin
    s.moments[r, _PREV] = 0.0
    for i in range(k):
        w = _winsor(buf[i] - origin, 0.0, scale)
        _learn(s, r, w)
        s.moments[r, _PREV] = w
    _estimate(s, r)


_start = kernel(_start, uses=(detectors,))


@inline
def _level_learning(s: StandardizerState, r: int) -> bool:
    """The reference's ``_level_learning``."""
    m = s.counts[r, _M]
    phi = s.moments[r, _PHI]
    warmup = s.params[r, _WARMUP]
    return m < warmup or (m * (1.0 - phi) / (1.0 + phi) < EFFECTIVE_WARMUP * warmup
                          and m < LONGEST * warmup)


@inline
def _learning(s: StandardizerState, r: int) -> bool:
    """The reference's ``learning`` (for a standardiser without a given baseline)."""
    period = s.params[r, _PERIOD]
    return _level_learning(s, r) or (period > 0 and s.counts[r, _N] < max(
        s.params[r, _WARMUP], SEASON_CYCLES * period))


@inline
def step(s: StandardizerState, r: int, x: float) -> tuple[float, bool, bool]:
    """``(z, True, settled)`` for one value, or ``(0.0, False, settled)`` while it only
    teaches (the reference's ``transform`` returning None); ``settled``: the
    reference's ``settled``."""
    if s.counts[r, _GIVEN]:
        s.counts[r, _T] += 1
        clip = s.params[r, _CLIP]
        z = (x - s.moments[r, _LOC]) / s.moments[r, _SCALE]
        return (clip if z > clip else -clip if z < -clip else z), True, False  # noqa: FURB136
    was = _learning(s, r)
    z, valid = _step(s, r, x)
    return z, valid, was and not _learning(s, r)


@inline
def _step(s: StandardizerState, r: int, x: float) -> tuple[float, bool]:
    clip = s.params[r, _CLIP]
    t = s.counts[r, _T]
    s.counts[r, _T] = t + 1
    # season
    d = x
    period = int(s.params[r, _PERIOD])
    if period:
        n = s.counts[r, _N]
        phases = int(s.params[r, _PHASES])
        b = (t % period) * phases // period
        seasonal = n >= period
        if seasonal:
            d = x - (s.bins[r, 0, b] / s.bins[r, 1, b] - s.moments[r, _MEAN_SUM] / phases)
        if n < max(s.params[r, _WARMUP], SEASON_CYCLES * period):
            count = s.bins[r, 1, b]
            old = s.bins[r, 0, b] / count if count else 0.0
            s.bins[r, 0, b] += x
            s.bins[r, 1, b] = count + 1.0
            s.moments[r, _MEAN_SUM] += s.bins[r, 0, b] / (count + 1.0) - old
            s.counts[r, _N] = n + 1
        if not seasonal:
            return 0.0, False
    # level
    m = s.counts[r, _M]
    last = s.moments[r, _LAST]
    s.moments[r, _LAST] = d
    min_samples = int(s.params[r, _MIN_SAMPLES])
    if m < min_samples:
        s.buffer[r, m] = d
        s.counts[r, _M] = m + 1
        if m + 1 == min_samples:
            _start(s, r)
        return 0.0, False
    if _level_learning(s, r):
        z, valid = _learning_step(s, r, d, last)
        if not valid:
            return 0.0, False
    else:       # the settled baseline: the usual case, inlined
        origin = s.moments[r, _ORIGIN]
        scale = s.moments[r, _SCALE]
        phi = s.moments[r, _PHI]
        loc = s.moments[r, _LOC]
        if scale <= 0:
            z = 0.0 if d == loc else math.copysign(clip, d - loc)
        else:
            widen = 1.0 + PHI_ERROR * (1.0 + phi) / ((1.0 - phi) * m)
            z = ((d - loc) - phi * (last - loc)) / (scale * math.sqrt((1.0 - phi * phi) * widen))
        w = _winsor(d - origin, loc - origin, scale)
        track = s.params[r, _TRACK]
        if track:
            s.moments[r, _LOC] = loc + (w + origin - loc) / track
        s.moments[r, _PREV] = w
    return (clip if z > clip else -clip if z < -clip else z), True  # noqa: FURB136


def _learning_step(s: StandardizerState, r: int, d: float, last: float) -> tuple[float, bool]:
    """A value of a baseline still learning (``d`` less its season, ``last`` the one
    before): its unclipped z, whether it is scored, and what it teaches. Compiled on
    its own, as ``_start``: it runs for the first values of a regime only."""
    m = s.counts[r, _M]
    origin = s.moments[r, _ORIGIN]
    scale = s.moments[r, _SCALE]
    phi = s.moments[r, _PHI]
    loc = s.moments[r, _LOC]
    valid = True
    z = 0.0
    if scale <= 0:
        z = 0.0 if d == loc else math.copysign(s.params[r, _CLIP], d - loc)
    else:
        e = ((d - loc) - phi * (last - loc)) / (scale * math.sqrt(1.0 - phi * phi))
        if m * (1.0 - phi) / (1.0 + phi) < MIN_EFFECTIVE:
            valid = False
        else:
            df = m * (1.0 - phi * phi) / (1.0 + phi * phi) - 1.0
            z = _ndtri(_stdtr(df, e / math.sqrt(1.0 + 1.0 / m), 0), 0)
    w = _winsor(d - origin, s.moments[r, _S1] / m, scale)
    _learn(s, r, w)
    s.counts[r, _M] = m + 1
    _estimate(s, r)
    s.moments[r, _PREV] = w
    return z, valid


_learning_step = kernel(_learning_step, uses=(detectors,))


@inline
def restart_step(s: StandardizerState, r: int) -> None:
    """Forget the baseline of standardiser ``r`` (compiled ``restart``); ``t`` stays."""
    s.moments[r, :] = 0.0
    s.counts[r, _N] = 0
    s.counts[r, _M] = 0
    s.counts[r, _GIVEN] = 0
    s.bins[r, :, :] = 0.0


@inline
def relevel_step(s: StandardizerState, r: int, shift: float) -> None:
    """Move the baseline's level by ``shift`` (the reference's ``relevel``)."""
    if not s.counts[r, _GIVEN] and s.counts[r, _M] < s.params[r, _MIN_SAMPLES]:
        restart_step(s, r)
        return
    s.moments[r, _ORIGIN] += shift
    s.moments[r, _LOC] += shift


def _standardize_many(s: StandardizerState, r: int, values: np.ndarray, out: np.ndarray,
                      valid: np.ndarray) -> None:
    for i in range(values.size):
        out[i], valid[i], _ = step(s, r, values[i])


_standardize_many = kernel(_standardize_many, uses=(detectors,))


def transform_many(state: StandardizerState, values: Any, row: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Standardise a column of values, in order, with standardiser ``row`` of ``state``
    (updated in place).

    Parameters
    ----------
    state
        From ``new_state``.
    values
        Finite numbers, oldest first.
    row
        Which standardiser of ``state``.

    Returns
    -------
    z, valid
        The z-scores, and False where a value only taught the baseline (z is 0 there;
        the reference returns None).

    Examples
    --------
    >>> state = new_state(warmup=1000, min_samples=3, clip=5.0)
    >>> z, valid = transform_many(state, [10.0, 12.0, 14.0, 12.0, 40.0])
    >>> [round(float(v), 3) if ok else None for v, ok in zip(z, valid)]
    [None, None, None, 0.0, 3.431]
    """
    check_row(state, row)
    column = as_column(values)
    out = np.empty(column.size)
    valid = np.empty(column.size, dtype=np.bool_)
    _standardize_many(state, row, column, out, valid)
    return out, valid


def restart(state: StandardizerState, row: int = 0) -> None:
    """Forget the baseline of standardiser ``row`` (after a detection): learn the new
    regime, as the reference's ``restart``."""
    check_row(state, row)
    _restart(state, row)


def _restart(s: StandardizerState, r: int) -> None:
    restart_step(s, r)


_restart = kernel(_restart, uses=(detectors,))
