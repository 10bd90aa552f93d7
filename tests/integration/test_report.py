"""The HTML report in a real headless Chromium (the Debian package, installed when
missing), from a replay of a file and from a running service fed through the real
broker: no console error, nothing fetched, every chart drawn (its SVG marks measured
by the browser and its pixels counted in a screenshot), and the detections shown are
``replay``'s, or the service's own ``/detections``; the Python API on the same stream
gives the service's detections, distances and metrics."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.api import Monitor
from tests.browser import Browser
from tests.conftest import DetectorProcess, Topics, sample, wait_for
from tests.streams import demo_stream, write_jsonl

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
N = 12_000
KEYS = ("model", "version", "signal", "feature", "category", "detector", "index", "onset_index")

#: per chart: its caption, how many of its SVG marks the browser lays out with a size,
#: and where it is on the page
CHARTS = """[...document.querySelectorAll("figure.chart")].map(f => {
  const marks = [...f.querySelectorAll("svg .plot *")].filter(e => {
    if (!(e instanceof SVGGeometryElement)) return false;   // a line, path or rect
    const b = e.getBBox();
    return (b.width > 0 || b.height > 0) && (e.tagName !== "path" || e.getTotalLength() > 0);
  });
  const r = f.querySelector("svg").getBoundingClientRect();
  return {caption: f.querySelector("figcaption").textContent, marks: marks.length,
          box: [r.left + scrollX, r.top + scrollY, r.right + scrollX, r.bottom + scrollY]};
})"""
SHOWN = """[...document.querySelectorAll("table.detections tbody tr")].map(
  tr => [...tr.children].map(td => td.textContent))"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as b:
        b.call("Network.enable")
        yield b


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return demo_stream(N)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("DRIFT_")}
    return subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True,
                          text=True, timeout=300, env={**base, **(env or {})}, check=False,
                          cwd=ROOT)


def _shown(d: dict) -> list[str]:
    """A detection as the page's table shows it."""
    return [d["model"], d["version"], d["signal"], d["feature"], d["category"], d["detector"],
            str(d["index"]), "–" if d["onset_index"] is None else str(d["onset_index"])]


def _look(browser: Browser, page: Path, shot: Path) -> list[list[str]]:
    """Open ``page``; check it as a reader would see it; the detection rows it shows."""
    browser.events.clear()
    seconds = browser.open(page)
    assert seconds < 10, seconds
    assert browser.errors == []
    requested = [e["params"]["request"]["url"] for e in browser.events
                 if e["method"] == "Network.requestWillBeSent"]
    assert requested == [page.resolve().as_uri()]          # the file, nothing else
    charts = browser.evaluate(CHARTS)
    assert int(browser.evaluate("document.documentElement.dataset.charts")) == len(charts)
    captions = [c["caption"] for c in charts]
    for kind in ("reference vs last", "distance ÷ threshold", "values (min–max",
                 "category shares", "quality (ratio", "label join outcomes"):
        assert any(c.startswith(kind) for c in captions), (kind, captions)
    empty = [c["caption"] for c in charts if not c["marks"]]
    assert not empty, empty
    png = browser.screenshot()
    shot.write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    for chart in charts:          # each chart's area holds coloured (not grey) pixels
        left, top, right, bottom = (round(v) for v in chart["box"])
        area = pixels[top:bottom, left:right]
        coloured = int(((area.max(axis=2) - area.min(axis=2)) > 60).sum())
        assert coloured > 200, (chart["caption"], coloured)
    return browser.evaluate(SHOWN)


def test_the_report_of_a_replay_opens_clean_and_shows_replays_detections(
        browser: Browser, events: list[dict], tmp_path: Path) -> None:
    stream = tmp_path / "events.jsonl"
    write_jsonl(stream, events)
    replayed = _cli("replay", str(stream))
    assert replayed.returncode == 0, replayed.stderr
    detections = json.loads(replayed.stdout)["detections"]
    assert {d["signal"] for d in detections} >= {"feature", "prediction", "error"}
    page = tmp_path / "report.html"
    out = _cli("report", str(stream), "-o", str(page), "--title", "replay </script> & co")
    assert out.returncode == 0, out.stderr
    rows = _look(browser, page, tmp_path / "replay.png")
    assert [r[:8] for r in rows] == [_shown(d) for d in detections]
    assert browser.evaluate("document.title") == "replay </script> & co"


def test_a_running_services_report_and_the_api_agree_with_the_service(
        browser: Browser, tansu, events: list[dict], tmp_path: Path) -> None:
    """The service (report.enabled, basic auth) consumes the stream from the broker; its
    /report, saved by ``drift-detector report --url``, shows its /detections; the API
    fed the same events finds them too, with the distances and metrics of /metrics.
    Labels travel inside their predictions, on one partition: the service reads the
    events in the order the API is given them."""
    truth = {e["prediction_id"]: e["label"] for e in events if "label" in e}
    stream = [{**e, "label": truth[e["prediction_id"]]} if e["prediction_id"] in truth else e
              for e in events if "features" in e]
    topics = Topics(tansu)
    service = DetectorProcess(topics, tmp_path, {
        "report": {"enabled": True, "points": 200},
        "metrics": {"basic_auth_username": "reader", "basic_auth_password": "s3cret-pass"}})
    try:
        service.start()
        topics.produce(topics.predictions, stream)
        auth = "Basic " + base64.b64encode(b"reader:s3cret-pass").decode()
        url = f"http://127.0.0.1:{service.port}"

        def get(path: str) -> bytes:
            request = urllib.request.Request(url + path, headers={"Authorization": auth})
            return urllib.request.urlopen(request, timeout=30).read()

        def metrics() -> dict:
            return _parse(get("/metrics").decode())

        def consumed() -> bool:
            return sample(metrics(), "drift_events_total", kind="prediction",
                          model="fraud") == len(stream)
        wait_for(consumed, 120, "every event counted", every=0.5)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/report", timeout=10)
        assert refused.value.code == 401
        page = tmp_path / "service.html"
        out = _cli("report", "--url", url, "--user", "reader", "-o", str(page),
                   env={"DRIFT_REPORT_PASSWORD": "s3cret-pass"})
        assert out.returncode == 0, out.stderr
        served = json.loads(get("/detections"))
        final = metrics()
    finally:
        service.kill()
    rows = _look(browser, page, tmp_path / "service.png")
    assert [r[:8] for r in rows] == [_shown(d) for d in served]

    # the same detections; their order within a batch follows the batch's records (a
    # distance's is the batch's last value), and the service's batches are its polls
    api = Monitor()
    api.feed(stream)
    def key(d: dict) -> tuple:
        return tuple(-1 if d[k] is None else d[k] for k in KEYS)
    assert sorted(map(key, api.detections(frame=False))) == sorted(map(key, served))
    distances, model_metrics = api.distances(frame=False), api.metrics(frame=False)
    assert len(distances) == 3 * 13 and len(model_metrics) == 10
    for d in distances:
        family = "drift_feature_pvalue" if d["method"] == "chi2" else "drift_feature_distance"
        exported = sample(final, family, model="fraud", model_version="3", signal=d["signal"],
                          feature=d["feature"], method=d["method"])
        assert exported == pytest.approx(d["value"], rel=1e-4), d
    for m in model_metrics:
        exported = sample(final, "drift_model_quality_ratio", model="fraud",
                          model_version="3", metric=m["metric"], window=m["window"])
        assert exported == pytest.approx(m["value"], rel=1e-4), m


def _parse(body: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}
