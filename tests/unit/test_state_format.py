"""The checkpoint format (detector/state.py): a pipeline restored from it goes on
exactly as the one that wrote it, on both engines and with profiles, estimation and
data quality; the classes it may hold are exactly those real states hold; anything
else, damaged or hostile is refused with a reason, fast, and never executed."""

from __future__ import annotations

import csv
import json
import pickle
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river import drift

from detector import state
from detector.config import Settings
from detector.formats import Inputs
from detector.kernels import stream as stream_kernel
from detector.metrics import DriftCollector, RunStatus
from detector.monitor import KernelChannel, ModelMonitor
from detector.pipeline import Pipeline
from detector.profile import build_profile
from detector.records import Record
from tests.formats_data import inferences, oip_json
from tests.streams import demo_stream

#: every detector a configuration can name, on every signal that takes it
EVERY_DETECTOR = {
    "feature": ["adwin", "cusum", "page_hinkley", "kswin", "jump"],
    "prediction": ["adwin", "kswin"],
    "error": ["ddm", "eddm", "hddm_a", "hddm_w", "fhddm", "adwin"],
    "categorical": ["cusum", "page_hinkley"],
    "label": ["adwin", "kswin"],
}
KEY = b"0123456789abcdef0123456789abcdef"


def _records(events: list[dict[str, Any]]) -> list[Record]:
    return [Record("prediction" if "features" in e else "label", json.dumps(e).encode(),
                   float(i)) for i, e in enumerate(events)]


def _regression(n: int, seed: int = 12) -> list[dict[str, Any]]:
    """A regressor's predictions with their labels (estimation's loss table)."""
    rng = np.random.default_rng(seed)
    return [{"model": "real", "prediction_id": f"r{i}", "features": {"x": float(rng.normal())},
             "prediction": float(rng.normal()), "label": float(rng.normal())}
            for i in range(n)]


def _profile(tmp: Path) -> Path:
    """A profile of the demo model's training data, with its score calibrator."""
    events = demo_stream(3000, seed=9)
    labels = {e["prediction_id"]: e["label"] for e in events if "label" in e}
    rows = [{**e["features"], "label": labels[e["prediction_id"]], "score": e["score"]}
            for e in events if "features" in e and e["prediction_id"] in labels]
    data = tmp / "train.csv"
    with data.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    profile, _ = build_profile(data, "fraud", label_column="label", score_column="score",
                               show_progress=False)
    out = tmp / "profile.json"
    out.write_text(json.dumps(profile.to_json()))
    return out


#: name: (settings, engine, events) for a directory to put a profile in
SCENARIOS: dict[str, Callable[[Path], tuple[Settings, str, list[dict[str, Any]]]]] = {
    "kernel": lambda tmp: (Settings(), "kernel", demo_stream(6000)),
    "river": lambda tmp: (Settings(detectors=EVERY_DETECTOR), "river", demo_stream(2500)),
    "kernel_with_river_detectors": lambda tmp: (
        Settings(detectors=EVERY_DETECTOR), "kernel", demo_stream(2500)),
    "profile": lambda tmp: (Settings(models={"fraud": {"profile": str(_profile(tmp))}},
                                     rolling_window=200), "kernel", demo_stream(4000)),
    "estimation": lambda tmp: (Settings(estimation={"warmup": 50}), "kernel",
                               [e for pair in zip(demo_stream(3000), _regression(3000))
                                for e in pair]),
}


def _run(p: Pipeline, records: list[Record], start: int) -> list[str]:
    """Feed ``records`` in batches of 400; the detections, as text (nan == nan)."""
    out = []
    for at in range(0, len(records), 400):
        result = p.process(records[at:at + 400], now=float(start + at))
        out += [repr(d) for d in result.detections]
    return out


def _metrics(p: Pipeline) -> str:
    return DriftCollector(p, threading.Lock(), RunStatus()).render()


def _header(blob: bytes) -> dict[str, Any]:
    at = len(state.MAGIC)
    (length,) = state._LENGTH.unpack_from(blob, at)
    return msgspec.msgpack.decode(blob[at + 4:at + 4 + length])


