"""Where a detection happened: the event of its model version at which it fired and the
one where its change began (the onset), and where each of those events was read.

A detector counts the values of its stream (``Detection.index``); a feature that is
missing from some events, or the error of the labelled pairs only, counts fewer values
than the version has events. A ``Trace`` translates: ``event_index`` counts the events
of the model version (its predictions for the ``feature`` and ``prediction`` signals, its
labelled pairs for ``error`` and ``label``) from 0, and ``position`` names the message
(topic, partition, offset as read, and the ``prediction_id`` when the event is a
prediction).

Memory is bounded and the hot path pays per batch, not per value:

* ``ValueMap``: per stream, the change points of "events without a value so far" (a
  feature present in every event has none). A stream's value ``v`` is the event
  ``first + v + skipped``; the last ``MAX_CHANGES`` change points are kept. A value
  older than the oldest one kept has its event index only if it came before the first
  event without a value (None otherwise).
* ``EventTrail``: per model version, a ring of the positions of its last ``HISTORY``
  events. An onset further back gets no position (None) but keeps its event index.

>>> vmap = ValueMap()
>>> vmap.add(0, np.array([0, 1, 3, 4]))       # events 0..4, the value of event 2 missing
>>> vmap.add(5, None, 3)                      # events 5, 6, 7 all have a value
>>> [vmap.event(v) for v in range(7)]
[0, 1, 3, 4, 5, 6, 7]
>>> trail = EventTrail(history=4)
>>> trail.add(BatchPositions([Record("prediction", b"", None, "p", 0, o) for o in range(6)]),
...           [0, 1, 2, 3, 4, 5], ["a", "b", "c", "d", "e", "f"])
>>> trail.position(5), trail.position(1)
(Position(topic='p', partition=0, offset=5, prediction_id='f'), None)
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from detector.records import Record

#: events of a model version whose positions are kept (per kind: predictions, pairs)
HISTORY = 4096
#: change points of a stream's value-to-event map that are kept
MAX_CHANGES = 1024

_TOPIC, _PARTITION, _OFFSET = itemgetter(3), itemgetter(4), itemgetter(5)


class Position(NamedTuple):
    """Where an event was read: the message's topic, partition and offset (``""``, -1,
    -1 for a source without them, such as a replayed file) and its ``prediction_id``
    (of a pair: the id the prediction and its label share)."""

    topic: str
    partition: int
    offset: int
    prediction_id: str | None


@dataclass(frozen=True, slots=True)
class Trace:
    """The events of a detection: where it fired and where its change began (the onset;
    the firing itself when the detector gives no estimate). ``onset_event`` is None when
    it cannot be told (see ``ValueMap``), ``onset_position`` when the event is older than
    the trail's history."""

    event: int
    position: Position | None
    onset_event: int | None
    onset_position: Position | None


