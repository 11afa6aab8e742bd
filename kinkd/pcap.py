"""Strict, bounded pcap / pcapng reader that yields UDP datagrams.

Reading
-------
``read_udp(source, ports)`` accepts a path, ``bytes``-like data or a binary file object
holding either a classic pcap file (both byte orders, micro- or nanosecond timestamps) or
a pcapng file (SHB/IDB/EPB/SPB and the obsolete Packet Block; every other block type is
skipped; several sections, per-interface link type, ``if_tsresol`` and ``if_tsoffset``).

Supported link types: NULL/loopback (0, either byte order), LOOP (108), Ethernet (1, with
any number up to :data:`MAX_VLAN_TAGS` of 802.1Q / 802.1ad tags), Linux cooked SLL (113)
and SLL2 (276), raw IP (101) and raw IPv4 / IPv6 (228 / 229).  IPv4 and IPv6 are decoded
(IPv6 extension headers are walked: hop-by-hop, routing, destination options, fragment, AH,
mobility, HIP, shim6).  IP fragments -- IPv4 *and* IPv6 -- are reassembled with bounded
state (:data:`MAX_REASSEMBLY` datagrams in flight, :data:`MAX_FRAGMENTS` fragments each,
65535 octets); the datagram is reported with the frame number and time of the fragment
that completed it (as Wireshark does).  Pass ``reassemble=False`` to skip fragments
instead (they are then counted in ``ReadStats.fragments`` and never yielded).
UDP checksums are *not* verified (loopback and offloaded captures carry partial sums).

Error model
-----------
* File structure problems (bad magic, bad block length, record running past the end of
  the file, unknown interface, oversize packet, ...) raise :class:`PcapError`.
* Frames cut short by the snapshot length (captured length < original length) before
  the end of the UDP datagram are skipped and counted in ``ReadStats.truncated``.
* Frames whose IP/UDP headers are inconsistent although fully captured are skipped and
  counted in ``ReadStats.malformed`` -- or raise :class:`PcapError` with ``strict=True``.
* Non-IP frames, non-UDP packets and packets on interfaces with an unsupported link type
  are skipped and counted (``non_udp`` / ``unsupported_linktype``).
* Opening a path may raise :class:`OSError`; no other exception escapes for any input.

Memory is bounded: the input is streamed, a single block/record may not exceed
:data:`MAX_BLOCK` / :data:`MAX_PACKET` octets.

The writer used to build test fixtures lives with the tests (``tests/support/pcapwrite.py``).
"""

from __future__ import annotations

import io
import ipaddress
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "Frame",
    "PcapError",
    "ReadStats",
    "UdpDatagram",
    "read_frames",
    "read_udp",
]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)