def _payload(blob: bytes) -> bytes:
    return blob[len(blob) - _header(blob)["payload_bytes"]:]


@pytest.fixture(scope="module")
def states(tmp_path_factory) -> dict[str, tuple[Settings, str, Pipeline, list[Record]]]:
    """Each scenario's pipeline after 60 % of its stream, and the rest of the stream."""
    out = {}
    for name, make in SCENARIOS.items():
        settings_, engine, events = make(tmp_path_factory.mktemp(name))
        records = _records(events)
        cut = len(records) * 6 // 10
        p = Pipeline(settings_, engine=engine)
        _run(p, records[:cut], 0)
        out[name] = (settings_, engine, p, records[cut:])
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_restored_pipeline_goes_on_exactly_as_the_original(states, name) -> None:
    settings_, engine, p, rest = states[name]
    fp = state.fingerprint(settings_.state_shape())
    blob = state.encode(p.snapshot(), {("predictions", 0): 7}, fp, events=9, key=KEY)
    restored = Pipeline(settings_, engine=engine)
    ckpt = state.decode(blob, fp, key=KEY)
    restored.restore(ckpt.state)
    assert (ckpt.offsets, ckpt.events) == ({("predictions", 0): 7}, 9)
    # the same bytes again: nothing was lost or reordered on the way
    assert _payload(state.encode(restored.snapshot(), {}, fp)) == _payload(blob)
    before = _metrics(p)
    assert _metrics(restored) == before
    a, b = _run(p, rest, 10**6), _run(restored, rest, 10**6)
    assert a == b and len(a) > 0
    assert _metrics(restored) == _metrics(p) != before


def test_shared_objects_and_cycles_come_back_shared(states) -> None:
    _, _, p, _ = states["profile"]
    fp = "fp"
    restored = state.decode(state.encode(p.snapshot(), {}, fp), fp).state
    monitor = restored["models"]["fraud"].versions["3"]
    assert isinstance(monitor, ModelMonitor)
    kernel_streams = [s for s in monitor.features.values() if s.kernel is not None]
    assert kernel_streams
    for s in kernel_streams:   # a channel's counters are its kernel state's array
        for c in s.channels:
            assert isinstance(c, KernelChannel) and c._counters is s.kernel.counters
    streams = list(monitor.features.values())
    assert all(s.ref is None or s.ref._make.__self__ is monitor for s in streams)
    specs = {id(c) for s in streams for c in [s.std] if c is not None}
    assert len(specs) == len(streams)   # one standardiser each, as written


def _classes(obj: Any) -> set[type]:
    """Every class of a user-defined object (not a builtin container or scalar)
    reachable from ``obj``."""
    seen, found, stack = set(), set(), [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, str | bytes | int | float | np.ndarray | np.generic):
            continue
        seen.add(id(o))
        t = type(o)
        if t.__module__ not in ("builtins", "collections", "array"):
            found.add(t)
        if isinstance(o, dict):
            stack += [*o.keys(), *o.values()]
        elif isinstance(o, list | tuple | set | frozenset) or t.__module__ == "collections":
            stack += list(o)
        elif hasattr(o, "__self__") and hasattr(o, "__func__"):
            stack.append(o.__self__)
        elif t.__module__.startswith(("pydantic", "detector.config")):
            continue
        else:
            stack += [v for k, v in getattr(o, "__dict__", {}).items()
                      if k not in state._CACHED.get(t, ())]      # as written
            stack += [getattr(o, n) for n in state._slots(t) if hasattr(o, n)]
    return found


def test_the_allowed_classes_are_exactly_those_real_states_hold(states) -> None:
    found = _classes([p.snapshot() for _, _, p, _ in states.values()])
    found |= _classes(_waiting_inputs().take(-1))
    assert found == set(state.ALLOWED.values())


def _waiting_inputs() -> Inputs:
    s = Settings(inputs=[{"format": "oip", "requests": "mlserver-input",
                          "responses": "mlserver-output"}])
    inputs = Inputs(s)
    inputs.convert(oip_json(inferences(2))[:3], 0.0)
    return inputs


