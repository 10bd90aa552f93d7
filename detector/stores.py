"""State stores: where checkpoint blobs are kept, one blob per key (a partition number).

A store keeps opaque bytes (``detector.state`` makes and checks them) and makes each
write durable before it returns, so the service may commit the offsets a blob records
as soon as ``write`` returns. Two stores implement the ``Store`` protocol:

``FileStore``
    One file per key in a directory (a volume): written to a temporary file, fsynced
    and renamed over the old one, so a crash leaves the old blob or the new one.
``KafkaStore``
    A compacted topic (the only infrastructure the service needs is Kafka). Each key's
    blob is written in parts ``KEY/GENERATION/i`` of at most ``PART`` bytes, then a
    manifest under ``KEY`` (format, generation, parts, bytes, SHA-256) once every part
    is acknowledged by all in-sync replicas, then tombstones for the parts it replaced.
    A crash between parts and manifest leaves the previous generation the newest
    complete one. Reading scans the topic backwards from its end, newest records
    first, and stops as soon as every wanted key is found: start-up costs the same
    whether the broker has compacted the topic or not (only a key that was never
    written is looked for down to the beginning).

Every failure is a ``StoreError`` with a ``reason`` (one of ``STORE_REASONS``) and a
human ``detail``; an ``OSError`` or a Kafka error never leaves a store. A key whose
stored data is unusable is reported in ``read``'s answer, not raised, so one bad key
never blocks the others:

>>> import tempfile, pathlib
>>> store = FileStore(pathlib.Path(tempfile.mkdtemp()))
>>> store.write({"0": b"state of partition 0", "1": b"state of partition 1"})
40
>>> store.read(["0", "1", "2"])                   # "2" was never written: absent
{'0': b'state of partition 0', '1': b'state of partition 1'}
>>> parse_manifest(b'{"foo": 1}', 1 << 20)
Traceback (most recent call last):
...
detector.stores.StoreError: malformed: manifest is not a drift-detector manifest (format None)

This module and ``sources.py`` are the ones that import ``kafka``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from kafka.util import ensure_valid_topic_name

from detector.config import KafkaSettings
from detector.errors import DriftDetectorError
from detector.sources import _delivery, client_options

log = logging.getLogger(__name__)

#: Why a store failed. ``read_only``/``full``: the volume refuses writes (detail: the
#: path); ``io``: any other I/O error; ``topic_refused``: the broker refused to create
#: the topic or to take writes to it; ``topic_missing``: the topic is not there (or has
#: no partition 0); ``timeout``: not done within the store's time limit; ``too_large``:
#: a blob over ``max_bytes``, or a message over the broker's limit; ``malformed``: a
#: key's stored data is unusable; ``unavailable``: no broker answers.
StoreReason = Literal["read_only", "full", "io", "topic_refused", "topic_missing", "timeout",
                      "too_large", "malformed", "unavailable"]
STORE_REASONS: tuple[StoreReason, ...] = get_args(StoreReason)


class StoreError(DriftDetectorError):
    """A store cannot read or write: ``reason`` is one of ``STORE_REASONS``, ``detail``
    says what happened (with the path or topic)."""

    def __init__(self, reason: StoreReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: StoreReason = reason
        self.detail = detail


class Store(Protocol):
    """Where the service keeps one checkpoint blob per key."""

    def read(self, keys: Collection[str]) -> dict[str, bytes | StoreError]:
        """The newest blob of each wanted key. A key never written is absent; a key
        whose stored data is unusable maps to a ``StoreError`` (reason ``malformed``,
        or ``io`` for a file that cannot be read). Raises ``StoreError`` when the store
        itself cannot be read (no broker, timeout)."""
        ...

    def write(self, blobs: Mapping[str, bytes]) -> int:
        """Store every blob; return the bytes written once every one is durable.
        Raises ``StoreError``; a key already replaced stays replaced."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


def check_key(key: str) -> str:
    """A key names a file and prefixes Kafka keys: non-empty, at most 200 characters,
    no ``/``, NUL or leading ``.``. A bad key is a programming error (``ValueError``).

    >>> check_key("3")
    '3'
    >>> check_key("../etc")
    Traceback (most recent call last):
    ...
    ValueError: store key '../etc': must be 1-200 characters without '/', NUL or a leading '.'
    """
    if not 0 < len(key) <= 200 or "/" in key or "\0" in key or key.startswith("."):
        raise ValueError(f"store key {key!r}: must be 1-200 characters without '/', NUL "
                         "or a leading '.'")
    return key


