"""Catching up on a backlog joins labels like a steady stream does.

Label messages are small, so a consumer catching up on both topics reads the
labels topic far ahead of the predictions topic; without back-pressure the label
side of the join overflows and evicts labels whose predictions are still unread.
A broker may also answer a fetch with a whole partition, so that one topic is read
to its end before the other starts. The service holds back the topic that runs
ahead (``labels_paused``, ``predictions_paused``) until the other caught up, or
until nothing is left to catch up on (labels whose prediction never comes must not
stall the labels topic)."""

from __future__ import annotations

import json
import random

import pytest

from detector.sources import KafkaSource, producer
from detector.sources_confluent import ConfluentSource
from tests.conftest import Topics, sample, wait_for

#: the same tests on both consumers behind the service's ``Source`` interface
SOURCES = pytest.mark.parametrize("source_class", [KafkaSource, ConfluentSource],
                                  ids=["kafka-python", "confluent"])

MODEL = "fraud"
FEATURES = ("amount", "age", "balance", "tenure", "score_a", "score_b")


def _prediction(i: int, rng: random.Random, label: int | None = None) -> dict:
    event = {"model": MODEL, "model_version": "1", "prediction_id": f"p-{i:08d}",
             "features": {f: round(rng.gauss(0, 1), 6) for f in FEATURES},
             "prediction": i % 2, "score": round(rng.random(), 6)}
    if label is not None:
        event["label"] = label
    return event


def _label(i: int) -> dict:
    return {"model": MODEL, "prediction_id": f"p-{i:08d}", "label": i % 2}


def _join(m: dict) -> dict[str, float]:
    outcomes = ("matched", "expired", "orphan", "prediction_evicted", "label_evicted")
    return {o: sample(m, "drift_label_join_total", model=MODEL, outcome=o) for o in outcomes}


def _events(d, *names: str) -> list[dict]:
    return [r for r in d.log_records() if r.get("event") in names]


def _held_back(m: dict) -> dict[str, float]:
    return {k: sample(m, "drift_join_backpressure", kind=k) for k in ("prediction", "label")}


@SOURCES
def test_a_paused_topic_loses_and_repeats_nothing(
        topics: Topics, source_class: type[KafkaSource | ConfluentSource]) -> None:
    """The source's pause, whenever it comes (here inside a fetched chunk, where
    kafka-python 3.0.12 would never resume the partition), hands out every message
    once and in order after the resume, and nothing while paused."""
    n = 5000
    topics.produce(topics.predictions, (_prediction(i, random.Random(i)) for i in range(n)))
    topics.produce(topics.labels, (_label(i) for i in range(n)))
    settings = topics.kafka.model_copy(update={
        "session_timeout_ms": topics.session[0], "heartbeat_interval_ms": topics.session[1],
        "max_poll_records": 100, "fetch_max_wait_ms": 10})
    source = source_class(settings)
    source.open()
    seen: dict[str, list[int]] = {"prediction": [], "label": []}

    def read() -> int:
        batch = source.poll()
        for r in batch:
            seen[r.kind].append(r.offset)
        return len(batch)
    try:
        wait_for(lambda: read() and seen["label"], 60, "the first labels")
        source.hold({(topics.labels, 0)})
        paused_at = len(seen["label"])
        wait_for(lambda: read() == 0 and len(seen["prediction"]) == n, 60, "every prediction")
        assert len(seen["label"]) == paused_at
        source.hold(set())
        wait_for(lambda: read() >= 0 and len(seen["label"]) >= n, 60, "the labels after the resume")
        assert seen["label"] == list(range(n)) and seen["prediction"] == list(range(n))
    finally:
        source.close()


