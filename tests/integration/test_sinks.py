"""The dead-letter and drift-events sinks through the real broker: a message that
cannot be written is counted under its reason and skipped, never fatal.

What each test broker does with what a sink can meet (measured, kafka-python 3.0):

- Tansu keeps no record-size limit (not even a topic's ``max.message.bytes``), creates
  a missing topic on a producer's metadata request (even with auto-creation off), and
  its CreateTopics accepts any name, even ``dead letters!``.
- noida-db refuses a record batch over ~1 MiB (Kafka's default ``message.max.bytes``,
  1,048,588 bytes) with MESSAGE_TOO_LARGE, also creates missing topics on a metadata
  request, and refuses an illegal topic name in CreateTopics.
- kafka-python refuses to send to an illegal topic name, before any request.

So a dead letter is ``too_large`` only on noida (a message just under its limit,
plus the dead letter's headers, is over it); on Tansu the 1.5 MB one is written,
which is the point of sizing the producer from what the consumer can receive. A
missing topic cannot be produced on either (both create it), so ``topic_missing``
and ``timeout`` are left to the classification doctest in ``detector/sources.py``; a
topic name Kafka refuses gives ``refused`` on both.
"""

from __future__ import annotations

import json
import random
import uuid

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from detector.broker import Tansu
from detector.sources import SINK_OUTCOMES, producer
from tests.conftest import sample, wait_for

#: the largest record value noida-db takes into a topic with room for our dead-letter
#: headers to push it over the limit (measured: 1,048,500 bytes pass, 1,048,576 not)
NOIDA_NEAR_LIMIT = 1_048_400
TANSU_BIG = 1_500_000


def _valid(i: int, x: float = 1.0) -> dict:
    return {"model": "fraud", "model_version": "1", "prediction_id": f"ok-{i}",
            "features": {"x": x}, "prediction": i % 2}


def _outcomes(metrics: dict, sink: str) -> dict[str, float | None]:
    return {o: sample(metrics, "drift_sink_messages_total", sink=sink, outcome=o)
            for o in SINK_OUTCOMES}



