"""KafkaStore against the real brokers (Tansu and the persisting noida-db): round trips,
multi-part blobs, a crash between parts and manifest, hostile manifests, the cost of the
backward scan, a broker that refuses the topic, and a broker that is stopped."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from detector.broker import Noida
from detector.config import KafkaSettings
from detector.sources import producer
from detector.stores import MANIFEST_FORMAT, KafkaStore, StoreError
from tests.conftest import kill, read_topic, wait_for

pytestmark = pytest.mark.integration


def new_topic() -> str:
    return f"state-{uuid.uuid4().hex[:8]}"


_OPENED: list[KafkaStore] = []


@pytest.fixture(autouse=True)
def close_stores() -> Iterator[None]:
    """Every store a test opened is closed when it ends, passed or failed."""
    yield
    while _OPENED:
        _OPENED.pop().close()


def store_at(bootstrap: str, topic: str, **kw: object) -> KafkaStore:
    store = KafkaStore(KafkaSettings(bootstrap_servers=bootstrap), topic, None,
                       **{"timeout_s": 15.0, **kw})
    _OPENED.append(store)
    return store


def produce_raw(bootstrap: str, topic: str, records: list[tuple[str, bytes | None]]) -> None:
    """Records written as a foreign or crashing writer would, acknowledged by the broker."""
    prod = producer(KafkaSettings(bootstrap_servers=bootstrap), acks="all")
    for key, value in records:
        prod.send(topic, key=key.encode(), value=value, partition=0).get(timeout=15)
    prod.close()


def test_round_trip_of_several_keys_with_multi_part_blobs(broker) -> None:
    topic = new_topic()
    store = store_at(broker.bootstrap, topic)
    assert store.read(["0", "1"]) == {}                     # creates the topic; nothing yet
    first = {"0": os.urandom(1_300_000), "1": b"", "2": b"partition two"}
    assert store.write(first) == 1_300_013
    assert store.write({"0": b"zero, newer"}) == 11
    store.close()

    fresh = store_at(broker.bootstrap, topic)
    assert fresh.read(["0", "1", "2", "3"]) == {"0": b"zero, newer", "1": b"",
                                                "2": b"partition two"}
    fresh.close()
    records = read_topic(broker.bootstrap, topic)
    tombstones = sorted(m.key.decode() for m in records if m.value is None)
    assert len(tombstones) == 3 and all(k.startswith("0/") for k in tombstones)  # 3 old parts
    assert max(len(m.value or b"") for m in records) <= KafkaStore.PART


def test_a_blob_over_max_bytes_is_refused_before_anything_is_written(broker) -> None:
    topic = new_topic()
    store = store_at(broker.bootstrap, topic, max_bytes=1000)
    store.write({"0": b"fits"})
    with pytest.raises(StoreError) as err:
        store.write({"0": b"x" * 1001, "1": b"small"})
    assert err.value.reason == "too_large"
    assert store_at(broker.bootstrap, topic).read(["0", "1"]) == {"0": b"fits"}


def test_crash_between_parts_and_manifest_reads_the_previous_generation(broker) -> None:
    topic = new_topic()
    store = store_at(broker.bootstrap, topic)
    store.write({"0": b"complete generation", "1": b"other key"})
    store.close()
    # a writer killed after its parts were acknowledged, before its manifest
    orphans = [(f"0/{time.time_ns()}/{i}", os.urandom(KafkaStore.PART)) for i in range(2)]
    produce_raw(broker.bootstrap, topic, orphans)

    restarted = store_at(broker.bootstrap, topic)
    assert restarted.read(["0", "1"]) == {"0": b"complete generation", "1": b"other key"}
    restarted.write({"0": b"next generation"})       # and its next write deletes the orphans
    assert store_at(broker.bootstrap, topic).read(["0"]) == {"0": b"next generation"}
    tombstones = {m.key.decode() for m in read_topic(broker.bootstrap, topic) if m.value is None}
    assert {name for name, _ in orphans} <= tombstones


def manifest(**fields: object) -> bytes:
    good = {"format": MANIFEST_FORMAT, "generation": 1, "parts": 1, "bytes": 10,
            "sha256": hashlib.sha256(b"0123456789").hexdigest()}
    return json.dumps({**good, **fields}).encode()


hostile_json = st.fixed_dictionaries(
    {"format": st.sampled_from([MANIFEST_FORMAT, "other/1", None, 1])},
    optional={name: st.one_of(st.integers(-2**70, 2**70), st.floats(), st.text(max_size=5),
                              st.none(), st.booleans(), st.lists(st.integers(), max_size=3))
              for name in ("generation", "parts", "bytes", "sha256")},
).map(lambda d: json.dumps(d).encode())


def test_hostile_manifests_are_malformed_per_key_and_the_next_write_supersedes_them(
        broker) -> None:
    topic = new_topic()
    writer = store_at(broker.bootstrap, topic)
    writer.write({"ok": b"a good blob", "bad": b"will be shadowed"})

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.one_of(st.binary(max_size=300), hostile_json))
    @example(b"garbage")
    @example(b'{"foo":1}')
    @example(manifest(parts=50_000_000))
    @example(manifest(parts=-1, bytes=-5))
    @example(manifest(bytes=2**40, parts=2**21))                 # over max_bytes
    @example(manifest(generation=1.5))
    @example(manifest())                                          # its part never existed
    @example(b"[" * 5000)
    @example(b"[" * 4000)                                       # nests past the recursion limit
    def check(raw: bytes) -> None:
        produce_raw(broker.bootstrap, topic, [("bad", raw)])
        found = store_at(broker.bootstrap, topic).read(["ok", "bad"])
        assert found["ok"] == b"a good blob"
        assert isinstance(found["bad"], StoreError) and found["bad"].reason == "malformed"

    check()
    writer.write({"bad": b"superseded"})
    assert store_at(broker.bootstrap, topic).read(["ok", "bad"]) == {
        "ok": b"a good blob", "bad": b"superseded"}


def forged(blob: bytes, parts: list[bytes | None], generation: int = 5
           ) -> list[tuple[str, bytes | None]]:
    """Parts as given, then a manifest that is right for ``blob``."""
    return [*((f"k/{generation}/{i}", part) for i, part in enumerate(parts)),
            ("k", manifest(generation=generation, parts=-(-len(blob) // KafkaStore.PART),
                           bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest()))]


@pytest.mark.parametrize("case", ["bit_flipped", "part_too_long", "part_deleted",
                                  "part_missing", "parts_of_another_generation"])
def test_parts_that_do_not_match_their_manifest_are_malformed(broker, case: str) -> None:
    topic = new_topic()
    store_at(broker.bootstrap, topic).write({"ok": b"fine"})
    blob = os.urandom(KafkaStore.PART + 100)
    first, second = blob[:KafkaStore.PART], blob[KafkaStore.PART:]
    records = {
        "bit_flipped": forged(blob, [first, bytes([second[0] ^ 1]) + second[1:]]),
        "part_too_long": forged(blob, [first + second, b""]),
        "part_deleted": [*forged(blob, [first, second]), ("k/5/1", None)],
        "part_missing": forged(blob, [first]),
        "parts_of_another_generation": [("k/4/0", first), ("k/4/1", second),
                                        *forged(blob, [])],
    }[case]
    produce_raw(broker.bootstrap, topic, records)
    found = store_at(broker.bootstrap, topic).read(["ok", "k"])
    assert found["ok"] == b"fine"
    assert isinstance(found["k"], StoreError) and found["k"].reason == "malformed", found["k"]


def test_the_newest_manifest_wins_when_two_writers_overlap(broker) -> None:
    """A rebalance can leave the old owner writing a partition the new owner has
    read: whatever the order, the newest manifest is read whole."""
    topic = new_topic()
    old_owner, new_owner = store_at(broker.bootstrap, topic), store_at(broker.bootstrap, topic)
    old_owner.write({"3": os.urandom(700_000)})
    assert new_owner.read(["3"])["3"]
    new_owner.write({"3": b"new owner"})             # deletes the old owner's parts
    last = os.urandom(600_000)
    old_owner.write({"3": last})                      # the old owner, late
    assert store_at(broker.bootstrap, topic).read(["3"]) == {"3": last}
    new_owner.write({"3": b"new owner again"})
    assert store_at(broker.bootstrap, topic).read(["3"]) == {"3": b"new owner again"}


def test_a_manifest_announcing_50_million_parts_costs_no_memory(broker) -> None:
    topic = new_topic()
    store_at(broker.bootstrap, topic).write({"ok": b"fine"})
    produce_raw(broker.bootstrap, topic, [("0", manifest(parts=50_000_000,
                                                         bytes=50_000_000 * KafkaStore.PART))])
    store = store_at(broker.bootstrap, topic)
    tracemalloc.start()
    started = time.monotonic()
    found = store.read(["0", "ok"])
    elapsed = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert found["ok"] == b"fine" and found["0"].reason == "malformed"
    assert peak < 8 * 2**20 and elapsed < 2, (peak, elapsed)
    print(f"\n'parts': 50000000 refused in {elapsed * 1000:.0f} ms, peak {peak / 2**20:.1f} MiB")


def timed_read(bootstrap: str, topic: str, newest: dict[str, bytes]) -> tuple[float, int]:
    """Median seconds of three reads by fresh stores (a restart each), records scanned."""
    times, scanned = [], 0
    for _ in range(3):
        store = store_at(bootstrap, topic)
        store.read(list(newest)[:1])   # the topic is checked: time only the scan
        started = time.monotonic()
        found = store.read(list(newest))
        times.append(time.monotonic() - started)
        scanned = store.scanned
        assert found == newest
    return statistics.median(times), scanned


def test_reading_1000_old_checkpoints_costs_what_reading_one_does(broker) -> None:
    keys = [str(p) for p in range(6)]
    one, many = new_topic(), new_topic()
    newest_one = {k: os.urandom(2000) for k in keys}
    store_at(broker.bootstrap, one).write(newest_one)
    writer = store_at(broker.bootstrap, many)
    for _ in range(1000):
        newest = {k: os.urandom(2000) for k in keys}
        writer.write(newest)
    records = len(read_topic(broker.bootstrap, many))

    t_one, scanned_one = timed_read(broker.bootstrap, one, newest_one)
    t_many, scanned_many = timed_read(broker.bootstrap, many, newest)
    full = store_at(broker.bootstrap, many)
    started = time.monotonic()
    full.read(["never-written"])                      # has to reach the beginning
    t_full = time.monotonic() - started
    print(f"\n{type(broker).__name__}: 1 checkpoint: {t_one * 1000:.1f} ms "
          f"({scanned_one} records); 1,000 checkpoints ({records} records): "
          f"{t_many * 1000:.1f} ms ({scanned_many} records); whole topic: "
          f"{t_full * 1000:.0f} ms ({full.scanned} records)")
    assert scanned_many <= 2 * KafkaStore.CHUNK
    assert t_many < 3 * t_one + 0.05
    assert full.scanned >= records - 1 and t_full > t_many


def test_old_multi_part_checkpoints_are_not_held_in_memory(tansu) -> None:
    """On Tansu only: noida-db answers every fetch with the rest of the partition,
    whatever the fetch size limits say (measured: 114 MiB in one answer to a 1 MiB
    limit), so a client's memory there is bounded by the topic, not by the client."""
    broker = tansu
    topic = new_topic()
    writer = store_at(broker.bootstrap, topic)
    for i in range(100):                              # 100 x 600 KB, 2 parts each
        newest = os.urandom(600_000)
        writer.write({"0": newest})
    store = store_at(broker.bootstrap, topic)
    store.read(["0"])
    tracemalloc.start()
    found = store.read(["0", "never-written"])        # the whole topic, 60 MB of parts
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert found == {"0": newest}
    assert store.scanned >= 300 and peak < 20 * 2**20, (store.scanned, peak)
    print(f"\nwhole topic of 100 multi-part checkpoints read with a peak of "
          f"{peak / 2**20:.1f} MiB")