#: Largest captured packet accepted (the usual libpcap/Wireshark maximum snapshot length).
MAX_PACKET = 262144
#: Largest pcapng block accepted.
MAX_BLOCK = 16 * 1024 * 1024
#: Largest number of interfaces in one pcapng section.
MAX_INTERFACES = 4096
#: Largest number of stacked VLAN tags walked in an Ethernet / SLL frame.
MAX_VLAN_TAGS = 8
#: Largest number of IPv6 extension headers walked.
MAX_IPV6_EXT_HEADERS = 16
#: Largest number of IP datagrams under reassembly at the same time (oldest are evicted).
MAX_REASSEMBLY = 64
#: Largest number of fragments per IP datagram.
MAX_FRAGMENTS = 128

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})
_NULL_AF_INET6 = frozenset({10, 24, 28, 30})  # Linux, BSD, FreeBSD, Darwin
_IPPROTO_UDP = 17

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 10**6),
    b"\xa1\xb2\xc3\xd4": (">", 10**6),
    b"\x4d\x3c\xb2\xa1": ("<", 10**9),
    b"\xa1\xb2\x3c\x4d": (">", 10**9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_BOM_LE = b"\x4d\x3c\x2b\x1a"
_PCAPNG_BOM_BE = b"\x1a\x2b\x3c\x4d"
_PCAPNG_IDB = 1
_PCAPNG_PB = 2
_PCAPNG_SPB = 3
_PCAPNG_EPB = 6
_OPT_ENDOFOPT = 0
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14


class PcapError(ValueError):
    """The capture is malformed, unsupported or exceeds a bound."""


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    """One UDP datagram found in a capture.

    ``frame`` is the 1-based frame number in the file (for reassembled datagrams: the
    frame that completed it); ``time`` is seconds since the epoch (``nan`` for pcapng
    Simple Packet Blocks, which carry no timestamp).
    """

    frame: int
    time: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame, before link-layer decoding."""

    number: int
    time: float
    linktype: int
    data: bytes
    orig_len: int

    @property
    def cut(self) -> bool:
        """True when the snapshot length cut the frame short."""
        return len(self.data) < self.orig_len


@dataclass(slots=True)
class ReadStats:
    """Counters filled in while :func:`read_udp` iterates (pass your own instance)."""

    frames: int = 0
    datagrams: int = 0  # UDP datagrams yielded (after the port filter)
    truncated: int = 0  # frames cut by the snapshot length before the datagram ended
    malformed: int = 0  # inconsistent IP/UDP headers (non-strict mode)
    non_udp: int = 0  # non-IP frames, non-UDP IP packets, undecodable IPv6 (ESP, ...)
    unsupported_linktype: int = 0  # frames on interfaces with an unsupported link type
    fragments: int = 0  # IP fragments seen
    reassembled: int = 0  # IP datagrams reassembled from fragments
    incomplete: int = 0  # fragmented datagrams never completed (evicted or at EOF)


class _Skip(Exception):
    """Internal: the current frame cannot be decoded; ``kind`` says why."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # "short", "bad" or "other"
        self.reason = reason


def _short(what: str) -> _Skip:
    return _Skip("short", f"{what} runs past the end of the captured data")


def _bad(reason: str) -> _Skip:
    return _Skip("bad", reason)


# ---------------------------------------------------------------------------------------
# Container formats
# ---------------------------------------------------------------------------------------


class _Stream:
    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.offset = 0

    def read(self, n: int, what: str) -> bytes:
        data = self._fh.read(n)
        if data is None or len(data) != n:
            got = 0 if data is None else len(data)
            raise PcapError(
                f"file truncated: {what} at offset {self.offset} needs {n} octets, {got} left"
            )
        self.offset += n
        return bytes(data)

    def read_or_eof(self, n: int, what: str) -> bytes | None:
        data = self._fh.read(n)
        if not data:
            return None
        if len(data) != n:
            raise PcapError(
                f"file truncated: {what} at offset {self.offset} needs {n} octets, {len(data)} left"
            )
        self.offset += n
        return bytes(data)


def _ticks_to_seconds(ticks: int, units: int) -> float:
    return ticks // units + (ticks % units) / units


def _pcap_records(s: _Stream, end: str, units: int, linktype: int) -> Iterator[Frame]:
    rec = struct.Struct(end + "IIII")
    number = 0
    while True:
        hdr = s.read_or_eof(16, "pcap record header")
        if hdr is None:
            return
        number += 1
        sec, frac, caplen, origlen = rec.unpack(hdr)
        if caplen > MAX_PACKET:
            raise PcapError(f"frame {number}: captured length {caplen} exceeds {MAX_PACKET}")
        if caplen > origlen:
            raise PcapError(
                f"frame {number}: captured length {caplen} exceeds original length {origlen}"
            )
        data = s.read(caplen, f"frame {number} data")
        yield Frame(number, sec + frac / units, linktype, data, origlen)


@dataclass(slots=True)
class _Interface:
    linktype: int
    snaplen: int
    units: int = 10**6
    offset: int = 0


def _options(buf: bytes, end: str, what: str) -> Iterator[tuple[int, bytes]]:
    pos = 0
    hdr = struct.Struct(end + "HH")
    while pos < len(buf):
        if pos + 4 > len(buf):
            raise PcapError(f"{what}: {len(buf) - pos} stray octets after the options")
        code, olen = hdr.unpack_from(buf, pos)
        pos += 4
        if code == _OPT_ENDOFOPT:
            return
        padded = (olen + 3) & ~3
        if pos + padded > len(buf):
            raise PcapError(f"{what}: option {code} overruns the block")
        yield code, buf[pos : pos + olen]
        pos += padded


def _parse_idb(body: bytes, end: str) -> _Interface:
    if len(body) < 8:
        raise PcapError("interface description block too short")
    linktype, _reserved, snaplen = struct.unpack_from(end + "HHI", body)
    iface = _Interface(linktype, snaplen)
    for code, value in _options(body[8:], end, "interface description block"):
        if code == _OPT_IF_TSRESOL:
            if len(value) != 1:
                raise PcapError("if_tsresol option must be 1 octet")
            v = value[0]
            iface.units = (1 << (v & 0x7F)) if v & 0x80 else 10**v
        elif code == _OPT_IF_TSOFFSET:
            if len(value) != 8:
                raise PcapError("if_tsoffset option must be 8 octets")
            (iface.offset,) = struct.unpack(end + "q", value)
    return iface


def _check_block_len(length: int, minimum: int) -> None:
    if length % 4 or length < minimum or length > MAX_BLOCK:
        raise PcapError(f"bad pcapng block length {length}")


def _read_shb(s: _Stream) -> str:
    """Read a Section Header Block whose type octets were already consumed."""
    raw = s.read(8, "section header block")
    bom = raw[4:]
    if bom == _PCAPNG_BOM_LE:
        end = "<"
    elif bom == _PCAPNG_BOM_BE:
        end = ">"
    else:
        raise PcapError(f"bad pcapng byte-order magic {bom.hex()}")
    (length,) = struct.unpack(end + "I", raw[:4])
    _check_block_len(length, 28)
    rest = s.read(length - 12, "section header block")
    body = bom + rest[:-4]
    if struct.unpack(end + "I", rest[-4:])[0] != length:
        raise PcapError("section header block: trailing length does not match")
    major, minor = struct.unpack_from(end + "HH", body, 4)
    if major != 1:
        raise PcapError(f"unsupported pcapng version {major}.{minor}")
    for _ in _options(body[16:], end, "section header block"):
        pass
    return end


def _pcapng_blocks(s: _Stream, end: str) -> Iterator[Frame]:
    interfaces: list[_Interface] = []
    number = 0
    while True:
        raw_type = s.read_or_eof(4, "pcapng block type")
        if raw_type is None:
            return
        if raw_type == _PCAPNG_SHB:
            end = _read_shb(s)
            interfaces = []
            continue
        (btype,) = struct.unpack(end + "I", raw_type)
        (length,) = struct.unpack(end + "I", s.read(4, "pcapng block length"))
        _check_block_len(length, 12)
        rest = s.read(length - 8, f"pcapng block type {btype:#x}")
        body = rest[:-4]
        if struct.unpack(end + "I", rest[-4:])[0] != length:
            raise PcapError(f"pcapng block type {btype:#x}: trailing length does not match")
        if btype == _PCAPNG_IDB:
            if len(interfaces) >= MAX_INTERFACES:
                raise PcapError(f"more than {MAX_INTERFACES} interfaces in a section")
            interfaces.append(_parse_idb(body, end))
            continue
        if btype in (_PCAPNG_EPB, _PCAPNG_PB):
            if len(body) < 20:
                raise PcapError("packet block too short")
            if btype == _PCAPNG_EPB:
                ifid, hi, lo, caplen, origlen = struct.unpack_from(end + "IIIII", body)
            else:
                ifid, _drops, hi, lo, caplen, origlen = struct.unpack_from(end + "HHIIII", body)
            number += 1
            if ifid >= len(interfaces):
                raise PcapError(f"frame {number}: unknown interface {ifid}")
            if caplen > MAX_PACKET:
                raise PcapError(f"frame {number}: captured length {caplen} exceeds {MAX_PACKET}")
            if caplen > origlen:
                raise PcapError(
                    f"frame {number}: captured length {caplen} exceeds original length {origlen}"
                )
            if 20 + ((caplen + 3) & ~3) > len(body):
                raise PcapError(f"frame {number}: packet data overruns its block")
            iface = interfaces[ifid]
            data = body[20 : 20 + caplen]
            for _ in _options(body[20 + ((caplen + 3) & ~3) :], end, "packet block"):
                pass
            t = _ticks_to_seconds((hi << 32) | lo, iface.units) + iface.offset
            yield Frame(number, t, iface.linktype, data, origlen)
            continue
        if btype == _PCAPNG_SPB:
            if len(body) < 4:
                raise PcapError("simple packet block too short")
            number += 1
            if not interfaces:
                raise PcapError(f"frame {number}: simple packet block without interface")
            (origlen,) = struct.unpack_from(end + "I", body)
            iface = interfaces[0]
            caplen = min(origlen, len(body) - 4)
            if iface.snaplen:
                caplen = min(caplen, iface.snaplen)
            if caplen > MAX_PACKET:
                raise PcapError(f"frame {number}: captured length {caplen} exceeds {MAX_PACKET}")
            yield Frame(number, math.nan, iface.linktype, body[4 : 4 + caplen], origlen)
            continue
        # Name resolution, statistics, custom, decryption secrets, ...: not needed.


def _open_frames(s: _Stream) -> Iterator[Frame]:
    magic = s.read_or_eof(4, "file magic")
    if magic is None:
        raise PcapError("empty capture file")
    if magic in _PCAP_MAGICS:
        end, units = _PCAP_MAGICS[magic]
        hdr = s.read(20, "pcap file header")
        major, minor, _zone, _sigfigs, _snaplen, network = struct.unpack(end + "HHiIII", hdr)
        if major != 2:
            raise PcapError(f"unsupported pcap version {major}.{minor}")
        # Upper 16 bits hold FCS length / flags; the link type is the low 16 bits.
        return _pcap_records(s, end, units, network & 0xFFFF)
    if magic == _PCAPNG_SHB:
        return _pcapng_blocks(s, _read_shb(s))
    raise PcapError(f"not a pcap or pcapng file (magic {magic.hex()})")


Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


def _open_source(source: Source) -> tuple[BinaryIO, bool]:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, str | os.PathLike):
        return open(source, "rb"), True  # closed by the generator
    if hasattr(source, "read"):
        return source, False
    raise TypeError(f"cannot read a capture from {type(source).__name__}")


