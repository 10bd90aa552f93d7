"""Reference windows of a numeric stream: each value's code, and the bin counts and the
KS statistic of every window ending in a batch, in compiled loops.

The reference is ``detector.reference.NumericReference`` (``codes`` and
``window_distances``, in numpy), to the last bit: codes are integers; bin counts are
integers; KS is the largest of the same divisions and subtractions of the same counts
(the sample's shares below and at or below each window value against ``i / window``,
read from the same arrays), taken in another order, which a maximum does not see. PSI and
JS are then computed from the counts by the reference's own ``psi_rows`` and ``js_rows``
(numpy's sums, whose rounding a loop would not repeat).

Windows of one batch end every ``every`` values (``ReferenceStream``), so each window is
the previous one without its oldest ``every`` codes and with ``every`` new ones: the
sorted window is kept up to date by merging, instead of sorting every window afresh.

>>> import numpy as np
>>> from detector.reference import NumericReference
>>> rng = np.random.default_rng(3)
>>> ref = NumericReference.from_values(rng.normal(size=2000), bins=10)
>>> x = rng.normal(0.3, 1.0, 700).round(2)
>>> c = codes(ref, x)
>>> (c == ref.codes(x)).all() and c.dtype == ref.codes(x).dtype
True
>>> ends = np.array([300, 400, 500, 600, 700])
>>> mine = window_distances(ref, c, ends, 300, ("psi", "js", "ks"))
>>> theirs = ref.window_distances(c, ends, 300, ("psi", "js", "ks"))
>>> all((mine[m] == theirs[m]).all() for m in theirs)
True
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from detector.kernels import _jit
from detector.kernels._jit import inline, kernel
from detector.reference import Method, NumericReference, js_rows, psi_rows, steps


def _codes(points: np.ndarray, values: np.ndarray, order: np.ndarray, out: np.ndarray) -> None:
    # values in increasing order (``order``): each search goes on where the last ended,
    # with branches the processor predicts (a binary search per value mispredicts)
    n, after = points.size, 0
    for k in range(order.size):
        i = order[k]
        v = values[i]
        while after < n and points[after] <= v:    # searchsorted, side right
            after += 1
        out[i] = 2 * after - 1 if after > 0 and points[after - 1] == v else 2 * after


_codes = kernel(_codes, uses=(_jit,))


def codes(ref: NumericReference, values: np.ndarray) -> np.ndarray:
    """``ref.codes(values)``: ``2i - 1`` for a value equal to the i-th distinct point of
    the edges and the sample, ``2i`` for one between the i-th and the next (int32)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    out = np.empty(values.size, dtype=np.int32)
    _codes(ref._lookup.points, values, np.argsort(values), out)
    return out


def _ks(window: np.ndarray, below: np.ndarray, upto: np.ndarray, steps: np.ndarray) -> float:
    low = high = -np.inf
    for i in range(window.size):
        c = window[i]
        a = below[c] - steps[i]
        b = steps[i + 1] - upto[c]
        if a > low:
            low = a
        if b > high:
            high = b
    return max(low, high)


_ks = inline(_ks)


def _window_stats(a: np.ndarray, incoming: np.ndarray, outgoing: np.ndarray,
                  bins: np.ndarray, below: np.ndarray, upto: np.ndarray, steps: np.ndarray,
                  b: np.ndarray, counts: np.ndarray, ks: np.ndarray) -> None:
    # a: the first window, sorted (overwritten); b: as long, scratch
    w = a.size
    d = incoming.shape[1]
    for i in range(w):
        counts[0, bins[a[i]]] += 1
    ks[0] = _ks(a, below, upto, steps)
    for k in range(1, ks.size):
        for j in range(counts.shape[1]):
            counts[k, j] = counts[k - 1, j]
        new, old = incoming[k - 1], outgoing[k - 1]
        for j in range(d):
            counts[k, bins[old[j]]] -= 1
            counts[k, bins[new[j]]] += 1
        # b = a without the old codes (a sorted sub-multiset of a), merged with the new
        i = jo = jn = 0
        for m in range(w):
            while i < w and jo < d and a[i] == old[jo]:
                i += 1
                jo += 1
            if i < w and (jn >= d or a[i] <= new[jn]):
                b[m] = a[i]
                i += 1
            else:
                b[m] = new[jn]
                jn += 1
        a, b = b, a
        ks[k] = _ks(a, below, upto, steps)


_window_stats = kernel(_window_stats, uses=(_jit,))


def _blocks(values: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """``values[s:s + width]`` for each ``s`` in ``starts``, sorted, as rows."""
    rows = as_strided(values, (values.size - width + 1, width), values.strides * 2,
                      writeable=False)
    return np.sort(rows[starts], axis=1)


def window_distances(ref: NumericReference, codes: np.ndarray, ends: np.ndarray, window: int,
                     methods: Iterable[Method]) -> dict[str, np.ndarray]:
    """``ref.window_distances(codes, ends, window, methods)`` (equal to the last bit):
    the distances of every window ``codes[e - window:e]``, ``ends`` increasing and
    evenly spaced, at most ``window`` apart."""
    methods = tuple(methods)
    look = ref._lookup
    n = ends.size
    step = int(ends[1] - ends[0]) if n > 1 else 1
    if n > 1 and (step > window or (np.diff(ends) != step).any()):
        raise ValueError("window ends must be evenly spaced, at most a window apart")
    codes = np.ascontiguousarray(codes, dtype=np.int32)
    first = np.sort(codes[int(ends[0]) - window:int(ends[0])])
    later = ends[1:] - step
    incoming = _blocks(codes, later, step) if n > 1 else np.empty((0, 1), dtype=np.int32)
    outgoing = _blocks(codes, later - window, step) if n > 1 else incoming
    counts = np.zeros((n, ref.counts.size), dtype=np.int64)
    ks = np.empty(n)
    _window_stats(first, incoming, outgoing, look.bins, look.below_share, look.upto_share,
                  steps(window), np.empty(window, dtype=np.int32), counts, ks)
    out: dict[str, np.ndarray] = {}
    p = ref.shares()
    for m in methods:
        out[m] = (ks if m == "ks" else psi_rows(p, counts / window) if m == "psi"
                  else js_rows(p, counts / window))
    return out
