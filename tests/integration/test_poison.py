"""Every poison message of issue 10, replayed through the real broker into the real
service (``drift-detector run``), each one between valid events.

After every stage the service is alive and ready, has consumed past the poison (the
valid events behind it are counted), has counted the poison under its reason (and
nothing else), and ``/metrics`` answers 200 with a body that is UTF-8, parses, has
no duplicate series and only finite ``drift_*`` values. At the end the exposition
passes ``promtool check metrics``, every offset is committed, and a restarted
service re-reads nothing.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from detector.sources import producer
from tests.conftest import DetectorProcess, Topics, http_status, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
Rejections = dict[tuple[str, str], int]

MAX_CLASSES = 10
CONFIG = {
    # small windows: references, share streams and distances exist after a few events
    "reference": {"warmup": 10, "window": 10, "evaluate_every": 10},
    "detection": {"warmup": 50},
    "max_classes": MAX_CLASSES,
    "max_versions": 3,
}
VALID_AROUND = 3  # valid events before and after each poison


def _iso(seconds_ago: float) -> str:
    return datetime.fromtimestamp(time.time() - seconds_ago, tz=UTC).isoformat()


def _prediction(model: str, i: int, **fields: object) -> dict:
    event = {"model": model, "model_version": "1", "prediction_id": f"{model}-{i}",
             "features": {"x": float(i % 7), "country": "DE" if i % 3 else "FR"},
             "prediction": i % 2, "score": 0.25 + (i % 2) / 2}
    return {**event, **fields}


def _label(model: str, i: int) -> dict:
    return {"model": model, "prediction_id": f"{model}-{i}", "label": i % 2}


def _bytes(event: dict) -> bytes:
    return json.dumps(event).encode()


def _raw(event: dict) -> bytes:
    """JSON in raw UTF-8: a lone surrogate becomes its three bytes ``ed a0 80``."""
    return json.dumps(event, ensure_ascii=False).encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Stage:
    """Poison messages on one topic, all of ``model`` when they name a valid one.
    ``outcomes`` lists what may be counted: the rejections by (kind, reason) and how many
    poison messages are processed as events of ``model`` (one entry unless the contract
    leaves a choice). ``check`` looks at the scrape taken after the stage."""

    name: str
    topic: Literal["predictions", "labels"]
    model: str
    poison: list[bytes]
    outcomes: list[tuple[Rejections, int]]
    check: Callable[[DetectorProcess, Samples], None] | None = None


def _scrape(port: int) -> Samples:
    """``/metrics``: must answer 200 with UTF-8 that parses, no series twice, and finite
    ``drift_*`` values."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError as exc:  # e.g. the connection closed without a response
        raise AssertionError(f"/metrics failed: {exc!r}") from exc
    assert status == 200, f"/metrics answered {status}: {body[:500]!r}"
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate series {key}"
            assert not s.name.startswith("drift_") or math.isfinite(s.value), (key, s.value)
            out[key] = s.value
    return out


def _total(m: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in m.items() if n == name and want <= set(lab))


def _series(m: Samples, name: str, **labels: str) -> list[float]:
    want = set(labels.items())
    return [v for (n, lab), v in m.items() if n == name and want <= set(lab)]


def _rejections(m: Samples) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for (name, labels), value in m.items():
        if name == "drift_events_rejected_total":
            lab = dict(labels)
            out[(lab["kind"], lab["reason"])] += int(value)
    return out


def _events(m: Samples, kind: str, model: str) -> float:
    return _total(m, "drift_events_total", kind=kind, model=model)


def _settled(d: DetectorProcess, kind: str, model: str, n: int, stage: str,
             timeout: float = 30) -> Samples:
    """Wait until ``n`` events of ``model`` are counted; return the next scrape (a series
    is exposed at 0 the first time, see metrics.py). Fails at once if the process died."""
    def done() -> bool:
        assert d.proc.poll() is None, (
            f"{stage}: the service exited {d.proc.returncode}:\n{d.logs()}")
        return _events(_scrape(d.port), kind, model) >= n
    wait_for(done, timeout, f"{stage}: {n} {kind} events of {model}", every=0.1)
    return _scrape(d.port)


