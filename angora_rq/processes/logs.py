"""How Angora's processes write their logs: one line per event, as text, JSON or logfmt (ANGORA_LOG_FORMAT).

Platforms (Heroku's log drains, journald, Loki...) read a process's output line by line: in the json and logfmt
formats a traceback stays inside its event's line (newlines escaped), so one event is always one line.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any, Optional

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Characters that make a logfmt value need quotes.
_LOGFMT_SPECIAL = frozenset(' ="\\\n\r\t')


def event_fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """The fields of one event: time (UTC, ISO 8601), level, logger, pid, message, and exc when it has one."""
    fields: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "pid": record.process,
        "msg": record.getMessage(),
    }
    if record.exc_info:
        fields["exc"] = formatter.formatException(record.exc_info)
    elif record.exc_text:
        fields["exc"] = record.exc_text
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(event_fields(record, self), ensure_ascii=False, default=str)


class LogfmtFormatter(logging.Formatter):
    """`key=value` pairs, values quoted (with \\", \\\\ and \\n escapes) when they need it."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={logfmt_value(v)}" for k, v in event_fields(record, self).items())


def logfmt_value(value: Any) -> str:
    """A logfmt value: bare when it is plain, else double-quoted with escapes."""
    text = str(value)
    if text and not any(c in _LOGFMT_SPECIAL for c in text):
        return text
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
               .replace("\t", "\\t"))
    return f'"{escaped}"'


def formatter_for(fmt: str) -> logging.Formatter:
    """The formatter of `fmt` (text, json or logfmt; see core/settings.py LOG_FORMATS)."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "logfmt":
        return LogfmtFormatter()
    return logging.Formatter(TEXT_FORMAT)


def configure(level: str, fmt: str = "text", stream: Optional[IO[str]] = None) -> None:
    """Send every record of this process at `level` and above to `stream` (stdout by default) in `fmt`.

    Like logging.basicConfig, it does nothing when logging already has a handler (a host application, a test
    runner). Only entry points call it: the CLI, and the web app's factory under a WSGI server.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(formatter_for(fmt))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
