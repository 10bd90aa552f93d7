"""Time to render ``/metrics`` at ~1k / 10k / 50k drift series, and how long the
scrape holds the service lock (the run loop waits for it to apply a batch).

    python bench/scrape.py [--sizes 1000,10000,50000] [--repeat 7] [--json scrape.json]
    python bench/scrape.py --worst-case [numeric|categorical] [--models 100]

``--worst-case`` measures one instance at its caps: ``max_models`` x ``max_versions`` x
``max_features`` at the defaults (100 x 3 x 200), every feature numeric (20 series each)
or categorical with seven categories (37 series each, seven streams), every version a
scored classifier with labels, every series that can exist present (the references
learn from 20 values instead of 1,000, and so does the data quality reference, so that a
few events per version fill every window: the same series as the defaults once warm), so ``metrics.max_feature_series``
decides what is exported. ``--models`` takes fewer models (categorical: ~50 MB each).

Each size is a pipeline fed real events through ``Pipeline.process`` (models x 2
versions x 50 numeric features, a reference with small windows so that distances
exist, shifted data so that detectors fire). Compared in the same run, interleaved:

- ``before``: the collector written the plain prometheus_client way, as it was before
  issue 11 (metric families built under the lock, rendered by ``generate_latest``; the
  oracle of tests/unit/test_metrics.py);
- ``text`` / ``openmetrics``: ``DriftCollector.render`` (a copy under the lock, then
  text written from label blocks cached between scrapes);
- ``first``: ``render`` on a fresh collector (no cached label blocks yet);
- ``GET``: a real HTTP GET of ``/metrics`` (with Prometheus 2.x's ``Accept`` header,
  so OpenMetrics; process metrics included) from a ``MetricsServer`` in this process
  (its CPU column counts the client too).

Wall and CPU milliseconds are the best of ``--repeat`` scrapes (3 interleaved rounds);
the lock columns are the median and the longest hold over all of them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from detector.config import MetricsSettings, Settings
from detector.metrics import DriftCollector, Exporter, MetricsServer, RunStatus
from detector.pipeline import Pipeline
from detector.records import Record
from tests.unit.test_metrics import ReferenceCollector

FEATURES = 50
VERSIONS = 2
EVENTS = 60
#: drift series of one version with FEATURES numeric features (measured, for sizing)
SERIES_PER_VERSION = 1050
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


class TimedLock:
    """A lock that records how long each holder kept it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = 0.0
        self.holds: list[float] = []

    def __enter__(self) -> Self:
        self._lock.acquire()
        self._since = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.holds.append(time.perf_counter() - self._since)
        self._lock.release()


