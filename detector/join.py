"""A bounded, time-limited buffer where labels meet their predictions.

Either side may arrive first: a prediction waits for its label, a label waits
for its prediction (as when a consumer catches up on a backlog of both topics,
read in any order). Time is *event time*: the clock is the newest event
timestamp seen (the watermark), so replaying the same stream gives the same
joins whatever the wall clock does. An entry waits ``ttl`` seconds of event
time after it arrived; then a waiting prediction is ``expired`` and a waiting
label is an ``orphan``. When a side holds ``capacity`` entries, the oldest is
evicted and counted the same way, so memory stays bounded.

>>> j = JoinBuffer(ttl=60.0, capacity=10)
>>> j.add_prediction("fraud", "a", 0.0, ("v1", 1, 0.9))
>>> j.add_label("fraud", "a", 5.0, 0)
(('v1', 1, 0.9), 0)
>>> j.add_label("fraud", "b", 10.0, 1)  # no prediction yet: it waits
>>> j.add_prediction("fraud", "b", 11.0, ("v1", 0, 0.2))
(('v1', 0, 0.2), 1)
>>> j.add_prediction("fraud", "c", 12.0, ("v1", 1, 0.7))
>>> j.expire(200.0)  # watermark far past c's deadline
([('fraud', 'c')], [])
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

Key = tuple[str, str]


class JoinBuffer:
    """Match ``(model, prediction_id)`` keys from two sides within ``ttl`` and ``capacity``."""

    def __init__(self, ttl: float, capacity: int) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self.watermark = float("-inf")
        # key -> (deadline, payload); deadlines grow with insertion order, so the
        # oldest entry is always first and expiry is a pop from the front.
        self._predictions: OrderedDict[Key, tuple[float, Any]] = OrderedDict()
        self._labels: OrderedDict[Key, tuple[float, Any]] = OrderedDict()
        self._pending: dict[str, int] = {}
        self.evicted_predictions: list[Key] = []
        self.evicted_labels: list[Key] = []

    def pending(self, model: str) -> int:
        """Predictions of ``model`` waiting for a label."""
        return self._pending.get(model, 0)

    @property
    def waiting_labels(self) -> int:
        return len(self._labels)

    def _advance(self, timestamp: float) -> float:
        if timestamp > self.watermark:
            self.watermark = timestamp
        return self.watermark + self.ttl

    def add_prediction(self, model: str, prediction_id: str, timestamp: float,
                       payload: Any) -> tuple[Any, Any] | None:
        """Store a prediction, or return ``(payload, label)`` if its label was waiting.

        A second prediction with a waiting id replaces the first (last one wins).
        """
        key = (model, prediction_id)
        deadline = self._advance(timestamp)
        waiting = self._labels.pop(key, None)
        if waiting is not None:
            return payload, waiting[1]
        if key in self._predictions:
            del self._predictions[key]
        else:
            self._pending[model] = self._pending.get(model, 0) + 1
        self._predictions[key] = (deadline, payload)
        if len(self._predictions) > self.capacity:
            old, _ = self._predictions.popitem(last=False)
            self._forget(old[0])
            self.evicted_predictions.append(old)
        return None

    def add_label(self, model: str, prediction_id: str, timestamp: float,
                  label: Any) -> tuple[Any, Any] | None:
        """Return ``(payload, label)`` if the prediction is waiting, else keep the label."""
        key = (model, prediction_id)
        deadline = self._advance(timestamp)
        waiting = self._predictions.pop(key, None)
        if waiting is not None:
            self._forget(model)
            return waiting[1], label
        self._labels.pop(key, None)
        self._labels[key] = (deadline, label)
        if len(self._labels) > self.capacity:
            old, _ = self._labels.popitem(last=False)
            self.evicted_labels.append(old)
        return None

    def expire(self, watermark: float | None = None) -> tuple[list[Key], list[Key]]:
        """Drop entries whose deadline passed; return ``(expired predictions, orphan labels)``,
        including those evicted for capacity since the last call."""
        if watermark is not None and watermark > self.watermark:
            self.watermark = watermark
        now = self.watermark
        expired, self.evicted_predictions = self.evicted_predictions, []
        orphans, self.evicted_labels = self.evicted_labels, []
        while self._predictions:
            key, (deadline, _) = next(iter(self._predictions.items()))
            if deadline > now:
                break
            self._predictions.popitem(last=False)
            self._forget(key[0])
            expired.append(key)
        while self._labels:
            key, (deadline, _) = next(iter(self._labels.items()))
            if deadline > now:
                break
            self._labels.popitem(last=False)
            orphans.append(key)
        return expired, orphans

    def _forget(self, model: str) -> None:
        left = self._pending[model] - 1
        if left:
            self._pending[model] = left
        else:
            del self._pending[model]
