"""Checkpoints: atomic files, refused with a reason when damaged, foreign or for other
settings; the service's handling of an unusable one."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from detector import state
from detector.config import Settings
from detector.pipeline import Pipeline
from detector.records import Record
from detector.stores import FileStore

KEY = b"0123456789abcdef0123456789abcdef"


def _pipeline() -> Pipeline:
    p = Pipeline(Settings())
    p.process([Record("prediction", json.dumps({
        "model": "m", "prediction_id": str(i), "features": {"x": float(i % 7), "c": "a"},
        "prediction": i % 2, "label": 1}).encode()) for i in range(1500)], now=0.0)
    return p


def test_round_trip_restores_the_whole_state(tmp_path: Path) -> None:
    p = _pipeline()
    fp = state.fingerprint(p.settings.state_shape())
    store = FileStore(tmp_path / "c")
    store.write({"0": state.encode(p.snapshot(), {("predictions", 0): 1500}, fp, 1500, KEY)})
    q = Pipeline(Settings())
    q.restore(state.decode(store.read(["0"])["0"], fp, KEY, str(store)).state)
    more = [Record("prediction", json.dumps({"model": "m", "prediction_id": "x",
                                             "features": {"x": 50.0}, "prediction": 0}).encode())]
    a, b = p.process(more, now=1.0), q.process(more, now=1.0)
    assert [d.index for d in a.detections] == [d.index for d in b.detections]
    assert p.models["m"].events == q.models["m"].events == {"prediction": 1501, "label": 0}
    pa = dict((m, v) for m, w, v in p.models["m"].versions["unversioned"].performance.values())
    pb = dict((m, v) for m, w, v in q.models["m"].versions["unversioned"].performance.values())
    assert pa == pb


@pytest.mark.parametrize("damage, reason", [
    (lambda raw: raw[:-10], "truncated"),
    (lambda raw: raw[:-40] + bytes([raw[-40] ^ 1]) + raw[-39:], "checksum"),
    (lambda raw: pickle.dumps({"evil": True}), "not_a_checkpoint"),       # plain pickle
    (lambda raw: b"", "truncated"),
])
def test_damaged_files_are_refused_with_a_reason(tmp_path, damage, reason):
    store = FileStore(tmp_path / "c")
    store.write({"0": state.encode({"x": 1}, {}, "fp", key=KEY)})
    path = tmp_path / "c" / "0"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(state.CheckpointError) as info:
        state.decode(store.read(["0"])["0"], "fp", KEY, str(store))
    assert info.value.reason == reason and str(info.value).startswith(f"checkpoint {store}: ")


def test_other_settings_or_key_are_incompatible() -> None:
    blob = state.encode({"x": 1}, {}, state.fingerprint(Settings().state_shape()), key=KEY)
    other = state.fingerprint(Settings(detectors={"feature": ["adwin"]}).state_shape())
    with pytest.raises(state.CheckpointError, match="other settings"):
        state.decode(blob, other, KEY)
    with pytest.raises(state.CheckpointError, match="another key"):
        state.decode(blob, state.fingerprint(Settings().state_shape()), b"x" * 32)


def _run(config: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "DRIFT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    return subprocess.run([sys.executable, "-m", "detector", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_a_short_key_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"checkpoint: {{path: {tmp_path / 'state'}, key: short}}\n")
    done = _run(cfg)
    assert done.returncode == 2 and "checkpoint.key" in done.stderr
