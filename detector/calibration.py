"""Detector parameters from a false-alarm budget, and their measured run lengths.

The user states how often a stable stream may raise a false alarm
(``detection.false_alarm_rate``, per value per stream; its inverse is the
in-control mean run length, ARL0). The parameters follow from it:

* ``cusum``: ``h`` from Siegmund's approximation of the one-sided ARL0 of a
  CUSUM on N(0, 1) values, ``(exp(2kb) - 2kb - 1) / (2k^2)`` with ``b = h + 1.166``,
  for two sides. The baseline's mean and sd are estimated from ``warmup`` values, so
  a stable stream's standardised values are off by those estimates' errors: ``h``
  holds the budget on average over them (``cusum_h``). For a short warmup (under
  ~250 values at 10^-9) that average is ruled by the rare baseline far off and asks
  for a huge ``h``; there ``h`` holds the budget for a mean off by two standard
  errors instead, whichever is smaller. ``tails`` (``TAIL_SPAN`` x ``warmup``): the
  values over which CUSUM learns how much longer than normal its tails are, and
  raises each side's ``h`` for it (``detectors.tail_factor``);
* ``page_hinkley``: the same ``threshold`` with ``delta = k`` (Page-Hinkley is a
  CUSUM against the running mean);
* ``adwin``: ``delta`` = rate x ``clock``, since ADWIN bounds the probability of
  a false cut at each check (every ``clock`` values) by ``delta``.

These hold for standardised values (``detection.standardize``). ``measure``
checks them by simulation where that is feasible (ARL0 up to ~10^5);
``drift-detector calibrate`` prints both.

>>> round(cusum_h(1e-9), 3)
19.557
>>> derive("cusum", 1e-9, warmup=1000)
{'k': 0.5, 'h': 20.692, 'tails': 10000}
>>> derive("adwin", 1e-9)["delta"]
3.2e-08
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from detector import detectors

#: CUSUM reference value: half of the shift (in standard deviations) found fastest
K = 0.5
ADWIN_CLOCK = 32
#: CUSUM on standardised values learns its tails over this many x ``warmup`` values
#: (``detectors.tail_factor``: the factor of a normal stream is off by ~0.1 at 1,000
#: values, ~0.03 at 10,000)
TAIL_SPAN = 10
CALIBRATED = ("adwin", "page_hinkley", "cusum")


def _arl_one_sided(h: float | np.ndarray, k: float | np.ndarray = K) -> np.ndarray:
    """Siegmund's one-sided ARL0, elementwise (any sign of ``k``)."""
    b = h + 1.166
    k = np.asarray(k, dtype=float)
    level = np.abs(k) < 1e-9                  # the limit k -> 0: b^2
    k = np.where(level, 1.0, k)
    with np.errstate(over="ignore"):          # a run length beyond 1e308 is inf: fine
        return np.where(level, b * b, (np.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k))


#: probabilists' Gauss-Hermite nodes and weights (of N(0, 1)) for averaging over errors
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(31)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _solve(false_alarms: Callable[[float], float], rate: float) -> float:
    """The least ``h`` whose ``false_alarms(h)`` (falling in ``h``) is at most ``rate``."""
    lo, hi = 0.0, 400.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if false_alarms(mid) > rate:
            lo = mid
        else:
            hi = mid
    return hi


@functools.lru_cache(maxsize=256)
def cusum_h(rate: float, k: float = K, warmup: int | None = None) -> float:
    """The two-sided CUSUM threshold with ``rate`` false alarms per value in control.

    With ``warmup``: values standardised by a mean and sd estimated from that many
    values are off by the estimates' errors, ``e`` ~ N(0, 1 / warmup) and the sd's
    ratio ``s`` ~ N(1, 1 / (2 warmup)) (at least 0.5). Such a stream is a CUSUM of N(0, 1) values
    with ``h s`` and ``k s - e`` on one side, ``k s + e`` on the other, and ``h`` holds
    the budget averaged over ``e`` and ``s`` (the expected false alarms of many
    streams) or, when that is larger, for ``e`` of two standard errors and ``s`` 1.

    >>> round(cusum_h(1e-9), 3), round(cusum_h(1e-9, warmup=1000), 3)
    (19.557, 20.692)
    >>> round(cusum_h(1e-9, warmup=100), 3)      # two standard errors: 0.2
    31.67
    """
    if not warmup:
        return _solve(lambda h: float(2.0 / _arl_one_sided(h, k)), rate)
    error = _NODES[:, None] / math.sqrt(warmup)
    ratio = np.maximum(1.0 + _NODES[None, :] / math.sqrt(2.0 * warmup), 0.5)
    weight = _WEIGHTS[:, None] * _WEIGHTS[None, :]

    def averaged(h: float) -> float:
        return float((weight * (1.0 / _arl_one_sided(h * ratio, k * ratio - error)
                                + 1.0 / _arl_one_sided(h * ratio, k * ratio + error))).sum())

    off = max(k - 2.0 / math.sqrt(warmup), k / 2)
    return min(_solve(averaged, rate),
               _solve(lambda h: float(2.0 / _arl_one_sided(h, off)), rate))


def derive(kind: detectors.DetectorType, rate: float, warmup: int | None = None
           ) -> dict[str, Any]:
    """Parameters of ``kind`` for a false-alarm ``rate`` per value ({} if not calibrated).
    ``warmup`` (values behind the baseline estimate) makes ``h`` allow for its error."""
    if kind == "cusum":
        h = round(cusum_h(rate, K, warmup), 3)
        return {"k": K, "h": h, "tails": TAIL_SPAN * warmup} if warmup else {"k": K, "h": h}
    if kind == "page_hinkley":
        return {"delta": K, "threshold": round(cusum_h(rate, K, warmup), 3),
                "min_instances": 30}
    if kind == "adwin":
        return {"delta": float(f"{min(0.002, rate * ADWIN_CLOCK):.3g}")}
    return {}


@dataclass(frozen=True)
class Measurement:
    kind: str
    params: dict[str, Any]
    values: int
    false_alarms: int

    @property
    def run_length(self) -> float:
        """Measured mean run length (values per false alarm); inf when none fired."""
        return self.values / self.false_alarms if self.false_alarms else math.inf


def measure(kind: detectors.DetectorType, params: dict[str, Any], values: int, seed: int = 0,
            streams: int = 4, warmup: int = 1000, min_samples: int = 10, clip: float = 4.0
            ) -> Measurement:
    """False alarms of a detector over ``streams`` stable N(0, 1) streams, standardised
    the way the service does (``detectors.Standardizer``: robust start, whitened,
    self-starting, fixed after ``warmup``, clipped)."""
    rng = np.random.default_rng(seed)
    alarms = 0
    per_stream = values // streams
    for _ in range(streams):
        det = detectors.build(kind, params)
        std = detectors.Standardizer(warmup, min_samples, clip)
        for x in rng.normal(0.0, 1.0, per_stream).tolist():
            z = std.transform(x)
            if z is None:
                continue
            det.update(z)
            if det.drift_detected:
                alarms += 1
                std.restart()
    return Measurement(kind, params, per_stream * streams, alarms)
