"""What a report shows, sampled from the pipeline as it runs, in bounded memory.

The engine keeps no history: a distance, a metric, a stream's statistics are its
latest state. A ``Recorder`` watches a ``Pipeline`` and keeps, per model version and
stream (feature, prediction, label):

- its values over time: per bucket of consecutive values, the smallest, the largest
  and the mean (numbers), or the count of each top category (strings). Buckets double
  in width when the stream outgrows them, so a chart has at most ``points`` buckets
  however long the stream;
- its last ``reference.window`` values, coded against the stream's reference by the
  reference's own ``window_counts``/``codes``: the recent histogram beside the
  reference's, over the bins the distances compare;
- each distance method's value at the end of every batch with its threshold, and the
  model metrics after every batch, thinned to at most ``points`` points;
- every detection as the pipeline reports it (the latest ``max_detections``), and the
  label join's counters.

It reads only what the pipeline and its monitors hold in public: the values of a batch
through the pipeline's ``tap`` (``ModelMonitor.flush`` calls it when each stream holds
the batch's values, ``Stream.queued_values``, and ``seen`` counts those before), the
rest after the batch (``record``). Nothing is computed twice: every statistic shown is the
engine's. x positions are stream indices, as a ``Detection``'s ``index`` and
``onset_index`` count them, so detection markers fall where the detectors fired.

>>> from detector.config import Settings
>>> from detector.pipeline import Pipeline
>>> from detector.records import Record
>>> import json
>>> recorder = Recorder(Settings(), points=8)
>>> pipeline = Pipeline(Settings(), tap=recorder.tap)
>>> batch = [Record("prediction", json.dumps({"model": "m", "prediction_id": str(i),
...          "features": {"x": float(i % 10)}, "prediction": 1}).encode()) for i in range(100)]
>>> recorder.record(pipeline, pipeline.process(batch, now=0.0))
>>> values = recorder.snapshot(pipeline)["models"][0]["versions"][0]["streams"][0]["values"]
>>> values["width"], values["lo"][:2], values["hi"][:2]
(16, [0.0, 0.0], [9.0, 9.0])
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from itertools import repeat
from typing import Any

import numpy as np

from detector import __version__
from detector.config import Settings
from detector.metrics import ERROR_METRICS, PVALUE_METHODS
from detector.monitor import Detection, ModelMonitor, ReferenceStream, Stream
from detector.pipeline import BatchResult, Pipeline
from detector.reference import OTHER, CategoricalReference, NumericReference

#: top categories charted per stream; the rest are summed as ``OTHER``
TOP_CATEGORIES = 8


def _round(values: Iterable[float]) -> list[float | None]:
    """Five significant digits (the report's JSON stays small); NaN and inf as None."""
    return [float(f"{v:.5g}") if math.isfinite(v) else None for v in values]


class Buckets(ABC):
    """Fixed-width buckets of consecutive stream positions, at most ``points`` of them:
    when a position falls beyond the last, neighbouring buckets are merged in pairs and
    the width doubles. ``merge`` says how two buckets' columns combine.

    >>> b = Envelope(points=4)
    >>> b.add(0, np.arange(10.0))
    >>> b.width, b.lo[:3].tolist(), b.hi[:3].tolist()
    (4, [0.0, 4.0, 8.0], [3.0, 7.0, 9.0])
    """

    def __init__(self, points: int) -> None:
        self.points = points + points % 2
        self.width = 1
        self.origin: int | None = None
        self.end = 0                      # one past the last position added

    def _place(self, start: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Grow for positions ``start .. start + size - 1``; the slices of the run that
        start a bucket and their buckets."""
        if self.origin is None:
            self.origin = start
        first = start - self.origin
        self.end = max(self.end, first + size)
        while first + size > self.points * self.width:
            self._halve()
            self.width *= 2
        w = self.width
        starts = np.arange((-first) % w, size, w)
        if not starts.size or starts[0] != 0:
            starts = np.concatenate([[0], starts])
        return starts, (first + starts) // w

    @abstractmethod
    def _halve(self) -> None:
        """Merge neighbouring buckets in pairs into the first half; empty the second."""


class Envelope(Buckets):
    """Smallest, largest and summed value, and count, per bucket of a numeric stream."""

    def __init__(self, points: int) -> None:
        super().__init__(points)
        n = self.points
        self.lo, self.hi = np.full(n, np.nan), np.full(n, np.nan)
        self.sum, self.count = np.zeros(n), np.zeros(n, dtype=np.int64)

    def add(self, start: int, values: np.ndarray) -> None:
        if not values.size:
            return
        starts, buckets = self._place(start, values.size)
        self.lo[buckets] = np.fmin(self.lo[buckets], np.minimum.reduceat(values, starts))
        self.hi[buckets] = np.fmax(self.hi[buckets], np.maximum.reduceat(values, starts))
        self.sum[buckets] += np.add.reduceat(values, starts)
        self.count[buckets] += np.diff(np.append(starts, values.size))

    def _halve(self) -> None:
        half = self.points // 2
        for name, fold in (("lo", np.fmin), ("hi", np.fmax), ("sum", np.add),
                           ("count", np.add)):
            column = getattr(self, name)
            pairs = column.reshape(half, 2)
            column[:half] = fold(pairs[:, 0], pairs[:, 1])
            column[half:] = np.nan if name in ("lo", "hi") else 0

    def to_json(self) -> dict[str, Any]:
        used = max(1, -(-self.end // self.width))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.sum[:used] / self.count[:used]
        return {"origin": self.origin or 0, "width": self.width,
                "lo": _round(self.lo[:used]), "hi": _round(self.hi[:used]),
                "mean": _round(mean)}


class Shares(Buckets):
    """Counts of each of the top categories (and the rest) per bucket of a stream's
    strings."""

    def __init__(self, points: int, categories: Iterable[str]) -> None:
        self.categories = list(categories)[:TOP_CATEGORIES]
        super().__init__(points)
        self.counts = np.zeros((self.points, TOP_CATEGORIES + 1), dtype=np.int64)

    def add(self, start: int, values: list[str]) -> None:
        if not values:
            return
        index = {c: i for i, c in enumerate(self.categories)}
        if len(index) < TOP_CATEGORIES:     # new categories take free slots as they come
            for v in values:
                if v not in index and len(index) < TOP_CATEGORIES:
                    index[v] = len(index)
                    self.categories.append(v)
        codes = np.fromiter(map(index.get, values, repeat(TOP_CATEGORIES)), dtype=np.int64,
                            count=len(values))
        starts, buckets = self._place(start, len(values))
        ends = np.append(starts[1:], len(values))
        for b, lo, hi in zip(buckets.tolist(), starts.tolist(), ends.tolist(), strict=True):
            self.counts[b] += np.bincount(codes[lo:hi], minlength=TOP_CATEGORIES + 1)

    def _halve(self) -> None:
        half = self.points // 2
        self.counts[:half] = self.counts[0::2] + self.counts[1::2]
        self.counts[half:] = 0

    def to_json(self) -> dict[str, Any]:
        used = max(1, -(-self.end // self.width))
        keep = [*range(len(self.categories)), TOP_CATEGORIES]
        return {"origin": self.origin or 0, "width": self.width,
                "categories": [*self.categories, OTHER],
                "counts": self.counts[:used][:, keep].tolist()}


class Series:
    """(x, y) points, at most ``points``: past that, every other one is dropped (the
    newest always stays), so between half and all of ``points`` remain, evenly spread."""

    __slots__ = ("points", "x", "y")

    def __init__(self, points: int) -> None:
        self.points = points
        self.x: list[int] = []
        self.y: list[float] = []

    def add(self, x: int, y: float) -> None:
        if self.x and self.x[-1] == x:
            self.y[-1] = y
            return
        self.x.append(x)
        self.y.append(y)
        if len(self.x) > self.points:
            keep = slice(None, None, 2) if len(self.x) % 2 else slice(1, None, 2)
            self.x, self.y = self.x[keep], self.y[keep]

    def to_json(self) -> dict[str, Any]:
        return {"x": self.x, "y": _round(self.y)}


class StreamRecord:
    """What is kept of one value stream (a feature, the prediction, the label)."""

    def __init__(self, stream: Stream, points: int) -> None:
        self.stream = stream
        self.points = points
        self.envelope: Envelope | None = None
        self.shares: Shares | None = None
        self.strings = 0        # strings recorded, for their positions
        #: the last values (``reference.window`` of them at least) as the batches gave them
        self.recent: deque[list[float | str]] = deque()
        self.recent_size = 0
        self.window = stream.ref.cfg.window if stream.ref is not None else 0
        self.distances: dict[str, Series] = {}
        self.last_window = -1

    def add(self, values: list[float | str] | np.ndarray) -> None:
        stream = self.stream
        numbers, strings = values, []
        if stream.categorical and not isinstance(values, np.ndarray):
            numbers = [v for v in values if not isinstance(v, str)]
            strings = [v for v in values if isinstance(v, str)]
        if len(numbers):
            if self.envelope is None:
                self.envelope = Envelope(self.points)
            self.envelope.add(stream.seen, np.asarray(numbers, dtype=np.float64))
        if strings:
            if self.shares is None:
                ref = stream.ref
                known = ref.reference if ref is not None else None
                self.shares = Shares(self.points, known.categories
                                     if isinstance(known, CategoricalReference) else ())
                # the first string's position in the reference stream (warm-up included)
                self.strings = (0 if ref is None else len(ref.warm) if ref.reference is None
                                else ref.warmup_used + ref.seen)
            self.shares.add(self.strings, strings)
            self.strings += len(strings)
        if self.window:
            recent = self.recent
            tail = values[-self.window:]      # a copy: the stream's list is not ours
            recent.append(tail)
            self.recent_size += len(tail)
            while self.recent_size - len(recent[0]) >= self.window:
                self.recent_size -= len(recent.popleft())

    def sample_distances(self) -> None:
        ref = self.stream.ref
        if ref is None or ref.reference is None:
            return
        every = ref.cfg.evaluate_every
        window = ref.seen // every
        if window == self.last_window or ref.seen < ref.cfg.window:
            return
        self.last_window = window
        x = ref.warmup_used + window * every - 1
        for ch in ref.channels:
            if ch.value is not None:
                series = self.distances.get(ch.name)
                if series is None:
                    series = self.distances[ch.name] = Series(self.points)
                series.add(x, ch.value)

    def to_json(self) -> dict[str, Any]:
        s = self.stream
        # values the stream had: its numbers (those its detectors saw) and its strings
        out: dict[str, Any] = {"signal": s.signal, "feature": s.feature,
                               "seen": s.seen + (self.strings if self.shares else 0),
                               "missing": s.missing}
        if self.envelope is not None:
            out["values"] = self.envelope.to_json()
        if self.shares is not None:
            out["shares"] = self.shares.to_json()
        ref = s.ref
        if ref is not None and ref.reference is not None:
            last = [v for values in self.recent for v in values][-self.window:]
            out["reference"] = _reference_json(ref, last)
            out["distances"] = {
                ch.name: {"threshold": ch.threshold, "pvalue": ch.name in PVALUE_METHODS,
                          "latest": None if ch.value is None else _round([ch.value])[0],
                          "detections": ch.detections,
                          **(self.distances[ch.name].to_json()
                             if ch.name in self.distances else {"x": [], "y": []})}
                for ch in ref.channels}
        return out


def _reference_json(ref: ReferenceStream, recent: list[float | str]) -> dict[str, Any]:
    """The reference's shares beside those of the last ``window`` values, over the
    reference's own bins (numbers) or categories (strings)."""
    reference = ref.reference
    out: dict[str, Any] = {"kind": reference.kind, "shares": _round(reference.shares()),
                           "warmup": ref.warmup_used}
    if isinstance(reference, NumericReference):
        out["edges"] = _round(reference.edges)
        window = np.array([v for v in recent if not isinstance(v, str)], dtype=np.float64)
        counts = reference.window_counts(window) if window.size else None
    else:
        out["categories"] = [*reference.categories, OTHER]
        window = [v for v in recent if isinstance(v, str)]
        counts = (np.bincount(reference.codes(window), minlength=len(reference.categories) + 1)
                  if window else None)
    out["recent"] = None if counts is None else _round(counts / counts.sum())
    out["recent_values"] = 0 if counts is None else int(counts.sum())
    return out


def _value_streams(monitor: ModelMonitor) -> Iterable[Stream]:
    """The streams whose values are charted: features, the prediction, the label (the
    error stream is the metrics' chart)."""
    yield from monitor.features.values()
    yield monitor.prediction
    yield monitor.label


class VersionRecord:
    """What is kept of one model version: its streams, metrics and detection counts."""

    def __init__(self, monitor: ModelMonitor, points: int) -> None:
        self.monitor = monitor
        self.points = points
        self.streams: dict[int, StreamRecord] = {}
        self.metrics: dict[tuple[str, str], Series] = {}
        self.last_pairs = -1
        #: the performance estimated before the labels (``detector.estimation``), over
        #: predictions
        self.estimated: dict[tuple[str, str], Series] = {}
        self.last_predictions = -1

    def tap(self, monitor: ModelMonitor) -> None:
        records = self.streams
        for stream in _value_streams(monitor):
            if not stream.queued():
                continue
            record = records.get(id(stream))
            if record is None or record.stream is not stream:
                record = records[id(stream)] = StreamRecord(stream, self.points)
            record.add(stream.queued_values())
        if len(records) > len(monitor.features) + 2:     # a feature made room for another
            live = {id(s) for s in _value_streams(monitor)}
            self.streams = {k: r for k, r in records.items() if k in live}

    def sample(self) -> None:
        monitor = self.monitor
        for record in self.streams.values():
            record.sample_distances()
        pairs = monitor.error.seen
        if pairs != self.last_pairs and pairs:
            self.last_pairs = pairs
            for metric, window, value in monitor.performance.values():
                series = self.metrics.get((metric, window))
                if series is None:
                    series = self.metrics[(metric, window)] = Series(self.points)
                series.add(pairs, value)
        predictions = monitor.predictions
        if predictions != self.last_predictions:
            self.last_predictions = predictions
            for e in monitor.estimation.estimates():
                series = self.estimated.get((e.metric, e.window))
                if series is None:
                    series = self.estimated[(e.metric, e.window)] = Series(self.points)
                series.add(predictions, e.value)


class Recorder:
    """Samples a pipeline for the report: pass ``tap`` to the ``Pipeline`` and call
    ``record`` with each batch's result; ``snapshot`` gives the report's data.

    Parameters
    ----------
    settings
        The pipeline's settings (thresholds of the model metrics).
    points
        Points per chart at most (buckets of values, samples of distances and metrics).
    max_detections
        Detections listed at most: the latest (the counts go on).
    """

    def __init__(self, settings: Settings, points: int = 400,
                 max_detections: int = 10_000) -> None:
        self.settings = settings
        self.points = points
        self.versions: dict[tuple[str, str], VersionRecord] = {}
        #: the latest ``max_detections`` detections
        self.detections: deque[dict[str, Any]] = deque(maxlen=max_detections)
        self.detection_counts: dict[tuple[str, str, str], int] = {}
        self.seen_detections = 0
        self.join: dict[str, dict[str, Series]] = {}
        self.batches = 0
        self.started = time.time()
        self._touched: dict[tuple[str, str], VersionRecord] = {}

    def tap(self, monitor: ModelMonitor) -> None:
        """The pipeline's tap: record the values of the batch, before they are fed."""
        key = (monitor.model, monitor.version)
        version = self.versions.get(key)
        if version is None or version.monitor is not monitor:
            version = self.versions[key] = VersionRecord(monitor, self.points)
        version.tap(monitor)
        self._touched[key] = version

    def record(self, pipeline: Pipeline, result: BatchResult) -> None:
        """Sample what the batch changed: distances, metrics, join counters, detections."""
        self.batches += 1
        touched, self._touched = self._touched, {}
        for version in touched.values():
            version.sample()
        self.seen_detections += len(result.detections)
        for d in result.detections:
            key = (d.model, d.version, d.signal)
            self.detection_counts[key] = self.detection_counts.get(key, 0) + 1
            self.detections.append(self._detection(d))
        if len(self.versions) > sum(len(s.versions) for s in pipeline.models.values()):
            self._forget_versions(pipeline)
        for name, state in pipeline.models.items():
            series = self.join.get(name)
            if series is None:
                series = self.join[name] = {k: Series(self.points) for k in state.join}
            x = sum(state.events.values())
            for outcome, n in state.join.items():
                series[outcome].add(x, n)

    def _forget_versions(self, pipeline: Pipeline) -> None:
        """Drop what was kept of versions that made room for others (and their counts)."""
        live = {(name, v) for name, state in pipeline.models.items() for v in state.versions}
        self.versions = {k: r for k, r in self.versions.items() if k in live}
        self.detection_counts = {k: n for k, n in self.detection_counts.items()
                                 if k[:2] in live}

    def _detection(self, d: Detection) -> dict[str, Any]:
        """A detection as listed, with ``x``: where it falls on its stream's charts (a
        category's share stream counts from the end of the reference's warm-up)."""
        shift = 0
        if d.category:
            version = self.versions.get((d.model, d.version))
            stream = version.monitor.features.get(d.feature) if version else None
            if stream is not None and stream.ref is not None:
                shift = stream.ref.warmup_used
        onset = d.index if d.onset is None else d.onset
        return {"model": d.model, "version": d.version, "signal": d.signal,
                "feature": d.feature, "category": d.category, "detector": d.detector,
                "index": d.index, "onset_index": d.onset,
                "value": _round([d.value])[0] if isinstance(d.value, float) else d.value,
                "x": d.index + shift, "onset_x": onset + shift}

    def snapshot(self, pipeline: Pipeline, source: str = "") -> dict[str, Any]:
        """The report's data: plain JSON-able lists and numbers (call it under the lock
        that guards the pipeline)."""
        models = []
        for name, state in pipeline.models.items():
            versions = []
            for vname, monitor in state.versions.items():
                version = self.versions.get((name, vname))
                versions.append(self._version_json(name, vname, monitor, version))
            models.append({
                "name": name, "events": dict(state.events), "join": dict(state.join),
                "pending": pipeline.join.pending(name),
                "join_series": {k: s.to_json() for k, s in self.join.get(name, {}).items()},
                "thresholds": self._thresholds(name), "versions": versions})
        return {
            "meta": {"version": __version__, "source": source, "batches": self.batches,
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                     "points": self.points},
            "rejected": {f"{k}/{r}": n for (k, r), n in pipeline.rejected.items() if n},
            "models": models,
            "detections": list(self.detections),
            "detections_total": self.seen_detections,
        }

    def _thresholds(self, model: str) -> dict[str, dict[str, Any]]:
        return {m: {"value": v, "bound": "upper" if m in ERROR_METRICS else "lower"}
                for m, v in self.settings.model(model).thresholds.items()}

    def _version_json(self, model: str, name: str, monitor: ModelMonitor,
                      version: VersionRecord | None) -> dict[str, Any]:
        records = version.streams if version is not None and version.monitor is monitor else {}
        streams = []
        for stream in _value_streams(monitor):
            record = records.get(id(stream))
            if record is None or record.stream is not stream:
                record = StreamRecord(stream, self.points)
            ref = stream.ref
            if stream.seen or ref is not None and (ref.seen or ref.warm or ref.warmup_used):
                streams.append(record.to_json())
        counts = {s: n for (m, v, s), n in self.detection_counts.items()
                  if m == model and v == name}
        return {"name": name, "predictions": monitor.predictions,
                "pairs": monitor.error.seen, "task": monitor.performance.task,
                "detections": counts, "streams": streams,
                "metrics": {f"{m}/{w}": s.to_json()
                            for (m, w), s in (version.metrics.items()
                                              if version is not None else ())},
                "estimated": {f"{m}/{w}": s.to_json()
                              for (m, w), s in (version.estimated.items()
                                                if version is not None else ())},
                "latest_metrics": {f"{m}/{w}": _round([x])[0]
                                   for m, w, x in monitor.performance.values()}}
