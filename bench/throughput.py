"""Throughput of a 20-feature classifier stream: the plain River loop a user would
write by hand (the baseline), our pipeline from a JSONL file, and through the bundled
broker (Kafka consume + pipeline + commits).

    python bench/throughput.py [--events 100000] [--labels 0.5] [--no-broker]

Prints events/s, wall and CPU µs/event, the CPU ratio to the plain River loop
measured in the same run, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from detector.broker import Tansu  # noqa: E402
from detector.config import Settings  # noqa: E402
from detector.kernels import warm_up  # noqa: E402
from detector.pipeline import Pipeline  # noqa: E402
from detector.service import Service, tune_gc  # noqa: E402
from detector.sources import FileSource, KafkaSource, create_topics, producer  # noqa: E402

FEATURES = 20


def make_events(n: int, label_share: float, seed: int) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, FEATURES))
    score = 1 / (1 + np.exp(-x[:, 0]))
    preds, labels = [], []
    for i in range(n):
        preds.append(json.dumps({
            "model": "bench", "model_version": "1", "prediction_id": f"p{i}",
            "timestamp": 1_790_000_000 + i * 0.01,
            "features": {f"f{j:02d}": round(float(x[i, j]), 5) for j in range(FEATURES)},
            "prediction": int(score[i] > 0.5), "score": round(float(score[i]), 5)}).encode())
        if rng.random() < label_share:
            labels.append(json.dumps({"model": "bench", "prediction_id": f"p{i}",
                                      "label": int(rng.random() < score[i])}).encode())
    return preds, labels


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(name: str, events: int, seconds: float, cpu: float | None = None,
           baseline_cpu: float | None = None) -> None:
    extra = "" if cpu is None else f"  {cpu / events * 1e6:>7.1f} CPU µs/event"
    if cpu is not None and baseline_cpu:
        extra += f"  {baseline_cpu / cpu:>5.2f}x the River loop"
    print(f"{name:<30} {events:>9,} events  {events / seconds:>10,.0f} events/s  "
          f"{seconds / events * 1e6:>7.1f} µs/event{extra}   peak RSS {rss_mib():.0f} MiB",
          flush=True)


def bench_river_loop(preds: list[bytes], labels: list[bytes]) -> float:
    """The baseline: what a user writes by hand with River objects. json.loads, ADWIN and
    Page-Hinkley per feature and on the score, Accuracy/Precision/Recall/F1 cumulative and
    rolling on joined pairs, a dict join. Returns its CPU seconds."""
    from river import drift, metrics, utils

    def make() -> list:
        out = []
        for cls in (metrics.Accuracy, metrics.Precision, metrics.Recall, metrics.F1):
            out += [cls(), utils.Rolling(cls, window_size=1000)]
        return out
    detectors: dict[str, tuple] = {}
    scores, waiting, fired = make(), {}, 0
    started, cpu = time.perf_counter(), time.process_time()
    for raw in preds + labels:
        event = json.loads(raw)
        if "features" in event:
            for name, value in (*event["features"].items(), ("score", event["score"])):
                pair = detectors.get(name)
                if pair is None:
                    pair = detectors[name] = (drift.ADWIN(), drift.PageHinkley())
                for det in pair:
                    det.update(value)
                    fired += det.drift_detected
            waiting[event["prediction_id"]] = event["prediction"]
        else:
            y_pred = waiting.pop(event["prediction_id"], None)
            if y_pred is not None:
                for metric in scores:
                    metric.update(event["label"], y_pred)
    cpu = time.process_time() - cpu
    report("plain River loop (baseline)", len(preds) + len(labels),
           time.perf_counter() - started, cpu)
    return cpu


def bench_file(preds: list[bytes], labels: list[bytes], baseline_cpu: float) -> None:
    """The pipeline alone, with and without the reference comparison (its added cost)."""
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as fh:
        fh.write(b"\n".join(preds + labels) + b"\n")
    total = len(preds) + len(labels)
    seconds = {}
    warm_up()  # as the service does before it joins the group: compile or load the kernels
    tune_gc()  # and its garbage-collector settings (the River loop ran with Python's own)
    for name, settings in (("file → pipeline, no reference", Settings(reference={"enabled": False})),
                           ("file → pipeline", Settings())):
        pipeline = Pipeline(settings)
        started, cpu = time.perf_counter(), time.process_time()
        for batch in FileSource([fh.name]).batches():
            pipeline.process(batch, now=time.time())
        seconds[name] = time.perf_counter() - started
        report(name, total, seconds[name], time.process_time() - cpu, baseline_cpu)
    added = (seconds["file → pipeline"] - seconds["file → pipeline, no reference"]) / len(preds)
    print(f"{'reference comparison adds':<28} {added * 1e6:.1f} µs per prediction "
          f"({FEATURES} features: PSI, JS, KS every 100 values on windows of 1000)", flush=True)
    os.unlink(fh.name)


def bench_broker(preds: list[bytes], labels: list[bytes]) -> None:
    with Tansu() as broker:
        settings = Settings(kafka={"bootstrap_servers": broker.bootstrap, "group_id": "bench",
                                   "session_timeout_ms": 2000, "heartbeat_interval_ms": 500},
                            metrics={"host": "127.0.0.1", "port": 0})
        create_topics(settings.kafka, settings.kafka.topics)
        prod = producer(settings.kafka)
        t0 = time.perf_counter()
        for raw in preds:
            prod.send("predictions", raw)
        for raw in labels:
            prod.send("labels", raw)
        prod.flush()
        prod.close()
        report("produce (kafka-python)", len(preds) + len(labels), time.perf_counter() - t0)

        service = Service(settings, KafkaSource(settings.kafka))
        stop = threading.Event()
        worker = threading.Thread(target=service.run, args=(stop,))
        started = time.perf_counter()
        worker.start()
        total = len(preds) + len(labels)
        first = None
        while True:
            with service.lock:
                state = service.pipeline.models.get("bench")
                done = sum(state.events.values()) if state else 0
            if done and first is None:
                first = time.perf_counter()
            if done >= total:
                break
            time.sleep(0.01)
        end = time.perf_counter()
        stop.set()
        worker.join()
        print(f"{'first event after start':<28} {first - started:.2f} s (fresh group, "
              "session_timeout_ms=2000)")
        report("broker → service", total, end - first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--labels", type=float, default=0.5, help="share of predictions labelled")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-broker", action="store_true", help="file paths only")
    args = ap.parse_args()
    preds, labels = make_events(args.events, args.labels, args.seed)
    print(f"{args.events:,} predictions with {FEATURES} numeric features, {len(labels):,} labels; "
          f"{os.cpu_count()} CPUs", flush=True)
    baseline = bench_river_loop(preds, labels)
    bench_file(preds, labels, baseline)
    if not args.no_broker:
        bench_broker(preds, labels)


if __name__ == "__main__":
    main()
