"""A thin asyncio/UDP driver of the sans-I/O IKEv1 engine, for interop tests.

Run inside a network namespace (``python -m tests.support.ikev1peer CONFIG.json``). It binds
UDP 500 and 4500 on the configured address, feeds datagrams, timers and commands to
:class:`ikev1.engine.IkeV1Engine` and applies its effects (datagrams only: SAs are not
installed in a kernel). Commands are JSON lines on stdin::

    {"cmd": "initiate", "peer": "gw", "child": "net"}
    {"cmd": "rekey", "peer": "gw", "child": "net"}
    {"cmd": "delete", "peer": "gw", "child": "net"}       (child null: every SA + ISAKMP SA)
    {"cmd": "sas"}                                        -> {"sas": [...]}
    {"cmd": "quit"}

Every event goes to stdout as one JSON line ``{"event": kind, "type": class, ...}``
(SA events carry SPIs and, for the test, the keys in hex).

CONFIG.json: ``{"local": "198.18.1.1", "peers": [{"name", "address", "psk",
"ike_proposals", "children": [{"name", "local_ts", "remote_ts", "mode",
"esp_proposals"}]}], "backoff": [initial, maximum, tries]}`` (backoff optional)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from ikev1.engine import EngineConfig, IkeV1Engine, PeerConfig
from isakmp.events import Send
from isakmp.policy import ChildConfig
from isakmp.selectors import parse_selector
from isakmp.timers import Backoff


def _config(d: dict) -> EngineConfig:
    peers = []
    for p in d["peers"]:
        children = tuple(
            ChildConfig(c["name"], tuple(parse_selector(t) for t in c["local_ts"]),
                        tuple(parse_selector(t) for t in c["remote_ts"]),
                        mode=c.get("mode", "tunnel"),
                        lifetime=float(c.get("lifetime", 3600.0)),
                        rekey_time=float(c.get("rekey_time", 3240.0)),
                        esp_proposals=tuple(c.get("esp_proposals", ["aes128-sha256"])))
            for c in p.get("children", []))
        peers.append(PeerConfig(p["name"], p["address"], p["psk"].encode(),
                                tuple(p.get("ike_proposals", ["aes128-sha256-modp2048"])),
                                children, p.get("local_id"), p.get("remote_id"),
                                dpd=p.get("dpd"), ike_lifetime=int(p.get("ike_lifetime", 10800))))
    kw = {}
    if "backoff" in d:
        kw["backoff"] = Backoff(*d["backoff"])
    return EngineConfig(d["local"], tuple(peers), **kw)


def _sa(rec: Any) -> dict:
    return {"peer": str(rec.peer), "child": rec.child, "spi_in": f"{rec.spi_in:08x}",
            "spi_out": f"{rec.spi_out:08x}" if rec.spi_out is not None else None,
            "mode": int(rec.mode), "transform": rec.transform.keyword,
            "enc_in": rec.keys_in.encryption.reveal_hex() if rec.keys_in else None,
            "int_in": rec.keys_in.integrity.reveal_hex() if rec.keys_in else None,
            "enc_out": rec.keys_out.encryption.reveal_hex() if rec.keys_out else None,
            "int_out": rec.keys_out.integrity.reveal_hex() if rec.keys_out else None}


def _event(e: Any) -> dict:
    d: dict[str, Any] = {"event": getattr(e, "kind", None), "type": type(e).__name__}
    for name in ("peer", "child", "reason", "detail", "notify", "role", "remote_id",
                 "cookies", "nat"):
        v = getattr(e, name, None)
        if v is not None:
            d[name] = v if isinstance(v, str | bool | int) else str(v)
    if hasattr(e, "sa") and hasattr(e.sa, "spi_in"):
        d["sa"] = _sa(e.sa)
    if hasattr(e, "direction"):
        d["direction"] = str(e.direction)
    return d


class Driver:
    def __init__(self, cfg: EngineConfig) -> None:
        self.engine = IkeV1Engine(cfg)
        self.local = cfg.local_address
        self.transports: dict[int, asyncio.DatagramTransport] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()
        self.done = asyncio.Event()

    def now(self) -> float:
        return time.monotonic()

    def emit(self, d: dict) -> None:
        sys.stdout.write(json.dumps(d) + "\n")
        sys.stdout.flush()

    def apply(self, effects: list) -> None:
        for e in effects:
            if isinstance(e, Send):
                port = e.local[1] if e.local else 500
                self.transports[port].sendto(e.data, e.addr)
            elif type(e).__name__ != "StateChanged":
                self.emit(_event(e))
        if self.timer is not None:
            self.timer.cancel()
        t = self.engine.next_deadline()
        if t is not None:
            self.timer = self.loop.call_later(max(0.0, t - self.now()), self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        self.apply(self.engine.handle_timers(self.now()))

    def command(self, line: str) -> None:
        c = json.loads(line)
        cmd = c["cmd"]
        if cmd == "initiate":
            self.apply(self.engine.initiate(c["peer"], c.get("child"), self.now()))
        elif cmd == "rekey":
            self.apply(self.engine.rekey(c["peer"], c.get("child"), self.now()))
        elif cmd == "delete":
            self.apply(self.engine.delete(c["peer"], c.get("child"), self.now()))
        elif cmd == "sas":
            self.emit({"sas": [_sa(r) for r in self.engine.sas()],
                       "stats": dict(self.engine.stats)})
        elif cmd == "quit":
            self.done.set()


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, driver: Driver, port: int) -> None:
        self.driver, self.port = driver, port

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        d = self.driver
        d.apply(d.engine.receive(data, addr[:2], d.now(), local=(d.local, self.port)))


async def main(path: str) -> None:
    with open(path) as f:
        cfg = _config(json.load(f))
    d = Driver(cfg)
    loop = asyncio.get_running_loop()
    for port in (500, 4500):
        t, _ = await loop.create_datagram_endpoint(lambda p=port: _Proto(d, p),
                                                   local_addr=(cfg.local_address, port))
        d.transports[port] = t
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    d.emit({"ready": True})

    async def commands() -> None:
        while not d.done.is_set():
            line = await reader.readline()
            if not line:
                d.done.set()
                return
            if line.strip():
                d.command(line.decode())

    task = asyncio.create_task(commands())
    await d.done.wait()
    task.cancel()
    for t in d.transports.values():
        t.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
