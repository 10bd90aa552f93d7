"""Checkpoints: the monitors' whole state and the Kafka positions it corresponds to,
saved together so that a restarted service resumes exactly where the state ends.

File layout: ``MAGIC``, then an HMAC-SHA256 (32 bytes) of the payload under the
configured key, then the payload (a pickle). The signature is checked *before*
anything is unpickled, so a file that was not written with the key is refused,
never executed. Writes go to a temporary file in the same directory, are
fsynced and renamed over the old checkpoint: a crash leaves the old or the new
file, never half of one.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "ckpt"
>>> size = save(path, b"k" * 32, {"models": 1}, {("predictions", 0): 42}, "abc")
>>> load(path, b"k" * 32, "abc").offsets
{('predictions', 0): 42}
>>> try:
...     load(path, b"wrong key" * 4, "abc")
... except CheckpointError as exc:
...     print(str(exc).split(": ", 1)[1])
signature does not match: written with another key, or altered
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector import __version__
from detector.errors import DriftDetectorError

MAGIC = b"DRIFTCKPT1\n"
Offsets = dict[tuple[str, int], int]


class CheckpointError(DriftDetectorError):
    """A checkpoint cannot be used: missing signature, wrong key, altered, incompatible."""


@dataclass(frozen=True)
class Checkpoint:
    state: dict[str, Any]
    offsets: Offsets
    created: float
    events: int


def fingerprint(settings_view: dict[str, Any]) -> str:
    """A digest of the settings that shape the state; another digest means the saved
    state does not fit this configuration."""
    blob = json.dumps({"version": __version__, **settings_view}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save(path: Path, key: bytes, state: dict[str, Any], offsets: Offsets, print_: str,
         events: int = 0) -> int:
    """Write a checkpoint atomically; return its size in bytes."""
    return FileStore(path).write(seal(key, encode(state, offsets, print_, events)))


def encode(state: dict[str, Any], offsets: Offsets, print_: str, events: int = 0) -> bytes:
    """The payload: pickle it while the state cannot change, write it afterwards."""
    return pickle.dumps({"fingerprint": print_, "created": time.time(), "events": events,
                         "offsets": offsets, "state": state}, protocol=pickle.HIGHEST_PROTOCOL)


def seal(key: bytes, payload: bytes) -> bytes:
    """``MAGIC`` + HMAC-SHA256 of the payload + the payload."""
    return MAGIC + hmac.new(key, payload, hashlib.sha256).digest() + payload


class FileStore:
    """A checkpoint in a file (a volume): replaced atomically, never half written."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def read(self) -> bytes | None:
        for stale in self.path.parent.glob(self.path.name + ".*.tmp"):  # left by a crash
            stale.unlink(missing_ok=True)
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(f"checkpoint {self.path}: cannot read: {exc.strerror}") from None

    def write(self, blob: bytes) -> int:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return len(blob)

    def close(self) -> None:
        """Nothing to release: every write is complete on its own."""


def load(path: Path, key: bytes, print_: str) -> Checkpoint:
    """Read and verify a checkpoint file; raises ``CheckpointError`` saying why it is unusable."""
    raw = FileStore(path).read()
    if raw is None:
        raise CheckpointError(f"checkpoint {path}: cannot read: No such file")
    return unseal(raw, key, print_, str(path))


def unseal(raw: bytes, key: bytes, print_: str, where: str) -> Checkpoint:
    """Verify the signature, then unpickle; raises ``CheckpointError`` saying why not."""
    path = where
    if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + 32:
        raise CheckpointError(f"checkpoint {path}: not a drift-detector checkpoint "
                              "(unsigned or truncated)")
    signature, payload = raw[len(MAGIC):len(MAGIC) + 32], raw[len(MAGIC) + 32:]
    if not hmac.compare_digest(signature, hmac.new(key, payload, hashlib.sha256).digest()):
        raise CheckpointError(f"checkpoint {path}: signature does not match: written with "
                              "another key, or altered")
    try:
        data = pickle.loads(payload)  # noqa: S301 (signed by us, verified above)
    except Exception as exc:  # a signed file from an incompatible build
        raise CheckpointError(f"checkpoint {path}: cannot be read by this build: {exc!r}") from None
    if data.get("fingerprint") != print_:
        raise CheckpointError(f"checkpoint {path}: written for other settings or another "
                              "version (detectors, detection, reference, join, models)")
    return Checkpoint(data["state"], data["offsets"], data["created"], data.get("events", 0))