def read_frames(source: Source) -> Iterator[Frame]:
    """Yield the raw frames of a pcap/pcapng capture (file header checked eagerly)."""
    fh, owned = _open_source(source)
    try:
        frames = _guard(_open_frames, _Stream(fh))
    except BaseException:
        if owned:
            fh.close()
        raise
    return _frames_gen(fh, owned, frames)


def _guard(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except PcapError:
        raise
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        raise PcapError(f"undecodable capture: {exc}") from exc


def _frames_gen(fh: BinaryIO, owned: bool, frames: Iterator[Frame]) -> Iterator[Frame]:
    try:
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except PcapError:
                raise
            except (struct.error, IndexError, ValueError, OverflowError) as exc:
                raise PcapError(f"undecodable capture: {exc}") from exc
            yield frame
    finally:
        if owned:
            fh.close()


# ---------------------------------------------------------------------------------------
# Link layer, IP, UDP
# ---------------------------------------------------------------------------------------


def _ethertype_payload(data: bytes, pos: int, ethertype: int) -> tuple[int, bytes]:
    for _ in range(MAX_VLAN_TAGS + 1):
        if ethertype not in _VLAN_TPIDS:
            return ethertype, data[pos:]
        if pos + 4 > len(data):
            raise _short("VLAN tag")
        (ethertype,) = struct.unpack_from(">H", data, pos + 2)
        pos += 4
    raise _bad(f"more than {MAX_VLAN_TAGS} VLAN tags")


def _network_layer(frame: Frame) -> tuple[int, bytes]:
    """Return (ethertype, network-layer bytes) of a frame."""
    lt, data = frame.linktype, frame.data
    if lt == LINKTYPE_ETHERNET:
        if len(data) < 14:
            raise _short("Ethernet header")
        (ethertype,) = struct.unpack_from(">H", data, 12)
        return _ethertype_payload(data, 14, ethertype)
    if lt == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            raise _short("Linux cooked header")
        (ethertype,) = struct.unpack_from(">H", data, 14)
        return _ethertype_payload(data, 16, ethertype)
    if lt == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            raise _short("Linux cooked v2 header")
        (ethertype,) = struct.unpack_from(">H", data, 0)
        return _ethertype_payload(data, 20, ethertype)
    if lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            raise _short("loopback header")
        if lt == LINKTYPE_LOOP:
            family = int.from_bytes(data[:4], "big")
        else:  # host byte order of the capturing machine: take whichever reading is small
            family = int.from_bytes(data[:4], "little")
            if family > 0xFFFF:
                family = int.from_bytes(data[:4], "big")
        if family == 2:
            return _ETH_IPV4, data[4:]
        if family in _NULL_AF_INET6:
            return _ETH_IPV6, data[4:]
        return 0, data[4:]
    if lt in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if not data:
            raise _short("IP header")
        version = data[0] >> 4
        if lt == LINKTYPE_IPV4 and version != 4 or lt == LINKTYPE_IPV6 and version != 6:
            raise _bad(f"IP version {version} on link type {lt}")
        if version == 4:
            return _ETH_IPV4, data
        if version == 6:
            return _ETH_IPV6, data
        raise _bad(f"unknown IP version {version}")
    raise AssertionError("unsupported link types are filtered earlier")


@dataclass(slots=True)
class _Group:
    frags: dict[int, bytes]
    total: int | None = None
    next_header: int | None = None  # IPv6: header following the fragment header


class _Reassembler:
    def __init__(self, stats: ReadStats) -> None:
        self._groups: dict[tuple[object, ...], _Group] = {}
        self._stats = stats

    def add(
        self, key: tuple[object, ...], offset: int, more: bool, data: bytes, nh: int | None
    ) -> tuple[bytes, int | None] | None:
        self._stats.fragments += 1
        if offset + len(data) > 65535:
            self._groups.pop(key, None)
            raise _bad("fragment beyond 65535 octets")
        if more and len(data) % 8:
            self._groups.pop(key, None)
            raise _bad("non-final fragment length not a multiple of 8")
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= MAX_REASSEMBLY:
                self._groups.pop(next(iter(self._groups)))
                self._stats.incomplete += 1
            group = self._groups[key] = _Group({})
        old = group.frags.get(offset)
        if old is not None and old != data:
            del self._groups[key]
            raise _bad("conflicting duplicate fragment")
        if len(group.frags) >= MAX_FRAGMENTS:
            del self._groups[key]
            raise _bad(f"more than {MAX_FRAGMENTS} fragments")
        group.frags[offset] = data
        if offset == 0:
            group.next_header = nh
        if not more:
            if group.total is not None and group.total != offset + len(data):
                del self._groups[key]
                raise _bad("conflicting final fragments")
            group.total = offset + len(data)
        if group.total is None:
            return None
        pos = 0
        for off in sorted(group.frags):
            if off > pos:
                return None  # hole: wait for more
            if off < pos:
                del self._groups[key]
                raise _bad("overlapping fragments")
            pos += len(group.frags[off])
        if pos != group.total:
            del self._groups[key]
            raise _bad("fragments extend past the final fragment")
        del self._groups[key]
        self._stats.reassembled += 1
        return b"".join(group.frags[o] for o in sorted(group.frags)), group.next_header

    def pending(self) -> int:
        return len(self._groups)


def _udp(data: bytes) -> tuple[int, int, bytes]:
    if len(data) < 8:
        raise _short("UDP header")
    sport, dport, ulen = struct.unpack_from(">HHH", data)
    if ulen < 8:
        raise _bad(f"UDP length {ulen} < 8")
    if ulen > len(data):
        raise _short("UDP datagram")
    return sport, dport, data[8:ulen]


def _ipv4(data: bytes, reasm: _Reassembler | None) -> tuple[str, str, bytes] | None:
    """Return (src, dst, udp bytes) or None when a fragment is pending/ignored."""
    if len(data) < 20:
        raise _short("IPv4 header")
    if data[0] >> 4 != 4:
        raise _bad(f"IP version {data[0] >> 4} in an IPv4 frame")
    ihl = (data[0] & 0x0F) * 4
    total, ident, flags_frag = struct.unpack_from(">HHH", data, 2)
    if ihl < 20 or total < ihl:
        raise _bad(f"bad IPv4 header length {ihl} / total length {total}")
    if total > len(data):
        raise _short("IPv4 packet")
    proto = data[9]
    src = str(ipaddress.IPv4Address(data[12:16]))
    dst = str(ipaddress.IPv4Address(data[16:20]))
    if flags_frag & 0x8000:
        raise _bad("IPv4 reserved flag set")
    payload = data[ihl:total]
    more = bool(flags_frag & 0x2000)
    offset = (flags_frag & 0x1FFF) * 8
    if proto != _IPPROTO_UDP:
        raise _Skip("other", f"IP protocol {proto}")
    if more or offset:
        if reasm is None:
            raise _Skip("fragment", "IPv4 fragment")
        done = reasm.add((4, src, dst, proto, ident), offset, more, payload, None)
        if done is None:
            return None
        payload = done[0]
    return src, dst, payload


_IPV6_EXT_8 = frozenset({0, 43, 60, 135, 139, 140})  # (len + 1) * 8 octets
_IPV6_AH = 51
_IPV6_FRAGMENT = 44


def _ipv6_walk(nh: int, data: bytes, pos: int, ctx: tuple[str, str], reasm: _Reassembler | None):  # type: ignore[no-untyped-def]
    for _ in range(MAX_IPV6_EXT_HEADERS + 1):
        if nh == _IPPROTO_UDP:
            return data[pos:]
        if nh in _IPV6_EXT_8 or nh == _IPV6_AH:
            if pos + 2 > len(data):
                raise _short("IPv6 extension header")
            nxt, hlen = data[pos], data[pos + 1]
            size = (hlen + 2) * 4 if nh == _IPV6_AH else (hlen + 1) * 8
            if pos + size > len(data):
                raise _short("IPv6 extension header")
            nh, pos = nxt, pos + size
            continue
        if nh == _IPV6_FRAGMENT:
            if pos + 8 > len(data):
                raise _short("IPv6 fragment header")
            nxt = data[pos]
            (offm,) = struct.unpack_from(">H", data, pos + 2)
            ident = data[pos + 4 : pos + 8]
            offset, more = offm & 0xFFF8, bool(offm & 1)
            if offset == 0 and not more:  # atomic fragment
                nh, pos = nxt, pos + 8
                continue
            if reasm is None:
                raise _Skip("fragment", "IPv6 fragment")
            done = reasm.add((6, ctx[0], ctx[1], ident), offset, more, data[pos + 8 :], nxt)
            if done is None:
                return None
            whole, first_nh = done
            if first_nh is None:
                raise _bad("reassembled IPv6 datagram without first fragment header")
            # Headers after the fragment header live in the reassembled payload.
            return _ipv6_walk(first_nh, whole, 0, ctx, None)
        raise _Skip("other", f"IPv6 next header {nh}")
    raise _bad(f"more than {MAX_IPV6_EXT_HEADERS} IPv6 extension headers")


def _ipv6(data: bytes, reasm: _Reassembler | None) -> tuple[str, str, bytes] | None:
    if len(data) < 40:
        raise _short("IPv6 header")
    if data[0] >> 4 != 6:
        raise _bad(f"IP version {data[0] >> 4} in an IPv6 frame")
    (plen,) = struct.unpack_from(">H", data, 4)
    if 40 + plen > len(data):
        raise _short("IPv6 packet")
    src = str(ipaddress.IPv6Address(data[8:24]))
    dst = str(ipaddress.IPv6Address(data[24:40]))
    udp = _ipv6_walk(data[6], data[: 40 + plen], 40, (src, dst), reasm)
    if udp is None:
        return None
    return src, dst, udp


def read_udp(
    source: Source,
    ports: set[int] | frozenset[int] | None = None,
    *,
    stats: ReadStats | None = None,
    strict: bool = False,
    reassemble: bool = True,
) -> Iterator[UdpDatagram]:
    """Yield the UDP datagrams of a pcap/pcapng capture.

    ``ports``: keep datagrams whose source *or* destination port is in the set (``None``:
    keep all).  ``stats``: a :class:`ReadStats` updated while iterating.  ``strict``:
    raise :class:`PcapError` for inconsistent IP/UDP headers instead of counting them.
    The capture's file header is validated before this function returns.
    """
    frames = read_frames(source)
    return _udp_gen(frames, ports, stats if stats is not None else ReadStats(), strict, reassemble)


def _udp_gen(
    frames: Iterator[Frame],
    ports: set[int] | frozenset[int] | None,
    stats: ReadStats,
    strict: bool,
    reassemble: bool,
) -> Iterator[UdpDatagram]:
    reasm = _Reassembler(stats) if reassemble else None
    try:
        for frame in frames:
            stats.frames += 1
            if frame.linktype not in SUPPORTED_LINKTYPES:
                stats.unsupported_linktype += 1
                continue
            try:
                found = _guard(_decode, frame, reasm)
            except _Skip as skip:
                if skip.kind == "short" and frame.cut:
                    stats.truncated += 1
                elif skip.kind in ("short", "bad"):
                    if strict:
                        raise PcapError(f"frame {frame.number}: {skip.reason}") from None
                    stats.malformed += 1
                elif skip.kind == "fragment":
                    stats.fragments += 1
                else:
                    stats.non_udp += 1
                continue
            if found is None:
                continue
            src, sport, dst, dport, payload = found
            if ports is not None and sport not in ports and dport not in ports:
                continue
            stats.datagrams += 1
            yield UdpDatagram(frame.number, frame.time, src, sport, dst, dport, payload)
    finally:
        if reasm is not None:
            stats.incomplete += reasm.pending()
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def _decode(frame: Frame, reasm: _Reassembler | None) -> tuple[str, int, str, int, bytes] | None:
    ethertype, net = _network_layer(frame)
    if ethertype == _ETH_IPV4:
        found = _ipv4(net, reasm)
    elif ethertype == _ETH_IPV6:
        found = _ipv6(net, reasm)
    else:
        raise _Skip("other", f"ethertype {ethertype:#06x}")
    if found is None:
        return None
    src, dst, udp = found
    sport, dport, payload = _udp(udp)
    return src, sport, dst, dport, payload
