"""The Python API: the service's engine in a notebook or a batch job.

A ``Monitor`` is a ``Pipeline`` (the code the service runs, decode included) with a
``Recorder`` beside it. Feed it events as dicts, DataFrames (pandas, polars or
Arrow: optional, imported only when given) or files; read detections, distances and
metrics as DataFrames (pandas when it is installed, else lists of dicts); write the
HTML report. Events go through the same ``decode`` as Kafka messages, so a bad event
is rejected with the service's reason and counted (``rejected()``), never raised.

>>> from detector.demo import Scenario
>>> scenario = Scenario(seed=1, shift_at=3000, concept_at=10**9)
>>> monitor = Monitor({"models": {"fraud": {"thresholds": {"accuracy": 0.8}}}})
>>> events = [scenario.prediction(i) for i in range(6000)]
>>> monitor.feed(events)
8
>>> [(d["feature"], d["detector"], d["index"]) for d in monitor.detections(frame=False)][:2]
[('amount', 'cusum', 3034), ('', 'adwin', 3398)]

Tables (a DataFrame, CSV, Parquet) hold one prediction per row: name the columns that
are not features (``prediction=``, ``score=``, ``label=``, ``id=``, ``timestamp=``,
``version=``); every other column is a feature. A missing cell (None, NaN, NA) is a
missing value.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from detector.config import Settings, load_settings, settings_from
from detector.errors import ConfigError
from detector.pipeline import Pipeline, read_profile
from detector.recorder import Recorder
from detector.records import Record
from detector.reference import Profile
from detector.report import write as write_report



@dataclass(frozen=True)
class Columns:
    """How a table's columns map to an event: the model and its version (names, or the
    columns holding them), and the columns that are not features."""

    model: str | None = None
    model_column: str | None = None
    version: str | None = None
    version_column: str | None = None
    prediction: str | None = None
    score: str | None = None
    label: str | None = None
    id: str | None = None
    timestamp: str | None = None
    exclude: tuple[str, ...] = ()

    def event(self, row: Mapping[str, Any], n: int) -> dict[str, Any]:
        """The prediction event of one row (``n``: its number, the id if none is given).

        >>> Columns(model="m", prediction="p", label="y").event(
        ...     {"x": 1.5, "c": "DE", "p": 1, "y": float("nan")}, 7)
        {'model': 'm', 'prediction_id': '7', 'features': {'x': 1.5, 'c': 'DE'}, 'prediction': 1}
        """
        special = {self.model_column, self.version_column, self.prediction, self.score,
                   self.label, self.id, self.timestamp, *self.exclude}
        model = row.get(self.model_column) if self.model_column else self.model
        event: dict[str, Any] = {
            "model": model, "prediction_id": str(row[self.id]) if self.id else str(n),
            "features": {k: _cell(v) for k, v in row.items() if k not in special},
            "prediction": _cell(row.get(self.prediction)) if self.prediction else None}
        version = _cell(row.get(self.version_column)) if self.version_column else self.version
        if version is not None:
            event["model_version"] = str(version)
        for key, column in (("score", self.score), ("label", self.label),
                            ("timestamp", self.timestamp)):
            value = _cell(row.get(column)) if column else None
            if value is not None:
                event[key] = value
        return event

    def check(self) -> None:
        if (self.model is None) == (self.model_column is None):
            raise ConfigError("a table needs its model: model='name' or model_column='column'")
        if self.prediction is None:
            raise ConfigError("a table needs its prediction column (prediction='column'): "
                              "every event carries the model's output")


def _cell(value: Any) -> Any:
    """A table cell as an event value: None for missing (None, NaN, pandas' NA and NaT),
    Python scalars for numpy ones, ISO text for dates."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):   # pandas' missing
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):   # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _json(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not an event value")


def frame_rows(frame: Any) -> Iterator[Mapping[str, Any]]:
    """The rows of a pandas or polars DataFrame or an Arrow table (or record batch) as
    dicts, a chunk at a time."""
    kind = type(frame).__module__.split(".")[0]
    if kind == "pandas":
        for start in range(0, len(frame), 65_536):
            yield from frame.iloc[start:start + 65_536].to_dict("records")
    elif kind == "polars":
        yield from frame.iter_rows(named=True)
    elif kind == "pyarrow":
        for batch in frame.to_batches(65_536) if hasattr(frame, "to_batches") else [frame]:
            yield from batch.to_pylist()
    else:
        raise TypeError(f"not a DataFrame: {type(frame).__name__} (pandas, polars or pyarrow)")