@pytest.mark.parametrize("size", [KafkaStore.PART - 1, KafkaStore.PART, KafkaStore.PART + 1,
                                  3 * KafkaStore.PART])
def test_blobs_at_part_boundaries_round_trip(broker, size: int) -> None:
    topic = new_topic()
    blob = os.urandom(size)
    store_at(broker.bootstrap, topic).write({"7": blob})
    assert store_at(broker.bootstrap, topic).read(["7"]) == {"7": blob}


def test_noida_creates_a_compacted_topic_and_refuses_an_impossible_one(noida) -> None:
    topic = new_topic()
    store_at(noida.bootstrap, topic).write({"0": b"x"})
    admin = KafkaAdminClient(bootstrap_servers=noida.bootstrap)
    try:
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        admin.close()
    assert configs["topic"][topic]["cleanup.policy"]["value"] == "compact"

    refused = KafkaStore(KafkaSettings(bootstrap_servers=noida.bootstrap), new_topic(),
                         replication_factor=3, timeout_s=10)   # one broker: cannot be met
    for attempt in (lambda: refused.write({"0": b"x"}), lambda: refused.read(["0"])):
        with pytest.raises(StoreError) as err:
            attempt()
        assert err.value.reason == "topic_refused"
        assert "InvalidReplicationFactor" in err.value.detail


