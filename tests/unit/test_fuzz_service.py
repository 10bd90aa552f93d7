"""Fuzzing of the whole service path, not only ``decode`` (issue 10): bytes go through
``decode``, ``Pipeline.process``, the collector and both exposition formats.

Inputs are arbitrary bytes, arbitrary JSON (deep nesting, long strings, integers
over Python's 4,300-digit limit, 400-digit timestamps, 1.7e308, lone surrogates
both as ``\\ud800`` escapes and as the raw bytes ``ed a0 80``, control characters,
NUL, very long names) and almost-valid events: a valid prediction or label with
one to three fields replaced by such a value. Every batch mixes them with valid
events of a model that no hostile input names. The properties checked:

- nothing raises;
- every record is counted once, as an event or as a whole-message rejection
  (the pipeline's dead list), and every reason is one of ``REJECT_REASONS``;
- every valid event of the batch is counted, fed to its streams and joined;
- every rejection the pipeline counted is exported;
- the text exposition and the OpenMetrics one render and parse back, their label
  values are UTF-8 of at most ``MAX_NAME_LENGTH`` characters, no series appears
  twice, and every ``drift_*`` statistic is finite and within its range;
- ``promtool check metrics`` finds no error and no lint message that the same
  service fed only valid events does not have.

Two extreme values in a feature's warm-up (``1.7e308`` and ``-1.7e308``, and
``1e101`` and ``-1e101``: out of range, so counted as missing) must not keep a later
3-sigma mean shift of that feature from being detected online. The last tests are single messages that
must not decide anything for good: junk versions with the current time while a
backlog of an hour-old live version is read, a first prediction of the wrong type
(the task of a version), a message naming ``max_features`` junk features.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from detector.config import Settings
from detector.events import MAX_NAME_LENGTH, REJECT_REASONS
from detector.metrics import Exporter, RunStatus
from detector.pipeline import BatchResult, Pipeline
from detector.records import Record

NOW = time.time()
ISO = datetime.fromtimestamp(NOW - 60, tz=UTC).isoformat()
#: The model of the valid events: no hostile input is generated with this name.
VALID = "valid-7f3a9c"
KINDS = ("prediction", "label")
#: Kinds of rejection the contract knows: a whole message, one feature value, a timestamp.
REJECTION_KINDS = ("prediction", "label", "feature", "timestamp")
#: Small windows, so references, share streams and distances exist after a few events,
#: and small caps, so the class and version caps are reached by hostile input.
FUZZ_SETTINGS = Settings(reference={"warmup": 10, "window": 10, "evaluate_every": 10},
                         detection={"warmup": 20, "min_samples": 3},
                         max_classes=4, max_versions=2)
#: the metric families of each unit and the range of each of their members
METRIC_RANGES = {
    "drift_model_quality_ratio": {"accuracy": (0.0, 1.0), "precision": (0.0, 1.0),
                                  "recall": (0.0, 1.0), "f1": (0.0, 1.0),
                                  "roc_auc": (0.0, 1.0), "r2": (-math.inf, 1.0)},
    "drift_model_error": {"mae": (0.0, math.inf), "rmse": (0.0, math.inf)}}
DISTANCE_RANGES = {
    "drift_feature_distance": {"psi": (0.0, math.inf), "js": (0.0, 1.0), "ks": (0.0, 1.0)},
    "drift_feature_pvalue": {"chi2": (0.0, 1.0)}}


def _escaped(text: str) -> bytes:
    """A JSON string literal in ASCII: a lone surrogate becomes a ``\\udXXX`` escape."""
    return json.dumps(text).encode()


def _raw(text: str) -> bytes:
    """A JSON string literal in raw UTF-8: a lone surrogate becomes its three bytes,
    which ``json.loads(bytes)`` accepts."""
    return json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")


NUMBERS: tuple[bytes, ...] = (
    b"9" * 4301, b"-" + b"9" * 5000, b"1" + b"0" * 399, b"1" + b"0" * 4299,
    b"1.7e308", b"-1.7e308", b"1e309", b"-1e309", b"NaN", b"Infinity", b"-Infinity",
    b"1e100", b"-1e100", b"1.0000000000000002e100", b"1e101", b"5e-324", b"1e-400", b"-0.0",
    b"0", b"-1", b"9007199254740993", b"1" + b"0" * 30, b"32503680000", b"32503680000000",
)
STRINGS: tuple[bytes, ...] = (
    b'"bad\\ud800"', b'"\\udfff"', b'"x\\udc80y"', b'"\\ud800\\ud800"',
    b'"bad\xed\xa0\x80"', b'"\xed\xbf\xbf"', b'"\xff\xfe"', b'"\xc3"', b'"\xc0\xaf"',
    b'"a\\u0000b"', b'"\\u0000"', b'"nul\x00byte"', b'"ctl\x01"', b'"\\u001b[31mred"',
    b'"tab\\there"', b'"line\\nbreak"', b'"quote\\"and\\\\backslash"', b'"\\u007f"',
    b'"\\u2028\\u2029"', b'"\\ufeff"', b'"\\ud83d\\ude00"', b'"\xf0\x9f\x98\x80"',
    b'"caf\xc3\xa9"', b'""', b'" "', b'"__prediction__"', b'"__label__"', b'"__other__"',
    b'"country=DE"', b'"country"', b'"1"', b'"true"', b'"2999-01-01T00:00:00Z"',
    b'"9999-12-31T23:59:59+14:00"', b'"0001-01-01T00:00:00-14:00"',
    *(_escaped("n" * n) for n in (199, 200, 201, 256, 257, 10_000, 100_000)),
)
STRUCTURES: tuple[bytes, ...] = (
    b"null", b"true", b"false", b"[]", b"{}", b'[1, "a", null]', b'{"x": 1}',
    b"[" * 50_000 + b"]" * 50_000, b'{"a": ' * 3000 + b"1" + b"}" * 3000,
    b"{" + b", ".join(b'"f%d": %d' % (i, i) for i in range(300)) + b"}",
)
#: Feature names that generated label values could collide with.
COLLIDING = ("country=DE", "country=__other__", "__prediction__", "__label__", "__other__",
             "country")

_any_char = st.characters(codec=None, categories=["L", "N", "P", "S", "Z", "Cc", "Cs"])
text_fragments = st.one_of(
    st.sampled_from(STRINGS),
    st.builds(_escaped, st.text(_any_char, max_size=12)),
    st.builds(_raw, st.text(_any_char, max_size=12)),
)
number_fragments = st.one_of(
    st.sampled_from(NUMBERS),
    st.integers().map(lambda n: str(n).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: repr(x).encode()),
    st.integers(4290, 4400).map(lambda n: b"7" * n),
)
scalar_fragments = st.one_of(text_fragments, number_fragments, st.sampled_from(STRUCTURES))


def _array(items: list[bytes]) -> bytes:
    return b"[" + b", ".join(items) + b"]"


def _object(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b", ".join(k + b": " + v for k, v in pairs) + b"}"


json_fragments = st.recursive(
    scalar_fragments,
    lambda inner: st.lists(inner, max_size=4).map(_array)
    | st.lists(st.tuples(text_fragments, inner), max_size=4).map(_object),
    max_leaves=12)
field_names = st.sampled_from(["model", "model_version", "prediction_id", "timestamp",
                               "features", "prediction", "score", "label"]).map(_escaped)
random_documents = st.lists(st.tuples(field_names | text_fragments, json_fragments),
                            max_size=9).map(_object)

PREDICTION_FIELDS = ("model", "model_version", "prediction_id", "timestamp", "features",
                     "prediction", "score", "label", "amount", "country", "feature_name",
                     "extra_feature")
LABEL_FIELDS = ("model", "prediction_id", "label", "timestamp")


def _template(kind: str, pid: str) -> dict:
    if kind == "prediction":
        return {"model": "fraud", "model_version": "1", "prediction_id": pid, "timestamp": ISO,
                "features": {"amount": 12.5, "country": "DE"}, "prediction": 1, "score": 0.5}
    return {"model": "fraud", "prediction_id": pid, "label": 1, "timestamp": ISO}


def _fill(template: dict, fragments: dict[str, bytes]) -> bytes:
    """The template as JSON with each slot string replaced by its raw fragment."""
    raw = json.dumps(template).encode()
    for slot, fragment in fragments.items():
        raw = raw.replace(_escaped(slot), fragment)
    return raw


@st.composite
def almost_valid(draw: st.DrawFn) -> Record:
    """A valid prediction or label of model ``fraud`` with 1 to 3 fields made hostile."""
    kind = draw(st.sampled_from(KINDS))
    template = _template(kind, f"h{draw(st.integers(0, 30))}")
    fields = draw(st.lists(st.sampled_from(PREDICTION_FIELDS if kind == "prediction"
                                           else LABEL_FIELDS), min_size=1, max_size=3,
                           unique=True))
    fragments: dict[str, bytes] = {}
    # a replaced "features" object goes last: it replaces the slots of single features
    fields.sort(key=lambda name: name == "features")
    for i, name in enumerate(fields):
        slot = f"@@slot{i}@@"
        if name == "feature_name":
            template["features"][slot] = 1.0
            fragments[slot] = draw(text_fragments)
        elif name == "extra_feature":
            template["features"][draw(st.sampled_from(COLLIDING))] = slot
            fragments[slot] = draw(json_fragments)
        elif name in ("amount", "country"):
            template["features"][name] = slot
            fragments[slot] = draw(json_fragments)
        else:
            template[name] = slot
            fragments[slot] = draw(json_fragments)
    return Record(kind, _fill(template, fragments), NOW - 30)


hostile_records = st.one_of(
    st.builds(Record, st.sampled_from(KINDS), st.binary(max_size=300)),
    st.builds(Record, st.sampled_from(KINDS), random_documents),
    st.builds(Record, st.sampled_from(KINDS), st.sampled_from([None, b""])),
    almost_valid(),
)


def valid_records(n: int, start: int = 0) -> list[Record]:
    """``n`` predictions of model VALID; even ones carry their label inline, every third
    odd one gets a label message."""
    out = []
    for i in range(start, start + n):
        event = {"model": VALID, "model_version": "1", "prediction_id": f"v{i}",
                 "timestamp": ISO, "prediction": i % 2, "score": (i % 10) / 10,
                 "features": {"amount": float(i % 13), "country": "DEFRIT"[i % 3 * 2:][:2],
                              "age": 20 + i % 50}}
        if i % 2 == 0:
            event["label"] = (i // 2) % 2
        out.append(Record("prediction", json.dumps(event).encode(), NOW - 30))
        if i % 6 == 1:
            out.append(Record("label", json.dumps({"model": VALID, "prediction_id": f"v{i}",
                                                   "label": 1, "timestamp": ISO}).encode(),
                              NOW - 30))
    return out


def _expected(valid: list[Record]) -> tuple[int, int, int]:
    """(predictions, label messages, matched pairs) of a list of valid records."""
    predictions = [json.loads(r.value) for r in valid if r.kind == "prediction"]
    labels = sum(r.kind == "label" for r in valid)
    return len(predictions), labels, labels + sum("label" in e for e in predictions)


def _service(config: Settings = FUZZ_SETTINGS) -> tuple[Pipeline, Exporter]:
    pipeline = Pipeline(config)
    return pipeline, Exporter(pipeline, threading.Lock(), RunStatus())


def _process(pipeline: Pipeline, batches: list[list[Record]]) -> list[BatchResult]:
    """Apply each batch; check that each record is counted exactly once."""
    results = []
    for i, batch in enumerate(batches):
        result = pipeline.process(batch, now=NOW + i)
        assert result.events + len(result.dead) == len(batch), (
            f"{result.events} events + {len(result.dead)} rejected messages != "
            f"{len(batch)} records: {[(r.kind, r.reason) for r in result.rejections]}")
        for rejection in result.rejections:
            assert rejection.reason in REJECT_REASONS, rejection
            assert rejection.kind in REJECTION_KINDS, rejection
            # the loop's guard turns a bug into internal_error: for bytes, that is a failure
            assert rejection.reason != "internal_error", rejection
        results.append(result)
    return results


def _labels(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def render(exporter: Exporter) -> tuple[bytes, dict]:
    """Render both exposition formats, check them and return the text format with its
    samples as ``{(name, sorted labels): value}``."""
    text = generate_latest(exporter.registry)
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for s in family.samples:
            key = (s.name, _labels(s.labels))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
            for value in s.labels.values():
                assert len(value) <= MAX_NAME_LENGTH, f"{s.name}: label of {len(value)} chars"
    seen = set()
    om = generate_openmetrics(exporter.registry).decode("utf-8")
    for family in parse_openmetrics(om):
        for s in family.samples:
            key = (s.name, _labels(s.labels))
            assert key not in seen, f"duplicate OpenMetrics series {key}"
            seen.add(key)
    for (name, labels), value in samples.items():
        if not name.startswith("drift_"):
            continue
        assert math.isfinite(value), f"{name}{dict(labels)} = {value}"
        lab = dict(labels)
        assert value >= 0 or lab.get("metric") == "r2", f"{name}{lab} = {value}"
        if name in METRIC_RANGES:       # a metric in the family of its unit, in its range
            low, high = METRIC_RANGES[name][lab["metric"]]
            assert low <= value <= high, f"{name}{lab} = {value}"
        elif name in DISTANCE_RANGES:
            low, high = DISTANCE_RANGES[name][lab["method"]]
            assert low <= value <= high, f"{name}{lab} = {value}"
    return text, samples


def _total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def check_service(pipeline: Pipeline, exporter: Exporter, results: list[BatchResult],
                  valid: list[Record]) -> bytes:
    """The valid events are all counted and joined; what the pipeline rejected is exported;
    the exposition is sound. Returns the text exposition."""
    n_predictions, n_labels, n_matched = _expected(valid)
    state = pipeline.models[VALID]
    assert state.events == {"prediction": n_predictions, "label": n_labels}
    assert state.join["matched"] == n_matched
    text, samples = render(exporter)
    events = sum(r.events for r in results)
    assert _total(samples, "drift_events_total") == events
    counted = Counter((r.kind, r.reason) for res in results for r in res.rejections)
    for (kind, reason), n in counted.items():
        assert _total(samples, "drift_events_rejected_total", kind=kind, reason=reason) == n, (
            f"{n} rejections ({kind}, {reason}) counted, not exported as such")
    assert _total(samples, "drift_events_rejected_total") == sum(counted.values())
    assert _total(samples, "drift_stream_values_total", model=VALID, signal="feature",
                  feature="amount") == n_predictions
    return text


@st.composite
def batches(draw: st.DrawFn, hostile: st.SearchStrategy[Record] = hostile_records
            ) -> tuple[list[list[Record]], list[Record]]:
    """Hostile and valid records shuffled together and cut into one to three batches."""
    bad = draw(st.lists(hostile, min_size=1, max_size=20))
    valid = valid_records(draw(st.integers(1, 12)))
    records = draw(st.permutations(bad + valid))
    cuts = sorted(draw(st.lists(st.integers(0, len(records)), max_size=2)))
    bounds = [0, *cuts, len(records)]
    return [records[a:b] for a, b in itertools.pairwise(bounds)], valid


#: No shrinking: examples hold fragments of up to 100 kB, and shrinking them takes minutes;
#: the assertion messages name what failed.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
FUZZ = settings(max_examples=150, deadline=None, phases=NO_SHRINK,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(batches())
def test_hostile_batches_through_pipeline_collector_and_exposition(
        drawn: tuple[list[list[Record]], list[Record]]) -> None:
    records, valid = drawn
    pipeline, exporter = _service()
    results = _process(pipeline, records)
    check_service(pipeline, exporter, results, valid)


@FUZZ
@given(batches(almost_valid()))
def test_almost_valid_events_through_the_whole_service(
        drawn: tuple[list[list[Record]], list[Record]]) -> None:
    records, valid = drawn
    pipeline, exporter = _service()
    # a warm service first: references, share streams and distances exist for both models
    warm = valid_records(30, start=1000)
    fraud = [Record(r.kind, r.value.replace(VALID.encode(), b"fraud"), r.timestamp)
             for r in valid_records(30, start=2000)]
    results = _process(pipeline, [warm + fraud, *records])
    check_service(pipeline, exporter, results, warm + valid)


def catalogue() -> list[Record]:
    """Every hostile fragment in every field of both templates (deterministic)."""
    fragments = (*NUMBERS, *STRINGS, *STRUCTURES)
    out = []
    for kind, fields in (("prediction", PREDICTION_FIELDS), ("label", LABEL_FIELDS)):
        for name in fields:
            for k, fragment in enumerate(fragments):
                template = _template(kind, f"c{k}")
                if name == "feature_name":
                    template["features"]["@@slot@@"] = 1.0
                elif name == "extra_feature":
                    template["features"][COLLIDING[k % len(COLLIDING)]] = "@@slot@@"
                elif name in ("amount", "country"):
                    template["features"][name] = "@@slot@@"
                else:
                    template[name] = "@@slot@@"
                out.append(Record(kind, _fill(template, {"@@slot@@": fragment}), NOW - 30))
    return out


def _hostile_service() -> tuple[Pipeline, Exporter, bytes]:
    """A warm service fed the whole catalogue between valid events; checked, rendered."""
    pipeline, exporter = _service()
    valid = valid_records(60)
    bad = catalogue()
    records = random.Random(10).sample(bad + valid, len(bad) + len(valid))
    results = _process(pipeline, [records[:300], records[300:]])
    return pipeline, exporter, check_service(pipeline, exporter, results, valid)


def test_every_hostile_value_in_every_field() -> None:
    pipeline, _, _ = _hostile_service()
    assert sum(n for (kind, _), n in pipeline.rejected.items() if kind == "feature") > 0


def _lint(promtool: str, text: bytes) -> tuple[int, set[str]]:
    """``promtool check metrics`` on an exposition: exit code (0 clean, 3 lint
    problems, 1 error) and the lint messages."""
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          timeout=60, check=False)
    lines = (done.stdout + done.stderr).decode("utf-8", "replace").splitlines()
    return done.returncode, {line.strip() for line in lines if line.strip()}


def test_promtool_accepts_the_exposition_after_hostile_input(
        prometheus_tools: dict[str, str]) -> None:
    promtool = prometheus_tools["promtool"]
    clean, exporter = _service()
    _process(clean, [valid_records(60)])
    base_code, base_lint = _lint(promtool, generate_latest(exporter.registry))
    assert base_code in (0, 3), base_lint
    _, _, text = _hostile_service()
    code, lint = _lint(promtool, text)
    assert code in (0, 3), f"promtool check metrics failed ({code}): {sorted(lint)[:20]}"
    # lint about our metric names is the same with or without hostile values
    assert lint <= base_lint, f"lint messages caused by hostile input: {sorted(lint - base_lint)}"


@settings(max_examples=12, deadline=None, phases=NO_SHRINK,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batches())
def test_promtool_accepts_fuzzed_expositions(
        prometheus_tools: dict[str, str],
        drawn: tuple[list[list[Record]], list[Record]]) -> None:
    records, valid = drawn
    pipeline, exporter = _service()
    results = _process(pipeline, records)
    code, lint = _lint(prometheus_tools["promtool"],
                       check_service(pipeline, exporter, results, valid))
    assert code in (0, 3), f"promtool check metrics failed ({code}): {sorted(lint)[:20]}"


def _shift_events(extreme: float) -> tuple[list[Record], list[Record]]:
    """Feature ``x`` of model ``m``: 1,500 values N(0, 1) with ``extreme`` and
    ``-extreme`` at positions 10 and 11 (inside the 1,000-value warm-up), then
    1,000 values N(3, 1)."""
    rng = random.Random(6)

    def event(i: int, x: float) -> Record:
        return Record("prediction", json.dumps({"model": "m", "prediction_id": str(i),
                                                "features": {"x": x}, "prediction": 0}
                                               ).encode(), NOW)

    before = [event(i, rng.gauss(0.0, 1.0)) for i in range(1500)]
    before[10], before[11] = event(10, extreme), event(11, -extreme)
    after = [event(i, rng.gauss(3.0, 1.0)) for i in range(1500, 2500)]
    return before, after


@pytest.mark.parametrize("extreme", [1.7e308, 1e101], ids=["1.7e308", "1e101"])
def test_extremes_in_warm_up_do_not_blind_the_online_detectors(extreme: float) -> None:
    pipeline, exporter = _service(Settings())
    before, after = _shift_events(extreme)
    first, second = _process(pipeline, [before, after])
    online = ("adwin", "cusum")
    early = [d for d in first.detections if d.feature == "x" and d.detector in online]
    assert not early, f"false alarms before the shift: {early}"
    found = [d for d in second.detections if d.feature == "x" and d.detector in online]
    assert found, "a 3-sigma mean shift after two extremes in the warm-up was not detected online"
    render(exporter)  # a counter's first exposition is 0 (see metrics.py)
    _, samples = render(exporter)
    assert sum(_total(samples, "drift_detections_total", model="m", signal="feature",
                      feature="x", detector=name) for name in online) >= 1



def _versioned(i: int, version: str, timestamp: float) -> Record:
    return Record("prediction", json.dumps({
        "model": "m", "model_version": version, "prediction_id": str(i), "timestamp": timestamp,
        "features": {"x": float(i % 5)}, "prediction": 0}).encode(), timestamp)


def test_junk_versions_cannot_evict_a_live_version_read_from_a_backlog() -> None:
    """A backlog: the live version's events are an hour old when they are read. Three
    messages with junk versions and the current time (believable: not in the future)
    must neither evict the live version nor lock its events out."""
    pipeline, _ = _service(Settings())
    live = [_versioned(i, "1", NOW - 3600 + i) for i in range(100)]
    junk = [_versioned(1000 + k, f"junk{k}", NOW) for k in range(3)]
    later = [_versioned(i, "1", NOW - 3600 + i) for i in range(100, 200)]
    _process(pipeline, [live + junk + later])
    versions = pipeline.models["m"].versions
    assert "1" in versions, f"live version evicted, versions now {list(versions)}"
    assert versions["1"].features["x"].seen == 200
    assert len(versions) <= Settings().max_versions


# Single messages that decide something for good (not in issue 10's list)

def _event(i: int, prediction: object, label: object = None, **features: object) -> Record:
    event = {"model": "m", "prediction_id": f"e{i}", "features": features or {"x": 1.0},
             "prediction": prediction}
    if label is not None:
        event["label"] = label
    return Record("prediction", json.dumps(event).encode(), NOW)


@pytest.mark.parametrize(("first", "pairs", "metric"), [
    ("cat", [(0.1 * i, 0.1 * i + 0.5) for i in range(200)], "mae"),
    (0.5, [(i % 2, i % 2) for i in range(200)], "accuracy"),
], ids=["string-first-then-regression", "float-first-then-classes"])
def test_one_first_message_does_not_decide_the_task_of_a_version(
        first: object, pairs: list[tuple[object, object]], metric: str) -> None:
    """With ``task: auto`` the first prediction of a version chose its task for good: one
    junk "cat" made a regression model a classifier (accuracy 0, every value a class)."""
    pipeline, exporter = _service(Settings())
    _process(pipeline, [[_event(0, first)]
                        + [_event(i + 1, p, y) for i, (p, y) in enumerate(pairs)]])
    _, samples = render(exporter)
    family = "drift_model_error" if metric == "mae" else "drift_model_quality_ratio"
    assert _series_names(samples, family, "metric") >= {metric}, (
        f"metrics of 200 pairs after one junk first message: "
        f"{_series_names(samples, family, 'metric')}")


def _series_names(samples: dict, name: str, label: str) -> set[str]:
    return {dict(lab)[label] for (n, lab) in samples if n == name}


def test_one_message_of_junk_feature_names_does_not_take_every_feature_slot() -> None:
    """``max_features`` null features named in one message filled a version's feature
    slots for good: its real features were then dropped (feature_cap) at every event."""
    config = Settings()
    pipeline, exporter = _service(config)
    junk = _event(0, 0, **{f"junk{i}": None for i in range(config.max_features)})
    _process(pipeline, [[junk] + [_event(i, i % 2, amount=float(i % 5)) for i in range(1, 101)]])
    _, samples = render(exporter)
    assert _total(samples, "drift_stream_values_total", model="m", feature="amount") == 100
