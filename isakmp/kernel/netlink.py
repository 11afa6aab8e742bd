"""A minimal, strict netlink core (stdlib ``socket`` + ``struct``; Linux only).

Used by :mod:`isakmp.kernel.xfrm` for NETLINK_XFRM, but protocol neutral:

* :class:`NetlinkSocket` -- open/bind (optionally joining multicast groups),
  :meth:`~NetlinkSocket.request` (``NLM_F_REQUEST|NLM_F_ACK``, waits for the
  kernel's ACK of *that* sequence number and returns the data messages that
  came before it), :meth:`~NetlinkSocket.dump` (``NLM_F_DUMP`` until
  ``NLMSG_DONE``) and :meth:`~NetlinkSocket.receive` (one datagram, for
  multicast listeners; non-blocking sockets return ``[]`` when empty).
* ``NLMSG_ERROR`` with a negative errno becomes :class:`NetlinkError` (an
  ``OSError``: ``.errno``, ``.strerror``) carrying the kernel's extended-ACK
  text (``NETLINK_EXT_ACK``) when it sent one, e.g. "Requested type not found".
* Decoding is bounded and strict: every length is checked before use and
  every problem raises :class:`NetlinkDecodeError` (a ``ValueError``), never
  ``IndexError`` or ``struct.error``. Messages whose sender is not the kernel
  (port id 0) are dropped.

Host-order fields use native byte order (``=``), as netlink does.
"""

from __future__ import annotations

import errno as _errno
import itertools
import os
import socket
import struct
from dataclasses import dataclass

__all__ = [
    "NETLINK_XFRM",
    "NLMSG_DONE",
    "NLMSG_ERROR",
    "NLM_F_ACK",
    "NLM_F_DUMP",
    "NLM_F_REQUEST",
    "Attribute",
    "NetlinkDecodeError",
    "NetlinkError",
    "NetlinkMessage",
    "NetlinkSocket",
    "attr",
    "parse_attributes",
    "parse_messages",
]

NETLINK_XFRM = 6
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_CREATE = 0x400
NLM_F_EXCL = 0x200
# flags of NLMSG_ERROR acks
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200

NLMSGERR_ATTR_MSG = 1

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_NLA = struct.Struct("=HH")  # nlattr: len, type
_ERR = struct.Struct("=i")  # nlmsgerr.error (followed by the offending nlmsghdr)

MAX_MESSAGE = 1 << 20  # receive buffer; larger datagrams are reported as truncated
MAX_ATTRIBUTES = 4096  # per message; a bound for hostile input


class NetlinkDecodeError(ValueError):
    """A received message (or attribute) is malformed or truncated."""


class NetlinkError(OSError):
    """The kernel refused a request: ``errno``, ``strerror``, ``extack`` (may be "")."""

    def __init__(self, err: int, message: str = "", *, extack: str = "", request: str = ""):
        self.extack = extack
        self.request = request
        text = message or os.strerror(err)
        if extack:
            text = f"{text} (kernel: {extack})"
        if request:
            text = f"{request}: {text}"
        super().__init__(err, text)


def _align(n: int) -> int:
    return (n + 3) & ~3


@dataclass(frozen=True, slots=True)
class NetlinkMessage:
    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Attribute:
    type: int  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
    value: bytes


def parse_messages(data: bytes) -> list[NetlinkMessage]:
    """Split one datagram into messages (strict: lengths checked, no trailing junk)."""
    out: list[NetlinkMessage] = []
    off, end = 0, len(data)
    while off < end:
        if end - off < _HDR.size:
            raise NetlinkDecodeError(f"truncated nlmsghdr at offset {off} ({end - off} bytes)")
        length, mtype, flags, seq, pid = _HDR.unpack_from(data, off)
        if length < _HDR.size or length > end - off:
            raise NetlinkDecodeError(
                f"bad nlmsg_len {length} at offset {off} ({end - off} bytes left)"
            )
        out.append(
            NetlinkMessage(mtype, flags, seq, pid, bytes(data[off + _HDR.size : off + length]))
        )
        off += _align(length)
    return out


def parse_attributes(data: bytes, *, limit: int = MAX_ATTRIBUTES) -> list[Attribute]:
    """Parse a run of netlink attributes (strict; trailing padding < 4 bytes allowed)."""
    out: list[Attribute] = []
    off, end = 0, len(data)
    while end - off >= _NLA.size:
        length, atype = _NLA.unpack_from(data, off)
        if length < _NLA.size or length > end - off:
            raise NetlinkDecodeError(f"bad nla_len {length} at offset {off} ({end - off} left)")
        if len(out) >= limit:
            raise NetlinkDecodeError(f"more than {limit} attributes")
        out.append(Attribute(atype & NLA_TYPE_MASK, bytes(data[off + _NLA.size : off + length])))
        off += _align(length)
    if off < end and any(data[off:end]):
        raise NetlinkDecodeError(f"{end - off} stray bytes after the attributes")
    return out


def attr(atype: int, value: bytes) -> bytes:
    """Encode one attribute (header + value + padding)."""
    length = _NLA.size + len(value)
    if length > 0xFFFF:
        raise ValueError(f"attribute {atype} too long ({len(value)} bytes)")
    return _NLA.pack(length, atype) + value + b"\0" * (_align(length) - length)


def encode_message(mtype: int, flags: int, seq: int, payload: bytes, pid: int = 0) -> bytes:
    length = _HDR.size + len(payload)
    return _HDR.pack(length, mtype, flags, seq, pid) + payload + b"\0" * (_align(length) - length)


