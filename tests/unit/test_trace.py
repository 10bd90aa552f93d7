"""Where detections happened: the value-to-event maps and event trails of detector/trace.py
against brute force, and the traces the pipeline gives against the messages behind them."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from detector.config import Settings
from detector.detections import detection_fields
from detector.pipeline import Pipeline
from detector.records import Record
from detector.trace import MAX_CHANGES, BatchPositions, EventTrail, ValueMap


def _fill(vmap: ValueMap, present: np.ndarray, batch: int) -> np.ndarray:
    """Feed ``vmap`` the events where ``present`` is True, ``batch`` events at a time (a
    batch where all are present by the fast path); return the event of each value."""
    for base in range(0, present.size, batch):
        part = present[base:base + batch]
        if part.all():
            vmap.add(base, None, part.size)
        else:
            vmap.add(base, np.flatnonzero(part))
    return np.flatnonzero(present)


@pytest.mark.parametrize("share", [1.0, 0.97, 0.5, 0.02])
def test_the_value_map_gives_the_event_of_every_value_it_keeps(share: float) -> None:
    rng = np.random.default_rng(int(share * 100))
    present = rng.random(200_000) < share
    present[:50] = False                      # the stream starts late
    vmap = ValueMap()
    events = _fill(vmap, present, 500)
    got = [vmap.event(v) for v in range(events.size)]
    known = [v for v, e in enumerate(got) if e is not None]
    assert all(got[v] == events[v] for v in known)
    # everything after the oldest change point kept is known; so is all of a dense stream
    assert known[-1] == events.size - 1 and len(vmap.starts) <= 2 * MAX_CHANGES
    trimmed = vmap.dense is not None and vmap.starts[0] > vmap.dense
    assert trimmed == (share < 1.0) and (len(known) == events.size) == (not trimmed)
    assert vmap.dense is None or None not in got[:vmap.dense]
    assert vmap.event(events.size) is None and vmap.event(-1) is None


def test_a_value_older_than_the_change_points_kept_is_known_while_none_was_skipped() -> None:
    # dense for 1,000 events, then a value in every other event: many change points
    present = np.ones(1000 + 6 * MAX_CHANGES, bool)
    present[1000::2] = False
    vmap = ValueMap()
    events = _fill(vmap, present, 256)
    assert vmap.dense == 1000 and vmap.starts[0] > 1000      # trimmed
    assert [vmap.event(v) for v in (0, 999, 1000)] == [0, 999, None]
    middle = int(np.searchsorted(events, 1000 + 2 * MAX_CHANGES))
    assert vmap.starts[0] > middle and vmap.event(middle) is None
    assert vmap.event(events.size - 1) == events[-1]


def test_the_event_trail_keeps_the_last_events_positions_across_batches_and_topics() -> None:
    trail = EventTrail(history=10)
    records = [Record("prediction", b"", None, f"t{i % 3}", i % 2, 100 + i) for i in range(40)]
    ids = [f"p{i}" for i in range(40)]
    # the version's events are every other record; a batch of 7, then one of 13 (> history)
    trail.add(BatchPositions(records[:14]), list(range(0, 14, 2)), ids[0:14:2])
    trail.add(BatchPositions(records[14:40]), list(range(0, 26, 2)), ids[14:40:2])
    assert trail.count == 20
    for event in range(20):
        i = 2 * event
        expect = (f"t{i % 3}", i % 2, 100 + i, f"p{i}") if event >= 10 else None
        assert trail.position(event) == expect
    assert trail.position(20) is None
    pairs = EventTrail(history=4)
    pairs.add(BatchPositions(records[:3]), [2], None)
    assert pairs.position(0) == ("t2", 0, 102, None)
    # what a source that is not Kafka may give: no position, no crash
    odd = [Record("label", b"", None, "t", 2**40, 2**70), Record("label", b"", None, "t", 1, "7")]
    pairs.add(BatchPositions(odd), [0, 1], None)
    assert [pairs.position(e)[1:3] for e in (1, 2)] == [(-1, -1), (1, -1)]


def _prediction(i: int, features: dict, version: str = "1") -> bytes:
    return json.dumps({"model": "m", "model_version": version, "prediction_id": f"p{i}",
                       "features": features, "prediction": i % 2}).encode()


@pytest.mark.parametrize("engine", ["kernel", "river"])
def test_every_detection_names_the_events_and_messages_where_it_fired_and_began(
        engine: str) -> None:
    """A level shift at event 4,000 of a feature present in every event, one at 4,500 of
    a feature in a third of them, a second version interleaved and junk messages between:
    each trace points at the messages (read back by offset) of the right events, with
    either engine."""
    rng = random.Random(5)
    records, k = [], 0
    for i in range(6000):
        features = {"x": rng.gauss(0.0 if i < 4000 else 3.0, 1.0)}
        if i % 3 == 0:
            features["sparse"] = rng.gauss(0.0 if i < 4500 else 4.0, 1.0)
        records.append(Record("prediction", _prediction(i, features), None, "preds", 0, k))
        k += 1
        if i % 7 == 0:
            records.append(Record("prediction", _prediction(i, {"x": 0.0}, "2"), None,
                                  "preds", 0, k))
            records.append(Record("prediction", b"junk", None, "preds", 0, k + 1))
            k += 2
    by_offset = {r.offset: r for r in records}
    pipeline = Pipeline(Settings(), engine=engine)
    found = []
    for at in range(0, len(records), 700):
        found += pipeline.process(records[at:at + 700], now=0.0).detections
    fields = [detection_fields(d) for d in found if d.version == "1"]
    shifts = {(f["feature"], f["detector"]): f for f in fields if f["detector"] == "cusum"}
    x, sparse = shifts["x", "cusum"], shifts["sparse", "cusum"]
    assert x["onset_index"] == x["onset_value_index"] and 4000 <= x["onset_index"] <= 4010
    assert 4470 <= sparse["onset_index"] < 4530 <= sparse["index"] + 30
    assert sparse["onset_value_index"] * 3 == sparse["onset_index"]
    assert sparse["value_index"] * 3 == sparse["index"]
    assert {f["detector"] for f in fields if f["feature"] == "x"} >= {"cusum", "psi", "ks"}
    for f in fields:
        for prefix in ("", "onset_"):
            record = by_offset[f[prefix + "offset"]]
            event = json.loads(record.value)
            assert event["prediction_id"] == f[prefix + "prediction_id"] == f"p{f[prefix + 'index']}"
            assert event["model_version"] == "1" and f[prefix + "topic"] == "preds"
            assert f[prefix + "partition"] == 0


def test_an_error_detection_names_the_label_that_completed_its_pair() -> None:
    rng = random.Random(2)
    records = []
    for i in range(3000):
        records.append(Record("prediction", _prediction(i, {"x": 1.0}), None, "preds", 0, i))
        wrong = rng.random() < (0.05 if i < 2000 else 0.6)
        label = (i % 2) ^ wrong
        records.append(Record("label", json.dumps({"model": "m", "prediction_id": f"p{i}",
                                                   "label": label}).encode(), None, "labels",
                              1, 10_000 + i))
    pipeline = Pipeline(Settings())
    found = []
    for at in range(0, len(records), 500):
        found += pipeline.process(records[at:at + 500], now=0.0).detections
    errors = [detection_fields(d) for d in found if d.signal == "error"]
    assert errors
    for f in errors:
        assert 2000 <= f["onset_index"] <= f["index"] and f["onset_index"] == f["onset_value_index"]
        assert (f["topic"], f["partition"], f["offset"]) == ("labels", 1, 10_000 + f["index"])
        assert f["onset_offset"] == 10_000 + f["onset_index"]
        assert (f["prediction_id"], f["onset_prediction_id"]) == (f"p{f['index']}",
                                                                  f"p{f['onset_index']}")


def test_a_refused_value_in_a_scanned_event_does_not_shift_the_events_of_the_rest() -> None:
    """A number beyond the bounds passes the scan and becomes missing later: the values
    after it still map to their own events."""
    pipeline = Pipeline(Settings())
    records = []
    for i in range(3000):
        x = 1e200 if i == 10 else random.Random(i).gauss(0.0 if i < 2000 else 4.0, 1.0)
        records.append(Record("prediction", _prediction(i, {"x": x, "y": 1.0}), None, "p", 0, i))
    found = [d for at in range(0, 3000, 3000)
             for d in pipeline.process(records[at:at + 3000], now=0.0).detections]
    cusum = next(detection_fields(d) for d in found if d.detector == "cusum")
    assert cusum["index"] == cusum["value_index"] + 1 == cusum["offset"]
    assert cusum["onset_index"] == cusum["onset_value_index"] + 1
    assert pipeline.rejected[("feature", "out_of_range")] == 1
