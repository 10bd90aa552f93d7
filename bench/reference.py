"""Reference windows: each window alone (as before) against all the windows of a batch at once.

    python bench/reference.py [--values 100000] [--features 20] [--batches 100,2000]
                              [--repeat 3] [--json reference.json]

Each of ``--features`` numeric features has a profile reference (10 bins, a sample of
5000 values) and a stream of ``--values`` values whose mean and spread change every
20,000 values. Both ways run the streams through ``ReferenceStream.flush`` with the
defaults (window 1000, evaluate_every 100, psi, js and ks), in batches of each size of
``--batches`` values per feature, interleaved, best of ``--repeat``:

- ``per window``: ``ReferenceStream`` with the evaluation it had before, one
  ``NumericReference.distances`` call per window (bins, KS ``searchsorted`` of the
  window and the sample) -- the reference implementation;
- ``at once``: ``ReferenceStream`` as it is (``codes`` once per value, then
  ``window_distances`` over all the windows of the batch).

CPU time (``time.process_time``) per value of one feature and per event (all the
features), wall time beside it, the ratio, and whether both found the same detections
with the same distances.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detector.config import ReferenceSettings
from detector.monitor import Detection, ReferenceStream
from detector.reference import NumericReference

# the stream as it was, each window by itself (the tests' oracle; needs the tests directory)
from tests.unit.test_reference import PerWindow


def make_data(features: int, n: int, seed: int = 7) -> tuple[list[NumericReference],
                                                            list[list[float]]]:
    rng = np.random.default_rng(seed)
    refs, columns = [], []
    for _ in range(features):
        refs.append(NumericReference.from_values(rng.gamma(2.0, 30.0, 20_000), bins=10))
        parts = [rng.gamma(rng.uniform(1.8, 2.2), rng.uniform(27, 33), 20_000)
                 for _ in range(-(-n // 20_000))]
        columns.append(np.concatenate(parts)[:n].round(3).tolist())
    return refs, columns


def run(cls: type[ReferenceStream], refs: list[NumericReference], columns: list[list[float]],
        batch: int) -> tuple[float, float, list[Detection]]:
    cfg = ReferenceSettings()
    streams = [cls("m", "1", "feature", f"f{i}", cfg, ref, (), None)
               for i, ref in enumerate(refs)]
    found: list[Detection] = []
    n = len(columns[0])
    wall, cpu = time.perf_counter(), time.process_time()
    for k, at in enumerate(range(0, n, batch)):
        for stream, column in zip(streams, columns, strict=True):
            part = column[at:at + batch]
            stream.flush(part, float(k), found, np.array(part, dtype=np.float64))
    return time.perf_counter() - wall, time.process_time() - cpu, found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=100_000, help="values per feature")
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--batches", default="100,2000", help="values per feature per batch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    refs, columns = make_data(args.features, args.values)
    ways = {"per window": PerWindow, "at once": ReferenceStream}
    print(f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"Python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"{args.features} features x {args.values:,} values, window 1000, evaluate_every "
          f"100, psi+js+ks, best of {args.repeat} (interleaved)\n")
    print(f"{'batch':>6} {'per window µs/value':>20} {'at once µs/value':>17} {'ratio':>7} "
          f"{'µs/event before':>16} {'after':>7} {'same':>5}")
    print(f"{'':>6} {'CPU':>9} {'wall':>10} {'CPU':>8} {'wall':>8} {'(CPU)':>7}")
    report = {"features": args.features, "values": args.values, "rows": []}
    for batch in (int(b) for b in args.batches.split(",")):
        best = {name: (float("inf"), float("inf")) for name in ways}
        found = {}
        for _ in range(args.repeat):
            for name, cls in ways.items():
                wall, cpu, found[name] = run(cls, refs, columns, batch)
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
        per_value = {name: (w * 1e6 / (args.values * args.features),
                            c * 1e6 / (args.values * args.features))
                     for name, (w, c) in best.items()}
        (old_wall, old_cpu), (new_wall, new_cpu) = per_value["per window"], per_value["at once"]
        same = found["per window"] == found["at once"]
        row = {"batch": batch, "per_window_cpu_us": old_cpu, "per_window_wall_us": old_wall,
               "at_once_cpu_us": new_cpu, "at_once_wall_us": new_wall,
               "ratio_cpu": old_cpu / new_cpu, "same_detections": same,
               "detections": len(found["at once"])}
        report["rows"].append(row)
        print(f"{batch:>6} {old_cpu:>9.3f} {old_wall:>10.3f} {new_cpu:>8.3f} {new_wall:>8.3f} "
              f"{old_cpu / new_cpu:>6.1f}x {old_cpu * args.features:>16.2f} "
              f"{new_cpu * args.features:>7.2f} {'yes' if same else 'NO':>5}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
