"""sd_notify(3) without libsystemd: service state to systemd's notify socket (stdlib only).

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``: a path, or an abstract socket
name when it starts with ``@``. Each notification is one datagram of ``KEY=value``
lines. kinkd sends ``READY=1`` once its sockets are bound and its credentials loaded,
``RELOADING=1`` with ``MONOTONIC_USEC=`` (systemd 253 reads the timestamp; 252 and
older ignore it) and then ``READY=1`` around a reload, ``STOPPING=1`` when it shuts
down, and ``STATUS=`` lines for ``systemctl status``. Without ``$NOTIFY_SOCKET`` (not
run by systemd, or ``Type=exec``) every call is a no-op; a failing send is never fatal.
"""

from __future__ import annotations

import os
import socket
import time

ENV = "NOTIFY_SOCKET"


def address(value: str | None = None) -> str | None:
    """The ``AF_UNIX`` address named by ``$NOTIFY_SOCKET`` (None: not usable)."""
    v = os.environ.get(ENV) if value is None else value
    if not v:
        return None
    if v.startswith("@"):
        return "\0" + v[1:]  # abstract namespace
    if v.startswith("/"):
        return v
    return None  # vsock: (vsock:CID:PORT) is for VMs, not for a host daemon


def notify(*lines: str) -> bool:
    """Send LINES (``"READY=1"``, ``"STATUS=..."``) as one datagram; True when sent."""
    addr = address()
    if addr is None or not lines:
        return False
    data = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(data, addr)
    except OSError:
        return False
    return True


def ready(status: str | None = None) -> bool:
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def reloading(status: str | None = None) -> bool:
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}",
                  *([f"STATUS={status}"] if status else []))


def stopping(status: str | None = None) -> bool:
    return notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def status(text: str) -> bool:
    return notify(f"STATUS={text}")
