"""An independent re-implementation of what a stream does to its values, for the
exactness tests, written from the method's description (``detector.detectors.
Standardizer``) with plain lists: a per-phase offset (with a period), a robust start
(median, MAD) of the first values, winsorised running moments and lag-1
autocorrelation, whitened self-starting z-scores (their scale widened for the error of
the autocorrelation) (Student t mapped to the normal while
learning, only once the effective sample size is large enough), a tracking location
after `warmup`, clipped; after any firing the baseline and every detector restart (after
a jump alone the baseline's level moves by the jump instead: jump detectors see the raw
values and go on), and a firing starts an episode unless it goes the same way as the
channel's previous one within `cooldown` values (raw values: unless it is within
`cooldown`; a jump's firing always does)."""

from __future__ import annotations

import math
import statistics

from scipy.stats import norm
from scipy.stats import t as student_t

from detector.config import Settings
from detector.detectors import Jump, build, direction


class _Baseline:
    """One regime's baseline, kept as the lists of what it learned."""

    def __init__(self, d) -> None:
        self.d = d
        self.bins: dict[int, list[float]] = {}
        self.season: list[float] = []
        self.start: list[float] = []
        self.learned: list[float] = []      # winsorised values less the origin
        self.origin = 0.0
        self.loc: float | None = None       # tracked location, after warmup
        self.fixed = (0.0, 0.0, 0.0)
        self.settled = False                # True at the value the learning ends
        self.last = 0.0

    def level_learning(self) -> bool:
        """Until warmup values, or longer until 0.1 x warmup effective ones (at most 10
        x warmup values)."""
        d = self.d
        if not self.learned:
            return True
        m, phi = len(self.learned), self.fixed[2]
        return m < d.warmup or (m * (1.0 - phi) / (1.0 + phi) < 0.1 * d.warmup
                                and m < 10 * d.warmup)

    def learning(self) -> bool:
        d = self.d
        return self.level_learning() or d.period > 0 and len(self.season) < max(
            d.warmup, 4 * d.period)

    def estimates(self) -> tuple[float, float, float]:
        w, m = self.learned, len(self.learned)
        total = 0.0
        for v in w:
            total += v
        mean = total / m
        squares = lagged = 0.0
        for i, v in enumerate(w):
            squares += v * v
            lagged += v * (w[i - 1] if i else 0.0)
        var = (squares - total * mean) / (m - 1)
        cov = (lagged - total * mean) / (m - 1)
        if not var > 0:
            return self.origin + mean, 0.0, 0.0
        return self.origin + mean, math.sqrt(var), min(max(cov / var, 0.0), 0.98)

    def relevel(self, shift: float) -> _Baseline:
        """This baseline moved by ``shift``, or a new one while it gathers its start."""
        if len(self.start) < self.d.min_samples:
            return _Baseline(self.d)
        self.origin += shift
        if self.loc is not None:
            self.loc += shift
        return self

    def winsor(self, y: float, centre: float, scale: float) -> float:
        if scale <= 0:
            return y
        return min(max(y, centre - 4.0 * scale), centre + 4.0 * scale)

    def z(self, x: float, t: int) -> float | None:
        was = self.learning()
        z = self._z(x, t)
        self.settled = was and not self.learning()
        return z

    def _z(self, x: float, t: int) -> float | None:
        d = self.d
        if d.period:
            phases = min(d.phases, d.period)
            b = (t % d.period) * phases // d.period
            dx = None
            if len(self.season) >= d.period:
                means = [sum(v) / len(v) for v in self.bins.values()]
                dx = x - (sum(self.bins[b]) / len(self.bins[b]) - sum(means) / phases)
            if len(self.season) < max(d.warmup, 4 * d.period):
                self.bins.setdefault(b, []).append(x)
                self.season.append(x)
            if dx is None:
                return None
            x = dx
        last, self.last = self.last, x     # the previous value as it came (whitening)
        if len(self.start) < d.min_samples:
            self.start.append(x)
            if len(self.start) == d.min_samples:
                self.origin = statistics.median(self.start)
                mad = statistics.median(abs(v - self.origin) for v in self.start)
                scale = mad * 1.482602218505602
                if scale <= 0:
                    scale = statistics.stdev(self.start)
                self.learned = [self.winsor(v - self.origin, 0.0, scale) for v in self.start]
                self.fixed = self.estimates()
            return None
        m = len(self.learned)
        learning = self.level_learning()
        # once learned, scale and phi stay those of the values learned
        loc, scale, phi = self.estimates() if self.loc is None else self.fixed
        if self.loc is not None:
            loc = self.loc
        if scale <= 0:
            z = 0.0 if x == loc else math.copysign(d.clip, x - loc)
        else:
            # once learned, the scale allows for phi's error
            widen = 1.0 + 4.0 * (1.0 + phi) / ((1.0 - phi) * m) if not learning else 1.0
            r = ((x - loc) - phi * (last - loc)) / (scale * math.sqrt((1.0 - phi * phi) * widen))
            if not learning:
                z = r
            elif m * (1.0 - phi) / (1.0 + phi) < 3.0:
                z = None
            else:
                df = m * (1.0 - phi * phi) / (1.0 + phi * phi) - 1.0
                z = float(norm.ppf(student_t.cdf(r / math.sqrt(1.0 + 1.0 / m), df)))
        y = x - self.origin
        if learning:
            self.learned.append(self.winsor(y, sum(self.learned) / m, scale))
            self.fixed = self.estimates()
        else:
            w = self.winsor(y, loc - self.origin, scale)
            self.learned[-1] = w            # only the last is used (in the lag-1 sum)
            self.loc = loc + (w + self.origin - loc) / d.track if d.track else loc
        return None if z is None else max(-d.clip, min(d.clip, z))


