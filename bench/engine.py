"""The engine benchmark of issue 11: every comparison in one command, in one run.

    python bench/engine.py [--quick] [--json bench/results/engine.json] [--repeat 3]
                           [--rows 1,2,3,4,5,6,7,8] [--rss-events 10000000]

Prints a table and writes JSON. Stream: a classifier with 20 numeric and 2
categorical features (5 categories each), one label per prediction (sent 500
predictions after it), seeded; "events" are predictions and labels together.

Rows (ratios are to a baseline measured in the same run):

0. the floor: what any per-event design in this stack pays before a single detector
   runs (msgspec's typed decode of each message, a dict join of labels to predictions,
   the numeric features spread into one array per batch), on the same batches as 2.
   The 4.5x target leaves row 1's CPU per event / 4.5 for everything; this row is how
   much of it decoding and joining in Python take alone.
1. the plain River loop a user writes by hand: ``json.loads``; River ADWIN and
   PageHinkley on every numeric feature and the score, and a River ADWIN on the 0/1
   share stream of every category of a categorical feature (the work our defaults do
   on categoricals); Accuracy, Precision, Recall, F1 cumulative and ``Rolling(1000)``
   on every joined pair; a dict join. Baseline of 2 (and of 5.2 at 200 features).
2. ours from a file: ``Pipeline.process`` over ``FileSource`` batches after
   ``kernels.warm_up()``: (a) defaults, (b) ``reference.enabled: false``, (c) River mode
   (``detection: {standardize: false, calibrate: false}``). Ratio: events per CPU second
   over row 1's (target >= 4.5x for 2a).
3. raw consumers of the same messages on the bundled broker (Tansu), doing nothing
   but count them: (a) kafka-python, (b) confluent-kafka; consumer-group members with
   exactly the service's fetch and session settings (built from the same
   ``KafkaSettings``: ``sources.client_options`` plus ``KafkaSource``'s keyword
   arguments, ``sources_confluent.librdkafka_config``). Each runs in a fresh process
   (``multiprocessing`` spawn) and times itself with ``time.process_time`` (all its
   threads, librdkafka's included) from the partition assignment to the last message.
4. ours through the broker: the real service, ``python -m detector run --config``,
   in its own process, (a) ``kafka.client: kafka-python``, (b) ``confluent``. Its CPU is
   read from ``/proc/<pid>/stat`` (utime + stime of every thread, 10 ms ticks), its
   progress from the group's committed offsets (the service commits after applying
   each batch), sampled every 20 ms by this process: nothing is added to the service.
   Ratio: events/s over 3a (target >= 0.8); 4b also over 4a (target >= 2).
5. 200 features (180 numeric + 20 categorical): rows 1, 2, 3 and 4 again.
6. ``/metrics`` at ~1k / 10k / 50k series, built by ``bench/scrape.py``: the
   collector's text and OpenMetrics renders, a real HTTP GET, the lock hold, and the
   collector from before issue 11 (target: GET of 10k series <= 50 ms).
7. RSS of a fresh process after ``warm_up()`` and the first ``--rss-warm`` events,
   then every tenth of ``--rss-events`` events (default 10M) fed to one ``Pipeline``
   (defaults) from pre-encoded batches whose prediction ids differ on every pass
   (target: growth <= 5 %).
8. two service processes on a 2-partition stream vs one (same group settings):
   events/s of the group and CPU per event (target: two/one >= 1.8).

Broker windows (rows 3, 4, 8) run from the partition assignment (raw consumers) or
the first commit seen (services: the events of the first batch are left out with it)
to the last message: process start-up, kernel loading and the group join are not in
them. Every row is repeated ``--repeat`` times, interleaved, in alternating order;
the table shows the best events/s and, separately, the lowest CPU per event. The
machine (CPU model, cores, load average at start and end, versions) is printed and
saved with the results: on a shared machine the load average tells how much of it
others took, which wall-clock rows (3, 4, 8) feel most.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata
from itertools import chain
from multiprocessing import get_context
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer

from detector.broker import Tansu, free_port
from detector.config import KafkaSettings, Settings
from detector.events import Kind
from detector.kernels import warm_up
from detector.pipeline import Pipeline
from detector.records import Record
from detector.sources import FileSource, client_options, create_topics, producer

MODEL = "bench"
CATEGORIES = ("a", "b", "c", "d", "e")
CATEGORY_SHARES = (0.4, 0.25, 0.15, 0.12, 0.08)
#: a label is sent this many predictions after its prediction
LABEL_LAG = 500
#: event timestamps start here (in the past: the service ignores times far ahead of it)
BASE_TIME = 1_700_000_000.0
#: every prediction id starts with this; the RSS run rewrites it on every pass
ID_PLACEHOLDER = b'"r000000-'
BATCH = 2000
#: how often the bench reads a service's committed offsets and CPU time
SAMPLE_S = 0.02
#: fetch and session settings of every consumer (raw and ours) against Tansu, which
#: holds the first JoinGroup for half the session timeout and leaves ~500 ms gaps
#: between fetches with kafka-python's default fetch_max_wait_ms
KAFKA = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500, "fetch_max_wait_ms": 10,
         "fetch_min_bytes": 1, "max_partition_fetch_bytes": 1_048_576}
FILE_MODES = {
    "a": ("defaults", {}),
    "b": ("reference off", {"reference": {"enabled": False}}),
    "c": ("River mode", {"detection": {"standardize": False, "calibrate": False}}),
}


# ----------------------------------------------------------------------------- stream

@dataclass(frozen=True)
class Stream:
    """Encoded events in stream order: (kind, key, JSON) with labels interleaved."""

    numeric: int
    categorical: int
    events: list[tuple[Kind, bytes, bytes]]

    @property
    def features(self) -> int:
        return self.numeric + self.categorical

    def values(self) -> list[bytes]:
        return [raw for _, _, raw in self.events]


def make_stream(predictions: int, numeric: int, categorical: int, seed: int) -> Stream:
    """``predictions`` predictions, each followed ``LABEL_LAG`` predictions later by its
    label; numeric features N(0, 1) (5 decimals), categorical ones drawn from
    ``CATEGORIES``; the score is a logistic function of the first feature and the label
    a Bernoulli draw with that probability."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (predictions, numeric)).round(5)
    cats = rng.choice(len(CATEGORIES), size=(predictions, categorical), p=CATEGORY_SHARES)
    score = (1.0 / (1.0 + np.exp(-x[:, 0]))).round(5)
    label = (rng.random(predictions) < score).astype(int)
    num_names = [f"f{j:03d}" for j in range(numeric)]
    cat_names = [f"c{j:02d}" for j in range(categorical)]
    events: list[tuple[Kind, bytes, bytes]] = []

    def add_label(i: int) -> None:
        pid = f"{ID_PLACEHOLDER[1:].decode()}{i:07d}"
        events.append(("label", pid.encode(), json.dumps({
            "model": MODEL, "prediction_id": pid, "label": int(label[i]),
            "timestamp": BASE_TIME + i * 0.001 + 0.5}).encode()))

    for i in range(predictions):
        pid = f"{ID_PLACEHOLDER[1:].decode()}{i:07d}"
        features: dict[str, float | str] = dict(zip(num_names, x[i].tolist()))
        features.update(zip(cat_names, (CATEGORIES[c] for c in cats[i])))
        events.append(("prediction", pid.encode(), json.dumps({
            "model": MODEL, "model_version": "1", "prediction_id": pid,
            "timestamp": BASE_TIME + i * 0.001, "features": features,
            "prediction": int(score[i] > 0.5), "score": float(score[i])}).encode()))
        if i >= LABEL_LAG:
            add_label(i - LABEL_LAG)
    for i in range(max(0, predictions - LABEL_LAG), predictions):
        add_label(i)
    return Stream(numeric, categorical, events)


