"""Traffic for the kernel tests, run inside a namespace: ``python traffic.py MODE ...``.

* ``echo --port P [--family 4|6]``: a UDP echo server (runs until killed);
* ``udp --to ADDR --port P --count N [--rate R] [--until-file F]``: send N datagrams at
  R per second to the echo server (or until F exists), print
  ``{"sent": N, "received": M, "lost": [...]}``;
* ``ping --to ADDR --count N``: ICMP/ICMPv6 echo over a raw socket, same JSON;
* ``forge-esp --to ADDR --spi SPI --count N``: N ESP packets with that SPI and random
  contents (an attacker's or a corrupted packet), sent in the clear past this host's own
  IPsec policies (a per-socket bypass, as kinkd's own sockets have).

Each datagram carries a sequence number and the payload marker, so a capture can be
searched for the cleartext.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time


def _family(addr: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


def echo(port: int, family: int) -> None:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(65535)
        s.sendto(data, addr)


def _collect(s: socket.socket, parse, outstanding: set[int], until: float,
             final: bool = False) -> None:
    """Read replies until ``until`` (the next send is due), or, when ``final``, until
    every reply is in."""
    while time.monotonic() < until and (outstanding or not final):
        r, _, _ = select.select([s], [], [], max(0.0, until - time.monotonic()))
        if not r:
            break
        data = s.recv(65535)
        seq = parse(data)
        if seq is not None:
            outstanding.discard(seq)


def udp(to: str, port: int, count: int, rate: float, payload: str, wait: float,
        src: str | None = None, until_file: str | None = None) -> dict:
    s = socket.socket(_family(to), socket.SOCK_DGRAM)
    if src:
        s.bind((src, 0))
    s.connect((to, port))
    outstanding: set[int] = set()
    errors = 0
    start = time.monotonic()

    def parse(data: bytes) -> int | None:
        return int(data[:8]) if data[:8].isdigit() else None

    for i in range(count):
        due = start + i / rate
        _collect(s, parse, outstanding, due)
        if until_file and i % 20 == 0 and os.path.exists(until_file):
            count = i
            break
        try:
            s.send(b"%08d " % i + payload.encode())
            outstanding.add(i)
        except OSError:
            errors += 1
    _collect(s, parse, outstanding, time.monotonic() + wait, final=True)
    return {"sent": count - errors, "send_errors": errors, "received": count - errors
            - len(outstanding), "lost": sorted(outstanding),
            "seconds": round(time.monotonic() - start, 3)}


def ping(to: str, count: int, rate: float, payload: str, wait: float,
         src: str | None = None) -> dict:
    v6 = _family(to) == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    s = socket.socket(_family(to), socket.SOCK_RAW, proto)
    if src:
        s.bind((src, 0))
    ident = os.getpid() & 0xFFFF
    req, rep = (128, 129) if v6 else (8, 0)
    outstanding: set[int] = set()
    errors = 0
    start = time.monotonic()

    def parse(data: bytes) -> int | None:
        if not v6:
            data = data[(data[0] & 0x0F) * 4:]  # raw IPv4 sockets deliver the IP header
        if len(data) >= 8 and data[0] == rep:
            i, seq = struct.unpack("!HH", data[4:8])
            if i == ident:
                return seq
        return None

    body = payload.encode()
    for i in range(count):
        _collect(s, parse, outstanding, start + i / rate)
        msg = struct.pack("!BBHHH", req, 0, 0, ident, i) + body
        if not v6:  # the kernel computes ICMPv6 checksums itself
            msg = msg[:2] + struct.pack("!H", _checksum(msg)) + msg[4:]
        try:
            s.sendto(msg, (to, 0))
            outstanding.add(i)
        except OSError:
            errors += 1
    _collect(s, parse, outstanding, time.monotonic() + wait, final=True)
    return {"sent": count - errors, "send_errors": errors,
            "received": count - errors - len(outstanding), "lost": sorted(outstanding),
            "seconds": round(time.monotonic() - start, 3)}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def forge_esp(to: str, spi: int, count: int, seq: int) -> dict:
    """ESP packets that can only fail the receiver's integrity check (RFC 4303 header,
    then 64 random octets: IV, ciphertext and ICV of no key)."""
    from isakmp.kernel.xfrm import bypass_socket

    s = socket.socket(_family(to), socket.SOCK_RAW, 50)
    bypass_socket(s)
    for i in range(count):
        s.sendto(struct.pack("!II", spi, seq + i) + os.urandom(64), (to, 0))
    return {"sent": count, "spi": spi, "first_seq": seq}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("echo", "udp", "ping", "forge-esp"))
    ap.add_argument("--spi", type=lambda v: int(v, 0), help="forge-esp: the SPI")
    ap.add_argument("--seq", type=int, default=1 << 20, help="forge-esp: first sequence number")
    ap.add_argument("--to")
    ap.add_argument("--src", help="source address to bind")
    ap.add_argument("--until-file", help="udp: stop sending once this file exists")
    ap.add_argument("--port", type=int, default=7777)
    ap.add_argument("--family", type=int, default=6, help="echo: 6 = dual-stack")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--payload", default="CLEARTEXT-MARKER")
    ap.add_argument("--wait", type=float, default=2.0, help="seconds to wait for late replies")
    a = ap.parse_args()
    if a.mode == "echo":
        echo(a.port, socket.AF_INET6 if a.family == 6 else socket.AF_INET)
        return 0
    if a.mode == "forge-esp":
        out = forge_esp(a.to, a.spi, a.count, a.seq)
    elif a.mode == "udp":
        out = udp(a.to, a.port, a.count, a.rate, a.payload, a.wait, a.src, a.until_file)
    else:
        out = ping(a.to, a.count, a.rate, a.payload, a.wait, a.src)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
