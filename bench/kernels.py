"""The compiled kernels against their reference implementations, numba's compile cost,
and the kernels in a read-only package directory.

    python bench/kernels.py [--values 1000000] [--repeat 3] [--json kernels.json]

1. Speed: each kernel and its reference (River's ADWIN and PageHinkley, our CUSUM,
   Jump, Standardizer and Stream) on the same column, interleaved, best of ``--repeat``;
   wall and CPU time per value, and whether the detections are the same; the default
   stream with and without Jump (what it costs).
2. Compile time of each kernel with an empty numba cache (cold) and from the cache
   (warm), each in a fresh process with its own ``NUMBA_CACHE_DIR``.
3. A copy of the package on a read-only mount (as root: ``unshare -m`` and a read-only
   bind mount; otherwise file modes): where numba caches, and what each start costs,
   with a writable home, with ``NUMBA_CACHE_DIR``, and with neither (a container with
   ``readOnlyRootFilesystem`` and no home, as deploy/k8s).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from river import drift

from detector import detectors
from detector.config import Settings
from detector.detectors import Standardizer
from detector.kernels import adwin, cusum, jump, page_hinkley, standardize, stream, warm_up
from detector.monitor import Stream


def regimes(n: int, seed: int = 1, length: int = 20_000) -> np.ndarray:
    """Normal values whose mean and sd change every ``length`` values."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=n)
    for start in range(0, n, length):
        part = values[start:start + length]
        part *= rng.uniform(0.5, 2.0)
        part += rng.normal(0.0, 0.7)
    return values


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def river_fired(det, values: list[float]) -> list[int]:
    out = []
    for i, x in enumerate(values):
        det.update(x)
        if det.drift_detected:
            out.append(i)
    return out


def standardize_case(values: np.ndarray, every: int) -> tuple[Callable, Callable]:
    """Restart every ``every`` values, as a detection would: the first 1000 values of
    each regime go through the t -> normal map (stdtr, ndtri)."""
    chunks = [values[a:a + every] for a in range(0, values.size, every)]

    def reference() -> list:
        std, out = Standardizer(1000, 5, 5.0), []
        for chunk in chunks:
            out.extend(std.transform(x) for x in chunk.tolist())
            std.restart()
        return [i for i, z in enumerate(out) if z is not None and abs(z) > 3]

    def kernel() -> list:
        state, out = standardize.new_state(1000, 5, 5.0), []
        for chunk in chunks:
            z, valid = standardize.transform_many(state, chunk)
            out.append(np.where(valid, z, 0.0))
            standardize.restart(state)
        return np.flatnonzero(np.abs(np.concatenate(out)) > 3).tolist()

    return reference, kernel


def stream_case(settings: Settings, values: np.ndarray, batch: int | None
                ) -> tuple[Callable, Callable]:
    specs = settings.detectors.feature
    d = settings.detection

    def reference() -> list:
        s = Stream("m", "1", "feature", "x", specs,
                   Standardizer.from_settings(d) if d.standardize else None,
                   d.cooldown, engine="river")
        out: list = []
        for x in values.tolist():
            s.update(x, 0.0, out)
        return [(o.index, o.detector) for o in out]

    def kernel() -> list:
        std = (standardize.from_reference(Standardizer.from_settings(d)) if d.standardize
               else None)
        state = stream.new_state([(s.type, s.params) for s in specs], std, d.cooldown)
        step = batch or values.size
        parts = [stream.update_many(state, values[a:a + step])
                 for a in range(0, values.size, step)]
        return [(int(i), specs[c].name) for p in parts
                for i, c in zip(p.index[p.episode], p.channel[p.episode])]

    return reference, kernel


