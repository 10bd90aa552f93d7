from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from detector.join import JoinBuffer


def test_capacity_evicts_the_oldest_and_reports_it() -> None:
    j = JoinBuffer(ttl=1e9, capacity=2)
    for pid in "abc":
        j.add_prediction("m", pid, 0.0, pid)
    assert j.pending("m") == 2
    assert j.expire(0.0) == ([("m", "a")], [])
    assert j.add_label("m", "b", 1.0, 1) == ("b", 1)


def test_label_waits_for_its_prediction_until_the_ttl() -> None:
    j = JoinBuffer(ttl=10.0, capacity=100)
    assert j.add_label("m", "late", 0.0, 1) is None
    assert j.expire(9.9) == ([], [])
    assert j.add_prediction("m", "late", 9.9, "p") == ("p", 1)
    j.add_label("m", "never", 10.0, 1)
    assert j.expire(20.0) == ([], [("m", "never")])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["p", "l"]), st.integers(0, 30),
                          st.floats(0, 5)), max_size=120),
       st.integers(1, 20), st.floats(0.5, 20))
def test_every_entry_is_matched_expired_orphaned_or_waiting(ops, capacity, ttl) -> None:
    """Conservation: nothing is lost, nothing is counted twice."""
    j = JoinBuffer(ttl=ttl, capacity=capacity)
    now, matched, expired, orphans = 0.0, 0, 0, 0
    preds = labels = 0
    for side, pid, step in ops:
        now += step
        if side == "p":
            preds += 1
            matched += j.add_prediction("m", str(pid), now, pid) is not None
        else:
            labels += 1
            matched += j.add_label("m", str(pid), now, pid) is not None
        e, o = j.expire(now)
        expired, orphans = expired + len(e), orphans + len(o)
    assert matched + expired + j.pending("m") == preds
    assert matched + orphans + j.waiting_labels == labels
    assert j.pending("m") <= capacity and j.waiting_labels <= capacity
