"""State that survives kills: a soak with a SIGKILL every minute, and what state costs.

    python bench/state.py [--minutes 10] [--rate 1500] [--replicas 2] [--json PATH]
    python bench/state.py --size-only

1. Size and time. One model version with 20 and with 200 numeric features (plus 2
   categorical ones, labels joined, reference windows on), 20,000 events: the bytes of
   its partition's state, per model and per feature, and the time to encode it and to
   write it to a file store (fsync), best of 5.
2. Soak. The bundled broker, three co-partitioned partitions keyed by model (three
   models), a producer at a steady rate, and ``--replicas`` services with the
   defaults (state on the group's topic). Every minute one service, in turn, is killed
   with SIGKILL and started again (a hand-over to the others and back). At the end the
   producer stops and the counts of the live services are compared with what was sent:
   events lost and events counted twice, per model (both must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from detector import state  # noqa: E402
from detector.broker import Tansu, free_port  # noqa: E402
from detector.config import KafkaSettings, Settings  # noqa: E402
from detector.pipeline import Pipeline  # noqa: E402
from detector.records import Record  # noqa: E402
from detector.sources import create_topics, producer  # noqa: E402
from detector.stores import FileStore  # noqa: E402

MODELS = ("fraud", "churn", "credit")


def _event(model: str, i: int, numeric: int, rng: np.random.Generator) -> dict:
    return {"model": model, "model_version": "1", "prediction_id": f"{model}-{i}",
            "features": {**{f"f{j}": float(rng.normal()) for j in range(numeric)},
                         "country": str(rng.choice(["DE", "FR", "US"])),
                         "device": str(rng.choice(["ios", "android", "web"]))},
            "prediction": int(rng.random() < 0.3), "score": float(rng.random()),
            "label": int(rng.random() < 0.3)}


def size_and_time(numeric: int, events: int = 20_000) -> dict:
    rng = np.random.default_rng(numeric)
    p = Pipeline(Settings(max_features=numeric + 10))
    batch = []
    for i in range(events):
        raw = json.dumps(_event("fraud", i, numeric, rng)).encode()
        batch.append(Record("prediction", raw, 1.7e9, "predictions", 0, i))
        if len(batch) == 2000:
            p.process(batch, 1.7e9)
            batch = []
    fp = state.fingerprint(p.settings.state_shape())
    best_encode = best_write = float("inf")
    blob = b""
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(Path(tmp))
        for _ in range(5):
            started = time.perf_counter()
            blob = state.encode(p.take(0), {("predictions", 0): events}, fp, events)
            best_encode = min(best_encode, time.perf_counter() - started)
            started = time.perf_counter()
            store.write({"0": blob})
            best_write = min(best_write, time.perf_counter() - started)
        started = time.perf_counter()
        state.decode(blob, fp)
        decode = time.perf_counter() - started
    features = numeric + 2
    return {"features": features, "bytes": len(blob), "bytes_per_feature": len(blob) // features,
            "encode_ms": round(best_encode * 1e3, 1), "write_ms": round(best_write * 1e3, 1),
            "decode_ms": round(decode * 1e3, 1)}


def _scrape(port: int) -> dict[str, float] | None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return None
    out = {}
    for line in body.decode().splitlines():
        if line.startswith('drift_events_total{kind="prediction"'):
            name, value = line.rsplit(" ", 1)
            out[name.split('model="')[1].split('"')[0]] = float(value)
    return out


class Replica:
    def __init__(self, broker: str, index: int, workdir: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, "DRIFT_KAFKA__BOOTSTRAP_SERVERS": broker,
                    "DRIFT_KAFKA__SESSION_TIMEOUT_MS": "2000",
                    "DRIFT_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
                    "DRIFT_METRICS__HOST": "127.0.0.1", "DRIFT_METRICS__PORT": str(self.port),
                    "DRIFT_LOG__FORMAT": "json"}
        self.log = workdir / f"replica-{index}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "detector", "run"],
                                         env=self.env, stdout=out, stderr=out)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def counts(self) -> dict[str, float]:
        return _scrape(self.port) or {}


def soak(minutes: float, rate: float, replicas: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="state-soak-"))
    sent = dict.fromkeys(MODELS, 0)
    stop = threading.Event()
    with Tansu() as broker:
        k = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(k, k.topics, partitions=3)

        def produce() -> None:
            prod = producer(k, linger_ms=5)
            rng = np.random.default_rng(7)
            i, started = 0, time.monotonic()
            while not stop.is_set():
                for model in MODELS:
                    e = _event(model, i, 10, rng)
                    prod.send(k.predictions_topic, key=model.encode(), value=json.dumps(e).encode())
                    sent[model] += 1
                i += 1
                ahead = started + i * len(MODELS) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            prod.flush()
            prod.close()

        services = [Replica(broker.bootstrap, n, workdir) for n in range(replicas)]
        for s in services:
            s.start()
        sender = threading.Thread(target=produce, daemon=True)
        sender.start()
        kills, began = 0, time.monotonic()
        while time.monotonic() - began < minutes * 60:
            time.sleep(60)
            victim = services[kills % replicas]
            victim.kill()
            victim.start()
            kills += 1
            print(f"{(time.monotonic() - began) / 60:5.1f} min: killed and restarted "
                  f"replica {kills % replicas}; sent {sum(sent.values())}", flush=True)
        stop.set()
        sender.join()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:          # until the counts stop moving
            totals = {m: sum(s.counts().get(m, 0) for s in services) for m in MODELS}
            if totals == sent:
                break
            time.sleep(2)
        restored = sum(line.count('"checkpoint_restored"') for s in services
                       for line in s.log.read_text().splitlines())
        for s in services:
            s.kill()
    lost = {m: max(0, sent[m] - totals[m]) for m in MODELS}
    doubled = {m: max(0, totals[m] - sent[m]) for m in MODELS}
    return {"minutes": minutes, "replicas": replicas, "kills": kills, "sent": sent,
            "counted": totals, "lost": lost, "doubled": doubled,
            "partition_restores": restored, "logs": str(workdir)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1500.0, help="predictions per second")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--size-only", action="store_true")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "state.json")
    args = ap.parse_args()
    result: dict = {"size": [size_and_time(n) for n in (20, 200)]}
    print("| features | state bytes | bytes/feature | encode ms | write ms (fsync) | decode ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in result["size"]:
        print(f"| {r['features']} | {r['bytes']:,} | {r['bytes_per_feature']:,} | "
              f"{r['encode_ms']} | {r['write_ms']} | {r['decode_ms']} |")
    if not args.size_only:
        result["soak"] = s = soak(args.minutes, args.rate, args.replicas)
        print(f"\nsoak {s['minutes']:g} min, {s['replicas']} replicas, {s['kills']} SIGKILLs, "
              f"{s['partition_restores']} partition restores: sent {sum(s['sent'].values())}, "
              f"lost {sum(s['lost'].values())}, counted twice {sum(s['doubled'].values())}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
