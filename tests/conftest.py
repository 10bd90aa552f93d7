"""Shared fixtures: one real broker (Tansu) per session, uuid-named topics and
groups per test, and a helper that runs ``drift-detector run`` as a real process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from detector.broker import Noida, Tansu, free_port
from detector.config import KafkaSettings
from detector.sources import create_topics, producer
from tests.install import apt_install


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


PROMETHEUS_TOOLS = ("prometheus", "promtool", "prometheus-alertmanager", "amtool")


@pytest.fixture(scope="session")
def prometheus_tools() -> dict[str, str]:
    """Paths of Prometheus, promtool, Alertmanager and amtool; installs the Debian
    packages when they are missing. Never skips: a missing tool fails the run."""
    apt_install(PROMETHEUS_TOOLS, ("prometheus", "prometheus-alertmanager"))
    return {t: shutil.which(t) for t in PROMETHEUS_TOOLS}


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with Tansu(log_path=log) as b:
        yield b


@pytest.fixture(scope="session")
def noida(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Noida]:
    with Noida(tmp_path_factory.mktemp("noida") / "data") as b:
        yield b


@pytest.fixture(scope="session", params=["tansu", "noida"])
def broker(request: pytest.FixtureRequest) -> Tansu | Noida:
    """Every broker test runs twice: on Tansu (memory, fast group joins) and on noida-db
    (keeps data on disk, enforces real Kafka's 6 s minimum session timeout), so nothing
    depends on one broker's quirks."""
    return request.getfixturevalue(request.param)


class Topics:
    def __init__(self, broker: Tansu | Noida, partitions: int = 1) -> None:
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = broker.bootstrap
        # Tansu holds a first JoinGroup for half the session timeout: keep it short there;
        # noida, like real Kafka, refuses session timeouts below 6 s
        self.session = (2000, 500) if isinstance(broker, Tansu) else (6000, 2000)
        self.predictions = f"predictions-{tag}"
        self.labels = f"labels-{tag}"
        self.group = f"group-{tag}"
        self.kafka = KafkaSettings(bootstrap_servers=broker.bootstrap,
                                   predictions_topic=self.predictions, labels_topic=self.labels,
                                   group_id=self.group)
        create_topics(self.kafka, [self.predictions, self.labels], partitions)

    def committed(self, partition: int = 0, topic: str | None = None) -> int:
        """The group's committed offset on ``topic`` (default: the predictions topic;
        0 if none)."""
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                          enable_auto_commit=False)
        try:
            return c.committed(TopicPartition(topic or self.predictions, partition)) or 0
        finally:
            c.close(autocommit=False)

    def produce(self, topic: str, messages: Iterable[bytes | dict]) -> int:
        prod = producer(self.kafka)
        n = 0
        for m in messages:
            prod.send(topic, m if isinstance(m, bytes) else json.dumps(m).encode())
            n += 1
        prod.flush()
        prod.close()
        return n


@pytest.fixture
def topics(broker: Tansu | Noida) -> Topics:
    return Topics(broker)


def read_topic(bootstrap: str, topic: str, partition: int = 0) -> list:
    """Every message of one partition, from the beginning (no consumer group)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    try:
        return list(consumer)
    finally:
        consumer.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` over HTTP, as {(sample name, sorted labels): value}."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(metrics: dict, name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


def http_status(port: int, path: str) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def stop(proc: subprocess.Popen, timeout: float = 15) -> tuple[int, float]:
    """SIGTERM ``proc``; its exit code and the seconds it took to exit."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout)
    return code, time.monotonic() - sent


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` unless it has exited, and reap it (cleanup after a failed test)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class DetectorProcess:
    """``python -m detector run`` against the test broker, configured by YAML + env."""

    def __init__(self, topics: Topics, tmp: Path, config: dict | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.config_path = tmp / f"config-{uuid.uuid4().hex[:6]}.yaml"
        base = {
            "kafka": {"bootstrap_servers": topics.bootstrap, "group_id": topics.group,
                      "predictions_topic": topics.predictions, "labels_topic": topics.labels,
                      "session_timeout_ms": topics.session[0],
                      "heartbeat_interval_ms": topics.session[1]},
            "metrics": {"host": "127.0.0.1", "port": self.port},
            "log": {"format": "json"},
        }
        for key, value in (config or {}).items():
            base[key] = {**base[key], **value} if isinstance(base.get(key), dict) else value
        import yaml
        self.config_path.write_text(yaml.safe_dump(base))
        self.log_path = tmp / f"detector-{uuid.uuid4().hex[:6]}.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def launch(self) -> subprocess.Popen:
        """Start the process without waiting for anything (start-up tests)."""
        with self.log_path.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "detector", "run", "--config", str(self.config_path)],
                stdout=out, stderr=out, env=self.env)

    def start(self) -> DetectorProcess:
        """Start the process and wait until ``/readyz`` answers 200."""
        self.proc = self.launch()
        wait_for(lambda: http_status(self.port, "/readyz") == 200 or self.proc.poll() is not None,
                 30, "readiness")
        assert self.proc.poll() is None, self.logs()
        return self

    def metrics(self) -> dict:
        return scrape(self.port)

    def wait_events(self, kind: str, model: str, n: int, timeout: float = 60) -> dict:
        """Wait until ``n`` events are counted; return the *next* scrape. A series is
        exposed at 0 the first time (see metrics.py): a scrape after the one that saw
        the events shows every series that existed then with its real value."""
        def done() -> bool:
            m = self.metrics()
            return (sample(m, "drift_events_total", kind=kind, model=model) or 0) >= n
        wait_for(done, timeout, f"{n} {kind} events of {model}", every=0.2)
        return self.metrics()

    def log_records(self) -> list[dict]:
        records = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
        return records

    def logs(self) -> str:
        return self.log_path.read_text()[-5000:]

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        return stop(self.proc, timeout)[0]

    def kill(self) -> None:
        if self.proc is not None:
            kill(self.proc)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., DetectorProcess]]:
    """``spawn(topics, config)`` starts a service; whatever is still running when the
    test ends, passed or failed, is killed."""
    started: list[DetectorProcess] = []

    def make(topics: Topics, config: dict | None = None) -> DetectorProcess:
        d = DetectorProcess(topics, tmp_path, config)
        started.append(d)
        return d.start()

    yield make
    for d in started:
        d.kill()


@pytest.fixture
def detector(topics: Topics, tmp_path: Path) -> Iterator[Callable[..., DetectorProcess]]:
    started: list[DetectorProcess] = []

    def make(config: dict | None = None, env: dict[str, str] | None = None) -> DetectorProcess:
        d = DetectorProcess(topics, tmp_path, config, env).start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()
