"""kinkd.pcap: reader (pcap/pcapng, all supported link types), writer, robustness."""

from __future__ import annotations

import ipaddress
import math
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kinkd import pcap
from kinkd.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    PcapError,
    ReadStats,
    UdpDatagram,
    read_frames,
    read_udp,
)
from tests.support.pcapwrite import (
    ethernet_frame,
    internet_checksum,
    ip_udp_packet,
    pcap_bytes,
    pcap_frames_bytes,
    write_pcap,
)

D4 = UdpDatagram(0, 1700000000.25, "198.18.0.1", 910, "198.18.0.2", 910, b"kink-v4")
D6 = UdpDatagram(0, 1700000001.5, "2001:db8::1", 40000, "2001:db8::2", 500, b"\x01" * 40)
D_OTHER = UdpDatagram(0, 1700000002.0, "198.18.0.2", 53, "198.18.0.1", 5353, b"dns")


def _key(d: UdpDatagram) -> tuple[object, ...]:
    return (d.src, d.sport, d.dst, d.dport, d.payload)


# ---------------------------------------------------------------------------------------
# pcapng builder (test side)
# ---------------------------------------------------------------------------------------


def _opt(code: int, value: bytes, end: str) -> bytes:
    return struct.pack(end + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes, end: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(end + "II", btype, n) + body + struct.pack(end + "I", n)


def shb(end: str = "<", options: bytes = b"") -> bytes:
    body = struct.pack(end + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options
    return _block(0x0A0D0D0A, body, end)


def idb(
    linktype: int,
    end: str = "<",
    snaplen: int = 0,
    tsresol: int | None = None,
    tsoffset: int | None = None,
) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += _opt(9, bytes([tsresol]), end)
    if tsoffset is not None:
        opts += _opt(14, struct.pack(end + "q", tsoffset), end)
    if opts:
        opts += _opt(0, b"", end)
    return _block(1, struct.pack(end + "HHI", linktype, 0, snaplen) + opts, end)


def epb(ifid: int, ticks: int, data: bytes, end: str = "<", origlen: int | None = None) -> bytes:
    origlen = len(data) if origlen is None else origlen
    hdr = struct.pack(end + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data), origlen)
    body = hdr + data + b"\0" * (-len(data) % 4) + _opt(1, b"comment", end) + _opt(0, b"", end)
    return _block(6, body, end)


def spb(data: bytes, end: str = "<") -> bytes:
    return _block(3, struct.pack(end + "I", len(data)) + data, end)


def obsolete_pb(ifid: int, ticks: int, data: bytes, end: str = "<") -> bytes:
    hdr = struct.pack(
        end + "HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)
    )
    return _block(2, hdr + data, end)


# ---------------------------------------------------------------------------------------
# link-layer builders
# ---------------------------------------------------------------------------------------


def ip_of(d: UdpDatagram, **kw: int) -> bytes:
    return ip_udp_packet(d.src, d.sport, d.dst, d.dport, d.payload, **kw)


def _ethertype(ip: bytes) -> int:
    return 0x0800 if ip[0] >> 4 == 4 else 0x86DD


def sll(ip: bytes) -> bytes:
    return struct.pack(">HHH8sH", 0, 772, 6, b"\0" * 8, _ethertype(ip)) + ip


def sll2(ip: bytes) -> bytes:
    return struct.pack(">HHIHBB8s", _ethertype(ip), 0, 1, 772, 0, 6, b"\0" * 8) + ip


def null(ip: bytes, family: int, end: str) -> bytes:
    return struct.pack(end + "I", family) + ip


# ---------------------------------------------------------------------------------------
# writer + classic pcap reader
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("linktype", [LINKTYPE_RAW, LINKTYPE_ETHERNET])
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_writer_roundtrip(
    tmp_path: Path, linktype: int, big_endian: bool, nanosecond: bool
) -> None:
    path = tmp_path / "x.pcap"
    assert (
        write_pcap(
            path, [D4, D6, D_OTHER], linktype=linktype, big_endian=big_endian, nanosecond=nanosecond
        )
        == 3
    )
    stats = ReadStats()
    got = list(read_udp(path, None, stats=stats, strict=True))
    assert [_key(d) for d in got] == [_key(D4), _key(D6), _key(D_OTHER)]
    assert [d.frame for d in got] == [1, 2, 3]
    assert [d.time for d in got] == pytest.approx([D4.time, D6.time, D_OTHER.time], abs=1e-6)
    assert stats.frames == 3 and stats.datagrams == 3 and stats.truncated == 0
    # port filter: source or destination
    assert [d.dport for d in read_udp(path, {500, 910})] == [910, 500]
    assert [d.sport for d in read_udp(path.read_bytes(), {53})] == [53]


def test_raw_ipv4_ipv6_linktypes() -> None:
    assert [_key(d) for d in read_udp(pcap_bytes([D4], linktype=LINKTYPE_IPV4))] == [_key(D4)]
    assert [_key(d) for d in read_udp(pcap_bytes([D6], linktype=LINKTYPE_IPV6))] == [_key(D6)]
    with pytest.raises(ValueError):
        pcap_bytes([D6], linktype=LINKTYPE_IPV4)
    # an IPv6 packet on a raw-IPv4 link is malformed
    data = pcap_frames_bytes([(0.0, ip_of(D6))], linktype=LINKTYPE_IPV4)
    stats = ReadStats()
    assert list(read_udp(data, stats=stats)) == []
    assert stats.malformed == 1
    with pytest.raises(PcapError):
        list(read_udp(data, strict=True))


def test_checksums_are_correct() -> None:
    v4 = ip_of(D4)
    assert internet_checksum(v4[:20]) == 0
    pseudo = v4[12:20] + struct.pack(">BBH", 0, 17, len(v4) - 20)
    assert internet_checksum(pseudo + v4[20:]) == 0
    v6 = ip_of(D6)
    pseudo6 = v6[8:40] + struct.pack(">IxxxB", len(v6) - 40, 17)
    assert internet_checksum(pseudo6 + v6[40:]) == 0


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_accepts_written_checksums(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    write_pcap(path, [D4, D6], linktype=LINKTYPE_ETHERNET)
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "udp.checksum.status",
            "-e",
            "ip.checksum.status",
            "-e",
            "udp.dstport",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split("\n")
    assert out[0].split("\t") == ["1", "1", "910"]  # 1 = Good
    assert out[1].split("\t")[0] == "1" and out[1].split("\t")[2] == "500"


def test_handmade_link_types() -> None:
    ip4, ip6 = ip_of(D4), ip_of(D6)
    cases = [
        (LINKTYPE_ETHERNET, ethernet_frame(ip4, vlans=[10])),
        (LINKTYPE_ETHERNET, ethernet_frame(ip6, vlans=[10, 20])),
        (LINKTYPE_LINUX_SLL, sll(ip4)),
        (LINKTYPE_LINUX_SLL, sll(ip6)),
        (LINKTYPE_LINUX_SLL2, sll2(ip4)),
        (LINKTYPE_LINUX_SLL2, sll2(ip6)),
        (LINKTYPE_NULL, null(ip4, 2, "<")),
        (LINKTYPE_NULL, null(ip4, 2, ">")),
        (LINKTYPE_NULL, null(ip6, 10, "<")),
        (LINKTYPE_NULL, null(ip6, 24, ">")),
        (LINKTYPE_NULL, null(ip6, 28, "<")),
        (LINKTYPE_NULL, null(ip6, 30, ">")),
        (LINKTYPE_LOOP, null(ip4, 2, ">")),
    ]
    for linktype, frame in cases:
        got = list(read_udp(pcap_frames_bytes([(1.0, frame)], linktype=linktype), strict=True))
        want = D4 if frame.endswith(ip4) else D6
        assert [_key(d) for d in got] == [_key(want)], (linktype, frame[:24].hex())


def test_ethernet_padding_and_802_1ad() -> None:
    ip4 = ip_of(UdpDatagram(0, 0, "198.18.0.1", 1, "198.18.0.2", 2, b""))  # 28 octets
    frame = ethernet_frame(ip4) + b"\0" * 18  # padded to the Ethernet minimum
    qinq = frame[:12] + struct.pack(">HHHH", 0x88A8, 5, 0x8100, 6) + frame[12:]
    for f in (frame, qinq):
        (d,) = read_udp(pcap_frames_bytes([(0.0, f)], linktype=LINKTYPE_ETHERNET), strict=True)
        assert d.payload == b"" and (d.sport, d.dport) == (1, 2)


def test_non_udp_and_unsupported_are_counted() -> None:
    ip4 = bytearray(ip_of(D4))
    ip4[9] = 6  # claim TCP
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\0" * 28
    frames = [(0.0, ethernet_frame(bytes(ip4))), (0.0, arp), (0.0, null(ip_of(D4), 99, "<"))]
    stats = ReadStats()
    data = pcap_frames_bytes(frames[:2], linktype=LINKTYPE_ETHERNET)
    assert list(read_udp(data, stats=stats, strict=True)) == []
    assert stats.non_udp == 2
    stats = ReadStats()
    assert list(read_udp(pcap_frames_bytes(frames[2:], linktype=LINKTYPE_NULL), stats=stats)) == []
    assert stats.non_udp == 1
    stats = ReadStats()
    assert list(read_udp(pcap_frames_bytes([(0.0, b"x")], linktype=147), stats=stats)) == []
    assert stats.unsupported_linktype == 1


def test_truncated_frames_are_skipped_and_counted() -> None:
    frames = pcap_bytes([D4, D6, D4], linktype=LINKTYPE_ETHERNET)
    # Rewrite record 2 as if the snapshot length had cut it to 60 octets.
    recs = list(read_frames(frames))
    out = [pcap_frames_bytes([], linktype=LINKTYPE_ETHERNET)]
    for r in recs:
        data = r.data[:60] if r.number == 2 else r.data
        out.append(struct.pack("<IIII", int(r.time), 0, len(data), len(r.data)) + data)
    stats = ReadStats()
    got = list(read_udp(b"".join(out), stats=stats, strict=True))
    assert [d.frame for d in got] == [1, 3]
    assert stats.truncated == 1 and stats.malformed == 0


def test_header_lies_are_malformed() -> None:
    ip4 = bytearray(ip_of(D4))
    ip4[2:4] = struct.pack(">H", len(ip4) + 40)  # total length beyond the frame
    udp_short = bytearray(ip_of(D4))
    udp_short[24:26] = struct.pack(">H", 4)  # UDP length < 8
    for bad in (ip4, udp_short, bytearray(b"\x45" + b"\0" * 10)):
        stats = ReadStats()
        data = pcap_frames_bytes([(0.0, bytes(bad))], linktype=LINKTYPE_RAW)
        assert list(read_udp(data, stats=stats)) == []
        assert stats.malformed == 1
        with pytest.raises(PcapError, match="frame 1"):
            list(read_udp(data, strict=True))


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "empty"),
        (b"\0\0\0\0" + b"\0" * 20, "not a pcap"),
        (b"\xd4\xc3\xb2\xa1" + b"\0" * 5, "truncated"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 3, 0, 0, 0, 0, 1), "version"),
        (
            pcap_frames_bytes([], linktype=1) + struct.pack("<IIII", 0, 0, 10, 10) + b"abc",
            "truncated",
        ),
        (
            pcap_frames_bytes([], linktype=1) + struct.pack("<IIII", 0, 0, 10, 5) + b"a" * 10,
            "original length",
        ),
        (
            pcap_frames_bytes([], linktype=1) + struct.pack("<IIII", 0, 0, 1 << 30, 1 << 30),
            "exceeds",
        ),
        (pcap_frames_bytes([], linktype=1) + b"\0\0\0", "truncated"),
    ],
)
def test_pcap_structure_errors(data: bytes, match: str) -> None:
    with pytest.raises(PcapError, match=match):
        list(read_udp(data))