def _stages() -> list[Stage]:
    rng = random.Random(10)
    bad = "bad\ud800"  # a lone surrogate
    extremes = [_prediction("extremes", i, features={"x": rng.gauss(0.0, 1.0)})
                for i in range(60)]
    extremes[10]["features"]["x"], extremes[11]["features"]["x"] = 1.7e308, -1.7e308
    shifted = [_prediction("extremes", i, features={"x": rng.gauss(3.0, 1.0)})
               for i in range(60, 260)]
    collide = [_prediction("collide", i, prediction=rng.random(), score=None,
                           features={"country": "DE" if i % 3 else "FR", "x": rng.random(),
                                     "country=DE": rng.random(), "__prediction__": rng.random()})
               for i in range(40)]
    live = [_bytes(_prediction("live", i)) for i in range(30)]
    live_more = [_bytes(_prediction("live", i)) for i in range(30, 60)]
    junk = [_bytes(_prediction("live", 100 + k, model_version=f"junk-{k}")) for k in range(3)]
    # the free slots take the first junk versions; each next one replaces a version seen
    # once; the live version is never evicted, so nothing is refused
    refused = 0
    classes = [_bytes(_prediction("classes", i, prediction=f"class-{i}", label=f"class-{i}"))
               for i in range(3 * MAX_CLASSES)]
    coerce = [_bytes(_prediction("coerce", i, prediction=1, label="1")) for i in range(20)]
    dated = [_bytes(_prediction("future", i, timestamp=_iso(120))) for i in range(5)]
    big_int = (b'{"model": "big", "prediction_id": "big-x", "prediction": 0, '
               b'"features": {"x": ' + b"9" * 5000 + b', "country": "DE"}}')
    long_ts = (b'{"model": "ts", "prediction_id": "ts-x", "prediction": 0, '
               b'"features": {"x": 1.0}, "timestamp": 1' + b"0" * 399 + b"}")

    def no_live_reset(d: DetectorProcess, m: Samples) -> None:
        seen = _total(m, "drift_stream_values_total", model="live", model_version="1",
                      signal="feature", feature="x", category="")
        assert seen == len(live) + len(live_more), f"values of the live version: {seen}"

    def coerced(d: DetectorProcess, m: Samples) -> None:
        accuracy = _total(m, "drift_model_quality_ratio", model="coerce", metric="accuracy",
                          window="cumulative")
        assert accuracy == 1.0, f'accuracy of prediction 1 with label "1": {accuracy}'

    def not_pinned(d: DetectorProcess, m: Samples) -> None:
        lag = time.time() - _total(m, "drift_last_event_timestamp_seconds", model="future")
        assert 100 <= lag < 3600, f"age of the newest event of model future: {lag}"

    def shift_detected(d: DetectorProcess, m: Samples) -> None:
        # the shift starts at value 58 of the stream (the two extremes count as missing)
        recent = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{d.port}/detections", timeout=5).read())
        online = [(r["detector"], r["value_index"]) for r in recent
                  if r["model"] == "extremes" and r["feature"] == "x"
                  and r["detector"] in ("adwin", "cusum")]
        assert any(index >= 58 for _, index in online), (
            f"3-sigma shift after two extremes in the warm-up not detected online: {online}")

    def no_collision(d: DetectorProcess, m: Samples) -> None:
        for labels in ({"feature": "country", "category": "DE"},
                       {"feature": "country=DE", "category": ""},
                       {"feature": "__prediction__", "category": ""}):
            assert _series(m, "drift_stream_values_total", model="collide", **labels), labels
        assert _series(m, "drift_feature_distance", model="collide", signal="prediction",
                       feature="")
        assert _series(m, "drift_feature_distance", model="collide", signal="feature",
                       feature="__prediction__")

    def missing(model: str, n: int) -> Callable[[DetectorProcess, Samples], None]:
        def check(d: DetectorProcess, m: Samples) -> None:
            got = _total(m, "drift_feature_missing_total", model=model, feature="country")
            assert got == n, f"missing country values of model {model}: {got}"
        return check

    return [
        Stage("model name, escaped surrogate", "predictions", "", [_bytes(_prediction(bad, 0))],
              [({("prediction", "invalid_encoding"): 1}, 0)]),
        Stage("model name, raw surrogate bytes", "predictions", "", [_raw(_prediction(bad, 0))],
              [({("prediction", "invalid_encoding"): 1}, 0)]),
        Stage("model version, surrogate", "predictions", "version",
              [_bytes(_prediction("version", 0, model_version=bad)),
               _raw(_prediction("version", 1, model_version=bad))],
              [({("prediction", "invalid_encoding"): 2}, 0)]),
        Stage("label model, surrogate", "labels", "",
              [_bytes(_label(bad, 0)), _raw(_label(bad, 1))],
              [({("label", "invalid_encoding"): 2}, 0)]),
        Stage("feature name, escaped surrogate", "predictions", "fname",
              [_bytes(_prediction("fname", 0, features={bad: 1.0, "x": 1.0}))],
              # a name is not a value of a feature: the contract allows either
              [({("feature", "invalid_encoding"): 1}, 1),
               ({("prediction", "invalid_encoding"): 1}, 0)]),
        Stage("feature name, raw surrogate bytes", "predictions", "fname-raw",
              [_raw(_prediction("fname-raw", 0, features={bad: 1.0, "x": 1.0}))],
              [({("feature", "invalid_encoding"): 1}, 1),
               ({("prediction", "invalid_encoding"): 1}, 0)]),
        Stage("category value, escaped surrogate", "predictions", "cat",
              [_bytes(_prediction("cat", 0, features={"x": 1.0, "country": bad}))],
              [({("feature", "invalid_encoding"): 1}, 1)], missing("cat", 1)),
        Stage("category value, raw surrogate bytes", "predictions", "cat-raw",
              # bytes that are not UTF-8 may cost the whole message
              [_raw(_prediction("cat-raw", 0, features={"x": 1.0, "country": bad}))],
              [({("feature", "invalid_encoding"): 1}, 1),
               ({("prediction", "invalid_encoding"): 1}, 0)]),
        Stage("5,000-digit integer in a feature", "predictions", "big", [big_int],
              [({("feature", "out_of_range"): 1}, 1)]),
        Stage("400-digit integer timestamp", "predictions", "ts", [long_ts],
              [({("prediction", "invalid_timestamp"): 1}, 0),
               ({("prediction", "out_of_range"): 1}, 0),
               ({("timestamp", "future_timestamp"): 1}, 1)]),
        Stage("two extreme floats in the warm-up", "predictions", "extremes",
              [_bytes(e) for e in extremes + shifted],
              [({("feature", "out_of_range"): 2}, len(extremes + shifted))], shift_detected),
        Stage('"prediction": 1 with "label": "1" (and one "cat")', "predictions", "coerce",
              [*coerce, _bytes(_prediction("coerce", 99, prediction=1, label="cat"))],
              [({("label", "label_type"): 1}, len(coerce) + 1)], coerced),
        Stage("country=DE beside country, a feature named __prediction__", "predictions",
              "collide", [_bytes(e) for e in collide], [({}, len(collide))], no_collision),
        Stage("three junk versions while a live version streams", "predictions", "live",
              [*live, *junk, *live_more],
              [({("prediction", "version_cap"): refused} if refused else {},
                len(live) + len(junk) + len(live_more) - refused)], no_live_reset),
        Stage("an event dated 2999", "predictions", "future",
              [*dated, _bytes(_prediction("future", 9, timestamp="2999-01-01T00:00:00Z")),
               *dated], [({("timestamp", "future_timestamp"): 1}, 2 * len(dated) + 1)],
              not_pinned),
        Stage("900 KB prediction_id (prediction)", "predictions", "long",
              [_bytes(_prediction("long", 0, prediction_id="p" * 900_000))],
              [({("prediction", "too_long"): 1}, 0)]),
        Stage("900 KB prediction_id (label)", "labels", "long",
              [_bytes({"model": "long", "prediction_id": "p" * 900_000, "label": 1})],
              [({("label", "too_long"): 1}, 0)]),
        Stage("100 KB category value", "predictions", "category",
              [_bytes(_prediction("category", 0, features={"x": 1.0, "country": "c" * 100_000}))],
              [({("feature", "too_long"): 1}, 1)], missing("category", 1)),
        Stage("many distinct class strings", "predictions", "classes", classes,
              [({("label", "class_cap"): len(classes) - MAX_CLASSES}, len(classes))]),
    ]