#: the columns of ``Monitor.detections``
DETECTION_COLUMNS = ("model", "version", "signal", "feature", "category", "detector", "index",
                     "onset_index", "value_index", "onset_value_index", "value")


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None,
           integers: tuple[str, ...] = ()) -> Any:
    """A pandas DataFrame of ``rows`` when pandas is installed, else the rows; the
    ``integers`` columns hold whole numbers or missing values (pandas' ``Int64``)."""
    try:
        import pandas as pd
    except ModuleNotFoundError:
        return rows
    df = pd.DataFrame(rows, columns=columns)
    for column in integers:
        if column in df:
            df[column] = df[column].astype("Int64")
    return df


class Monitor:
    """The drift-detector engine over events you hand it.

    Parameters
    ----------
    settings
        ``Settings``, a mapping of settings (as the YAML file holds them; no ``DRIFT_*``
        variable applies), a path to a YAML file (``DRIFT_*`` variables apply, as for the
        service), or None for the defaults.
    points
        Points per chart of the report at most (default: ``report.points``).
    profiles
        Reference profiles (``drift-detector profile``), as ``Profile`` objects or paths,
        beside those the settings name: each is the reference of its model (and version).
        Without one, a version's first ``reference.warmup`` values are its reference.
    batch_size
        Events per batch (``Pipeline.process`` call). The default is the batch of
        ``replay``, whose detections come in the same order; distances and metrics are
        sampled once per batch, so a smaller batch draws a short stream's charts finer
        (the detections stay the same, their order within a batch may differ).
    """

    def __init__(self, settings: Settings | Mapping[str, Any] | str | os.PathLike[str] | None
                 = None, *, points: int | None = None,
                 profiles: Iterable[Profile | str | os.PathLike[str]] = (),
                 batch_size: int = 2000) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        if isinstance(settings, Settings):
            self.settings = settings
        elif isinstance(settings, Mapping):
            self.settings = settings_from(settings)
        elif settings is None:
            self.settings = Settings()
        else:
            self.settings = load_settings(settings)
        r = self.settings.report
        self.recorder = Recorder(self.settings, points or r.points, r.max_detections)
        self.pipeline = Pipeline(self.settings, tap=self.recorder.tap)
        for profile in profiles:
            if not isinstance(profile, Profile):
                profile = read_profile(profile)
            if not self.settings.discovers_models and profile.model not in self.settings.models:
                raise ConfigError(f"the profile is for model {profile.model!r}, which the "
                                  "settings do not declare (models)")
            self.pipeline.profiles[(profile.model, profile.version)] = profile
        self._source: list[str] = []

    def process(self, records: Iterable[Record]) -> int:
        """Apply records (what the service reads from Kafka) in batches; the number of
        detections they brought."""
        found = 0
        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) >= self.batch_size:
                found += self._apply(batch)
                batch = []
        if batch:
            found += self._apply(batch)
        return found

    def _apply(self, batch: list[Record]) -> int:
        result = self.pipeline.process(batch, now=time.time())
        self.recorder.record(self.pipeline, result)
        return len(result.detections)

    def feed(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Apply events given as dicts in the service's JSON shape: a prediction has
        ``features``, anything else is a label. Returns the detections they brought."""
        self._source.append("events")
        return self.process(
            Record("prediction" if "features" in e else "label",
                   json.dumps(e, default=_json).encode()) for e in events)

    def feed_table(self, rows: Iterable[Mapping[str, Any]], columns: Columns) -> int:
        """Apply the rows of a table, one prediction each (see ``Columns``)."""
        columns.check()
        return self.process(
            Record("prediction", json.dumps(columns.event(row, n), default=_json).encode())
            for n, row in enumerate(rows))

    def feed_frame(self, frame: Any, *, model: str | None = None,
                   model_column: str | None = None, version: str | None = None,
                   version_column: str | None = None, prediction: str | None = None, score: str | None = None,
                   label: str | None = None, id: str | None = None,  # noqa: A002
                   timestamp: str | None = None, exclude: Iterable[str] = ()) -> int:
        """Apply a pandas or polars DataFrame or an Arrow table, one prediction per row:
        ``model`` and ``version`` name the model (or ``model_column``/``version_column``
        hold it), ``prediction`` and the other arguments name columns that are not
        features (see ``Columns``)."""
        self._source.append(f"{type(frame).__module__.split('.')[0]} table")
        return self.feed_table(frame_rows(frame), Columns(
            model, model_column, version, version_column, prediction, score, label, id,
            timestamp, tuple(exclude)))

    def feed_files(self, *paths: str | os.PathLike[str], columns: Columns | None = None,
                   fmt: str | None = None) -> int:
        """Apply files: JSONL events as ``drift-detector replay`` reads them, or, with
        ``columns``, tables (CSV, JSONL rows or Parquet; ``fmt`` if the name does not
        tell)."""
        from detector.profile import Report, detect_format, read_rows
        from detector.sources import FileSource

        self._source.append(", ".join(Path(p).name for p in paths))
        if columns is None:
            return sum(self.process(batch)
                       for batch in FileSource(paths, self.batch_size).batches())
        columns.check()
        found = 0
        for path in map(Path, paths):
            kind = fmt or detect_format(path)
            rows = (row if typed else {k: cell_value(v) for k, v in row.items()}
                    for row, typed in read_rows(path, kind, Report(), lambda done, n: None))
            found += self.feed_table(rows, columns)
        return found

    def detections(self, frame: bool = True) -> Any:
        """Every detection so far (the latest ``report.max_detections``), in order: model,
        version, signal, feature, category, detector, index (the event of the version
        that fired it), onset_index (the event where the detector estimates the change
        began; None if unknown), value_index and onset_value_index (the same two as values
        of the stream: a feature missing from some events has fewer), value."""
        rows = [{k: d[k] for k in DETECTION_COLUMNS} for d in self.recorder.detections]
        integers = ("index", "onset_index", "value_index", "onset_value_index")
        return _frame(rows, DETECTION_COLUMNS, integers) if frame else rows

    def distances(self, history: bool = False, frame: bool = True) -> Any:
        """The distance of each stream from its reference: the latest window's per method
        with its threshold and detections (what ``/metrics`` exports), or with
        ``history`` every sample taken (index of the window's last value, value)."""
        rows = []
        for model, version, stream in self._streams():
            for method, d in stream.get("distances", {}).items():
                key = {"model": model, "version": version, "signal": stream["signal"],
                       "feature": stream["feature"], "method": method}
                if history:
                    rows += [{**key, "index": x, "value": y} for x, y in zip(d["x"], d["y"],
                                                                             strict=True)]
                else:
                    rows.append({**key, "value": d["latest"], "threshold": d["threshold"],
                                 "detections": d["detections"]})
        return _frame(rows) if frame else rows

    def metrics(self, history: bool = False, frame: bool = True) -> Any:
        """Model metrics on joined labels: the latest per metric and window (cumulative,
        rolling), or with ``history`` each sample (pairs: labelled pairs so far)."""
        rows = []
        snap = self.snapshot()
        for model in snap["models"]:
            for version in model["versions"]:
                key = {"model": model["name"], "version": version["name"]}
                if history:
                    for name, s in version["metrics"].items():
                        metric, window = name.split("/")
                        rows += [{**key, "metric": metric, "window": window, "pairs": x,
                                  "value": y} for x, y in zip(s["x"], s["y"], strict=True)]
                else:
                    for name, value in version["latest_metrics"].items():
                        metric, window = name.split("/")
                        threshold = model["thresholds"].get(metric)
                        rows.append({**key, "metric": metric, "window": window, "value": value,
                                     "threshold": threshold["value"] if threshold else None})
        return _frame(rows) if frame else rows

    def rejected(self) -> dict[str, int]:
        """Events and values refused so far, by ``kind/reason``."""
        return self.snapshot()["rejected"]

    def _streams(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for model in self.snapshot()["models"]:
            for version in model["versions"]:
                for stream in version["streams"]:
                    yield model["name"], version["name"], stream

    def snapshot(self) -> dict[str, Any]:
        """The report's data (plain JSON-able values)."""
        return self.recorder.snapshot(self.pipeline, "Python API: " + ", ".join(self._source))

    def report(self, path: str | os.PathLike[str], title: str = "drift-detector report"
               ) -> Path:
        """Write the HTML report; its path."""
        write_report(path, self.snapshot(), title)
        return Path(path)


def cell_value(text: str) -> Any:
    """A CSV cell as an event value, as the JSON of an event would give it: None when
    missing, an integer or a finite number when it reads as one, else the text (a
    category).

    >>> cell_value("1.5"), cell_value("NA"), cell_value("DE"), cell_value("inf"), cell_value("1")
    (1.5, None, 'DE', 'inf', 1)
    """
    from detector.profile import MISSING_TOKENS

    text = text.strip()
    if text.lower() in MISSING_TOKENS:
        return None
    if text.lstrip("+-").isdigit() and len(text) <= 16:
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text