# ------------------------------------------------------------------------ measurement

@dataclass
class Measure:
    """One timed run: events in the window, its wall and CPU seconds."""

    events: int
    wall: float
    cpu: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.events * 1e6


@dataclass
class Row:
    """A row of the table: the best of its runs, and its ratios to baselines."""

    key: str
    name: str
    runs: list[Measure] = field(default_factory=list)
    ratios: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def measured(self) -> bool:
        return bool(self.runs)

    @property
    def events(self) -> int:
        return max(r.events for r in self.runs)

    @property
    def events_per_s(self) -> float:
        """The best (highest) events/s of the runs."""
        return max(r.events_per_s for r in self.runs)

    @property
    def cpu_us(self) -> float:
        """The best (lowest) CPU µs per event of the runs."""
        return min(r.cpu_us for r in self.runs)

    def compare(self, base: Row, basis: str, target: float | None = None) -> None:
        """Add the ratio to ``base``: ``cpu`` (events per CPU second, this over base)
        or ``events/s`` (wall)."""
        if not (self.measured and base.measured):
            return
        value = (base.cpu_us / self.cpu_us if basis == "cpu"
                 else self.events_per_s / base.events_per_s)
        self.ratios.append({"to": base.key, "basis": basis, "value": value, "target": target,
                            "met": None if target is None else value >= target})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"row": self.key, "name": self.name, "note": self.note,
                               "ratios": self.ratios,
                               "runs": [{**asdict(r), "events_per_s": r.events_per_s,
                                         "cpu_us_per_event": r.cpu_us} for r in self.runs]}
        if self.measured:
            out.update(events=self.events, events_per_s=self.events_per_s,
                       cpu_us_per_event=self.cpu_us,
                       events_per_cpu_s=1e6 / self.cpu_us)
        return out


