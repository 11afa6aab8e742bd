"""State and helpers shared by the KINK engine's exchange modules.

:class:`EngineCore` holds everything the exchanges (``create``, ``delete``, ``status``,
``gettgt``, ``responder``, ``transactions``, ``lifecycle``) read and change: the policy,
the child-SA lifecycle (``isakmp.childsa``), the transactions we initiated, the reply
cache, the per-peer state and the timers. The exchanges are mixins of
:class:`kink.engine.engine.Engine`; each reads top to bottom in its own module.
"""

from __future__ import annotations

import random as _random
from enum import IntEnum
from typing import Any

from isakmp.childsa import ChildSAs, DeleteWanted, RekeyWanted
from isakmp.events import (
    Address,
    RekeySkipped,
    SADeleted,
    Send,
    StateChanged,
)
from isakmp.policy import ChildConfig, child_policy
from isakmp.proposals import SelectionCache
from isakmp.ratelimit import RateLimiter
from isakmp.replycache import ReplyCache
from isakmp.sadb import SADB
from isakmp.selectors import compile_children, match_compiled
from isakmp.timers import TimerHeap
from kink.config import EngineConfig

from .api import Counters
from .peers import PeerState
from .txn import Txn

__all__ = ["EngineCore", "NONCE_SIZE", "Timer"]

NONCE_SIZE = 32  # RFC 2409 §5: 8..256 octets


class Timer(IntEnum):
    """The engine's timer kinds (keys are ``(Timer, ...)`` tuples)."""

    RETRANSMIT = 1  # (RETRANSMIT, xid): next transmission of a command we sent
    ACK_WAIT = 2  # (ACK_WAIT, cache key): responder retransmits a REPLY that wants an ACK
    ACKED = 3  # (ACKED, xid): forget a CREATE we ACKed (re-ACK retransmitted REPLYs)
    DPD = 4  # (DPD, peer): liveness check
    RETRY = 5  # (RETRY, peer, child): negotiate a child again after a failure
    REINIT = 6  # (REINIT, peer): re-create children after the peer rebooted
    SHUTDOWN = 7  # (SHUTDOWN,): the orderly stop's deadline


