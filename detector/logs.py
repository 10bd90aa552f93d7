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
from typing import Literal


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
