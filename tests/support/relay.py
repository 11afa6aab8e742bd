"""A userspace Ethernet hub with impairments: the middle of the fault test bed.

Run inside the bed's hub namespace, one AF_PACKET socket per port interface::

    python -m tests.support.relay --params P.json --stats S.json IF1 IF2 ...

Every frame received on one port is forwarded to the port its destination MAC
was learned on (flooded to all other ports while unknown), so the hosts share
one transparent Ethernet segment: they see each other's real addresses, and
the KDC (on another port) is reached through it too. UDP datagrams whose
source or destination port is in ``ports`` (KINK, 910) are impaired, seeded
and reproducibly for a given arrival order:

* ``dup``: percent of datagrams sent twice (the copy ``dup_gap_ms`` later, at most)
* ``reorder``: percent of datagrams held back ``reorder_ms`` (0.5x..1.5x), so
  datagrams sent after them overtake them
* ``delay_ms`` + uniform ``jitter_ms``: added to every impaired datagram

Loss is not done here (the bed uses nftables on the hosts' interfaces).
``P.json`` holds those keys plus ``seed``; SIGHUP re-reads it (the random
generator is re-seeded). ``S.json`` receives counters (written atomically at
most every 100 ms while traffic flows, and at exit): ``frames``, ``impaired``,
``duplicated``, ``reordered``, ``send_errors``.

IPv4 UDP checksums are set to 0 (none) and TCP checksums recomputed before
forwarding: frames captured on a veth may carry a partial checksum (offload)
that the receiving kernel would reject. Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
DEFAULTS = {"seed": 0, "dup": 0.0, "dup_gap_ms": 5.0, "reorder": 0.0, "reorder_ms": 20.0,
            "delay_ms": 0.0, "jitter_ms": 0.0, "ports": [910]}


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def fix_checksums(frame: bytearray) -> tuple[int, int, int] | None:
    """Repair L4 checksums of an IPv4 frame; return (protocol, sport, dport) or None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, 16)[0]
    proto = frame[23]
    l4 = 14 + ihl
    end = min(len(frame), 14 + total)
    if (struct.unpack_from("!H", frame, 20)[0] & 0x3FFF) or end - l4 < 8:
        return None  # fragments: leave alone
    sport, dport = struct.unpack_from("!HH", frame, l4)
    if proto == 17:
        frame[l4 + 6:l4 + 8] = b"\0\0"
    elif proto == 6 and end - l4 >= 20:
        frame[l4 + 16:l4 + 18] = b"\0\0"
        pseudo = bytes(frame[26:34]) + struct.pack("!BBH", 0, 6, end - l4)
        c = (~_fold(_sum16(pseudo) + _sum16(bytes(frame[l4:end])))) & 0xFFFF
        struct.pack_into("!H", frame, l4 + 16, c)
    return proto, sport, dport


class Hub:
    def __init__(self, ifnames: list[str], params_path: str, stats_path: str) -> None:
        self.params_path, self.stats_path = params_path, stats_path
        self.socks: dict[str, socket.socket] = {}
        for name in ifnames:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((name, 0))
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            self.socks[name] = s
        self.macs: dict[bytes, str] = {}
        self.stats = {"frames": 0, "impaired": 0, "duplicated": 0, "reordered": 0,
                      "send_errors": 0}
        self.dirty = True
        self.load_params()

    def load_params(self) -> None:
        p = dict(DEFAULTS)
        try:
            with open(self.params_path) as f:
                p.update(json.load(f))
        except FileNotFoundError:
            pass
        self.p = p
        self.ports = frozenset(int(x) for x in p["ports"])
        self.rng = random.Random(p["seed"])

    def write_stats(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        tmp = self.stats_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({**self.stats, "time": time.time()}, f)
        os.replace(tmp, self.stats_path)

    def send(self, frame: bytes, ingress: str) -> None:
        dst = frame[0:6]
        port = self.macs.get(dst) if not dst[0] & 1 else None
        targets = [port] if port is not None and port != ingress else \
            [n for n in self.socks if n != ingress]
        for n in targets:
            try:
                self.socks[n].send(frame)
            except OSError:
                self.stats["send_errors"] += 1

    def on_readable(self, name: str) -> None:
        s = self.socks[name]
        loop = asyncio.get_running_loop()
        for _ in range(256):
            try:
                data, addr = s.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                self.stats["send_errors"] += 1
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            frame = bytearray(data)
            self.stats["frames"] += 1
            self.dirty = True
            src = bytes(frame[6:12])
            if not src[0] & 1:
                self.macs[src] = name
            l4 = fix_checksums(frame)
            out = bytes(frame)
            if l4 is None or l4[0] != 17 or not (l4[1] in self.ports or l4[2] in self.ports):
                self.send(out, name)
                continue
            p, rng = self.p, self.rng
            self.stats["impaired"] += 1
            delay = (p["delay_ms"] + p["jitter_ms"] * rng.random()) / 1000.0
            if rng.random() * 100 < p["reorder"]:
                delay += p["reorder_ms"] * (0.5 + rng.random()) / 1000.0
                self.stats["reordered"] += 1
            copies = [delay]
            if rng.random() * 100 < p["dup"]:
                copies.append(delay + p["dup_gap_ms"] * rng.random() / 1000.0)
                self.stats["duplicated"] += 1
            for d in copies:
                if d <= 0:
                    self.send(out, name)
                else:
                    loop.call_later(d, self.send, out, name)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.load_params)
        for name in self.socks:
            loop.add_reader(self.socks[name].fileno(), self.on_readable, name)
        self.write_stats()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                pass
            self.write_stats()
        self.dirty = True
        self.write_stats()


def main(argv: list[str] | None = None) -> int:
    a = argparse.ArgumentParser(description="userspace Ethernet hub with impairments")
    a.add_argument("--params", required=True)
    a.add_argument("--stats", required=True)
    a.add_argument("interfaces", nargs="+")
    args = a.parse_args(argv)
    hub = Hub(args.interfaces, args.params, args.stats)
    asyncio.run(hub.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
