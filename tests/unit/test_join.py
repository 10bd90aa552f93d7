from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from detector.join import Dropped, JoinBuffer, JoinGate


def test_capacity_evicts_the_oldest_and_reports_it_as_evicted() -> None:
    j = JoinBuffer(ttl=1e9, capacity=2)
    for pid in "abc":
        j.add_prediction("m", pid, 0.0, pid)
    for pid in "xyz":
        j.add_label("m", pid, 0.0, 1)
    assert j.pending("m") == 2 and j.waiting_labels == 2
    assert j.expire(0.0) == Dropped(expired=[], orphan=[], prediction_evicted=[("m", "a")],
                                    label_evicted=[("m", "x")])
    assert j.expire(0.0) == Dropped([], [], [], [])       # reported once
    assert j.add_label("m", "b", 1.0, 1) == ("b", 1)
    assert j.add_prediction("m", "y", 1.0, "y") == ("y", 1)


def test_a_repeated_id_replaces_the_waiting_entry_and_counts_as_expired_or_orphan() -> None:
    j = JoinBuffer(ttl=1e9, capacity=10)
    j.add_prediction("m", "a", 0.0, "first")
    j.add_prediction("m", "a", 1.0, "second")
    j.add_label("m", "q", 0.0, 0)
    j.add_label("m", "q", 1.0, 1)
    assert j.expire(1.0) == Dropped([("m", "a")], [("m", "q")], [], [])
    assert j.pending("m") == 1 and j.waiting_labels == 1
    assert j.add_label("m", "a", 2.0, 1) == ("second", 1)
    assert j.add_prediction("m", "q", 2.0, "p") == ("p", 1)


def test_label_waits_for_its_prediction_until_the_ttl() -> None:
    j = JoinBuffer(ttl=10.0, capacity=100)
    assert j.add_label("m", "late", 0.0, 1) is None
    assert j.expire(9.9) == Dropped([], [], [], [])
    assert j.add_prediction("m", "late", 9.9, "p") == ("p", 1)
    j.add_label("m", "never", 10.0, 1)
    assert j.expire(20.0).orphan == [("m", "never")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["p", "l"]), st.integers(0, 30),
                          st.floats(0, 5)), max_size=120),
       st.integers(1, 20), st.floats(0.5, 20))
def test_every_entry_is_matched_dropped_once_or_waiting(ops, capacity, ttl) -> None:
    """Conservation: nothing is lost, nothing is counted twice, and an eviction
    happens only on a full side."""
    j = JoinBuffer(ttl=ttl, capacity=capacity)
    now, matched = 0.0, 0
    counts = dict.fromkeys(Dropped._fields, 0)
    preds = labels = 0
    for side, pid, step in ops:
        now += step
        if side == "p":
            preds += 1
            full = j.pending("m") == capacity
            matched += j.add_prediction("m", str(pid), now, pid) is not None
        else:
            labels += 1
            full = j.waiting_labels == capacity
            matched += j.add_label("m", str(pid), now, pid) is not None
        dropped = j.expire(now)
        evicted = len(dropped.prediction_evicted) + len(dropped.label_evicted)
        assert evicted <= 1 and (full or not evicted)
        for outcome, keys in zip(Dropped._fields, dropped, strict=True):
            counts[outcome] += len(keys)
    assert (matched + counts["expired"] + counts["prediction_evicted"] + j.pending("m")
            == preds)
    assert matched + counts["orphan"] + counts["label_evicted"] + j.waiting_labels == labels
    assert j.pending("m") <= capacity and j.waiting_labels <= capacity


def test_gate_watermarks_leave_two_polls_of_headroom() -> None:
    assert (JoinGate(200_000, 2000).high, JoinGate(200_000, 2000).low) == (100_000, 50_000)
    assert JoinGate(5000, 2000).high == 1000               # 5000 - 2 polls, below half
    assert JoinGate(1000, 2000).high == 1                  # smaller than a poll: hold early
    assert JoinGate(1, 1).high == 1 and JoinGate(1, 1).low == 0


def test_gate_holds_labels_only_while_predictions_are_behind() -> None:
    gate = JoinGate(capacity=1000, max_poll_records=100)  # high 500, low 250, min_lag 200
    assert gate.update(0, 900, 200, 0) is None             # nothing left to catch up on
    assert gate.update(0, 500, 10_000, 0) is None
    assert gate.update(0, 501, 201, 0) == "label"
    assert gate.update(0, 251, 101, 0) == "label"          # hysteresis on both
    assert gate.update(0, 251, 100, 0) is None             # predictions caught up
    assert gate.update(0, 600, None, 0) == "label"         # predictions' end not known yet
    assert gate.update(0, 250, 5000, 0) is None            # labels consumed


