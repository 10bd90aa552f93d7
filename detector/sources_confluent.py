"""``ConfluentSource``: the consumer-group source on confluent-kafka (librdkafka), an
optional extra selected by ``kafka.client: confluent``. The only module that imports
``confluent_kafka``; it offers the service exactly what ``sources.KafkaSource`` does,
and ``ConfluentTopicSink`` what ``sources.TopicSink`` does.

librdkafka fetches in its own threads and keeps a prefetched queue per partition, so
this source never lets it decide what is committed: automatic commits and the
automatic offset store are off, and ``commit`` commits, synchronously, the offset after
the last record *handed out* by ``poll`` on each partition still assigned (the service
calls it only after applying the batch). Pausing a partition drops what was prefetched
for it, and resuming fetches again from the offset after the last record handed out, so
``hold`` is exact: nothing skipped, nothing repeated.

Settings map onto librdkafka's keys one for one (``librdkafka_config``); the checks
that do not depend on the client (``check_listener``, topics listed by a metadata
request for *all* topics, never created by consuming) are those of ``sources``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from detector.config import KafkaSettings
from detector.errors import SourceError, SourceUnavailable
from detector.events import Kind
from detector.logs import ThrottledLog
from detector.records import Record
from detector.sources import (
    BOOTSTRAP_TIMEOUT_MS,
    NotSent,
    PartitionKeeper,
    SinkOutcome,
    TopicSink,
    TopicWatch,
    _names,
    check_listener,
    largest_message,
)

log = logging.getLogger(__name__)

#: librdkafka's limit on one ``consume`` call
_MAX_BATCH = 1_000_000
#: how often librdkafka reports broker states (``connected``)
STATS_INTERVAL_MS = 1_000
#: how soon librdkafka fetches again for a partition whose prefetched queue was full
FETCH_QUEUE_BACKOFF_MS = 10
#: how long a blocking request (topic list, committed offsets, commit) may take
REQUEST_TIMEOUT_S = 10.0


def librdkafka_config(kafka: KafkaSettings) -> dict[str, Any]:
    """librdkafka configuration of the consumer for ``kafka``: the same connection,
    security, session and fetch settings ``KafkaSource`` gives kafka-python.

    >>> from pydantic import SecretStr
    >>> conf = librdkafka_config(KafkaSettings(
    ...     bootstrap_servers="a:9092, b:9092", security_protocol="SASL_SSL",
    ...     sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="u",
    ...     sasl_plain_password=SecretStr("p"), ssl_check_hostname=False, fetch_max_wait_ms=10))
    >>> conf["bootstrap.servers"], conf["sasl.mechanism"], conf["sasl.password"]
    ('a:9092,b:9092', 'SCRAM-SHA-512', 'p')
    >>> conf["ssl.endpoint.identification.algorithm"], conf["fetch.wait.max.ms"]
    ('none', 10)
    >>> conf["enable.auto.commit"], conf["enable.auto.offset.store"]
    (False, False)
    """
    conf: dict[str, Any] = {
        **connection_config(kafka),
        "group.id": kafka.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": kafka.auto_offset_reset,
        "allow.auto.create.topics": False,
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": kafka.heartbeat_interval_ms,
        "fetch.wait.max.ms": kafka.fetch_max_wait_ms,
        "fetch.min.bytes": kafka.fetch_min_bytes,
        "max.partition.fetch.bytes": kafka.max_partition_fetch_bytes,
        "fetch.max.bytes": kafka.fetch_max_bytes,
        # the largest message KafkaSource takes (KIP-74: a batch may exceed the fetch sizes)
        "receive.message.max.bytes": largest_message(kafka) + 512,
        # librdkafka wants fetch.max.bytes >= message.max.bytes (a producer limit)
        "message.max.bytes": min(1_000_000, kafka.fetch_max_bytes),
        # librdkafka stops fetching a partition whose prefetched queue is full and looks
        # again after this (default 1000 ms): a service that drains the queue faster sat
        # idle, ~140k instead of ~210k events/s with 3 µs of work per event (Tansu)
        "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        "statistics.interval.ms": STATS_INTERVAL_MS,
    }
    return conf


def connection_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The librdkafka settings of consumer and producer alike: brokers, client id,
    security (TLS, SASL)."""
    servers = [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()]
    conf: dict[str, Any] = {"bootstrap.servers": ",".join(servers),
                            "client.id": kafka.client_id,
                            "security.protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        conf["sasl.mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_plain_username:
        conf["sasl.username"] = kafka.sasl_plain_username
    if kafka.sasl_plain_password is not None:
        conf["sasl.password"] = kafka.sasl_plain_password.get_secret_value()
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        conf["ssl.endpoint.identification.algorithm"] = (
            "https" if kafka.ssl_check_hostname else "none")
        for key, name in (("ssl_cafile", "ssl.ca.location"),
                          ("ssl_certfile", "ssl.certificate.location"),
                          ("ssl_keyfile", "ssl.key.location")):
            value = getattr(kafka, key)
            if value is not None:
                conf[name] = str(value)
        if kafka.ssl_password is not None:
            conf["ssl.key.password"] = kafka.ssl_password.get_secret_value()
    return conf


def take(consumer: Consumer, n: int, timeout: float) -> list[Any]:
    """Up to ``n`` messages (or errors): at once what librdkafka has fetched already;
    when it has nothing, the first to arrive within ``timeout`` seconds and whatever
    came with it. As kafka-python's ``poll`` does: ``Consumer.consume(n, timeout)``
    instead waits for ``n`` messages or the whole timeout, which a batch that the
    fetcher has not filled yet always does (measured: half-second stalls)."""
    messages = consumer.consume(n, 0)
    if messages:
        return messages
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(n - 1, 0)] if n > 1 else [first]