def test_the_inputs_join_round_trips() -> None:
    before = _waiting_inputs()
    saved = state.decode(state.encode(before.take(-1), {}, "fp"), "fp").state
    assert _payload(state.encode(saved, {}, "fp")) == _payload(
        state.encode(before.take(-1), {}, "fp"))


@pytest.mark.parametrize("features", [20, 200])
def test_size_and_speed_against_pickle(features: int, record_property) -> None:
    """The encoding is deterministic and about the size of the pickle it replaces."""
    rng = np.random.default_rng(features)
    events = [{"model": "m", "prediction_id": str(i), "prediction": int(i % 2),
               "features": {f"f{j}": float(v) for j, v in enumerate(rng.normal(size=features))}}
              for i in range(2000)]
    p = Pipeline(Settings(max_features=features))
    _run(p, _records(events), 0)
    snapshot = p.snapshot()
    t0 = time.perf_counter()
    blob = state.encode(snapshot, {}, "fp")
    t1 = time.perf_counter()
    state.decode(blob, "fp")
    t2 = time.perf_counter()
    pickled = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
    t3 = time.perf_counter()
    pickle.loads(pickled)
    t4 = time.perf_counter()
    figures = {"features": features, "bytes": len(blob), "pickle_bytes": len(pickled),
               "encode_s": round(t1 - t0, 4), "decode_s": round(t2 - t1, 4),
               "pickle_dump_s": round(t3 - t2, 4), "pickle_load_s": round(t4 - t3, 4)}
    record_property("figures", figures)
    print(figures)
    assert _payload(state.encode(snapshot, {}, "fp")) == _payload(blob)
    assert len(blob) < 1.5 * len(pickled)


# -- refusals -------------------------------------------------------------------------


def _reason(blob: bytes, fp: str = "fp", key: bytes | None = None) -> str:
    with pytest.raises(state.CheckpointError) as info:
        state.decode(blob, fp, key)
    assert info.value.reason in state.REASONS
    return info.value.reason


def _sealed(payload: Any, key: bytes | None = None) -> bytes:
    """A well-formed envelope around a msgpack payload of our choosing."""
    return state.seal(msgspec.msgpack.encode(payload), {}, "fp", key=key)


def test_every_reason(tmp_path: Path) -> None:
    good = state.encode({"x": [1, 2.5, None]}, {("p", 0): 3}, "fp", key=KEY)
    unsigned = state.encode({"x": 1}, {}, "fp")
    ran = tmp_path / "ran"
    old = b"DRIFTCKPT1\n" + b"\0" * 32 + pickle.dumps(_Executes(str(ran)))
    flip = bytearray(good)
    flip[-3] ^= 1
    assert {
        "truncated": _reason(good[:-1]),
        "truncated in header": _reason(good[:12]),
        "not_a_checkpoint": _reason(b"PK\x03\x04 a zip file"),
        "version": _reason(old),
        "newer version": _reason(b"DRIFTCKPT3\n" + good[11:]),
        "too_large": _reason(state.MAGIC + b"\xff\xff\xff\xff"),
        "malformed": _reason(_sealed({0: "not a reference"})),
        "unsigned": _reason(unsigned, key=KEY),
        "signature": _reason(good, key=b"k" * 32),
        "checksum": _reason(bytes(flip)),
        "settings": _reason(good, fp="other"),
        "unknown_type": _reason(_sealed([[["os.system", []]], {13: [0]}])),
    } == {"truncated": "truncated", "truncated in header": "truncated",
          "not_a_checkpoint": "not_a_checkpoint", "version": "version",
          "newer version": "version", "too_large": "too_large", "malformed": "malformed",
          "unsigned": "unsigned", "signature": "signature", "checksum": "checksum",
          "settings": "settings", "unknown_type": "unknown_type"}
    assert not ran.exists()
    assert state.decode(good, "fp").offsets == {("p", 0): 3}   # no key: accepted on checksums
    with pytest.raises(state.CheckpointError, match="never unpickled"):
        state.decode(old, "fp")


