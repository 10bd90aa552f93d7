"""Event sources (Kafka consumer group, JSONL file) and the few Kafka admin and
producer helpers the demo and tests need. The only module that imports ``kafka``.

A source yields batches of ``Record``; the service applies a batch and only then
calls ``commit()``, so a crash replays at most the uncommitted batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice, repeat
from pathlib import Path
from typing import Any, Literal, get_args

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
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from kafka.net.sasl import get_sasl_mechanism
from kafka.util import ensure_valid_topic_name

from detector.config import KafkaSettings
from detector.errors import SourceError, SourceUnavailable
from detector.events import Kind
from detector.records import Record
from detector.state import CheckpointError

log = logging.getLogger(__name__)

#: Errors after which retrying the same settings cannot help: exit and let the
#: orchestrator (or the operator) act.
_FATAL = (KafkaConfigurationError,)
#: How long one connection attempt may take before the service logs and retries.
BOOTSTRAP_TIMEOUT_MS = 10_000
#: Kafka error codes of a SaslHandshake answer that mean "this listener does not do
#: SASL with this mechanism": UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE
_SASL_REFUSED = {33: "UNSUPPORTED_SASL_MECHANISM", 34: "ILLEGAL_SASL_STATE"}
#: SASL mechanisms whose credentials (username and password) check_listener tries
_PASSWORD_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})


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


def _names(missing: Iterable[str]) -> str:
    """``topic X does not exist`` or ``topics X, Y do not exist``.

    >>> _names(["labelz"]), _names(["a", "b"])
    ('topic labelz does not exist', 'topics a, b do not exist')
    """
    names = sorted(missing)
    if len(names) == 1:
        return f"topic {names[0]} does not exist"
    return f"topics {', '.join(names)} do not exist"


def check_listener(kafka: KafkaSettings, timeout: float = BOOTSTRAP_TIMEOUT_MS / 1000) -> None:
    """Before kafka-python connects: does a bootstrap server speak the configured
    ``security_protocol``? kafka-python reports a listener that does not (TLS against a
    plaintext port, SASL against a broker without it) only as a failed bootstrap, and
    retries for ever; against some brokers its TLS handshake even waits for ever.

    For ``SSL``/``SASL_SSL`` this makes a TLS handshake (certificates are not checked
    here: that stays kafka-python's job); if that fails, a plaintext ApiVersions request
    tells a plaintext Kafka listener (a mismatch) from a server that is just not there
    (a proxy without a backend, a broker starting). For ``SASL_*`` it then sends a
    SaslHandshake (Kafka API 17, v1) with ``sasl_mechanism`` and, for PLAIN and SCRAM,
    authenticates with the configured username and password (SaslAuthenticate, API 36):
    kafka-python, too, reports wrong credentials only as a failed connection. Raises
    ``SourceError`` naming the setting only on a definite answer: a refusal (of the
    mechanism or of the credentials), or a listener that answers in the other protocol;
    ``SourceUnavailable`` when no server answered at all or every attempt was cut short.
    One server that passes is enough."""
    proto = kafka.security_protocol
    if proto == "PLAINTEXT":
        return
    servers = [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()]
    fatal: str | None = None
    last = "no server accepts a connection"
    for server in servers:
        host, _, port = server.rpartition(":")
        address = (host.strip("[]"), int(port))
        try:
            sock = socket.create_connection(address, timeout=timeout)
        except OSError:
            continue                                   # unreachable: not a mismatch
        try:
            sock.settimeout(timeout)
            if proto in ("SSL", "SASL_SSL"):
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                try:
                    sock = ctx.wrap_socket(sock, server_hostname=host)
                except OSError as exc:        # SSLError, EOF, reset, timeout
                    last = f"TLS handshake with {server} failed: {exc}"
                    if _answers_plaintext(address, kafka.client_id, timeout):
                        fatal = (f"Kafka at {server} did not answer the TLS handshake but "
                                 f"answers without TLS: is kafka.security_protocol ({proto}) "
                                 "right? The listener is PLAINTEXT or SASL_PLAINTEXT")
                    continue
            if proto.startswith("SASL"):
                try:
                    problem = _sasl_handshake(sock, kafka.client_id, kafka.sasl_mechanism or "")
                except OSError as exc:        # EOF, reset, timeout: no answer to judge
                    last = f"SASL handshake with {server} got no answer: {exc}"
                    continue
                if problem is not None:
                    hint = (" The listener may use TLS (SSL, SASL_SSL)"
                            if proto == "SASL_PLAINTEXT" and "no Kafka answer" in problem else "")
                    fatal = (f"Kafka at {server} refused the SASL handshake ({problem}): is "
                             f"kafka.security_protocol ({proto}) right, and "
                             f"kafka.sasl_mechanism ({kafka.sasl_mechanism})?{hint}")
                    continue
                try:
                    problem = _sasl_authenticate(sock, kafka)
                except OSError as exc:
                    last = f"SASL authentication with {server} got no answer: {exc}"
                    continue
                if problem is not None:
                    fatal = (f"Kafka at {server} refused the credentials ({problem}): check "
                             f"kafka.sasl_plain_username ({kafka.sasl_plain_username}) and "
                             f"kafka.sasl_plain_password for kafka.sasl_mechanism "
                             f"({kafka.sasl_mechanism})")
                    continue
            return
        finally:
            sock.close()
    if fatal is not None:
        raise SourceError(fatal)
    raise SourceUnavailable(f"no broker answers at {kafka.bootstrap_servers} ({last})")


def _request(sock: socket.socket, api_key: int, version: int, correlation: int,
             client_id: str, body: bytes = b"") -> bytes | str:
    """Send one Kafka request (header v1) and read the answer: its body after the
    correlation id, or what makes it no Kafka answer. Raises ``OSError`` when the
    connection ends or times out first."""
    cid = client_id.encode()
    frame = struct.pack(">hhih", api_key, version, correlation, len(cid)) + cid + body
    sock.sendall(struct.pack(">i", len(frame)) + frame)
    size = struct.unpack(">i", _read_exactly(sock, 4))[0]
    if not 4 <= size <= 1 << 20:
        return f"no Kafka answer: a frame of {size} bytes"
    answer = _read_exactly(sock, size)
    if struct.unpack(">i", answer[:4])[0] != correlation:
        return "no Kafka answer: another correlation id"
    return answer[4:]


def _answers_plaintext(address: tuple[str, int], client_id: str, timeout: float) -> bool:
    """Whether ``address`` answers a plaintext ApiVersions (v0) request."""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.settimeout(timeout)
            return isinstance(_request(sock, 18, 0, 1, client_id), bytes)
    except OSError:
        return False


def _sasl_handshake(sock: socket.socket, client_id: str, mechanism: str) -> str | None:
    """Send a SaslHandshake v1 for ``mechanism``: None if the broker accepts it, else
    its refusal. Raises ``OSError`` when no answer comes."""
    raw = mechanism.encode()
    answer = _request(sock, 17, 1, 1, client_id, struct.pack(">h", len(raw)) + raw)
    if isinstance(answer, str):
        return answer
    if len(answer) < 2:
        return "no Kafka answer: too short"
    error = struct.unpack(">h", answer[:2])[0]
    if error == 0:
        return None
    offered = _strings(answer[2:])
    reason = f"{_SASL_REFUSED.get(error, f'Kafka error code {error}')} for {mechanism}"
    if mechanism not in offered:
        reason += f"; it offers {', '.join(offered) or 'no mechanism'}"
    return reason


def _sasl_authenticate(sock: socket.socket, kafka: KafkaSettings) -> str | None:
    """After an accepted SaslHandshake: authenticate with the configured username and
    password (PLAIN, SCRAM-SHA-256/512, through kafka-python's own mechanisms; other
    mechanisms are left to the client). None when the broker accepts them, else why
    not: its error (Kafka answers SASL_AUTHENTICATION_FAILED), a SCRAM server error
    (``e=unknown-user``), or an answer that is no step of the exchange. Raises
    ``OSError`` when no answer comes."""
    name = kafka.sasl_mechanism or ""
    if name not in _PASSWORD_MECHANISMS or kafka.sasl_plain_password is None:
        return None
    mechanism = get_sasl_mechanism(name)(
        sasl_mechanism=name, sasl_plain_username=kafka.sasl_plain_username or "",
        sasl_plain_password=kafka.sasl_plain_password.get_secret_value())
    correlation = 2
    while not mechanism.is_done():
        sent = mechanism.auth_bytes()
        answer = _request(sock, 36, 1, correlation, kafka.client_id,
                          struct.pack(">i", len(sent)) + sent)
        correlation += 1
        if isinstance(answer, str):
            return answer
        parsed = _authenticate_answer(answer)
        if isinstance(parsed, str):
            return parsed
        error, message, received = parsed
        if error:
            return f"{_AUTH_ERRORS.get(error, f'Kafka error code {error}')}: {message}"
        if received.startswith(b"e="):             # a SCRAM server error (RFC 5802)
            return received[2:].decode(errors="replace")
        try:
            mechanism.receive(received)
        except (ValueError, KeyError):             # kafka-python's SCRAM client
            return f"it answered {received[:40]!r}, no step of {name}"
    return None if mechanism.is_authenticated() else "not authenticated"


#: Kafka error codes of a SaslAuthenticate answer
_AUTH_ERRORS = {58: "SASL_AUTHENTICATION_FAILED", 34: "ILLEGAL_SASL_STATE"}


def _authenticate_answer(answer: bytes) -> tuple[int, str, bytes] | str:
    """A SaslAuthenticate v1 answer: error code, error message, the server's bytes; or
    what makes it no such answer.

    >>> _authenticate_answer(b"\\x00\\x3a\\x00\\x03bad\\xff\\xff\\xff\\xff" + bytes(8))
    (58, 'bad', b'')
    """
    try:
        error, size = struct.unpack(">hh", answer[:4])
        message = answer[4:4 + max(size, 0)].decode(errors="replace")
        pos = 4 + max(size, 0)
        length = struct.unpack(">i", answer[pos:pos + 4])[0]
    except struct.error:
        return "no Kafka answer: too short"
    return error, message, answer[pos + 4:pos + 4 + max(length, 0)]


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the broker")
        data += chunk
    return data


def _strings(raw: bytes) -> list[str]:
    """A Kafka ``ARRAY(STRING)`` (the mechanisms a broker offers); what cannot be
    parsed is left out.

    >>> _strings(b"\\x00\\x00\\x00\\x01\\x00\\x05PLAIN")
    ['PLAIN']
    """
    out = []
    if len(raw) < 4:
        return out
    count, pos = struct.unpack(">i", raw[:4])[0], 4
    for _ in range(max(0, min(count, 32))):
        if pos + 2 > len(raw):
            break
        size = struct.unpack(">h", raw[pos:pos + 2])[0]
        out.append(raw[pos + 2:pos + 2 + max(0, size)].decode(errors="replace"))
        pos += 2 + max(0, size)
    return out


def log_topic_changes(k: KafkaSettings, before: frozenset[str], now: frozenset[str]) -> None:
    """Log ``topic_missing`` for each configured topic that went missing (once), and
    ``topic_found`` for each that appeared: the same lines from either Kafka client."""
    setting = {k.predictions_topic: "kafka.predictions_topic",
               k.labels_topic: "kafka.labels_topic"}
    for topic in sorted(now - before):
        log.warning("topic_missing", extra={"fields": {
            "topic": topic, "setting": setting[topic], "bootstrap": k.bootstrap_servers,
            "action": f"not ready; not consuming it; looking again every "
                      f"{k.topic_check_seconds:g} s (kafka.missing_topics: fail exits "
                      "instead)"}})
    for topic in sorted(before - now):
        log.info("topic_found", extra={"fields": {"topic": topic, "action": "subscribing"}})


def matching(topics: Iterable[str], patterns: Iterable[re.Pattern[str]],
             exclude: Iterable[str] = ()) -> frozenset[str]:
    r"""The ``topics`` that one of ``patterns`` matches whole, but those in ``exclude``
    (the native predictions and labels topics).

    >>> sorted(matching(["seldon.ns.model.iris.inputs", "seldon.ns.model.iris.outputs",
    ...                  "seldon.ns.pipeline.p.inputs", "labels"],
    ...                 [re.compile(r"seldon\..*\.model\..*\.(inputs|outputs)")]))
    ['seldon.ns.model.iris.inputs', 'seldon.ns.model.iris.outputs']
    """
    patterns, skip = list(patterns), set(exclude)
    return frozenset(t for t in topics
                     if t not in skip and any(p.fullmatch(t) for p in patterns))


def log_input_topics(before: frozenset[str], now: frozenset[str]) -> None:
    """Log ``input_topics_changed`` when the topics the ``inputs`` patterns match change
    (a model server started writing a new model's topics): the same line from either
    Kafka client."""
    if before != now:
        log.info("input_topics_changed", extra={"fields": {
            "added": ",".join(sorted(now - before)), "removed": ",".join(sorted(before - now)),
            "topics": len(now)}})


class TopicWatch:
    """What both consumers keep of the cluster's topics: the configured ones missing,
    those the ``inputs`` patterns match, and the list subscribed to."""

    _settings: KafkaSettings
    _kinds: dict[str, Kind]
    _patterns: list[re.Pattern[str]]
    _missing: frozenset[str]
    _matched: frozenset[str]
    _subscribed: list[str]
    _next_topic_check: float

    def _to_subscribe(self, topics: frozenset[str]) -> list[str] | None:
        """From the cluster's ``topics``: log and record the configured topics missing
        (``topic_missing`` once per topic, then ``topic_found``) and the topics the
        ``inputs`` patterns match; return the topics to subscribe to when that list
        changed (those that exist), else None."""
        k = self._settings
        missing = frozenset(self._kinds) - topics
        matched = matching(topics, self._patterns, self._kinds)
        log_topic_changes(k, self._missing, missing)
        log_input_topics(self._matched, matched)
        self._missing, self._matched = missing, matched
        self._next_topic_check = time.monotonic() + k.topic_check_seconds
        present = [t for t in self._kinds if t not in missing] + sorted(matched)
        return present if present and present != self._subscribed else None


class KafkaSource(TopicWatch):
    """A consumer-group member on the predictions and labels topics, and on the topics
    that the regular expressions ``inputs`` match whole (a model server's request and
    response topics, see ``detector.formats``; their records have kind ``prediction``).
    Which topics match is looked at again every ``kafka.topic_check_seconds``, so a new
    model's topics are read without a restart."""

    def __init__(self, kafka: KafkaSettings, inputs: Iterable[str] = ()) -> None:
        self._settings = kafka
        self._kinds: dict[str, Kind] = {kafka.predictions_topic: "prediction",
                                        kafka.labels_topic: "label"}
        self._patterns = [re.compile(p) for p in inputs]
        #: topics the ``inputs`` patterns matched at the last look
        self._matched: frozenset[str] = frozenset()
        self._subscribed: list[str] = []
        self._consumer: KafkaConsumer | None = None
        #: positions from a checkpoint, applied when those partitions are first assigned
        self._resume: dict[tuple[str, int], int] = {}
        #: next offset this process has handed out per partition: a message below it was
        #: already applied, and comes again only because its commit failed (a rebalance,
        #: an outage); it is skipped, so nothing is counted twice
        self._applied: dict[Any, int] = {}
        #: topics held back by ``pause_topic``; partitions assigned later are paused too
        self._held: set[tuple[str, int]] = set()
        #: partitions the last poll may have left inside a fetched chunk (see pause_topic)
        self._mid_chunk: set[Any] = set()
        #: configured topics the cluster does not have (not subscribed until they appear)
        self._missing: frozenset[str] = frozenset()
        self._next_topic_check = 0.0

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
        """Connect and subscribe to the configured topics that exist. Raises
        ``SourceUnavailable`` while no broker answers (the caller retries) and
        ``SourceError`` on settings that can never work: rejected by kafka-python, a
        listener that does not speak the configured ``security_protocol`` (see
        ``check_listener``), or a missing topic with ``missing_topics: fail``.

        Topics are never created by consuming: the consumer asks for no automatic
        creation, and subscribes only to topics that a metadata request for *all*
        topics lists (some brokers, Tansu and noida-db among them, create a topic that
        a metadata request names even when asked not to)."""
        k = self._settings
        check_listener(k)
        try:
            consumer = KafkaConsumer(
                **client_options(k),
                group_id=k.group_id,
                enable_auto_commit=False,
                auto_offset_reset=k.auto_offset_reset,
                session_timeout_ms=k.session_timeout_ms,
                heartbeat_interval_ms=k.heartbeat_interval_ms,
                max_poll_records=k.max_poll_records,
                fetch_max_wait_ms=k.fetch_max_wait_ms,
                fetch_min_bytes=k.fetch_min_bytes,
                max_partition_fetch_bytes=k.max_partition_fetch_bytes,
                fetch_max_bytes=k.fetch_max_bytes,
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                allow_auto_create_topics=False,
            )
        except _FATAL as exc:
            raise SourceError(f"Kafka settings rejected: {exc}") from exc
        except KafkaTimeoutError as exc:
            raise SourceUnavailable(f"no broker answers at {k.bootstrap_servers}") from exc
        try:
            topics = consumer.topics()
        except KafkaError as exc:
            consumer.close(autocommit=False)
            raise SourceUnavailable(f"no topic list from {k.bootstrap_servers}: {exc}") from exc
        missing = frozenset(self._kinds) - topics
        if missing and k.missing_topics == "fail":
            consumer.close(autocommit=False)
            raise SourceError(f"{_names(missing)} at {k.bootstrap_servers} "
                              "(kafka.missing_topics: fail; check kafka.predictions_topic "
                              "and kafka.labels_topic)")
        self._consumer, self._subscribed = consumer, []
        self._found(topics)

    def missing_topics(self) -> frozenset[str]:
        """Configured topics the cluster did not have at the last look."""
        return self._missing

    def _found(self, topics: Iterable[str]) -> None:
        """From the cluster's ``topics`` (a metadata request for all topics): subscribe
        to the configured and matched topics that exist (``TopicWatch``)."""
        consumer = self._consumer
        assert consumer is not None
        present = self._to_subscribe(frozenset(topics))
        if present is not None:
            if self._subscribed:
                # kafka-python 3.0.12 sends the JoinGroup of a changed subscription, but
                # when the broker answers after poll's timeout (Tansu holds it ~1 s) no
                # later poll collects the answer: the member stays without partitions.
                # Leaving the group first makes the new subscription a fresh join.
                consumer.unsubscribe()
            consumer.subscribe(present, listener=_Resume(self, consumer))
            self._subscribed = present

    def poll(self) -> list[Record]:
        """The next batch (possibly empty) from every assigned partition."""
        assert self._consumer is not None, "open() first"
        if ((self._missing or self._patterns) and time.monotonic() >= self._next_topic_check
                and self.connected()):
            try:
                self._found(self._consumer.topics())
            except KafkaError as exc:
                log.warning("topic_check_failed", extra={"fields": {"error": repr(exc)}})
                self._next_topic_check = time.monotonic() + self._settings.topic_check_seconds
        if not self._subscribed:                    # no configured topic exists yet
            time.sleep(self._settings.poll_timeout_ms / 1000.0)
            return []
        try:
            batches = self._consumer.poll(timeout_ms=self._settings.poll_timeout_ms)
        except _FATAL as exc:
            raise SourceError(f"Kafka consumer failed: {exc}") from exc
        kinds, applied, held = self._kinds, self._applied, self._held
        full = sum(len(m) for m in batches.values()) >= self._settings.max_poll_records
        self._mid_chunk = set(batches) if full else set()
        records = []
        for tp, messages in batches.items():
            if (tp.topic, tp.partition) in held:   # not paused yet (see hold): later
                self._consumer.seek(tp, messages[0].offset)
                continue
            kind = kinds.get(tp.topic, "prediction")
            seen = applied.get(tp, -1)
            fresh = [m for m in messages if m.offset >= seen]
            if len(fresh) < len(messages):
                log.info("redelivered_skipped", extra={"fields": {
                    "topic": tp.topic, "partition": tp.partition,
                    "messages": len(messages) - len(fresh), "applied_up_to": seen}})
            for m in fresh:
                ts = m.timestamp / 1000.0 if m.timestamp is not None and m.timestamp >= 0 else None
                records.append(Record(kind, m.value, ts, tp.topic, tp.partition, m.offset,
                                      m.key, tuple(m.headers) if m.headers else None))
            if fresh:
                applied[tp] = fresh[-1].offset + 1
        if held:
            self._pause_held(self._consumer, self._consumer.assignment())
        return records

    def _pause_held(self, consumer: KafkaConsumer, partitions: Iterable[Any]) -> None:
        """Pause those of ``partitions`` (assigned) that are held, unless the last poll
        may have stopped inside their fetched chunk (see ``hold``)."""
        held = [tp for tp in partitions
                if (tp.topic, tp.partition) in self._held and tp not in self._mid_chunk]
        if held:
            consumer.pause(*held)

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
            behind = _behind(c, tp)
            if behind is not None:
                out[(tp.topic, tp.partition)] = behind
        return out

    def partition_lags(self, topic: str) -> dict[int, int | None]:
        """Messages not read yet per assigned partition of ``topic`` (no I/O); None while
        a partition's end is unknown (before its first fetch answer)."""
        c = self._consumer
        if c is None:
            return {}
        return {tp.partition: _behind(c, tp) for tp in c.assignment() if tp.topic == topic}

    def hold(self, partitions: set[tuple[str, int]]) -> None:
        """Hand out nothing from these ``(topic, partition)``s and stop fetching them
        (also once assigned after a rebalance); fetch and hand out every other one.

        Nothing is skipped: a paused partition's position stays put, and kafka-python
        keeps a fetch answer that arrives for it and uses it after the resume. Except
        in one case, which this avoids: kafka-python 3.0.12 never resumes a partition
        paused while ``poll`` was part-way through its fetched chunk
        (``Fetcher.fetched_records`` parks the chunk, and gives it back only when its
        ``_next_partition_records`` slot is ``None``, which it never is again). So a
        partition the last poll may have left inside a chunk (it returned records and
        the poll was full) is paused only after a later poll; until then what it returns
        is not handed out, and the partition is sought back to the first such record."""
        released, self._held = self._held - partitions, set(partitions)
        c = self._consumer
        if c is None:
            return
        assigned = c.assignment()
        resume = [tp for tp in assigned if (tp.topic, tp.partition) in released]
        if resume:
            c.resume(*resume)
        self._pause_held(c, assigned)

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
    """Seeks newly assigned partitions to the checkpoint's positions (once) and keeps
    the partitions of a paused topic paused."""

    def __init__(self, source: KafkaSource, consumer: KafkaConsumer) -> None:
        self._source, self._consumer = source, consumer

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        # new partitions start unpaused: hold back those of a paused topic
        self._source._pause_held(self._consumer, assigned)
        for tp in assigned:
            offset = self._source._resume.pop((tp.topic, tp.partition), None)
            if offset is not None:
                self._consumer.seek(tp, offset)
                log.info("resumed_from_checkpoint", extra={"fields": {
                    "topic": tp.topic, "partition": tp.partition, "offset": offset}})


def _behind(consumer: KafkaConsumer, tp: TopicPartition) -> int | None:
    """Messages between our position and the partition end, from fetch metadata, or
    None while either is unknown."""
    try:
        high = consumer.highwater(tp)
        pos = consumer.position(tp, timeout_ms=0) if high is not None else None
    except KafkaError:
        return None
    return None if high is None or pos is None else max(0, high - pos)


class FileSource:
    """Replay JSONL files in batches: one event per line; lines with a ``features``
    field are predictions, the others labels."""

    def __init__(self, paths: Iterable[str | Path], batch_size: int = 2000) -> None:
        self._paths = [Path(p) for p in paths]
        self._batch_size = batch_size

    def batches(self) -> Iterator[list[Record]]:
        size, make = self._batch_size, tuple.__new__
        rest = tuple(Record._field_defaults.values())     # every field after the value
        batch: list[Record] = []
        for path in self._paths:
            with path.open("rb") as fh:
                # a batch of lines at a time, each a Record built by tuple.__new__: the
                # named tuple's own __new__ is Python code and cost more than the rest
                while lines := list(islice(fh, size - len(batch))):
                    batch += [make(Record, ("prediction" if b'"features"' in line else "label",
                                            line) + rest)
                              for line in map(bytes.rstrip, lines, repeat(b"\r\n")) if line]
                    if len(batch) >= size:
                        yield batch
                        batch = []
        if batch:
            yield batch


def wait_for_broker(bootstrap: str, timeout: float = 30.0, metadata: bool = True) -> None:
    """Block until the broker answers a metadata request (``metadata`` False: until its
    port accepts connections, for a broker that answers only authenticated clients), or
    raise ``SourceError``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:  # first the TCP port, quietly
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            if not metadata:
                return
            break
        except OSError as exc:
            last = exc
            time.sleep(0.02)
    while metadata and time.monotonic() < deadline:
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


#: What became of a message handed to a ``TopicSink``: written, or why not.
SinkOutcome = Literal["written", "too_large", "topic_missing", "refused", "timeout"]
SINK_OUTCOMES: tuple[SinkOutcome, ...] = get_args(SinkOutcome)


def largest_message(kafka: KafkaSettings) -> int:
    """The largest message ``KafkaSource`` can receive, in bytes. A broker returns a
    record batch whole even when it exceeds the fetch sizes (KIP-74); kafka-python then
    only guards the response frame, at ``fetch_max_bytes + max_partition_fetch_bytes``.

    >>> largest_message(KafkaSettings()) // 2**20
    51
    """
    return kafka.fetch_max_bytes + kafka.max_partition_fetch_bytes


class TopicSink:
    """Publishes messages to one topic and waits until the broker has them. The
    service calls it before committing the batch's offsets, so a crash can repeat a
    message but never lose one; a message the broker does not take is counted, never
    lost in silence. Used for drift events (retraining hook, ``name``
    ``drift_events``) and for dead letters (rejected messages, reason in the headers,
    ``name`` ``dead_letter``).

    A message that cannot be written never stops the service: ``publish`` counts it
    under its reason (``SINK_OUTCOMES``) and logs ``sink_failed``, at most once per
    reason every ``LOG_EVERY_S`` seconds. The producer takes any message the source can
    receive, plus the dead letter's headers (``largest_message`` + ``HEADROOM``); a
    broker that keeps a lower limit refuses it as ``too_large``. After a
    ``topic_missing`` or ``timeout`` failure the sink skips messages for ``HOLD_S``
    seconds (counted under the same reason) instead of stalling every batch.

    On kafka-python; ``sources_confluent.ConfluentTopicSink`` is the same sink on
    librdkafka (``kafka.client: confluent``), which implements the client's part:
    ``_connect``, ``_send``, ``_wait``, ``_outcome`` and ``close``.
    """

    outcomes = SINK_OUTCOMES
    #: bytes a dead letter adds to the original message: headers (the detail is cut at
    #: 500 characters) and record framing
    HEADROOM = 64 * 1024
    #: how long ``send`` may wait for the topic's partitions (topic missing, no broker)
    METADATA_WAIT_MS = 5_000
    #: one produce request; the whole delivery of a record, retries included
    REQUEST_TIMEOUT_MS = 10_000
    DELIVERY_TIMEOUT_MS = 15_000
    FLUSH_S = 20.0
    HOLD_S = 30.0
    LOG_EVERY_S = 10.0

    def __init__(self, kafka: KafkaSettings, topic: str, name: str, *,
                 idempotent: bool = False, timeout_s: float | None = None,
                 hold_s: float | None = None) -> None:
        self._kafka = kafka
        self.topic = topic
        self.name = name
        #: the idempotent producer (no duplicates from its own retries) for callers that
        #: bound message sizes themselves: kafka-python takes a refused message as fatal
        self._idempotent = idempotent
        if timeout_s is not None:   # a caller waiting on publish (HTTP ingest) sets its bound
            self.FLUSH_S = timeout_s
            self.DELIVERY_TIMEOUT_MS = int(timeout_s * 900)
            self.REQUEST_TIMEOUT_MS = int(timeout_s * 600)
            self.METADATA_WAIT_MS = min(self.METADATA_WAIT_MS, int(timeout_s * 500))
        if hold_s is not None:
            self.HOLD_S = hold_s
        self._producer: KafkaProducer | None = None
        self._invalid_topic: str | None = None
        self._held: tuple[SinkOutcome, float] | None = None   # reason, until (monotonic)
        self._logged_at: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def open(self) -> None:
        """Create the topic if it is missing (as Kafka Connect does for its dead-letter
        queue; a refusal is logged, and publishing then counts what fails), then connect
        the producer. Raises ``SourceUnavailable`` while no broker answers."""
        opts = client_options(self._kafka)
        try:
            ensure_valid_topic_name(self.topic)
        except ValueError as exc:
            self._invalid_topic = str(exc)
            log.warning("sink_topic_invalid", extra={"fields": {
                "sink": self.name, "topic": self.topic, "error": str(exc),
                "action": "every message is counted as refused"}})
        try:
            if self._invalid_topic is None:
                self._ensure_topic(opts)
            self._producer = self._connect(opts)
        except _FATAL as exc:
            raise SourceError(f"Kafka settings rejected: {exc}") from exc
        except KafkaTimeoutError as exc:
            raise SourceUnavailable(f"no broker answers at {self._kafka.bootstrap_servers}") \
                from exc

    # The client's part (kafka-python here; sources_confluent.ConfluentTopicSink):
    # connect, send one message, wait for the acknowledgements, read one's outcome.

    def _connect(self, opts: dict[str, Any]) -> Any:
        # idempotence off by default: kafka-python's idempotent producer takes a refused
        # message (too large) as fatal and fails every later send
        return KafkaProducer(
            **opts, acks="all", linger_ms=5, enable_idempotence=self._idempotent,
            max_request_size=largest_message(self._kafka) + self.HEADROOM,
            max_block_ms=self.METADATA_WAIT_MS, request_timeout_ms=self.REQUEST_TIMEOUT_MS,
            delivery_timeout_ms=self.DELIVERY_TIMEOUT_MS,
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)

    def _send(self, key: str | None, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
        """Hand one message to the producer: a handle for ``_outcome``; raises
        ``NotSent`` if the producer refuses it at once."""
        try:
            return self._producer.send(self.topic, key=key.encode() if key else None,
                                       value=value, headers=headers or None)
        except MessageSizeTooLargeError as exc:
            raise NotSent("too_large", str(exc)) from None
        except KafkaTimeoutError as exc:   # no partitions for the topic in time
            raise NotSent("topic_missing", str(exc)) from None
        except KafkaError as exc:
            raise NotSent("refused", repr(exc)) from None

    def _wait(self) -> None:
        """Wait (at most ``FLUSH_S``) until every message sent so far is acknowledged or
        failed; what is not is counted as a timeout by ``_outcome``."""
        try:
            self._producer.flush(timeout=self.FLUSH_S)
        except KafkaTimeoutError:
            pass

    def _outcome(self, handle: Any) -> tuple[SinkOutcome, str]:
        return _delivery(handle, self.FLUSH_S)

    def _ensure_topic(self, opts: dict[str, Any]) -> None:
        admin = KafkaAdminClient(**opts, bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)
        try:
            if self.topic in admin.list_topics():
                return
            admin.create_topics([self.topic])   # the broker's default partitions, replicas
            log.info("sink_topic_created", extra={"fields": {"sink": self.name,
                                                             "topic": self.topic}})
        except TopicAlreadyExistsError:
            pass
        except KafkaError as exc:
            log.warning("sink_topic_not_created", extra={"fields": {
                "sink": self.name, "topic": self.topic, "error": repr(exc)[:300]}})
        finally:
            admin.close()

    def publish(self, messages: Iterable[tuple[str | None, bytes, list[tuple[str, bytes]]]]
                ) -> Counter[SinkOutcome]:
        """Send ``messages``, wait for the broker's acknowledgements (at most
        ``FLUSH_S``), and return how many ended in each outcome. Never raises for a
        message that cannot be written."""
        assert self._producer is not None, "open() first"
        outcomes: Counter[SinkOutcome] = Counter()
        sent = []
        for key, value, headers in messages:
            size = len(value) + sum(len(k) + len(v) for k, v in headers)
            reason, error = self._skipping(), "skipped"
            if reason is None:
                try:
                    sent.append((self._send(key, value, headers), size))
                    continue
                except NotSent as exc:
                    reason, error = exc.outcome, exc.error
            outcomes[reason] += 1
            self._failed(reason, size, error)
        if sent:
            self._wait()
            for handle, size in sent:
                outcome, error = self._outcome(handle)
                outcomes[outcome] += 1
                if outcome != "written":
                    self._failed(outcome, size, error)
        return outcomes

    def _skipping(self) -> SinkOutcome | None:
        """Why messages are skipped without a try right now, if they are.

        >>> sink = TopicSink(KafkaSettings(), "drift-dead-letters", "dead_letter")
        >>> sink._skipping() is None
        True
        >>> sink._failed("too_large", 2_000_000, "over the broker's limit")
        >>> sink._skipping() is None          # one message's fault: no hold
        True
        >>> sink._failed("topic_missing", 120, "no partitions within 5 s")
        >>> sink._skipping()                  # the next 30 s are skipped, and counted
        'topic_missing'
        """
        if self._invalid_topic is not None:
            return "refused"
        if self._held is not None and time.monotonic() < self._held[1]:
            return self._held[0]
        return None

    def _failed(self, reason: SinkOutcome, size: int, error: str) -> None:
        now = time.monotonic()
        if reason in ("topic_missing", "timeout") and self._skipping() is None:
            self._held = (reason, now + self.HOLD_S)
        if now - self._logged_at.get(reason, float("-inf")) < self.LOG_EVERY_S:
            self._unlogged[reason] += 1
            return
        self._logged_at[reason] = now
        log.warning("sink_failed", extra={"fields": {
            "sink": self.name, "reason": reason, "topic": self.topic, "size": size,
            "error": error[:300], "suppressed": self._unlogged.pop(reason, 0),
            "skipping_s": self.HOLD_S if reason in ("topic_missing", "timeout") else 0}})

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=5)
            except KafkaError as exc:   # records still unacknowledged after 5 s
                log.warning("sink_close_failed", extra={"fields": {
                    "sink": self.name, "topic": self.topic, "error": repr(exc)}})


class NotSent(Exception):
    """A message the producer refused at once, and the sink outcome that counts it."""

    def __init__(self, outcome: SinkOutcome, error: str) -> None:
        super().__init__(error)
        self.outcome, self.error = outcome, error


def _delivery(future: Any, waited: float) -> tuple[SinkOutcome, str]:
    """The outcome of one sent record after a flush of ``waited`` seconds, and the error
    if any.

    >>> from kafka import errors
    >>> from kafka.future import Future
    >>> for exc in (errors.MessageSizeTooLargeError, errors.UnknownTopicOrPartitionError,
    ...             errors.KafkaTimeoutError, errors.TopicAuthorizationFailedError):
    ...     print(_delivery(Future().failure(exc), 20)[0])
    too_large
    topic_missing
    timeout
    refused
    >>> _delivery(Future().success(None), 20), _delivery(Future(), 20)
    (('written', ''), ('timeout', 'not acknowledged within 20 s'))
    """
    if not future.is_done:
        return "timeout", f"not acknowledged within {waited:g} s"
    exc = future.exception
    if exc is None:
        return "written", ""
    if isinstance(exc, MessageSizeTooLargeError | RecordListTooLargeError):
        return "too_large", repr(exc)
    if isinstance(exc, UnknownTopicOrPartitionError):
        return "topic_missing", repr(exc)
    if isinstance(exc, KafkaTimeoutError):
        return "timeout", repr(exc)
    return "refused", repr(exc)


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
                    raise CheckpointError("unreadable", "could not read the topic to its "
                                          f"end in {self._timeout:.0f} s", str(self))
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
            raise CheckpointError("truncated", "incomplete, parts are missing", str(self))
        blob = b"".join(parts)
        if hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
            raise CheckpointError("checksum", "parts do not match the manifest", str(self))
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