def build(series: int, seed: int = 3) -> Pipeline:
    """A pipeline with about ``series`` drift series, fed through ``Pipeline.process``."""
    versions = max(1, round(series / SERIES_PER_VERSION))
    models = [f"model-{m:03d}" for m in range((versions + VERSIONS - 1) // VERSIONS)]
    p = Pipeline(Settings(max_models=len(models) + 1, max_versions=VERSIONS,
                          reference={"warmup": 20, "window": 20, "evaluate_every": 20},
                          quality={"warmup": 20},
                          metrics={"max_feature_series": 10**7}))
    rng = random.Random(seed)
    records = []
    for k in range(versions):
        model, version = models[k // VERSIONS], str(k % VERSIONS + 1)
        for i in range(EVENTS):
            shift = 4.0 if i >= EVENTS // 2 else 0.0
            features = {f"feature_{j:03d}": rng.gauss(shift * (j % 3 == 0), 1.0)
                        for j in range(FEATURES)}
            score = rng.random()
            records.append(Record("prediction", json.dumps({
                "model": model, "model_version": version, "prediction_id": f"{k}-{i}",
                "features": features, "prediction": int(score > 0.5), "score": score,
                "label": int(rng.random() < score)}).encode()))
    p.process(records, now=time.time())
    return p


def measure(scrape: Callable[[], object], lock: TimedLock, repeat: int) -> dict[str, float]:
    """Best wall and CPU ms over ``repeat`` scrapes; median and longest lock hold."""
    walls, cpus = [], []
    gc.collect()     # garbage of the previous measurement is not charged to this one
    lock.holds.clear()
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        scrape()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return {"wall_ms": min(walls) * 1e3, "cpu_ms": min(cpus) * 1e3,
            "lock_ms": statistics.median(lock.holds) * 1e3,
            "lock_max_ms": max(lock.holds) * 1e3}


def bench(size: int, repeat: int) -> dict:
    pipeline = build(size)
    lock, status = TimedLock(), RunStatus()
    legacy = CollectorRegistry(auto_describe=False)
    legacy.register(ReferenceCollector(pipeline, lock, status))
    collector = DriftCollector(pipeline, lock, status)
    text = collector.render()
    series = sum(1 for line in text.splitlines() if not line.startswith("#"))
    first = measure(lambda: DriftCollector(pipeline, lock, status).render().encode(), lock, 1)
    server = MetricsServer(Exporter(pipeline, lock, status),
                           MetricsSettings(host="127.0.0.1", port=0)).start()
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics",
                                     headers={"Accept": PROMETHEUS_ACCEPT})
    runs = {"before": [], "text": [], "openmetrics": [], "GET": []}
    try:
        for _ in range(3):      # interleaved: the machine is shared and noisy
            runs["before"].append(measure(lambda: generate_latest(legacy), lock, repeat))
            runs["text"].append(measure(lambda: collector.render().encode(), lock, repeat))
            runs["openmetrics"].append(measure(lambda: collector.render(True).encode(), lock,
                                               repeat))
            runs["GET"].append(measure(lambda: urllib.request.urlopen(request).read(), lock,
                                       repeat))
    finally:
        server.stop()
    out = {"series": series, "bytes": len(text.encode()), "first": first}
    out.update(best(runs))
    return out


def best(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per way of scraping: the best wall and CPU ms, the median and worst lock hold."""
    return {name: {"wall_ms": min(r["wall_ms"] for r in results),
                   "cpu_ms": min(r["cpu_ms"] for r in results),
                   "lock_ms": statistics.median(r["lock_ms"] for r in results),
                   "lock_max_ms": max(r["lock_max_ms"] for r in results)}
            for name, results in runs.items()}


def build_worst_case(kind: str, models: int, seed: int = 5) -> Pipeline:
    """``models`` models at the default caps (see the module docstring)."""
    settings = Settings(reference={"warmup": 20, "window": 20, "evaluate_every": 20},
                        quality={"warmup": 20})
    p = Pipeline(settings)
    rng = random.Random(seed)
    names = [f"feature_{j:03d}" for j in range(settings.max_features)]
    for m in range(models):
        records = []
        for v in range(settings.max_versions):
            for i in range(EVENTS // 2 + 10):
                if kind == "numeric":
                    features: dict = {name: rng.gauss(0.0, 1.0) for name in names}
                else:
                    features = {name: rng.choice("abcdefg") for name in names}
                score = rng.random()
                records.append(Record("prediction", json.dumps({
                    "model": f"model-{m:03d}", "model_version": str(v + 1),
                    "prediction_id": f"{m}-{v}-{i}", "features": features,
                    "prediction": int(score > 0.5), "score": score,
                    "label": int(rng.random() < score)}).encode()))
        p.process(records, now=time.time())
    return p


def worst_case(kind: str, models: int, repeat: int) -> dict:
    pipeline = build_worst_case(kind, models)
    lock, status = TimedLock(), RunStatus()
    collector = DriftCollector(pipeline, lock, status)
    first = measure(lambda: DriftCollector(pipeline, lock, status).render().encode(), lock, 1)
    text = collector.render()
    series = sum(1 for line in text.splitlines() if not line.startswith("#"))
    server = MetricsServer(Exporter(pipeline, lock, status),
                           MetricsSettings(host="127.0.0.1", port=0)).start()
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics",
                                     headers={"Accept": PROMETHEUS_ACCEPT})
    runs: dict[str, list[dict[str, float]]] = {"text": [], "GET": []}
    try:
        for _ in range(3):
            runs["text"].append(measure(lambda: collector.render().encode(), lock, repeat))
            runs["GET"].append(measure(lambda: urllib.request.urlopen(request).read(), lock,
                                       repeat))
    finally:
        server.stop()
    streams = pipeline.settings.max_versions * models * pipeline.settings.max_features
    out = {"kind": kind, "models": models, "features": streams, "series": series,
           "bytes": len(text.encode()), "features_dropped": collector.scrape().dropped,
           "first": first}
    out.update(best(runs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,50000",
                    help="approximate numbers of drift series, comma-separated")
    ap.add_argument("--repeat", type=int, default=7, help="scrapes per measurement")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--worst-case", nargs="?", const="numeric",
                    choices=("numeric", "categorical"),
                    help="one instance at the default caps instead of --sizes")
    ap.add_argument("--models", type=int, default=100,
                    help="models of the worst case (default: max_models, 100)")
    args = ap.parse_args()
    results = []
    if args.worst_case:
        r = worst_case(args.worst_case, args.models, args.repeat)
        print(f"{r['models']} models x 3 versions x 200 {r['kind']} features "
              f"({r['features']:,} features): {r['series']:,} drift series exported, "
              f"{r['bytes'] / 1e6:.1f} MB, {r['features_dropped']:,} features left out",
              flush=True)
        print(f"{'path':<12} {'wall ms':>8} {'CPU ms':>8} {'lock ms':>8} {'lock max':>8}")
        for name in ("text", "first", "GET"):
            m = r[name]
            print(f"{name:<12} {m['wall_ms']:>8.1f} {m['cpu_ms']:>8.1f} {m['lock_ms']:>8.2f} "
                  f"{m['lock_max_ms']:>8.2f}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(r, indent=2))
        return
    print(f"{'series':>7} {'path':<12} {'wall ms':>8} {'CPU ms':>8} {'lock ms':>8} "
          f"{'lock max':>8} {'CPU vs before':>14}", flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        r = bench(size, args.repeat)
        results.append(r)
        for name in ("before", "text", "openmetrics", "first", "GET"):
            m = r[name]
            ratio = r["before"]["cpu_ms"] / m["cpu_ms"] if m["cpu_ms"] else float("inf")
            print(f"{r['series']:>7} {name:<12} {m['wall_ms']:>8.1f} {m['cpu_ms']:>8.1f} "
                  f"{m['lock_ms']:>8.2f} {m['lock_max_ms']:>8.2f} {ratio:>13.1f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
