"""Two replicas in one consumer group on co-partitioned 4-partition topics: partitions
split, their counters sum to a single instance's, and when one leaves the other takes
its partitions over from the committed offsets without counting anything twice."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaProducer

from tests.conftest import DetectorProcess, Topics, sample, wait_for

MODEL = "m"


def _produce_keyed(topics: Topics, start: int, n: int) -> None:
    """Predictions and their labels keyed by prediction_id (the partitioning contract)."""
    prod = KafkaProducer(bootstrap_servers=topics.bootstrap, linger_ms=20)
    for i in range(start, start + n):
        pid = f"id-{i}"
        prod.send(topics.predictions, key=pid.encode(), value=json.dumps({
            "model": MODEL, "prediction_id": pid, "features": {"x": float(i % 17)},
            "prediction": i % 2}).encode())
        prod.send(topics.labels, key=pid.encode(), value=json.dumps({
            "model": MODEL, "prediction_id": pid, "label": (i // 3) % 2}).encode())
    prod.flush()
    prod.close()


def _count(proc: DetectorProcess, name: str, **labels: str) -> float:
    return sample(proc.metrics(), name, **labels) or 0.0


def _assigned(proc: DetectorProcess, topics: Topics) -> set[int]:
    m = proc.metrics()
    return {int(dict(k[1])["partition"]) for k in m if k[0] == "drift_consumer_lag_messages"
            and dict(k[1])["topic"] == topics.predictions}


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_two_replicas_split_the_work_and_hand_it_over(tansu, spawn, client: str) -> None:
    topics = Topics(tansu, partitions=4)
    _produce_keyed(topics, 0, 4000)
    a = spawn(topics, {"kafka": {"client": client}})
    b = spawn(topics, {"kafka": {"client": client}})

    def settled() -> bool:
        events = sum(_count(p, "drift_events_total", kind="prediction", model=MODEL)
                     for p in (a, b))
        pa, pb = _assigned(a, topics), _assigned(b, topics)
        return events == 4000 and pa and pb and not pa & pb and pa | pb == {0, 1, 2, 3}
    wait_for(settled, 90, "both replicas to share the 4 partitions and process everything",
             every=0.5)

    # summed across replicas, the counters equal one instance's view of the stream
    for kind in ("prediction", "label"):
        assert sum(_count(p, "drift_events_total", kind=kind, model=MODEL) for p in (a, b)) == 4000
    matched = sum(_count(p, "drift_label_join_total", model=MODEL, outcome="matched")
                  for p in (a, b))
    assert matched == 4000        # co-partitioned: every label met its prediction on one replica

    # b leaves (SIGTERM commits); a takes its partitions over from b's committed offsets
    b_final = _count(b, "drift_events_total", kind="prediction", model=MODEL)
    b_matched = _count(b, "drift_label_join_total", model=MODEL, outcome="matched")
    assert b.terminate() == 0
    _produce_keyed(topics, 4000, 2000)
    wait_for(lambda: _assigned(a, topics) == {0, 1, 2, 3}, 60, "a to own every partition")
    wait_for(lambda: _count(a, "drift_events_total", kind="prediction", model=MODEL)
             + b_final >= 6000, 90, "the rest of the stream", every=0.5)
    a_final = _count(a, "drift_events_total", kind="prediction", model=MODEL)
    assert a_final + b_final == 6000          # nothing lost, nothing counted twice
    wait_for(lambda: _count(a, "drift_label_join_total", model=MODEL, outcome="matched")
             + b_matched >= 6000, 60, "the labels of the rest")
    assert _count(a, "drift_label_join_total", model=MODEL, outcome="matched") + b_matched == 6000
    a.terminate()
