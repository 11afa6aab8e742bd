"""A minimal client of strongSwan's vici protocol (enough to drive charon for a benchmark).

Wire format (src/libcharon/plugins/vici/README.md of strongSwan): a stream of packets, each
``u32 length`` (big-endian) + ``u8 type`` + body. Types: 0 CMD_REQUEST (name + message),
1 CMD_RESPONSE (message), 2 CMD_UNKNOWN, 3 EVENT_REGISTER (name), 4 EVENT_UNREGISTER,
5 EVENT_CONFIRM, 6 EVENT_UNKNOWN, 7 EVENT (name + message). Names are ``u8 len`` + bytes.
A message is a sequence of elements: 1 SECTION_START (name), 2 SECTION_END, 3 KEY_VALUE
(name, ``u16 len`` + value), 4 LIST_START (name), 5 LIST_ITEM (``u16 len`` + value),
6 LIST_END.

Commands: ``initiate`` blocks in charon until the SA is up (or failed) and then answers
``success``/``errmsg``. charon releases a blocking ``initiate`` when *a* CHILD_SA of that
IKE_SA is installed, not necessarily the one it started, so with several initiates on one
IKE_SA the harness also counts ``child-updown`` events on a session of its own
(:meth:`Session.register`, :meth:`Session.event`).
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

CMD_REQUEST, CMD_RESPONSE, CMD_UNKNOWN = 0, 1, 2
EVENT_REGISTER, EVENT_CONFIRM, EVENT_UNKNOWN, EVENT = 3, 5, 6, 7
SECTION_START, SECTION_END, KEY_VALUE, LIST_START, LIST_ITEM, LIST_END = 1, 2, 3, 4, 5, 6


class ViciError(Exception):
    pass


def _name(s: str) -> bytes:
    b = s.encode()
    if len(b) > 255:
        raise ValueError("vici name too long")
    return bytes([len(b)]) + b


def _value(v: Any) -> bytes:
    b = v if isinstance(v, bytes) else str(v).encode()
    return struct.pack(">H", len(b)) + b


def encode_message(msg: dict[str, Any]) -> bytes:
    out = bytearray()
    for k, v in msg.items():
        if isinstance(v, dict):
            out += bytes([SECTION_START]) + _name(k) + encode_message(v) + bytes([SECTION_END])
        elif isinstance(v, list | tuple):
            out += bytes([LIST_START]) + _name(k)
            for item in v:
                out += bytes([LIST_ITEM]) + _value(item)
            out += bytes([LIST_END])
        else:
            if isinstance(v, bool):
                v = "yes" if v else "no"
            out += bytes([KEY_VALUE]) + _name(k) + _value(v)
    return bytes(out)


def decode_message(data: bytes) -> dict[str, Any]:
    stack: list[dict[str, Any]] = [{}]
    lst: list[str] | None = None
    i = 0
    while i < len(data):
        t = data[i]
        i += 1
        if t in (SECTION_START, KEY_VALUE, LIST_START):
            n = data[i]
            name = data[i + 1:i + 1 + n].decode()
            i += 1 + n
            if t == SECTION_START:
                d: dict[str, Any] = {}
                stack[-1][name] = d
                stack.append(d)
            elif t == KEY_VALUE:
                (ln,) = struct.unpack_from(">H", data, i)
                stack[-1][name] = data[i + 2:i + 2 + ln].decode(errors="replace")
                i += 2 + ln
            else:
                lst = []
                stack[-1][name] = lst
        elif t == SECTION_END:
            stack.pop()
        elif t == LIST_ITEM:
            (ln,) = struct.unpack_from(">H", data, i)
            assert lst is not None
            lst.append(data[i + 2:i + 2 + ln].decode(errors="replace"))
            i += 2 + ln
        elif t == LIST_END:
            lst = None
        else:
            raise ViciError(f"bad vici element type {t}")
    return stack[0]


class Session:
    """One vici connection (blocking; one request at a time)."""

    def __init__(self, path: str, timeout: float = 60.0):
        # charon's vici socket has a short listen backlog: a burst of connects gets EAGAIN
        for attempt in range(200):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(path)
                break
            except BlockingIOError:
                self.sock.close()
                if attempt == 199:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ViciError("vici connection closed")
            buf += chunk
        return bytes(buf)

    def request(self, cmd: str, msg: dict[str, Any] | None = None) -> dict[str, Any]:
        body = bytes([CMD_REQUEST]) + _name(cmd) + encode_message(msg or {})
        self.sock.sendall(struct.pack(">I", len(body)) + body)
        while True:
            (ln,) = struct.unpack(">I", self._recv_exact(4))
            pkt = self._recv_exact(ln)
            if pkt[0] == CMD_RESPONSE:
                return decode_message(pkt[1:])
            if pkt[0] == CMD_UNKNOWN:
                raise ViciError(f"vici: unknown command {cmd!r}")
            if pkt[0] == EVENT:  # not registered for any, but be tolerant
                continue
            raise ViciError(f"vici: unexpected packet type {pkt[0]}")

    def register(self, event: str) -> None:
        """Receive ``event`` on this session from now on (read them with :meth:`event`)."""
        body = bytes([EVENT_REGISTER]) + _name(event)
        self.sock.sendall(struct.pack(">I", len(body)) + body)
        (ln,) = struct.unpack(">I", self._recv_exact(4))
        pkt = self._recv_exact(ln)
        if pkt[0] != EVENT_CONFIRM:
            raise ViciError(f"vici: cannot register for {event!r} (packet type {pkt[0]})")

    def event(self) -> tuple[str, dict[str, Any]]:
        """The next event of a registered session (blocks; the session's timeout)."""
        while True:
            (ln,) = struct.unpack(">I", self._recv_exact(4))
            pkt = self._recv_exact(ln)
            if pkt[0] == EVENT:
                n = pkt[1]
                return pkt[2:2 + n].decode(), decode_message(pkt[2 + n:])

    def initiate(self, child: str, ike: str | None = None, timeout_ms: int = 30000) -> None:
        msg: dict[str, Any] = {"child": child, "timeout": timeout_ms, "init-limits": "no"}
        if ike:
            msg["ike"] = ike
        r = self.request("initiate", msg)
        if r.get("success") != "yes":
            raise ViciError(f"initiate {child}: {r.get('errmsg', r)}")