@SOURCES
def test_a_topic_held_before_a_rebalance_stays_held_after_it(
        broker, source_class: type[KafkaSource | ConfluentSource]) -> None:
    """Partitions assigned by a rebalance start unpaused in kafka-python: a topic held
    before its partitions are assigned (here the first assignment, 2 partitions) hands
    out nothing until it is let go, then every message once."""
    topics = Topics(broker, partitions=2)
    n = 2000
    topics.produce(topics.predictions, (_prediction(i, random.Random(i)) for i in range(n)))
    topics.produce(topics.labels, (_label(i) for i in range(n)))
    settings = topics.kafka.model_copy(update={
        "session_timeout_ms": topics.session[0], "heartbeat_interval_ms": topics.session[1]})
    source = source_class(settings)
    source.hold({(topics.labels, 0), (topics.labels, 1)})
    source.open()
    kinds: list[str] = []
    try:
        wait_for(lambda: kinds.extend(r.kind for r in source.poll()) or
                 kinds.count("prediction") == n, 60, "every prediction")
        source.poll()
        assert "label" not in kinds
        source.hold(set())
        wait_for(lambda: kinds.extend(r.kind for r in source.poll()) or
                 kinds.count("label") == n, 60, "the labels after the resume")
        assert len(kinds) == 2 * n
    finally:
        source.close()


def _produce_keyed(topics: Topics, topic: str, events) -> None:
    """Keyed by ``prediction_id``, as the README asks: a label lands on the partition
    number of its prediction."""
    prod = producer(topics.kafka)
    for event in events:
        prod.send(topic, key=event["prediction_id"].encode(), value=json.dumps(event).encode())
    prod.flush()
    prod.close()


@pytest.mark.parametrize("partitions, client", [(1, "kafka-python"), (3, "kafka-python"),
                                               (3, "confluent")])
def test_a_burst_backlog_matches_every_label(broker, spawn, partitions: int, client: str) -> None:
    """Every prediction, then the labels of 80 % of them in prediction order, all in
    the topics before the service starts. Whichever topic (partition) the consumer reads
    first, it would run ahead and overflow its side of the join; it is held back
    instead, partition by partition, and every label is matched."""
    topics = Topics(broker, partitions=partitions)
    n, capacity, poll = 30_000, 10_000, 500
    share = capacity // partitions
    rng = random.Random(4)
    labelled = [i for i in range(n) if i % 5 != 4]
    _produce_keyed(topics, topics.predictions, (_prediction(i, rng) for i in range(n)))
    _produce_keyed(topics, topics.labels, (_label(i) for i in labelled))

    d = spawn(topics, {"join": {"capacity": capacity},
                       "kafka": {"max_poll_records": poll, "client": client}})
    d.wait_events("prediction", MODEL, n, timeout=120)
    m = d.wait_events("label", MODEL, len(labelled), timeout=120)
    assert _join(m) == {"matched": len(labelled), "expired": 0, "orphan": 0,
                        "prediction_evicted": 0, "label_evicted": 0}
    assert sample(m, "drift_pending_predictions", model=MODEL) == n - len(labelled)

    paused = _events(d, "predictions_paused", "labels_paused")
    resumed = _events(d, "predictions_resumed", "labels_resumed")
    assert paused, "no topic was ever held back: the test shows nothing"
    first = paused[0]
    kind = "label" if first["event"] == "labels_paused" else "prediction"
    # the held topic had more unread messages than its side of the join had room for:
    # read on, it would have evicted entries whose partner was still unread
    assert first[f"{kind}s_lag"] + first[f"waiting_{kind}s"] > share, first
    assert all(r["waiting_labels"] < share and r["waiting_predictions"] < share
               for r in paused + resumed)
    assert len(resumed) == len(paused) and resumed[-1]["time"] >= paused[-1]["time"]
    assert _held_back(m) == {"prediction": 0, "label": 0}


