"""What the tests install on a fresh machine (Debian packages, caches), one install at a
time: with ``pytest -n 2`` two worker processes may need the same package at once, and
Debian's package manager takes one client at a time."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK = Path(tempfile.gettempdir()) / "drift-detector-tests-install.lock"


@contextmanager
def one_at_a_time() -> Iterator[None]:
    """Hold the machine-wide install lock (every test process on this machine)."""
    with LOCK.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def apt_install(commands: tuple[str, ...], packages: tuple[str, ...]) -> None:
    """Install the Debian ``packages`` unless every one of ``commands`` is on the PATH;
    a failure fails the test run (never a skip)."""
    if all(shutil.which(c) for c in commands):
        return
    with one_at_a_time():
        if all(shutil.which(c) for c in commands):     # another worker was first
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}"
    missing = [c for c in commands if not shutil.which(c)]
    assert not missing, f"still missing after installing {' '.join(packages)}: {missing}"
