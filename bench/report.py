"""The report of a long stream: its size and how fast it opens, and what recording costs.

    python bench/report.py [--events 10000000] [--predictions 50000] [--points 400]
                           [--overhead-events 1000000] [--json bench/results/report.json]

Stream: ``bench/engine.py``'s (20 numeric + 2 categorical features, a label 500
predictions after its prediction), ``--predictions`` of them encoded once and replayed
with fresh prediction ids until ``--events`` events (predictions and labels) have been
fed; from the second half on, ``f000`` is shifted by one standard deviation and ``c00``
takes its second category twice as often, so the report has detections to show.

1. Recording cost: the first ``--overhead-events`` events through a ``Pipeline`` with
   the recorder's tap and its ``record`` after each batch, the CPU time of both timed
   from inside the run: their share of the run's CPU (best of 3).
2. The full stream through ``Monitor.process`` in batches of 2000 (what ``drift-detector
   report`` does with the lines it reads), then the page written: its size.
3. The page opened in headless Chromium (``tests/browser.py``; installed when missing)
   three times: seconds from the request to the load event (every chart is drawn by
   then: the script runs inline) and the page's own navigation timing; console errors
   must be none.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine import BATCH, ID_PLACEHOLDER, make_stream
from detector.api import Monitor
from detector.config import Settings
from detector.kernels import warm_up
from detector.pipeline import Pipeline
from detector.recorder import Recorder
from detector.records import Record
from tests.browser import Browser


def templates(predictions: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """The stream's events encoded once, as it is and with its drift."""
    plain = [(kind, raw) for kind, _, raw in make_stream(predictions, 20, 2, seed=11).events]
    drifted = []
    for i, (kind, raw) in enumerate(plain):
        if kind == "prediction":
            event = json.loads(raw)
            event["features"]["f000"] = round(event["features"]["f000"] + 1.0, 5)
            if i % 5 == 0:
                event["features"]["c00"] = "b"
            raw = json.dumps(event).encode()
        drifted.append((kind, raw))
    return plain, drifted


def records(total: int, plain: list[tuple[str, bytes]], drifted: list[tuple[str, bytes]]):
    """``total`` records, passes over the templates with new prediction ids each."""
    fed, passes = 0, 0
    while fed < total:
        template = plain if fed < total // 2 else drifted
        tag = b'"r%06d-' % passes
        for kind, raw in template[:total - fed]:
            yield Record(kind, raw.replace(ID_PLACEHOLDER, tag))
        fed += min(len(template), total - fed)
        passes += 1


def overhead(total: int, plain, drifted) -> dict[str, float]:
    """The recorder's share of the CPU of a run: the CPU time spent in its tap and its
    ``record`` timed from inside the run (an A/B of two runs is at the mercy of whoever
    else uses a shared machine). Best of 3."""
    settings = Settings()
    runs = []
    for _ in range(3):
        recorder = Recorder(settings)
        pipeline = Pipeline(settings)
        spent = {"tap": 0.0, "record": 0.0}

        def tap(monitor, recorder: Recorder = recorder, spent: dict = spent) -> None:
            started = time.process_time()
            recorder.tap(monitor)
            spent["tap"] += time.process_time() - started

        pipeline.tap = tap
        batch: list[Record] = []
        started = time.process_time()
        for record in records(total, plain, drifted):
            batch.append(record)
            if len(batch) == BATCH:
                result = pipeline.process(batch, now=time.time())
                t = time.process_time()
                recorder.record(pipeline, result)
                spent["record"] += time.process_time() - t
                batch = []
        cpu = time.process_time() - started
        runs.append({"cpu_us_per_event": cpu / total * 1e6,
                     "tap_pct": spent["tap"] / cpu * 100,
                     "record_pct": spent["record"] / cpu * 100,
                     "recorder_pct": (spent["tap"] + spent["record"]) / cpu * 100})
    return min(runs, key=lambda r: r["recorder_pct"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--predictions", type=int, default=50_000)
    ap.add_argument("--points", type=int, default=400)
    ap.add_argument("--overhead-events", type=int, default=1_000_000)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "report.json")
    args = ap.parse_args()

    warm_up()
    plain, drifted = templates(args.predictions)
    result: dict = {"events": args.events, "points": args.points}
    if args.overhead_events:
        result["recording"] = cost = overhead(args.overhead_events, plain, drifted)
        print(f"recording: {cost['recorder_pct']:.1f} % of the CPU of a run of "
              f"{args.overhead_events:,} events (tap {cost['tap_pct']:.1f} %, record "
              f"{cost['record_pct']:.1f} %; {cost['cpu_us_per_event']:.2f} CPU µs/event "
              "in all)", flush=True)
    monitor = Monitor(points=args.points)
    started, cpu = time.perf_counter(), time.process_time()
    monitor.process(records(args.events, plain, drifted))
    result["feed_seconds"] = time.perf_counter() - started
    result["feed_cpu_us_per_event"] = (time.process_time() - cpu) / args.events * 1e6
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        started = time.perf_counter()
        monitor.report(page)
        result["write_seconds"] = time.perf_counter() - started
        result["bytes"] = page.stat().st_size
        result["detections"] = monitor.snapshot()["detections_total"]
        print(f"fed {args.events:,} events in {result['feed_seconds']:.0f} s "
              f"({result['feed_cpu_us_per_event']:.2f} CPU µs/event); page written in "
              f"{result['write_seconds']:.2f} s: {result['bytes']:,} bytes "
              f"({result['bytes'] / 2**20:.2f} MiB), {result['detections']} detections",
              flush=True)
        opens = []
        with Browser() as browser:
            for _ in range(3):
                browser.events.clear()
                seconds = browser.open(page)
                if browser.errors:
                    raise SystemExit(f"console errors: {browser.errors}")
                timing = browser.evaluate(
                    "JSON.stringify(performance.getEntriesByType('navigation')[0])")
                charts = int(browser.evaluate("document.documentElement.dataset.charts"))
                opens.append({"seconds": seconds, "charts": charts,
                              "load_event_end_ms": json.loads(timing)["loadEventEnd"]})
    result["open"] = opens
    best = min(opens, key=lambda o: o["seconds"])
    print(f"opened in Chromium: {best['seconds']:.2f} s to the load event (best of 3; "
          f"page timing {best['load_event_end_ms']:.0f} ms), {best['charts']} charts drawn, "
          "no console error")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
