"""Every structure is bounded: hitting a bound evicts the oldest and counts it."""

from __future__ import annotations

import json
import tracemalloc

from detector.config import Settings
from detector.pipeline import Pipeline
from detector.records import Record


def _batch(start: int, n: int, model: str = "m") -> list[Record]:
    return [Record("prediction", json.dumps({
        "model": model, "model_version": "1", "prediction_id": f"p{i}",
        "features": {"x": float(i % 13), "c": f"cat{i % 5}"}, "prediction": i % 2}).encode())
        for i in range(start, start + n)]


def test_memory_is_flat_once_windows_and_the_join_are_full() -> None:
    """Predictions whose labels never come, far past every bound: memory stops growing."""
    p = Pipeline(Settings(join={"capacity": 2000}, reference={"window": 500}))
    for k in range(0, 20_000, 1000):                 # fill windows, join, warm-ups
        p.process(_batch(k, 1000), now=float(k))
    tracemalloc.start()
    for k in range(20_000, 40_000, 1000):
        p.process(_batch(k, 1000), now=float(k))
    middle = tracemalloc.get_traced_memory()[0]
    for k in range(40_000, 80_000, 1000):
        p.process(_batch(k, 1000), now=float(k))
    end = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert end < middle * 1.05 + 200_000, (middle, end)
    assert p.join.pending("m") == 2000
    assert p.models["m"].join["prediction_evicted"] == 80_000 - 2000   # evicted and counted


def test_labels_without_predictions_are_bounded_and_counted_as_orphans() -> None:
    p = Pipeline(Settings(join={"capacity": 100}))
    p.process([Record("label", json.dumps({"model": "m", "prediction_id": f"x{i}",
                                           "label": 1}).encode()) for i in range(1000)], now=0.0)
    assert p.join.waiting_labels == 100 and p.models["m"].join["label_evicted"] == 900