class _Executes:
    """A pickle of this would create a file when loaded: format 1 must never be."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_classes_and_methods_outside_the_allowlist_are_refused() -> None:
    assert _reason(_sealed([[["builtins.eval", []]], {13: [0]}])) == "unknown_type"
    assert _reason(_sealed([[["posix.system", []]], {12: [0, ["ls"]]}])) == "unknown_type"
    pipeline_name = "detector.pipeline.ModelState"
    assert _reason(_sealed([[[pipeline_name, ["__class__"]]], {13: [0, 1]}])) == "malformed"
    assert _reason(_sealed([[[pipeline_name, []]], {15: [0, "process", {13: [0]}]}])
                   ) == "unknown_type"
    assert _reason(_sealed([[], {10: ["|O", [1], b"\0" * 8]}])) == "unknown_type"
    assert _reason(_sealed([[], {99: 1}])) == "unknown_type"


def test_states_the_compiled_code_trusts_are_checked() -> None:
    """The kernels do not check bounds: a stream state whose arrays do not fit together,
    or a River compiled object whose bytes do not parse or do not match its numbers, is
    refused, never handed on."""
    good = stream_kernel.new_state([("adwin", {}), ("cusum", {})])
    assert _payload(state.encode(state.decode(state.encode(good, {}, "fp"), "fp").state,
                                 {}, "fp")) == _payload(state.encode(good, {}, "fp"))
    bad = good._replace(counters=np.zeros((5, 3), dtype=np.int64))
    assert _reason(state.encode(bad, {}, "fp")) == "malformed"
    rust = [["river._river_rust.drift.AdaptiveWindowing", []]]
    assert _reason(_sealed([rust, {17: [0, [0.002, 32, 5, 5, 10], b"junk"]}])) == "malformed"
    assert _reason(_sealed([rust, {17: [0, [0.002, 1 << 32, 5, 5, 10], b""]}])) == "malformed"
    helper = drift.ADWIN()._helper
    other = [0.002, 64, 5, 5, 10]   # numbers that do not match the state's own
    assert _reason(_sealed([rust, {17: [0, other, helper.__getstate__()]}])) == "malformed"


def test_hostile_structures_are_refused_fast_and_small() -> None:
    """Deep nesting, huge declared lengths, lying shapes: a reason in milliseconds."""
    cases = {
        "deep": state.seal(b"\x92\x90" + b"\x91" * 5000 + b"\xc0", {}, "fp"),
        "deep maps": state.seal(b"\x92\x90" + b"\x81\xa1a" * 5000 + b"\xc0", {}, "fp"),
        "deep tuples": state.seal(b"\x92\x90" + b"\x81\x01\x91" * 10_000 + b"\xc0", {}, "fp"),
        "huge array": state.seal(b"\x92\x90\xdd\xff\xff\xff\xff", {}, "fp"),
        "huge map": state.seal(b"\x92\x90\xdf\xff\xff\xff\xff", {}, "fp"),
        "lying shape": _sealed([[], {10: ["<f8", [1 << 40, 1 << 40], b""]}]),
        "deque beyond its maxlen": _sealed([[], {7: [2, list(range(10))]}]),
        "deque maxlen beyond memory": _sealed([[], {7: [1 << 63, []]}]),
        "reference ahead": _sealed([[], [{0: 5}]]),
        "reference to a tuple being read": _sealed([[], {1: [{0: 0}]}]),
    }
    for name, blob in cases.items():
        started = time.perf_counter()
        assert _reason(blob) in ("malformed", "too_large", "unknown_type"), name
        assert time.perf_counter() - started < 0.5, name


def test_memory_of_a_hostile_payload_is_bounded() -> None:
    """1 MB of empty maps (the worst msgpack has: 1 byte each, ~64 as Python objects)
    costs at most ~80 MB: the price of any object format read into Python (pickle's too);
    with checkpoint.key set, a blob that is not ours is refused before it is read."""
    blob = state.seal(b"\x92\x90\xdd" + (1 << 20).to_bytes(4, "big") + b"\x80" * (1 << 20),
                      {}, "fp")
    tracemalloc.start()
    try:
        state.decode(blob, "fp")
    except state.CheckpointError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * len(blob)


# -- fuzzing --------------------------------------------------------------------------

_REAL = state.encode({"models": {"m": [1.5, "a", {"b": (1, 2)}]}, "n": np.arange(6.0)},
                     {("predictions", 3): 99}, "fp", events=4)
_SIGNED = state.encode({"x": np.arange(4)}, {}, "fp", key=KEY)
FUZZ = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


def _refused_or_read(blob: bytes, key: bytes | None = None) -> None:
    started = time.perf_counter()
    try:
        state.decode(blob, "fp", key)
    except state.CheckpointError as exc:
        assert exc.reason in state.REASONS
    assert time.perf_counter() - started < 0.5


@FUZZ
@given(st.integers(0, len(_REAL) - 1))
def test_fuzz_truncated(cut: int) -> None:
    with pytest.raises(state.CheckpointError) as info:
        state.decode(_REAL[:cut], "fp")
    assert info.value.reason in ("truncated", "checksum", "not_a_checkpoint")


@FUZZ
@given(st.sampled_from([(_REAL, None), (_SIGNED, KEY), (_SIGNED, None)]),
       st.data())
def test_fuzz_bit_flips_are_always_caught(case, data) -> None:
    blob, key = case
    at = data.draw(st.integers(0, len(blob) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(blob)
    flipped[at] ^= 1 << bit
    with pytest.raises(state.CheckpointError) as info:
        state.decode(bytes(flipped), "fp", key)
    assert info.value.reason in state.REASONS


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([b"", state.MAGIC, b"DRIFTCKPT1\n"]))
def test_fuzz_random_bytes(tail: bytes, head: bytes) -> None:
    with pytest.raises(state.CheckpointError):
        state.decode(head + tail, "fp")


_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 64) - 1),
                  st.floats(), st.text(max_size=20), st.binary(max_size=40))
_NAMES = st.sampled_from([*state.ALLOWED, "os.system", "builtins.eval", "subprocess.Popen",
                          "detector.state.FileStore", "", "x" * 300])
_NODE = st.recursive(_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=6),
    st.dictionaries(st.text(max_size=8), inner, max_size=5),
    st.builds(lambda tag, body: {tag: body}, st.integers(-2, 20), inner),
    st.builds(lambda tag, body: {tag: body}, st.integers(0, 17), st.lists(inner, max_size=4)),
), max_leaves=40)
_TABLE = st.lists(st.tuples(_NAMES, st.lists(st.text(max_size=12), max_size=4)).map(list),
                  max_size=4)


@FUZZ
@given(_TABLE, _NODE)
def test_fuzz_hostile_payloads(table, node) -> None:
    """Any msgpack state with any class table: read (only allowed classes built) or
    refused with a reason; never another exception."""
    _refused_or_read(_sealed([table, node]))
    _refused_or_read(_sealed([table, node], key=KEY), key=KEY)


def _nodes(tree: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(tree, list):
        for i, x in enumerate(tree):
            out += _nodes(x, (*path, i))
    elif isinstance(tree, dict):
        for k, v in tree.items():
            out += _nodes(v, (*path, k))
    return out


@pytest.fixture(scope="module")
def real_tree(states) -> Any:
    _, _, p, _ = states["kernel_with_river_detectors"]
    blob = state.encode(p.snapshot(), {}, "fp")
    return msgspec.msgpack.decode(_payload(blob))


def test_fuzz_wrong_field_types_in_a_real_state(real_tree) -> None:
    """A real state with one value replaced by a value of another type: read or refused
    with a reason, never another exception."""
    paths = _nodes(real_tree)

    @FUZZ
    @given(st.sampled_from(paths), _NODE)
    def replace(path: tuple, node: Any) -> None:
        tree = msgspec.msgpack.decode(msgspec.msgpack.encode(real_tree))
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        if not path:
            return
        parent[path[-1]] = node
        _refused_or_read(_sealed(tree))

    replace()
