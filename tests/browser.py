"""A real headless Chromium driven through the DevTools protocol, for the report tests
and bench: no web driver, no websocket library. Chromium's ``--remote-debugging-pipe``
reads protocol commands from fd 3 and writes replies and events to fd 4, each message
JSON ended by a NUL byte.

``chromium()`` returns the binary, installing the Debian package when it is missing
(never a skip: a failed install fails the run)."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.install import apt_install


def chromium() -> str:
    """The Chromium binary; ``apt-get install chromium`` first if there is none."""
    apt_install(("chromium",), ("chromium",))
    return shutil.which("chromium")


class Browser:
    """One headless Chromium process and one page (a target attached in flat mode).

    ``open(path)`` loads a file and waits for its load event (inline scripts have run by
    then); ``errors`` lists console errors, failed assertions and uncaught exceptions
    seen since; ``evaluate`` runs an expression in the page; ``screenshot`` returns PNG
    bytes of the whole page."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-")
        cmd_read, self._cmd = os.pipe()
        self._out, out_write = os.pipe()
        # both ends above 9, then bash puts them on 3 and 4 for Chromium (no preexec_fn:
        # the test process may run other threads, a kafka client's, when it forks)
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_read, out_write)]
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{ends[0]} 4>&{ends[1]}', chromium(),
             "--headless=new", "--remote-debugging-pipe", "--no-sandbox",
             "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking",
             f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}",
             "about:blank"],
            pass_fds=ends, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (cmd_read, out_write, *ends):
            os.close(fd)
        self._next = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget",
                                   {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def _send(self, method: str, params: dict[str, Any] | None, session: str | None) -> int:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._cmd, json.dumps(message).encode() + b"\0")
        return self._next

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._out], [], [], max(left, 0))
            if not ready:
                raise TimeoutError(f"no message from Chromium in {timeout} s")
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise ConnectionError(f"Chromium exited ({self.proc.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def _call(self, method: str, params: dict[str, Any] | None = None,
              session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(max(deadline - time.monotonic(), 0.01))
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        """A protocol command on the page's session; its result."""
        return self._call(method, params, self._session, timeout)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method:
                    return self.events.pop(i)
            message = self._read(max(deadline - time.monotonic(), 0.01))
            if "method" in message:
                self.events.append(message)

    def open(self, path: str | Path, timeout: float = 30.0) -> float:
        """Load a local file; the seconds from the request to the load event."""
        self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        started = time.perf_counter()
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()})
        self.wait_event("Page.loadEventFired", timeout)
        return time.perf_counter() - started

    def evaluate(self, expression: str) -> Any:
        reply = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression[:80]}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    @property
    def errors(self) -> list[str]:
        """Console errors, failed console assertions and uncaught exceptions so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(p["exceptionDetails"])[:500])
            elif e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append(json.dumps(p["args"])[:500])
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(p["entry"]["text"][:500])
        return out

    def screenshot(self) -> bytes:
        """PNG of the whole page, beyond the viewport."""
        reply = self.call("Page.captureScreenshot", {"format": "png",
                                                     "captureBeyondViewport": True})
        return base64.b64decode(reply["data"])

    def close(self) -> None:
        try:
            self._call("Browser.close", timeout=5)
        except (TimeoutError, ConnectionError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd)
        os.close(self._out)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
