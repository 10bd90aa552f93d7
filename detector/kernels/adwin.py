"""ADWIN over a column: a port of River's ``drift.ADWIN`` that gives the same detections.

River 0.26 runs ADWIN in Rust (``AdaptiveWindowing``, a port of its earlier Cython
``adwin_c.pyx``). This is the same algorithm with every floating-point operation in
the same order, so detection indices, ``width``, ``estimation`` and ``variance`` are
equal to River's bit for bit (``tests/unit/test_kernels.py`` checks >= 1M values):

* the window is kept as exponential histograms: level ``i`` holds up to
  ``max_buckets + 1`` buckets of ``2**i`` values (their total and variance); a full
  level merges its two oldest buckets into one bucket of the next level;
* every ``clock`` values, once the window is longer than ``grace_period``, each split
  of the window into an older part ``W0`` and a newer part ``W1`` (at bucket
  boundaries, both at least ``min_window_length`` long) is tested; when the means
  differ by more than the Hoeffding-style bound for ``delta`` the oldest bucket is
  dropped, and the test starts over until no split is significant;
* like River, a detector that fired forgets everything at its next value.

State is plain arrays (``AdwinState``) with one row per detector, so many detectors
stack into one state and a checkpoint is ``state._asdict()`` (no pickle).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from detector import detectors
from detector.kernels._jit import Fired, as_column, check_row, collect, inline, kernel

#: levels of the exponential histogram: level i holds buckets of 2**i values, so 64
#: levels cover any window a 64-bit counter can count
LEVELS = 64
#: the statistics a detection reports, as ``detector.detectors.statistic``
STATISTIC = ("estimation", "variance", "width")

# columns of AdwinState.params
_DELTA, _CLOCK, _MAX_BUCKETS, _MIN_WINDOW, _GRACE = 0, 1, 2, 3, 4
# columns of AdwinState.sums
_TOTAL, _VARIANCE, _WIDTH = 0, 1, 2
# columns of AdwinState.counts
_TICK, _LEVELS, _DETECTED = 0, 1, 2

_I32_MAX = 2**31 - 1


class AdwinState(NamedTuple):
    """ADWIN detectors, one per row.

    ``params``: delta, clock, max_buckets, min_window_length, grace_period (float64).
    ``sums``: total, variance (sum of squared deviations, as River's ``variance``),
    width. ``counts``: tick (values since the last check, as River's wrapping 32-bit
    counter), levels in use, fired (1 until the next value resets the detector).
    ``sizes[r, i]``: buckets at level ``i``; ``totals`` and ``variances``
    ``[r, i, j]``: bucket ``j`` (oldest first) of level ``i``.
    """

    params: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    sizes: np.ndarray
    totals: np.ndarray
    variances: np.ndarray


def new_state(params: Mapping[str, Any] | None = None) -> AdwinState:
    """One fresh ADWIN with River's parameters (``delta``, ``clock``, ``max_buckets``,
    ``min_window_length``, ``grace_period``; River's defaults for those not given).

    Raises ``ValueError`` for a parameter River or ``detector.detectors`` refuses.
    """
    det = detectors.build("adwin", dict(params or {}))
    row = [det.delta, det.clock, det.max_buckets, det.min_window_length, det.grace_period]
    if det.clock < 1 or det.max_buckets < 1:
        raise ValueError("adwin clock and max_buckets must be at least 1")
    state = AdwinState(
        params=np.array([row], dtype=np.float64),
        sums=np.zeros((1, 3)),
        counts=np.zeros((1, 3), dtype=np.int64),
        sizes=np.zeros((1, LEVELS), dtype=np.int64),
        totals=np.zeros((1, LEVELS, det.max_buckets + 1)),
        variances=np.zeros((1, LEVELS, det.max_buckets + 1)),
    )
    state.counts[0, _LEVELS] = 1
    return state


def stack(states: list[AdwinState]) -> AdwinState:
    """Several ADWIN states as one, row after row (in the order given)."""
    if not states:
        return AdwinState(np.zeros((0, 5)), np.zeros((0, 3)), np.zeros((0, 3), np.int64),
                          np.zeros((0, LEVELS), np.int64), np.zeros((0, LEVELS, 1)),
                          np.zeros((0, LEVELS, 1)))
    width = max(s.totals.shape[2] for s in states)

    def padded(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, 0), (0, width - a.shape[2])))

    return AdwinState(*(np.concatenate(parts) for parts in zip(*(
        (s.params, s.sums, s.counts, s.sizes, padded(s.totals), padded(s.variances))
        for s in states))))


def statistics(state: AdwinState, row: int = 0) -> dict[str, float]:
    """River's public view of detector ``row``: ``estimation``, ``variance``, ``width``,
    ``total`` and ``drift_detected`` (1.0 or 0.0)."""
    check_row(state, row)
    total, variance, width = (float(v) for v in state.sums[row])
    return {"estimation": total / width if width != 0 else 0.0, "variance": variance,
            "width": width, "total": total, "drift_detected": float(state.counts[row, _DETECTED])}


def onset_age(state: AdwinState, row: int = 0) -> int:
    """ADWIN's estimate of the change's age right after it fired: its window width."""
    check_row(state, row)
    return int(state.sums[row, _WIDTH])


@inline
def _reset(s: AdwinState, r: int) -> None:
    s.sums[r, :] = 0.0
    s.counts[r, :] = 0
    s.counts[r, _LEVELS] = 1
    s.sizes[r, :] = 0
    s.totals[r, :, :] = 0.0
    s.variances[r, :, :] = 0.0


@inline
def _drop_oldest(s: AdwinState, r: int, level: int, n: int) -> None:
    """Remove the ``n`` oldest buckets of ``level`` (River's ``Bucket.compress``)."""
    size = s.sizes[r, level]
    remaining = size - n
    for j in range(remaining):
        s.totals[r, level, j] = s.totals[r, level, j + n]
        s.variances[r, level, j] = s.variances[r, level, j + n]
    for j in range(remaining, size):
        s.totals[r, level, j] = 0.0
        s.variances[r, level, j] = 0.0
    s.sizes[r, level] = remaining


@inline
def _insert(s: AdwinState, r: int, x: float) -> None:
    """Add one value (River's ``insert_element`` and ``compress_buckets``)."""
    k = s.sizes[r, 0]
    s.totals[r, 0, k] = x
    s.variances[r, 0, k] = 0.0
    s.sizes[r, 0] = k + 1
    width = s.sums[r, _WIDTH] + 1.0
    s.sums[r, _WIDTH] = width
    incremental = 0.0
    if width > 1.0:
        d = x - s.sums[r, _TOTAL] / (width - 1.0)
        incremental = (width - 1.0) * d * d / width
    s.sums[r, _VARIANCE] += incremental
    s.sums[r, _TOTAL] += x

    full = int(s.params[r, _MAX_BUCKETS]) + 1
    level = 0
    while s.sizes[r, level] == full:
        n1 = float(1 << level)
        t0, t1 = s.totals[r, level, 0], s.totals[r, level, 1]
        v0, v1 = s.variances[r, level, 0], s.variances[r, level, 1]
        mu1 = t0 / n1
        mu2 = t1 / n1
        total12 = t0 + t1
        temp = n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2)
        v12 = v0 + v1 + temp
        if level + 1 >= s.counts[r, _LEVELS]:
            s.counts[r, _LEVELS] = level + 2
        j = s.sizes[r, level + 1]
        s.totals[r, level + 1, j] = total12
        s.variances[r, level + 1, j] = v12
        s.sizes[r, level + 1] = j + 1
        _drop_oldest(s, r, level, 2)
        if s.sizes[r, level + 1] < full:
            break
        level += 1


@inline
def _delete_oldest_bucket(s: AdwinState, r: int) -> None:
    """Drop the oldest bucket from the window (River's ``delete_element``)."""
    last = s.counts[r, _LEVELS] - 1
    n = float(1 << last)
    u = s.totals[r, last, 0]
    v = s.variances[r, last, 0]
    mu = u / n
    width = s.sums[r, _WIDTH] - n
    total = s.sums[r, _TOTAL] - u
    s.sums[r, _WIDTH] = width
    s.sums[r, _TOTAL] = total
    mu_window = total / width
    s.sums[r, _VARIANCE] -= v + n * width * (mu - mu_window) * (mu - mu_window) / (n + width)
    _drop_oldest(s, r, last, 1)
    if s.sizes[r, last] == 0:
        s.counts[r, _LEVELS] = last


@inline
def _detect(s: AdwinState, r: int) -> bool:
    """Every ``clock`` values, test every split of the window and drop the oldest
    bucket while one is significant (River's ``detect_change``)."""
    tick = s.counts[r, _TICK] + 1
    if tick > _I32_MAX:  # River's tick is an i32 that wraps in its release build
        tick -= 2 * (_I32_MAX + 1)
    s.counts[r, _TICK] = tick
    if tick % int(s.params[r, _CLOCK]) != 0 or not s.sums[r, _WIDTH] > s.params[r, _GRACE]:
        return False
    delta = s.params[r, _DELTA]
    min_window = s.params[r, _MIN_WINDOW]
    detected = False
    while True:
        width = s.sums[r, _WIDTH]
        n0, n1, u0, u1 = 0.0, width, 0.0, s.sums[r, _TOTAL]
        # River computes these two for every split; they depend on the window only
        delta_prime = math.log(2.0 * math.log(width) / delta)
        variance_in_window = s.sums[r, _VARIANCE] / width
        # River stops at the first significant split and drops the oldest bucket; which
        # split it was does not matter, so every split is tested without branches and
        # the divisions of successive splits overlap in the CPU
        cut = False
        for level in range(s.counts[r, _LEVELS] - 1, -1, -1):
            bucket_size = float(1 << level)
            size = s.sizes[r, level]
            for k in range(size - 1 if level == 0 else size):  # the newest value never splits
                n0 += bucket_size
                n1 -= bucket_size
                total_at = s.totals[r, level, k]
                u0 += total_at
                u1 -= total_at
                delta_mean = (u0 / n0) - (u1 / n1)
                m_recip = 1.0 / (n0 - min_window + 1.0) + 1.0 / (n1 - min_window + 1.0)
                epsilon = (math.sqrt(2.0 * m_recip * variance_in_window * delta_prime)
                           + 2.0 / 3.0 * delta_prime * m_recip)
                cut |= (n1 >= min_window) & (n0 >= min_window) & (abs(delta_mean) > epsilon)
        if not cut:
            return detected
        # a split has the newest value on its right, so the window is not empty here
        detected = True
        _delete_oldest_bucket(s, r)


@inline
def step(s: AdwinState, r: int, x: float) -> bool:
    """Feed one value to detector ``r``; True when it fires (River's ``update``)."""
    if s.counts[r, _DETECTED]:
        _reset(s, r)
    _insert(s, r, x)
    fired = _detect(s, r)
    s.counts[r, _DETECTED] = fired
    return fired


@inline
def record(s: AdwinState, r: int, out: np.ndarray) -> int:
    """Write ``STATISTIC`` of detector ``r`` into ``out``; return its onset age."""
    total, variance, width = s.sums[r, _TOTAL], s.sums[r, _VARIANCE], s.sums[r, _WIDTH]
    out[0] = total / width if width != 0.0 else 0.0
    out[1] = variance
    out[2] = width
    return int(width)


@inline
def reset(s: AdwinState, r: int) -> None:
    """Forget everything, as a fresh detector (River's ``_reset``)."""
    _reset(s, r)


@inline
def direction(s: AdwinState, r: int) -> int:
    """+1 when the window kept after a firing is above 0 (values standardised), else -1."""
    width = s.sums[r, _WIDTH]
    return 1 if (s.sums[r, _TOTAL] / width if width != 0.0 else 0.0) > 0.0 else -1


@kernel
def _adwin_update_many(s: AdwinState, r: int, values: np.ndarray, start: int,
                       out_int: np.ndarray, out_float: np.ndarray) -> tuple[int, int]:
    count = 0
    for i in range(start, values.size):
        if count == out_int.shape[0]:
            return i, count
        if step(s, r, values[i]):
            out_int[count, 0] = i
            out_int[count, 1] = record(s, r, out_float[count])
            count += 1
    return values.size, count


def update_many(state: AdwinState, values: Any, row: int = 0) -> Fired:
    """Feed a column of values, in order, to ADWIN ``row`` of ``state`` (updated in place).

    Parameters
    ----------
    state
        From ``new_state`` (or ``stack``).
    values
        Finite numbers, oldest first.
    row
        Which detector of ``state``.

    Returns
    -------
    Fired
        The positions in ``values`` where it fired, its width then (the onset age) and
        ``estimation``, ``variance`` and ``width`` at each, as River reports them.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(12345)
    >>> values = np.concatenate([rng.integers(0, 2, 1000), rng.integers(4, 8, 1000)])
    >>> state = new_state()
    >>> fired = update_many(state, values)
    >>> for i, width in zip(fired.index, fired.onset_age):
    ...     print(f"Change detected at index {i}, input value: {values[i]}, window {width}")
    Change detected at index 1023, input value: 7, window 32
    >>> statistics(state)["width"]      # after the last value
    976.0
    """
    check_row(state, row)
    column = as_column(values)
    ints, floats = collect(
        lambda start, oi, of: _adwin_update_many(state, row, column, start, oi, of),
        column.size, 1, 2, len(STATISTIC))
    return Fired(ints[:, 0], ints[:, 1], floats, STATISTIC)
