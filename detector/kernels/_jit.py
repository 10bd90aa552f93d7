"""How the kernels are compiled, and the output buffers they fill.

Every kernel is ``numba.njit`` with ``error_model="numpy"`` (a division by zero gives
inf or nan, as in the Rust and C code of the references, instead of raising) and
``nogil=True`` (a scrape thread runs while a column is processed). Compiled code is
cached on disk where numba finds a writable place: the package's ``__pycache__``,
``NUMBA_CACHE_DIR`` or the user's cache directory. In a read-only container with none
of these numba refuses ``cache=True`` outright; the kernels are then compiled at every
start instead (see ``bench/kernels.py`` for the cost), and ``CACHED`` is False.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numba
import numpy as np

log = logging.getLogger(__name__)

#: False when numba found no writable cache directory: kernels compile at every start
CACHED = True


def kernel(fn: Callable[..., Any], uses: tuple[ModuleType, ...] = ()) -> Any:
    """Compile ``fn`` like every kernel here, cached on disk when numba can.

    Numba's cache notices a change in ``fn``'s own file only, not in the compiled
    steps it inlines from ``uses`` nor in the options set here; a digest of those
    sources is added to the name it caches ``fn`` under, so such a change compiles
    afresh instead of loading stale machine code.
    """
    sources = [Path(__file__), *(Path(str(m.__file__)) for m in uses)]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    fn.__qualname__ = f"{fn.__qualname__}_{digest}"
    return _compile(fn, "never")


def inline(fn: Callable[..., Any]) -> Any:
    """Compile ``fn`` as a step that is inlined into the kernels calling it."""
    return _compile(fn, "always")


def _compile(fn: Callable[..., Any], inline: str) -> Any:
    global CACHED
    # _nrt=False: no reference counting. The kernels allocate nothing (the wrappers
    # do), and with counting every inlined step that takes a state (a tuple of arrays)
    # pays an atomic increment and decrement per array per value: ADWIN ran 6x slower.
    options = {"nogil": True, "error_model": "numpy", "inline": inline, "_nrt": False}
    if CACHED:
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
            CACHED = False
            log.warning("kernels_cache_unavailable", extra={"fields": {
                "reason": str(exc), "hint": "set NUMBA_CACHE_DIR to a writable directory"}})
    return numba.njit(cache=False, **options)(fn)


class Fired(NamedTuple):
    """Where one detector fired in a column, and what it reported at that moment.

    ``index`` counts positions in the values given (from 0); ``onset_age`` is how many
    values ago the detector estimates the change began (0: no estimate), as
    ``detector.detectors.onset_age``; row ``i`` of ``statistics`` holds the values of
    ``names`` when it fired at ``index[i]``, as ``detector.detectors.statistic``.
    """

    index: np.ndarray
    onset_age: np.ndarray
    statistics: np.ndarray
    names: tuple[str, ...]

    def statistic(self, i: int) -> dict[str, float]:
        """The statistics of the ``i``-th firing by name."""
        return {name: float(v) for name, v in zip(self.names, self.statistics[i])}


def as_column(values: Any) -> np.ndarray:
    """``values`` as a contiguous 1-D float64 array of finite numbers, or ValueError."""
    column = np.ascontiguousarray(values, dtype=np.float64)
    if column.ndim != 1:
        raise ValueError(f"values must be one column (1-D), got shape {column.shape}")
    if not np.isfinite(column).all():
        raise ValueError("values must be finite (the decoder rejects nan and inf)")
    return column


def check_row(state: Any, row: int) -> None:
    """Raise IndexError unless ``row`` is a detector of ``state``."""
    rows = state.params.shape[0]
    if not 0 <= row < rows:
        raise IndexError(f"row {row} out of range: the state holds {rows} detector(s)")


def collect(call: Callable[[int, np.ndarray, np.ndarray], tuple[int, int]], n_values: int,
            per_value: int, n_int: int, n_float: int) -> tuple[np.ndarray, np.ndarray]:
    """Run a kernel over ``n_values`` values, growing its output buffers as needed.

    ``call(start, out_int, out_float)`` feeds values from ``start`` on, writes up to
    ``per_value`` rows per value into the buffers and stops before a value that might
    not fit; it returns ``(stop, rows written)``. Buffers start small (detections are
    rare) and grow fourfold, so a column that fires at every value costs O(n) too.
    """
    cap = max(per_value, min(n_values * per_value, 256))
    start, ints, floats = 0, [], []
    while True:
        out_int = np.empty((cap, n_int), dtype=np.int64)
        out_float = np.empty((cap, n_float), dtype=np.float64)
        stop, count = call(start, out_int, out_float)
        ints.append(out_int[:count])
        floats.append(out_float[:count])
        if stop >= n_values:
            break
        start, cap = stop, cap * 4
    if len(ints) == 1:
        return ints[0], floats[0]
    return np.concatenate(ints), np.concatenate(floats)
