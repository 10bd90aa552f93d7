"""What a source hands to the pipeline: one message, as read, with where it came from;
and what the service hands to a sink (``Message``, ``Sink``).

At the bottom of the data flow beside the event types: sources produce ``Record``s and
the pipeline consumes them, neither depending on the other.

>>> Record("prediction", b'{"model": "m"}', 1.7e9, "predictions", 0, 42).offset
42
>>> Record("prediction", b"{}", headers=(("x-request-id", b"r1"),)).headers
(('x-request-id', b'r1'),)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from typing import NamedTuple, Protocol

from detector.events import Kind


class Record(NamedTuple):
    """One message from a source: its kind (by topic), raw value and the
    source's timestamp in epoch seconds (used when the event carries none).
    A named tuple: built once per message, 2.5x cheaper than a frozen dataclass.
    ``key`` and ``headers`` are the Kafka message's (None when it has none): the
    server formats of ``detector.formats`` read request ids and CloudEvent attributes
    from them; native events never need them."""

    kind: Kind
    value: bytes | None
    timestamp: float | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] | None = None


#: A message for a Kafka topic: key, value, headers.
Message = tuple[str | None, bytes, list[tuple[str, bytes]]]


class Sink(Protocol):
    """Where the service writes messages (``sources.TopicSink``): ``publish`` waits for
    the broker and counts what became of each message."""

    #: ``dead_letter``, ``drift_events`` or ``ingest``: the ``sink`` label of
    #: ``drift_sink_messages_total``
    name: str
    topic: str
    #: every outcome ``publish`` can count (``written`` and the reasons a message is not)
    outcomes: tuple[str, ...]

    def open(self) -> None: ...
    def publish(self, messages: Iterable[Message]) -> Mapping[str, int]: ...
    def close(self) -> None: ...


class PartitionCounts:
    """Counts by key (``totals``, what the metrics read) with each source partition's
    share beside them, so that a partition's share can move with its state.

    >>> c = PartitionCounts(Counter({("label", "invalid_json"): 0}))
    >>> c.add(("label", "invalid_json"), 3); c.add(("label", "invalid_json"), 5)
    >>> moved = c.take(3, remove=True); (moved, c.totals[("label", "invalid_json")])
    ({('label', 'invalid_json'): 1}, 1)
    >>> c.put(3, moved); c.totals[("label", "invalid_json")]
    2
    """

    def __init__(self, totals: Counter) -> None:
        self.totals = totals
        self._by: dict[int, Counter] = {}

    def add(self, key: Hashable, partition: int) -> None:
        self.totals[key] += 1
        by = self._by.get(partition)
        if by is None:
            by = self._by[partition] = Counter()
        by[key] += 1

    def take(self, partition: int, remove: bool = False) -> dict:
        """The share of ``partition``; with ``remove`` it leaves the totals too."""
        counts = dict(self._by.get(partition, {}))
        if remove:
            self.totals.subtract(self._by.pop(partition, {}))
        return counts

    def put(self, partition: int, counts: Mapping) -> None:
        """Add a share taken elsewhere (from a checkpoint) to ``partition``'s and the
        totals."""
        counts = Counter(counts)
        self.totals.update(counts)
        self._by.setdefault(partition, Counter()).update(counts)