def interleave(rows: Sequence[tuple[Row, Callable[[], Measure]]], repeat: int) -> None:
    """Run every row ``repeat`` times, in alternating order, and print each run."""
    for r in range(repeat):
        for row, run in (rows if r % 2 == 0 else list(reversed(rows))):
            gc.collect()        # the previous run's garbage is not charged to this one
            m = run()
            row.runs.append(m)
            print(f"  run {r + 1}/{repeat}  {row.key:<5} {row.name:<44} {m.events:>9,} events "
                  f"{m.events_per_s:>10,.0f} events/s {m.cpu_us:>8.2f} CPU µs/event", flush=True)


def timed(events: int, fn: Callable[[], object]) -> Measure:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return Measure(events, time.perf_counter() - wall, time.process_time() - cpu)


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new interpreter (spawn): nothing of this process in its heap."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def rss_mib() -> float:
    """This process's resident set now (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    """CPU model, cores, load and the versions that matter."""
    cpu: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "cpu family", "model", "stepping", "cpu MHz", "cache size"):
            cpu.setdefault(key, value.strip())
        if not line.strip() and cpu:
            break           # the first processor is enough
    versions = {}
    for dist in ("numba", "numpy", "river", "kafka-python", "confluent-kafka", "msgspec",
                 "orjson", "prometheus-client"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        import confluent_kafka
        versions["librdkafka"] = confluent_kafka.libversion()[0]
    except ModuleNotFoundError:
        versions["librdkafka"] = None
    model = (f"{cpu.get('model name', 'unknown')} (family {cpu.get('cpu family', '?')}, "
             f"model {cpu.get('model', '?')}, {cpu.get('cpu MHz', '?')} MHz, "
             f"cache {cpu.get('cache size', '?')})")
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_start": os.getloadavg(), **versions}


def confluent_unavailable() -> str | None:
    """Why the confluent rows cannot run, or None when they can."""
    if "client" not in KafkaSettings.model_fields:
        return "n/a (no kafka.client setting in this build)"
    try:
        import confluent_kafka  # noqa: F401

        import detector.sources_confluent  # noqa: F401
    except ModuleNotFoundError:
        return "n/a (confluent-kafka not installed)"
    return None


# --------------------------------------------------------------- rows 1, 2 (and 5): file

def river_loop(values: Sequence[bytes]) -> Measure:
    """The baseline: the per-event loop a user writes with River objects."""
    from river import drift, metrics, utils

    scores = []
    for cls in (metrics.Accuracy, metrics.Precision, metrics.Recall, metrics.F1):
        scores += [cls(), utils.Rolling(cls, window_size=1000)]
    numeric: dict[str, tuple] = {}
    shares: dict[str, dict[str, Any]] = {}
    waiting: dict[str, int] = {}
    fired = 0

    def loop() -> None:
        nonlocal fired
        for raw in values:
            event = json.loads(raw)
            features = event.get("features")
            if features is not None:
                for name, value in (*features.items(), ("score", event["score"])):
                    if isinstance(value, str):
                        streams = shares.get(name)
                        if streams is None:
                            streams = shares[name] = {}
                        if value not in streams:
                            streams[value] = drift.ADWIN()
                        for category, det in streams.items():
                            det.update(1.0 if category == value else 0.0)
                            fired += det.drift_detected
                        continue
                    pair = numeric.get(name)
                    if pair is None:
                        pair = numeric[name] = (drift.ADWIN(), drift.PageHinkley())
                    for det in pair:
                        det.update(value)
                        fired += det.drift_detected
                waiting[event["prediction_id"]] = event["prediction"]
            else:
                y_pred = waiting.pop(event["prediction_id"], None)
                if y_pred is not None:
                    for metric in scores:
                        metric.update(event["label"], y_pred)

    m = timed(len(values), loop)
    m.extra = {"detections": fired, "unmatched": len(waiting)}
    return m


class _Prediction(msgspec.Struct):
    model: str
    prediction_id: str
    features: dict[str, float | str | None]
    prediction: bool | int | float | str
    model_version: str | None = None
    timestamp: float | None = None
    score: float | None = None


class _Label(msgspec.Struct):
    model: str
    prediction_id: str
    label: bool | int | float | str
    timestamp: float | None = None


def floor_run(path: Path, total: int) -> Measure:
    """Row 0: decode every message with msgspec (typed, no checks), join labels to
    predictions in a dict, and spread each batch's numeric features into one array:
    the least Python work per event before any detector, metric or reference."""
    decoders = {"prediction": msgspec.json.Decoder(_Prediction),
                "label": msgspec.json.Decoder(_Label)}
    waiting: dict[tuple[str, str], Any] = {}
    pairs = 0

    def loop() -> None:
        nonlocal pairs
        numeric: Callable[[dict], tuple] | None = None
        for batch in FileSource([path], batch_size=BATCH).batches():
            rows: list[dict[str, Any]] = []
            for record in batch:
                event = decoders[record.kind].decode(record.value)
                key = (event.model, event.prediction_id)
                if record.kind == "prediction":
                    rows.append(event.features)
                    waiting[key] = event.prediction
                elif waiting.pop(key, None) is not None:
                    pairs += 1
            if rows and numeric is None:    # the numeric names, from the first event
                numeric = itemgetter(*(k for k, v in rows[0].items() if type(v) is float))
            if rows:
                np.frombuffer(array("d", chain.from_iterable(map(numeric, rows))))

    m = timed(total, loop)
    m.extra = {"matched": pairs}
    return m


def file_run(path: Path, settings: Settings, total: int) -> Measure:
    """``Pipeline.process`` over ``FileSource`` batches; checks that nothing was lost."""
    pipeline = Pipeline(settings)

    def loop() -> None:
        for batch in FileSource([path], batch_size=BATCH).batches():
            pipeline.process(batch, now=time.time())

    m = timed(total, loop)
    state = pipeline.models.get(MODEL)
    counted = sum(state.events.values()) if state else 0
    rejected = {f"{k}/{r}": n for (k, r), n in pipeline.rejected.items() if n}
    if counted != total or rejected:
        raise RuntimeError(f"pipeline counted {counted:,} of {total:,} events; "
                           f"rejected {rejected}")
    m.extra = {"matched": state.join["matched"]}
    return m


def file_rows(stream: Stream, workdir: Path, prefix: str, repeat: int, target: float
              ) -> list[Row]:
    """Row 1 and rows 2a-c (or 5.1 and 5.2a-c) on ``stream``, interleaved; ``target``:
    the least ratio of 2a's events per CPU second to row 1's."""
    values = stream.values()
    path = workdir / f"stream-{stream.features}.jsonl"
    path.write_bytes(b"\n".join(values) + b"\n")
    shape = f"{stream.numeric}+{stream.categorical} features"
    river = Row(f"{prefix}1", f"plain River loop, {shape}")
    floor = Row(f"{prefix}0", f"floor: decode, join, columns only, {shape}")
    ours = {m: Row(f"{prefix}2{m}", f"ours, file, {name}, {shape}")
            for m, (name, _) in FILE_MODES.items()}
    warm_up()
    todo: list[tuple[Row, Callable[[], Measure]]] = [
        (river, lambda: river_loop(values)), (floor, lambda: floor_run(path, len(values)))]
    for mode, (_, overrides) in FILE_MODES.items():
        settings = Settings(**overrides)
        todo.append((ours[mode], lambda s=settings: file_run(path, s, len(values))))
    interleave(todo, repeat)
    floor.compare(river, "cpu")
    for mode, row in ours.items():
        row.compare(river, "cpu", target if mode == "a" else None)
        row.compare(river, "events/s")
    return [river, floor, *ours.values()]


# ------------------------------------------------------------------ rows 3, 4, 8: broker

@dataclass(frozen=True)
class Topics:
    predictions: str
    labels: str
    total: int


def produce(bootstrap: str, stream: Stream, name: str, partitions: int) -> tuple[Topics, Measure]:
    """Create the two topics and send the stream, keyed by prediction id."""
    k = KafkaSettings(bootstrap_servers=bootstrap)
    topics = Topics(f"{name}-predictions", f"{name}-labels", len(stream.events))
    create_topics(k, (topics.predictions, topics.labels), partitions=partitions)
    prod = producer(k, linger_ms=50)

    def send() -> None:
        for kind, key, raw in stream.events:
            prod.send(topics.predictions if kind == "prediction" else topics.labels, raw, key=key)
        prod.flush()

    m = timed(topics.total, send)
    prod.close()
    return topics, m


def kafka_config(bootstrap: str, topics: Topics, group: str, client: str) -> dict[str, Any]:
    """The ``kafka`` section shared by the raw consumers and the service."""
    cfg: dict[str, Any] = {"bootstrap_servers": bootstrap, "group_id": group,
                           "predictions_topic": topics.predictions,
                           "labels_topic": topics.labels, **KAFKA}
    if "client" in KafkaSettings.model_fields:
        cfg["client"] = client
    return cfg


class _Assigned(ConsumerRebalanceListener):
    """Notes the wall and CPU clocks when the group first assigns partitions."""

    def __init__(self) -> None:
        self.at: tuple[float, float] | None = None

    def mark(self, *_: Any) -> None:
        if self.at is None:
            self.at = (time.perf_counter(), time.process_time())

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.mark()


def consume_raw(kafka: dict[str, Any], client: str, total: int, timeout: float) -> Measure:
    """Consume ``total`` messages as a group member, doing nothing else; timed from the
    partition assignment to the last message (run in a fresh process).

    Not from the first batch, as the service is: librdkafka prefetches in its own
    threads, and by the time the first batch is handed out much of a small topic may
    already be fetched."""
    k = KafkaSettings(**kafka)
    deadline = time.monotonic() + timeout
    assigned = _Assigned()
    if client == "confluent":
        from confluent_kafka import Consumer

        from detector.sources_confluent import librdkafka_config
        consumer = Consumer(librdkafka_config(k))
        consumer.subscribe(list(k.topics), on_assign=assigned.mark)

        def poll() -> int:
            messages = consumer.consume(num_messages=k.max_poll_records,
                                        timeout=k.poll_timeout_ms / 1000)
            for m in messages:
                if m.error() is not None:
                    raise RuntimeError(f"confluent-kafka: {m.error()}")
            return len(messages)
    else:
        # KafkaSource.open's consumer, less what only matters to the service
        consumer = KafkaConsumer(
            **client_options(k), group_id=k.group_id, enable_auto_commit=False,
            auto_offset_reset=k.auto_offset_reset, session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms, max_poll_records=k.max_poll_records,
            fetch_max_wait_ms=k.fetch_max_wait_ms, fetch_min_bytes=k.fetch_min_bytes,
            max_partition_fetch_bytes=k.max_partition_fetch_bytes,
            fetch_max_bytes=k.fetch_max_bytes, allow_auto_create_topics=False)
        consumer.subscribe(list(k.topics), listener=assigned)

        def poll() -> int:
            return sum(len(m) for m in consumer.poll(timeout_ms=k.poll_timeout_ms).values())
    started = time.perf_counter()
    try:
        n = 0
        while n < total:
            n += poll()
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw {client}: {n:,} of {total:,} messages in {timeout:.0f} s")
        wall, cpu = time.perf_counter(), time.process_time()
        assert assigned.at is not None, "messages before an assignment"
        m = Measure(n, wall - assigned.at[0], cpu - assigned.at[1])
        m.extra = {"assigned_after_s": assigned.at[0] - started}
        return m
    finally:
        consumer.close()


def committed(admin: KafkaAdminClient, group: str) -> int:
    """Messages the group has committed over all its partitions (offsets start at 0)."""
    offsets = admin.list_group_offsets(group).get(group, {})
    return sum(o.offset for o in offsets.values() if o.offset >= 0)


def run_services(bootstrap: str, topics: Topics, client: str, processes: int, workdir: Path,
                 timeout: float) -> Measure:
    """``processes`` service processes (``python -m detector run``) in one fresh group;
    measured from the first commit seen to the last message committed."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    kafka = kafka_config(bootstrap, topics, group, client)
    admin = KafkaAdminClient(**client_options(KafkaSettings(bootstrap_servers=bootstrap)))
    procs: list[tuple[subprocess.Popen, Path]] = []
    try:
        for i in range(processes):
            cfg, log = workdir / f"{group}-{i}.yaml", workdir / f"{group}-{i}.log"
            cfg.write_text(yaml.safe_dump({
                "kafka": kafka, "metrics": {"host": "127.0.0.1", "port": free_port()},
                "log": {"level": "WARNING"}}))
            with log.open("wb") as out:
                procs.append((subprocess.Popen(
                    [sys.executable, "-m", "detector", "run", "--config", str(cfg)],
                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT), log))
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        first: tuple[float, int, float, float] | None = None
        while True:
            n = committed(admin, group)
            cpu = sum(process_cpu(p.pid) for p, _ in procs)
            now = time.perf_counter()
            if first is None and n > 0:
                first = (now, n, cpu, time.process_time())
            if n >= topics.total:
                break
            for p, log in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"service exited with {p.returncode}: "
                                       f"{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{processes} service(s), {client}: {n:,} of "
                                   f"{topics.total:,} committed in {timeout:.0f} s")
            time.sleep(SAMPLE_S)
        assert first is not None
        if n == first[1]:
            raise RuntimeError("everything was committed at once: use more events")
        m = Measure(n - first[1], now - first[0], cpu - first[2])
        m.extra = {"first_commit_after_s": first[0] - started,
                   "cpu_per_process_s": [process_cpu(p.pid) for p, _ in procs],
                   # what watching cost this process (and so the machine) in the window
                   "watcher_cpu_s": time.process_time() - first[3]}
        return m
    finally:
        admin.close()
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _ in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def broker_rows(bootstrap: str, stream: Stream, workdir: Path, prefix: str, repeat: int,
                confluent: str | None) -> list[Row]:
    """Rows 3a-b and 4a-b (or 5.3, 5.4) on ``stream``, interleaved."""
    shape = f"{stream.numeric}+{stream.categorical} features"
    topics, sent = produce(bootstrap, stream, f"s{stream.features}", 1)
    print(f"  produced {topics.total:,} messages in {sent.wall:.1f} s "
          f"({sent.events_per_s:,.0f}/s, kafka-python, keyed)", flush=True)
    timeout = 120 + topics.total / 2000
    raw_kp = Row(f"{prefix}3a", f"raw kafka-python consumer, {shape}")
    raw_cf = Row(f"{prefix}3b", f"raw confluent-kafka consumer, {shape}")
    ours_kp = Row(f"{prefix}4a", f"ours, broker, kafka-python, {shape}")
    ours_cf = Row(f"{prefix}4b", f"ours, broker, confluent, {shape}")

    def raw(client: str) -> Measure:
        kafka = kafka_config(bootstrap, topics, f"raw-{uuid.uuid4().hex[:8]}", client)
        return in_fresh_process(consume_raw, kafka, client, topics.total, timeout)

    todo: list[tuple[Row, Callable[[], Measure]]] = [
        (raw_kp, lambda: raw("kafka-python")),
        (ours_kp, lambda: run_services(bootstrap, topics, "kafka-python", 1, workdir, timeout))]
    if confluent is None:
        todo += [(raw_cf, lambda: raw("confluent")),
                 (ours_cf, lambda: run_services(bootstrap, topics, "confluent", 1, workdir,
                                                timeout))]
    else:
        raw_cf.note = ours_cf.note = confluent
    interleave(todo, repeat)
    raw_cf.compare(raw_kp, "events/s")
    ours_kp.compare(raw_kp, "events/s", 0.8)
    ours_kp.compare(raw_kp, "cpu")
    ours_cf.compare(ours_kp, "events/s", 2.0)
    ours_cf.compare(raw_cf, "events/s")
    ours_cf.compare(raw_kp, "events/s")
    return [raw_kp, raw_cf, ours_kp, ours_cf]


