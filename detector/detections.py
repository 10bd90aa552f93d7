"""The fields that name a detection, the same in every output: ``/detections``, the
retraining hook's drift events, the ``drift_detected`` log line and ``replay``'s summary.

``model_version`` is the event's model version, as in the metrics. ``version`` is the
same value under its old name, kept for one release so that consumers can move
(README, "Upgrading"), then removed.

Where it happened (``detector.trace``): ``index`` and ``onset_index`` count the events
of the model version from 0 (its predictions for the ``feature`` and ``prediction``
signals, its labelled pairs for ``error`` and ``label``); ``value_index`` and
``onset_value_index`` count the values of the stream, as its detector does (a feature
missing from some events has fewer). ``topic``, ``partition``, ``offset`` and
``prediction_id`` say where the event that fired was read, the ``onset_`` ones where the
onset's was; each is None when not known (a replayed file has no topic or offset, an
onset beyond the last 4,096 events of the version has no position).

>>> from detector.monitor import Detection
>>> from detector.trace import Position, Trace
>>> d = Detection("fraud", "3", "feature", "amount", "adwin", 4095, 88.0, 1.5e9, {}, 4000,
...               trace=Trace(4100, Position("predictions", 2, 77, "a7"), 4003, None))
>>> f = detection_fields(d)
>>> f["model_version"], f["version"], f["index"], f["value_index"], f["offset"], f["onset_offset"]
('3', '3', 4100, 4095, 77, None)
"""

from __future__ import annotations

from typing import Any

from detector.monitor import Detection
from detector.trace import Position

_NOWHERE: dict[str, Any] = {"topic": None, "partition": None, "offset": None,
                            "prediction_id": None}


def detection_fields(d: Detection) -> dict[str, Any]:
    """Model, model version (and its deprecated alias ``version``), stream, detector, the
    event indices where it fired and where it began, the stream's value indices of both,
    and the positions of both events."""
    t = d.trace
    return {"model": d.model, "model_version": d.version, "version": d.version,
            "signal": d.signal, "feature": d.feature, "category": d.category,
            "detector": d.detector, "direction": d.direction,
            "index": None if t is None else t.event,
            "onset_index": None if t is None else t.onset_event,
            "value_index": d.index,
            "onset_value_index": d.index if d.onset is None else d.onset,
            **_position(None if t is None else t.position, ""),
            **_position(None if t is None else t.onset_position, "onset_")}


def _position(p: Position | None, prefix: str) -> dict[str, Any]:
    where = _NOWHERE if p is None else {
        "topic": p.topic or None, "partition": p.partition if p.partition >= 0 else None,
        "offset": p.offset if p.offset >= 0 else None, "prediction_id": p.prediction_id}
    return {prefix + k: v for k, v in where.items()}