def parse_error(msg: NetlinkMessage) -> tuple[int, str]:
    """(errno >= 0, extack text) of an NLMSG_ERROR message (errno 0 = ACK)."""
    p = msg.payload
    if len(p) < _ERR.size + _HDR.size:
        raise NetlinkDecodeError(f"truncated NLMSG_ERROR ({len(p)} bytes)")
    (err,) = _ERR.unpack_from(p, 0)
    if err > 0 or err < -4095:
        raise NetlinkDecodeError(f"NLMSG_ERROR with impossible error {err}")
    extack = ""
    if msg.flags & NLM_F_ACK_TLVS:
        # The echoed request follows: only its header when capped, else all of it.
        orig_len = _HDR.unpack_from(p, _ERR.size)[0]
        skip = _HDR.size if msg.flags & NLM_F_CAPPED else orig_len
        start = _ERR.size + _align(skip)
        if skip < _HDR.size or start > len(p):
            raise NetlinkDecodeError("NLMSG_ERROR ext-ack TLVs out of bounds")
        for a in parse_attributes(p[start:]):
            if a.type == NLMSGERR_ATTR_MSG:
                extack = a.value.split(b"\0", 1)[0].decode("utf-8", "replace")
    return -err, extack


class NetlinkSocket:
    """One netlink socket of protocol ``protocol`` in the caller's network namespace.

    ``groups`` are multicast group *numbers* (e.g. XFRMNLGRP_ACQUIRE = 1) joined
    with NETLINK_ADD_MEMBERSHIP. ``error_cls`` is the NetlinkError subclass raised
    for negative ACKs. Not thread-safe; one outstanding request at a time.
    """

    def __init__(
        self,
        protocol: int,
        groups: tuple[int, ...] = (),
        *,
        error_cls: type[NetlinkError] = NetlinkError,
        nonblocking: bool = False,
        rcvbuf: int | None = None,
        timeout: float | None = 5.0,
    ) -> None:
        self.error_cls = error_cls
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol
        )
        try:
            if rcvbuf:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            for opt in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):
                try:
                    self._sock.setsockopt(SOL_NETLINK, opt, 1)
                except OSError:
                    pass  # old kernels: plain acks
            self._sock.bind((0, 0))
            for g in groups:
                self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g)
            if nonblocking:
                self._sock.setblocking(False)
            else:
                self._sock.settimeout(timeout)
        except BaseException:
            self._sock.close()
            raise
        self.port_id: int = self._sock.getsockname()[0]
        self._seq = itertools.count(int.from_bytes(os.urandom(2), "little") + 1)

    # -- plumbing ----------------------------------------------------------------------
    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_seq(self) -> int:
        seq = next(self._seq) & 0xFFFFFFFF
        return seq or next(self._seq) & 0xFFFFFFFF

    def send(self, mtype: int, payload: bytes, flags: int, seq: int) -> None:
        self._sock.sendto(encode_message(mtype, flags, seq, payload, self.port_id), (0, 0))

    def receive(self) -> list[NetlinkMessage]:
        """One datagram's messages from the kernel (``[]``: would block / not from the kernel).

        ``ENOBUFS`` (the socket overran and dropped messages) is raised as
        ``NetlinkError(ENOBUFS)`` so listeners can resynchronise.
        """
        try:
            data, _anc, flags, addr = self._sock.recvmsg(MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return []
        except TimeoutError as exc:
            raise self.error_cls(_errno.ETIMEDOUT, "no answer from the kernel") from exc
        except OSError as exc:
            if exc.errno == _errno.ENOBUFS:
                raise self.error_cls(_errno.ENOBUFS, "netlink receive queue overran") from exc
            raise
        if flags & socket.MSG_TRUNC:
            raise NetlinkDecodeError(f"netlink datagram truncated (> {MAX_MESSAGE} bytes)")
        if addr[0] != 0:  # only the kernel speaks to us
            return []
        return parse_messages(data)

    # -- transactions ----------------------------------------------------------------
    def request(
        self, mtype: int, payload: bytes, *, flags: int = 0, what: str = ""
    ) -> list[NetlinkMessage]:
        """Send with REQUEST|ACK; return the data messages answering it (before the ACK)."""
        seq = self.next_seq()
        self.send(mtype, payload, NLM_F_REQUEST | NLM_F_ACK | flags, seq)
        replies: list[NetlinkMessage] = []
        while True:
            for msg in self.receive():
                if msg.seq != seq or msg.pid != self.port_id:
                    continue  # a stale answer or a multicast notification
                if msg.type == NLMSG_ERROR:
                    err, extack = parse_error(msg)
                    if err:
                        raise self.error_cls(err, extack=extack, request=what)
                    return replies
                if msg.type == NLMSG_DONE:
                    return replies
                if msg.type != NLMSG_NOOP:
                    replies.append(msg)

    def dump(self, mtype: int, payload: bytes = b"", *, what: str = "") -> list[NetlinkMessage]:
        """NLM_F_DUMP request; every message up to NLMSG_DONE."""
        seq = self.next_seq()
        self.send(mtype, payload, NLM_F_REQUEST | NLM_F_DUMP, seq)
        out: list[NetlinkMessage] = []
        while True:
            for msg in self.receive():
                if msg.seq != seq or msg.pid != self.port_id:
                    continue
                if msg.type == NLMSG_DONE:
                    if len(msg.payload) >= _ERR.size and _ERR.unpack_from(msg.payload)[0] < 0:
                        err = -_ERR.unpack_from(msg.payload)[0]
                        raise self.error_cls(min(err, 4095), "dump failed", request=what)
                    return out
                if msg.type == NLMSG_ERROR:
                    err, extack = parse_error(msg)
                    if err:
                        raise self.error_cls(err, extack=extack, request=what)
                    return out
                if msg.type == NLMSG_OVERRUN:
                    raise self.error_cls(_errno.EIO, "dump overran", request=what)
                if msg.type != NLMSG_NOOP:
                    out.append(msg)
