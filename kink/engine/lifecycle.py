"""The engine's own lifecycle: reconfiguration, orderly shutdown, persistence.

* Reconfigure (SIGHUP), per (peer, child) by name: a removed peer or child has its
  CREATEs in flight abandoned (a best-effort DELETE names the SPI we offered), its LARVAL
  pairs removed at once and its established pairs DELETEd with the peer *as configured
  before*; a child whose traffic selectors, mode or IPsec protocol changed has its pairs
  replaced now (a CREATE under the new policy; the old pair is DELETEd once the new one
  is up); other changes keep the pairs until their next rekey; "start" children without
  a pair are negotiated.
* Shutdown: nothing new starts (no CREATE, rekey, DPD, retry; CREATE commands from peers
  are dropped). With ``delete_sas`` the outbound SAs go at once and a DELETE per peer is
  sent and retransmitted; the inbound SAs go when their DELETE is answered or given up,
  and ``ShutdownDone`` follows the last one, at the latest at ``shutdown_deadline``.
* Persistence: ``export_state`` / ``import_state`` keep the pairs (timers re-based),
  their metadata (who negotiated them, for which user) and per-peer epochs and clock
  offsets. A user's pair comes back without its credentials handle: it is **not
  rekeyed** (neither as the user nor silently as the daemon identity): ``RekeySkipped``
  at its soft lifetime, ``SADeleted`` at its hard lifetime (the user reconnects).
"""

from __future__ import annotations

from typing import Any

from isakmp.events import DeleteStarted, NegotiationStarted, ShutdownDone
from isakmp.policy import traffic_changed
from isakmp.sadb import SAState
from isakmp.selectors import Selectors
from isakmp.timers import TimerHeap
from kink.config import EngineConfig

from .core import Timer
from .transactions import TransactionsMixin
from .txn import Kind, Txn, TxnState

__all__ = ["LifecycleMixin", "STATE_VERSION"]

STATE_VERSION = 1
_DONE = TxnState.DONE