def cases(n: int) -> list[tuple[str, Callable, Callable]]:
    x = regimes(n)
    xs = x.tolist()
    calibrated = Settings(reference={"enabled": False})
    without_jump = Settings(reference={"enabled": False},
                            detectors={"feature": ["adwin", "cusum"]})
    # a level step of 30 every 20,000 values, for Jump to find
    steps = x + np.repeat(np.arange(n // 20_000 + 1) % 2 * 30.0, 20_000)[:n]
    river_mode = Settings(reference={"enabled": False},
                          detectors={"feature": ["adwin", "page_hinkley", "cusum"]},
                          detection={"standardize": False, "calibrate": False, "cooldown": 0})
    z = x * 3.0 + 10.0
    return [
        ("adwin (River defaults)", lambda: river_fired(drift.ADWIN(), xs),
         lambda: adwin.update_many(adwin.new_state(), x).index.tolist()),
        ("adwin (delta 3.2e-8)", lambda: river_fired(drift.ADWIN(delta=3.2e-8), xs),
         lambda: adwin.update_many(adwin.new_state({"delta": 3.2e-8}), x).index.tolist()),
        ("page_hinkley (River)", lambda: river_fired(drift.PageHinkley(), xs),
         lambda: page_hinkley.update_many(page_hinkley.new_state(), x).index.tolist()),
        ("cusum (k 0.5, h 22.249)",
         lambda: river_fired(detectors.build("cusum", {"k": 0.5, "h": 22.249}), xs),
         lambda: cusum.update_many(cusum.new_state({"k": 0.5, "h": 22.249}), x).index.tolist()),
        ("jump (defaults, steps)",
         lambda: river_fired(detectors.build("jump", {}), steps.tolist()),
         lambda: jump.update_many(jump.new_state(), steps).index.tolist()),
        ("standardize (restart/10k)", *standardize_case(x, 10_000)),
        ("standardize (all t->normal)", *standardize_case(x, 1_000)),
        ("stream calibrated", *stream_case(calibrated, z, None)),
        ("  same, batches of 2000", stream_case(calibrated, z, None)[0],
         stream_case(calibrated, z, 2000)[1]),
        ("stream River mode", *stream_case(river_mode, x, None)),
        ("stream calibrated, no jump", *stream_case(without_jump, z, None)),
    ]


def bench_speed(n: int, repeat: int) -> list[dict]:
    warm_up()
    rows = []
    print(f"\n1. speed on {n:,} values per kernel (best of {repeat}, interleaved)\n")
    print(f"{'kernel':<27} {'reference µs/value':>19} {'kernel µs/value':>16} "
          f"{'speed-up':>9} {'same':>5}")
    print(f"{'':<27} {'wall':>9} {'CPU':>9} {'wall':>8} {'CPU':>7} {'wall':>9}")
    for name, reference, kernel in cases(n):
        ref, ker = [], []
        for _ in range(repeat):
            ref.append(timed(reference))
            ker.append(timed(kernel))
        rw, rc = min(r[0] for r in ref), min(r[1] for r in ref)
        kw, kc = min(k[0] for k in ker), min(k[1] for k in ker)
        same = ref[0][2] == ker[0][2]
        row = {"kernel": name.strip(), "values": n, "reference_wall_us": rw / n * 1e6,
               "reference_cpu_us": rc / n * 1e6, "kernel_wall_us": kw / n * 1e6,
               "kernel_cpu_us": kc / n * 1e6, "speedup_wall": rw / kw,
               "speedup_cpu": rc / kc if kc else float("inf"), "same_detections": same,
               "detections": len(ker[0][2])}
        rows.append(row)
        print(f"{name:<27} {row['reference_wall_us']:>9.3f} {row['reference_cpu_us']:>9.3f} "
              f"{row['kernel_wall_us']:>8.4f} {row['kernel_cpu_us']:>7.4f} "
              f"{row['speedup_wall']:>8.1f}x {'yes' if same else 'NO':>5}", flush=True)
    return rows


#: run in a fresh process: import the kernels, time each one's first call, check ADWIN
PROBE = """
import json, sys, time
t = time.perf_counter()
import numpy as np
from detector import kernels
from detector.kernels import _jit, adwin, cusum, jump, page_hinkley, standardize, stream
imported = time.perf_counter() - t
x = np.linspace(-1.0, 1.0, 64)
calls = {
    "adwin": lambda: adwin.update_many(adwin.new_state(), x),
    "cusum": lambda: cusum.update_many(cusum.new_state(), x),
    "jump": lambda: jump.update_many(jump.new_state(), x),
    "page_hinkley": lambda: page_hinkley.update_many(page_hinkley.new_state(), x),
    "standardize": lambda: standardize.transform_many(standardize.new_state(1000, 5, 5.0), x),
    "stream": lambda: stream.update_many(stream.new_state(
        [(k, {}) for k in stream.KINDS], standardize.new_state(1000, 5, 5.0), 500), x),
}
first = {}
for name, call in calls.items():
    t = time.perf_counter()
    call()
    first[name] = time.perf_counter() - t
from river import drift
v = np.r_[np.zeros(1000), np.full(200, 3.0)]
river, expected = drift.ADWIN(), []
for i, y in enumerate(v):
    river.update(y)
    if river.drift_detected:
        expected.append(i)
same = adwin.update_many(adwin.new_state(), v).index.tolist() == expected
print(json.dumps({"import": imported, "first_call": first, "cached": _jit.CACHED,
                  "file": kernels.__file__, "same_as_river": same}))
"""


def probe(env: dict[str, str], wrap: list[str] | None = None, cwd: Path = ROOT) -> dict:
    cmd = [sys.executable, "-c", PROBE]
    if wrap:
        cmd = [*wrap, " ".join(shlex.quote(c) for c in cmd)]
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600,
                          check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["warnings"] = [line for line in done.stderr.splitlines() if "kernels_" in line]
    return result


def bench_compile() -> dict:
    print("\n2. compile time (fresh process each; s)\n")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        cold, warm = probe(env), probe(env)
    names = list(cold["first_call"])
    print(f"{'':<16}{'import':>8}" + "".join(f"{n:>14}" for n in names) + f"{'all':>8}")
    for label, r in (("cold (empty)", cold), ("warm (cached)", warm)):
        print(f"{label:<16}{r['import']:>8.2f}" + "".join(
            f"{r['first_call'][n]:>14.2f}" for n in names)
            + f"{sum(r['first_call'].values()):>8.2f}")
    return {"cold": cold, "warm": warm}


def set_writable(directory: Path, writable: bool) -> None:
    for path in (directory, *directory.rglob("*")):
        mode = path.stat().st_mode
        path.chmod(mode | 0o200 if writable else mode & ~0o222)


def read_only_runner(directory: Path) -> list[str] | None:
    """A command prefix that runs a shell command with ``directory`` read-only: as root
    a read-only bind mount in a private mount namespace (root ignores file modes),
    otherwise file modes. None for root without ``unshare``."""
    if os.geteuid() != 0:
        set_writable(directory, False)
        return ["sh", "-c"]
    if shutil.which("unshare") is None:
        return None
    d = shlex.quote(str(directory))
    script = (f"mount --make-rprivate / && mount --bind {d} {d} && "
              f"mount -o remount,bind,ro {d} {d} && exec \"$0\" \"$@\"")
    return ["unshare", "-m", "sh", "-c", script, "sh", "-c"]


def bench_read_only() -> dict:
    print("\n3. package directory read-only (a copy of detector/ on a read-only mount)\n")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        site = tmp_path / "ro"
        shutil.copytree(ROOT / "detector", site / "detector",
                        ignore=shutil.ignore_patterns("__pycache__"))
        home, cache = tmp_path / "home", tmp_path / "numba-cache"
        home.mkdir()
        runner = read_only_runner(site)
        if runner is None:
            print("skipped: root without unshare cannot make a read-only mount")
            return {}
        base = {k: v for k, v in os.environ.items()
                if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "HOME")}
        base["PYTHONPATH"] = str(site)
        scenarios = {
            "writable home": {**base, "HOME": str(home)},
            "NUMBA_CACHE_DIR": {**base, "HOME": str(site), "NUMBA_CACHE_DIR": str(cache)},
            "neither (k8s)": {**base, "HOME": str(site)},
        }
        print(f"{'scenario':<17} {'start':<7} {'import s':>8} {'compile s':>10} {'cached':>7} "
              f"{'same':>5}  cache files")
        for name, env in scenarios.items():
            for start in ("first", "second"):
                r = probe(env, runner, cwd=tmp_path)
                results[f"{name}, {start}"] = r
                if "error" in r:
                    print(f"{name:<17} {start:<7} ERROR {r['error']}")
                    continue
                if not r["file"].startswith(str(site)):
                    print(f"{name:<17} {start:<7} imported {r['file']}, not the copy")
                    continue
                where = [str(p.parent) for p in tmp_path.rglob("*.nbi")]
                place = (min(where).replace(str(tmp_path), "$TMP")
                         if where else "none")
                print(f"{name:<17} {start:<7} {r['import']:>8.2f} "
                      f"{sum(r['first_call'].values()):>10.2f} {r['cached']!s:>7} "
                      f"{'yes' if r['same_as_river'] else 'NO':>5}  {len(where)} in {place}")
                if r["warnings"]:
                    print(f"{'':<26}logged: {r['warnings'][0][:90]}")
            for p in tmp_path.rglob("*.nb[ic]"):
                p.unlink()
        if os.geteuid() != 0:
            set_writable(site, True)  # so that the temporary directory can be removed
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    import numba
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, numba {numba.__version__}, "
          f"numpy {np.__version__}")
    report = {"speed": bench_speed(args.values, args.repeat), "compile": bench_compile(),
              "read_only": bench_read_only()}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
