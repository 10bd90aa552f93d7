"""The compiled reference windows (``detector.kernels.windows``) against the numpy code of
``detector.reference`` they replace on the hot path: the same codes and the same
distances to the last bit, on more than a million values."""

from __future__ import annotations

import numpy as np
import pytest

from detector.kernels import windows
from detector.reference import NumericReference


def _case(rng: np.random.Generator) -> tuple[NumericReference, np.ndarray, int, int]:
    """A reference and a stream with ties (values rounded to 0-3 decimals), values
    beyond the reference's range, a window and an evaluation step."""
    decimals = int(rng.integers(0, 4))
    reference = rng.normal(0.0, 1.0, int(rng.integers(5, 6000))).round(decimals)
    ref = NumericReference.from_values(reference, int(rng.integers(2, 30)))
    window = int(rng.choice([10, 37, 100, 500, 1000]))
    every = int(rng.integers(1, window + 1)) if rng.random() < 0.5 else window // 10 or 1
    values = rng.normal(rng.normal(0.0, 1.5), rng.uniform(0.2, 3.0),
                        int(rng.integers(window, 20_000))).round(decimals)
    return ref, values, window, every


def test_codes_and_window_distances_equal_numpy_on_a_million_values() -> None:
    rng = np.random.default_rng(41)
    values_seen = windows_seen = 0
    while values_seen < 1_000_000:
        ref, values, window, every = _case(rng)
        codes = windows.codes(ref, values)
        assert codes.dtype == ref.codes(values).dtype
        np.testing.assert_array_equal(codes, ref.codes(values))
        ends = np.arange(window, values.size + 1, every)
        ours = windows.window_distances(ref, codes, ends, window, ("psi", "js", "ks"))
        theirs = ref.window_distances(codes, ends, window, ("psi", "js", "ks"))
        for method in ("psi", "js", "ks"):
            assert ours[method].tobytes() == theirs[method].tobytes(), method
        values_seen += values.size
        windows_seen += ends.size
    assert windows_seen > 50_000


def test_one_window_and_a_step_of_a_whole_window() -> None:
    rng = np.random.default_rng(7)
    ref = NumericReference.from_values(rng.normal(size=500), 10)
    codes = windows.codes(ref, rng.normal(0.5, 1.0, 300))
    for ends in (np.array([100]), np.array([100, 200, 300]), np.array([300])):
        ours = windows.window_distances(ref, codes, ends, 100, ("ks", "psi"))
        theirs = ref.window_distances(codes, ends, 100, ("ks", "psi"))
        assert all(ours[m].tobytes() == theirs[m].tobytes() for m in theirs)


def test_uneven_window_ends_are_refused() -> None:
    ref = NumericReference.from_values(np.arange(100.0), 4)
    codes = windows.codes(ref, np.arange(300.0))
    with pytest.raises(ValueError, match="evenly spaced"):
        windows.window_distances(ref, codes, np.array([100, 150, 250]), 100, ("ks",))
    with pytest.raises(ValueError, match="evenly spaced"):
        windows.window_distances(ref, codes, np.array([100, 250]), 100, ("ks",))