def test_header_checked_eagerly_and_file_closed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"garbage!" * 4)
    with pytest.raises(PcapError):
        read_udp(bad)  # before any iteration
    with pytest.raises(TypeError):
        read_udp(12345)  # type: ignore[arg-type]
    good = tmp_path / "good.pcap"
    write_pcap(good, [D4])
    it = read_udp(good)
    assert next(it).payload == D4.payload
    it.close()


# ---------------------------------------------------------------------------------------
# fragments and IPv6 extension headers
# ---------------------------------------------------------------------------------------


def ipv4_fragments(packet: bytes, size: int) -> list[bytes]:
    ihl = (packet[0] & 15) * 4
    hdr, body = bytearray(packet[:ihl]), packet[ihl:]
    out = []
    for off in range(0, len(body), size):
        chunk = body[off : off + size]
        more = off + size < len(body)
        h = bytearray(hdr)
        h[2:4] = struct.pack(">H", ihl + len(chunk))
        h[6:8] = struct.pack(">H", (0x2000 if more else 0) | off // 8)
        h[10:12] = b"\0\0"
        h[10:12] = struct.pack(">H", internet_checksum(bytes(h)))
        out.append(bytes(h) + chunk)
    return out


def ipv6_fragments(packet: bytes, size: int, ident: int = 7) -> list[bytes]:
    hdr, body = bytearray(packet[:40]), packet[40:]
    nh = hdr[6]
    out = []
    for off in range(0, len(body), size):
        chunk = body[off : off + size]
        more = off + size < len(body)
        h = bytearray(hdr)
        h[4:6] = struct.pack(">H", 8 + len(chunk))
        h[6] = 44
        frag = struct.pack(">BBHI", nh, 0, off | int(more), ident)
        out.append(bytes(h) + frag + chunk)
    return out


def test_ipv4_reassembly_out_of_order() -> None:
    big = UdpDatagram(0, 5.0, "198.18.0.1", 910, "198.18.0.2", 910, bytes(range(256)) * 12)
    frags = ipv4_fragments(ip_of(big, ident=99), 1480)
    assert len(frags) == 3
    order = [frags[2], frags[0], frags[1]]
    data = pcap_frames_bytes([(float(i), f) for i, f in enumerate(order)], linktype=LINKTYPE_RAW)
    stats = ReadStats()
    (d,) = read_udp(data, stats=stats, strict=True)
    assert _key(d) == _key(big) and d.frame == 3 and d.time == 2.0
    assert stats.fragments == 3 and stats.reassembled == 1 and stats.incomplete == 0
    # without reassembly the fragments are skipped
    stats = ReadStats()
    assert list(read_udp(data, stats=stats, reassemble=False)) == []
    assert stats.fragments == 3
    # a missing fragment leaves the datagram incomplete
    stats = ReadStats()
    assert (
        list(read_udp(pcap_frames_bytes([(0.0, frags[0])], linktype=LINKTYPE_RAW), stats=stats))
        == []
    )
    assert stats.incomplete == 1


def test_ipv4_overlapping_fragments_are_malformed() -> None:
    big = UdpDatagram(0, 0.0, "198.18.0.1", 1, "198.18.0.2", 2, b"a" * 3000)
    f = ipv4_fragments(ip_of(big), 1480)
    g = ipv4_fragments(ip_of(big), 1472)  # second set overlaps the first
    data = pcap_frames_bytes([(0.0, x) for x in (f[0], g[1], f[2], f[1])], linktype=LINKTYPE_RAW)
    stats = ReadStats()
    list(read_udp(data, stats=stats))
    assert stats.malformed >= 1 and stats.datagrams == 0
    with pytest.raises(PcapError):
        list(read_udp(data, strict=True))


def test_ipv6_extension_headers_and_fragments() -> None:
    base = bytearray(ip_of(D6))
    # hop-by-hop (8 octets of PadN) + destination options (16 octets) before UDP
    hbh = bytes([60, 0, 1, 4, 0, 0, 0, 0])
    dst = bytes([17, 1, 1, 12]) + b"\0" * 12
    ext = bytes(base[:40]) + hbh + dst + bytes(base[40:])
    ext = bytearray(ext)
    ext[6] = 0
    ext[4:6] = struct.pack(">H", len(ext) - 40)
    (d,) = read_udp(pcap_frames_bytes([(0.0, bytes(ext))], linktype=LINKTYPE_RAW), strict=True)
    assert _key(d) == _key(D6)

    big = UdpDatagram(0, 0.0, "2001:db8::1", 910, "2001:db8::2", 910, b"z" * 4000)
    frags = ipv6_fragments(ip_of(big), 1448)
    data = pcap_frames_bytes([(0.0, f) for f in reversed(frags)], linktype=LINKTYPE_RAW)
    stats = ReadStats()
    (d,) = read_udp(data, stats=stats, strict=True)
    assert _key(d) == _key(big) and stats.reassembled == 1

    # atomic fragment (offset 0, M=0) is just a header to skip
    (atomic,) = ipv6_fragments(ip_of(D6), 4096)
    (d,) = read_udp(pcap_frames_bytes([(0.0, atomic)], linktype=LINKTYPE_RAW), strict=True)
    assert _key(d) == _key(D6)

    esp = bytearray(ip_of(D6))
    esp[6] = 50
    stats = ReadStats()
    assert (
        list(read_udp(pcap_frames_bytes([(0.0, bytes(esp))], linktype=LINKTYPE_RAW), stats=stats))
        == []
    )
    assert stats.non_udp == 1


# ---------------------------------------------------------------------------------------
# pcapng
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("end", ["<", ">"])
def test_pcapng_blocks_interfaces_and_resolutions(end: str) -> None:
    ip4, ip6 = ip_of(D4), ip_of(D6)
    data = b"".join(
        [
            shb(end, _opt(4, b"test", end) + _opt(0, b"", end)),
            idb(LINKTYPE_ETHERNET, end),  # if 0: default microseconds
            idb(LINKTYPE_LINUX_SLL2, end, tsresol=9),  # if 1: nanoseconds
            idb(LINKTYPE_RAW, end, tsresol=0x80 | 10, tsoffset=1000),  # if 2: 2^-10 s, +1000 s
            _block(4, b"\0" * 8, end),  # name resolution block: skipped
            _block(0x40000BAD, b"custom", end),  # custom block: skipped
            epb(0, 1_500_000, ethernet_frame(ip4, vlans=[3]), end),
            epb(1, 2_250_000_000, sll2(ip6), end),
            epb(2, 3 * 1024 + 512, ip4, end),
            obsolete_pb(0, 7_000_000, ethernet_frame(ip6), end),
            spb(ethernet_frame(ip4), end),
            _block(5, b"\0" * 12, end),  # interface statistics: skipped
        ]
    )
    got = list(read_udp(data, strict=True))
    assert [_key(d) for d in got] == [_key(D4), _key(D6), _key(D4), _key(D6), _key(D4)]
    assert [d.frame for d in got] == [1, 2, 3, 4, 5]
    assert got[0].time == pytest.approx(1.5)
    assert got[1].time == pytest.approx(2.25)
    assert got[2].time == pytest.approx(1003.5)
    assert got[3].time == pytest.approx(7.0)
    assert math.isnan(got[4].time)


def test_pcapng_multiple_sections_reset_interfaces() -> None:
    ip4 = ip_of(D4)
    data = shb("<") + idb(LINKTYPE_RAW, "<") + epb(0, 0, ip4, "<")
    data += shb(">") + idb(LINKTYPE_ETHERNET, ">") + epb(0, 0, ethernet_frame(ip4), ">")
    assert [d.frame for d in read_udp(data, strict=True)] == [1, 2]
    bad = shb("<") + idb(LINKTYPE_RAW, "<") + shb(">") + epb(0, 0, ip4, ">")
    with pytest.raises(PcapError, match="unknown interface"):
        list(read_udp(bad))


def test_pcapng_snaplen_truncation_and_spb() -> None:
    frame = ethernet_frame(ip_of(D4))
    stats = ReadStats()
    data = (
        shb()
        + idb(LINKTYPE_ETHERNET, snaplen=30)
        + epb(0, 0, frame[:30], origlen=len(frame))
        + spb(frame)
    )
    assert list(read_udp(data, stats=stats)) == []  # SPB is cut to the 30-octet snaplen too
    assert stats.truncated == 2


@pytest.mark.parametrize(
    "data, match",
    [
        (shb()[:-4] + b"\0\0\0\0", "trailing length"),
        (b"\x0a\x0d\x0d\x0a" + b"\0" * 4 + b"\x11\x22\x33\x44", "byte-order"),
        (shb() + struct.pack("<II", 6, 13) + b"\0" * 5, "block length"),
        (shb() + struct.pack("<II", 6, 1 << 30), "block length"),
        (shb() + epb(0, 0, b"abc"), "unknown interface"),
        (shb() + spb(b"abc"), "without interface"),
        (shb() + _block(1, b"\0" * 4), "too short"),
        (shb() + idb(1) + _block(6, b"\0" * 8), "too short"),
        (shb() + idb(1) + _block(6, struct.pack("<IIIII", 0, 0, 0, 64, 64)), "overruns"),
        (
            shb()
            + _block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 2) + b"\0\0\0\0"),
            "if_tsresol",
        ),
        (shb() + _block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 2, 200)), "overruns"),
        (shb() + idb(1) + b"\x06\0\0", "truncated"),
        (_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 2, 0, -1)), "version"),
    ],
)
def test_pcapng_structure_errors(data: bytes, match: str) -> None:
    with pytest.raises(PcapError, match=match):
        list(read_udp(data))


