"""What the kernel tests look at: captured frames and the kernel's own view of its SAs.

Deliberately independent of kinkd: a tiny classic-pcap reader (tcpdump -w, Ethernet),
and a parser of iproute2's ``ip -s xfrm state`` / ``ip xfrm policy`` text.
"""

from __future__ import annotations

import re
import struct
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    proto: int  # 50 = ESP, 17 = UDP, 1 = ICMP, 58 = ICMPv6, 4/41 = IP in IP
    spi: int | None = None  # ESP
    sport: int | None = None
    dport: int | None = None
    payload: bytes = b""  # everything after the IP header
    encap: bool = False  # ESP in UDP (RFC 3948, NAT-T port 4500): spi is set, proto is 17


NATT_PORT = 4500
IKE_PORTS = (500, NATT_PORT)


def _ip(raw: bytes) -> str:
    import ipaddress

    return str(ipaddress.ip_address(raw))


def parse_ip(data: bytes) -> Packet | None:
    if not data:
        return None
    v = data[0] >> 4
    if v == 4 and len(data) >= 20:
        ihl = (data[0] & 0x0F) * 4
        proto, src, dst = data[9], _ip(data[12:16]), _ip(data[16:20])
        body = data[ihl:]
    elif v == 6 and len(data) >= 40:
        proto, src, dst = data[6], _ip(data[8:24]), _ip(data[24:40])
        body = data[40:]
    else:
        return None
    if proto == 50 and len(body) >= 8:
        return Packet(src, dst, proto, spi=struct.unpack("!I", body[:4])[0], payload=body)
    if proto in (6, 17) and len(body) >= 4:
        sp, dp = struct.unpack("!HH", body[:4])
        udp = body[8:]
        if proto == 17 and NATT_PORT in (sp, dp) and len(udp) >= 8 and udp[:4] != bytes(4):
            # ESP in UDP: a non-zero SPI where IKE has its non-ESP marker (RFC 3948 §2.2)
            return Packet(src, dst, proto, spi=struct.unpack("!I", udp[:4])[0], sport=sp,
                          dport=dp, payload=body, encap=True)
        return Packet(src, dst, proto, sport=sp, dport=dp, payload=body)
    return Packet(src, dst, proto, payload=body)


def read_pcap(path: Path) -> list[Packet]:
    """The IPv4/IPv6 packets of a classic pcap file with Ethernet frames."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    end = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(end + "I", data[20:24])[0]
    out: list[Packet] = []
    pos = 24
    while pos + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(end + "IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + caplen]
        pos += 16 + caplen
        if linktype == 1:  # Ethernet
            etype, off = struct.unpack("!H", frame[12:14])[0], 14
            if etype == 0x8100:
                etype, off = struct.unpack("!H", frame[16:18])[0], 18
            if etype not in (0x0800, 0x86DD):
                continue
            ip = frame[off:]
        elif linktype in (101, 12):  # raw IP
            ip = frame
        else:
            raise ValueError(f"unsupported pcap link type {linktype}")
        p = parse_ip(ip)
        if p is not None:
            out.append(p)
    return out


@dataclass
class Capture:
    """The packets between two addresses, sorted by what they are."""

    packets: list[Packet]
    a: str
    b: str
    control_port: int = 910

    def between(self) -> list[Packet]:
        ends = {self.a, self.b}
        return [p for p in self.packets if {p.src, p.dst} == ends]

    def esp(self) -> list[Packet]:
        """ESP frames, UDP-encapsulated ones (NAT-T) included."""
        return [p for p in self.between() if p.spi is not None]

    def esp_by_spi(self) -> Counter:
        return Counter(p.spi for p in self.esp())

    def control(self) -> list[Packet]:
        """The key exchanges' own messages: KINK (UDP to/from the control port) and IKE
        (UDP 500, and 4500 with the non-ESP marker or as a NAT keepalive)."""
        return [p for p in self.between() if p.proto == 17 and p.spi is None
                and (self.control_port in (p.sport, p.dport)
                     or p.sport in IKE_PORTS and p.dport in IKE_PORTS)]

    def cleartext(self) -> list[Packet]:
        """Anything between the two hosts that is neither ESP nor a key exchange's."""
        ctl = set(map(id, self.control()))
        return [p for p in self.between() if p.spi is None and id(p) not in ctl]

    def summary(self) -> Counter:
        """How many packets of each (src, dst, proto, spi or ports) kind were seen."""
        return Counter((p.src, p.dst, p.proto, hex(p.spi) if p.spi is not None else
                        (p.sport, p.dport)) for p in self.packets)

    def contains(self, marker: bytes) -> int:
        return sum(1 for p in self.packets if marker in p.payload)


