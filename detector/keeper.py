"""State kept per source partition, with the positions it covers (README, "State").

Every model's state belongs to the partition number its events come from (the
partitioning contract: producers key both topics by model, so a model's predictions
and labels share a partition number). The ``Keeper`` writes the state of each
partition number ``n`` under the key ``str(n)`` of a store (``detector.stores``),
together with the next offset of every topic's partition ``n`` that the state has
applied. The service commits to the group only offsets that such a durable state
covers, so the committed offsets never run ahead of the state:

- a periodic ``save`` writes the partitions that changed, then the service commits
  the offsets it returns;
- ``revoked`` (a rebalance, a shutdown) writes the partitions leaving, then drops
  them from the pipeline;
- ``assigned`` reads the state of the partitions arriving, puts it into the
  pipeline and returns the offsets to start them at (the state's, not the group's).

A kill -9 at any moment then loses nothing and counts nothing twice: the next owner
of a partition starts from its newest durable state and re-reads exactly the
messages that state has not seen.

>>> import tempfile, threading, pathlib
>>> from detector.config import Settings
>>> from detector.metrics import RunStatus
>>> from detector.pipeline import Pipeline
>>> from detector.records import Record
>>> from detector.stores import FileStore
>>> store = FileStore(pathlib.Path(tempfile.mkdtemp()))
>>> def keeper():
...     p = Pipeline(Settings())
...     return Keeper(Settings(), p, store, threading.Lock(), RunStatus()), p
>>> k, p = keeper()
>>> k.assigned([("predictions", 3)])     # nothing kept yet: the group's offsets
{}
>>> _ = p.process([Record("prediction", b'{"model": "m", "prediction_id": "1", '
...                b'"features": {"x": 1.0}, "prediction": 1}', 0.0, "predictions", 3, 41)], 1.0)
>>> k.save({("predictions", 3): 42})
{('predictions', 3): 42}
>>> k2, p2 = keeper()                  # another instance, after a rebalance or a crash
>>> k2.assigned([("predictions", 3), ("labels", 3)]), p2.models["m"].events["prediction"]
({('predictions', 3): 42}, 1)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping

from detector import state
from detector.config import Settings
from detector.metrics import RunStatus
from detector.monitor import ModelMonitor
from detector.pipeline import ModelState, Pipeline
from detector.stores import Store, StoreError

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
Offsets = dict[TopicPartition, int]


class StateRefused(Exception):
    """A partition's state is unusable and ``checkpoint.on_invalid`` is ``refuse``."""


