"""Log formatting. Only the CLI calls ``configure``; modules log with
``logging.getLogger(__name__)``, a fixed event name as message and structured
fields in ``extra={"fields": {...}}``.

>>> import logging
>>> r = logging.LogRecord("detector.service", logging.INFO, "", 0, "drift_detected", None, None)
>>> r.fields = {"model": "fraud", "feature": "amount"}
>>> TextFormatter().format(r).split(" ", 1)[1]
'INFO detector.service drift_detected model=fraud feature=amount'
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal


def _fields(record: logging.LogRecord) -> dict:
    return getattr(record, "fields", None) or {}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        extra = "".join(f" {k}={v}" for k, v in _fields(record).items())
        line = f"{stamp}Z {record.levelname} {record.name} {record.getMessage()}{extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": record.created, "level": record.levelname, "logger": record.name,
               "event": record.getMessage(), **_fields(record)}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str, fmt: Literal["text", "json"]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kafka-python logs every failed reconnect (10 per second in an outage); the service
    # logs broker_disconnected / broker_connected itself. Group changes stay visible.
    logging.getLogger("kafka").setLevel(max(logging.CRITICAL, root.level))
    logging.getLogger("kafka.coordinator").setLevel(max(logging.WARNING, root.level))


class ThrottledLog:
    """Log lines that may repeat fast (a client's reconnects, dropped messages): one line
    per ``key`` every ``every`` seconds, with the number left out since (``suppressed``).

    >>> import logging
    >>> throttled = ThrottledLog(logging.getLogger("x"), every=10.0)
    >>> for _ in range(3):
    ...     throttled.emit(logging.WARNING, "emit_dropped", "queue_full", {"reason": "queue_full"})
    >>> throttled._suppressed
    {'queue_full': 2}
    """

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def emit(self, level: int, event: str, key: str, fields: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        self.logger.log(level, event, extra={"fields": {
            **fields, "suppressed": self._suppressed.pop(key, 0)}})
