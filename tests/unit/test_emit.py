"""What the emitter accepts, encodes and drops, without a broker (nothing listens on
its port: every call returns at once, and nothing is sent)."""

from __future__ import annotations

import json

import numpy as np

from detector.broker import free_port
from detector.emit import Emitter


def test_values_are_encoded_as_events_and_bad_ones_dropped_as_invalid() -> None:
    emitter = Emitter(f"127.0.0.1:{free_port()}", max_queue=100, drop_after_s=60.0)
    try:
        accepted = [
            emitter.log_prediction("fraud", 7, {"amount": np.float32(2.5), "n": np.int64(3),
                                                "missing": float("nan"), "country": "DE"},
                                   np.int64(1), score=np.float64(0.25), model_version=3,
                                   timestamp=1.7e9),
            emitter.log_label("fraud", 7, True, timestamp=1.7e9),
        ]
        dropped = [
            emitter.log_prediction("fraud", 8, {"x": 1.0}, float("nan")),
            emitter.log_prediction("fraud", 9, {"x": 1.0}, 1, score=float("inf")),
            emitter.log_prediction("fraud", 10, {"x": object()}, 1),
            emitter.log_prediction("fraud", 11, ["not", "a", "mapping"], 1),   # type: ignore[arg-type]
            emitter.log_label("fraud", 12, float("nan")),
        ]
        queued = [json.loads(item.value) for item in emitter._queue]
    finally:
        emitter.close(timeout=0.1)
    assert accepted == [True, True] and dropped == [False] * 5
    assert queued == [
        {"model": "fraud", "prediction_id": 7, "timestamp": 1.7e9,
         "features": {"amount": 2.5, "n": 3, "missing": None, "country": "DE"},
         "prediction": 1, "model_version": 3, "score": 0.25},
        {"model": "fraud", "prediction_id": 7, "label": True, "timestamp": 1.7e9}]
    assert emitter.stats() == {"queued": 2, "sent": 0, "queue_full": 0, "unavailable": 0,
                               "invalid": 5, "closed": 2}
    assert emitter.log_label("fraud", 13, 1) is False           # after close
    assert emitter.stats()["closed"] == 3