def _send(prod: KafkaProducer, topic: str, messages: list[bytes], sent: Counter[str]) -> None:
    for m in messages:
        prod.send(topic, m)
    prod.flush()
    sent[topic] += len(messages)


def _committed(topics: Topics) -> dict[str, int]:
    """The group's committed offset of partition 0 of both topics. (Not compared with
    ``end_offsets``: Tansu answers the base offset of the last batch plus one.)"""
    c = KafkaConsumer(bootstrap_servers=topics.bootstrap, group_id=topics.group,
                      enable_auto_commit=False)
    try:
        return {t: c.committed(TopicPartition(t, 0)) or 0
                for t in (topics.predictions, topics.labels)}
    finally:
        c.close(autocommit=False)


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_every_poison_is_counted_and_the_service_keeps_serving(
        topics: Topics, detector: Callable[..., DetectorProcess],
        prometheus_tools: dict[str, str], client: str) -> None:
    config = {**CONFIG, "kafka": {"client": client}}
    d = detector(config)
    prod = producer(topics.kafka)
    topic_of = {"predictions": topics.predictions, "labels": topics.labels}
    sent: Counter[str] = Counter({topics.predictions: 0, topics.labels: 0})
    before = _rejections(_scrape(d.port))
    problems: list[str] = []  # stages whose counts differ; a dead service fails at once
    try:
        for k, stage in enumerate(_stages()):
            kind = "prediction" if stage.topic == "predictions" else "label"
            make = _prediction if kind == "prediction" else _label
            first, last = f"stage{k}-before", f"stage{k}-after"
            _send(prod, topic_of[stage.topic],
                  [_bytes(make(first, i)) for i in range(VALID_AROUND)] + stage.poison
                  + [_bytes(make(last, i)) for i in range(VALID_AROUND)], sent)
            m = _settled(d, kind, last, VALID_AROUND, stage.name)
            assert http_status(d.port, "/readyz") == 200, f"{stage.name}: not ready"
            assert _events(m, kind, first) == VALID_AROUND, stage.name
            after = _rejections(m)
            counted = dict(after - before)
            before = after
            processed = int(_events(m, kind, stage.model)) if stage.model else 0
            if (counted, processed) not in stage.outcomes:
                problems.append(f"{stage.name}: counted {counted} and {processed} events; "
                                f"expected one of {stage.outcomes}")
            if stage.check is not None:
                try:
                    stage.check(d, m)
                except AssertionError as exc:
                    problems.append(f"{stage.name}: {exc}")
        assert d.proc.poll() is None and http_status(d.port, "/readyz") == 200

        body = urllib.request.urlopen(f"http://127.0.0.1:{d.port}/metrics", timeout=5).read()
        lint = subprocess.run([prometheus_tools["promtool"], "check", "metrics"], input=body,
                              capture_output=True, timeout=60, check=False)
        assert lint.returncode in (0, 3), lint.stderr.decode()
        assert d.terminate() == 0, d.logs()
        assert _committed(topics) == sent, f"committed {_committed(topics)}, sent {sent}"

        # a restart that keeps no state re-reads nothing: only the new events are
        # counted, no rejection again (with state, the counts go on: test_crash_equivalence)
        again = detector({**config, "checkpoint": {"enabled": False}})
        _send(prod, topics.predictions, [_bytes(_prediction("restart", i)) for i in range(3)],
              sent)
        m = _settled(again, "prediction", "restart", 3, "restart")
        reread = {model: v for (name, lab), v in m.items() if name == "drift_events_total"
                  and v and (model := dict(lab)["model"]) != "restart"}
        assert not reread, f"re-read after the restart: {reread}"
        assert not +_rejections(m), f"rejections after the restart: {+_rejections(m)}"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstages with wrong counts before that: {problems}") from exc
    finally:
        prod.close()
    assert not problems, "\n".join(problems)
