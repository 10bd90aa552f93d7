"""The HTML report: one self-contained file, data, script and style inlined.

``render`` puts a ``Recorder.snapshot`` into a page whose script
(``detector/assets/report.js``, hand-written, no library) draws every chart as SVG
when the page opens. Nothing is fetched: the file opens offline, from a mail
attachment or a CI artefact, in any current browser.

>>> html = render({"meta": {"version": "0", "source": "test", "created": "", "since": "",
...                         "batches": 0, "points": 1},
...                "rejected": {}, "models": [], "detections": [], "detections_total": 0})
>>> html.startswith("<!doctype html>"), "<script src" in html
(True, False)
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def _asset(name: str) -> str:
    return resources.files("detector").joinpath("assets", name).read_text(encoding="utf-8")


def render(snapshot: dict[str, Any], title: str = "drift-detector report") -> str:
    """The page for ``snapshot`` (``Recorder.snapshot``)."""
    # "</" inside a script element would end it: JSON allows "<\/" for "</"
    data = json.dumps(snapshot, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    escaped = (title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width\"><title>{escaped}</title>"
        f"<style>{_asset('report.css')}</style></head>\n<body><h1>{escaped}</h1>"
        "<main id=\"report\"></main>\n"
        f"<script id=\"report-data\" type=\"application/json\">{data}</script>\n"
        f"<script>{_asset('report.js')}</script>\n</body></html>\n")


def write(path: str | Path, snapshot: dict[str, Any], title: str = "drift-detector report"
          ) -> int:
    """Write the page atomically (a temporary file renamed); its size in bytes."""
    path = Path(path)
    body = render(snapshot, title).encode("utf-8")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(body)
    tmp.replace(path)
    return len(body)