def _read_all(bootstrap: str, topic: str) -> list:
    """Every message of every partition of ``topic``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=3000, max_partition_fetch_bytes=4 << 20)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return list(consumer)
    finally:
        consumer.close()


def _lag_zero(d, topics) -> dict:
    return wait_for(lambda: (lambda s: s if sample(s, "drift_consumer_lag_messages",
                                                    topic=topics.predictions, partition="0") == 0
                             else None)(d.metrics()), 30, "lag 0")


def test_a_dead_letter_too_big_for_the_broker_is_counted_and_skipped(
        broker, topics, detector) -> None:
    on_tansu = isinstance(broker, Tansu)
    dlq = f"dead-letters-{uuid.uuid4().hex[:6]}"        # missing: the sink creates it
    config = {"dead_letter": {"enabled": True, "topic": dlq}}
    if not on_tansu:
        config["max_event_bytes"] = 65_536    # the near-limit message is oversized too
    d = detector(config)
    m = d.metrics()
    assert _outcomes(m, "dead_letter") == dict.fromkeys(SINK_OUTCOMES, 0)   # from start-up
    assert _outcomes(m, "drift_events") == dict.fromkeys(SINK_OUTCOMES)     # not enabled
    events = [r.get("event") for r in d.log_records()]
    assert "sink_topic_created" in events and "sink_open" in events, events
    admin = KafkaAdminClient(bootstrap_servers=topics.bootstrap)
    try:
        assert dlq in admin.list_topics()
    finally:
        admin.close()

    size = TANSU_BIG if on_tansu else NOIDA_NEAR_LIMIT
    big = b'{"pad": "' + b"x" * (size - 11) + b'"}'
    assert len(big) == size
    bad = [b"{not json", json.dumps({"model": "fraud", "prediction_id": "p"}).encode(),
           b'{"model": "fraud",']
    valid = [json.dumps(_valid(i)).encode() for i in range(300)]
    messages = valid[:100] + [bad[0], big, bad[1]] + valid[100:200] + [bad[2]] + valid[200:]
    prod = producer(topics.kafka, max_request_size=4 << 20)
    for raw in messages:
        prod.send(topics.predictions, raw)
    prod.flush()
    prod.close()

    d.wait_events("prediction", "fraud", len(valid))
    wait_for(lambda: topics.committed() == len(messages), 30, "commit past every message")
    m = d.metrics()
    assert sample(m, "drift_events_total", kind="prediction", model="fraud") == len(valid)
    assert sample(m, "drift_events_rejected_total", kind="prediction", reason="oversized") == 1
    assert sample(m, "drift_events_rejected_total", kind="prediction", reason="invalid_json") == 2
    assert sample(m, "drift_events_rejected_total", kind="prediction",
                  reason="missing_field") == 1
    expected = dict.fromkeys(SINK_OUTCOMES, 0)
    expected.update({"written": 4} if on_tansu else {"written": 3, "too_large": 1})
    assert _outcomes(m, "dead_letter") == expected
    assert d.proc.poll() is None

    letters = _read_all(topics.bootstrap, dlq)
    assert sorted(len(x.value) for x in letters) == sorted(
        [len(b) for b in bad] + ([size] if on_tansu else []))
    if on_tansu:
        assert any(x.value == big for x in letters)      # unchanged, 1.5 MB
    else:
        failed = [r for r in d.log_records() if r.get("event") == "sink_failed"]
        assert [(r["sink"], r["reason"], r["topic"]) for r in failed] == [
            ("dead_letter", "too_large", dlq)]
        assert failed[0]["size"] > size and failed[0]["level"] == "WARNING"

    # a restart in the same group reads nothing again (no state kept: the counters start
    # at zero and stay there)
    assert d.terminate() == 0
    again = detector({**config, "checkpoint": {"enabled": False}})
    m = _lag_zero(again, topics)
    assert sample(m, "drift_events_total", kind="prediction", model="fraud") is None
    assert not any(v for (name, _), v in m.items() if name == "drift_events_rejected_total")
    assert _outcomes(m, "dead_letter") == dict.fromkeys(SINK_OUTCOMES, 0)


def test_sinks_on_a_topic_name_kafka_refuses_count_every_message_and_keep_going(
        topics, detector) -> None:
    rng = random.Random(20261124)
    # a mean shift on x after the warm-up: detections, so drift events to publish
    valid = [_valid(i, rng.gauss(0.0, 1.0) + (6.0 if i >= 1500 else 0.0)) for i in range(3000)]
    bad = [b"{not json", b"[1, 2]", b'"text"']
    topics.produce(topics.predictions, bad[:2] + valid[:1500] + bad[2:] + valid[1500:])
    d = detector({"dead_letter": {"enabled": True, "topic": "dead letters!"},
                  "drift_events": {"enabled": True, "topic": "drift/events"}})
    m = d.wait_events("prediction", "fraud", len(valid))
    wait_for(lambda: topics.committed() == len(valid) + len(bad), 30, "commit past everything")
    m = d.metrics()
    records = d.log_records()
    detections = sum(1 for r in records if r.get("event") == "drift_detected")
    assert detections >= 1
    assert _outcomes(m, "dead_letter") == {**dict.fromkeys(SINK_OUTCOMES, 0),
                                           "refused": len(bad)}
    assert _outcomes(m, "drift_events") == {**dict.fromkeys(SINK_OUTCOMES, 0),
                                            "refused": detections}
    invalid = {r["sink"] for r in records if r.get("event") == "sink_topic_invalid"}
    assert invalid == {"dead_letter", "drift_events"}
    failed = [r for r in records if r.get("event") == "sink_failed"]
    # rate-limited: one line per sink and reason (every 10 s), the rest counted
    assert sorted((r["sink"], r["reason"]) for r in failed) == [
        ("dead_letter", "refused"), ("drift_events", "refused")]
    assert d.proc.poll() is None and d.terminate() == 0
