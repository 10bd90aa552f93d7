"""Tensors of the Open Inference Protocol (V2) and KServe V1 rows, cut into per-row
features and outputs.

A tensor is a name, a datatype, a shape and its values flat in row-major order; its
first dimension counts rows (a batch), the others make a row's columns. Everything that
does not add up (a shape that does not match the data, an unknown datatype, a value of
the wrong type) raises ``Invalid`` with a reason from ``detector.formats.REASONS``.

>>> x = tensor_from_json({"name": "x", "datatype": "FP64", "shape": [2, 2],
...                       "data": [[1.0, 2.0], [3.0, 4.0]]})
>>> x.rows, x.width
(2, 2)
>>> feature_rows([x], None)
[{'x_0': 1.0, 'x_1': 2.0}, {'x_0': 3.0, 'x_1': 4.0}]
>>> feature_rows([x], ("amount", "age"))[1]
{'amount': 3.0, 'age': 4.0}
>>> p = tensor_from_json({"name": "predict", "datatype": "INT64", "shape": [2, 1], "data": [1, 0]})
>>> output_rows([p], None, None, -1)
[(1, None), (0, None)]
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: numpy dtypes of the fixed-size datatypes (little-endian, as raw contents are)
DTYPES: dict[str, str] = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
DATATYPES = frozenset(DTYPES) | {"BYTES"}
#: deepest nesting of a JSON ``data`` list that is flattened
MAX_DEPTH = 32

Value = float | int | str | bool | None


class Invalid(Exception):
    """A payload that cannot be used: ``reason`` (a metric label) and a detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Tensor:
    """One named tensor; ``values`` flat, row-major."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: list[Any]

    @property
    def rows(self) -> int:
        """Rows of the batch: the first dimension (1 for a scalar)."""
        return self.shape[0] if self.shape else 1

    @property
    def width(self) -> int:
        """Values per row: the product of the other dimensions."""
        return math.prod(self.shape[1:])


def check_shape(name: str, datatype: str, shape: Any, count: int) -> tuple[int, ...]:
    """The shape as a tuple, if it is a list of sizes >= 0 whose product is ``count``
    and ``datatype`` is a protocol datatype."""
    if datatype not in DATATYPES:
        raise Invalid("invalid_tensor", f"tensor {name[:60]!r}: unknown datatype "
                                        f"{str(datatype)[:20]!r}")
    if (not isinstance(shape, list | tuple) or len(shape) > MAX_DEPTH
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise Invalid("invalid_tensor", f"tensor {name[:60]!r}: shape must be a list of "
                                        "sizes >= 0")
    if math.prod(shape) != count:
        raise Invalid("invalid_tensor", f"tensor {name[:60]!r}: shape {list(shape)[:8]} "
                                        f"does not hold {count} values")
    return tuple(shape)


def flatten(data: Any, name: str) -> list[Any]:
    """The leaves of a nested JSON list, in order (a scalar is one leaf)."""
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack: list[tuple[list[Any], int]] = [(data, 0)]
    while stack:
        items, at = stack.pop()
        for i in range(at, len(items)):
            item = items[i]
            if isinstance(item, list):
                if len(stack) >= MAX_DEPTH:
                    raise Invalid("invalid_tensor", f"tensor {name[:60]!r}: data nested "
                                                    f"deeper than {MAX_DEPTH}")
                stack.append((items, i + 1))
                stack.append((item, 0))
                break
            out.append(item)
    return out


def _checked(name: str, datatype: str, values: list[Any]) -> list[Any]:
    """``values`` if each fits ``datatype`` (JSON numbers for numeric types, booleans
    for BOOL, strings for BYTES)."""
    if datatype == "BYTES":
        ok = all(type(v) is str for v in values)
    elif datatype == "BOOL":
        ok = all(type(v) is bool for v in values)
    elif datatype.startswith("FP"):
        ok = all(type(v) in (int, float) for v in values)
    else:
        ok = all(type(v) is int for v in values)
    if not ok:
        raise Invalid("invalid_tensor", f"tensor {name[:60]!r}: data do not match "
                                        f"datatype {datatype}")
    return values


def tensor_from_json(obj: Any) -> Tensor:
    """A tensor of a V2 JSON body: ``{"name", "datatype", "shape", "data"}``."""
    if not isinstance(obj, dict):
        raise Invalid("invalid_payload", "a tensor is not a JSON object")
    name, datatype = obj.get("name"), obj.get("datatype")
    if type(name) is not str or type(datatype) is not str:
        raise Invalid("invalid_payload", "a tensor needs a name and a datatype (strings)")
    if "data" not in obj:
        raise Invalid("invalid_payload", f"tensor {name[:60]!r} has no data")
    values = _checked(name, datatype, flatten(obj["data"], name))
    shape = check_shape(name, datatype, obj.get("shape"), len(values))
    return Tensor(name, datatype, shape, values)


def from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> Tensor:
    """A tensor whose values are raw little-endian bytes (protobuf ``raw_*_contents``);
    BYTES elements each come with a 4-byte little-endian length.

    >>> from_raw("x", "FP32", [2], b"\\x00\\x00\\x80?\\x00\\x00\\x00@").values
    [1.0, 2.0]
    >>> from_raw("s", "BYTES", [1], b"\\x02\\x00\\x00\\x00DE").values
    ['DE']
    """
    if datatype == "BYTES":
        values: list[Any] = []
        at = 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise Invalid("invalid_tensor", f"tensor {name[:60]!r}: raw BYTES cut short")
            size = struct.unpack_from("<I", raw, at)[0]
            if at + 4 + size > len(raw):
                raise Invalid("invalid_tensor", f"tensor {name[:60]!r}: raw BYTES cut short")
            values.append(text(raw[at + 4:at + 4 + size], name))
            at += 4 + size
    elif datatype in DTYPES:
        dtype = np.dtype(DTYPES[datatype])
        if len(raw) % dtype.itemsize:
            raise Invalid("invalid_tensor", f"tensor {name[:60]!r}: {len(raw)} raw bytes are "
                                            f"no whole number of {datatype}")
        values = np.frombuffer(raw, dtype).tolist()
    else:
        values = []
    return Tensor(name, datatype, check_shape(name, datatype, list(shape), len(values)), values)


def text(raw: bytes, name: str) -> str:
    """A BYTES element as text (UTF-8)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise Invalid("invalid_encoding", f"tensor {name[:60]!r}: BYTES that are not "
                                          "UTF-8") from None


