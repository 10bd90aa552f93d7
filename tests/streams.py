"""An independent re-implementation of what a stream does to its values, for the
exactness tests: self-starting z-scores (mean and sd of the values before, fixed
after `warmup`), clipped, restarted after any firing; firings within `cooldown`
values of the previous one continue an episode."""

from __future__ import annotations

import math

from scipy.stats import norm
from scipy.stats import t as student_t

from detector.config import Settings
from detector.detectors import build


def simulate(values: list[float], specs, settings: Settings | None = None
             ) -> dict[str, tuple[list[int], list[int]]]:
    """{detector name: (firing indices, episode start indices)} for one stream."""
    d = (settings or Settings()).detection
    dets = {s.name: build(s.type, s.params) for s in specs}
    firings = {name: [] for name in dets}
    episodes = {name: [] for name in dets}
    last = {name: -10**18 for name in dets}
    seen: list[float] = []            # the values the baseline has learned from
    for i, x in enumerate(values):
        z = None
        if d.standardize:
            n = len(seen)
            if n >= d.min_samples:
                mean = sum(seen) / n
                sd = math.sqrt(sum((v - mean) ** 2 for v in seen) / (n - 1))
                if sd <= 0:
                    z = 0.0 if x == mean else math.copysign(d.clip, x - mean)
                elif n < d.warmup:       # self-starting: t with n-1 df mapped to N(0, 1)
                    t = (x - mean) / (sd * math.sqrt(1 + 1 / n))
                    z = float(norm.ppf(student_t.cdf(t, n - 1)))
                else:
                    z = (x - mean) / sd
                z = max(-d.clip, min(d.clip, z))
            if n < d.warmup:
                seen.append(x)
        else:
            z = x
        if z is None:
            continue
        fired = False
        for name, det in dets.items():
            det.update(z)
            if det.drift_detected:
                fired = True
                firings[name].append(i)
                if i - last[name] > d.cooldown:
                    episodes[name].append(i)
                last[name] = i
        if fired:
            seen = []
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