def test_noida_an_existing_topic_without_compaction_is_reported(noida, caplog) -> None:
    topic = new_topic()
    admin = KafkaAdminClient(bootstrap_servers=noida.bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": 1,
                                     "configs": {"cleanup.policy": "delete"}}})
    finally:
        admin.close()
    with caplog.at_level("WARNING", logger="detector.stores"):
        store_at(noida.bootstrap, topic).write({"0": b"kept, for now"})
    warned = [r for r in caplog.records if r.msg == "store_topic_not_compacted"]
    assert warned and warned[0].fields["cleanup_policy"] == "delete"
    assert store_at(noida.bootstrap, topic).read(["0"]) == {"0": b"kept, for now"}


def test_noida_a_deleted_topic_is_reported_then_created_again_compacted(noida) -> None:
    topic = new_topic()
    store = store_at(noida.bootstrap, topic, timeout_s=3.0)
    store.write({"0": b"lost with the topic"})
    admin = KafkaAdminClient(bootstrap_servers=noida.bootstrap)
    try:
        admin.delete_topics([topic])
        wait_for(lambda: topic not in admin.list_topics(), 10, "the topic to go")
        with pytest.raises(StoreError) as err:     # not auto-created by the producer
            store.write({"0": b"after the deletion"})
        assert err.value.reason in ("timeout", "topic_missing")
        assert store.read(["0"]) == {}              # the store creates it again
        store.write({"0": b"after the deletion"})
        assert store_at(noida.bootstrap, topic).read(["0"]) == {"0": b"after the deletion"}
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        assert configs["topic"][topic]["cleanup.policy"]["value"] == "compact"
    finally:
        admin.close()