class _ClientLog(ThrottledLog):
    """Where librdkafka's own log lines and error callbacks go: one line per facility
    (or error) every ``every`` seconds, with the number left out since. In an outage
    librdkafka reports every failed reconnect, several times a second."""

    def __init__(self, every: float = 10.0) -> None:
        super().__init__(log, every)

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """The ``logger`` interface confluent-kafka calls: ``fmt`` is
        ``"%s [%s] %s"`` with (facility, client name, message). At most WARNING: what
        stops the consumer comes as a fatal error (``SourceError``), and a failed
        reconnect is no error of ours."""
        facility = str(args[0]) if args else ""
        self.emit(min(level, logging.WARNING), "client_log", facility,
                  {"facility": facility, "message": (fmt % args)[:500]})


class ConfluentSource(TopicWatch):
    """A consumer-group member on the predictions and labels topics, on librdkafka.

    Behaves as ``sources.KafkaSource``: see there for ``inputs``, ``resume_from``,
    ``open``, ``missing_topics``, ``hold`` and the lag methods."""

    def __init__(self, kafka: KafkaSettings, inputs: Iterable[str] = ()) -> None:
        self._settings = kafka
        self._kinds: dict[str, Kind] = {kafka.predictions_topic: "prediction",
                                        kafka.labels_topic: "label"}
        self._patterns = [re.compile(p) for p in inputs]
        self._matched: frozenset[str] = frozenset()
        self._consumer: Consumer | None = None
        self._client_log = _ClientLog()
        #: keeps the state per partition (``keep_state``); None: nothing is kept
        self._keeper: PartitionKeeper | None = None
        #: next offset this process has handed out per partition: a message below it was
        #: already applied, and comes again only because its commit failed; it is skipped
        self._applied: dict[tuple[str, int], int] = {}
        #: offsets handed out and not committed yet (what ``commit`` commits)
        self._pending: dict[tuple[str, int], int] = {}
        #: the current assignment, with the partition objects the lag methods ask about
        self._assigned: dict[tuple[str, int], TopicPartition] = {}
        #: where each assigned partition started: checkpoint or committed offset
        self._start: dict[tuple[str, int], int] = {}
        self._held: set[tuple[str, int]] = set()
        self._missing: frozenset[str] = frozenset()
        self._subscribed: list[str] = []
        self._next_topic_check = 0.0
        self._connected = False
        self._fatal: KafkaError | None = None
        #: what the keeper raised while partitions came (the next poll raises it)
        self._fatal_keeper: Exception | None = None
        #: True only inside ``poll``: a revocation there may commit what was handed out
        #: before (all applied by then); one during ``close`` must not
        self._polling = False

    def keep_state(self, keeper: PartitionKeeper) -> None:
        """As ``KafkaSource.keep_state``."""
        self._keeper = keeper

    def applied(self) -> dict[tuple[str, int], int]:
        """As ``KafkaSource.applied``."""
        return {key: o for key, o in self._applied.items() if key in self._assigned}

    def open(self) -> None:
        """Connect and subscribe to the configured topics that exist; raises as
        ``KafkaSource.open`` does (``SourceUnavailable`` while no broker answers,
        ``SourceError`` on settings that can never work)."""
        k = self._settings
        check_listener(k)
        conf = {**librdkafka_config(k), "logger": self._client_log,
                "error_cb": self._on_error, "stats_cb": self._on_stats}
        try:
            consumer = Consumer(conf)
        except KafkaException as exc:
            raise SourceError(f"Kafka settings rejected: {exc.args[0].str()}") from exc
        try:
            topics = self._topics(consumer, BOOTSTRAP_TIMEOUT_MS / 1000)
        except KafkaException as exc:
            consumer.close()
            raise SourceUnavailable(f"no topic list from {k.bootstrap_servers}: "
                                    f"{exc.args[0].str()}") from exc
        missing = frozenset(self._kinds) - topics
        if missing and k.missing_topics == "fail":
            consumer.close()
            raise SourceError(f"{_names(missing)} at {k.bootstrap_servers} "
                              "(kafka.missing_topics: fail; check kafka.predictions_topic "
                              "and kafka.labels_topic)")
        self._consumer, self._connected, self._subscribed = consumer, True, []
        self._found(topics)

    def missing_topics(self) -> frozenset[str]:
        """Configured topics the cluster did not have at the last look."""
        return self._missing

    @staticmethod
    def _topics(consumer: Consumer, timeout: float) -> frozenset[str]:
        """The topics a metadata request for all topics lists."""
        return frozenset(consumer.list_topics(timeout=timeout).topics)

    def _found(self, topics: frozenset[str]) -> None:
        """As ``KafkaSource._found``: subscribe to the configured and matched topics that
        exist (``TopicWatch``)."""
        consumer = self._consumer
        assert consumer is not None
        present = self._to_subscribe(topics)
        if present is not None:
            consumer.subscribe(present, on_assign=self._on_assign,
                               on_revoke=self._on_revoke, on_lost=self._on_lost)
            self._subscribed = present

    def poll(self) -> list[Record]:
        """The next batch (possibly empty) from every assigned partition."""
        consumer = self._consumer
        assert consumer is not None, "open() first"
        k = self._settings
        if ((self._missing or self._patterns) and time.monotonic() >= self._next_topic_check
                and self._connected):
            try:
                self._found(self._topics(consumer, REQUEST_TIMEOUT_S))
            except KafkaException as exc:
                log.warning("topic_check_failed", extra={"fields": {"error": str(exc)}})
                self._next_topic_check = time.monotonic() + k.topic_check_seconds
        if not self._subscribed:                       # no configured topic exists yet
            consumer.poll(k.poll_timeout_ms / 1000.0)  # serves callbacks (stats, errors)
            return []
        self._polling = True
        try:
            messages = take(consumer, min(k.max_poll_records, _MAX_BATCH),
                            k.poll_timeout_ms / 1000.0)
        except KafkaException as exc:
            raise SourceError(f"Kafka consumer failed: {exc.args[0].str()}") from exc
        finally:
            self._polling = False
        if self._fatal is not None:
            raise SourceError(f"Kafka consumer failed: {self._fatal.str()}")
        if self._fatal_keeper is not None:
            raise SourceError(f"cannot take over partitions: {self._fatal_keeper}") \
                from self._fatal_keeper
        kinds, applied, assigned = self._kinds, self._applied, self._assigned
        records: list[Record] = []
        append = records.append
        skipped: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
        # messages come in runs of one partition: look its state up once per run
        topic, partition, key, live, floor, kind = None, None, ("", -1), False, -1, None
        for m in messages:
            if m.error() is not None:
                self._message_error(m)
                continue
            t, p, offset = m.topic(), m.partition(), m.offset()
            if p != partition or t != topic:
                topic, partition, key = t, p, (t, p)
                # fetched before a revocation served in this same call: the new owner
                # reads it
                live = key in assigned
                # (a partition revoked and assigned again in this call comes again from
                # its committed offset: a later run of it may repeat an earlier one)
                floor = max(applied.get(key, -1), last.get(key, -2) + 1)
                kind = kinds.get(t, "prediction")
            if not live:
                continue
            if offset < floor:
                skipped[key] = skipped.get(key, 0) + 1
                continue
            ts_type, ts = m.timestamp()
            append(Record(kind, m.value(), ts / 1000.0
                          if ts_type != TIMESTAMP_NOT_AVAILABLE and ts >= 0 else None,
                          t, p, offset, m.key(), tuple(m.headers() or ()) or None))
            last[key] = offset
        for key, offset in last.items():
            applied[key] = self._pending[key] = offset + 1
        for (t, p), n in skipped.items():
            log.info("redelivered_skipped", extra={"fields": {
                "topic": t, "partition": p, "messages": n, "applied_up_to": applied[(t, p)]}})
        return records

    def _message_error(self, m: Any) -> None:
        err = m.error()
        if err.fatal():
            raise SourceError(f"Kafka consumer failed: {err.str()}")
        self._client_log.emit(logging.WARNING, "consumer_error", f"message:{err.name()}", {
            "error": err.name(), "detail": err.str()[:300], "topic": m.topic() or "",
            "partition": m.partition() if m.partition() is not None else -1})

    def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> bool:
        """Commit, synchronously, the offsets handed out since the last commit on the
        partitions still assigned, or these ``offsets`` (of partitions still assigned).
        False if the broker refused (a rebalance took the partitions away first: their
        new owner re-reads the batch); what was not committed is tried again with the
        next commit."""
        assert self._consumer is not None
        if offsets is not None:
            self._pending.update({k: o for k, o in offsets.items() if k in self._assigned})
            return self._commit(set(offsets) & set(self._assigned))
        return self._commit(set(self._pending) & set(self._assigned))

    def _commit(self, keys: set[tuple[str, int]]) -> bool:
        consumer = self._consumer
        if not keys or consumer is None:
            return True
        offsets = [TopicPartition(t, p, self._pending[(t, p)]) for t, p in keys]
        try:
            result = consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("commit_failed", extra={"fields": {"error": exc.args[0].str()}})
            return False
        failed = [tp for tp in result if tp.error is not None]
        for tp in result:
            if tp.error is None:
                del self._pending[(tp.topic, tp.partition)]
        if failed:
            log.warning("commit_failed", extra={"fields": {"error": "; ".join(
                f"{tp.topic}/{tp.partition}: {tp.error.str()}" for tp in failed)}})
            return False
        return True

    def _positions(self) -> dict[tuple[str, int], int | None]:
        """Next offset to read per assigned partition: after the last record handed
        out, else where the partition started; None while unknown (no commit to start
        from and no fetch answer yet)."""
        consumer, assigned = self._consumer, self._assigned
        if consumer is None or not assigned:
            return {}
        out: dict[tuple[str, int], int | None] = {}
        earliest = self._settings.auto_offset_reset == "earliest"
        for tp in consumer.position(list(assigned.values())):
            key = (tp.topic, tp.partition)
            pos = tp.offset if tp.offset >= 0 else self._start.get(key)
            if pos is None:           # no commit: where auto.offset.reset puts it
                low, high = consumer.get_watermark_offsets(assigned[key], cached=True)
                reset = low if earliest else high
                pos = reset if reset >= 0 else None
            out[key] = pos
        return out

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages between our position and the partition end, from fetch metadata (no I/O)."""
        return {key: n for key, n in self._behind(None).items() if n is not None}

    def partition_lags(self, topic: str) -> dict[int, int | None]:
        """Messages not read yet per assigned partition of ``topic`` (no I/O); None while
        a partition's end or our position is unknown (before its first fetch answer)."""
        return {p: n for (_, p), n in self._behind(topic).items()}

    def _behind(self, topic: str | None) -> dict[tuple[str, int], int | None]:
        consumer = self._consumer
        if consumer is None:
            return {}
        out: dict[tuple[str, int], int | None] = {}
        for key, pos in self._positions().items():
            if topic is not None and key[0] != topic:
                continue
            high = consumer.get_watermark_offsets(self._assigned[key], cached=True)[1]
            out[key] = None if pos is None or high < 0 else max(0, high - pos)
        return out

    def hold(self, partitions: set[tuple[str, int]]) -> None:
        """Hand out nothing from these ``(topic, partition)``s and stop fetching them
        (also once assigned after a rebalance); fetch and hand out every other one.
        librdkafka drops what it prefetched for a paused partition and fetches again
        from the next offset to hand out when it is resumed."""
        released, added = self._held - partitions, partitions - self._held
        self._held = set(partitions)
        consumer, assigned = self._consumer, self._assigned
        if consumer is None:
            return
        resume = [assigned[key] for key in released if key in assigned]
        pause = [assigned[key] for key in added if key in assigned]
        if resume:
            consumer.resume(resume)
        if pause:
            consumer.pause(pause)

    def connected(self) -> bool:
        """True while librdkafka holds at least one live broker connection (from its
        statistics, every ``STATS_INTERVAL_MS``)."""
        return self._consumer is not None and self._connected

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()            # leaves the group; nothing is committed here
        self._assigned.clear()

    # librdkafka's callbacks, all served inside ``consume``/``poll`` on this thread

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start partitions at a checkpoint's positions (once), else at the committed
        offsets, and keep the partitions of a held topic paused."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        try:
            committed = consumer.committed(partitions, timeout=REQUEST_TIMEOUT_S)
        except KafkaException as exc:     # positions stay unknown until the first record
            log.warning("committed_offsets_failed", extra={"fields": {"error": str(exc)}})
            committed = []
        for tp in committed:
            if tp.error is None and tp.offset >= 0:
                self._start[(tp.topic, tp.partition)] = tp.offset
        start: dict[tuple[str, int], int] = {}
        if self._keeper is not None:
            try:
                start = self._keeper.assigned(keys)
            except Exception as exc:  # noqa: BLE001 (librdkafka would only log it: stop)
                self._fatal_keeper = exc
        for tp, key in zip(partitions, keys, strict=True):
            offset = start.get(key)
            if offset is not None:
                tp.offset = offset
                self._start[key] = self._applied[key] = offset
                log.info("resumed_from_checkpoint", extra={"fields": {
                    "topic": tp.topic, "partition": tp.partition, "offset": offset}})
        consumer.assign(partitions)
        self._assigned.update({key: TopicPartition(*key) for key in keys})
        held = [tp for tp, key in zip(partitions, keys, strict=True) if key in self._held]
        if held:
            consumer.pause(held)
        log.info("partitions_assigned", extra={"fields": {
            "partitions": ",".join(f"{t}/{p}" for t, p in sorted(keys))}})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what was handed out from these partitions and not committed yet (all
        of it applied: ``poll`` is called again only after the batch), then let go."""
        keys = {(tp.topic, tp.partition) for tp in partitions}
        if self._keeper is not None:
            self._keeper.revoked(keys, {k: o for k, o in self.applied().items() if k in keys})
        elif self._polling:
            self._commit(keys & set(self._pending))
        self._forget(keys)
        log.info("partitions_revoked", extra={"fields": {
            "partitions": ",".join(f"{t}/{p}" for t, p in sorted(keys))}})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a revocation (session timed out): they may
        already have a new owner, so nothing is committed for them."""
        keys = {(tp.topic, tp.partition) for tp in partitions}
        if self._keeper is not None:
            self._keeper.revoked(keys, {k: o for k, o in self.applied().items() if k in keys},
                                 lost=True)
        self._forget(keys)
        log.warning("partitions_lost", extra={"fields": {
            "partitions": ",".join(f"{t}/{p}" for t, p in sorted(keys))}})

    def _forget(self, keys: set[tuple[str, int]]) -> None:
        for key in keys:
            if self._keeper is not None:    # their state left: nothing here is applied
                self._applied.pop(key, None)
            self._assigned.pop(key, None)
            self._start.pop(key, None)
            self._pending.pop(key, None)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._connected = False
        self._client_log.emit(logging.WARNING, "client_error", f"error:{err.name()}",
                              {"error": err.name(), "detail": err.str()[:300]})

    def _on_stats(self, raw: str) -> None:
        brokers = json.loads(raw).get("brokers", {})
        self._connected = any(b.get("state") == "UP" for b in brokers.values())


