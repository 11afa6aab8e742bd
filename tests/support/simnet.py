"""A tiny in-memory network driver for sans-I/O KINK engines (tests only).

* a virtual clock (starts near the real time, the KDC's, so tickets are valid);
  every node may run with its own clock offset;
* datagrams are delivered after a random delay, and may be dropped,
  duplicated or reordered with seeded randomness, per direction;
* FetchTicket / FetchTGT are satisfied synchronously by the node's credentials:
  the real ``kink.kerberos.credentials.Credentials`` (real KDC) or the
  ``LocalCredentials`` of tests/support/localkrb.py (tickets made in memory with
  the same Kerberos code, no KDC); no mocks either way;
* InstallSA / RemoveSA land in a per-node in-memory backend that refuses
  duplicates, so a test can see exactly what a kernel would hold.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kink.engine import (
    Event,
    FetchTGT,
    FetchTicket,
    InstallSA,
    RemoveSA,
    Send,
    StateChanged,
)


class BackendError(AssertionError):
    pass


@dataclass
class MemoryBackend:
    """What the kernel would hold: inbound SAs by SPI, outbound SAs by (peer, SPI)."""

    inbound: dict[int, Any] = field(default_factory=dict)
    outbound: dict[tuple, Any] = field(default_factory=dict)
    installs: int = 0
    removes: int = 0

    def apply(self, eff: Any) -> None:
        sa = eff.sa
        if type(eff) is InstallSA:
            self.installs += 1
            if eff.direction == "in":
                if sa.spi_in in self.inbound and not eff.replace:
                    raise BackendError(f"inbound SPI {sa.spi_in:08x} installed twice")
                self.inbound[sa.spi_in] = sa
            else:
                k = (sa.peer, sa.spi_out)
                if k in self.outbound and not eff.replace:
                    raise BackendError(f"outbound SPI {sa.spi_out:08x} installed twice")
                self.outbound[k] = sa
        else:
            self.removes += 1
            if eff.direction == "in":
                if self.inbound.pop(sa.spi_in, None) is None:
                    raise BackendError(f"removing unknown inbound SPI {sa.spi_in:08x}")
            else:
                if self.outbound.pop((sa.peer, sa.spi_out), None) is None:
                    raise BackendError(f"removing unknown outbound SPI {sa.spi_out}")


@dataclass
class Node:
    name: str
    addr: tuple[str, int]
    engine: Any
    creds: Any  # (Local)Credentials of the daemon identity
    users: dict[Any, Any] = field(default_factory=dict)  # user handle -> (Local)Credentials
    offset: float = 0.0  # this node's clock error
    backend: MemoryBackend = field(default_factory=MemoryBackend)
    events: list[Event] = field(default_factory=list)
    sent: list[tuple[float, bytes, tuple]] = field(default_factory=list)
    state_changes: int = 0
    fetches: int = 0
    up: bool = True

    def kinds(self) -> list[str]:
        return [str(e.kind) for e in self.events]


class SimNet:
    def __init__(
        self,
        start: float,
        seed: int = 0,
        *,
        loss: float = 0.0,
        dup: float = 0.0,
        delay: tuple[float, float] = (0.005, 0.02),
        reorder: float = 0.0,
    ) -> None:
        self.now = start
        self.rng = random.Random(seed)
        self.loss, self.dup, self.delay, self.reorder = loss, dup, delay, reorder
        self.nodes: dict[tuple[str, int], Node] = {}
        self._q: list[tuple[float, int, tuple, tuple, bytes]] = []
        self._seq = 0
        self.delivered = 0
        self.dropped = 0
        #: optional filter(src_node, dst_addr, data) -> False to drop a datagram
        self.filter: Callable[[Node, tuple, bytes], bool] | None = None
        self.tap: list[tuple[float, tuple, tuple, bytes]] = []

    def add(self, node: Node) -> Node:
        self.nodes[node.addr] = node
        return node

    def t(self, node: Node) -> float:
        return self.now + node.offset

    # -- effects -------------------------------------------------------------

    def apply(self, node: Node, effects: list) -> None:
        work = list(effects)
        while work:
            eff = work.pop(0)
            tp = type(eff)
            if tp is Send:
                self._send(node, eff)
            elif tp is InstallSA or tp is RemoveSA:
                node.backend.apply(eff)
            elif tp is StateChanged:
                node.state_changes += 1
            elif tp is FetchTicket:
                node.fetches += 1
                work.extend(self._ticket(node, eff))
            elif tp is FetchTGT:
                node.fetches += 1
                try:
                    tgt, err = node.creds.get_tgt(self.t(node)), None
                except Exception as e:  # noqa: BLE001
                    tgt, err = None, e
                work.extend(node.engine.tgt_result(eff.request_id, tgt, err, self.t(node)))
            elif isinstance(eff, Event):
                node.events.append(eff)
            else:  # pragma: no cover
                raise AssertionError(f"unknown effect {eff!r}")

    def _ticket(self, node: Node, eff: FetchTicket) -> list:
        creds = node.creds if eff.user is None else node.users[eff.user]
        now = self.t(node)
        try:
            if eff.u2u_tgt is not None:
                tk = creds.get_u2u_ticket(eff.server, eff.u2u_tgt, now=now,
                                          force_new=eff.force_new)
            else:
                tk = creds.get_service_ticket(eff.server, now=now, force_new=eff.force_new)
            err = None
        except Exception as e:  # noqa: BLE001
            tk, err = None, e
        return node.engine.ticket_result(eff.request_id, tk, err, now)

    def _send(self, node: Node, eff: Send) -> None:
        node.sent.append((self.now, eff.data, eff.addr))
        self.tap.append((self.now, node.addr, eff.addr, eff.data))
        if self.filter is not None and not self.filter(node, eff.addr, eff.data):
            self.dropped += 1
            return
        copies = 1
        r = self.rng
        if r.random() < self.loss:
            copies = 0
            self.dropped += 1
        elif r.random() < self.dup:
            copies = 2
        for _ in range(copies):
            d = r.uniform(*self.delay)
            if r.random() < self.reorder:
                d += r.uniform(0.05, 0.5)
            self.inject(eff.data, node.addr, eff.addr, d)

    def inject(self, data: bytes, src: tuple, dst: tuple, delay: float = 0.0) -> None:
        self._seq += 1
        heapq.heappush(self._q, (self.now + delay, self._seq, src, dst, data))

    # -- driving -------------------------------------------------------------

    def call(self, node: Node, fn: str, *args: Any, **kw: Any) -> list:
        eff = getattr(node.engine, fn)(*args, **kw)
        self.apply(node, eff)
        return eff

    def _next(self) -> tuple[float, Any]:
        best: tuple[float, Any] = (float("inf"), None)
        if self._q:
            best = (self._q[0][0], "q")
        for n in self.nodes.values():
            if not n.up:
                continue
            d = n.engine.next_deadline()
            if d is not None and d - n.offset < best[0]:
                best = (max(d - n.offset, self.now), n)
        return best

    def run(self, duration: float, *, until: Callable[[], bool] | None = None) -> None:
        end = self.now + duration
        for _ in range(2_000_000):
            if until is not None and until():
                return
            when, what = self._next()
            if what is None or when > end:
                self.now = end
                return
            self.now = max(self.now, when)
            if what == "q":
                _, _, src, dst, data = heapq.heappop(self._q)
                node = self.nodes.get(dst)
                if node is None or not node.up:
                    continue
                self.delivered += 1
                self.apply(node, node.engine.receive(data, src, self.t(node), local=dst))
            else:
                self.apply(what, what.engine.handle_timers(self.t(what)))
        raise AssertionError("simulation does not make progress")

    def settle(self, duration: float = 120.0) -> None:
        self.run(duration)


# --- building engines against the test realm ---------------------------------------------

H1, H2 = "host1.kink.test", "host2.kink.test"
A1, A2 = ("198.18.0.1", 910), ("198.18.0.2", 910)


def child(name: str = "c", proposals=("aes128-sha256",), **kw: Any):
    from kinkd.config import ChildConfig, TrafficSelector

    kw.setdefault("local_ts", (TrafficSelector(None),))
    kw.setdefault("remote_ts", (TrafficSelector(None),))
    return ChildConfig(name=name, esp_proposals=tuple(proposals), **kw)


def peer(name: str, addr: tuple, principal: str, children=None, **kw: Any):
    from kinkd.config import Endpoint, PeerConfig

    return PeerConfig(name=name, address=Endpoint(addr[0], addr[1]), principal=principal,
                      children=tuple(children if children is not None else (child(),)), **kw)


def config(principal: str, peers, *, timers=None, limits=None, **daemon_kw: Any):
    from kinkd.config import Config, DaemonConfig, Limits, Timers

    d = DaemonConfig(principal=principal, keytab=None, state_file=None, **daemon_kw)
    return Config(daemon=d, peers=tuple(peers), timers=timers or Timers(),
                  limits=limits or Limits())


def make_engine(cfg, *, keys, start: float, seed: int, epoch: int | None = None,
                skew: float = 300.0, local: str | None = None):
    from kink.engine import Engine
    from kink.kerberos.acceptor import Acceptor
    from kink.kerberos.replay import ReplayCache

    acc = Acceptor(keys, ReplayCache(skew=skew, start_time=start - 5), skew=skew)
    return Engine(cfg, epoch=epoch if epoch is not None else int(start) + seed, acceptor=acc,
                  rng=random.Random(seed), local_address=local)