def scale_rows(bootstrap: str, stream: Stream, workdir: Path, repeat: int) -> list[Row]:
    """Row 8: one service process vs two on a 2-partition stream (kafka-python)."""
    topics, _ = produce(bootstrap, stream, "scale", 2)
    timeout = 120 + topics.total / 2000
    one = Row("8.1", "one service process, 2 partitions")
    two = Row("8.2", "two service processes, 2 partitions")
    interleave([(one, lambda: run_services(bootstrap, topics, "kafka-python", 1, workdir,
                                           timeout)),
                (two, lambda: run_services(bootstrap, topics, "kafka-python", 2, workdir,
                                           timeout))], repeat)
    two.compare(one, "events/s", 1.8)
    return [one, two]


# ------------------------------------------------------------------------ row 6: scrape

def scrape_rows(sizes: Sequence[int], repeat: int) -> list[dict[str, Any]]:
    """``bench/scrape.py``'s measurement at each size."""
    import scrape

    out = []
    for size in sizes:
        r = scrape.bench(size, repeat)
        out.append(r)
        print(f"  {r['series']:>7,} series: text {r['text']['wall_ms']:.1f} ms, GET "
              f"{r['GET']['wall_ms']:.1f} ms, before {r['before']['wall_ms']:.1f} ms",
              flush=True)
    return out


