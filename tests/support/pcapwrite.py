"""pcap writer for tests and fixtures: IPv4/IPv6 + UDP packets with correct checksums.

``write_pcap(path, datagrams, linktype=LINKTYPE_RAW)`` builds IPv4/IPv6 + UDP headers
(raw IP, raw IPv4/IPv6 or Ethernet framing); ``pcap_bytes`` returns the same file as bytes,
``pcap_frames_bytes`` / ``write_pcap_frames`` store already framed packets. Files are read
back with :func:`kinkd.pcap.read_udp` (the daemon itself only reads pcap files).
"""

from __future__ import annotations

import ipaddress
import math
import os
import struct
from collections.abc import Iterable

from kinkd.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_RAW,
    MAX_PACKET,
    UdpDatagram,
)

__all__ = [
    "ethernet_frame",
    "internet_checksum",
    "ip_udp_packet",
    "pcap_bytes",
    "pcap_frames_bytes",
    "write_pcap",
    "write_pcap_frames",
]

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_IPPROTO_UDP = 17


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's complement sum of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_udp_packet(
    src: str, sport: int, dst: str, dport: int, payload: bytes, *, ttl: int = 64, ident: int = 0
) -> bytes:
    """Build an IPv4 or IPv6 packet carrying one UDP datagram, checksums filled in."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError("source and destination must be the same IP version")
    if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF):
        raise ValueError("port out of range")
    ulen = 8 + len(payload)
    limit = 0xFFFF - (20 if s.version == 4 else 0)
    if ulen > limit:
        raise ValueError("payload too large for one UDP datagram")
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack(">BBH", 0, _IPPROTO_UDP, ulen)
    else:
        pseudo = s.packed + d.packed + struct.pack(">IxxxB", ulen, _IPPROTO_UDP)
    udp_hdr = struct.pack(">HHHH", sport, dport, ulen, 0)
    csum = internet_checksum(pseudo + udp_hdr + payload) or 0xFFFF
    udp = struct.pack(">HHHH", sport, dport, ulen, csum) + payload
    if s.version == 4:
        hdr = struct.pack(
            ">BBHHHBBH4s4s",
            0x45,
            0,
            20 + ulen,
            ident & 0xFFFF,
            0x4000,
            ttl,
            _IPPROTO_UDP,
            0,
            s.packed,
            d.packed,
        )
        hdr = hdr[:10] + struct.pack(">H", internet_checksum(hdr)) + hdr[12:]
        return hdr + udp
    hdr = struct.pack(">IHBB16s16s", 6 << 28, ulen, _IPPROTO_UDP, ttl, s.packed, d.packed)
    return hdr + udp


def ethernet_frame(
    ip_packet: bytes,
    *,
    src_mac: bytes = b"\x02\x00\x00\x00\x00\x01",
    dst_mac: bytes = b"\x02\x00\x00\x00\x00\x02",
    vlans: Iterable[int] = (),
) -> bytes:
    """Wrap an IP packet in an Ethernet II header (optionally 802.1Q tagged)."""
    if not ip_packet:
        raise ValueError("empty IP packet")
    ethertype = _ETH_IPV4 if ip_packet[0] >> 4 == 4 else _ETH_IPV6
    tags = b"".join(struct.pack(">HH", 0x8100, vid & 0x0FFF) for vid in vlans)
    return dst_mac + src_mac + tags + struct.pack(">H", ethertype) + ip_packet


def pcap_frames_bytes(
    frames: Iterable[tuple[float, bytes]],
    *,
    linktype: int,
    nanosecond: bool = False,
    big_endian: bool = False,
    snaplen: int = MAX_PACKET,
) -> bytes:
    """A classic pcap file holding ``(time, frame bytes)`` records."""
    end = ">" if big_endian else "<"
    units = 10**9 if nanosecond else 10**6
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack(end + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for t, data in frames:
        if len(data) > MAX_PACKET:
            raise ValueError("frame too large")
        ticks = 0 if math.isnan(t) else round(t * units)
        sec, frac = divmod(ticks, units)
        out.append(struct.pack(end + "IIII", sec, frac, len(data), len(data)))
        out.append(bytes(data))
    return b"".join(out)


def write_pcap_frames(
    path: str | os.PathLike[str], frames: Iterable[tuple[float, bytes]], **kw
) -> None:  # type: ignore[no-untyped-def]
    """Write :func:`pcap_frames_bytes` output to ``path``."""
    data = pcap_frames_bytes(frames, **kw)
    with open(path, "wb") as fh:
        fh.write(data)


def _frame_for(d: UdpDatagram, linktype: int, ident: int) -> bytes:
    ip = ip_udp_packet(d.src, d.sport, d.dst, d.dport, d.payload, ident=ident)
    version = ip[0] >> 4
    if linktype == LINKTYPE_ETHERNET:
        return ethernet_frame(ip)
    if linktype == LINKTYPE_RAW:
        return ip
    if linktype == LINKTYPE_IPV4 and version == 4 or linktype == LINKTYPE_IPV6 and version == 6:
        return ip
    raise ValueError(f"cannot write IPv{version} on link type {linktype}")


def pcap_bytes(
    datagrams: Iterable[UdpDatagram],
    *,
    linktype: int = LINKTYPE_RAW,
    nanosecond: bool = False,
    big_endian: bool = False,
) -> bytes:
    """A pcap file with one IP+UDP packet per datagram (``frame`` is ignored).

    ``linktype``: :data:`LINKTYPE_RAW`, :data:`LINKTYPE_IPV4`, :data:`LINKTYPE_IPV6` or
    :data:`LINKTYPE_ETHERNET`.
    """
    if linktype not in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_ETHERNET):
        raise ValueError(f"writer does not support link type {linktype}")
    frames = [(d.time, _frame_for(d, linktype, i)) for i, d in enumerate(datagrams, 1)]
    return pcap_frames_bytes(
        frames, linktype=linktype, nanosecond=nanosecond, big_endian=big_endian
    )


def write_pcap(
    path: str | os.PathLike[str],
    datagrams: Iterable[UdpDatagram],
    *,
    linktype: int = LINKTYPE_RAW,
    nanosecond: bool = False,
    big_endian: bool = False,
) -> int:
    """Write ``datagrams`` to ``path`` as a pcap file; return the number written."""
    items = list(datagrams)
    data = pcap_bytes(items, linktype=linktype, nanosecond=nanosecond, big_endian=big_endian)
    with open(path, "wb") as fh:
        fh.write(data)
    return len(items)