def test_gate_holds_predictions_only_while_labels_are_behind_and_not_ahead() -> None:
    gate = JoinGate(capacity=1000, max_poll_records=100)
    assert gate.update(900, 0, 0, 200) is None             # labels caught up: they wait
    assert gate.update(900, 251, 0, 5000) is None          # labels already ahead
    assert gate.update(501, 250, 0, 5000) == "prediction"
    assert gate.update(900, 400, 0, 101) == "prediction"
    assert gate.update(900, 400, 0, 100) is None           # labels caught up
    assert gate.update(600, 0, 0, 5000) == "prediction"
    assert gate.update(250, 0, 0, 5000) is None            # predictions matched
    assert gate.update(600, 0, 0, 5000) == "prediction"
    assert gate.update(600, 501, 5000, 5000) == "label"    # labels ran ahead: swap
    assert gate.update(9000, 9000, 5000, 5000) == "label"  # never both


def _catch_up(n: int, labelled: float, capacity: int, poll: int, chunks: dict[str, int],
              first: str, gate: JoinGate | None) -> tuple[int, dict[str, int], dict[str, int]]:
    """A consumer catching up on a backlog: ``n`` predictions, and labels for a share
    of them (``labelled``, in tenths, spread evenly) in prediction order, all in the
    topics before it starts.
    It reads a topic a fetched chunk (``chunks[kind]`` messages) at a time, in polls of
    at most ``poll``, starting with topic ``first``; a held topic gives way to the other
    at once. The gate, when given, is asked after every poll. Returns matched, the drop
    counts, and the most entries that waited on each side."""
    j = JoinBuffer(ttl=1e9, capacity=capacity)
    ids = {"prediction": list(range(n)),
           "label": [i for i in range(n) if i % 10 < round(labelled * 10)]}
    pos = dict.fromkeys(ids, 0)
    counts = dict.fromkeys(Dropped._fields, 0)
    most = dict.fromkeys(ids, 0)
    current, left, matched = first, chunks[first], 0
    while any(pos[k] < len(ids[k]) for k in ids):
        held = gate.holding if gate is not None else None
        ready = [k for k in ids if pos[k] < len(ids[k]) and k != held]
        assert ready, f"{held} held with nothing else to read"
        if current not in ready or left == 0:
            current = next(k for k in ready if k != current) if len(ready) > 1 or \
                current not in ready else current
            left = chunks[current]
        take = ids[current][pos[current]:pos[current] + min(poll, left)]
        pos[current] += len(take)
        left -= len(take)
        add = j.add_prediction if current == "prediction" else j.add_label
        matched += sum(add("m", str(i), 0.0, i) is not None for i in take)
        for outcome, keys in zip(Dropped._fields, j.expire(0.0), strict=True):
            counts[outcome] += len(keys)
        most["prediction"] = max(most["prediction"], j.waiting_predictions)
        most["label"] = max(most["label"], j.waiting_labels)
        if gate is not None:
            gate.update(j.waiting_predictions, j.waiting_labels,
                        len(ids["prediction"]) - pos["prediction"],
                        len(ids["label"]) - pos["label"])
    return matched, counts, most


WHOLE = 10**9   # a broker that answers a fetch with the whole partition


@settings(max_examples=60, deadline=None)
@given(st.integers(2000, 30_000), st.sampled_from([0.8, 0.9, 1.0]), st.integers(2000, 10_000),
       st.integers(50, 500), st.sampled_from([(WHOLE, WHOLE), (3000, 13_000), (500, 500)]),
       st.sampled_from(["prediction", "label"]))
def test_a_backlog_read_in_any_order_matches_every_label_with_the_gate(
        n, labelled, capacity, poll, chunks, first) -> None:
    unlabelled = sum(1 for i in range(n) if i % 10 >= round(labelled * 10))
    assume(unlabelled + 2 * poll <= capacity)   # otherwise the unlabelled alone overflow
    gate = JoinGate(capacity, poll)
    matched, counts, most = _catch_up(n, labelled, capacity, poll,
                                      dict(zip(("prediction", "label"), chunks)), first, gate)
    assert matched == n - unlabelled
    assert counts == dict.fromkeys(Dropped._fields, 0)
    assert most["label"] <= gate.high + poll


def test_without_the_gate_the_same_backlog_evicts() -> None:
    chunks = {"prediction": WHOLE, "label": WHOLE}
    for first, evicted in (("label", "label_evicted"), ("prediction", "prediction_evicted")):
        matched, counts, _ = _catch_up(30_000, 0.8, 10_000, 500, chunks, first, None)
        assert counts[evicted] > 0 and matched < 24_000
        matched, counts, _ = _catch_up(30_000, 0.8, 10_000, 500, chunks, first,
                                       JoinGate(10_000, 500))
        assert matched == 24_000 and counts == dict.fromkeys(Dropped._fields, 0)
