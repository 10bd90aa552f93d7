"""Self-starting standardisation over a column: a port of ``detector.detectors.Standardizer``.

Each value is scaled by the mean and sd of the values before it in the current regime
(Welford's running moments); while fewer than ``warmup`` are learned the Student t of
the value is mapped to the normal quantile of the same probability,
``ndtri(stdtr(n - 1, t))``; z is clipped to ``[-clip, clip]``; the first
``min_samples`` values only teach. A reference profile's mean and sd, when given, are
used instead until the first ``restart``.

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

from detector.kernels._jit import as_column, check_row, inline, kernel

# columns of StandardizerState.params, .moments and .counts
_WARMUP, _MIN_SAMPLES, _CLIP = 0, 1, 2
_MEAN, _M2, _LOC, _SCALE = 0, 1, 2, 3
_N, _GIVEN = 0, 1


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
    """Standardisers, one per row. ``params``: warmup, min_samples, clip. ``moments``:
    mean and m2 of the values learned, loc and scale of the given baseline.
    ``counts``: n (values learned), given (1 while loc and scale are used)."""

    params: np.ndarray
    moments: np.ndarray
    counts: np.ndarray


def new_state(warmup: int, min_samples: int, clip: float, loc: float | None = None,
              scale: float | None = None) -> StandardizerState:
    """One fresh standardiser, with the reference's parameters (a ``scale`` of 0 or
    None means no given baseline, as in the reference)."""
    if warmup < 2 or min_samples < 3 or not clip > 0:
        raise ValueError("need warmup >= 2, min_samples >= 3 and clip > 0")
    given = loc is not None and bool(scale)
    state = StandardizerState(
        np.array([[warmup, min_samples, clip]], dtype=np.float64),
        np.array([[0.0, 0.0, loc if given else 0.0, scale if given else 0.0]]),
        np.array([[0, int(given)]], dtype=np.int64))
    return state


def statistics(state: StandardizerState, row: int = 0) -> dict[str, float | None]:
    """The reference's attributes of standardiser ``row``: ``n``, ``mean``, ``m2``,
    ``loc`` and ``scale`` (None without a given baseline)."""
    check_row(state, row)
    given = bool(state.counts[row, _GIVEN])
    return {"n": float(state.counts[row, _N]), "mean": float(state.moments[row, _MEAN]),
            "m2": float(state.moments[row, _M2]),
            "loc": float(state.moments[row, _LOC]) if given else None,
            "scale": float(state.moments[row, _SCALE]) if given else None}


@inline
def step(s: StandardizerState, r: int, x: float) -> tuple[float, bool]:
    """``(z, True)`` for one value, or ``(0.0, False)`` while it only teaches
    (the reference's ``transform`` returning None)."""
    clip = s.params[r, _CLIP]
    if s.counts[r, _GIVEN]:
        z = (x - s.moments[r, _LOC]) / s.moments[r, _SCALE]
    else:
        n = s.counts[r, _N]
        mean = s.moments[r, _MEAN]
        warmup = s.params[r, _WARMUP]
        valid = n >= s.params[r, _MIN_SAMPLES]
        z = 0.0
        if valid:
            sd = math.sqrt(s.moments[r, _M2] / (n - 1))
            if sd <= 0:
                z = 0.0 if x == mean else math.copysign(clip, x - mean)
            elif n < warmup:
                t = (x - mean) / (sd * math.sqrt(1.0 + 1.0 / n))
                z = _ndtri(_stdtr(float(n - 1), t, 0), 0)
            else:
                z = (x - mean) / sd
        if n < warmup:
            n += 1
            delta = x - mean
            mean += delta / n
            s.moments[r, _MEAN] = mean
            s.moments[r, _M2] += delta * (x - mean)
            s.counts[r, _N] = n
        if not valid:
            return 0.0, False
    return (clip if z > clip else -clip if z < -clip else z), True  # noqa: FURB136


@inline
def restart_step(s: StandardizerState, r: int) -> None:
    """Forget the baseline of standardiser ``r`` (compiled ``restart``)."""
    s.moments[r, :] = 0.0
    s.counts[r, :] = 0


@kernel
def _standardize_many(s: StandardizerState, r: int, values: np.ndarray, out: np.ndarray,
                      valid: np.ndarray) -> None:
    for i in range(values.size):
        out[i], valid[i] = step(s, r, values[i])


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
    state.moments[row] = 0.0
    state.counts[row] = 0
