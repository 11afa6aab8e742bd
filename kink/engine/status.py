"""STATUS, epochs and dead peer detection (RFC 4430 §3.5, §3.7).

* STATUS is always answered; the REPLY proves liveness and carries the epoch. Notify
  payloads in a STATUS are reported (``NotifyReceived``).
* Epochs: a changed epoch (both non-zero; 0 = unknown, as racoon2) in an authenticated
  AP-REQ or AP-REP means the peer lost its state: every established pair created with
  that principal is deleted (``PeerRebooted``), its pending 3-way CREATEs are dropped,
  and the children with start = "start" and those whose pairs we had initiated are
  negotiated again.
* Dead peer detection: after ``PeerConfig.dpd`` seconds without an authenticated message
  from a peer that has pairs with us, a STATUS is sent; if all ``max_tries`` transmissions
  go unanswered the peer is dead: its pairs are deleted locally (``PeerDead``) and a
  best-effort DELETE tells it, should it be alive after all (lossy path).
"""

from __future__ import annotations

from isakmp.events import NotifyReceived, PeerAlive, PeerDead
from isakmp.payloads import Notification
from isakmp.sadb import SAState
from kink import wire

from .api import PeerRebooted, StatusDone
from .core import Timer
from .peers import PeerState
from .transactions import TransactionsMixin
from .txn import Kind, Txn

__all__ = ["StatusMixin"]


class StatusMixin(TransactionsMixin):
    # -- STATUS ---------------------------------------------------------------------------

    def _start_status(self, peer: PeerState, now: float, out: list, dpd: bool) -> None:
        if self._stopping:
            return
        t = Txn(Kind.STATUS, peer, started=now, dpd=dpd)
        if dpd:
            peer.dpd_xid = 1  # a DPD probe is in progress
        self._start_txn(t, now, out)

    def _status_answered(self, t: Txn, epoch: int, now: float, out: list) -> None:
        out.append(StatusDone(t.peer.name, epoch))
        self._arm_dpd(t.peer, now)

    def _status_failed(self, t: Txn, now: float, out: list, reason: str, detail: str) -> None:
        if reason == "timeout":
            self._peer_dead(t.peer, now, out)
        else:
            out.append(StatusDone(t.peer.name, None, reason, detail))

    def _resp_status(self, msg: wire.KinkMessage, peer: PeerState, out: list) -> list:
        pls, err = self._isakmp_chain(msg)
        if err is not None:
            return err
        for p in pls:
            if type(p) is Notification:
                out.append(NotifyReceived(peer.name, None, int(p.notify_type), "status"))
        return []

    # -- epochs ---------------------------------------------------------------------------

    def _check_epoch(self, peer: PeerState, principal: str, epoch: int, now: float,
                     out: list) -> None:
        if not epoch:
            return
        old = peer.epochs.get(principal)
        if old == epoch:
            return
        peer.epochs[principal] = epoch
        self._changed(out)
        if old is None or old == 0:
            return
        # RFC 4430 §3.7: the peer lost its state; pairs created with that principal are gone
        self.stats["peers.rebooted"] += 1
        lc = self.children
        victims = [r for r in self.sadb.by_peer(peer.name)
                   if r.state != SAState.LARVAL and lc.meta(r.id).remote_id == principal]
        again = self._reinit.setdefault(peer.name, {})
        for r in victims:
            if r.initiator and r.replaced_by is None:
                again.setdefault(r.child, lc.meta(r.id).user)
            lc.remove(r.id, out, "peer rebooted")
        for k, e in self._cache.pop_matching(lambda k: k[2] == principal):
            self._cache_gone(k, e, now, out)
        out.append(PeerRebooted(peer.name, principal, old, epoch, len(victims)))
        self._timers.set((Timer.REINIT, peer.name), now)

    def _on_reinit(self, peer_name: str, now: float, out: list) -> None:
        peer = self._peers.get(peer_name)
        if peer is None:
            return
        again = self._reinit.pop(peer.name, {})
        for ch in peer.cfg.children:
            if self._live(peer.name, ch.name):
                continue
            if self._child_start(peer, ch) == "start":
                self._initiate_child(peer, ch, now, out)
            elif ch.name in again:  # we had it up (operator, ACQUIRE): keep it up
                self._initiate_child(peer, ch, now, out, user=again[ch.name])

    # -- liveness -------------------------------------------------------------------------

    def _heard(self, peer: PeerState, now: float, out: list) -> None:
        peer.last_heard = now
        if peer.dead:
            peer.dead = False
            out.append(PeerAlive(peer.name))

    def _arm_dpd(self, peer: PeerState, now: float) -> None:
        if peer.cfg.dpd and (Timer.DPD, peer.name) not in self._timers:
            base = peer.last_heard if peer.last_heard is not None else now
            self._timers.set((Timer.DPD, peer.name), base + peer.cfg.dpd)

    def _on_dpd(self, peer_name: str, now: float, out: list) -> None:
        peer = self._peers.get(peer_name)
        if peer is None or not peer.cfg.dpd or not self.sadb.by_peer(peer.name):
            return
        last = peer.last_heard if peer.last_heard is not None else now
        if now - last < peer.cfg.dpd:
            self._timers.set((Timer.DPD, peer.name), last + peer.cfg.dpd)
            return
        if peer.dpd_xid is None:
            self.stats["dpd.probes"] += 1
            self._start_status(peer, now, out, dpd=True)
        self._timers.set((Timer.DPD, peer.name), now + peer.cfg.dpd)

    def _peer_dead(self, peer: PeerState, now: float, out: list) -> None:
        peer.dead = True
        recs = self.sadb.by_peer(peer.name)
        by_proto: dict[int, list[bytes]] = {}
        for r in recs:
            if r.state != SAState.LARVAL:
                by_proto.setdefault(int(r.protocol), []).append(r.spi_in.to_bytes(4, "big"))
            self.children.remove(r.id, out, "peer dead")
        if by_proto:
            self._notify_delete(peer, by_proto, now, out, "peer-dead")
        out.append(PeerDead(peer.name, len(recs)))
        self._changed(out)
        for ch in peer.cfg.children:
            if self._child_start(peer, ch) == "start":
                self._schedule_retry(peer, ch, now)
