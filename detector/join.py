"""A bounded, time-limited buffer where labels meet their predictions.

Either side may arrive first: a prediction waits for its label, a label waits
for its prediction (as when a consumer catches up on a backlog of both topics,
read in any order). An entry waits ``ttl`` seconds *of the service's clock*
from the moment it entered the buffer; then a waiting prediction is
``expired`` and a waiting label is an ``orphan``. Counting from arrival, not
from event timestamps, means a backlog read at full speed never expires an
entry early, whichever topic or partition the consumer happens to read first.
When a side holds ``capacity`` entries, its oldest entry is evicted and counted
as ``prediction_evicted`` or ``label_evicted``, so memory stays bounded and an
undersized buffer is told apart from labels that never came. The clock is
passed in, so the buffer itself stays pure and testable.

>>> j = JoinBuffer(ttl=60.0, capacity=10)
>>> j.add_prediction("fraud", "a", 0.0, ("v1", 1, 0.9))
>>> j.add_label("fraud", "a", 5.0, 0)
(('v1', 1, 0.9), 0)
>>> j.add_label("fraud", "b", 10.0, 1)  # no prediction yet: it waits
>>> j.add_prediction("fraud", "b", 11.0, ("v1", 0, 0.2))
(('v1', 0, 0.2), 1)
>>> j.add_prediction("fraud", "c", 12.0, ("v1", 1, 0.7))
>>> j.expire(71.0).expired, j.expire(72.0).expired  # c waited 60 s at 72.0
([], [('fraud', 'c')])

A consumer catching up on a backlog does not read the two topics in step, and
what it reads too early only waits here, or is evicted. ``JoinGate`` tells the
source which topic to hold back until the other catches up.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from typing import Any, Literal, NamedTuple

Key = tuple[str, str]
#: waiting entries (key, (deadline, payload or label, source partition)) of both sides
Entries = tuple[list[tuple[Key, tuple[float, Any, int]]], list[tuple[Key, tuple[float, Any, int]]]]


class Dropped(NamedTuple):
    """Keys that left the buffer unmatched since the last ``expire``, by join outcome
    (the field names are the outcomes of ``drift_label_join_total``)."""

    #: predictions that waited ``ttl``, or were replaced by a repeated ``prediction_id``
    expired: list[Key]
    #: labels that waited ``ttl``, or were replaced by a repeated label
    orphan: list[Key]
    #: waiting predictions pushed out because the prediction side was full
    prediction_evicted: list[Key]
    #: waiting labels pushed out because the label side was full
    label_evicted: list[Key]


class JoinBuffer:
    """Match ``(model, prediction_id)`` keys from two sides within ``ttl`` and ``capacity``."""

    def __init__(self, ttl: float, capacity: int) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self.clock = float("-inf")
        # key -> (deadline, payload, source partition); deadlines grow with insertion
        # order (the clock never goes back), so the oldest entry is first and expiry pops
        # the front.
        self._predictions: OrderedDict[Key, tuple[float, Any, int]] = OrderedDict()
        self._labels: OrderedDict[Key, tuple[float, Any, int]] = OrderedDict()
        self._pending: dict[str, int] = {}
        # entries waiting per (side, source partition): 0 predictions, 1 labels
        self._by_partition: dict[tuple[int, int], int] = {}
        # dropped since the last expire(), reported by it
        self._dropped = Dropped([], [], [], [])

    def pending(self, model: str) -> int:
        """Predictions of ``model`` waiting for a label."""
        return self._pending.get(model, 0)

    @property
    def waiting_predictions(self) -> int:
        """Predictions (of every model) waiting for their label."""
        return len(self._predictions)

    @property
    def waiting_labels(self) -> int:
        """Labels (of every model) waiting for their prediction."""
        return len(self._labels)

    def waiting_from(self, partition: int) -> tuple[int, int]:
        """``(predictions, labels)`` waiting that were read from source ``partition``."""
        counts = self._by_partition
        return counts.get((0, partition), 0), counts.get((1, partition), 0)

    def _count(self, side: int, partition: int, delta: int) -> None:
        key = (side, partition)
        left = self._by_partition.get(key, 0) + delta
        if left:
            self._by_partition[key] = left
        else:
            del self._by_partition[key]

    def add_prediction(self, model: str, prediction_id: str, now: float,
                       payload: Any, partition: int = -1) -> tuple[Any, Any] | None:
        """Store a prediction (read from source ``partition``), or return
        ``(payload, label)`` if its label was waiting.

        A second prediction with a waiting id replaces the first (last one wins);
        the first is counted as expired at the next ``expire``.
        """
        # runs for every prediction: the clock, counts and pending are kept inline
        key = (model, prediction_id)
        if now > self.clock:
            self.clock = now
        waiting = self._labels.pop(key, None)
        if waiting is not None:
            self._count(1, waiting[2], -1)
            return payload, waiting[1]
        replaced = self._predictions.pop(key, None)
        if replaced is not None:
            self._count(0, replaced[2], -1)
            self._dropped.expired.append(key)
        else:
            pending = self._pending
            pending[model] = pending.get(model, 0) + 1
        self._predictions[key] = (self.clock + self.ttl, payload, partition)
        counts, side = self._by_partition, (0, partition)
        counts[side] = counts.get(side, 0) + 1
        if len(self._predictions) > self.capacity:
            old, entry = self._predictions.popitem(last=False)
            self._count(0, entry[2], -1)
            self._forget(old[0])
            self._dropped.prediction_evicted.append(old)
        return None

    def add_label(self, model: str, prediction_id: str, now: float,
                  label: Any, partition: int = -1) -> tuple[Any, Any] | None:
        """Return ``(payload, label)`` if the prediction is waiting, else keep the label
        (read from source ``partition``; a repeated label replaces the waiting one, which
        then counts as an orphan)."""
        key = (model, prediction_id)
        if now > self.clock:
            self.clock = now
        waiting = self._predictions.pop(key, None)
        if waiting is not None:
            counts, side = self._by_partition, (0, waiting[2])
            left = counts[side] - 1
            if left:
                counts[side] = left
            else:
                del counts[side]
            pending = self._pending
            left = pending[model] - 1
            if left:
                pending[model] = left
            else:
                del pending[model]
            return waiting[1], label
        replaced = self._labels.pop(key, None)
        if replaced is not None:
            self._count(1, replaced[2], -1)
            self._dropped.orphan.append(key)
        self._labels[key] = (self.clock + self.ttl, label, partition)
        self._count(1, partition, 1)
        if len(self._labels) > self.capacity:
            old, entry = self._labels.popitem(last=False)
            self._count(1, entry[2], -1)
            self._dropped.label_evicted.append(old)
        return None

    def expire(self, now: float) -> Dropped:
        """Drop entries whose deadline passed; return them with everything else dropped
        (replaced, evicted for capacity) since the last call."""
        now = max(now, self.clock)
        self.clock = now
        dropped, self._dropped = self._dropped, Dropped([], [], [], [])
        while self._predictions:
            key, (deadline, _, partition) = next(iter(self._predictions.items()))
            if deadline > now:
                break
            self._predictions.popitem(last=False)
            self._count(0, partition, -1)
            self._forget(key[0])
            dropped.expired.append(key)
        while self._labels:
            key, (deadline, _, partition) = next(iter(self._labels.items()))
            if deadline > now:
                break
            self._labels.popitem(last=False)
            self._count(1, partition, -1)
            dropped.orphan.append(key)
        return dropped

    def take(self, partitions: Collection[int], remove: bool = True) -> Entries:
        """The entries read from source ``partitions`` (for a checkpoint of those
        partitions), removed unless ``remove`` is False (before they move to another
        instance, they are).

        >>> j = JoinBuffer(ttl=60, capacity=10)
        >>> _ = j.add_prediction("m", "a", 0.0, "pa", 0), j.add_label("m", "b", 0.0, 1, 1)
        >>> moved = j.take([1]); (j.waiting_predictions, j.waiting_labels)
        (1, 0)
        >>> j.put(moved); j.add_prediction("m", "b", 1.0, "pb", 1)
        ('pb', 1)
        """
        wanted = set(partitions)
        out: Entries = ([], [])
        for side, entries in enumerate((self._predictions, self._labels)):
            moved = [(k, e) for k, e in entries.items() if e[2] in wanted]
            for key, entry in moved if remove else ():
                del entries[key]
                self._count(side, entry[2], -1)
                if side == 0:
                    self._forget(key[0])
            out[side].extend(moved)
        return out

    def put(self, entries: Entries) -> None:
        """Add the entries of ``take`` (from a checkpoint) to those waiting, in deadline
        order; over ``capacity``, the oldest are evicted as usual."""
        for side, (current, moved) in enumerate(zip((self._predictions, self._labels),
                                                    entries, strict=True)):
            if not moved:
                continue
            merged = sorted([*current.items(), *moved], key=lambda item: item[1][0])
            current.clear()
            current.update(merged)
            for key, entry in moved:
                self._count(side, entry[2], 1)
                if side == 0:
                    self._pending[key[0]] = self._pending.get(key[0], 0) + 1
            while len(current) > self.capacity:
                old, entry = current.popitem(last=False)
                self._count(side, entry[2], -1)
                if side == 0:
                    self._forget(old[0])
                    self._dropped.prediction_evicted.append(old)
                else:
                    self._dropped.label_evicted.append(old)

    def _forget(self, model: str) -> None:
        left = self._pending[model] - 1
        if left:
            self._pending[model] = left
        else:
            del self._pending[model]


class JoinGate:
    """Which topic to hold back so that a backlog joins like a live stream.

    A consumer catching up on both topics does not read them in step: label
    messages are small, so the labels topic races ahead; a broker may answer a
    fetch with a whole partition, so one topic is read to its end before the
    other starts. Entries read that early wait in the join for a partner that is
    still unread and, past ``capacity``, are evicted. The gate holds one topic
    back while the other catches up, never both, so neither can block the other.

    Labels are held when more than ``high`` of them wait and the predictions
    topic is more than ``min_lag`` messages (two polls) behind, or how far is not
    known yet (before its first fetch answer). Predictions are held the same way
    when more than ``high`` of them wait for a labels topic that is behind, but
    only while at most ``low`` labels wait: predictions wait for labels even in
    a live stream (and unlabelled ones wait for the TTL), so they give way as
    soon as labels run ahead. A held topic is let go when at most ``low`` of its
    entries wait, or when the other topic is within ``min_lag // 2`` of its end:
    entries that never get a partner (orphan labels, unlabelled predictions)
    cannot stall a topic once there is nothing left to catch up on. ``high`` is
    half the capacity, lowered to leave two polls of headroom.

    Parameters
    ----------
    capacity : int
        Entries per side of the join (``join.capacity``).
    max_poll_records : int
        Most records one poll returns (``kafka.max_poll_records``).

    Examples
    --------
    >>> gate = JoinGate(capacity=5000, max_poll_records=500)
    >>> gate.high, gate.low, gate.min_lag
    (2500, 1250, 1000)
    >>> gate.update(waiting_predictions=0, waiting_labels=2600,
    ...             predictions_lag=20_000, labels_lag=0)      # labels ran ahead
    'label'
    >>> gate.update(0, 1200, 10_000, 0)                        # predictions caught up
    >>> gate.update(0, 9000, 400, 0)                           # orphans, nothing to read
    >>> gate.update(2600, 0, 0, None)                          # labels not fetched yet
    'prediction'
    >>> gate.update(3000, 2600, 8000, 5000)                    # now labels run ahead
    'label'
    """

    def __init__(self, capacity: int, max_poll_records: int) -> None:
        self.high = max(1, min(capacity // 2, capacity - 2 * max_poll_records))
        self.low = self.high // 2
        self.min_lag = 2 * max_poll_records
        #: the kind of the topic held back, if any
        self.holding: Literal["prediction", "label"] | None = None

    def update(self, waiting_predictions: int, waiting_labels: int,
               predictions_lag: int | None, labels_lag: int | None
               ) -> Literal["prediction", "label"] | None:
        """The kind of topic to hold back now (or None), given the entries waiting on
        each side of the join and each topic's messages not read yet (None: unknown)."""
        wp, wl, low, high = waiting_predictions, waiting_labels, self.low, self.high
        lp = float("inf") if predictions_lag is None else predictions_lag
        ll = float("inf") if labels_lag is None else labels_lag
        held, caught_up = self.holding, self.min_lag // 2
        if held == "label" and (wl <= low or lp <= caught_up):
            held = None
        if held == "prediction" and (wp <= low or ll <= caught_up or wl > high):
            held = None   # predictions also give way as soon as labels run ahead
        if held is None:
            if wl > high and lp > self.min_lag:
                held = "label"
            elif wp > high and wl <= low and ll > self.min_lag:
                held = "prediction"
        self.holding = held
        return held
