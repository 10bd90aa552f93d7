"""The fields that name a detection, the same in every output: ``/detections``, the
retraining hook's drift events, the ``drift_detected`` log line and ``replay``'s summary.

``model_version`` is the event's model version, as in the metrics. ``version`` is the
same value under its old name, kept for one release so that consumers can move
(README, "Upgrading"), then removed.

>>> from detector.monitor import Detection
>>> d = Detection("fraud", "3", "feature", "amount", "adwin", 4095, 88.0, 1.5e9, {}, 4000)
>>> detection_fields(d)["model_version"], detection_fields(d)["version"]
('3', '3')
"""

from __future__ import annotations

from typing import Any

from detector.monitor import Detection


def detection_fields(d: Detection) -> dict[str, Any]:
    """Model, model version (and its deprecated alias ``version``), stream, detector, the
    index that fired and the estimated onset."""
    return {"model": d.model, "model_version": d.version, "version": d.version,
            "signal": d.signal, "feature": d.feature, "category": d.category,
            "detector": d.detector, "index": d.index, "onset_index": d.onset}