#: librdkafka's errors of a message, by the sink outcome that counts them (others:
#: ``refused``)
_OUTCOMES: dict[int, SinkOutcome] = {
    KafkaError.MSG_SIZE_TOO_LARGE: "too_large", KafkaError.INVALID_MSG_SIZE: "too_large",
    KafkaError.UNKNOWN_TOPIC_OR_PART: "topic_missing", KafkaError._UNKNOWN_TOPIC: "topic_missing",
    KafkaError._UNKNOWN_PARTITION: "topic_missing", KafkaError._MSG_TIMED_OUT: "timeout",
    KafkaError._TIMED_OUT: "timeout", KafkaError.REQUEST_TIMED_OUT: "timeout"}


def sink_outcome(err: KafkaError) -> SinkOutcome:
    """The sink outcome that counts a message librdkafka failed with ``err``.

    >>> [sink_outcome(KafkaError(code)) for code in (KafkaError.MSG_SIZE_TOO_LARGE,
    ...     KafkaError._UNKNOWN_TOPIC, KafkaError._MSG_TIMED_OUT,
    ...     KafkaError.TOPIC_AUTHORIZATION_FAILED)]
    ['too_large', 'topic_missing', 'timeout', 'refused']
    """
    return _OUTCOMES.get(err.code(), "refused")