def test_a_backlog_recorded_from_a_live_stream_matches_every_label(topics: Topics,
                                                                   detector) -> None:
    """Labels produced a little after their predictions (up to 500 predictions later,
    out of order), the two topics interleaved in time as a live stream writes them,
    all waiting before the service starts: every label is matched, nothing evicted."""
    n, capacity, poll = 20_000, 5000, 500
    rng = random.Random(7)
    labelled = {i for i in range(n) if rng.random() < 0.9}
    due: list[tuple[int, int]] = sorted((i + rng.randint(1, 500), i) for i in labelled)
    prod = producer(topics.kafka)

    def send(topic: str, event: dict) -> None:
        prod.send(topic, key=event["prediction_id"].encode(), value=json.dumps(event).encode())

    k = 0
    for i in range(n):
        send(topics.predictions, _prediction(i, rng))
        while k < len(due) and due[k][0] <= i:
            send(topics.labels, _label(due[k][1]))
            k += 1
    for _, i in due[k:]:
        send(topics.labels, _label(i))
    prod.flush()
    prod.close()

    d = detector({"join": {"capacity": capacity}, "kafka": {"max_poll_records": poll}})
    d.wait_events("prediction", MODEL, n, timeout=120)
    m = d.wait_events("label", MODEL, len(labelled), timeout=120)
    assert _join(m) == {"matched": len(labelled), "expired": 0, "orphan": 0,
                        "prediction_evicted": 0, "label_evicted": 0}
    assert _held_back(m) == {"prediction": 0, "label": 0}


def test_labels_without_predictions_never_stall_the_labels_topic(topics: Topics, detector,
                                                                 tmp_path) -> None:
    """Orphan labels above the high-water mark that never drain: read while the
    predictions topic has nothing to read (held at most until the consumer learns
    that); held back while a backlog of predictions is read, then let go although
    they still wait. All are counted as orphans after the TTL."""
    orphans, late, n, capacity, poll, ttl = 4000, 1000, 20_000, 6000, 500, 40.0
    topics.produce(topics.labels, ({"model": MODEL, "prediction_id": f"nobody-{i}", "label": 1}
                                   for i in range(orphans)))
    config = {"join": {"capacity": capacity, "ttl_seconds": ttl},
              "kafka": {"max_poll_records": poll},
              "checkpoint": {"path": str(tmp_path / "state.ckpt"), "key": "k" * 16}}
    d = detector(config)
    d.wait_events("label", MODEL, orphans, timeout=60)
    first = _events(d, "labels_paused", "labels_resumed")
    assert len(first) in (0, 2), first          # held until the predictions' end was known

    # a backlog of predictions (they carry their label: none waits), then more orphans,
    # written while the service is stopped: a backlog whatever the speeds of both
    assert d.terminate() == 0
    rng = random.Random(11)
    topics.produce(topics.predictions, (_prediction(i, rng, label=i % 2) for i in range(n)))
    topics.produce(topics.labels, ({"model": MODEL, "prediction_id": f"later-{i}", "label": 1}
                                   for i in range(late)))
    d = detector(config)       # the orphans wait again in the restored join
    d.wait_events("prediction", MODEL, n, timeout=120)
    d.wait_events("label", MODEL, orphans + late, timeout=60)
    paused, resumed = _events(d, "labels_paused"), _events(d, "labels_resumed")
    assert paused and len(resumed) == len(paused), (paused, resumed)
    # let go because the predictions caught up, while the orphans still waited
    assert resumed[-1]["waiting_labels"] > resumed[-1]["low_water"], resumed[-1]
    assert resumed[-1]["predictions_lag"] <= poll
    assert not _events(d, "predictions_paused")

    def settled() -> dict | None:
        m = d.metrics()
        return m if sample(m, "drift_label_join_total", model=MODEL,
                           outcome="orphan") == orphans + late else None
    m = wait_for(settled, ttl + 30, "the orphans' TTL", every=0.25)
    assert _join(m) == {"matched": n, "expired": 0, "orphan": orphans + late,
                        "prediction_evicted": 0, "label_evicted": 0}
    assert _held_back(m) == {"prediction": 0, "label": 0}
