"""Event sources (Kafka consumer group, JSONL file) and the few Kafka admin and
producer helpers the demo and tests need. The only module that imports ``kafka``.

A source yields batches of ``Record``; the service applies a batch and only then
calls ``commit()``, so a crash replays at most the uncommitted batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from kafka.admin import NewTopic
from kafka.errors import (
    CommitFailedError,
    KafkaConfigurationError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)

from detector.config import KafkaSettings
from detector.errors import SourceError, SourceUnavailable
from detector.events import Kind
from detector.pipeline import Record
from detector.state import CheckpointError

log = logging.getLogger(__name__)

#: Errors after which retrying the same settings cannot help: exit and let the
#: orchestrator (or the operator) act.
_FATAL = (KafkaConfigurationError,)
#: How long one connection attempt may take before the service logs and retries.
BOOTSTRAP_TIMEOUT_MS = 10_000


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python keyword arguments common to consumer, producer and admin client.

    >>> from detector.config import KafkaSettings
    >>> client_options(KafkaSettings(bootstrap_servers="a:9092,b:9092"))["bootstrap_servers"]
    ['a:9092', 'b:9092']
    """
    opts: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()],
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        opts["sasl_mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_plain_username:
        opts["sasl_plain_username"] = kafka.sasl_plain_username
    if kafka.sasl_plain_password is not None:
        opts["sasl_plain_password"] = kafka.sasl_plain_password.get_secret_value()
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_check_hostname"] = kafka.ssl_check_hostname
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(kafka, key)
            if value is not None:
                opts[key] = str(value)
        if kafka.ssl_password is not None:
            opts["ssl_password"] = kafka.ssl_password.get_secret_value()
    return opts


class KafkaSource:
    """A consumer-group member on the predictions and labels topics."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._settings = kafka
        self._kinds: dict[str, Kind] = {kafka.predictions_topic: "prediction",
                                        kafka.labels_topic: "label"}
        self._consumer: KafkaConsumer | None = None
        #: positions from a checkpoint, applied when those partitions are first assigned
        self._resume: dict[tuple[str, int], int] = {}
        #: next offset this process has handed out per partition: a message below it was
        #: already applied, and comes again only because its commit failed (a rebalance,
        #: an outage); it is skipped, so nothing is counted twice
        self._applied: dict[Any, int] = {}

    def resume_from(self, offsets: dict[tuple[str, int], int]) -> None:
        """Start these partitions at these offsets (a checkpoint's), not at the group's."""
        self._resume = dict(offsets)
        self._applied.clear()

    def positions(self) -> dict[tuple[str, int], int]:
        """The next offset to read of every assigned partition."""
        c = self._consumer
        out = {}
        if c is not None:
            for tp in c.assignment():
                try:
                    out[(tp.topic, tp.partition)] = c.position(tp, timeout_ms=5000)
                except KafkaError:
                    continue
        return out

    def open(self) -> None:
        """Connect and subscribe. Raises ``SourceUnavailable`` while no broker answers
        (the caller retries) and ``SourceError`` on settings that can never work."""
        k = self._settings
        try:
            consumer = KafkaConsumer(
                **client_options(k),
                group_id=k.group_id,
                enable_auto_commit=False,
                auto_offset_reset=k.auto_offset_reset,
                session_timeout_ms=k.session_timeout_ms,
                heartbeat_interval_ms=k.heartbeat_interval_ms,
                max_poll_records=k.max_poll_records,
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            )
        except _FATAL as exc:
            raise SourceError(f"Kafka settings rejected: {exc}") from exc
        except KafkaTimeoutError as exc:
            raise SourceUnavailable(f"no broker answers at {k.bootstrap_servers}") from exc
        consumer.subscribe(list(self._kinds), listener=_Resume(self, consumer))
        self._consumer = consumer

    def poll(self) -> list[Record]:
        """The next batch (possibly empty) from every assigned partition."""
        assert self._consumer is not None, "open() first"
        try:
            batches = self._consumer.poll(timeout_ms=self._settings.poll_timeout_ms)
        except _FATAL as exc:
            raise SourceError(f"Kafka consumer failed: {exc}") from exc
        kinds, applied = self._kinds, self._applied
        records = []
        for tp, messages in batches.items():
            kind = kinds[tp.topic]
            seen = applied.get(tp, -1)
            fresh = [m for m in messages if m.offset >= seen]
            if len(fresh) < len(messages):
                log.info("redelivered_skipped", extra={"fields": {
                    "topic": tp.topic, "partition": tp.partition,
                    "messages": len(messages) - len(fresh), "applied_up_to": seen}})
            for m in fresh:
                ts = m.timestamp / 1000.0 if m.timestamp is not None and m.timestamp >= 0 else None
                records.append(Record(kind, m.value, ts, tp.topic, tp.partition, m.offset))
            if fresh:
                applied[tp] = fresh[-1].offset + 1
        return records

    def commit(self) -> bool:
        """Commit the positions of everything polled so far. False if a rebalance
        took the partitions away first (their new owner re-reads the batch)."""
        assert self._consumer is not None
        try:
            self._consumer.commit()
            return True
        except CommitFailedError as exc:
            log.warning("commit_failed", extra={"fields": {"error": str(exc)}})
            return False
        except KafkaError as exc:
            log.warning("commit_failed", extra={"fields": {"error": repr(exc)}})
            return False

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages between our position and the partition end, from fetch metadata (no I/O)."""
        c = self._consumer
        if c is None:
            return {}
        out = {}
        for tp in c.assignment():
            try:
                high = c.highwater(tp)
                pos = c.position(tp, timeout_ms=0) if high is not None else None
            except KafkaError:
                continue
            if high is not None and pos is not None:
                out[(tp.topic, tp.partition)] = max(0, high - pos)
        return out

    def connected(self) -> bool:
        """True while the client holds at least one live broker connection."""
        c = self._consumer
        if c is None:
            return False
        for group in c.metrics().values():
            if isinstance(group, dict) and group.get("connection-count", 0) > 0:
                return True
        return False

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None


class _Resume(ConsumerRebalanceListener):
    """Seeks newly assigned partitions to the checkpoint's positions, once."""

    def __init__(self, source: KafkaSource, consumer: KafkaConsumer) -> None:
        self._source, self._consumer = source, consumer

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        for tp in assigned:
            offset = self._source._resume.pop((tp.topic, tp.partition), None)
            if offset is not None:
                self._consumer.seek(tp, offset)
                log.info("resumed_from_checkpoint", extra={"fields": {
                    "topic": tp.topic, "partition": tp.partition, "offset": offset}})


class FileSource:
    """Replay JSONL files in batches: one event per line; lines with a ``features``
    field are predictions, the others labels."""

    def __init__(self, paths: Iterable[str | Path], batch_size: int = 2000) -> None:
        self._paths = [Path(p) for p in paths]
        self._batch_size = batch_size

    def batches(self) -> Iterator[list[Record]]:
        batch: list[Record] = []
        for path in self._paths:
            with path.open("rb") as fh:
                for line in fh:
                    line = line.rstrip(b"\r\n")
                    if not line:
                        continue
                    kind: Kind = "prediction" if b'"features"' in line else "label"
                    batch.append(Record(kind, line))
                    if len(batch) >= self._batch_size:
                        yield batch
                        batch = []
        if batch:
            yield batch


def wait_for_broker(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until the broker answers a metadata request, or raise ``SourceError``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:  # first the TCP port, quietly
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError as exc:
            last = exc
            time.sleep(0.02)
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000,
                                     bootstrap_timeout_ms=2000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.05)
    raise SourceError(f"broker {bootstrap} not ready after {timeout:.0f} s: {last!r}")


def create_topics(kafka: KafkaSettings, names: Iterable[str], partitions: int = 1) -> None:
    """Create topics that do not exist yet."""
    admin = KafkaAdminClient(**client_options(kafka))
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, num_partitions=partitions, replication_factor=1)
               for n in names if n not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def producer(kafka: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer with batching suited to bulk event streams (demo, tests, benchmarks)."""
    opts = {"linger_ms": 20, "batch_size": 1 << 20, **overrides}
    return KafkaProducer(**client_options(kafka), **opts)


class TopicSink:
    """Publishes messages to one topic and waits until the broker has them. The
    service calls it before committing the batch's offsets, so a crash can repeat a
    message but never lose one. Used for drift events (retraining hook) and for
    dead letters (rejected messages, reason in the headers)."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.topic = topic
        self._producer = KafkaProducer(**client_options(kafka), linger_ms=5, acks="all")

    def publish(self, messages: Iterable[tuple[str | None, bytes, list[tuple[str, bytes]]]]
                ) -> None:
        for key, value, headers in messages:
            self._producer.send(self.topic, key=key.encode() if key else None, value=value,
                                headers=headers or None)
        self._producer.flush(timeout=30)

    def close(self) -> None:
        self._producer.close(timeout=5)


class KafkaCheckpointStore:
    """A checkpoint kept on a compacted Kafka topic instead of a volume.

    The sealed checkpoint is cut into parts of ``PART`` bytes under keys
    ``NAME/GENERATION/i``; a manifest under ``NAME`` (generation, part count, SHA-256)
    is written only after every part is acknowledged, so a crash mid-write leaves the
    previous checkpoint whole. The previous generation's parts are then deleted with
    tombstones, so compaction keeps one checkpoint per name.
    """

    PART = 512 * 1024

    def __init__(self, kafka: KafkaSettings, topic: str, name: str, timeout: float = 60.0) -> None:
        self._kafka, self.topic, self.name, self._timeout = kafka, topic, name, timeout
        self._previous: tuple[int, int] | None = None
        self._producer: KafkaProducer | None = None

    def __str__(self) -> str:
        return f"topic {self.topic} key {self.name}"

    def _ensure_topic(self) -> None:
        admin = KafkaAdminClient(**client_options(self._kafka))
        try:
            if self.topic not in admin.list_topics():
                try:
                    admin.create_topics([NewTopic(self.topic, num_partitions=1,
                                                  replication_factor=1,
                                                  topic_configs={"cleanup.policy": "compact"})])
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()

    def read(self) -> bytes | None:
        self._ensure_topic()
        consumer = KafkaConsumer(**client_options(self._kafka), enable_auto_commit=False,
                                 group_id=None)
        latest: dict[str, bytes] = {}
        try:
            partitions = consumer.partitions_for_topic(self.topic) or {0}
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            deadline = time.monotonic() + self._timeout
            while any(consumer.position(tp) < end[tp] for tp in tps):
                if time.monotonic() > deadline:
                    raise CheckpointError(f"checkpoint {self}: could not read the topic to its "
                                          f"end in {self._timeout:.0f} s")
                for messages in consumer.poll(timeout_ms=500).values():
                    for m in messages:
                        key = m.key.decode(errors="replace") if m.key else ""
                        if key == self.name or key.startswith(self.name + "/"):
                            if m.value is None:
                                latest.pop(key, None)
                            else:
                                latest[key] = m.value
        finally:
            consumer.close()
        if self.name not in latest:
            return None
        manifest = json.loads(latest[self.name])
        generation, count = int(manifest["generation"]), int(manifest["parts"])
        parts = [latest.get(f"{self.name}/{generation}/{i}") for i in range(count)]
        if any(p is None for p in parts):
            raise CheckpointError(f"checkpoint {self}: incomplete, parts are missing")
        blob = b"".join(parts)
        if hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
            raise CheckpointError(f"checkpoint {self}: parts do not match the manifest")
        self._previous = (generation, count)
        return blob

    def write(self, blob: bytes) -> int:
        if self._producer is None:
            self._ensure_topic()
            self._producer = KafkaProducer(**client_options(self._kafka), acks="all",
                                           linger_ms=5, max_request_size=self.PART + 65_536)
        prod = self._producer
        generation = time.time_ns()
        parts = [blob[i:i + self.PART] for i in range(0, len(blob), self.PART)] or [b""]
        for i, part in enumerate(parts):
            prod.send(self.topic, key=f"{self.name}/{generation}/{i}".encode(), value=part)
        prod.flush(timeout=self._timeout)
        manifest = {"generation": generation, "parts": len(parts),
                    "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        prod.send(self.topic, key=self.name.encode(), value=json.dumps(manifest).encode())
        prod.flush(timeout=self._timeout)
        if self._previous is not None:
            old_generation, old_count = self._previous
            for i in range(old_count):
                prod.send(self.topic, key=f"{self.name}/{old_generation}/{i}".encode(),
                          value=None)
            prod.flush(timeout=self._timeout)
        self._previous = (generation, len(parts))
        return len(blob)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
