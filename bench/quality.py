"""Detection quality: our calibrated defaults against River's defaults.

    python bench/quality.py [--runs 20] [--stable 1000000]

1. Synthetic streams with known truth (N(0, 1) before the change unless said):
   abrupt mean shifts of 0.5, 1 and 2 sd, a variance change, a gradual drift, a
   categorical share change and an error-rate rise. Per detector: mean detection
   delay, missed changes (none within 2,000 values) and false alarms per 10^6
   stable values (on N(0, 1) and on N(50, 10^2), the same data in other units).
   Each stream runs through the service's own Stream class (standardisation,
   episodes) and one detector.
2. The four TCPD series River bundles, streamed as events through the real
   pipeline (decode, monitors) and scored with the TCPD F1 (margin 5, precision
   against the union of the annotations, recall averaged over annotators) and
   covering, next to the "zero" baseline and the best default-parameter method
   of the TCPD paper (van den Burg & Williams, 2020, published scores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from river.drift import datasets  # noqa: E402

from detector.config import DetectorSpec, Settings  # noqa: E402
from detector.detectors import Standardizer  # noqa: E402
from detector.monitor import Stream  # noqa: E402
from detector.pipeline import Pipeline  # noqa: E402
from detector.records import Record  # noqa: E402

CHANGE, AFTER = 2000, 2000

#: Published default-parameter F1 of the TCPD benchmark (analysis/output/scores/
#: default_f1_scores.json of the TCPDBench repository): the zero baseline and the best
#: method per series. River's AirlinePassengers is TCPD's jfk_passengers.
PUBLISHED = {
    "AirlinePassengers": {"zero": 0.723, "best": ("amoc", 0.776)},
    "Occupancy": {"zero": 0.341, "best": ("bocpd", 0.807)},
    "RunLog": {"zero": 0.446, "best": ("bocpd", 1.000)},
    "UKCoalEmploy": {"zero": 0.513, "best": ("prophet", 0.639)},
}


def configs() -> dict[str, tuple[Settings, list[str]]]:
    """name -> (settings, detectors to score one at a time)."""
    ours = Settings(detectors={"feature": ["adwin", "page_hinkley", "cusum"]})
    river = Settings(detectors={"feature": ["adwin", "page_hinkley"]},
                     detection={"standardize": False, "calibrate": False, "cooldown": 0})
    return {"ours": (ours, ["adwin", "page_hinkley", "cusum"]),
            "river defaults": (river, ["adwin", "page_hinkley"])}


def one_stream(settings: Settings, spec: DetectorSpec) -> Stream:
    d = settings.detection
    std = Standardizer.from_settings(d) if d.standardize else None
    return Stream("bench", "1", "feature", "x", (spec,), std, d.cooldown)


def episodes(settings: Settings, spec: DetectorSpec, values: np.ndarray) -> list[int]:
    stream, out = one_stream(settings, spec), []
    stream.pending.extend(values.tolist())
    stream.flush(0.0, out)
    return [d.index for d in out]


SCENARIOS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "mean +0.5 sd": lambda r: np.r_[r.normal(0, 1, CHANGE), r.normal(0.5, 1, AFTER)],
    "mean +1 sd": lambda r: np.r_[r.normal(0, 1, CHANGE), r.normal(1, 1, AFTER)],
    "mean +2 sd": lambda r: np.r_[r.normal(0, 1, CHANGE), r.normal(2, 1, AFTER)],
    "variance x2": lambda r: np.r_[r.normal(0, 1, CHANGE), r.normal(0, 2, AFTER)],
    "gradual to +2 sd over 1000": lambda r: np.r_[r.normal(0, 1, CHANGE),
                                                   r.normal(0, 1, AFTER) + np.minimum(
                                                       np.arange(AFTER) / 1000, 1) * 2],
    "category share 35% -> 15%": lambda r: np.r_[(r.random(CHANGE) < 0.35),
                                                  (r.random(AFTER) < 0.15)].astype(float),
    "error rate 10% -> 20%": lambda r: np.r_[(r.random(CHANGE) < 0.10),
                                              (r.random(AFTER) < 0.20)].astype(float),
}


def synthetic(runs: int, stable: int) -> list[dict]:
    rows = []
    for cname, (settings, names) in configs().items():
        specs = {s.name: s for s in settings.detectors.feature}
        for name in names:
            spec = specs[name]
            row = {"config": cname, "detector": name, "params": spec.params}
            for units, (loc, scale) in (("fa/1e6 N(0,1)", (0, 1)), ("fa/1e6 N(50,10)", (50, 10))):
                rng = np.random.default_rng(1)
                found = episodes(settings, spec, rng.normal(loc, scale, stable))
                row[units] = round(len(found) * 1e6 / stable, 1)
            for sname, make in SCENARIOS.items():
                delays, missed = [], 0
                for run in range(runs):
                    found = episodes(settings, spec, make(np.random.default_rng(100 + run)))
                    after = [i - CHANGE for i in found if i >= CHANGE]
                    if after:
                        delays.append(after[0])
                    else:
                        missed += 1
                row[sname] = (round(float(np.mean(delays)), 1) if delays else None, missed)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# --- TCPD scoring (our implementation of the definitions in the TCPD paper) ---

def _true_positives(truth: set[int], predicted: set[int], margin: int) -> set[int]:
    """Annotations matched by a prediction within ``margin``; each prediction used once."""
    left, hits = set(predicted), set()
    for t in sorted(truth):
        near = sorted((abs(t - x), x) for x in left if abs(t - x) <= margin)
        if near:
            hits.add(t)
            left.remove(near[0][1])
    return hits


def f1(annotations: dict[str, list[int]], predicted: list[int], margin: int = 5) -> float:
    per = [set(a) | {0} for a in annotations.values()]
    x = set(predicted) | {0}
    union = set().union(*per)
    precision = len(_true_positives(union, x, margin)) / len(x)
    recall = float(np.mean([len(_true_positives(t, x, margin)) / len(t) for t in per]))
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _segments(points: set[int], n: int) -> list[set[int]]:
    cuts = sorted(p for p in points | {0} if 0 <= p < n) + [n]
    return [set(range(a, b)) for a, b in zip(cuts, cuts[1:]) if b > a]


def covering(annotations: dict[str, list[int]], predicted: list[int], n: int) -> float:
    pred = _segments(set(predicted), n)
    scores = []
    for a in annotations.values():
        truth = _segments(set(a), n)
        scores.append(sum(len(g) * max(len(g & p) / len(g | p) for p in pred)
                          for g in truth) / n)
    return float(np.mean(scores))


def tcpd_series() -> dict[str, tuple[list[dict[str, float]], dict[str, list[int]]]]:
    out = {}
    for name in PUBLISHED:
        ds = getattr(datasets, name)()
        rows = []
        for _, y in ds:
            rows.append({k: float(v) for k, v in y.items()} if isinstance(y, dict)
                        else {"value": float(y)})
        out[name] = (rows, ds.annotations)
    return out


def through_pipeline(settings: Settings, name: str, rows: list[dict[str, float]],
                     margin: int = 5) -> list[int]:
    """Stream the series as prediction events through the real pipeline; change points
    are the estimated onsets of feature detections (episode starts) of any feature,
    merged within ``margin``."""
    pipeline = Pipeline(settings)
    records = [Record("prediction", json.dumps({
        "model": name, "prediction_id": str(i), "features": row, "prediction": 0}).encode())
        for i, row in enumerate(rows)]
    found = sorted(d.onset if d.onset is not None else d.index
                   for d in pipeline.process(records, now=0.0).detections
                   if d.signal == "feature")
    merged: list[int] = []
    for i in found:
        if not merged or i - merged[-1] > margin:
            merged.append(i)
    return merged


def tcpd() -> list[dict]:
    rows = []
    series = tcpd_series()
    runs = {"ours (defaults)": Settings(reference={"enabled": False}),
            "river defaults": Settings(detectors={"feature": ["adwin", "page_hinkley"]},
                                       detection={"standardize": False, "calibrate": False,
                                                  "cooldown": 0},
                                       reference={"enabled": False})}
    for cname, settings in runs.items():
        for name, (values, annotations) in series.items():
            cps = through_pipeline(settings, name, values)
            rows.append({"config": cname, "series": name, "n": len(values),
                         "change_points": cps, "f1": round(f1(annotations, cps), 3),
                         "cover": round(covering(annotations, cps, len(values)), 3)})
    for name, (values, annotations) in series.items():
        rows.append({"config": "zero", "series": name, "n": len(values), "change_points": [],
                     "f1": round(f1(annotations, []), 3),
                     "cover": round(covering(annotations, [], len(values)), 3)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--stable", type=int, default=1_000_000)
    args = ap.parse_args()
    started = time.perf_counter()
    print("## synthetic (delay in values, missed of runs)")
    synthetic(args.runs, args.stable)
    print("\n## TCPD series through the pipeline")
    results = tcpd()
    table: dict[str, dict[str, float]] = {}
    for r in results:
        table.setdefault(r["config"], {})[r["series"]] = r["f1"]
        print(json.dumps(r), flush=True)
    print(f"\n{'series':<20}" + "".join(f"{c:>16}" for c in table) + f"{'published best':>26}")
    for name, pub in PUBLISHED.items():
        print(f"{name:<20}" + "".join(f"{table[c][name]:>16.3f}" for c in table)
              + f"{pub['best'][0] + ' ' + format(pub['best'][1], '.3f'):>26}")
    print(f"{'mean':<20}" + "".join(f"{np.mean(list(table[c].values())):>16.3f}" for c in table)
          + f"{np.mean([p['best'][1] for p in PUBLISHED.values()]):>26.3f}")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
