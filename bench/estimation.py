"""Performance estimates before the labels arrive: how close, against NannyML, and at what
cost.

    pip install '.[bench]'            # NannyML, for the comparison only
    python bench/estimation.py [--seeds 5] [--part accuracy|throughput|all]

**accuracy**: a known true model P(y = 1 | x), labels drawn from it; the reference is
20,000 rows of the training distribution, the analysis 50 chunks of 1,000 predictions
whose inputs drift far from it (covariate shift, the relation unchanged). Three monitored
classifiers: ``logit``, an over-confident logistic score (the shape Platt scaling
assumes); ``skewed``, the cube of a probability (a miscalibration that is not logistic in
the score's logit); ``steps``, a tree-like score of 16 plateaus. For each chunk: the mean absolute error, against the realised metric of
that chunk, of our rolling estimate (its window is the chunk at the chunk's last
prediction), of the same with a Platt calibrator instead of the isotonic one, and of
NannyML's CBPE (isotonic, ``chunk_size=1000``) on the same rows. Each is compared with
the realised metric it estimates: ours with River's (ROC AUC with River's ten
thresholds), NannyML's with its own (exact ROC AUC). Ours is also measured per event:
the rolling estimate after every 100 predictions against the realised metric of the
same last 1,000 predictions.

**throughput**: the pipeline over a 20-feature scored classifier stream with a label
for every prediction, estimation on and off, interleaved, best of 5; CPU time per event;
and the estimator alone on a batch's arrays, what a columnar engine pays.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench.throughput import make_events  # noqa: E402
from detector.calibrate_scores import Calibrator, fit_calibrator  # noqa: E402
from detector.config import Settings  # noqa: E402
from detector.estimation import Estimator  # noqa: E402
from detector.performance import Performance  # noqa: E402
from detector.pipeline import Pipeline  # noqa: E402
from detector.records import Record  # noqa: E402
from detector.service import tune_gc  # noqa: E402

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
CHUNK, CHUNKS, REFERENCE = 1000, 50, 20_000


def truth(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(1.5 * x[:, 0] - x[:, 1] + 0.5 * x[:, 0] * x[:, 1])))


def score(kind: str, x: np.ndarray) -> np.ndarray:
    z = 1.2 * x[:, 0] - 0.9 * x[:, 1] + 0.4 * x[:, 0] * x[:, 1]
    if kind == "logit":
        return 1.0 / (1.0 + np.exp(-1.7 * z))
    p = 1.0 / (1.0 + np.exp(-z))
    if kind == "skewed":
        return p ** 3                                     # not logistic in the logit
    return np.floor(16 * p ** 0.6) / 16 + 1 / 32          # plateaus, squashed upwards


def data(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, ...]:
    """(reference scores, labels), (analysis scores, predictions, labels)."""
    xr = rng.normal(0.0, 1.0, (REFERENCE, 2))
    n = CHUNK * CHUNKS
    t = np.arange(n) / n
    x = rng.normal(0.0, 1.0, (n, 2))
    x[:, 0] += 1.5 * np.sin(2 * np.pi * t)
    x[:, 1] -= 1.2 * t
    ref_score, score_ = score(kind, xr), score(kind, x)
    return (ref_score, (rng.uniform(size=REFERENCE) < truth(xr)).astype(int),
            score_, (score_ > 0.5).astype(int), (rng.uniform(size=n) < truth(x)).astype(int))


def platt(scores: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Platt scaling (a logistic curve of the score's logit), as a dense calibrator."""
    z = np.log(np.clip(scores, 1e-6, 1 - 1e-6) / (1 - np.clip(scores, 1e-6, 1 - 1e-6)))

    def loss(w: np.ndarray) -> float:
        m = w[0] * z + w[1]
        return float(np.sum(np.logaddexp(0.0, m) - labels * m))

    a, b = minimize(loss, np.array([1.0, 0.0]), method="BFGS").x
    grid = np.linspace(0.0, 1.0, 2001)
    g = np.log(np.clip(grid, 1e-6, 1 - 1e-6) / (1 - np.clip(grid, 1e-6, 1 - 1e-6)))
    return Calibrator(grid, 1.0 / (1.0 + np.exp(-(a * g + b))), 1, int(scores.size))


