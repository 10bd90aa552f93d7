"""The recorder, the Python API and ``drift-detector report`` against the replay: the same
detections, the same engine state, whatever shape the events come in."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from detector.api import Columns, Monitor
from detector.config import Settings
from detector.errors import ConfigError
from detector.pipeline import Pipeline
from detector.recorder import Envelope, Recorder, Series, Shares
from detector.sources import FileSource
from tests.streams import demo_stream, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("model", "version", "signal", "feature", "category", "detector", "index", "onset_index")
N = 12_000


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DRIFT_")}
    return subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True,
                          text=True, timeout=300, env=env, check=False, cwd=ROOT)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], list[tuple]]:
    """The demo stream as JSONL, its events, and ``drift-detector replay``'s detections."""
    events = demo_stream(N)
    path = tmp_path_factory.mktemp("stream") / "events.jsonl"
    write_jsonl(path, events)
    out = _cli("replay", str(path))
    assert out.returncode == 0, out.stderr
    replayed = [tuple(d[k] for k in KEYS) for d in json.loads(out.stdout)["detections"]]
    assert {d[2] for d in replayed} >= {"feature", "prediction", "error"}   # a real test
    return path, events, replayed


def _page_data(path: Path) -> dict:
    """The data a report page embeds."""
    html = path.read_text()
    return json.loads(html.split('<script id="report-data" type="application/json">')[1]
                      .split("</script>")[0])


def _rows(detections: list[dict]) -> list[tuple]:
    return [tuple(d[k] for k in KEYS) for d in detections]


def test_the_api_finds_the_replays_detections_from_files_and_from_dicts(stream) -> None:
    path, events, replayed = stream
    from_file = Monitor()
    from_file.feed_files(path)
    assert _rows(from_file.detections(frame=False)) == replayed
    from_dicts = Monitor()
    assert from_dicts.feed(events) == len(replayed)
    assert _rows(from_dicts.detections(frame=False)) == replayed
    frame = from_dicts.detections()
    assert isinstance(frame, pd.DataFrame) and list(frame["index"]) == [d[6] for d in replayed]
    assert from_dicts.rejected() == {"label/missing_field": 1, "feature/too_long": 1}


def test_the_tap_changes_nothing_the_engine_computes(stream) -> None:
    """Detections, metrics and distances with the recorder attached equal those of a bare
    pipeline (the recorder only reads)."""
    path = stream[0]
    settings = Settings()
    bare, watched = Pipeline(settings), Pipeline(settings, tap=Recorder(settings).tap)
    found = {id(bare): [], id(watched): []}
    for batch in FileSource([path]).batches():
        for p in (bare, watched):
            found[id(p)] += [(d.signal, d.feature, d.detector, d.index, d.statistic)
                             for d in p.process(batch, now=0.0).detections]
    assert found[id(bare)] == found[id(watched)]
    (a,), (b,) = list(bare.monitors()), list(watched.monitors())
    assert list(a.performance.values()) == list(b.performance.values())
    assert [[c.value for c in r.channels] for r in a.references()] == [
        [c.value for c in r.channels] for r in b.references()]


