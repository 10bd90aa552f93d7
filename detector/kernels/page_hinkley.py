"""Page-Hinkley over a column: a port of River's ``drift.PageHinkley``.

Each value's deviation from the running mean (River's ``stats.Mean``) feeds two
fading sums, ``alpha * s + dev - delta`` and ``alpha * s + dev + delta``; once
``min_instances`` values are in, it fires when the first sum rises ``threshold`` above
its minimum (mode ``up``), the second falls ``threshold`` below its maximum (``down``),
or either (``both``). Like River it forgets everything at the value after a firing.
Same operations in the same order as River, so detections are equal bit for bit.

State is plain arrays (``PageHinkleyState``), one row per detector.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from detector import detectors
from detector.kernels._jit import Fired, as_column, check_row, collect, inline, kernel

#: the statistics a detection reports, as ``detector.detectors.statistic`` (none)
STATISTIC: tuple[str, ...] = ()
MODES = ("both", "up", "down")

# columns of PageHinkleyState.params and .sums
_MIN_INSTANCES, _DELTA, _THRESHOLD, _ALPHA, _MODE = 0, 1, 2, 3, 4
_N, _MEAN, _SUM_INCREASE, _SUM_DECREASE, _MIN_INCREASE, _MAX_DECREASE = 0, 1, 2, 3, 4, 5
_BOTH, _UP, _DOWN = 0, 1, 2


class PageHinkleyState(NamedTuple):
    """Page-Hinkley detectors, one per row. ``params``: min_instances, delta,
    threshold, alpha, mode (index in ``MODES``). ``sums``: n and mean (River's
    ``stats.Mean``), sum_increase, sum_decrease, min_increase, max_decrease.
    ``fired``: 1 until the next value resets the detector."""

    params: np.ndarray
    sums: np.ndarray
    fired: np.ndarray


_FRESH = (0.0, 0.0, 0.0, 0.0, np.inf, -1.0)


def new_state(params: Mapping[str, Any] | None = None) -> PageHinkleyState:
    """One fresh Page-Hinkley with River's parameters (``min_instances``, ``delta``,
    ``threshold``, ``alpha``, ``mode``; River's defaults for those not given).

    Raises ``ValueError`` for a parameter River or ``detector.detectors`` refuses.
    """
    det = detectors.build("page_hinkley", dict(params or {}))
    row = [det.min_instances, det.delta, det.threshold, det.alpha, MODES.index(det.mode)]
    return PageHinkleyState(np.array([row], dtype=np.float64), np.array([_FRESH]),
                            np.zeros(1, dtype=np.int64))


def stack(states: list[PageHinkleyState]) -> PageHinkleyState:
    """Several Page-Hinkley states as one, row after row (in the order given)."""
    if not states:
        return PageHinkleyState(np.zeros((0, 5)), np.zeros((0, 6)), np.zeros(0, np.int64))
    return PageHinkleyState(*(np.concatenate(parts) for parts in zip(*states)))


def statistics(state: PageHinkleyState, row: int = 0) -> dict[str, float]:
    """River's internals of detector ``row`` (``n`` and ``mean`` of its ``stats.Mean``,
    ``sum_increase``, ``sum_decrease``, ``min_increase``, ``max_decrease``) and
    ``drift_detected`` (1.0 or 0.0)."""
    check_row(state, row)
    names = ("n", "mean", "sum_increase", "sum_decrease", "min_increase", "max_decrease")
    out = {name: float(v) for name, v in zip(names, state.sums[row])}
    out["drift_detected"] = float(state.fired[row])
    return out


@inline
def reset(s: PageHinkleyState, r: int) -> None:
    """Forget everything, as a fresh detector (River's ``_reset``)."""
    s.fired[r] = 0
    s.sums[r, _N] = 0.0
    s.sums[r, _MEAN] = 0.0
    s.sums[r, _SUM_INCREASE] = 0.0
    s.sums[r, _SUM_DECREASE] = 0.0
    s.sums[r, _MIN_INCREASE] = np.inf
    s.sums[r, _MAX_DECREASE] = -1.0


@inline
def step(s: PageHinkleyState, r: int, x: float) -> bool:
    """Feed one value to detector ``r``; True when it fires (River's ``update``)."""
    if s.fired[r]:
        reset(s, r)
    n = s.sums[r, _N] + 1.0
    mean = s.sums[r, _MEAN] + (1.0 / n) * (x - s.sums[r, _MEAN])
    s.sums[r, _N] = n
    s.sums[r, _MEAN] = mean
    dev = x - mean
    alpha = s.params[r, _ALPHA]
    delta = s.params[r, _DELTA]
    increase = alpha * s.sums[r, _SUM_INCREASE] + dev - delta
    decrease = alpha * s.sums[r, _SUM_DECREASE] + dev + delta
    s.sums[r, _SUM_INCREASE] = increase
    s.sums[r, _SUM_DECREASE] = decrease
    # River's comparisons, not min/max: they differ on nan
    if increase < s.sums[r, _MIN_INCREASE]:  # noqa: PLR1730
        s.sums[r, _MIN_INCREASE] = increase
    if decrease > s.sums[r, _MAX_DECREASE]:  # noqa: PLR1730
        s.sums[r, _MAX_DECREASE] = decrease
    if not n >= s.params[r, _MIN_INSTANCES]:
        return False
    threshold = s.params[r, _THRESHOLD]
    mode = s.params[r, _MODE]
    up = increase - s.sums[r, _MIN_INCREASE] > threshold
    down = s.sums[r, _MAX_DECREASE] - decrease > threshold
    fired = up if mode == _UP else down if mode == _DOWN else up or down
    s.fired[r] = fired
    return fired


@inline
def direction(s: PageHinkleyState, r: int) -> int:
    """+1 when the increase test passed (River tests it first), else -1."""
    up = s.sums[r, _SUM_INCREASE] - s.sums[r, _MIN_INCREASE] > s.params[r, _THRESHOLD]
    return 1 if up and s.params[r, _MODE] != _DOWN else -1


@kernel
def _page_hinkley_update_many(s: PageHinkleyState, r: int, values: np.ndarray, start: int,
                              out_int: np.ndarray, out_float: np.ndarray) -> tuple[int, int]:
    count = 0
    for i in range(start, values.size):
        if count == out_int.shape[0]:
            return i, count
        if step(s, r, values[i]):
            out_int[count, 0] = i
            out_int[count, 1] = 0
            count += 1
    return values.size, count


def update_many(state: PageHinkleyState, values: Any, row: int = 0) -> Fired:
    """Feed a column of values, in order, to Page-Hinkley ``row`` of ``state`` (updated
    in place).

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
        The positions in ``values`` where it fired (Page-Hinkley gives no onset
        estimate, so ``onset_age`` is 0, and no statistics).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(12345)
    >>> values = np.concatenate([rng.integers(0, 2, 1000), rng.integers(4, 8, 1000)])
    >>> fired = update_many(new_state(), values)
    >>> for i in fired.index[:1]:
    ...     print(f"Change detected at index {i}, input value: {values[i]}")
    Change detected at index 1008, input value: 6
    """
    check_row(state, row)
    column = as_column(values)
    ints, floats = collect(
        lambda start, oi, of: _page_hinkley_update_many(state, row, column, start, oi, of),
        column.size, 1, 2, 0)
    return Fired(ints[:, 0], ints[:, 1], floats, STATISTIC)