def test_a_topic_name_kafka_does_not_allow_is_refused(broker) -> None:
    with pytest.raises(StoreError) as err:
        store_at(broker.bootstrap, "no spaces allowed").write({"0": b"x"})
    assert err.value.reason == "topic_refused"


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_stopped_broker_is_a_timely_store_error_and_the_store_recovers(
        tmp_path: Path) -> None:
    with Noida(tmp_path / "noida-data") as broker:
        topic = new_topic()
        store = store_at(broker.bootstrap, topic, timeout_s=3.0)
        store.write({"0": b"before the outage"})
        broker.stop()
        # stop() returns when noida-db's launcher exits; its server closes a moment later
        wait_for(lambda: not port_open(broker.port), 10, "noida-db to close its port")
        for attempt in (lambda: store.write({"0": b"during"}), lambda: store.read(["0"]),
                        lambda: store_at(broker.bootstrap, topic, timeout_s=3.0).read(["0"])):
            started = time.monotonic()
            with pytest.raises(StoreError) as err:
                attempt()
            took = time.monotonic() - started
            assert err.value.reason in ("timeout", "unavailable"), err.value
            assert took < 3.0 + 5, took             # the store's bound, plus closing
            print(f"\n{err.value.reason} after {took:.1f} s: {err.value.detail[:120]}")
        broker.start()
        assert store.read(["0"]) == {"0": b"before the outage"}
        store.write({"0": b"after the outage"})
        assert store_at(broker.bootstrap, topic).read(["0"]) == {"0": b"after the outage"}


WRITER = """
import os, sys
from detector.config import KafkaSettings
from detector.stores import KafkaStore
store = KafkaStore(KafkaSettings(bootstrap_servers=sys.argv[1]), sys.argv[2], None)
store.write({"0": b"the complete checkpoint"})
print("written", flush=True)
store.write({"0": os.urandom(120 * KafkaStore.PART)})     # killed while its parts go out
print("not killed", flush=True)
"""


def test_a_writer_killed_between_parts_and_manifest_leaves_the_previous_checkpoint(
        broker) -> None:
    topic = new_topic()
    child = subprocess.Popen([sys.executable, "-c", WRITER, broker.bootstrap, topic],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "written\n"
        tail = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
        tp = TopicPartition(topic, 0)
        written = tail.end_offsets([tp])[tp]          # 2: the first write's part, manifest
        wait_for(lambda: tail.end_offsets([tp])[tp] > written, 30,
                 "the second write's first part")
        child.kill()                                      # SIGKILL mid-write
        child.wait()
        tail.close()
    finally:
        kill(child)
    keys = [m.key.decode() for m in read_topic(broker.bootstrap, topic)]
    landed = sum(1 for k in keys if k.count("/") == 2) - 1   # the first write had 1 part
    assert 0 < landed < 120 and keys.count("0") == 1, (landed, keys.count("0"))
    assert store_at(broker.bootstrap, topic).read(["0"]) == {"0": b"the complete checkpoint"}
    print(f"\nkilled after {landed} of 120 parts: the previous checkpoint is read")
