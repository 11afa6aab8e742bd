"""The sans-I/O KINK protocol engine (RFC 4430): the facade over the exchanges.

See :mod:`kink.engine.api` for the driver contract. :class:`Engine` is the public API,
the receive pipeline's first steps and the timer dispatch; the exchanges live in one
module each and read top to bottom:

* ``create``       CREATE, initiator and responder (2-way, 3-way, KE/PFS, ACK)
* ``delete``       DELETE, initiator and responder
* ``status``       STATUS, epochs, dead peer detection
* ``gettgt``       GETTGT and user-to-user
* ``responder``    what every command goes through as responder (Kerberos, policy,
                   reply cache, errors)
* ``transactions`` what every command goes through as initiator (tickets,
                   retransmission, REPLY verification, skew and expired tickets)
* ``lifecycle``    reconfiguration, orderly shutdown, persistence

The IPsec side (pairs, installed directions, duplicates, superseded pairs, lifetimes,
rekey and delete timing) is the framework's child-SA lifecycle, ``isakmp.childsa``; the
engine turns its wants (rekey, delete) into KINK commands.

Receive pipeline (cheap checks first; an attacker must not make us do crypto): header
sanity (``wire.decode``) -> REPLY: XID lookup (``transactions``) / command: per-source
token bucket, Kerberos, Cksum, KINK_ENCRYPT, epoch, reply cache, ISAKMP and policy
(``responder``) -> the exchange. Every drop increments ``stats["dropped.<reason>"]``;
receive() never raises. Unauthenticated errors never delete state and never abort a
transaction.

ACQUIRE: the backend's peer/child (from the reqid) or the flow matched against the
children; one CREATE per child at a time (:meth:`Engine.acquire`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from isakmp.events import Address, DeleteDone, InternalError
from isakmp.selectors import Selectors, match_child
from kink import wire
from kink.config import EngineConfig
from kink.wire import KinkDecodeError, MessageType

from .core import Timer
from .delete import DeleteMixin
from .gettgt import GetTgtMixin
from .lifecycle import STATE_VERSION, LifecycleMixin
from .responder import ResponderMixin
from .status import StatusMixin

__all__ = ["Engine", "STATE_VERSION"]

_REPLY, _GETTGT = MessageType.REPLY, MessageType.GETTGT


class Engine(LifecycleMixin, DeleteMixin, StatusMixin, GetTgtMixin, ResponderMixin):
    """The KINK engine of one daemon (one identity, one epoch).

    ``config``: the policy (``kink.config.EngineConfig``); ``epoch``: our epoch
    (RFC 4430 §3.7; normally the POSIX start time); ``acceptor``: a
    :class:`kink.kerberos.acceptor.Acceptor` with our service keys and replay cache (the
    engine gives it our TGT keys for user-to-user); ``rng``: randomness for XIDs, SPIs,
    nonces, DH keys and lifetime jitter (``random.SystemRandom()`` by default; tests seed
    a ``random.Random``); ``local_address``: our KINK address, used for ``dynamic``
    selectors and ID payloads when the driver does not pass ``local=`` to
    :meth:`receive`.
    """

    def __init__(self, config: EngineConfig, *, epoch: int, acceptor: Any, rng: Any = None,
                 local_address: str | None = None) -> None:
        super().__init__(config, epoch=epoch, acceptor=acceptor, rng=rng,
                         local_address=local_address)

    # ------------------------------------------------------------------ queries

    def next_deadline(self) -> float | None:
        a = self._timers.next_deadline()
        b = self.children.next_deadline()
        if a is None:
            return b
        if b is None:
            return a
        return a if a < b else b

    def sas(self) -> list:
        return list(self.sadb)

    def sa_meta(self, sa_id: int) -> Any:
        """The lifecycle's record of an SA pair (``isakmp.childsa.PairMeta``) or None."""
        return self.children.meta(sa_id)

    def peer_states(self) -> list[dict[str, Any]]:
        busy: dict[str, int] = {}
        for t in self._txns.values():
            busy[t.peer.name] = busy.get(t.peer.name, 0) + 1
        out = []
        for p in self._peers.values():
            out.append({
                "name": p.name,
                "address": str(p.cfg.address),
                "principal": p.cfg.principal,
                "epochs": dict(p.epochs),
                "clock_offset": p.clock_offset,
                "last_heard": p.last_heard,
                "dead": p.dead,
                "sas": len(self.sadb.by_peer(p.name)),
                "transactions": busy.get(p.name, 0),
            })
        return out

    # ------------------------------------------------------------------ commands

    def start(self, now: float) -> list:
        """Initial effects: CREATE every child whose start policy is "start"."""
        out: list = []
        for p in self._peers.values():
            for ch in p.cfg.children:
                if self._child_start(p, ch) == "start":
                    self._initiate_child(p, ch, now, out)
        return out

    def initiate(self, peer: str, child: str | None, now: float, *,
                 user: Any = None) -> list:
        """CREATE the child SA(s) of a peer (``user``: credentials handle of a user)."""
        out: list = []
        p = self._peers.get(peer)
        if p is None:
            self._negotiation_failed(out, peer, child, "unknown-peer")
            return out
        if child is None:
            children = p.cfg.children
        else:
            ch = self._child_cfg.get((p.name, child))
            children = (ch,) if ch is not None else ()
        if not children:
            self._negotiation_failed(out, peer, child, "unknown-child")
            return out
        for ch in children:
            self._initiate_child(p, ch, now, out, user=user)
        return out

    def rekey(self, peer: str, child: str | None, now: float) -> list:
        """Create successors of the current SAs of a peer/child now (operator rekey)."""
        out: list = []
        p = self._peers.get(peer)
        if p is None:
            return out
        meta = self.children.meta
        for ch in p.cfg.children:
            if child is not None and ch.name != child:
                continue
            cur = self._live(p.name, ch.name)
            for r in cur:
                if meta(r.id).orphaned:
                    self._rekey_skipped(r, out)
            cur = [r for r in cur if not meta(r.id).orphaned]
            if cur:
                self._initiate_child(p, ch, now, out, user=meta(cur[0].id).user,
                                     replaces=[r.id for r in cur], force=True)
        return out

    def delete(self, peer: str, child: str | None, now: float, *,
               select: Callable[[Any], bool] | None = None) -> list:
        """DELETE the SAs of a peer (or of one of its children) with the peer.

        ``select``: only the pairs whose user handle (as given to ``initiate``; None for
        the daemon's own identity) it accepts."""
        out: list = []
        p = self._peers.get(peer)
        if p is None:
            return out
        recs = self.sadb.by_peer(p.name) if child is None else self.sadb.by_child(p.name, child)
        meta = self.children.meta
        recs = [r for r in recs if not meta(r.id).deleting
                and (select is None or select(meta(r.id).user))]
        if not recs:
            out.append(DeleteDone(p.name, child, 0, "requested", "no SA to delete"))
            return out
        self._start_delete(p, recs, now, out, reason="requested")
        return out

    def status(self, peer: str, now: float) -> list:
        """STATUS probe (liveness and epoch)."""
        out: list = []
        p = self._peers.get(peer)
        if p is None:
            return out
        self._start_status(p, now, out, dpd=False)
        return out

    def acquire(self, selector: Any, now: float) -> list:
        """Kernel ACQUIRE: CREATE the child SA the triggering traffic needs.

        ``selector`` is an ``isakmp.sadb.AcquireRequest``. When the backend filled in
        ``peer``/``child`` (isakmp.kernel.xfrm does from the policy's reqid) that child is
        negotiated. Otherwise the flow in ``.selectors`` is matched against the children:
        an xfrm ``Acquire`` (its ``traffic_selectors()``; peers whose address is its
        ``daddr`` first), a :class:`Selectors` or a ``(local, remote)`` pair of
        ``TrafficSelector``. The first child whose selectors (``dynamic`` resolved to the
        two KINK addresses) cover the flow is negotiated. Repeated ACQUIREs while a CREATE
        of that child is in flight, or while its SA is up, add nothing (one CREATE).
        """
        out: list = []
        self.stats["acquires"] += 1
        peer = getattr(selector, "peer", None)
        child = getattr(selector, "child", None)
        if peer is not None and child is not None:
            return self.initiate(str(peer), child, now)
        flow = _acquire_flow(getattr(selector, "selectors", selector))
        if flow is None:
            if peer is not None:
                return self.initiate(str(peer), None, now)
            self.stats["acquires.unmatched"] += 1
            self._negotiation_failed(out, None, None, "acquire-no-policy")
            return out
        local, remote = flow
        daddr = getattr(getattr(selector, "selectors", None), "daddr", None)
        peers = list(self._peers.values()) if peer is None else \
            [p for p in (self._peers.get(str(peer)),) if p is not None]
        if daddr is not None:
            d = str(daddr)
            peers.sort(key=lambda p: p.cfg.address.host != d)
        local_host = self._local_host(None)
        for p in peers:
            ch = match_child(p.cfg.children, local, remote, local_host, p.cfg.address.host)
            if ch is not None:
                self._initiate_child(p, ch, now, out)
                return out
        self.stats["acquires.unmatched"] += 1
        self._negotiation_failed(out, None, None, "acquire-no-policy", f"{local} <-> {remote}")
        return out

    def kernel_expire(self, spi: int, hard: bool, now: float, *,
                      inbound: bool | None = None) -> list:
        """Kernel EXPIRE of one SA direction (byte or time limit).

        ``spi`` is our inbound SPI (``inbound=True``), the peer's SPI of an outbound SA
        (``inbound=False``) or unknown (``None``: inbound SPIs first, then outbound ones).
        Soft: the initiator of the SA rekeys it (the responder does nothing, RFC 4430
        §3.6). Hard: both directions are removed; a child with start = "start" is
        negotiated again by its initiator side.
        """
        out: list = []
        effects = self.children.kernel_expire(spi, hard, now, inbound)
        if effects is None:
            self.stats["kernel_expire.unknown"] += 1
            return out
        self._absorb(effects, now, out)
        return out

    # ------------------------------------------------------------------ timers

    def handle_timers(self, now: float) -> list:
        out: list = []
        try:
            self._absorb(self.children.handle_timers(now), now, out)
            for key in self._timers.pop_due(now):
                self._on_timer(key, now, out)
        except Exception as e:  # pragma: no cover - never raise into the driver
            self.stats["errors.internal"] += 1
            out.append(InternalError("timers", f"{type(e).__name__}: {e}"))
        if self._stopping:
            self._maybe_shutdown_done(now, out)
        return out

    def _on_timer(self, key: tuple, now: float, out: list) -> None:
        kind = key[0]
        if self._stopping and kind is not Timer.RETRANSMIT:
            return  # (SHUTDOWN,): _maybe_shutdown_done after the timers
        if kind is Timer.RETRANSMIT:
            self._on_retransmit(key[1], now, out)
        elif kind is Timer.ACK_WAIT:
            self._on_ack_wait(key[1], now, out)
        elif kind is Timer.ACKED:
            self._acked.pop(key[1], None)
        elif kind is Timer.DPD:
            self._on_dpd(key[1], now, out)
        elif kind is Timer.RETRY:
            self._on_retry(key[1], key[2], now, out)
        elif kind is Timer.REINIT:
            self._on_reinit(key[1], now, out)

    # ------------------------------------------------------------------ receive

    def receive(self, data: bytes, addr: Address, now: float, *,
                local: Address | None = None) -> list:
        """A datagram from ``addr`` (to our ``local`` address, if the driver knows it)."""
        out: list = []
        self.stats["rx.datagrams"] += 1
        try:
            try:
                msg = wire.decode(data)
            except KinkDecodeError as e:
                self._drop(e.reason)
                self._decode_error(e, addr, now, out)
                return out
            t = msg.type
            if t == _REPLY:
                self._on_reply(msg, addr, now, out)
            elif t == _GETTGT:
                self._on_gettgt(msg, addr, now, out)
            else:
                self._on_command(msg, addr, now, local, out)
        except Exception as e:  # never raise into the driver; counted and reported
            self.stats["errors.internal"] += 1
            self._drop("internal-error")
            out.append(InternalError("receive", f"{type(e).__name__}: {e}"))
        if self._stopping:
            self._maybe_shutdown_done(now, out)
        return out


def _acquire_flow(sel: Any) -> tuple[Any, Any] | None:
    """(local, remote) TrafficSelector of an ACQUIRE's flow, or None."""
    if sel is None:
        return None
    ts = getattr(sel, "traffic_selectors", None)
    if callable(ts):
        try:
            local, remote = ts()
        except (ValueError, TypeError, AttributeError):
            return None
        return local, remote
    if isinstance(sel, Selectors):
        return sel.local, sel.remote
    if isinstance(sel, tuple) and len(sel) == 2:
        return sel[0], sel[1]
    return None