# --- iproute2's view ---------------------------------------------------------------------------


@dataclass
class KernelSA:
    src: str
    dst: str
    proto: str
    spi: int
    reqid: int
    mode: str
    algorithms: dict[str, tuple[str, str, int | None]] = field(default_factory=dict)
    # kind (enc/auth/auth-trunc/aead) -> (name, key hex, bits)
    bytes: int = 0
    packets: int = 0
    replay_window: int | None = None
    replay: int = 0
    integrity_failed: int = 0
    encap: tuple[int, int] | None = None  # ESP in UDP: (sport, dport)
    text: str = ""


def ip_netns(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "ip", *args], check=True,
                          capture_output=True, text=True, timeout=30).stdout


def xfrm_states(ns: str) -> list[KernelSA]:
    """``ip -s xfrm state`` of namespace ``ns``, parsed."""
    text = ip_netns(ns, "-s", "xfrm", "state")
    out: list[KernelSA] = []
    for block in re.split(r"\n(?=src )", text.strip()):
        if not block.startswith("src "):
            continue
        m = re.match(r"src (\S+) dst (\S+)\s+proto (\S+) spi (0x[0-9a-f]+)\S* reqid (\d+)\S* mode (\S+)",
                     block)
        if not m:
            continue
        sa = KernelSA(m[1], m[2], m[3], int(m[4], 16), int(m[5]), m[6], text=block)
        for am in re.finditer(r"^\s*(enc|auth|auth-trunc|aead) (\S+) (0x[0-9a-f]+)(?: \(\d+ bits\))?(?: (\d+))?",
                              block, re.M):
            sa.algorithms[am[1]] = (am[2], am[3][2:], int(am[4]) if am[4] else None)
        cm = re.search(r"lifetime current:\s*\n\s*(\d+)\(bytes\), (\d+)\(packets\)", block)
        if cm:
            sa.bytes, sa.packets = int(cm[1]), int(cm[2])
        em = re.search(r"encap type espinudp sport (\d+) dport (\d+)", block)
        if em:
            sa.encap = (int(em[1]), int(em[2]))
        sm = re.search(r"stats:\s*\n\s*replay-window (\d+) replay (\d+) failed (\d+)", block)
        if sm:
            sa.replay_window, sa.replay, sa.integrity_failed = map(int, sm.groups())
        out.append(sa)
    return out


def xfrm_policies(ns: str, sockets: bool = False) -> str:
    """``ip xfrm policy``; without the per-socket ones (kinkd's bypass) unless ``sockets``."""
    text = ip_netns(ns, "xfrm", "policy")
    blocks = re.split(r"\n(?=src )", text.strip())
    return "\n".join(b for b in blocks if b and (sockets or "\tsocket " not in b))


def xfrm_stat(ns: str) -> dict[str, int]:
    """/proc/net/xfrm_stat of the namespace (the kernel's IPsec error counters)."""
    text = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/xfrm_stat"],
                          check=True, capture_output=True, text=True, timeout=30).stdout
    return {k: int(v) for k, v in (line.split() for line in text.splitlines() if line.strip())}
