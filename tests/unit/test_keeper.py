"""State per source partition: saved with the offsets it covers, restored by whichever
instance gets the partition, written before a partition leaves; unusable state and a
store that cannot be written are reported, never a crash."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from detector import state
from detector.config import Settings
from detector.keeper import Keeper, StateRefused
from detector.metrics import DriftCollector, RunStatus
from detector.pipeline import Pipeline
from detector.records import Record
from detector.stores import FileStore
from tests.streams import demo_stream

PARTITIONS = 3


def _records(events: list[dict], topic_of: dict[str, str]) -> list[Record]:
    """Events spread over partitions by model (the partitioning contract), offsets per
    (topic, partition) counted as a broker would."""
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for e in events:
        kind = "label" if "label" in e and "features" not in e else "prediction"
        topic = topic_of[kind]
        partition = int(e["model"][-1]) % PARTITIONS
        at = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = at + 1
        out.append(Record(kind, json.dumps(e).encode(), 1.7e9, topic, partition, at))
    return out


def _stream() -> list[Record]:
    events = []
    for k in range(4):                         # models m0..m3 on partitions 0, 1, 2, 0
        for e in demo_stream(1500, seed=k):
            events.append({**e, "model": f"m{k}"})
    return _records(events, {"prediction": "predictions", "label": "labels"})


def _keeper(store, settings: Settings | None = None) -> tuple[Keeper, Pipeline, RunStatus]:
    s = settings or Settings()
    p, status = Pipeline(s), RunStatus()
    return Keeper(s, p, store, threading.Lock(), status), p, status


def _feed(p: Pipeline, records: list[Record], size: int = 700) -> dict:
    applied: dict[tuple[str, int], int] = {}
    for i in range(0, len(records), size):
        batch = records[i:i + size]
        p.process(batch, now=1.7e9)
        for r in batch:
            applied[(r.topic, r.partition)] = r.offset + 1
    return applied


def _text(p: Pipeline) -> list[str]:
    """What /metrics shows of the pipeline (the second scrape: every series announced),
    line by line in sorted order (models come in the order an instance met them), values
    to 10 significant digits (the performance estimates sum floats a batch at a time, so
    other batches round their last bits differently)."""
    collector = DriftCollector(p, threading.Lock(), RunStatus())
    collector.render()
    lines = []
    for line in collector.render().splitlines():
        if not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            line = f"{series} {float(value):.10g}"
        lines.append(line)
    return sorted(lines)


def _assigned(*partitions: int) -> list[tuple[str, int]]:
    return [(t, n) for n in partitions for t in ("predictions", "labels")]


def test_partitions_move_with_their_state_and_offsets(tmp_path: Path) -> None:
    records = _stream()
    half = len(records) // 2
    whole, _, _ = _keeper(FileStore(tmp_path / "unused"))
    _feed(whole.pipeline, records)

    first, p1, _ = _keeper(FileStore(tmp_path / "state"))
    assert first.assigned(_assigned(0, 1, 2)) == {}          # nothing kept yet
    applied = _feed(p1, records[:half])
    covered = first.save(applied)
    assert covered == applied                                # what to commit: all of it
    assert first.save(applied) == {}                         # nothing new: nothing written

    # partition 1 moves to another instance (a rebalance); 0 and 2 stay and go on
    first.revoked(_assigned(1), applied)
    assert "m1" in p1.models                                 # until the assignment says
    first.assigned(_assigned(0, 2))
    assert "m1" not in p1.models and "m0" in p1.models
    second, p2, _ = _keeper(FileStore(tmp_path / "state"))
    start = second.assigned(_assigned(1))
    assert start == {tp: o for tp, o in applied.items() if tp[1] == 1}
    rest = records[half:]
    for keeper, pipeline, numbers in ((first, p1, {0, 2}), (second, p2, {1})):
        part = [r for r in rest if r.partition in numbers]
        keeper.save(_feed(pipeline, part))

    # a third instance restores every partition: the state of one that never stopped
    third, p3, _ = _keeper(FileStore(tmp_path / "state"))
    third.assigned(_assigned(0, 1, 2))
    assert _text(p3) == _text(whole.pipeline)


def test_unusable_state_starts_that_partition_fresh_or_refuses(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state")
    store.write({"1": b"garbage that is no checkpoint"})
    keeper, p, status = _keeper(store)
    keeper.assigned(_assigned(0, 1))
    assert status.checkpoint_failures and all(op == "restore"
                                              for op, _ in status.checkpoint_failures)
    assert keeper.owned == {0: None, 1: None}                # both start at the group's offsets
    refusing, _, _ = _keeper(store, Settings(checkpoint={"on_invalid": "refuse"}))
    with pytest.raises(StateRefused):
        refusing.assigned(_assigned(1))
    # sound checksums, but not a pipeline's state (no key signs it): malformed, not a crash
    fp = state.fingerprint(Settings().state_shape())
    store.write({"2": state.encode({"models": 5, "rejected": {}, "join": ([], [])},
                                   {("predictions", 2): 7}, fp)})
    keeper.assigned(_assigned(2))
    assert status.checkpoint_failures[("restore", "malformed")] == 1
    assert keeper.owned[2] is None and not p.models


def test_a_store_that_cannot_be_written_is_reported_and_commits_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory should be")
    keeper, p, status = _keeper(FileStore(blocker / "state"))
    keeper.assigned(_assigned(0))
    applied = _feed(p, _stream()[:500])
    assert keeper.save(applied) is None                      # nothing to commit
    assert status.readiness(0.0)[1].startswith("not connected")  # (not connected here)
    status.connected, status.last_poll = True, 0.0
    ready, why = status.readiness(0.0)
    assert not ready and why.startswith("state cannot be saved"), why
    assert any(op == "write" for op, _ in status.checkpoint_failures)
    blocker.unlink()                                         # the volume is back
    assert keeper.save(applied) == {tp: o for tp, o in applied.items() if tp[1] == 0}
    assert status.readiness(0.0) == (True, "consuming")


def test_signed_state_is_refused_without_the_key_and_read_with_it(tmp_path: Path) -> None:
    signed = Settings(checkpoint={"key": "k" * 20})
    keeper, p, _ = _keeper(FileStore(tmp_path / "state"), signed)
    keeper.assigned(_assigned(0))
    keeper.save(_feed(p, [r for r in _stream()[:800] if r.partition == 0]))
    wrong, _, status = _keeper(FileStore(tmp_path / "state"),
                               Settings(checkpoint={"key": "x" * 20}))
    wrong.assigned(_assigned(0))
    assert [reason for _, reason in status.checkpoint_failures] == ["signature"]
    right, p2, _ = _keeper(FileStore(tmp_path / "state"), signed)
    right.assigned(_assigned(0))
    assert _text(p2) == _text(p)


def test_partitions_that_come_back_go_on_from_memory_unless_someone_saved_meanwhile(
        tmp_path: Path) -> None:
    records = [r for r in _stream() if r.partition in (0, 1)]
    keeper, p, _ = _keeper(FileStore(tmp_path / "state"))
    keeper.assigned(_assigned(0, 1))
    applied = _feed(p, records[:4000])
    keeper.save(applied)
    more = _feed(p, records[4000:5000])               # applied, not saved yet
    applied.update(more)
    before = _text(p)

    # lost (a broker outage): nothing is written, the state stays and is exported
    keeper.revoked(_assigned(0, 1), applied, lost=True)
    assert _text(p) == before
    # the group gives both back and nobody saved meanwhile: go on where memory stopped
    start = keeper.assigned(_assigned(0, 1))
    assert start == {tp: o for tp, o in applied.items()}
    assert _text(p) == before

    # lost again; meanwhile another member took partition 1 from the store, went on
    # and saved: its state replaces ours, partition 0 goes on from memory
    keeper.revoked(_assigned(0, 1), applied, lost=True)
    other, q, _ = _keeper(FileStore(tmp_path / "state"))
    q_start = other.assigned(_assigned(1))
    rest = [r for r in records[5000:] if r.partition == 1]
    other.save({**q_start, **_feed(q, rest)})
    start = keeper.assigned(_assigned(0, 1))
    assert start[("predictions", 0)] == applied[("predictions", 0)]
    assert start[("predictions", 1)] == max(r.offset for r in rest
                                            if r.topic == "predictions") + 1
    assert p.models["m1"].events == q.models["m1"].events