# -- files ----------------------------------------------------------------------------

#: errno -> reason for a write that fails: the volume refuses it, or it is full
_WRITE_ERRNO: dict[int, StoreReason] = {
    errno.EROFS: "read_only", errno.EACCES: "read_only", errno.EPERM: "read_only",
    errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EFBIG: "full"}


class FileStore:
    """One file per key in ``directory``; each replaced atomically and fsynced.

    A write goes to ``.KEY.*.tmp`` in the same directory, is fsynced and renamed over
    ``KEY``, then the directory is fsynced: a crash leaves the old blob or the new one,
    and ``read`` removes the temporary files a crash left. A volume that is read-only
    or full is a ``StoreError`` (``read_only``, ``full``) naming the path.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def __str__(self) -> str:
        return f"directory {self.directory}"

    def read(self, keys: Collection[str]) -> dict[str, bytes | StoreError]:
        for key in keys:
            check_key(key)
        # temporary files left by a crash; on a read-only volume they stay (reading
        # works, and the first write reports the volume)
        for stale in self.directory.glob(".*.tmp"):
            with suppress(OSError):
                stale.unlink()
        found: dict[str, bytes | StoreError] = {}
        for key in keys:
            path = self.directory / key
            try:
                found[key] = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                found[key] = StoreError("io", f"{path}: cannot read: {exc.strerror}")
        return found

    def write(self, blobs: Mapping[str, bytes]) -> int:
        for key in blobs:
            check_key(key)
        written = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for key, blob in blobs.items():
                written += self._replace(key, blob)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            where = exc.filename or self.directory
            raise StoreError(_WRITE_ERRNO.get(exc.errno or 0, "io"),
                             f"{where}: cannot write: {exc.strerror}") from None
        return written

    def _replace(self, key: str, blob: bytes) -> int:
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.directory / key)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp)
            exc.filename = exc.filename or str(self.directory / key)
            raise
        return len(blob)

    def close(self) -> None:
        """Nothing to release: every write is complete on its own."""


# -- Kafka ----------------------------------------------------------------------------

#: the manifest's ``format``; another value is refused as malformed
MANIFEST_FORMAT = "drift-detector-store/1"
#: a manifest larger than this is not one of ours (ours take ~200 bytes)
MANIFEST_MAX = 4096
#: a read or write never creates the topic (the broker would not compact it): only
#: ``KafkaStore._ensure_topic`` does
_NO_AUTO_CREATE = {"allow_auto_create_topics": False}


@dataclass(frozen=True)
class Manifest:
    """What a key's newest generation consists of."""

    generation: int
    parts: int
    size: int                      # "bytes" in the JSON
    sha256: str

    def encode(self) -> bytes:
        return json.dumps({"format": MANIFEST_FORMAT, "generation": self.generation,
                           "parts": self.parts, "bytes": self.size,
                           "sha256": self.sha256}).encode()


def parse_manifest(raw: bytes, max_bytes: int) -> Manifest:
    """Check a manifest before anything is allocated for it; ``StoreError``
    (``malformed``) saying why it is refused.

    >>> m = Manifest(7, 2, 600_000, "ab" * 32)
    >>> parse_manifest(m.encode(), 1 << 20) == m
    True
    >>> for raw in (b"garbage", m.encode().replace(b'"parts": 2', b'"parts": 50000000')):
    ...     try:
    ...         parse_manifest(raw, 1 << 20)
    ...     except StoreError as exc:
    ...         print(exc.detail)
    manifest is not JSON
    manifest says 50000000 parts for 600000 bytes (parts of 524288 bytes)
    """
    if len(raw) > MANIFEST_MAX:
        raise StoreError("malformed", f"manifest of {len(raw)} bytes (ours take < "
                                      f"{MANIFEST_MAX})")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):   # UnicodeDecodeError too; "[[[[..." nests deep
        raise StoreError("malformed", "manifest is not JSON") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt != MANIFEST_FORMAT:
        raise StoreError("malformed", f"manifest is not a drift-detector manifest "
                                      f"(format {str(fmt)[:40]})")
    fields = {name: data.get(name) for name in ("generation", "parts", "bytes")}
    for name, value in fields.items():
        if type(value) is not int or value < 0:
            raise StoreError("malformed", f"manifest field {name} is {str(value)[:40]}, "
                                          "not a whole number >= 0")
    generation, parts, size = fields["generation"], fields["parts"], fields["bytes"]
    if size > max_bytes:
        raise StoreError("malformed", f"manifest says {size} bytes, over the store's limit "
                                      f"of {max_bytes}")
    if parts != math.ceil(size / KafkaStore.PART):
        raise StoreError("malformed", f"manifest says {parts} parts for {size} bytes "
                                      f"(parts of {KafkaStore.PART} bytes)")
    digest = data.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise StoreError("malformed", "manifest sha256 is not 64 hexadecimal digits")
    return Manifest(generation, parts, size, digest)