class EngineCore:
    """Shared state of the engine (see :class:`kink.engine.engine.Engine`)."""

    def __init__(self, config: EngineConfig, *, epoch: int, acceptor: Any, rng: Any = None,
                 local_address: str | None = None) -> None:
        self.epoch = int(epoch) & 0xFFFFFFFF
        self.acceptor = acceptor
        self.rng = rng if rng is not None else _random.SystemRandom()
        self.local_address = local_address
        self.stats = Counters()
        timers = config.timers
        self.sadb = SADB(max_sas=config.limits.max_sas, rng=self.rng)
        self.children = ChildSAs(self.sadb, delete_grace=timers.delete_grace,
                                 supersede_wait=0.0, stats=self.stats)
        self._timers = TimerHeap()
        self._txns: dict[int, Txn] = {}
        self._acked: dict[int, Txn] = {}
        self._fetches: dict[int, tuple[tuple, list[Txn]]] = {}
        self._fetch_keys: dict[tuple, int] = {}
        self._next_rid = 1
        self._tgt: Any = None  # our TGT (ServiceTicket) for GETTGT / U2U
        self._tgt_keys: list = []
        self._tgt_rid: int | None = None
        self._gettgt: dict[str, Txn] = {}
        self._tgt_waiters: dict[str, list[Txn]] = {}
        self._peers: dict[str, PeerState] = {}
        #: children we had initiated with a peer that rebooted: renegotiate (child -> user)
        self._reinit: dict[str, dict[str, Any]] = {}
        self._stopping = False  # shutdown() was called
        #: the CREATE in progress per (peer, child, user key): one at a time
        self._creating: dict[tuple, Txn] = {}
        self._shutdown_emitted = False
        self._shutdown_stats = {"answered": 0, "given_up": 0}
        self._shutdown_until = 0.0
        self._cache: ReplyCache | None = None
        #: 3-way CREATEs answered and waiting for the ACK, per initiator principal and in all
        self._half_open: dict[str, int] = {}
        self._half_open_total = 0
        self._rl: RateLimiter | None = None
        self._apply_config(config)

    # ------------------------------------------------------------------ config

    def _apply_config(self, config: EngineConfig) -> None:
        self.config = config
        self.timers = config.timers
        lim = config.limits
        old = self._peers
        self._peers = {}
        for pc in config.peers:
            ps = old.get(pc.name)
            if ps is None:
                ps = PeerState(pc.name, pc)
            else:
                ps.cfg = pc
            self._peers[pc.name] = ps
        self._by_host: dict[str, list[PeerState]] = {}
        self._by_principal: dict[str, list[PeerState]] = {}
        self._policies: dict[tuple[str, str], Any] = {}
        #: responder: proposal selection memoized per (policy, offer without SPIs)
        self._selections = SelectionCache()
        self._child_cfg: dict[tuple[str, str], ChildConfig] = {}
        # (peer, local host, remote host) -> (children, compile_children(...))
        self._compiled: dict[tuple, tuple] = {}
        #: a peer may roam: any source may speak for it (see responder._peer_for)
        self._roamers = any(ps.cfg.roam for ps in self._peers.values())
        for ps in self._peers.values():
            self._by_host.setdefault(ps.cfg.address.host, []).append(ps)
            for pr in (ps.cfg.principal, *ps.cfg.allow_principals):
                self._by_principal.setdefault(pr, []).append(ps)
            for ch in ps.cfg.children:
                self._policies[(ps.name, ch.name)] = child_policy(ch)
                self._child_cfg[(ps.name, ch.name)] = ch
        if self._cache is None:
            self._cache = ReplyCache(self.timers.reply_cache, max(1024, 4 * lim.max_transactions))
            self._rl = RateLimiter(lim.unauth_rate, lim.unauth_burst, lim.max_sources)
        else:
            self._cache.ttl = self.timers.reply_cache
            self._rl.configure(lim.unauth_rate, lim.unauth_burst)
        self._backoff = self.timers.backoff
        self._t_retrans = self._backoff.full_cycle()
        # a rekeying initiator DELETEs the old pair delete_grace after the REPLY and
        # retransmits for one cycle: a responder waits that long for it (isakmp.childsa)
        self.children.configure(delete_grace=self.timers.delete_grace,
                                supersede_wait=self.timers.delete_grace + self._t_retrans + 1.0)

    # ------------------------------------------------------------------ helpers

    def _peer_addr(self, peer: PeerState) -> Address:
        return (peer.cfg.address.host, peer.cfg.address.port)

    def _send(self, out: list, data: bytes, addr: Address) -> None:
        self.stats["tx.datagrams"] += 1
        out.append(Send(data, addr))

    def _drop(self, reason: str) -> None:
        self.stats["dropped." + reason] += 1

    def _new_xid(self) -> int:
        getrandbits = self.rng.getrandbits
        while True:
            x = getrandbits(32)
            if x and x not in self._txns and x not in self._acked:
                return x

    def _nonce(self) -> bytes:
        return self.rng.getrandbits(NONCE_SIZE * 8).to_bytes(NONCE_SIZE, "big")

    def _child_start(self, peer: PeerState, child: ChildConfig) -> str:
        return child.start if child.start is not None else peer.cfg.start

    def _local_host(self, local: Address | None) -> str | None:
        if local is not None and local[0] not in ("0.0.0.0", "::", ""):
            return local[0]
        if self.local_address is not None:
            return self.local_address
        for ep in self.config.daemon.listen:
            if ep.host not in ("0.0.0.0", "::"):
                return ep.host
        return None

    def _match_child(self, peer: PeerState, local_host: str | None, remote_host: str | None,
                     local_key: tuple, remote_key: tuple) -> ChildConfig | None:
        """``match_child`` of the peer's children on precomputed selector keys."""
        children = peer.cfg.children
        ck = (peer.name, local_host, remote_host)
        c = self._compiled.get(ck)
        if c is None or c[0] is not children:
            if len(self._compiled) >= 4096:
                self._compiled.clear()
            c = self._compiled[ck] = (children, compile_children(children, local_host,
                                                                 remote_host))
        return match_compiled(c[1], local_key, remote_key)

    def _changed(self, out: list) -> None:
        if not out or type(out[-1]) is not StateChanged:
            out.append(StateChanged())

    def _live(self, peer: str, child: str) -> list:
        return self.children.live(peer, child)

    def _absorb(self, effects: list, now: float, out: list) -> None:
        """Pass the lifecycle's effects and events on, acting on its wants."""
        for e in effects:
            t = type(e)
            if t is DeleteWanted:
                self._on_delete_wanted(e, now, out)
            elif t is RekeyWanted:
                self._on_rekey_wanted(e, now, out)
            elif t is StateChanged:
                self._changed(out)
            else:
                out.append(e)
                if t is SADeleted:
                    self._on_sa_gone(e, now, out)

    # implemented by the exchange mixins
    def _on_delete_wanted(self, want: DeleteWanted, now: float, out: list) -> None:
        raise NotImplementedError

    def _on_rekey_wanted(self, want: RekeyWanted, now: float, out: list) -> None:
        raise NotImplementedError

    def _on_sa_gone(self, ev: SADeleted, now: float, out: list) -> None:
        raise NotImplementedError

    def _rekey_skipped(self, rec: Any, out: list) -> None:
        """A user's SA whose credentials handle did not survive a restart: it is not
        rekeyed (not as the user, whose ccache we no longer know, and never silently as
        the daemon identity); it runs until its hard lifetime."""
        self.stats["rekeys.skipped"] += 1
        out.append(RekeySkipped(rec, self.children.meta(rec.id).owner))