def simulate(values: list[float], specs, settings: Settings | None = None
             ) -> dict[str, tuple[list[int], list[int]]]:
    """{detector name: (firing indices, episode start indices)} for one stream."""
    d = (settings or Settings()).detection
    dets = {s.name: build(s.type, s.params) for s in specs}
    firings = {name: [] for name in dets}
    episodes = {name: [] for name in dets}
    last = {name: (-10**18, 0) for name in dets}
    baseline = _Baseline(d)

    def restarted() -> dict:     # every detector anew, but jumps (on raw values) go on
        return {s.name: dets[s.name] if s.type == "jump" else build(s.type, s.params)
                for s in specs}

    for i, x in enumerate(values):
        z = baseline.z(x, i) if d.standardize else x
        if d.standardize and baseline.settled:      # detectors start on the settled baseline
            dets = restarted()
        fired, shift = False, None
        for name, det in dets.items():
            raw = isinstance(det, Jump)
            if z is None and not raw:
                continue
            det.update(x if raw else z)
            if det.drift_detected:
                if raw:
                    shift = det.shift
                else:
                    fired = True
                firings[name].append(i)
                way = direction(det)
                near = i - last[name][0] <= d.cooldown
                if raw or not near or d.standardize and way != last[name][1]:
                    episodes[name].append(i)
                last[name] = (i, way)
        if d.standardize and (fired or shift is not None):
            baseline = _Baseline(d) if fired else baseline.relevel(shift)
            dets = restarted()
    return {name: (firings[name], episodes[name]) for name in dets}


def demo_stream(n: int, seed: int = 3, labels_after: int = 200) -> list[dict]:
    """``n`` predictions of the demo's fraud model (``detector.demo.Scenario``: ``amount``
    shifts at n/2, the concept changes at 0.7 n) and their labels, each label sent
    ``labels_after`` predictions after its own, plus three messages that are rejected."""
    from detector.demo import Scenario

    s = Scenario(seed=seed, shift_at=n // 2, concept_at=int(n * 0.7))
    events: list[dict] = []
    waiting: list[dict] = []
    for i in range(n):
        e = s.prediction(i)
        truth = e.pop("_truth")
        e.pop("timestamp")
        events.append(e)
        waiting.append({"model": e["model"], "prediction_id": e["prediction_id"],
                        "label": truth})
        if len(waiting) > labels_after:
            events.append(waiting.pop(0))
        if i == n // 3:
            events += [{"model": "fraud", "model_version": "3", "prediction_id": "bad",
                        "features": {"amount": "x" * 300},
                        "prediction": 1},
                       {"model": "fraud", "prediction_id": "p-no-such"}]
    return events + waiting


def write_jsonl(path, events: list[dict]) -> None:
    import json

    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(e) + "\n" for e in events)