class LifecycleMixin(TransactionsMixin):
    # ------------------------------------------------------------------ reconfigure

    def reconfigure(self, config: EngineConfig, now: float) -> list:
        """Apply a new policy (see the module docstring)."""
        out: list = []
        old_peers = dict(self._peers)
        old_cfgs = {n: ps.cfg for n, ps in old_peers.items()}
        self._apply_config(config)

        def gone(peer_name: str, child_name: str | None) -> bool:
            p = self._peers.get(peer_name)
            return p is None or (child_name is not None and p.cfg.child(child_name) is None)

        for t in list(self._txns.values()):
            if t.kind == Kind.CREATE and gone(t.peer.name, t.child.name):
                self._cancel_create(t, now, out, "child removed from the configuration")
            elif t.kind in (Kind.STATUS, Kind.GETTGT) and gone(t.peer.name, None):
                self._finish_txn(t)
        for t in self._waiting_txns():
            if gone(t.peer.name, t.child.name if t.child is not None else None) \
                    and t.kind != Kind.DELETE:
                t.state = _DONE  # ticket_result / the TGT reply will not start it
        lc = self.children
        doomed: dict[str, list] = {}
        for rec in list(self.sadb):
            if not gone(rec.peer, rec.child):
                continue
            if lc.meta(rec.id).deleting:
                continue  # a DELETE or its grace timer is already running
            if rec.state == SAState.LARVAL:
                lc.remove(rec.id, out, "policy removed")
            else:
                doomed.setdefault(rec.peer, []).append(rec)
        for name, recs in doomed.items():
            ps = self._peers.get(name) or old_peers.get(name)
            if ps is None:
                for r in recs:
                    lc.remove(r.id, out, "policy removed")
                continue
            out.append(DeleteStarted(name, None, len(recs), "policy removed"))
            self._start_delete(ps, recs, now, out, reason="policy removed")
        for p in self._peers.values():
            oc = old_cfgs.get(p.name)
            for ch in p.cfg.children:
                prev = oc.child(ch.name) if oc is not None else None
                if prev is None or prev == ch or not traffic_changed(prev, ch):
                    continue
                cur = [r for r in self._live(p.name, ch.name) if r.state == SAState.MATURE
                       and not lc.meta(r.id).orphaned]
                if cur:
                    out.append(NegotiationStarted(p.name, ch.name, True, "reconfigured"))
                    self._initiate_child(p, ch, now, out, user=lc.meta(cur[0].id).user,
                                         replaces=[r.id for r in cur], force=True)
        for p in self._peers.values():
            for ch in p.cfg.children:
                if self._child_start(p, ch) == "start" and not self._live(p.name, ch.name):
                    self._initiate_child(p, ch, now, out)
        self._changed(out)
        return out

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, now: float, delete_sas: bool) -> list:
        """Orderly stop (see the module docstring). ``delete_sas=False``: SAs stay
        installed (for a restart with the state file); ``ShutdownDone`` at once.
        ``delete_sas=True``: the driver keeps calling ``receive`` and ``handle_timers``
        (bounded: :meth:`shutdown_deadline`) so that the DELETEs are retransmitted.
        Calling ``shutdown`` again before that finishes at once: the remaining DELETEs are
        given up, every SA is removed."""
        out: list = []
        if self._stopping:
            if not self._shutdown_emitted:
                self._force_shutdown_done(now, out)
            return out
        self._stopping = True
        self.children.stop()
        self._shutdown_until = now + self._t_retrans + 2 * self.timers.retransmit
        self._shutdown_stats = {"answered": 0, "given_up": 0}
        keep = delete_sas
        for t in list(self._txns.values()):
            if keep and t.kind in (Kind.DELETE, Kind.GETTGT):
                continue
            if t.kind == Kind.CREATE:
                self._abort_create_local(t, out)
            self._finish_txn(t)
        for t in self._waiting_txns():
            if not (keep and t.kind == Kind.DELETE):
                t.state = _DONE
        self._acked.clear()
        if not keep:
            self._txns.clear()
            self._fetches.clear()
            self._fetch_keys.clear()
            self._tgt_waiters.clear()
            self._gettgt.clear()
            self._timers = TimerHeap()
            self._shutdown_finished(now, out)
            return out
        lc = self.children
        for p in self._peers.values():
            recs = [r for r in self.sadb.by_peer(p.name)
                    if r.state != SAState.LARVAL and not lc.meta(r.id).deleting]
            if recs:
                self._start_delete(p, recs, now, out, reason="shutdown")
        busy = {sa_id for t in self._delete_txns() for sa_id in t.sa_ids}
        for rec in list(self.sadb):
            if rec.id not in busy:
                lc.remove(rec.id, out, "shutdown")
        self._changed(out)
        self._timers.set((Timer.SHUTDOWN,), self._shutdown_until)
        self._maybe_shutdown_done(now, out)
        return out

    def shutdown_deadline(self, now: float) -> float | None:
        """After :meth:`shutdown` (delete_sas=True): when the driver may stop waiting for
        ``ShutdownDone`` (one full retransmission cycle plus a KDC round); None once it
        was emitted."""
        if not self._stopping or self._shutdown_emitted:
            return None
        return self._shutdown_until

    def _delete_txns(self) -> list[Txn]:
        ts = [t for t in self._txns.values() if t.kind == Kind.DELETE and t.state is not _DONE]
        ts.extend(t for t in self._waiting_txns() if t.kind == Kind.DELETE
                  and t.state is not _DONE)
        return ts

    def _maybe_shutdown_done(self, now: float, out: list) -> None:
        if not self._stopping or self._shutdown_emitted:
            return
        if now >= self._shutdown_until:
            self._force_shutdown_done(now, out)
        elif not self._delete_txns():
            for rec in list(self.sadb):
                self.children.remove(rec.id, out, "shutdown")
            self._shutdown_finished(now, out)

    def _force_shutdown_done(self, now: float, out: list) -> None:
        for t in self._delete_txns():
            self._shutdown_stats["given_up"] += 1
            self._finish_txn(t)
        for rec in list(self.sadb):
            self.children.remove(rec.id, out, "shutdown")
        self._shutdown_finished(now, out)

    def _shutdown_finished(self, now: float, out: list) -> None:
        self._shutdown_emitted = True
        self._txns.clear()
        self._timers = TimerHeap()
        self.children.clear_timers()
        st = self._shutdown_stats
        out.append(ShutdownDone(st["answered"], st["given_up"], len(self.sadb)))

    # ------------------------------------------------------------------ persistence

    def export_state(self, now: float, *, include_keys: bool = False) -> dict[str, Any]:
        sadb, meta = self.children.export_state(
            now, include_keys=include_keys,
            selectors_encoder=lambda s: s.to_json() if s is not None else None)
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "sadb": sadb,
            "meta": meta,
            "peers": {n: p.to_dict() for n, p in self._peers.items()},
        }

    def import_state(self, data: dict[str, Any], now: float) -> list:
        """Load a state file written by :meth:`export_state`; the SAs are assumed still
        installed (returns no InstallSA). Timers resume (see ``isakmp.childsa``), DPD of
        every peer with SAs is armed ``dpd`` seconds from ``now`` (silence before the
        restart is not counted). Transactions in flight are not persisted; the peers'
        epochs and clock offsets are."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported engine state version {data.get('version')!r}")
        self.children.import_state(data["sadb"], data.get("meta", {}), now,
                                   selectors_decoder=Selectors.from_json)
        for n, d in data.get("peers", {}).items():
            if n in self._peers:
                self._peers[n].load(d)
        for p in self._peers.values():
            if self.sadb.by_peer(p.name):
                if p.last_heard is None:
                    p.last_heard = now  # DPD counts silence from the restart on
                self._arm_dpd(p, now)
        return []