def _value(v: Any) -> Value:
    """A feature value of our event: booleans become 0/1, the rest stays."""
    return float(v) if type(v) is bool else v


def column_names(tensors: Sequence[Tensor], names: tuple[str, ...] | None) -> list[str]:
    """The feature name of every column of ``tensors``, in order: ``names`` if given
    (as many as there are columns), else the tensor's name for a tensor of one column
    and ``<name>_<j>`` for column j of a wider one."""
    columns = sum(t.width for t in tensors)
    if names is not None:
        if len(names) != columns:
            raise Invalid("feature_mismatch", f"{columns} input columns, "
                                              f"{len(names)} feature_names")
        return list(names)
    out: list[str] = []
    for t in tensors:
        out += [t.name] if t.width == 1 else [f"{t.name}_{j}" for j in range(t.width)]
    return out


def batch_size(tensors: Sequence[Tensor], what: str) -> int:
    """The rows all ``tensors`` have (they must agree)."""
    sizes = {t.rows for t in tensors}
    if len(sizes) != 1:
        raise Invalid("invalid_tensor", f"{what} tensors have different numbers of rows: "
                                        f"{sorted(sizes)[:5]}")
    return sizes.pop()


def feature_rows(tensors: Sequence[Tensor], names: tuple[str, ...] | None
                 ) -> list[dict[str, Value]]:
    """One features mapping per row of the input ``tensors`` (see ``column_names``)."""
    if not tensors:
        raise Invalid("invalid_payload", "a request without inputs")
    columns = column_names(tensors, names)
    rows = batch_size(tensors, "input")
    out = []
    for i in range(rows):
        values: list[Value] = []
        for t in tensors:
            w = t.width
            values += [_value(v) for v in t.values[i * w:(i + 1) * w]]
        out.append(dict(zip(columns, values, strict=True)))
    return out


