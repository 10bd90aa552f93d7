"""Abrupt, lasting level shifts over a column: a port of ``detector.detectors.Jump``.

Per value: the |difference| from the previous value, unless 0, teaches the typical step
(the median of the first ``JUMP_START``, then a winsorised running mean), the value enters
a ring of ``window + after`` values, and once the ring holds values of one regime it
fires when the last ``after`` all lie beyond every one of the ``window`` before them by
more than ``threshold`` typical steps. Same operations in the same order as the
reference, so steps, gaps and detection indices are equal bit for bit.

State is plain arrays (``JumpState``), one row per detector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from detector import detectors
from detector.detectors import (
    JUMP_MEDIAN_TO_MEAN,
    JUMP_MEMORY,
    JUMP_MIN_STEPS,
    JUMP_RAMP,
    JUMP_SPREAD,
    JUMP_START,
    JUMP_WINSOR,
)
from detector.kernels import standardize
from detector.kernels._jit import Fired, as_column, check_row, collect, inline, kernel
from detector.kernels.standardize import sorted_median

#: the statistics a detection reports, as ``detector.detectors.statistic``
STATISTIC = ("gap", "shift", "noise")

# columns of JumpState.params, .sums and .counts
_WINDOW, _AFTER, _THRESHOLD = 0, 1, 2
_NOISE, _LAST, _GAP, _SHIFT = 0, 1, 2, 3
_POS, _RUN, _SEEN, _STEPS, _RISE, _DETECTED, _AGE = 0, 1, 2, 3, 4, 5, 6
#: columns of each array, for a checkpoint's shape check
WIDTHS = {"params": 3, "sums": 4, "counts": 7, "start": JUMP_START}


class JumpState(NamedTuple):
    """Jump detectors, one per row. ``params``: window, after, threshold. ``sums``:
    noise (the typical step), last (the previous value), gap and shift (of the last
    firing). ``counts``: pos (ring slot of the next value), run
    (values since the start or the last onset), seen, steps (differences learned),
    rise (1 when the last firing went up), detected (1 on the value that fired), age
    (values since the onset, at the last firing).
    ``ring[r, :window + after]``: the last values; ``start``: the first differences."""

    params: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    ring: np.ndarray
    start: np.ndarray


def new_state(params: Mapping[str, Any] | None = None) -> JumpState:
    """One fresh detector (``window``, ``after``, ``threshold``; the reference's
    defaults for those not given).

    Raises ``ValueError`` for a parameter ``detector.detectors`` refuses.
    """
    det = detectors.build("jump", dict(params or {}))
    return JumpState(np.array([[det.window, det.after, det.threshold]], dtype=np.float64),
                     np.zeros((1, 4)), np.zeros((1, 7), dtype=np.int64),
                     np.zeros((1, det.window + det.after)), np.zeros((1, JUMP_START)))


def stack(states: list[JumpState]) -> JumpState:
    """Several Jump states as one, row after row (in the order given); the rings are
    as wide as the widest."""
    if not states:
        return JumpState(np.zeros((0, 3)), np.zeros((0, 4)), np.zeros((0, 7), np.int64),
                         np.zeros((0, 2)), np.zeros((0, JUMP_START)))
    width = max(s.ring.shape[1] for s in states)
    rings = [np.pad(s.ring, ((0, 0), (0, width - s.ring.shape[1]))) for s in states]
    return JumpState(*(np.concatenate([getattr(s, f) for s in states])
                       for f in ("params", "sums", "counts")),
                     np.concatenate(rings), np.concatenate([s.start for s in states]))


def statistics(state: JumpState, row: int = 0) -> dict[str, float]:
    """The reference's public view of detector ``row``: ``noise``, ``gap``, ``shift``,
    ``steps``, ``seen`` and ``drift_detected`` (1.0 or 0.0)."""
    check_row(state, row)
    su, c = state.sums[row], state.counts[row]
    return {"noise": float(su[_NOISE]), "gap": float(su[_GAP]),
            "shift": float(su[_SHIFT]),
            "steps": float(c[_STEPS]), "seen": float(c[_SEEN]),
            "drift_detected": float(c[_DETECTED])}


@inline
def _learn(s: JumpState, r: int, d: float) -> None:
    k = s.counts[r, _STEPS]
    s.counts[r, _STEPS] = k + 1
    weight = k + 1 if k + 1 < JUMP_MEMORY else JUMP_MEMORY
    if k < JUMP_START:
        s.start[r, k] = d
        if k + 1 == JUMP_START:
            _start(s, r)
        return
    noise = s.sums[r, _NOISE]
    w = d if d < JUMP_WINSOR * noise else JUMP_WINSOR * noise  # noqa: FURB136
    s.sums[r, _NOISE] = noise + (w - noise) / weight


def _start(s: JumpState, r: int) -> None:
    """The typical step from the median of the first differences (none is 0), sorting
    them in place as the reference; compiled on its own (it runs once)."""
    s.sums[r, _NOISE] = sorted_median(s.start[r], JUMP_START) * JUMP_MEDIAN_TO_MEAN


_start = kernel(_start, uses=(detectors, standardize))


@inline
def step(s: JumpState, r: int, x: float) -> bool:
    """Feed one value to detector ``r``; True when it fires (the reference's ``update``)."""
    s.counts[r, _DETECTED] = 0
    if s.counts[r, _SEEN] and x != s.sums[r, _LAST]:
        _learn(s, r, abs(x - s.sums[r, _LAST]))
    s.counts[r, _SEEN] += 1
    s.sums[r, _LAST] = x
    window = int(s.params[r, _WINDOW])
    size = window + int(s.params[r, _AFTER])
    pos = s.counts[r, _POS]
    s.ring[r, pos] = x
    p = pos + 1 if pos + 1 < size else 0
    s.counts[r, _POS] = p
    s.counts[r, _RUN] += 1
    if s.counts[r, _RUN] < size or s.counts[r, _STEPS] < JUMP_MIN_STEPS:
        return False
    noise = s.sums[r, _NOISE]
    # no gap exceeds |newest - oldest|, and the bound is at least threshold x noise
    most = abs(x - s.ring[r, p])
    least = s.params[r, _THRESHOLD] * noise
    if most <= least:
        return False
    bound = least / (1.0 - 2.0 * JUMP_SPREAD / math.sqrt(s.counts[r, _STEPS]))
    if most <= bound:
        return False
    pre_lo = pre_hi = pre_sum = s.ring[r, p]
    post_lo = post_hi = post_sum = 0.0
    for i in range(1, size):
        v = s.ring[r, (p + i) % size]
        if i < window:
            pre_lo = v if v < pre_lo else pre_lo  # noqa: FURB136
            pre_hi = v if v > pre_hi else pre_hi  # noqa: FURB136
            pre_sum += v
        elif i == window:
            post_lo = post_hi = post_sum = v
        else:
            post_lo = v if v < post_lo else post_lo  # noqa: FURB136
            post_hi = v if v > post_hi else post_hi  # noqa: FURB136
            post_sum += v
    up = post_lo - pre_hi
    down = pre_lo - post_hi
    if up > bound and post_hi - x < up:
        s.counts[r, _RISE] = 1
        s.sums[r, _GAP] = up
    elif down > bound and x - post_lo < down:
        s.counts[r, _RISE] = 0
        s.sums[r, _GAP] = down
    else:
        return False
    s.sums[r, _SHIFT] = post_sum / (size - window) - pre_sum / window
    way = 1.0 if s.counts[r, _RISE] else -1.0
    age = size - window
    here = s.ring[r, (p + window - 1) % size]
    for i in range(window - 1, 0, -1):      # the ramp into the new level, if any
        before = s.ring[r, (p + i - 1) % size]
        if (here - before) * way <= JUMP_RAMP * noise:
            break
        age += 1
        here = before
    s.counts[r, _AGE] = age
    s.counts[r, _DETECTED] = 1
    s.counts[r, _RUN] = int(s.params[r, _AFTER])
    return True


@inline
def record(s: JumpState, r: int, out: np.ndarray) -> int:
    """Write ``STATISTIC`` of detector ``r`` into ``out``; return its onset age."""
    out[0] = s.sums[r, _GAP]
    out[1] = s.sums[r, _SHIFT]
    out[2] = s.sums[r, _NOISE]
    return s.counts[r, _AGE]


@inline
def shift(s: JumpState, r: int) -> float:
    """How far the last firing moved the level (mean after less mean before)."""
    return s.sums[r, _SHIFT]


@inline
def direction(s: JumpState, r: int) -> int:
    """+1 when the last firing went up, else -1."""
    return 1 if s.counts[r, _RISE] else -1


def _jump_update_many(s: JumpState, r: int, values: np.ndarray, start: int,
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


_jump_update_many = kernel(_jump_update_many, uses=(detectors, standardize))


def update_many(state: JumpState, values: Any, row: int = 0) -> Fired:
    """Feed a column of values, in order, to detector ``row`` of ``state`` (updated in
    place).

    Examples
    --------
    >>> state = new_state()
    >>> fired = update_many(state, [10.0, 10.2, 10.1, 9.9, 10.0] * 8 + [4.0, 4.1, 3.9, 4.0])
    >>> fired.index.tolist(), fired.onset_age.tolist(), round(fired.statistic(0)["gap"], 2)
    ([43], [4], 5.8)
    """
    check_row(state, row)
    column = as_column(values)
    ints, floats = collect(lambda start, oi, of: _jump_update_many(state, row, column, start,
                                                                    oi, of),
                           column.size, 1, 2, len(STATISTIC))
    return Fired(ints[:, 0], ints[:, 1], floats, STATISTIC)
