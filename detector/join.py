"""A bounded, time-limited buffer where labels meet their predictions.

Either side may arrive first: a prediction waits for its label, a label waits
for its prediction (as when a consumer catches up on a backlog of both topics,
read in any order). An entry waits ``ttl`` seconds *of the service's clock*
from the moment it entered the buffer; then a waiting prediction is
``expired`` and a waiting label is an ``orphan``. Counting from arrival, not
from event timestamps, means a backlog read at full speed never expires an
entry early, whichever topic or partition the consumer happens to read first.
When a side holds ``capacity`` entries, the oldest is evicted and counted the
same way, so memory stays bounded. The clock is passed in, so the buffer
itself stays pure and testable.

>>> j = JoinBuffer(ttl=60.0, capacity=10)
>>> j.add_prediction("fraud", "a", 0.0, ("v1", 1, 0.9))
>>> j.add_label("fraud", "a", 5.0, 0)
(('v1', 1, 0.9), 0)
>>> j.add_label("fraud", "b", 10.0, 1)  # no prediction yet: it waits
>>> j.add_prediction("fraud", "b", 11.0, ("v1", 0, 0.2))
(('v1', 0, 0.2), 1)
>>> j.add_prediction("fraud", "c", 12.0, ("v1", 1, 0.7))
>>> j.expire(71.0), j.expire(72.0)  # c waited 60 s at 72.0
(([], []), ([('fraud', 'c')], []))
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
        self.clock = float("-inf")
        # key -> (deadline, payload); deadlines grow with insertion order (the
        # clock never goes back), so the oldest entry is first and expiry pops the front.
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

    def _advance(self, now: float) -> float:
        if now > self.clock:
            self.clock = now
        return self.clock + self.ttl

    def add_prediction(self, model: str, prediction_id: str, now: float,
                       payload: Any) -> tuple[Any, Any] | None:
        """Store a prediction, or return ``(payload, label)`` if its label was waiting.

        A second prediction with a waiting id replaces the first (last one wins);
        the first is counted as expired at the next ``expire``.
        """
        key = (model, prediction_id)
        deadline = self._advance(now)
        waiting = self._labels.pop(key, None)
        if waiting is not None:
            return payload, waiting[1]
        if key in self._predictions:
            del self._predictions[key]
            self.evicted_predictions.append(key)
        else:
            self._pending[model] = self._pending.get(model, 0) + 1
        self._predictions[key] = (deadline, payload)
        if len(self._predictions) > self.capacity:
            old, _ = self._predictions.popitem(last=False)
            self._forget(old[0])
            self.evicted_predictions.append(old)
        return None

    def add_label(self, model: str, prediction_id: str, now: float,
                  label: Any) -> tuple[Any, Any] | None:
        """Return ``(payload, label)`` if the prediction is waiting, else keep the label
        (a repeated label replaces the waiting one, which then counts as an orphan)."""
        key = (model, prediction_id)
        deadline = self._advance(now)
        waiting = self._predictions.pop(key, None)
        if waiting is not None:
            self._forget(model)
            return waiting[1], label
        if self._labels.pop(key, None) is not None:
            self.evicted_labels.append(key)
        self._labels[key] = (deadline, label)
        if len(self._labels) > self.capacity:
            old, _ = self._labels.popitem(last=False)
            self.evicted_labels.append(old)
        return None

    def expire(self, now: float) -> tuple[list[Key], list[Key]]:
        """Drop entries whose deadline passed; return ``(expired predictions, orphan labels)``,
        including those evicted for capacity since the last call."""
        now = max(now, self.clock)
        self.clock = now
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