class ConfluentTopicSink(TopicSink):
    """``sources.TopicSink`` on librdkafka: the same outcomes, holds, logs and timeouts
    (``message.timeout.ms`` is the delivery timeout); an idempotent sink uses
    librdkafka's idempotent producer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client_log = _ClientLog()

    def _connect(self, opts: dict[str, Any]) -> Producer:
        k = self._kafka
        conf = {**connection_config(k), "acks": "all", "enable.idempotence": self._idempotent,
                "linger.ms": 5, "message.max.bytes": largest_message(k) + self.HEADROOM,
                # keys to partitions as Java's and kafka-python's producers map them
                # (librdkafka's default hashes with CRC32): a label keyed by a request's
                # id lands on the partition number of the request's events
                "partitioner": "murmur2_random",
                "message.timeout.ms": self.DELIVERY_TIMEOUT_MS,
                "request.timeout.ms": self.REQUEST_TIMEOUT_MS,
                "topic.metadata.propagation.max.ms": self.METADATA_WAIT_MS,
                "logger": self._client_log,
                "error_cb": lambda err: self._client_log.emit(
                    logging.WARNING, "client_error", f"error:{err.name()}",
                    {"error": err.name(), "detail": err.str()[:300]})}
        try:
            producer = Producer(conf)
        except KafkaException as exc:
            raise SourceError(f"Kafka settings rejected: {exc.args[0].str()}") from exc
        try:
            producer.list_topics(self.topic, timeout=BOOTSTRAP_TIMEOUT_MS / 1000)
        except KafkaException as exc:
            raise SourceUnavailable(f"no broker answers at {k.bootstrap_servers}: "
                                    f"{exc.args[0].str()}") from exc
        return producer

    def _send(self, key: str | None, value: bytes, headers: list[tuple[str, bytes]]
              ) -> list[KafkaError | None]:
        """Hand one message to librdkafka: the list its delivery report is put in."""
        report: list[KafkaError | None] = []
        try:
            self._producer.produce(self.topic, value=value, key=key, headers=headers or None,
                                   on_delivery=lambda err, _msg: report.append(err))
        except BufferError as exc:          # librdkafka's queue is full
            raise NotSent("timeout", f"the producer's queue is full: {exc}") from None
        except KafkaException as exc:
            raise NotSent(sink_outcome(exc.args[0]), exc.args[0].str()) from None
        return report

    def _wait(self) -> None:
        self._producer.flush(self.FLUSH_S)  # serves the delivery reports

    def _outcome(self, handle: list[KafkaError | None]) -> tuple[SinkOutcome, str]:
        if not handle:
            return "timeout", f"not acknowledged within {self.FLUSH_S:g} s"
        err = handle[0]
        return ("written", "") if err is None else (sink_outcome(err), err.str())

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            left = producer.flush(5)
            if left:
                log.warning("sink_close_failed", extra={"fields": {
                    "sink": self.name, "topic": self.topic,
                    "error": f"{left} messages unacknowledged after 5 s"}})