# --------------------------------------------------------------------------- row 7: RSS

def rss_run(total: int, warm: int, predictions: int, seed: int) -> dict[str, Any]:
    """Feed one default ``Pipeline`` ``total`` events from pre-encoded batches of a
    ``predictions``-prediction stream, with new prediction ids on every pass; RSS after
    ``warm_up()``, after ``warm`` events and at every tenth of the rest (run in a fresh
    process)."""
    warm_up()
    gc.collect()
    kernels_rss = rss_mib()
    template = [(kind, raw) for kind, _, raw in make_stream(predictions, 20, 2, seed).events]
    pipeline = Pipeline(Settings())
    gc.collect()
    marks = [{"events": 0, "rss_mib": rss_mib()}]
    step = max(1, (total - warm) // 10)
    next_mark, fed, passes = warm, 0, 0
    t0 = c0 = 0.0
    while fed < total:
        tag = b'"r%06d-' % passes
        for start in range(0, len(template), BATCH):
            part = template[start:start + min(BATCH, total - fed)]
            pipeline.process([Record(kind, raw.replace(ID_PLACEHOLDER, tag))
                              for kind, raw in part], now=time.time())
            fed += len(part)
            if fed >= next_mark or fed >= total:
                marks.append({"events": fed, "rss_mib": rss_mib()})
                if next_mark == warm:
                    t0, c0 = time.perf_counter(), time.process_time()
                next_mark += step
            if fed >= total:
                break
        passes += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    state = pipeline.models[MODEL]
    rejected = sum(pipeline.rejected.values())
    if rejected or state.join["matched"] != state.events["label"]:
        raise RuntimeError(f"RSS run: {rejected} rejected, join {state.join}")
    warm_rss = next(m["rss_mib"] for m in marks if m["events"] >= warm)
    return {"events": fed, "warm_events": warm, "passes": passes, "marks": marks,
            "rss_after_kernels_mib": kernels_rss, "rss_with_batches_mib": marks[0]["rss_mib"],
            "rss_warm_mib": warm_rss,
            "rss_final_mib": marks[-1]["rss_mib"],
            "growth_pct": (marks[-1]["rss_mib"] - warm_rss) / warm_rss * 100,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "events_per_s": (fed - warm) / wall if wall else None,
            "cpu_us_per_event": cpu / (fed - warm) * 1e6 if fed > warm else None,
            "events_counted": dict(state.events), "join": dict(state.join)}


# ----------------------------------------------------------------------------- output

def fmt_ratio(r: dict[str, Any]) -> str:
    basis = "CPU" if r["basis"] == "cpu" else "ev/s"
    text = f"{r['value']:.2f}x {r['to']} ({basis})"
    if r["target"] is not None:
        text += f" [>= {r['target']:g}: {'ok' if r['met'] else 'MISSED'}]"
    return text


def print_table(rows: list[Row], scrapes: list[dict[str, Any]], rss: dict[str, Any] | None,
                info: dict[str, Any]) -> None:
    m = info["machine"]
    print()
    print(f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), Python "
          f"{m['python']}, numba {m['numba']}, river {m['river']}, kafka-python "
          f"{m['kafka-python']}, confluent-kafka {m['confluent-kafka'] or 'not installed'}; "
          f"load average {m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end")
    print(f"Best of {info['repeat']} interleaved runs (events/s: highest; CPU µs/event: lowest). "
          "Events = predictions + labels.")
    if rows:
        print()
        print(f"{'row':<6}{'what':<46}{'events':>10}{'events/s':>11}{'CPU µs/ev':>11}  ratio")
        legend = ("ratios: (CPU) = events per CPU second over the baseline's, (ev/s) = events/s "
                  "over the baseline's.\n3: raw consumers in a fresh process, process_time, from "
                  "the partition assignment; 4, 8: `python -m detector run` processes, CPU from "
                  "/proc/<pid>/stat,\n   progress from the group's commits, from the first commit "
                  "seen. Fetch settings of both: " + json.dumps(KAFKA))
    for row in rows:
        if not row.measured:
            print(f"{row.key:<6}{row.name:<46}{row.note or 'not run':>32}")
            continue
        ratios = "; ".join(fmt_ratio(r) for r in row.ratios) or "(baseline)"
        print(f"{row.key:<6}{row.name:<46}{row.events:>10,}{row.events_per_s:>11,.0f}"
              f"{row.cpu_us:>11.2f}  {ratios}")
    if rows:
        print(legend)
    by_key = {row.key: row for row in rows if row.measured}
    for prefix, target in (("", 4.5), ("5.", 5.0)):
        river, floor = by_key.get(f"{prefix}1"), by_key.get(f"{prefix}0")
        if river and floor:
            print(f"{prefix}0: the {target}x target of {prefix}2a leaves "
                  f"{river.cpu_us / target:.2f} CPU µs/event for everything; decoding and "
                  f"joining alone take {floor.cpu_us:.2f}")
    if scrapes:
        print()
        print("6  /metrics: best wall (CPU) ms of the scrapes. text / openmetrics: the "
              "collector's renders; GET: over HTTP;\n   first: a fresh collector's first render; "
              "lock: median / longest hold; before: the collector before issue 11")
        print(f"{'series':>8}{'text':>16}{'openmetrics':>16}{'GET':>16}{'first':>10}"
              f"{'lock ms':>14}{'before':>10}  target")
        for r in scrapes:
            target = ""
            if 5_000 <= r["series"] <= 20_000:
                ok = r["GET"]["wall_ms"] <= 50
                target = f"GET <= 50 ms: {'ok' if ok else 'MISSED'}"
            cells = {name: f"{r[name]['wall_ms']:.1f} ({r[name]['cpu_ms']:.1f})"
                     for name in ("text", "openmetrics", "GET")}
            print(f"{r['series']:>8,}{cells['text']:>16}{cells['openmetrics']:>16}"
                  f"{cells['GET']:>16}{r['first']['wall_ms']:>10.1f}"
                  f"{r['text']['lock_ms']:>7.2f} /{r['text']['lock_max_ms']:>5.1f}"
                  f"{r['before']['wall_ms']:>10.1f}  {target}")
    if rss:
        print()
        ok = rss["growth_pct"] <= 5
        print(f"7  RSS: {rss['rss_after_kernels_mib']:.0f} MiB after warm_up(), "
              f"{rss['rss_with_batches_mib']:.0f} MiB with the pre-encoded batches, "
              f"{rss['rss_warm_mib']:.0f} MiB after {rss['warm_events']:,} events, "
              f"{rss['rss_final_mib']:.0f} MiB after {rss['events']:,} events: growth "
              f"{rss['growth_pct']:+.1f} % [<= 5 %: {'ok' if ok else 'MISSED'}]; peak "
              f"{rss['peak_mib']:.0f} MiB; {rss['events_per_s']:,.0f} events/s, "
              f"{rss['cpu_us_per_event']:.2f} CPU µs/event sustained (feeding included)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "engine.json")
    ap.add_argument("--repeat", type=int, help="interleaved runs per row (default 3, quick 1)")
    ap.add_argument("--rows", default="1,2,3,4,5,6,7,8", help="rows to run, comma-separated")
    ap.add_argument("--events", type=int, help="predictions of the 20-feature stream "
                    "(default 100k, quick 10k); as many labels")
    ap.add_argument("--events-200", type=int, help="predictions of the 200-feature stream "
                    "(default 12k, quick 5k)")
    ap.add_argument("--scale-events", type=int, help="predictions of row 8's stream "
                    "(default 60k, quick 15k)")
    ap.add_argument("--rss-events", type=int, help="events of row 7 (default 10M, quick 300k)")
    ap.add_argument("--rss-warm", type=int, help="events before the warm RSS (default 200k, "
                    "quick 50k)")
    ap.add_argument("--scrape-sizes", help="series of row 6 (default 1000,10000,50000; "
                    "quick 1000,10000)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    q = args.quick
    repeat = args.repeat or (1 if q else 3)
    n20 = args.events or (10_000 if q else 100_000)
    n200 = args.events_200 or (5_000 if q else 12_000)
    n_scale = args.scale_events or (15_000 if q else 60_000)
    rss_events = args.rss_events or (300_000 if q else 10_000_000)
    rss_warm = args.rss_warm or (50_000 if q else 200_000)
    sizes = [int(s) for s in (args.scrape_sizes or ("1000,10000" if q else
                                                    "1000,10000,50000")).split(",")]
    wanted = {s.strip() for s in args.rows.split(",")}
    if rss_warm >= rss_events:
        ap.error("--rss-warm must be below --rss-events")
    began = time.perf_counter()
    info: dict[str, Any] = {"machine": machine(), "repeat": repeat, "quick": q,
                            "seed": args.seed, "kafka": KAFKA, "label_lag": LABEL_LAG,
                            "sizes": {"predictions_20": n20, "predictions_200": n200,
                                      "predictions_scale": n_scale, "rss_events": rss_events,
                                      "rss_warm": rss_warm, "scrape_series": sizes}}
    m = info["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, numba {m['numba']}, "
          f"river {m['river']}; load average {m['loadavg_start'][0]:.2f}", flush=True)
    confluent = confluent_unavailable()
    s20 = make_stream(n20, 20, 2, args.seed)
    s200 = make_stream(n200, 180, 20, args.seed + 1) if "5" in wanted else None
    rows: list[Row] = []
    scrapes: list[dict[str, Any]] = []
    rss: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        workdir = Path(tmp)
        if wanted & {"1", "2"}:
            print(f"rows 1-2: {len(s20.events):,} events from a file", flush=True)
            rows += file_rows(s20, workdir, "", repeat, 4.5)
        if s200 is not None:
            print(f"row 5: {len(s200.events):,} events of 200 features from a file", flush=True)
            rows += file_rows(s200, workdir, "5.", repeat, 5.0)
        if wanted & {"3", "4", "5", "8"}:
            with Tansu() as broker:
                if wanted & {"3", "4"}:
                    print("rows 3-4: through the bundled broker", flush=True)
                    rows += broker_rows(broker.bootstrap, s20, workdir, "", repeat, confluent)
                if s200 is not None:
                    print("row 5: 200 features through the bundled broker", flush=True)
                    rows += broker_rows(broker.bootstrap, s200, workdir, "5.", repeat, confluent)
                if "8" in wanted:
                    print("row 8: one vs two service processes", flush=True)
                    rows += scale_rows(broker.bootstrap, make_stream(n_scale, 20, 2, args.seed),
                                       workdir, repeat)
    if "6" in wanted:
        print("row 6: /metrics", flush=True)
        scrapes = scrape_rows(sizes, 3 if q else 5)
    if "7" in wanted:
        print(f"row 7: RSS over {rss_events:,} events (fresh process)", flush=True)
        rss = in_fresh_process(rss_run, rss_events, rss_warm, 50_000, args.seed)
    info["machine"]["loadavg_end"] = os.getloadavg()
    info["seconds"] = time.perf_counter() - began
    print_table(rows, scrapes, rss, info)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**info, "rows": [r.to_json() for r in rows],
                                     "scrape": scrapes, "rss": rss}, indent=2))
    print(f"\n{info['seconds']:.0f} s; results written to {args.json}")


if __name__ == "__main__":
    main()
