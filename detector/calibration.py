"""Detector parameters from a false-alarm budget, and their measured run lengths.

The user states how often a stable stream may raise a false alarm
(``detection.false_alarm_rate``, per value per stream; its inverse is the
in-control mean run length, ARL0). The parameters follow from it:

* ``cusum``: ``h`` from Siegmund's approximation of the one-sided ARL0 of a
  CUSUM on N(0, 1) values, ``(exp(2kb) - 2kb - 1) / (2k^2)`` with ``b = h + 1.166``,
  halved for the two sides, taken at ``k - 2 / sqrt(warmup)``: the baseline mean is
  estimated from ``warmup`` values, and a mean off by two standard errors must not
  break the budget;
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
{'k': 0.5, 'h': 22.249}
>>> derive("adwin", 1e-9)["delta"]
3.2e-08
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from detector import detectors

#: CUSUM reference value: half of the shift (in standard deviations) found fastest
K = 0.5
ADWIN_CLOCK = 32
CALIBRATED = ("adwin", "page_hinkley", "cusum")


def _arl_one_sided(h: float, k: float = K) -> float:
    b = h + 1.166
    return (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)


def cusum_h(rate: float, k: float = K) -> float:
    """The two-sided CUSUM threshold whose in-control ARL is ``1 / rate``."""
    target = 2.0 / rate                      # two sides: each needs twice the ARL
    lo, hi = 0.0, 200.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _arl_one_sided(mid, k) < target:
            lo = mid
        else:
            hi = mid
    return hi


def derive(kind: detectors.DetectorType, rate: float, warmup: int | None = None
           ) -> dict[str, Any]:
    """Parameters of ``kind`` for a false-alarm ``rate`` per value ({} if not calibrated).
    ``warmup`` (values behind the baseline estimate) makes ``h`` allow for its error."""
    k_eff = K - 2.0 / math.sqrt(warmup) if warmup else K
    if kind == "cusum":
        return {"k": K, "h": round(cusum_h(rate, max(k_eff, K / 2)), 3)}
    if kind == "page_hinkley":
        return {"delta": K, "threshold": round(cusum_h(rate, max(k_eff, K / 2)), 3),
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
            streams: int = 4, warmup: int = 1000, min_samples: int = 10, clip: float = 5.0
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