class BatchPositions:
    """The positions of a batch's records as arrays, built on first use (a batch without
    a detection or a monitored event never builds them): C-level passes over the records,
    no Python per record."""

    __slots__ = ("records", "_arrays")

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records
        self._arrays: tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None = None

    def arrays(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """The batch's topics (each once), and per record its topic's number in them, its
        partition and its offset."""
        if self._arrays is None:
            records, n = self.records, len(self.records)
            names = list(map(_TOPIC, records))
            topics = list(dict.fromkeys(names))
            number = {t: i for i, t in enumerate(topics)}
            self._arrays = (topics,
                            np.zeros(n, np.int32) if len(topics) == 1 else
                            np.fromiter(map(number.__getitem__, names), np.int32, n),
                            _integers(records, _PARTITION, np.int32),
                            _integers(records, _OFFSET, np.int64))
        return self._arrays


def _integers(records: Sequence[Record], field: itemgetter, dtype: type[np.integer]
              ) -> np.ndarray:
    """One integer field of every record; a value that is no Kafka position (a source
    that is not Kafka may give anything) is -1, unknown."""
    try:
        return np.fromiter(map(field, records), dtype, len(records))
    except (OverflowError, TypeError, ValueError):
        low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
        return np.fromiter((v if type(v) is int and low <= v <= high else -1
                            for v in map(field, records)), dtype, len(records))


class EventTrail:
    """The positions of a model version's last ``history`` events of one kind, in a ring
    that grows to ``history`` as events come (a version with few events, or a model
    without labels, keeps little). ``count`` is the number of events recorded (the next
    event's index)."""

    __slots__ = ("history", "count", "topics", "_topic", "_partition", "_offset", "_ids")

    def __init__(self, history: int = HISTORY) -> None:
        self.history = history
        self.count = 0
        #: every topic seen, a topic's number is its place here (a version reads few)
        self.topics: list[str] = []
        self._topic = np.zeros(0, np.int32)
        self._partition = np.zeros(0, np.int32)
        self._offset = np.zeros(0, np.int64)
        self._ids: list[str | None] = []

    def _grow(self, events: int) -> None:
        """Room for the slots of ``events`` events (the ring's slot is event % history:
        below ``history`` the event itself)."""
        size = len(self._ids)
        if size >= min(events, self.history):
            return
        size = min(self.history, max(events, 2 * size))
        for name in ("_topic", "_partition", "_offset"):
            old = getattr(self, name)
            new = np.zeros(size, old.dtype)
            new[:old.size] = old
            setattr(self, name, new)
        self._ids += [None] * (size - len(self._ids))

    def add(self, batch: BatchPositions, rows: Sequence[int],
            ids: Sequence[str | None] | None) -> None:
        """Record the next events: the records at ``rows`` of the batch, with their
        prediction ids (None: not known)."""
        k = len(rows)
        if not k:
            return
        topics, topic, partition, offset = batch.arrays()
        at = np.asarray(rows, dtype=np.intp)
        if k > self.history:
            at, ids, k = at[-self.history:], None if ids is None else ids[-self.history:], \
                self.history
        self._grow(self.count + len(rows))
        codes = self._codes(topics)[topic[at]]
        slots = (self.count + len(rows) - k + np.arange(k)) % self.history
        self._topic[slots], self._partition[slots] = codes, partition[at]
        self._offset[slots] = offset[at]
        start = int(slots[0])
        ids = [None] * k if ids is None else list(ids)
        head = min(k, self.history - start)
        self._ids[start:start + head] = ids[:head]
        self._ids[:k - head] = ids[head:]
        self.count += len(rows)

    def _codes(self, topics: list[str]) -> np.ndarray:
        known = self.topics
        for name in topics:
            if name not in known:
                known.append(name)
        return np.array([known.index(name) for name in topics], dtype=np.int32)

    def position(self, event: int) -> Position | None:
        """Where ``event`` was read, or None when it is not among the last ``history``."""
        if not self.count - self.history <= event < self.count or event < 0:
            return None
        slot = event % self.history
        return Position(self.topics[int(self._topic[slot])], int(self._partition[slot]),
                        int(self._offset[slot]), self._ids[slot])


class StreamTrail:
    """The value maps of one stream: of its numbers (what its detectors count) and of its
    strings (what the share streams of a categorical feature count, after the
    reference's warm-up). ``categorical`` is the stream's count of strings so far."""

    __slots__ = ("numbers", "strings", "categorical")

    def __init__(self) -> None:
        self.numbers = ValueMap()
        self.strings = ValueMap()
        self.categorical = 0

    def add(self, base: int, steps: Sequence[int] | None,
            values: Sequence[float | str] | np.ndarray, categorical: int) -> None:
        """Record a batch's queued values (in order), one in each of the events
        ``base + steps`` (None: ``base``, ``base + 1``, ...), given the stream's count of
        strings after them. Only a batch that mixes numbers and strings is looked at
        value by value."""
        k = len(values)
        strings, self.categorical = categorical - self.categorical, categorical
        if not strings:
            self.numbers.add(base, None if steps is None else np.asarray(steps), k)
        elif strings == k:
            self.strings.add(base, None if steps is None else np.asarray(steps), k)
        else:
            kinds = np.fromiter((type(v) is str for v in values), bool, k)
            at = np.arange(k) if steps is None else np.asarray(steps)
            self.numbers.add(base, at[~kinds])
            self.strings.add(base, at[kinds])


class ValueMap:
    """Which event of its version each value of a stream came from: the change points of
    the number of events skipped (without a value) before a value. ``first`` is the event
    of value 0, ``count`` the values recorded, ``dense`` the values before the first
    skip (None while there is none): those are known for ever."""

    __slots__ = ("first", "count", "dense", "starts", "skips")

    def __init__(self) -> None:
        self.first = -1
        self.count = 0
        self.dense: int | None = None
        #: after ``dense``: the value where each run of equal ``skipped`` begins, and that
        #: ``skipped`` (the last ``MAX_CHANGES`` runs at least)
        self.starts: list[int] = []
        self.skips: list[int] = []

    def add(self, base: int, steps: np.ndarray | None, k: int = 0) -> None:
        """Record the next values: one in each of the events ``base + steps`` (ascending),
        or, when ``steps`` is None, in each of the ``k`` events from ``base`` on."""
        if steps is not None:
            k = len(steps)
        if not k:
            return
        if self.first < 0:
            self.first = base + (0 if steps is None else int(steps[0]))
        count, last = self.count, self.skips[-1] if self.skips else 0
        self.count = count + k
        lead = base - self.first - count     # skipped before the first of these values
        if steps is None:
            if lead != last:
                self._change([count], [lead])
            return
        skipped = lead + np.asarray(steps, dtype=np.int64) - np.arange(k)
        if skipped[-1] == last:             # monotone: all equal to the last run's
            return
        change = np.flatnonzero(np.diff(skipped, prepend=last))
        self._change((count + change).tolist(), skipped[change].tolist())

    def _change(self, starts: list[int], skips: list[int]) -> None:
        if self.dense is None:
            self.dense = starts[0]
        self.starts += starts
        self.skips += skips
        if len(self.starts) > 2 * MAX_CHANGES:
            del self.starts[:-MAX_CHANGES], self.skips[:-MAX_CHANGES]

    def event(self, value: int) -> int | None:
        """The event index of ``value``: None when it is not a value yet, or it is after
        the first skip and older than the change points kept."""
        if not 0 <= value < self.count:
            return None
        if self.dense is None or value < self.dense:
            return self.first + value
        i = bisect_right(self.starts, value) - 1
        return None if i < 0 else self.first + value + self.skips[i]
