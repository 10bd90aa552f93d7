"""Two-sided CUSUM over a column: a port of ``detector.detectors.CUSUM``.

``s+ = max(0, s+ + x - k)`` and ``s- = max(0, s- - x - k)``; it fires when either sum
exceeds ``h``, and (as the reference) both restart from 0 at the *next* value. The
age of each sum (values since it was last 0) gives the change's estimated start:
``change_age`` is the age of the sum that crossed. With ``tails`` > 0 it learns the
tails of its first ``tails`` values and then compares each sum with its own threshold
(``h_up``, ``h_down``: ``h`` x ``detectors.tail_factor``). Same operations in the same
order as the reference, so sums, thresholds, ages and detection indices are equal bit
for bit.

State is plain arrays (``CusumState``), one row per detector.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from detector import detectors
from detector.detectors import TAIL_FIRST, TAIL_POINTS, TAIL_STEP
from detector.kernels._jit import Fired, as_column, check_row, collect, inline, kernel

#: the statistics a detection reports, as ``detector.detectors.statistic``
STATISTIC = ("upper", "lower")

# columns of CusumState.params, .sums and .counts
_K, _H, _TAILS = 0, 1, 2
_UPPER, _LOWER, _H_UP, _H_DOWN, _TAIL_UP = 0, 1, 2, 3, 4
_TAIL_DOWN = _TAIL_UP + TAIL_POINTS
_UPPER_AGE, _LOWER_AGE, _CHANGE_AGE, _DETECTED, _LEARNED = 0, 1, 2, 3, 4
#: columns of each array
WIDTHS = {"params": 3, "sums": _TAIL_DOWN + TAIL_POINTS, "counts": 5}


class CusumState(NamedTuple):
    """CUSUM detectors, one per row. ``params``: k, h, tails. ``sums``: upper, lower,
    h_up, h_down, then the upper and the lower tail sums (``TAIL_POINTS`` each).
    ``counts``: upper_age, lower_age, change_age, fired (1 until the next value),
    values learned of the tails."""

    params: np.ndarray
    sums: np.ndarray
    counts: np.ndarray


def new_state(params: Mapping[str, Any] | None = None) -> CusumState:
    """One fresh CUSUM (``k``, ``h``; the reference's defaults for those not given).

    Raises ``ValueError`` for a parameter ``detector.detectors`` refuses.
    """
    det = detectors.build("cusum", dict(params or {}))
    sums = np.zeros((1, WIDTHS["sums"]))
    sums[0, _H_UP] = sums[0, _H_DOWN] = det.h
    return CusumState(np.array([[det.k, det.h, det.tails]], dtype=np.float64), sums,
                      np.zeros((1, WIDTHS["counts"]), dtype=np.int64))


def stack(states: list[CusumState]) -> CusumState:
    """Several CUSUM states as one, row after row (in the order given)."""
    if not states:
        return CusumState(*(np.zeros((0, WIDTHS[n]), np.int64 if n == "counts" else np.float64)
                            for n in CusumState._fields))
    return CusumState(*(np.concatenate(parts) for parts in zip(*states)))


def statistics(state: CusumState, row: int = 0) -> dict[str, float]:
    """The reference's public view of detector ``row``: ``upper``, ``lower``, the
    thresholds ``h_up`` and ``h_down``, ``change_age``, ``learned`` (values of its tails)
    and ``drift_detected`` (1.0 or 0.0)."""
    check_row(state, row)
    return {"upper": float(state.sums[row, _UPPER]), "lower": float(state.sums[row, _LOWER]),
            "h_up": float(state.sums[row, _H_UP]), "h_down": float(state.sums[row, _H_DOWN]),
            "change_age": float(state.counts[row, _CHANGE_AGE]),
            "learned": float(state.counts[row, _LEARNED]),
            "drift_detected": float(state.counts[row, _DETECTED])}


def onset_age(state: CusumState, row: int = 0) -> int:
    """Values since the crossing sum was last 0 (``change_age``), right after it fired."""
    check_row(state, row)
    return int(state.counts[row, _CHANGE_AGE])


@inline
def reset(s: CusumState, r: int) -> None:
    """Restart the sums, as the reference's ``_reset`` (what it learned of its tails
    stays)."""
    s.sums[r, _UPPER] = 0.0
    s.sums[r, _LOWER] = 0.0
    for c in range(_LEARNED):
        s.counts[r, c] = 0


#: the reference's own function, compiled (the same operations to the last bit)
_tail_factor = inline(detectors.tail_factor)


@inline
def _learn(s: CusumState, r: int, x: float) -> None:
    k = s.params[r, _K]
    step = TAIL_STEP * 2.0 * k
    up = np.exp(min(step * (x - k), 700.0))
    down = np.exp(min(step * (-x - k), 700.0))
    pu, pd = up, down               # the grid's first point: up^TAIL_FIRST
    for _ in range(TAIL_FIRST - 1):
        pu *= up
        pd *= down
    for j in range(TAIL_POINTS):
        s.sums[r, _TAIL_UP + j] += pu
        s.sums[r, _TAIL_DOWN + j] += pd
        pu *= up
        pd *= down
    n = s.counts[r, _LEARNED] + 1
    s.counts[r, _LEARNED] = n
    if n == s.params[r, _TAILS]:
        h = s.params[r, _H]
        s.sums[r, _H_UP] = h * _tail_factor(s.sums[r, _TAIL_UP:_TAIL_DOWN], n)
        s.sums[r, _H_DOWN] = h * _tail_factor(s.sums[r, _TAIL_DOWN:], n)


@inline
def step(s: CusumState, r: int, x: float) -> bool:
    """Feed one value to detector ``r``; True when it fires (the reference's ``update``)."""
    if s.counts[r, _DETECTED]:
        reset(s, r)
    if s.counts[r, _LEARNED] < s.params[r, _TAILS]:
        _learn(s, r, x)
    k = s.params[r, _K]
    # max(0.0, v) as Python's max: 0.0 unless v is greater (so also for v = nan)
    upper = s.sums[r, _UPPER] + x - k
    upper = upper if upper > 0.0 else 0.0  # noqa: FURB136
    lower = s.sums[r, _LOWER] - x - k
    lower = lower if lower > 0.0 else 0.0  # noqa: FURB136
    s.sums[r, _UPPER] = upper
    s.sums[r, _LOWER] = lower
    s.counts[r, _UPPER_AGE] = s.counts[r, _UPPER_AGE] + 1 if upper > 0 else 0
    s.counts[r, _LOWER_AGE] = s.counts[r, _LOWER_AGE] + 1 if lower > 0 else 0
    if upper > s.sums[r, _H_UP]:
        s.counts[r, _CHANGE_AGE] = s.counts[r, _UPPER_AGE]
    elif lower > s.sums[r, _H_DOWN]:
        s.counts[r, _CHANGE_AGE] = s.counts[r, _LOWER_AGE]
    else:
        return False
    s.counts[r, _DETECTED] = 1
    return True


@inline
def record(s: CusumState, r: int, out: np.ndarray) -> int:
    """Write ``STATISTIC`` of detector ``r`` into ``out``; return its onset age."""
    out[0] = s.sums[r, _UPPER]
    out[1] = s.sums[r, _LOWER]
    return s.counts[r, _CHANGE_AGE]


@inline
def direction(s: CusumState, r: int) -> int:
    """+1 when the upper sum crossed (checked first, as in ``step``), else -1."""
    return 1 if s.sums[r, _UPPER] > s.sums[r, _H_UP] else -1


def _cusum_update_many(s: CusumState, r: int, values: np.ndarray, start: int,
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


_cusum_update_many = kernel(_cusum_update_many, uses=(detectors,))


def update_many(state: CusumState, values: Any, row: int = 0) -> Fired:
    """Feed a column of values, in order, to CUSUM ``row`` of ``state`` (updated in place).

    Parameters
    ----------
    state
        From ``new_state`` (or ``stack``).
    values
        Finite numbers (standardised: mean 0, sd 1 when stable), oldest first.
    row
        Which detector of ``state``.

    Returns
    -------
    Fired
        The positions in ``values`` where it fired, ``change_age`` then (the onset age)
        and ``upper`` and ``lower`` at each.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(42)
    >>> values = np.concatenate([rng.normal(0, 1, 1500), rng.normal(1, 1, 500)])
    >>> state = new_state({"k": 0.5, "h": 8.0})
    >>> fired = update_many(state, values)
    >>> for i, age in zip(fired.index[:2], fired.onset_age[:2]):
    ...     print(f"Change detected at index {i}, began {age} values before")
    Change detected at index 1512, began 11 values before
    Change detected at index 1534, began 13 values before
    """
    check_row(state, row)
    column = as_column(values)
    ints, floats = collect(
        lambda start, oi, of: _cusum_update_many(state, row, column, start, oi, of),
        column.size, 1, 2, len(STATISTIC))
    return Fired(ints[:, 0], ints[:, 1], floats, STATISTIC)