def output_rows(tensors: Sequence[Tensor], prediction: str | None, score: str | None,
                score_column: int) -> list[tuple[Value, Value]]:
    """``(prediction, score)`` per row: the prediction from the tensor named
    ``prediction`` (default: the first output; one column), the score from the tensor
    named ``score`` if set (column ``score_column`` of a wider one), else None."""
    if not tensors:
        raise Invalid("missing_output", "a response without outputs")
    by_name = {t.name: t for t in tensors}
    pred = tensors[0] if prediction is None else by_name.get(prediction)
    if pred is None:
        raise Invalid("missing_output", f"no output {prediction[:60]!r} (outputs: "
                                        f"{', '.join(list(by_name)[:5])[:200]})")
    if pred.width != 1:
        raise Invalid("invalid_tensor", f"output {pred.name[:60]!r} has {pred.width} "
                                        "columns; a prediction has one")
    used = [pred]
    scores: list[Value] | None = None
    if score is not None:
        s = by_name.get(score)
        if s is None:
            raise Invalid("missing_output", f"no output {score[:60]!r}")
        if not -s.width <= score_column < s.width:
            raise Invalid("invalid_tensor", f"output {score[:60]!r} has {s.width} columns, "
                                            f"no column {score_column}")
        col = score_column % s.width
        scores = [s.values[i * s.width + col] for i in range(s.rows)]
        used.append(s)
    rows = batch_size(used, "output")
    preds = pred.values
    return [(preds[i], scores[i] if scores is not None else None) for i in range(rows)]


def v1_feature_rows(instances: Any, names: tuple[str, ...] | None
                    ) -> list[dict[str, Value]]:
    """Features per V1 instance: an object is used as it is; a list (flattened) or a
    scalar is named by ``names``, else ``instances_<j>`` (``instances`` for a scalar)."""
    if not isinstance(instances, list) or not instances:
        raise Invalid("invalid_payload", "instances must be a non-empty list")
    out = []
    for row in instances:
        if isinstance(row, dict):
            if not all(v is None or type(v) in (int, float, str, bool) for v in row.values()):
                raise Invalid("invalid_payload", "an instance's values must be numbers, "
                                                 "strings or null")
            out.append({k: _value(v) for k, v in row.items()})
            continue
        values = flatten(row, "instances")
        if not all(v is None or type(v) in (int, float, str, bool) for v in values):
            raise Invalid("invalid_payload", "an instance's values must be numbers, "
                                             "strings or null")
        if names is not None:
            if len(names) != len(values):
                raise Invalid("feature_mismatch", f"an instance of {len(values)} values, "
                                                  f"{len(names)} feature_names")
            columns: Sequence[str] = names
        elif isinstance(row, list):
            columns = [f"instances_{j}" for j in range(len(values))]
        else:
            columns = ["instances"]
        out.append(dict(zip(columns, map(_value, values), strict=True)))
    return out


def v1_output_rows(predictions: Any, score_column: int) -> list[tuple[Value, Value]]:
    """``(prediction, score)`` per V1 prediction: a scalar (or a list of one) is the
    prediction; a list of several is a score per class: the prediction is the index of
    the highest, the score is column ``score_column``."""
    if not isinstance(predictions, list) or not predictions:
        raise Invalid("invalid_payload", "predictions must be a non-empty list")
    out: list[tuple[Value, Value]] = []
    for item in predictions:
        values = flatten(item, "predictions")
        if not values or not all(type(v) in (int, float, str, bool) for v in values):
            raise Invalid("invalid_payload", "a prediction must be a number, a string or "
                                             "a list of them")
        if len(values) == 1:
            out.append((values[0], None))
            continue
        if not all(type(v) in (int, float) for v in values):
            raise Invalid("invalid_payload", "a prediction of several values must hold "
                                             "numbers (a score per class)")
        if not -len(values) <= score_column < len(values):
            raise Invalid("invalid_tensor", f"a prediction of {len(values)} scores has no "
                                            f"column {score_column}")
        best = max(range(len(values)), key=values.__getitem__)
        out.append((best, values[score_column]))
    return out