class Keeper:
    """Saves and restores the pipeline's state per source partition number."""

    def __init__(self, settings: Settings, pipeline: Pipeline, store: Store,
                 lock: threading.Lock, status: RunStatus, *,
                 extra: tuple[Callable[[int, bool], dict], Callable[[int, dict], None]] | None
                 = None, clock: Callable[[], float] = time.time) -> None:
        ck = settings.checkpoint
        self.pipeline, self.store, self.lock, self.status = pipeline, store, lock, status
        self.fingerprint = state.fingerprint(settings.state_shape())
        self.key = ck.key.get_secret_value().encode() if ck.key is not None else None
        self.refuse = ck.on_invalid == "refuse"
        #: (take, put) of more state kept per partition (the model servers' inputs)
        self.extra = extra
        self.clock = clock
        #: partition numbers this instance holds, with the offsets their state covers as
        #: last saved or restored (None: never saved since they came)
        self.owned: dict[int, Offsets | None] = {}
        #: partition numbers revoked or lost, kept in memory until the next assignment:
        #: the offsets of their last save (or restore) and the offsets they applied
        self.suspended: dict[int, tuple[Offsets | None, Offsets]] = {}
        #: why the last write failed, until one succeeds
        self.failing: str | None = None

    def assigned(self, partitions: Collection[TopicPartition]) -> Offsets:
        """Take over the partition numbers of ``partitions`` that are new to this
        instance; return where to start each of ``partitions`` that has kept state (the
        others start at the group's committed offset). Raises ``StateRefused`` when a
        state is unusable and ``on_invalid`` is ``refuse``.

        A partition this instance held until the rebalance (``revoked``) goes on with
        the state still in memory when nobody saved a newer one meanwhile: it starts
        where that state stopped. Otherwise the store's state replaces it, and the
        partitions that went elsewhere leave the pipeline now."""
        numbers = sorted({p for _, p in partitions} - self.owned.keys())
        start: Offsets = {}
        if numbers:
            started = time.perf_counter()
            found = self._read([str(n) for n in numbers])
            for n in numbers:
                kept = self.suspended.pop(n, None)
                ckpt = self._checkpoint(n, found.get(str(n)))
                if kept is not None and (None if ckpt is None else ckpt.offsets) == kept[0]:
                    self.owned[n] = kept[0]          # nobody went on from our last save
                    start.update(kept[1])
                    continue
                if kept is not None:
                    self._drop(n)
                self.owned[n] = None
                if ckpt is None:
                    continue
                with self.lock:
                    self.pipeline.put(n, ckpt.state)
                    if self.extra is not None:
                        self.extra[1](n, ckpt.state)
                self.owned[n] = dict(ckpt.offsets)
                start.update(ckpt.offsets)
                self.status.checkpoint_at = ckpt.created
                log.info("checkpoint_restored", extra={"fields": {
                    "store": str(self.store), "partition": n, "events": ckpt.events,
                    "age_s": round(self.clock() - ckpt.created, 1),
                    "offsets": ",".join(f"{t}/{p}@{o}"
                                        for (t, p), o in sorted(ckpt.offsets.items()))}})
            log.info("partitions_taken", extra={"fields": {
                "partitions": ",".join(map(str, numbers)),
                "seconds": round(time.perf_counter() - started, 3)}})
        for n in [n for n in self.suspended if n not in self.owned]:
            del self.suspended[n]                    # another member has it now
            self._drop(n)
        wanted = set(partitions)
        return {tp: offset for tp, offset in start.items() if tp in wanted}

    def _checkpoint(self, n: int, raw: bytes | StoreError | None) -> state.Checkpoint | None:
        """The usable checkpoint of partition ``n`` from the store's answer, or None
        (none kept; or unusable: counted, logged, ``StateRefused`` with ``refuse``)."""
        if raw is None:
            return None
        try:
            if isinstance(raw, StoreError):
                raise raw
            ckpt = state.decode(raw, self.fingerprint, self.key, f"{self.store} key {n}")
            problem = _misshapen(ckpt.state)
            if problem is not None:
                raise state.CheckpointError("malformed", problem, f"{self.store} key {n}")
        except (StoreError, state.CheckpointError) as exc:
            self._count("restore", exc.reason)
            log.error("checkpoint_invalid", extra={"fields": {
                "partition": n, "reason": exc.reason, "error": str(exc),
                "action": "refusing to start" if self.refuse else "starting it fresh"}})
            if self.refuse:
                raise StateRefused(str(exc)) from None
            return None
        return ckpt

    def _drop(self, n: int) -> None:
        with self.lock:
            self.pipeline.take(n, remove=True)
            if self.extra is not None:
                self.extra[0](n, True)

    def save(self, applied: Mapping[TopicPartition, int],
             numbers: Collection[int] | None = None) -> Offsets | None:
        """Write the state of the held partition numbers (``numbers``, default all) that
        applied messages since their last save; ``applied`` is the next offset after the
        last message applied, per partition. Returns the offsets now covered by durable
        state (to commit), or None when the store refused the write (counted, logged,
        and the service is not ready until a write succeeds)."""
        wanted = self.owned.keys() if numbers is None else set(numbers) & self.owned.keys()
        blobs: dict[str, bytes] = {}
        covered: dict[int, Offsets] = {}
        started = time.perf_counter()
        with self.lock:
            for n in sorted(wanted):
                before = self.owned[n]
                offsets = dict(before or {})
                offsets.update({tp: o for tp, o in applied.items() if tp[1] == n})
                if offsets == before:
                    # (a partition never saved is written once even when it has had no
                    # message: a store read for it then stops at its state)
                    continue
                snapshot = self.pipeline.take(n)
                if self.extra is not None:
                    snapshot.update(self.extra[0](n, False))
                events = sum(sum(m.events.values()) for m in snapshot["models"].values())
                blobs[str(n)] = state.encode(snapshot, offsets, self.fingerprint, events,
                                             self.key)
                covered[n] = offsets
        if not blobs:
            return {}
        try:
            size = self.store.write(blobs)
        except StoreError as exc:
            self._count("write", exc.reason)
            if self.failing is None:
                log.error("checkpoint_failed", extra={"fields": {
                    "store": str(self.store), "reason": exc.reason, "error": str(exc),
                    "action": "offsets stay uncommitted; retrying at the next interval"}})
            self.failing = f"state cannot be saved ({exc.reason})"
            self.status.checkpoint_error = self.failing
            return None
        if self.failing is not None:
            log.info("checkpoint_recovered", extra={"fields": {"store": str(self.store)}})
        self.failing = self.status.checkpoint_error = None
        self.owned.update(covered)
        self.status.checkpoint_at = self.clock()
        log.info("checkpoint_saved", extra={"fields": {
            "partitions": ",".join(sorted(blobs)), "bytes": size,
            "seconds": round(time.perf_counter() - started, 3)}})
        return {tp: o for offsets in covered.values() for tp, o in offsets.items()}

    def revoked(self, partitions: Collection[TopicPartition],
                applied: Mapping[TopicPartition, int], lost: bool = False) -> None:
        """Partitions leave this instance: write their state (unless they were ``lost``,
        perhaps owned by another member already). Their state stays in memory, and
        exported, until the next ``assigned`` says whether it comes back (a rebalance
        mostly gives a member its partitions again; a broker outage leaves them lost
        until it ends)."""
        numbers = {p for _, p in partitions} & self.owned.keys()
        if not numbers:
            return
        if not lost:
            self.save(applied, numbers)
        for n in numbers:
            saved = self.owned.pop(n)
            mine = {tp: o for tp, o in applied.items() if tp[1] == n}
            self.suspended[n] = (saved, {**(saved or {}), **mine})
        log.info("partitions_released", extra={"fields": {
            "partitions": ",".join(map(str, sorted(numbers))), "lost": lost}})

    def _read(self, keys: list[str], tries: int = 3) -> dict[str, bytes | StoreError]:
        """The store's blobs of ``keys``. A store that cannot be read at all is tried
        ``tries`` times; then the service stops (``StateRefused``): starting those
        partitions fresh would drop the state their committed offsets rely on."""
        attempt = 0
        while True:
            try:
                return self.store.read(keys)
            except StoreError as exc:
                attempt += 1
                self._count("read", exc.reason)
                log.error("checkpoint_read_failed", extra={"fields": {
                    "store": str(self.store), "reason": exc.reason, "error": str(exc),
                    "attempt": attempt, "of": tries}})
                if attempt == tries:
                    raise StateRefused(f"state store {self.store} cannot be read: {exc}") \
                        from None
                time.sleep(2 ** (attempt - 1))

    def _count(self, operation: str, reason: str) -> None:
        key = (operation, reason)
        failures = self.status.checkpoint_failures
        failures[key] = failures.get(key, 0) + 1