def _split(record_key: str) -> tuple[str, int, int] | None:
    """``(key, generation, index)`` of a part's record key, or None.

    >>> _split("3/1764000000000000000/0"), _split("3"), _split("3/x/0")
    (('3', 1764000000000000000, 0), None, None)
    """
    head, _, index = record_key.rpartition("/")
    key, _, generation = head.rpartition("/")
    if not key or not generation.isdigit() or not index.isdigit():
        return None
    return key, int(generation), int(index)


class _Wanted:
    """One wanted key during a backward scan: its newest manifest, then its parts."""

    def __init__(self) -> None:
        self.manifest: Manifest | None = None
        self.result: bytes | StoreError | None = None
        self.deleted = False                        # newest manifest record: a tombstone
        self.parts: dict[int, bytes] = {}
        self.size = 0
        self.live: set[str] = set()                 # part keys of the newest generation
        self.garbage: set[str] = set()              # other part keys still holding data

    @property
    def done(self) -> bool:
        return self.deleted or self.result is not None

    def fail(self, detail: str) -> None:
        self.result, self.parts = StoreError("malformed", detail), {}

    def part(self, record_key: str, generation: int, index: int, value: bytes | None,
             newer_than_manifest: bool) -> None:
        m = self.manifest
        if newer_than_manifest or m is None or generation != m.generation:
            if value is not None:   # a crashed or replaced write's part: delete it later
                self.garbage.add(record_key)
            return
        if value is not None:
            self.live.add(record_key)      # deleted after the next write, whatever it is
        if self.done or index >= m.parts:
            return
        if value is None:
            self.fail(f"part {index} of generation {generation} was deleted")
            return
        self.size += len(value)
        if len(value) > KafkaStore.PART or self.size > m.size:
            self.fail(f"part {index} of generation {generation} does not fit the manifest")
            return
        self.parts[index] = value
        if len(self.parts) == m.parts:
            self.finish()

    def finish(self) -> None:
        m = self.manifest
        assert m is not None
        blob = b"".join(self.parts[i] for i in range(m.parts))
        self.parts = {}
        if len(blob) != m.size or hashlib.sha256(blob).hexdigest() != m.sha256:
            self.fail(f"generation {m.generation}: parts do not match the manifest's "
                      "size and SHA-256")
        else:
            self.result = blob


