"""``drift-detector profile``: a reference profile from training or validation data.

Reads CSV, JSONL or Parquet (with pyarrow) in two streaming passes with bounded
memory: the first learns each column's kind, mean and spread, missing share, a
reservoir sample (for quantile edges and the KS test) and category counts; the
second counts every value into the final bins. A row that cannot be read is
skipped and counted with its reason; nothing else stops the run.

CSV cells are text: a column is numeric when at least 95 % of its non-missing
cells parse as finite numbers (the rest are counted as ``invalid``), otherwise
categorical. In JSONL numbers are numeric and strings categorical, as in the
event stream. Missing: empty cells, ``null`` and ``NA``/``NaN``/``None``/``N/A``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from detector.calibrate_scores import Calibrator, LossTable, fit_calibrator, fit_loss_table
from detector.errors import DriftDetectorError
from detector.events import Target
from detector.performance import reconcile
from detector.reference import (
    CategoricalReference,
    NumericReference,
    Profile,
    Reference,
    quantile_edges,
    thin,
)

Format = Literal["csv", "jsonl", "parquet"]
MISSING_TOKENS = frozenset({"", "na", "nan", "null", "none", "n/a"})
RESERVOIR = 20_000          # values kept per numeric column for quantile edges
MAX_CATEGORIES = 50_000     # distinct values tracked per column before pruning
NUMERIC_SHARE = 0.95
PAIRS = 100_000             # labelled pairs kept (a reservoir) to fit the estimation model


class ProfileError(DriftDetectorError):
    """The input cannot be profiled at all (missing file, unknown format, no rows)."""


@dataclass
class Column:
    """What the first pass learns about one column (bounded memory)."""

    name: str
    seed: int
    numbers: int = 0
    strings: int = 0
    missing: int = 0
    mean: float = 0.0
    m2: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    sample: list[float] = field(default_factory=list)
    categories: Counter[str] = field(default_factory=Counter)
    pruned: int = 0
    _rng: Any = None

    def add(self, value: Any, typed: bool) -> None:
        if value is None:
            self.missing += 1
            return
        number = _number(value, typed)
        if number is None:
            self.strings += 1
            self._count(str(value))
            return
        self.numbers += 1
        delta = number - self.mean
        self.mean += delta / self.numbers
        self.m2 += delta * (number - self.mean)
        self.minimum = min(self.minimum, number)
        self.maximum = max(self.maximum, number)
        if len(self.sample) < RESERVOIR:
            self.sample.append(number)
        else:
            if self._rng is None:
                self._rng = np.random.default_rng(self.seed)
            j = int(self._rng.integers(self.numbers))
            if j < RESERVOIR:
                self.sample[j] = number
        if not typed:  # a CSV column may still turn out categorical
            self._count(str(value))

    def _count(self, text: str) -> None:
        self.categories[text] += 1
        if len(self.categories) > MAX_CATEGORIES:  # keep the heavy hitters, tally the rest
            keep = self.categories.most_common(MAX_CATEGORIES // 5)
            self.pruned += sum(self.categories.values()) - sum(n for _, n in keep)
            self.categories = Counter(dict(keep))

    @property
    def numeric(self) -> bool:
        present = self.numbers + self.strings
        return present > 0 and self.numbers >= NUMERIC_SHARE * present


def _number(value: Any, typed: bool) -> float | None:
    if typed:
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class Report:
    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


class _Progress:
    """One status line on stderr (rewritten in place on a terminal) for long reads."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = max(total, 1), label
        self.started = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, done: int, rows: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and (not self.tty or now - self.last < 0.2):
            return
        self.last = now
        share = min(done / self.total, 1.0)
        rate = done / max(now - self.started, 1e-9) / 1e6
        eta = (self.total - done) / max(done, 1) * (now - self.started)
        line = (f"{self.label}: {share:6.1%}  {rows:,} rows  {rate:.1f} MB/s"
                + ("" if final else f"  ETA {eta:.0f} s"))
        print(("\r" if self.tty else "") + line + ("\n" if final else ""), end="",
              file=sys.stderr, flush=True)


def detect_format(path: Path) -> Format:
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if suffix.endswith((".parquet", ".pq")):
        return "parquet"
    if suffix.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    raise ProfileError(f"cannot tell the format of {path.name}: use --format csv|jsonl|parquet")


