"""Structured logging: one line per event, text (``key=value``) or JSON, journald-native.

Text lines look like ``2026-11-27T07:30:00Z info sa-established peer=db1 child=db1-pg
spi_in=0x1a2b3c4d ...``; JSON lines carry the same fields. Under systemd, when stderr
is the journal stream (``$JOURNAL_STREAM`` names stderr's device and inode), or with
``log_format = "journal"``, each record goes to journald over its native protocol
(a datagram to ``/run/systemd/journal/socket``, stdlib only) with structured fields:
``MESSAGE`` (the line, without timestamp), ``PRIORITY``, ``SYSLOG_IDENTIFIER=kinkd``,
``KINK_EVENT``, ``KINK_PEER``, ``KINK_CHILD``, ``KINK_SPI`` (hex; once per SPI of the
SA, so ``journalctl KINK_SPI=0x1a2b3c4d`` finds either direction) and every other
field as ``KINK_<NAME>``. If the journal socket cannot be reached the line goes to
stderr with a ``<N>`` syslog priority prefix that journald understands. Nothing here
ever formats key material: callers pass SPIs, names and reasons only, and values of
type ``isakmp.secret.Secret`` are redacted defensively.
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import logging
import os
import re
import socket
import struct
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

    def line(self, record: logging.LogRecord, timestamp: bool) -> str:
        event = getattr(record, "event", None) or "log"
        fields = getattr(record, "fields", None) or {}
        level = record.levelname.lower()
        msg = record.getMessage()
        if self.fmt == "json":
            obj = {"level": level, "event": event}
            if timestamp:
                obj["time"] = _iso(record.created)
            if msg:
                obj["msg"] = msg
            obj.update({k: _value(v) for k, v in fields.items() if v is not None})
            return json.dumps(obj, default=str, separators=(",", ":"))
        parts = [_iso(record.created)] if timestamp else []
        parts += [level, event]
        parts += [f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None]
        if msg:
            parts.append(f"msg={_text_value(msg)}")
        return " ".join(parts)

    def format(self, record: logging.LogRecord) -> str:
        line = self.line(record, timestamp=not self.journald)
        if self.journald:
            line = f"<{_priority(record)}>{line}"
        return line


def _priority(record: logging.LogRecord) -> int:
    return _PRIORITY.get(record.levelname.lower(), 6)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


# --- journald's native protocol ------------------------------------------------------------

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "kinkd"
_SPI_KEYS = ("spi", "spi_in", "spi_out")
_FIELD_RE = re.compile(r"[^A-Z0-9_]")


def stderr_is_journal(stream=None) -> bool:
    """Whether STREAM (stderr) is the journal stream systemd connected: ``$JOURNAL_STREAM``
    is ``<dev>:<inode>`` of it (a redirected stderr under systemd is not)."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _field_name(key: str) -> str:
    return ("KINK_" + _FIELD_RE.sub("_", key.upper()))[:64]


def _spi_text(v: Any) -> str:
    return f"0x{v:08x}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def journal_fields(record: logging.LogRecord, message: str) -> list[tuple[str, str]]:
    """The journal entry of RECORD: (FIELD, value) pairs; a field may repeat (KINK_SPI)."""
    out = [("MESSAGE", message), ("PRIORITY", str(_priority(record))),
           ("SYSLOG_IDENTIFIER", IDENTIFIER),
           ("KINK_EVENT", getattr(record, "event", None) or "log")]
    fields = getattr(record, "fields", None) or {}
    for k, v in fields.items():
        if v is None:
            continue
        if k in _SPI_KEYS:
            out.append(("KINK_SPI", _spi_text(v)))
            if k != "spi":
                out.append((_field_name(k), _spi_text(v)))
            continue
        v = _value(v)
        out.append((_field_name(k), v if isinstance(v, str) else json.dumps(v, default=str)))
    return out


def journal_encode(fields: list[tuple[str, str | bytes]]) -> bytes:
    """Serialize for the native protocol: ``NAME=value\n``, or for a value holding a
    newline (or any binary value) ``NAME\n``, its length as little-endian 64 bit, the
    value, ``\n``."""
    out = bytearray()
    for name, value in fields:
        b = value if isinstance(value, bytes) else value.encode("utf-8", "replace")
        if b"\n" in b:
            out += name.encode() + b"\n" + struct.pack("<Q", len(b)) + b + b"\n"
        else:
            out += name.encode() + b"=" + b + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Send each record to journald as one datagram with structured fields. Entries too
    large for a datagram go as a sealed memfd (SCM_RIGHTS), as sd_journal_send does; if
    the journal cannot be reached the line goes to FALLBACK with a ``<N>`` prefix."""

    def __init__(self, fmt: str = "text", path: str = JOURNAL_SOCKET, fallback=None):
        super().__init__()
        self.path = path
        self.lines = _Formatter(fmt if fmt in ("text", "json") else "text", journald=True)
        self.fallback = fallback
        self.sock: socket.socket | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.lines.line(record, timestamp=False)
            data = journal_encode(journal_fields(record, message))
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)
            return
        try:
            self._send(data)
        except OSError:
            stream = self.fallback or sys.stderr
            try:
                stream.write(f"<{_priority(record)}>{message}\n")
                stream.flush()
            except Exception:  # noqa: BLE001
                self.handleError(record)

    def _send(self, data: bytes) -> None:
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.sendto(data, self.path)
        except OSError as e:
            if e.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(data)

    def _send_memfd(self, data: bytes) -> None:
        fd = os.memfd_create("kinkd-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)  # a memfd takes the whole write
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                        | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            self.sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                    array.array("i", [fd]))], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        super().close()


def setup(level: str = "info", fmt: str = "text", stream=None,
          journal_socket: str = JOURNAL_SOCKET) -> None:
    """Configure the ``kinkd`` logger (idempotent). FMT ``text`` or ``json`` write lines to
    STREAM (stderr), except when stderr is systemd's journal stream and the journal's
    socket exists: then records go to journald natively (so they do with ``journal``)."""
    journal_stream = stream is None and stderr_is_journal()
    if fmt == "journal" or (journal_stream and os.path.exists(journal_socket)):
        handler: logging.Handler = JournalHandler(fmt, journal_socket, fallback=stream)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(_Formatter(fmt, journal_stream))
    for h in list(LOGGER.handlers):
        LOGGER.removeHandler(h)
        h.close()
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
