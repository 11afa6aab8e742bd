"""Structured logging: one line per event, text (``key=value``) or JSON, journald-friendly.

Text lines look like ``2026-11-27T07:30:00Z info sa-established peer=db1 child=db1-pg
spi_in=0x1a2b3c4d ...``; under systemd (``JOURNAL_STREAM`` set) the timestamp is
left out and the line starts with a ``<N>`` syslog priority prefix that journald
understands. JSON lines carry the same fields. Nothing here ever formats key
material: callers pass SPIs, names and reasons only, and values of type
``isakmp.secret.Secret`` are redacted defensively.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from isakmp.secret import Secret

LOGGER = logging.getLogger("kinkd")
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _value(v: Any) -> Any:
    if isinstance(v, Secret):
        return "<redacted>"
    if isinstance(v, bytes | bytearray):
        return f"<{len(v)} bytes>"
    return v


def _text_value(v: Any) -> str:
    v = _value(v)
    s = str(v)
    if s == "" or any(c in s for c in ' "=\n'):
        return json.dumps(s)
    return s


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str, journald: bool):
        super().__init__()
        self.fmt, self.journald = fmt, journald

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None) or "log"
        fields = getattr(record, "fields", None) or {}
        level = record.levelname.lower()
        msg = record.getMessage()
        if self.fmt == "json":
            obj = {"level": level, "event": event}
            if not self.journald:
                obj["time"] = _iso(record.created)
            if msg:
                obj["msg"] = msg
            obj.update({k: _value(v) for k, v in fields.items() if v is not None})
            line = json.dumps(obj, default=str, separators=(",", ":"))
        else:
            parts = [] if self.journald else [_iso(record.created)]
            parts += [level, event]
            parts += [f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None]
            if msg:
                parts.append(f"msg={_text_value(msg)}")
            line = " ".join(parts)
        if self.journald:
            line = f"<{_PRIORITY.get(level, 6)}>{line}"
        return line


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def setup(level: str = "info", fmt: str = "text", stream=None) -> None:
    """Configure the ``kinkd`` logger (idempotent)."""
    journald = bool(os.environ.get("JOURNAL_STREAM")) and stream is None
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(fmt, journald))
    for h in list(LOGGER.handlers):
        LOGGER.removeHandler(h)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(_LEVELS.get(level, logging.INFO))
    LOGGER.propagate = False


def enabled(level: str) -> bool:
    """Whether a ``log(level, ...)`` line would be emitted (build no fields otherwise)."""
    return LOGGER.isEnabledFor(_LEVELS.get(level, logging.INFO))


def log(level: str, event: str, message: str = "", **fields: Any) -> None:
    """Emit one structured line: ``log("info", "sa-established", peer="db1", spi_in=...)``."""
    lv = _LEVELS.get(level, logging.INFO)
    if LOGGER.isEnabledFor(lv):
        LOGGER.log(lv, message, extra={"event": event, "fields": fields})