def _misshapen(data: object) -> str | None:
    """What is wrong with the parts of a restored state that ``Pipeline.put`` and
    ``Inputs.put`` read (a blob may pass every checksum and still hold something else
    when no key signs it), or None.

    >>> _misshapen({"models": 5, "rejected": {}, "join": ([], [])})
    'models is not a map of model states'
    """
    if not isinstance(data, dict):
        return "not a map"
    models = data.get("models")
    if not isinstance(models, dict) or not all(
            isinstance(k, str) and isinstance(v, ModelState) for k, v in models.items()):
        return "models is not a map of model states"
    for name, st in models.items():
        versions = getattr(st, "versions", None)
        if not (isinstance(getattr(st, "name", None), str)
                and isinstance(versions, dict)
                and all(isinstance(m, ModelMonitor) for m in versions.values())
                and all(isinstance(getattr(st, f, None), dict) for f in ("events", "join"))
                and isinstance(getattr(st, "seq", None), int)):
            return f"model {name[:60]!r} is not a whole model state"
    rejected = data.get("rejected")
    if not isinstance(rejected, dict) or not all(
            isinstance(k, tuple) and len(k) == 2 and isinstance(v, int)
            for k, v in rejected.items()):
        return "rejected is not a map of counts"
    for part in ("join", "input_join"):
        if part == "input_join" and part not in data:
            continue
        if not _entries(data.get(part)):
            return f"{part} is not two lists of waiting entries"
    if "input_join" in data and not (isinstance(data.get("input_pairs"), dict)
                                     and isinstance(data.get("input_paired"), list)):
        return "the inputs' counts are missing"
    return None


def _entries(entries: object) -> bool:
    """Whether ``entries`` has the shape of ``JoinBuffer.take``'s result."""
    return (isinstance(entries, tuple | list) and len(entries) == 2 and all(
        isinstance(side, list) and all(
            isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], tuple)
            and isinstance(e[1], tuple) and len(e[1]) == 3
            and isinstance(e[1][0], float) and isinstance(e[1][2], int) for e in side)
        for side in entries))
