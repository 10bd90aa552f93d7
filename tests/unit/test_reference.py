"""Reference distances equal independent numpy/scipy computations on the same windows;
known shifts are detected by their method; long stable streams raise no alarm.

All the windows of a batch are evaluated at once (``window_distances``); every distance
of every window equals, to the last bit (``==``), the one-window definition
(``distances``) that the stream used before, on random streams and configurations
(hypothesis) and on a million values, and the detections are the same."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp

from detector.config import ReferenceSettings, Settings
from detector.monitor import Detection, ReferenceStream
from detector.pipeline import Pipeline, Record
from detector.reference import (
    CategoricalReference,
    NumericReference,
    Profile,
    Reference,
    effective_fraction,
)

QUIET = {"feature": [], "prediction": [], "error": [], "categorical": [], "label": []}
CATS = np.array(["DE", "FR", "US", "GB", "NL", "ES", "IT"])
MIX = np.array([0.35, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05])


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    p, q = np.clip(p, 1e-4, None), np.clip(q, 1e-4, None)
    return float(((q - p) * np.log(q / p)).sum())


def _records(rows: list[dict], labels: list | None = None) -> list[Record]:
    out = []
    for i, f in enumerate(rows):
        event = {"model": "m", "model_version": "1", "prediction_id": str(i), "features": f,
                 "prediction": 1}
        if labels is not None:
            event["label"] = labels[i]
        out.append(Record("prediction", json.dumps(event).encode()))
    return out


def _feed(pipeline: Pipeline, records: list[Record], batch: int) -> list:
    found = []
    for k in range(0, len(records), batch):
        found += pipeline.process(records[k:k + batch], now=0.0).detections
    return found


@pytest.mark.parametrize("batch", [1, 37, 1000])
def test_distances_equal_scipy_on_the_last_window_whatever_the_batching(batch: int) -> None:
    rng = np.random.default_rng(batch)
    train_x, train_c = rng.normal(0, 1, 20_000), rng.choice(CATS, 20_000, p=MIX)
    profile = Profile("m", None, {
        "x": NumericReference.from_values(train_x, bins=10),
        "c": CategoricalReference.from_counts(dict(zip(*np.unique(train_c, return_counts=True)))
                                              , top_k=5)})
    settings = Settings(detectors=QUIET, reference={"window": 500, "evaluate_every": 50})
    p = Pipeline(settings)
    p.profiles[("m", None)] = profile
    n = 2_050                                    # a multiple of evaluate_every
    x = rng.normal(0.3, 1.2, n)
    c = rng.choice(CATS, n, p=MIX[::-1] / MIX.sum())
    _feed(p, _records([{"x": float(a), "c": str(b)} for a, b in zip(x, c)]), batch)
    mon = p.models["m"].versions["1"]
    got = {(r.feature, ch.name): ch.value for r in mon.references() for ch in r.channels}

    ref_x = profile.features["x"]
    win = x[-500:]
    p_ref = ref_x.counts / ref_x.counts.sum()
    q = np.bincount(np.searchsorted(ref_x.edges, win, side="right"),
                    minlength=ref_x.counts.size) / win.size
    assert got[("x", "psi")] == pytest.approx(_psi(p_ref, q), abs=1e-9)
    assert got[("x", "js")] == pytest.approx(jensenshannon(p_ref, q, base=2), abs=1e-9)
    assert got[("x", "ks")] == pytest.approx(ks_2samp(win, ref_x.sample).statistic, abs=1e-9)

    ref_c = profile.features["c"]
    top = list(ref_c.categories)
    codes = np.array([top.index(v) if v in top else len(top) for v in c[-500:]])
    wc = np.bincount(codes, minlength=len(top) + 1)
    pc = ref_c.counts / ref_c.counts.sum()
    assert got[("c", "psi")] == pytest.approx(_psi(pc, wc / wc.sum()), abs=1e-9)
    assert got[("c", "js")] == pytest.approx(jensenshannon(pc, wc / wc.sum(), base=2), abs=1e-9)
    table = np.vstack([ref_c.counts, wc])
    table = table[:, table.sum(axis=0) > 0]
    expected = chi2_contingency(table, correction=False).pvalue
    assert got[("c", "chi2")] == pytest.approx(expected, rel=1e-9, abs=1e-300)


def _stream(seed: int, n: int, change_at: int | None) -> tuple[list[dict], list[int]]:
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for i in range(n):
        late = change_at is not None and i >= change_at
        rows.append({"shifted": float(rng.normal(1.0 if late else 0.0, 1.0)),
                     "stable_norm": float(rng.normal(5, 2)),
                     "stable_lognorm": float(rng.lognormal(0, 1)),
                     "stable_int": float(rng.integers(0, 6)),
                     "mix": str(rng.choice(CATS, p=MIX[::-1] / MIX.sum() if late else MIX)),
                     "stable_cat": str(rng.choice(CATS, p=MIX))})
        labels.append(int(rng.random() < (0.5 if late else 0.2)))
    return rows, labels


@pytest.mark.parametrize("seed", [11, 12])
def test_no_false_alarm_over_50000_stable_events_with_the_defaults(seed: int) -> None:
    rows, labels = _stream(seed, 50_000, change_at=None)
    p = Pipeline(Settings(detectors=QUIET))
    found = _feed(p, _records(rows, labels), 500)
    assert found == []
    mon = p.models["m"].versions["1"]
    assert all(ch.value is not None for r in mon.references() for ch in r.channels)


def test_each_known_shift_is_detected_by_its_method_and_nothing_else_fires() -> None:
    rows, labels = _stream(21, 12_000, change_at=6_000)
    p = Pipeline(Settings(detectors=QUIET))
    found = _feed(p, _records(rows, labels), 500)
    fired = {(d.signal, d.feature, d.detector) for d in found}
    assert {("feature", "shifted", m) for m in ("psi", "js", "ks")} <= fired
    assert {("feature", "mix", m) for m in ("psi", "chi2")} <= fired
    assert ("label", "", "psi") in fired               # 0/1 labels: a numeric reference
    assert {f for s, f, _ in fired if s == "feature"} == {"shifted", "mix"}
    assert all(d.index >= 6_000 for d in found)
    first = min(d.index for d in found if d.feature == "shifted")
    assert first < 6_000 + 1_000                 # within one window of the change


def _ar1(rng: np.random.Generator, phi: float, n: int) -> np.ndarray:
    noise, out, prev = rng.normal(0.0, np.sqrt(1 - phi * phi), n), np.empty(n), 0.0
    for i, e in enumerate(noise.tolist()):
        prev = phi * prev + e
        out[i] = prev
    return out


def test_ks_and_chi2_allow_for_autocorrelation_and_still_see_a_change() -> None:
    """An AR(1) stream with phi 0.9 (10 streams of 2 x 10^4 values, a category from
    its level) raised 155 KS and 226 chi2 alarms per 10^6 values when its values were
    taken as independent; with the effective sample size it raises none before a shift
    of 2 sd at 15,000, which both still catch."""
    cfg = ReferenceSettings(numeric_methods=("ks",), categorical_methods=("chi2",))
    found: dict[str, list[int]] = {"ks": [], "chi2": []}
    for k in range(10):
        x = _ar1(np.random.default_rng(40 + k), 0.9, 20_000)
        x[15_000:] += 2.0
        numeric = ReferenceStream("m", "1", "feature", "x", cfg, None, (), None)
        categorical = ReferenceStream("m", "1", "feature", "c", cfg, None, (), None)
        out: list[Detection] = []
        numeric.flush(x, 0.0, out, x)
        categorical.flush(np.where(x > 0.5, "a", "b").tolist(), 0.0, out)
        assert numeric.fraction is not None and numeric.fraction < 0.15
        assert numeric.channels[0].threshold > 2 * cfg.thresholds.ks
        for d in out:
            found[d.detector].append(d.index)
    for method, at in found.items():
        assert at and all(i >= 15_000 for i in at), (method, at)      # only the change


def test_effective_fraction_of_independent_and_dependent_values() -> None:
    rng = np.random.default_rng(3)
    iid = rng.normal(size=20_000)
    assert effective_fraction(np.argsort(np.argsort(iid)), categorical=False) > 0.95
    ar = _ar1(rng, 0.8, 20_000)
    assert abs(effective_fraction(np.argsort(np.argsort(ar)), categorical=False)
               - 0.2 / 1.8) < 0.02
    runs = np.repeat(rng.integers(0, 3, 2000), 10)         # categories in runs of 10
    assert effective_fraction(runs, categorical=True) < 0.1
    assert effective_fraction(rng.integers(0, 3, 20_000), categorical=True) > 0.95


def test_online_share_streams_catch_a_category_mix_change() -> None:
    rows, _ = _stream(5, 12_000, change_at=6_000)
    p = Pipeline(Settings(detectors={**QUIET, "categorical": ["adwin"]}))
    found = _feed(p, _records(rows), 250)
    shares = {(d.feature, d.category) for d in found if d.detector == "adwin"}
    assert shares and all(f == "mix" and c for f, c in shares), shares
    assert ("mix", "DE") in shares                # DE falls from 35 % to 5 %
    mon = p.models["m"].versions["1"]
    names = {s.category for s in mon.streams() if s.feature == "stable_cat" and s.category}
    assert len(names) == Settings().reference.share_streams + 1   # top 5 + __other__
    assert "__other__" in names


def test_a_profile_catches_drift_that_a_warmup_reference_learns_as_normal() -> None:
    rng = np.random.default_rng(3)
    profile = Profile("m", None, {"x": NumericReference.from_values(rng.normal(0, 1, 10_000),
                                                                    bins=10)})
    served = [{"x": float(v)} for v in rng.normal(1.5, 1, 4_000)]   # shifted from the start
    warm = Pipeline(Settings(detectors=QUIET))
    assert _feed(warm, _records(served), 500) == []
    with_profile = Pipeline(Settings(detectors=QUIET))
    with_profile.profiles[("m", None)] = profile
    found = _feed(with_profile, _records(served), 500)
    assert {d.detector for d in found} == {"psi", "js", "ks"}
    assert min(d.index for d in found) == 999     # the first full window


# --- all windows at once == one window at a time --------------------------------------

class PerWindow(ReferenceStream):
    """The stream as it was before the windows were evaluated together (its evaluation
    and judgement, verbatim): each window by itself through ``distances``, the reference
    implementation; every result kept."""

    __slots__ = ("evaluated",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.evaluated: list[dict[str, float]] = []

    def _evaluate(self, new: np.ndarray, now: float, out: list[Detection]) -> None:
        w, every = self.cfg.window, self.cfg.evaluate_every
        combined = np.concatenate([self.history.astype(new.dtype), new])
        start, self.seen = self.seen, self.seen + new.size
        offset = self.seen - combined.size
        first = (start // every + 1) * every
        lowest = -(-w // every) * every
        numeric = isinstance(self.reference, NumericReference)
        for end in range(max(first, lowest), self.seen + 1, every):
            window = combined[end - w - offset: end - offset]
            if self.fraction is None:       # the first window compared: its dependence
                self._correct(self.reference.codes(combined[:w]) if numeric
                              else combined[:w], numeric)
            names = [c.name for c in self.channels]
            found = (self.reference.distances(window, names) if numeric
                     else self.reference.distances(window, names, self.fraction))
            self.evaluated.append(found)
            self._judge_one(found, end, now, out)
        self.history = combined[-w:]

    def _judge_one(self, distances: dict[str, float], end: int, now: float,
                   out: list[Detection]) -> None:
        index = self.warmup_used + end - 1
        for ch in self.channels:
            value = distances[ch.name]
            ch.value = value
            if ch.alarming(value):
                if not ch.above:
                    ch.detections += 1
                    out.append(Detection(self.model, self.version, self.signal, self.feature,
                                         ch.name, index, value, now,
                                         {"threshold": ch.threshold}))
                ch.above = True
                ch.last_at = now
            elif ch.above and ch.calm(value):
                ch.above = False


class AllAtOnce(ReferenceStream):
    """The stream as it is, keeping the distances of every window it judged."""

    __slots__ = ("evaluated",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.evaluated: list[dict[str, float]] = []

    def _judge(self, distances: dict[str, np.ndarray], ends: np.ndarray, now: float,
               out: list[Detection]) -> None:
        columns = {m: v.tolist() for m, v in distances.items()}
        self.evaluated += [{m: v[k] for m, v in columns.items()} for k in range(ends.size)]
        super()._judge(distances, ends, now, out)


def _run(cls: type[ReferenceStream], cfg: ReferenceSettings, reference: Reference | None,
         values: list, flushes: list[int]) -> tuple[ReferenceStream, list, list]:
    stream = cls("m", "1", "feature", "x", cfg, reference, (), None)
    found: list[Detection] = []
    positions: list[int] = []
    at = 0
    for k, size in enumerate(flushes):
        positions.append(stream.flush(values[at:at + size], float(k), found))
        at += size
    return stream, found, positions


def _assert_same_stream(cfg: ReferenceSettings, reference: Reference | None, values: list,
                        flushes: list[int]) -> AllAtOnce:
    old, old_found, old_positions = _run(PerWindow, cfg, reference, values, flushes)
    new, new_found, new_positions = _run(AllAtOnce, cfg, reference, values, flushes)
    assert new.evaluated == old.evaluated                 # every distance of every window
    assert new_found == old_found                         # same detections, values, indices
    assert new_positions == old_positions
    state = [(c.name, c.value, c.above, c.detections, c.last_at) for c in old.channels]
    assert [(c.name, c.value, c.above, c.detections, c.last_at) for c in new.channels] == state
    assert new.seen == old.seen
    return new


def _per_window(ref: Reference, data: np.ndarray, ends: np.ndarray, window: int,
                methods: tuple[str, ...]) -> dict[str, list[float]]:
    found = [ref.distances(data[e - window:e], methods) for e in ends.tolist()]
    return {m: [d[m] for d in found] for m in methods}


LETTERS = np.array(list("abcdefghijklmnop"))


def _rng(draw: st.DrawFn) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


@st.composite
def numbers(draw: st.DrawFn, n: int) -> np.ndarray:
    """``n`` seeded numbers: a constant, or a mix of halves between -1.5 and 4 (ties with
    each other and with a reference drawn the same way, its sample and its edges) and
    normal values of a drawn mean and spread (some outside every bin)."""
    rng = _rng(draw)
    if draw(st.integers(0, 9)) == 0:
        return np.full(n, rng.integers(-3, 9) / 2)
    tied = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
    normal = rng.normal(draw(st.floats(-3, 3)), draw(st.floats(0.01, 3)), n)
    return np.where(rng.random(n) < tied, rng.integers(-3, 9, n) / 2, normal)


@st.composite
def letters(draw: st.DrawFn, n: int) -> np.ndarray:
    """``n`` seeded categories of a drawn mix, some of them outside any reference."""
    rng = _rng(draw)
    return rng.choice(LETTERS, n, p=rng.dirichlet(np.full(LETTERS.size, draw(
        st.sampled_from([0.05, 0.3, 1.0, 5.0])))))


@st.composite
def numeric_references(draw: st.DrawFn) -> NumericReference:
    base = draw(numbers(draw(st.integers(1, 2000))))
    return NumericReference.from_values(base, bins=draw(st.integers(2, 100)))


@st.composite
def categorical_references(draw: st.DrawFn) -> CategoricalReference:
    """Profiles with empty categories and an empty rest (left out of chi2's table when the
    window has none either), and references learnt with a small ``top_k``."""
    names = draw(st.lists(st.sampled_from(LETTERS[:13].tolist()), min_size=1, max_size=13,
                          unique=True))
    counts = draw(st.lists(st.integers(0, 40), min_size=len(names), max_size=len(names)))
    other = draw(st.integers(0, 5))
    if sum(counts) + other == 0:
        counts[0] = 1
    if draw(st.booleans()):
        return CategoricalReference.from_json(
            {"kind": "categorical", "categories": dict(zip(names, counts, strict=True)),
             "other": other})
    return CategoricalReference.from_counts(dict(zip(names, counts, strict=True)),
                                            top_k=draw(st.integers(1, 13)), other=other)


@st.composite
def windows(draw: st.DrawFn) -> tuple[int, int]:
    window = draw(st.integers(10, 150))
    return window, draw(st.integers(1, window))


@st.composite
def ends(draw: st.DrawFn, window: int, n: int) -> np.ndarray:
    """Increasing window ends: evenly spaced from a drawn start, or anywhere."""
    if draw(st.booleans()):
        return np.arange(draw(st.integers(window, n)), n + 1, draw(st.integers(1, window)))
    return np.array(sorted(draw(st.sets(st.integers(window, n), min_size=1, max_size=40))))


@settings(max_examples=300, deadline=None)
@given(ref=numeric_references(), shape=windows(), data=st.data())
def test_numeric_windows_at_once_equal_each_window_alone(ref: NumericReference,
                                                         shape: tuple[int, int],
                                                         data: st.DataObject) -> None:
    window, _ = shape
    x = data.draw(numbers(data.draw(st.integers(window, 1500))))
    at = data.draw(ends(window, x.size))
    methods = data.draw(st.permutations(["psi", "js", "ks"]))
    got = ref.window_distances(ref.codes(x), at, window, methods)
    assert list(got) == methods
    assert {m: v.tolist() for m, v in got.items()} == _per_window(ref, x, at, window, methods)


@settings(max_examples=300, deadline=None)
@given(ref=categorical_references(), shape=windows(), data=st.data())
def test_categorical_windows_at_once_equal_each_window_alone(ref: CategoricalReference,
                                                             shape: tuple[int, int],
                                                             data: st.DataObject) -> None:
    window, _ = shape
    codes = ref.codes(data.draw(letters(data.draw(st.integers(window, 1500)))).tolist())
    at = data.draw(ends(window, codes.size))
    methods = data.draw(st.permutations(["psi", "js", "chi2"]))
    got = ref.window_distances(codes, at, window, methods)
    assert {m: v.tolist() for m, v in got.items()} == _per_window(ref, codes, at, window,
                                                                  methods)


@st.composite
def flush_sizes(draw: st.DrawFn, n: int) -> list[int]:
    """Batches covering ``n`` values, some empty: windows straddle them, and a batch may
    hold several window ends, one, or none."""
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=30)))
    return np.diff([0, *cuts, n]).tolist()


THRESHOLDS = st.fixed_dictionaries({
    "psi": st.floats(0.001, 0.5), "js": st.floats(0.01, 0.5), "ks": st.floats(0.01, 0.5),
    "chi2": st.floats(1e-6, 0.5)})


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["numeric", "categorical", "learnt"]), shape=windows(),
       thresholds=THRESHOLDS, data=st.data())
def test_a_stream_finds_the_same_distances_and_detections_as_window_by_window(
        kind: str, shape: tuple[int, int], thresholds: dict[str, float],
        data: st.DataObject) -> None:
    """Whatever the batches: windows straddling them (the codes of the last window kept
    between batches), several ends in one batch, values of the other kind left out, a
    reference learnt from the first values (detections indexed after them)."""
    window, every = shape
    warmup = data.draw(st.integers(10, 300))
    cfg = ReferenceSettings(window=window, evaluate_every=every, warmup=warmup,
                            bins=data.draw(st.integers(2, 100)), top_k=data.draw(
                                st.integers(1, 12)),
                            thresholds=thresholds)
    reference: Reference | None = None
    if kind == "numeric":
        reference = data.draw(numeric_references())
    elif kind == "categorical":
        reference = data.draw(categorical_references())
    n = data.draw(st.integers(1, 2500))
    strings = data.draw(st.booleans()) if kind == "learnt" else kind == "categorical"
    values = (data.draw(letters(n)) if strings else data.draw(numbers(n))).tolist()
    odd = _rng(data.draw).random(n) < data.draw(st.sampled_from([0.0, 0.05]))
    values = [(1.5 if strings else "?") if o else v for v, o in zip(values, odd, strict=True)]
    _assert_same_stream(cfg, reference, values, data.draw(flush_sizes(n)))


def test_edge_cases_of_numeric_references_are_equal_to_the_last_bit() -> None:
    """A constant reference, values on its edges and sample values, values outside
    every bin, a window of one repeated value, a window that is the sample itself."""
    rng = np.random.default_rng(4)
    cases = {
        "constant": (np.full(500, 2.5), np.r_[np.full(60, 2.5), rng.normal(2.5, 1, 140)]),
        "integers": (rng.integers(0, 4, 800).astype(float),
                     rng.integers(-1, 6, 400).astype(float)),
        "outside": (rng.normal(0, 1, 1000), np.r_[rng.normal(-50, 1, 100),
                                                   rng.normal(50, 1, 100)]),
        "repeated": (rng.normal(0, 1, 1000), np.full(300, 0.25)),
    }
    for name, (base, x) in cases.items():
        ref = NumericReference.from_values(base, bins=10)
        on = np.r_[ref.edges, ref.sample, x]                    # ties with everything
        for data in (x, rng.permutation(on)[:400], ref.sample):
            ends = np.arange(50, data.size + 1, 7)
            got = ref.window_distances(ref.codes(data), ends, 50, ["psi", "js", "ks"])
            assert ({m: v.tolist() for m, v in got.items()}
                    == _per_window(ref, data, ends, 50, ("psi", "js", "ks"))), name
    assert NumericReference.from_values(np.full(500, 2.5), bins=10).edges.tolist() == [2.5]


def _regimes(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Rounded normal values (ties) whose mean and spread change every ``length``."""
    parts = [np.round(rng.normal(rng.normal(0, 0.3), rng.uniform(0.7, 1.5), length), 2)
             for _ in range(-(-n // length))]
    return np.concatenate(parts)[:n]


def _batches(rng: np.random.Generator, n: int) -> list[int]:
    sizes = rng.integers(1, 3_000, n // 700).tolist()
    return [*sizes, max(0, n - sum(sizes))]


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test_a_million_values_give_the_same_distances_and_detections(kind: str) -> None:
    """>= 1M values with the defaults (window 1000, every 100, 10 bins, a 5000-value
    sample): 10,000 windows, evaluated in chunks of a few hundred windows."""
    n = 1_000_000
    rng = np.random.default_rng(2024)
    cfg = ReferenceSettings()
    if kind == "numeric":
        reference: Reference = NumericReference.from_values(np.round(rng.normal(0, 1, 50_000),
                                                                     2), bins=10)
        values: list = _regimes(rng, n, 40_000).tolist()
    else:
        reference = CategoricalReference.from_counts(
            dict(zip(CATS.tolist(), (MIX * 10_000).astype(int).tolist(), strict=True)), top_k=5)
        mixes = [rng.dirichlet(MIX * 30) for _ in range(n // 40_000)]
        values = np.concatenate([rng.choice(CATS, 40_000, p=p) for p in mixes]).tolist()
    new = _assert_same_stream(cfg, reference, values, _batches(rng, n))
    assert len(new.evaluated) == n // 100 - 9
    assert sum(c.detections for c in new.channels) > 20      # episodes begin and end