def ours(calibrator: Calibrator, s: np.ndarray, q: np.ndarray, y: np.ndarray, every: int
         ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Absolute errors of the rolling estimates after every ``every`` predictions, against
    the realised metrics of the same last CHUNK predictions; and those at chunk ends."""
    est = Estimator("classification", 1, CHUNK, 1, calibrator)
    perf = Performance("classification", 1, CHUNK)
    per_event: dict[str, list[float]] = {m: [] for m in METRICS}
    per_chunk: dict[str, list[float]] = {m: [] for m in METRICS}
    for start in range(0, s.size, every):
        part = slice(start, start + every)
        est.observe(q[part].tolist(), s[part])
        for a, b, c in zip(y[part].tolist(), q[part].tolist(), s[part].tolist()):
            perf.update(a, b, c)
        if start + every < CHUNK:
            continue
        realised = {m: v for m, w, v in perf.values() if w == "rolling"}
        for e in est.estimates():
            if e.window == "rolling":
                error = abs(e.value - realised[e.metric])
                per_event[e.metric].append(error)
                if (start + every) % CHUNK == 0:
                    per_chunk[e.metric].append(error)
    return per_event, per_chunk


def nannyml_errors(ref: tuple[np.ndarray, np.ndarray], s: np.ndarray, q: np.ndarray,
                   y: np.ndarray) -> dict[str, list[float]]:
    import nannyml
    import pandas as pd

    reference = pd.DataFrame({"score": ref[0], "pred": (ref[0] > 0.5).astype(int), "y": ref[1]})
    analysis = pd.DataFrame({"score": s, "pred": q, "y": y})
    cbpe = nannyml.CBPE(metrics=list(METRICS), y_pred_proba="score", y_pred="pred", y_true="y",
                        problem_type="classification_binary", chunk_size=CHUNK)
    cbpe.fit(reference)
    frame = cbpe.estimate(analysis).filter(period="analysis").to_df()
    assert len(frame) == CHUNKS, len(frame)
    return {m: np.abs(frame[(m, "value")] - frame[(m, "realized")]).tolist() for m in METRICS}


def accuracy_part(seeds: int) -> None:
    os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"     # no analytics calls home
    try:
        import nannyml
    except ImportError:
        sys.exit("the comparison needs NannyML: pip install '.[bench]'")
    print(f"NannyML {nannyml.__version__}; {seeds} seeds x {CHUNKS} chunks of {CHUNK}; "
          "mean absolute error of the estimate against the realised metric")
    for kind in ("logit", "skewed", "steps"):
        rows: dict[str, dict[str, list[float]]] = {
            name: {m: [] for m in METRICS}
            for name in ("ours per chunk", "ours, Platt", "NannyML CBPE", "ours per event")}
        took = {"ours": 0.0, "nannyml": 0.0}
        for seed in range(seeds):
            ref_s, ref_y, s, q, y = data(np.random.default_rng(seed), kind)
            t0 = time.process_time()
            per_event, per_chunk = ours(fit_calibrator(ref_s, ref_y == 1, 1), s, q, y, 100)
            took["ours"] += time.process_time() - t0
            _, platt_chunk = ours(platt(ref_s, ref_y), s, q, y, CHUNK)
            t0 = time.process_time()
            theirs = nannyml_errors((ref_s, ref_y), s, q, y)
            took["nannyml"] += time.process_time() - t0
            for name, errors in (("ours per chunk", per_chunk), ("ours, Platt", platt_chunk),
                                 ("NannyML CBPE", theirs), ("ours per event", per_event)):
                for m in METRICS:
                    rows[name][m] += errors[m]
        print(f"\nmodel {kind!r}")
        print(f"| estimator | {' | '.join(METRICS)} |")
        print("| --- |" + " --- |" * len(METRICS))
        for name, errors in rows.items():
            print(f"| {name} | " + " | ".join(f"{np.mean(errors[m]):.4f}" for m in METRICS)
                  + " |")
        print(f"CPU: ours (estimates every 100 predictions) {took['ours']:.1f} s, "
              f"NannyML (per chunk) {took['nannyml']:.1f} s")


def throughput_part(events: int) -> None:
    preds, labels = make_events(events, 1.0, seed=1)
    records = []          # each label 1,000 predictions after its own
    for i, prediction in enumerate(preds):
        records.append(Record("prediction", prediction))
        if i >= 1000:
            records.append(Record("label", labels[i - 1000]))
    records += [Record("label", label) for label in labels[len(preds) - 1000:]]
    batches = [records[i:i + 2000] for i in range(0, len(records), 2000)]
    tune_gc()                   # the service's garbage-collector settings
    best = {True: float("inf"), False: float("inf")}
    for _ in range(5):
        for enabled in (True, False):
            p = Pipeline(Settings(estimation={"enabled": enabled}))
            t0 = time.process_time()
            for now, batch in enumerate(batches):
                p.process(batch, now=float(now))
            best[enabled] = min(best[enabled], time.process_time() - t0)
    n = len(records)
    for enabled in (False, True):
        print(f"estimation {'on ' if enabled else 'off'}: {n / best[enabled]:>9,.0f} events/s, "
              f"{best[enabled] / n * 1e6:.2f} CPU µs/event")
    print(f"cost of estimation: {(best[True] / best[False] - 1) * 100:+.1f} % CPU per event")
    # what a columnar engine pays: the estimator alone on a batch's arrays
    rng = np.random.default_rng(3)
    ref_s, ref_y, s, q, y = data(rng, "logit")
    est = Estimator("classification", 1, CHUNK, 1, fit_calibrator(ref_s, ref_y == 1, 1))
    t0 = time.process_time()
    for start in range(0, s.size, 1000):
        part = slice(start, start + 1000)
        est.observe(q[part], s[part])
        est.label(y[part], q[part], s[part])
    took = time.process_time() - t0
    print(f"the estimator alone on arrays of 1,000: {took / s.size * 1e6:.2f} CPU µs per "
          "prediction and its label")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--part", choices=["accuracy", "throughput", "all"], default="all")
    args = parser.parse_args()
    if args.part in ("accuracy", "all"):
        accuracy_part(args.seeds)
    if args.part in ("throughput", "all"):
        throughput_part(args.events)


if __name__ == "__main__":
    main()