class KafkaStore:
    """Blobs on a compacted Kafka topic (partition 0), created if missing.

    Parameters
    ----------
    kafka
        Connection settings (bootstrap servers, security).
    topic
        The topic; created with ``cleanup.policy=compact`` and one partition if missing.
    replication_factor
        For a topic it creates; None: the broker's default.
    timeout_s
        Bound of one ``read`` or ``write``, connecting included.
    max_bytes
        The largest blob written or read; a manifest saying more is malformed.
    """

    #: largest part: below the 1 MiB message limit of Kafka's default broker settings
    PART = 512 * 1024
    #: records in the first step of the backward scan; later steps double while a step
    #: holds less than CHUNK_BYTES (up to CHUNK_MAX records), halve above 4 x CHUNK_BYTES
    CHUNK = 64
    CHUNK_MAX = 4096
    CHUNK_BYTES = 8 * 2**20

    def __init__(self, kafka: KafkaSettings, topic: str, replication_factor: int | None,
                 timeout_s: float = 30.0, max_bytes: int = 256 * 2**20) -> None:
        self._kafka, self.topic = kafka, topic
        self.replication_factor = replication_factor
        self.timeout_s, self.max_bytes = timeout_s, max_bytes
        self._tp = TopicPartition(topic, 0)
        self._topic_ready = False
        self._producer: KafkaProducer | None = None
        #: per key: part keys of its newest generation, and of others still holding data
        self._live: dict[str, set[str]] = {}
        self._garbage: dict[str, set[str]] = {}
        #: records the last ``read`` looked at (its cost, for logs and tests)
        self.scanned = 0

    def __str__(self) -> str:
        return f"topic {self.topic}"

    # -- connections

    def _options(self) -> dict[str, Any]:
        bound = max(1000, int(self.timeout_s * 1000))
        return {**client_options(self._kafka), "bootstrap_timeout_ms": bound,
                "request_timeout_ms": max(1000, bound // 2)}

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Kafka errors (and a socket's ``OSError``) as ``StoreError``."""
        try:
            yield
        except StoreError:
            raise
        except (KafkaTimeoutError, KafkaConnectionError) as exc:
            # kafka-python reports a bootstrap that no broker answers as a timeout
            if isinstance(exc, KafkaConnectionError) or "bootstrap" in str(exc):
                raise StoreError("unavailable", f"{self}: {doing}: no broker answers at "
                                                f"{self._kafka.bootstrap_servers}") from exc
            raise StoreError("timeout", f"{self}: {doing}: {exc}") from exc
        except UnknownTopicOrPartitionError as exc:
            raise StoreError("topic_missing", f"{self}: {doing}: {exc!r}") from exc
        except MessageSizeTooLargeError as exc:
            raise StoreError("too_large", f"{self}: {doing}: {exc}") from exc
        except (KafkaError, OSError) as exc:
            raise StoreError("io", f"{self}: {doing}: {exc!r}") from exc

    def _ensure_topic(self, deadline: float) -> None:
        """Create the topic if it is missing; warn if it exists without compaction."""
        if self._topic_ready:
            return
        try:
            ensure_valid_topic_name(self.topic)
        except ValueError as exc:
            raise StoreError("topic_refused", f"{self}: {exc}") from None
        with self._errors("checking the topic"):
            admin = KafkaAdminClient(**self._options())
            try:
                if self.topic in admin.list_topics():
                    self._check_policy(admin)
                else:
                    self._create(admin)
                while self.topic not in admin.list_topics():
                    if time.monotonic() > deadline:
                        raise StoreError("topic_missing", f"{self}: created, but not in the "
                                                          "broker's metadata in time")
                    time.sleep(0.05)
            finally:
                admin.close()
        self._topic_ready = True

    def _check_policy(self, admin: KafkaAdminClient) -> None:
        """A topic someone else created: without compaction the broker's retention
        deletes the checkpoints of partitions that are not written for a while."""
        resource = ConfigResource(ConfigResourceType.TOPIC, self.topic)
        answer = admin.describe_configs([resource])["topic"].get(self.topic, {})
        policy = answer.get("cleanup.policy", {}).get("value")   # Tansu tells nothing
        if policy is not None and "compact" not in policy:
            log.warning("store_topic_not_compacted", extra={"fields": {
                "topic": self.topic, "cleanup_policy": policy,
                "action": "checkpoints of idle partitions expire with the topic's "
                          "retention; set cleanup.policy=compact on it"}})

    def _create(self, admin: KafkaAdminClient) -> None:
        spec = {"num_partitions": 1, "replication_factor": self.replication_factor or -1,
                "configs": {"cleanup.policy": "compact"}}
        answer = admin.create_topics({self.topic: spec}, raise_errors=False)["topics"][0]
        error = kafka_errors.for_code(answer["error_code"])
        if error is TopicAlreadyExistsError:   # another replica was first
            return
        if error is not kafka_errors.NoError:
            raise StoreError("topic_refused", f"{self}: the broker refused to create it: "
                                              f"{error.__name__}: {answer['error_message']}")
        log.info("store_topic_created", extra={"fields": {
            "topic": self.topic, "replication_factor": self.replication_factor or "default",
            "cleanup_policy": "compact"}})

    # -- reading

    def read(self, keys: Collection[str]) -> dict[str, bytes | StoreError]:
        wanted = {check_key(k): _Wanted() for k in keys}
        self.scanned = 0
        if not wanted:
            return {}
        started = time.monotonic()
        deadline = started + self.timeout_s
        self._ensure_topic(deadline)
        try:
            with self._errors("reading"):
                # a fresh consumer each time: its high watermark must come from this read
                consumer = KafkaConsumer(
                    **self._options(), **_NO_AUTO_CREATE, group_id=None, enable_auto_commit=False,
                    fetch_max_wait_ms=10,   # Tansu otherwise leaves ~500 ms gaps
                    max_partition_fetch_bytes=2 * self.PART, fetch_max_bytes=2 * self.PART)
                try:
                    consumer.assign([self._tp])
                    self._scan(consumer, wanted, deadline)
                finally:
                    with suppress(KafkaError, OSError):
                        consumer.close()
        except StoreError:
            self._topic_ready = False               # deleted meanwhile? checked next time
            raise
        found: dict[str, bytes | StoreError] = {}
        for key, w in wanted.items():
            if w.manifest is not None and not w.done:
                missing = sorted(set(range(w.manifest.parts)) - set(w.parts))
                w.fail(f"generation {w.manifest.generation}: parts {missing[:10]} missing")
            if w.result is not None:
                found[key] = w.result
            # whatever was known before is older than what was read: all deleted after
            # the key's next write (a scan that stops early does not see older garbage)
            self._garbage[key] = (self._garbage.get(key, set()) | self._live.get(key, set())
                                  | w.garbage)
            self._live[key] = w.live
        log.info("store_read", extra={"fields": {
            "topic": self.topic, "keys": len(wanted),
            "found": sum(isinstance(v, bytes) for v in found.values()),
            "malformed": sum(isinstance(v, StoreError) for v in found.values()),
            "records_scanned": self.scanned,
            "seconds": round(time.monotonic() - started, 3)}})
        return found

    def _scan(self, consumer: KafkaConsumer, wanted: dict[str, _Wanted],
              deadline: float) -> None:
        """Feed ``wanted`` the topic's records newest first, a chunk at a time, until
        every key is done or the beginning is reached. A chunk grows while it holds
        little (old checkpoints' parts are dropped as they arrive) and shrinks when it
        holds much."""
        tp = self._tp
        begin = consumer.beginning_offsets([tp])[tp]
        # Tansu answers ListOffsets(latest) with an offset inside the last batch, not
        # after it; a fetch's high watermark is right. So the first chunk reads from
        # below the listed end up to the high watermark of its own fetches.
        listed_end = consumer.end_offsets([tp])[tp]
        hi: int | None = None
        step = self.CHUNK
        lo = max(begin, listed_end - step)
        seen: set[str] = set()     # record keys whose newest record was handled
        while True:
            chunk, held = self._fetch(consumer, lo, hi, wanted, deadline)
            for record_key, value in reversed(chunk):
                self._feed(record_key, value, wanted, seen)
            if lo <= begin or all(w.done for w in wanted.values()):
                return
            if held < self.CHUNK_BYTES:
                step = min(2 * step, self.CHUNK_MAX)
            elif held > 4 * self.CHUNK_BYTES:
                step = max(step // 2, 1)
            hi, lo = lo, max(begin, lo - step)

    def _fetch(self, consumer: KafkaConsumer, lo: int, hi: int | None,
               wanted: dict[str, _Wanted], deadline: float
               ) -> tuple[list[tuple[str, bytes | None]], int]:
        """The records with offsets in [lo, hi) (hi None: up to the high watermark) that
        belong to a wanted key, oldest first, as (record key, value), and the bytes held.
        The value of a part that cannot be needed (its key's newest manifest, from a
        newer chunk, names another generation) is dropped on arrival."""
        tp = self._tp
        consumer.seek(tp, lo)
        records: list[tuple[str, bytes | None]] = []
        held = 0
        while True:
            top = hi if hi is not None else consumer.highwater(tp)
            if top is not None and consumer.position(tp) >= top:
                return records, held
            if time.monotonic() > deadline:
                raise StoreError("timeout", f"{self}: not read within {self.timeout_s:g} s "
                                            f"(at offset {consumer.position(tp)})")
            for batch in consumer.poll(timeout_ms=50).values():
                for r in batch:
                    if r.offset < lo or (hi is not None and r.offset >= hi) or r.key is None:
                        continue
                    self.scanned += 1
                    record_key = r.key.decode(errors="replace")
                    value = r.value
                    if record_key not in wanted:
                        split = _split(record_key)
                        if split is None or split[0] not in wanted:
                            continue
                        m = wanted[split[0]].manifest
                        if value is not None and m is not None and m.generation != split[1]:
                            value = b""   # garbage: only its key is kept, to delete it
                    held += len(value or b"")
                    records.append((record_key, value))

    def _feed(self, record_key: str, value: bytes | None, wanted: dict[str, _Wanted],
              seen: set[str]) -> None:
        """Handle one record of a wanted key, newest first: only a record key's newest
        record counts."""
        if record_key in seen:
            return
        seen.add(record_key)
        w = wanted.get(record_key)
        if w is not None:          # the key's newest manifest (or a tombstone)
            if value is None:
                w.deleted = True
                return
            try:
                w.manifest = parse_manifest(value, self.max_bytes)
            except StoreError as exc:
                w.result = exc
                return
            if w.manifest.parts == 0:
                w.finish()
            return
        split = _split(record_key)
        assert split is not None
        key, generation, index = split
        owner = wanted[key]
        owner.part(record_key, generation, index, value,
                   newer_than_manifest=owner.manifest is None and not owner.done)

    # -- writing

    def write(self, blobs: Mapping[str, bytes]) -> int:
        for key, blob in blobs.items():
            check_key(key)
            if len(blob) > self.max_bytes:
                raise StoreError("too_large", f"{self}: blob of key {key} has {len(blob)} "
                                              f"bytes, over the store's {self.max_bytes}")
        if not blobs:
            return 0
        deadline = time.monotonic() + self.timeout_s
        self._ensure_topic(deadline)
        plans: dict[str, tuple[Manifest, list[str]]] = {}
        try:
            with self._errors("writing"):
                producer = self._connect()
                parts = []
                for key, blob in blobs.items():
                    manifest = Manifest(self._generation(key), math.ceil(len(blob) / self.PART),
                                        len(blob), hashlib.sha256(blob).hexdigest())
                    names = [f"{key}/{manifest.generation}/{i}" for i in range(manifest.parts)]
                    plans[key] = (manifest, names)
                    parts += [(name, blob[i * self.PART:(i + 1) * self.PART])
                              for i, name in enumerate(names)]
                self._send(producer, parts, deadline)
                self._send(producer, [(k, m.encode()) for k, (m, _) in plans.items()],
                           deadline)
        except StoreError:
            for key, (_, names) in plans.items():   # parts that may have landed
                self._garbage.setdefault(key, set()).update(names)
            self._close_producer()
            self._topic_ready = False               # deleted meanwhile? checked next time
            raise
        for key, (_, names) in plans.items():
            self._garbage.setdefault(key, set()).update(self._live.get(key, ()))
            self._live[key] = set(names)
        self._delete_garbage(list(plans), deadline)
        return sum(len(b) for b in blobs.values())

    def _generation(self, key: str) -> int:
        """Nanoseconds since the epoch, above every generation this store has seen."""
        known = [_split(name) for name in self._live.get(key, ())]
        return max([time.time_ns(), *(s[1] + 1 for s in known if s)])

    def _connect(self) -> KafkaProducer:
        if self._producer is None:
            bound = max(1000, int(self.timeout_s * 1000))
            opts = self._options()
            self._producer = KafkaProducer(
                **opts, **_NO_AUTO_CREATE, acks="all", linger_ms=2,
                max_request_size=self.PART + 65_536, max_block_ms=bound,
                delivery_timeout_ms=opts["request_timeout_ms"] + 1000)
        return self._producer

    def _send(self, producer: KafkaProducer, records: Sequence[tuple[str, bytes | None]],
              deadline: float) -> None:
        """Send ``records`` to partition 0 and wait until each is acknowledged;
        ``StoreError`` for the first that is not."""
        futures = [(name, producer.send(self.topic, key=name.encode(), value=value,
                                        partition=0)) for name, value in records]
        waited = max(0.0, deadline - time.monotonic())
        with suppress(KafkaTimeoutError):   # what is not acknowledged is reported below
            producer.flush(timeout=waited)
        for name, future in futures:
            outcome, error = _delivery(future, waited)
            if outcome != "written":
                reason: StoreReason = "topic_refused" if outcome == "refused" else outcome
                raise StoreError(reason, f"{self}: record {name} not written: {error}"[:500])

    def _delete_garbage(self, keys: list[str], deadline: float) -> None:
        """Tombstones for the parts the new manifests replaced; failures only delay
        the clean-up to the next write (the new blobs are durable already)."""
        doomed = [(name, None) for key in keys for name in sorted(self._garbage.get(key, ()))]
        if not doomed:
            return
        try:
            with self._errors("deleting replaced parts"):
                self._send(self._connect(), doomed, max(deadline, time.monotonic() + 5))
        except StoreError as exc:
            log.warning("store_cleanup_failed", extra={"fields": {
                "topic": self.topic, "parts": len(doomed), "reason": exc.reason,
                "error": exc.detail[:300], "action": "retried after the next write"}})
            return
        for key in keys:
            self._garbage[key] = set()

    # -- closing

    def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with suppress(KafkaError, OSError):
                producer.close(timeout=0)

    def close(self) -> None:
        self._close_producer()