def test_tables_give_the_same_state_as_their_events(stream, tmp_path: Path) -> None:
    """One prediction per row with its label: pandas, polars, Arrow, CSV and Parquet give
    the detections and the metrics of the same events as dicts."""
    events = [e for e in stream[1] if "features" in e and e["prediction_id"] != "bad"]
    truth = {e["prediction_id"]: e["label"] for e in stream[1]
             if "label" in e and "features" not in e}
    rows = [{**e["features"], "pid": e["prediction_id"], "pred": e["prediction"],
             "proba": e["score"], "y": truth[e["prediction_id"]]} for e in events]
    as_events = Monitor()
    as_events.feed({**e, "label": truth[e["prediction_id"]]} for e in events)
    expected = _rows(as_events.detections(frame=False))
    metrics = as_events.metrics()
    assert len(expected) > 3 and not metrics.empty

    columns = {"prediction": "pred", "score": "proba", "label": "y", "id": "pid"}
    df = pd.DataFrame(rows)
    df.loc[5, "age"] = np.nan              # a missing cell is a missing value, not a rejection
    for frame in (df, pl.from_pandas(df), pa.Table.from_pandas(df)):
        m = Monitor()
        m.feed_frame(frame, model="fraud", version="3", **columns)
        assert _rows(m.detections(frame=False)) == expected, type(frame)
        assert m.metrics().equals(metrics)
        assert m.rejected() == {}
        assert m.snapshot()["models"][0]["versions"][0]["streams"][1]["missing"] == 1

    df.to_csv(tmp_path / "t.csv", index=False)
    pq.write_table(pa.Table.from_pandas(df), tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        m = Monitor()
        m.feed_files(tmp_path / name, columns=Columns(model="fraud", version="3", **columns))
        assert _rows(m.detections(frame=False)) == expected, name
        assert m.metrics().equals(metrics)
    out = _cli("report", str(tmp_path / "t.parquet"), "--model", "fraud", "--version", "3",
               "--prediction-column", "pred", "--score-column", "proba", "--label-column", "y",
               "--id-column", "pid", "-o", str(tmp_path / "t.html"))
    assert out.returncode == 0, out.stderr
    assert _rows(_page_data(tmp_path / "t.html")["detections"]) == expected


def test_the_report_command_writes_a_page_with_the_replays_detections(stream,
                                                                       tmp_path: Path) -> None:
    path, _, replayed = stream
    out = _cli("report", str(path), "-o", str(tmp_path / "r.html"), "--points", "50")
    assert out.returncode == 0, out.stderr
    assert f"{len(replayed)} detections" in out.stdout
    html = (tmp_path / "r.html").read_text()
    data = _page_data(tmp_path / "r.html")
    assert _rows(data["detections"]) == replayed
    # nothing to load: no source or link attribute, no CSS url(), no request from script
    assert not re.search(r"\b(src|href)\s*=|url\(|fetch\(|XMLHttpRequest|import\(", html)
    for stream_data in data["models"][0]["versions"][0]["streams"]:
        chart = stream_data.get("values") or stream_data["shares"]
        assert len(chart.get("lo") or chart["counts"]) <= 50
    # the performance estimated before the labels, over predictions, beside the realised
    version = data["models"][0]["versions"][0]
    assert {"accuracy/rolling", "f1/cumulative"} <= version["estimated"].keys()
    assert 0 < len(version["estimated"]["accuracy/rolling"]["y"]) <= 50


@pytest.mark.parametrize(("args", "message"), [
    (["x.jsonl", "--points", "5"], "--points must be at least 10"),
    (["t.csv"], "needs --model and --prediction-column"),
    (["t.csv", "--model", "m"], "needs its prediction column"),
    (["missing.jsonl"], "No such file"),
    (["x.jsonl", "--profile", "nothing.json"], "cannot read the profile"),
    ([], "needs files to replay, or --url"),
    (["x.jsonl", "--url", "http://127.0.0.1:1"], "files or --url, not both"),
])
def test_report_usage_errors_exit_2_with_one_line(tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    (tmp_path / "t.csv").write_text("a,p\n1,0\n")
    (tmp_path / "x.jsonl").write_text("")
    paths = [str(tmp_path / a) if a.endswith((".csv", ".jsonl", ".json")) else a for a in args]
    out = _cli("report", *paths, "-o", str(tmp_path / "r.html"))
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_profile_is_the_reference_of_its_model(stream, tmp_path: Path) -> None:
    """With a profile of the first 3000 predictions, the histogram compares with the
    profile's bins and there is no warm-up (the first window is compared at once)."""
    path, events, _ = stream
    train = tmp_path / "train.jsonl"
    write_jsonl(train, [{**e["features"], "score": e["score"]}
                        for e in events[:4000] if "features" in e][:3000])
    out = _cli("profile", str(train), "--model", "fraud", "--score-column", "score",
               "-o", str(tmp_path / "p.json"))
    assert out.returncode == 0, out.stderr
    m = Monitor(profiles=[tmp_path / "p.json"])
    m.feed_files(path)
    amount = m.snapshot()["models"][0]["versions"][0]["streams"][0]
    assert amount["feature"] == "amount" and amount["reference"]["warmup"] == 0
    profile = json.loads((tmp_path / "p.json").read_text())["features"]["amount"]
    assert amount["reference"]["edges"] == pytest.approx(profile["edges"], rel=1e-4)
    assert amount["distances"]["psi"]["x"][0] < 2000
    with pytest.raises(ConfigError, match="which the settings do not declare"):
        Monitor({"models": {"other": {}}}, profiles=[tmp_path / "p.json"])


def test_buckets_hold_min_max_mean_of_every_value_however_batched() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(size=10_007)
    env = Envelope(points=64)
    start = 0
    for size in rng.integers(1, 700, size=100):
        env.add(start, values[start:start + size])
        start += size
        if start >= values.size:
            break
    out = env.to_json()
    width = out["width"]
    assert len(out["lo"]) <= 64 and width == 256
    for b in range(len(out["lo"])):
        chunk = values[b * width:(b + 1) * width]
        assert out["lo"][b] == pytest.approx(chunk.min(), rel=1e-4)
        assert out["hi"][b] == pytest.approx(chunk.max(), rel=1e-4)
        assert out["mean"][b] == pytest.approx(chunk.mean(), rel=1e-4, abs=1e-4)


def test_shares_count_every_string_and_series_stay_bounded() -> None:
    shares = Shares(points=10, categories=("a", "b"))
    strings = [c for c in "abcdefghijklmnopqrstuvwxyz" for _ in range(5)]
    shares.add(0, strings)
    out = shares.to_json()
    assert sum(map(sum, out["counts"])) == len(strings)
    assert out["categories"][:2] == ["a", "b"] and len(out["categories"]) == 9
    series = Series(points=10)
    for x in range(1000):
        series.add(x, float(x))
    assert 5 <= len(series.x) <= 10 and series.x[-1] == 999 and series.x == sorted(series.x)


def test_the_recorder_forgets_versions_and_features_the_pipeline_dropped() -> None:
    """Junk versions and feature names that the caps evict do not pile up in a
    long-running service's recorder."""
    m = Monitor({"max_versions": 1, "max_features": 2})
    for i in range(50):
        m.feed([{"model": "m", "model_version": f"v{i}", "prediction_id": str(i),
                 "features": {"x": 1.0, f"junk{i}": 2.0}, "prediction": 1}])
    assert list(m.recorder.versions) == [("m", "v49")]
    assert {k[1] for k in m.recorder.detection_counts} <= {"v49"}
    version = next(iter(m.recorder.versions.values()))
    for i in range(50):
        m.feed([{"model": "m", "model_version": "v49", "prediction_id": f"f{i}",
                 "features": {"x": 1.0, f"other{i}": 2.0}, "prediction": 1}])
    assert len(version.streams) <= 4      # x, the newest name, the prediction, the label