# ---------------------------------------------------------------------------------------
# real captures: dumpcap in a private network namespace
# ---------------------------------------------------------------------------------------


def _dumpcap_capture(tmp_path: Path, iface: str, extra: list[str]) -> tuple[Path, list[bytes], int]:
    from tests.support.netns import NetnsBed, can_create_netns, wait_for

    ok, reason = can_create_netns()
    if not ok:
        pytest.skip(reason)
    if shutil.which("dumpcap") is None:
        pytest.skip("dumpcap not installed (apt-get install tshark)")
    out = tmp_path / ("cap.pcapng" if "-P" not in extra else "cap.pcap")
    port = 47000
    # The last payload exceeds the namespace's lo MTU (1280): real IPv4/IPv6 fragments.
    payloads = [b"kink %d " % i * (i + 1) for i in range(4)] + [bytes(range(256)) * 12]
    with NetnsBed("pcap") as bed:
        ns = bed.add_namespace("cap")
        bed.run(ns, ["ip", "link", "set", "lo", "mtu", "1280"])
        log = tmp_path / "dumpcap.log"
        with open(log, "wb") as fh:
            # No capture filter (BPF "udp port" misses non-first fragments); the namespace
            # carries nothing but our datagrams.
            cmd = ["dumpcap", "-i", iface, *extra, "-a", "duration:30", "-w", str(out)]
            proc = bed.popen(ns, cmd, stdout=fh, stderr=fh)
        wait_for(
            lambda: b"Capturing on" in log.read_bytes() or proc.poll() is not None,
            15,
            what="dumpcap",
        )
        if proc.poll() is not None:
            pytest.skip(f"dumpcap cannot capture here: {log.read_text()}")
        time.sleep(0.2)
        sender = "\n".join(
            [
                "import socket",
                f"p = {payloads!r}",
                "for fam, addr in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):",
                f"    r = socket.socket(fam, socket.SOCK_DGRAM); r.bind((addr, {port}))",
                "    s = socket.socket(fam, socket.SOCK_DGRAM)",
                f"    for x in p: s.sendto(x, (addr, {port}))",
                "    for x in p: assert r.recv(65536) == x",
            ]
        )
        bed.run(ns, [sys.executable, "-c", sender])
        time.sleep(0.3)
        bed.stop(proc, timeout=10, sig=signal.SIGINT)
    assert out.exists(), log.read_text()
    return out, payloads, port