def read_rows(path: Path, fmt: Format, report: Report,
              progress: Callable[[int, int], None]) -> Iterator[tuple[dict[str, Any], bool]]:
    """Yield ``(row, typed)``; ``typed`` is False for CSV (all cells are text)."""
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ProfileError("reading Parquet needs pyarrow: pip install pyarrow "
                               "(or convert the file to CSV or JSONL)") from None
        pf = pq.ParquetFile(path)
        for i, batch in enumerate(pf.iter_batches(batch_size=65_536)):
            for row in batch.to_pylist():
                report.rows += 1
                yield row, True
            progress(i + 1, report.rows)
        return
    with path.open("rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        if fmt == "csv":
            dialect = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
            reader = csv.reader(text, dialect)
            header = next(reader, None)
            if not header:
                raise ProfileError(f"{path} is empty")
            for row in reader:
                if len(row) != len(header):
                    report.skipped["wrong_field_count"] += 1
                    continue
                report.rows += 1
                if report.rows % 4096 == 0:
                    progress(raw.tell(), report.rows)
                yield dict(zip(header, row, strict=True)), False
        else:
            for line in text:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    report.skipped["invalid_json"] += 1
                    continue
                if not isinstance(obj, dict):
                    report.skipped["not_object"] += 1
                    continue
                report.rows += 1
                if report.rows % 4096 == 0:
                    progress(raw.tell(), report.rows)
                yield obj, True


def _missing(value: Any, typed: bool) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and not math.isfinite(value):
        return True
    return not typed and isinstance(value, str) and value.strip().lower() in MISSING_TOKENS


def build_profile(path: str | Path, model: str, *, version: str | None = None,
                  label_column: str | None = None, prediction_column: str | None = None,
                  score_column: str | None = None, exclude: tuple[str, ...] = (),
                  bins: int = 10, top_k: int = 20, fmt: Format | None = None,
                  seed: int = 0, show_progress: bool = True,
                  positive_label: Target = 1) -> tuple[Profile, Report]:
    """Two streaming passes over ``path``; returns the profile and what was skipped.

    With a label column and a score column, the profile also holds the score calibrator
    of the performance estimates (``positive_label``: the class the score is the
    probability of); with a label and a prediction column of a regressor, its loss table
    (``estimation_model``)."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"no such file: {path}")
    fmt = fmt or detect_format(path)
    total = path.stat().st_size
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
            total = pq.ParquetFile(path).num_row_groups
        except ImportError:
            pass
    target = score_column or prediction_column
    special = {label_column, prediction_column, score_column} - {None}
    columns: dict[str, Column] = {}
    pairs = _Pairs(seed) if label_column and target else None

    report = Report()
    bar = _Progress(total, "profile pass 1/2") if show_progress else None
    tick = bar.update if bar else (lambda done, rows: None)
    for row, typed in read_rows(path, fmt, report, tick):
        for name, value in row.items():
            if name in exclude or (name in special and name not in (label_column, target)):
                continue
            col = columns.get(name)
            if col is None:
                col = columns[name] = Column(name, seed + len(columns))
            col.add(None if _missing(value, typed) else value, typed)
        if pairs is not None:
            pairs.add(row.get(label_column), row.get(target), typed)
    if bar:
        bar.update(total, report.rows, final=True)
    if report.rows == 0:
        raise ProfileError(f"{path} has no readable rows (skipped: {dict(report.skipped)})")
    for wanted in (label_column, prediction_column, score_column):
        if wanted and wanted not in columns:
            raise ProfileError(f"column {wanted!r} not found; columns: {sorted(columns)[:20]}")

    numeric = {n: c for n, c in columns.items() if c.numeric}
    edges = {n: quantile_edges(np.asarray(c.sample), bins) for n, c in numeric.items()}
    counts = {n: np.zeros(e.size + 1, dtype=np.int64) for n, e in edges.items()}
    if numeric:  # pass 2: exact counts in the final bins
        second = Report()
        bar = _Progress(total, "profile pass 2/2") if show_progress else None
        tick = bar.update if bar else (lambda done, rows: None)
        chunk: dict[str, list[float]] = {n: [] for n in numeric}

        def drain() -> None:
            for n, values in chunk.items():
                if values:
                    counts[n] += np.bincount(np.searchsorted(edges[n], values, side="right"),
                                             minlength=counts[n].size)
                    values.clear()

        for i, (row, typed) in enumerate(read_rows(path, fmt, second, tick)):
            for n, values in chunk.items():
                value = row.get(n)
                if not _missing(value, typed):
                    number = _number(value, typed)
                    if number is not None:
                        values.append(number)
            if i % 65_536 == 65_535:
                drain()
        drain()
        if bar:
            bar.update(total, second.rows, final=True)

    refs: dict[str, Reference] = {}
    meta_columns: dict[str, Any] = {}
    for name, col in columns.items():
        present = col.numbers + col.strings
        if name in numeric:
            sample = np.asarray(col.sample)
            ref = NumericReference(edges[name], counts[name], np.sort(thin(sample)), col.mean,
                                   math.sqrt(col.m2 / col.numbers) if col.numbers else 0.0)
            invalid = col.strings
        elif present:
            ref = CategoricalReference.from_counts(col.categories, top_k, other=col.pruned)
            invalid = 0
        else:
            report.skipped[f"column_all_missing:{name}"] += 1
            continue
        meta_columns[name] = {"kind": ref.kind, "missing": col.missing,
                              "missing_share": col.missing / report.rows, "invalid": invalid}
        if name in numeric:
            meta_columns[name].update(min=col.minimum, max=col.maximum)
        refs[name] = ref
    label = refs.pop(label_column, None) if label_column else None
    prediction = refs.pop(target, None) if target else None
    meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": {"path": str(path), "format": fmt, "rows": report.rows,
                       "skipped": dict(report.skipped)},
            "columns": meta_columns}
    estimation = (estimation_model(pairs.kept, score_column is not None, positive_label)
                  if pairs is not None else None)
    return Profile(model, version, refs, label, prediction, meta, estimation), report


class _Pairs:
    """A reservoir of ``PAIRS`` (label, prediction or score) pairs, both present."""

    def __init__(self, seed: int) -> None:
        self.kept: list[tuple[Any, float | str]] = []
        self.seen = 0
        self._rng = np.random.default_rng(seed)

    def add(self, label: Any, output: Any, typed: bool) -> None:
        if _missing(label, typed) or _missing(output, typed):
            return
        number = _number(output, typed)
        self.seen += 1
        pair = (label, number if number is not None else str(output))
        if len(self.kept) < PAIRS:
            self.kept.append(pair)
        elif (j := int(self._rng.integers(self.seen))) < PAIRS:
            self.kept[j] = pair


def estimation_model(pairs: list[tuple[Any, float | str]], scored: bool,
                     positive_label: Target) -> Calibrator | LossTable | None:
    """The model of the performance estimates from labelled reference pairs: with scores,
    the calibrator of P(label == ``positive_label``); else, when the predictions are real
    numbers (not all integers) and so are the labels, a regressor's loss table; else none
    (a classifier without scores cannot be estimated).

    >>> estimation_model([("1", 0.9), ("0", 0.2), ("1", 0.6)], True, 1).y.tolist()
    [0.0, 1.0, 1.0]
    >>> estimation_model([(1.5, 1.0), (2.0, 2.5)], False, 1).pairs
    2
    >>> estimation_model([(1, 1.0), (0, 0.0)], False, 1) is None
    True
    """
    if scored:
        usable = [(y, q) for y, q in pairs if isinstance(q, float)]
        if not usable:
            return None
        labels, scores = zip(*usable)
        truth = [(m := reconcile(y, positive_label)) is not None and m[0] == m[1]
                 for y in labels]
        return fit_calibrator(np.asarray(scores), np.asarray(truth), positive_label)
    numbers = [(y, q) for y, q in pairs
               if isinstance(q, float) and _number(y, isinstance(y, int | float)) is not None]
    if not numbers or all(q.is_integer() for _, q in numbers):
        return None
    labels, predictions = zip(*numbers)
    return fit_loss_table(np.asarray(predictions),
                          np.asarray([_number(y, isinstance(y, int | float)) for y in labels]))
