"""The server's log lines, as text or JSON, each carrying the id of the
request it was written for (see :mod:`.request_id`).

Text: ``2026-01-31 12:00:00,123 [servekit] INFO [<request id>] - message``
(the bracketed id only on lines written while a request is handled).

JSON, one object a line: ``time`` (UTC, ISO 8601 with milliseconds),
``level``, ``logger``, ``message``, and when there are: ``request_id``,
``trace_id`` and ``span_id`` (when tracing is on), ``exception`` (the
traceback). Messages are escaped by JSON itself, so no client-sent text can
start a line of its own.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from servekit.observability.request_id import REQUEST_ID

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s [servekit] %(levelname)s%(request_tag)s - %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (and ``request_tag``, `` [id]`` or nothing) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        record.request_id = request_id
        record.request_tag = f" [{request_id}]" if request_id else ""
        return True


def _trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current OpenTelemetry span, when tracing is on."""
    from servekit.observability import tracing

    if tracing.ACTIVE is None:
        return None
    return tracing.ACTIVE.current_ids()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            out["request_id"] = request_id
        ids = _trace_ids()
        if ids is not None:
            out["trace_id"], out["span_id"] = ids
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


def handler(stream: Any, log_format: str = "text") -> logging.Handler:
    """A stream handler writing ``log_format`` lines with request ids."""
    out = logging.StreamHandler(stream)
    out.addFilter(RequestIdFilter())
    out.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return out


__all__ = ["FORMATS", "TEXT_FORMAT", "JsonFormatter", "RequestIdFilter", "handler"]
