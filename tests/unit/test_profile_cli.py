"""drift-detector profile: messy files give counted skips or clear errors, never a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from detector.reference import Profile

MESSY = """id,amount,country,age,label,score,comment
1,12.5,DE,41,0,0.1,ok
2,NA,FR,35,1,0.8,
3,7.25,DE,,0,0.3,"quoted, with comma"
4,8.0,US,50,0,0.2,x
5,3.1,DE,29
6,9.0,GB,not a number,1,0.9,y
7,1e400,DE,44,0,0.4,z
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ})


def test_messy_csv_is_profiled_with_counted_skips(tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    rows = MESSY + "".join(f"{i},{10 + i % 7},DE,{30 + i % 40},{i % 2},0.5,\n"
                           for i in range(8, 400))
    data.write_text(rows)
    out = tmp_path / "profile.json"
    done = _cli("profile", str(data), "--model", "fraud", "--label-column", "label",
                "--score-column", "score", "--exclude", "id", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "wrong_field_count 1" in done.stdout           # the short row 5
    assert "column age: 1 values that are not finite numbers ignored" in done.stdout
    assert "column amount: 1 values that are not finite numbers ignored" in done.stdout
    profile = Profile.from_json(json.loads(out.read_text()))
    assert profile.model == "fraud"
    assert profile.features["amount"].kind == "numeric"    # 1e400 is counted invalid
    assert profile.features["country"].kind == "categorical"
    assert "comment" in profile.features and "id" not in profile.features
    assert profile.label is not None and profile.prediction is not None
    cols = json.loads(out.read_text())["columns"]
    assert (cols["amount"]["missing"], cols["amount"]["invalid"]) == (1, 1)   # NA; 1e400
    assert (cols["age"]["missing"], cols["age"]["invalid"]) == (1, 1)
    assert profile.features["amount"].counts.sum() == 398 - 2


def test_jsonl_with_bad_lines(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [json.dumps({"x": float(v), "c": "a" if v > 0 else "b", "y": int(v > 0)})
             for v in rng.normal(size=500)]
    lines[10] = "{broken"
    lines[20] = "[1, 2]"
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "p.json"
    done = _cli("profile", str(data), "--model", "m", "--label-column", "y", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "invalid_json 1" in done.stdout and "not_object 1" in done.stdout
    profile = Profile.from_json(json.loads(out.read_text()))
    assert profile.features["x"].kind == "numeric" and profile.features["c"].kind == "categorical"
    assert int(profile.features["x"].counts.sum()) == 498


def test_clear_errors_with_exit_code_2(tmp_path: Path) -> None:
    missing = _cli("profile", str(tmp_path / "nope.csv"), "--model", "m", "-o", "x.json")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    done = _cli("profile", str(empty), "--model", "m", "-o", str(tmp_path / "o.json"))
    assert done.returncode == 2 and "empty" in done.stderr
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n")
    done = _cli("profile", str(data), "--model", "m", "--label-column", "y", "-o", "o.json")
    assert done.returncode == 2 and "column 'y' not found" in done.stderr
    unknown = tmp_path / "d.xlsx"
    unknown.write_text("x")
    done = _cli("profile", str(unknown), "--model", "m", "-o", "o.json")
    assert done.returncode == 2 and "--format" in done.stderr
    for stderr in (missing.stderr, done.stderr):
        assert "Traceback" not in stderr


def test_a_bad_profile_in_the_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"models:\n  fraud:\n    profile: {bad}\n    profiles:\n      '2': {tmp_path}/no.json\n")
    done = _cli("run", "--config", str(cfg))
    assert done.returncode == 2
    assert "models.fraud.profile" in done.stderr and "not a valid profile" in done.stderr