@pytest.mark.parametrize(
    "iface, extra, linktype",
    [
        ("lo", [], LINKTYPE_ETHERNET),
        ("lo", ["-P"], LINKTYPE_ETHERNET),
        ("any", ["-y", "LINUX_SLL"], LINKTYPE_LINUX_SLL),
        ("any", ["-y", "LINUX_SLL2", "-P"], LINKTYPE_LINUX_SLL2),
    ],
)
def test_dumpcap_captures(tmp_path: Path, iface: str, extra: list[str], linktype: int) -> None:
    path, payloads, port = _dumpcap_capture(tmp_path, iface, extra)
    frames = list(read_frames(path))
    assert {f.linktype for f in frames} == {linktype}
    magic = path.read_bytes()[:4]
    assert (magic == b"\x0a\x0d\x0d\x0a") == ("-P" not in extra)
    stats = ReadStats()
    got = list(read_udp(path, {port}, stats=stats, strict=True))
    assert stats.truncated == 0 and stats.malformed == 0
    assert stats.reassembled == 2 and stats.incomplete == 0  # one v4 + one v6 datagram
    assert [d.payload for d in got] == payloads * 2
    assert {(d.src, d.dst) for d in got} == {("127.0.0.1", "127.0.0.1"), ("::1", "::1")}
    assert all(d.dport == port for d in got)
    times = [d.time for d in got]
    assert times == sorted(times) and abs(times[0] - time.time()) < 120
    if shutil.which("tshark"):
        res = subprocess.run(
            [
                "tshark",
                "-r",
                str(path),
                "-Y",
                "udp",
                "-T",
                "fields",
                "-e",
                "frame.number",
                "-e",
                "udp.payload",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        theirs = [line.split("\t") for line in res.stdout.splitlines() if line.strip()]
        assert [(int(n), bytes.fromhex(p)) for n, p in theirs] == [
            (d.frame, d.payload) for d in got
        ]


# ---------------------------------------------------------------------------------------
# fuzzing: any damage raises PcapError or decodes, nothing else
# ---------------------------------------------------------------------------------------


def _samples() -> list[bytes]:
    big = UdpDatagram(0, 0.0, "198.18.0.1", 910, "198.18.0.2", 910, b"q" * 2000)
    frags = ipv4_fragments(ip_of(big), 1480) + ipv6_fragments(ip_of(D6), 16)
    ng = b"".join(
        [
            shb(),
            idb(LINKTYPE_ETHERNET),
            idb(LINKTYPE_LINUX_SLL, tsresol=9),
            idb(LINKTYPE_NULL, tsresol=0x83),
            epb(0, 5, ethernet_frame(ip_of(D4), vlans=[1])),
            epb(1, 6, sll(ip_of(D6))),
            epb(2, 7, null(ip_of(D4), 2, "<")),
            spb(ethernet_frame(ip_of(D6))),
            shb(">"),
            idb(LINKTYPE_LINUX_SLL2, ">"),
            epb(0, 8, sll2(ip_of(D4)), ">"),
        ]
    )
    return [
        pcap_bytes([D4, D6, D_OTHER], linktype=LINKTYPE_ETHERNET),
        pcap_bytes([D4, D6], linktype=LINKTYPE_RAW, big_endian=True, nanosecond=True),
        pcap_frames_bytes([(0.0, f) for f in frags], linktype=LINKTYPE_RAW),
        ng,
    ]


SAMPLES = _samples()


def _consume(data: bytes, strict: bool) -> None:
    try:
        for d in read_udp(data, strict=strict):
            assert isinstance(d.payload, bytes)
            ipaddress.ip_address(d.src)
    except PcapError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(range(len(SAMPLES))),
    cut=st.integers(min_value=0, max_value=10_000),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=8),
    strict=st.booleans(),
)
def test_fuzz_mutations_only_raise_pcaperror(
    sample: int, cut: int, edits: list[tuple[int, int]], strict: bool
) -> None:
    data = bytearray(SAMPLES[sample])
    for pos, value in edits:
        data[pos % len(data)] = value
    _consume(bytes(data[: len(data) - cut % (len(data) + 1)]), strict)


@settings(max_examples=200, deadline=None)
@given(
    sample=st.sampled_from(range(len(SAMPLES))),
    pos=st.integers(min_value=0),
    junk=st.binary(max_size=64),
    delete=st.integers(min_value=0, max_value=64),
)
def test_fuzz_insertions_deletions(sample: int, pos: int, junk: bytes, delete: int) -> None:
    data = SAMPLES[sample]
    pos %= len(data) + 1
    _consume(data[:pos] + junk + data[pos + delete :], strict=False)


@given(
    st.binary(max_size=300),
    st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"]),
)
@settings(max_examples=300, deadline=None)
def test_fuzz_random_bodies(body: bytes, magic: bytes) -> None:
    _consume(magic + body, strict=True)


def test_module_has_no_socket_dependency() -> None:
    src = Path(pcap.__file__).read_text()
    assert "import socket" not in src
    assert socket  # the test itself may use sockets
