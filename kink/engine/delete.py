"""DELETE (RFC 4430 §3.4): removing SA pairs with the peer.

Initiator: the outbound SAs go at once, the DELETE lists our inbound SPIs, the inbound SAs
go ``delete_grace`` after the REPLY (packets in flight still arrive), or at once when the
DELETE is given up. Responder: outbound at once, inbound after ``delete_grace``; the REPLY
lists our inbound SPIs of the deleted pairs; an unknown SPI gets Notify INVALID-SPI, the
SPI of a pair created by another principal AUTHENTICATION-FAILED (as racoon2 does). A
"start" child deleted by the peer is negotiated again (like strongSwan's
``close_action = start``) unless a successor is already up.

Best-effort DELETEs name SPIs without tracking pairs (after a CREATE timed out, a larval
pair the initiator never ACKed, a peer declared dead, a superseded pair): a peer that
holds nothing answers INVALID-SPI.
"""

from __future__ import annotations

from typing import Any

from isakmp.childsa import DeleteWanted
from isakmp.doi import NotifyType
from isakmp.events import DeleteDone, RequestRefused
from isakmp.payloads import Delete, Notification
from kink import wire
from kink.kerberos.acceptor import AcceptedRequest
from kink.wire import IsakmpPayload

from .peers import PeerState, user_key
from .transactions import TransactionsMixin
from .txn import Kind, Txn

__all__ = ["DeleteMixin"]


class DeleteMixin(TransactionsMixin):
    def _start_delete(self, peer: PeerState, recs: list, now: float, out: list,
                      reason: str) -> None:
        """DELETE these pairs with the peer (see the module docstring)."""
        ids, by_proto, user = self.children.begin_delete(recs, out,
                                                         again=reason == "shutdown")
        if not ids:
            return
        isa = IsakmpPayload.from_payloads([Delete(p, s) for p, s in by_proto.items()])
        t = Txn(Kind.DELETE, peer, started=now, isakmp=isa, sa_ids=ids, reason=reason,
                user=user, ukey=user_key(user))
        self._start_txn(t, now, out)

    def _notify_delete(self, peer: PeerState, by_proto: dict[int, list[bytes]], now: float,
                       out: list, reason: str, user: Any = None) -> None:
        """A best-effort DELETE naming SPIs we no longer track."""
        isa = IsakmpPayload.from_payloads([Delete(p, s) for p, s in by_proto.items()])
        self._start_txn(Txn(Kind.DELETE, peer, started=now, isakmp=isa, reason=reason,
                            user=user, ukey=user_key(user)), now, out)

    def _on_delete_wanted(self, want: DeleteWanted, now: float, out: list) -> None:
        peer = self._peers.get(want.peer)
        if peer is None:
            return
        if want.notify_only:
            by_proto: dict[int, list[bytes]] = {}
            for r in want.sa:
                by_proto.setdefault(int(r.protocol), []).append(r.spi_in.to_bytes(4, "big"))
            self._notify_delete(peer, by_proto, now, out, want.reason)
        else:
            self._start_delete(peer, list(want.sa), now, out, reason=want.reason)

    def _delete_done(self, t: Txn, now: float, out: list, problem: str) -> None:
        """Our DELETE was answered (``problem`` empty) or given up."""
        if self._stopping:
            self._shutdown_stats["given_up" if problem else "answered"] += 1
        n = self.children.delete_done(t.sa_ids, now, out,
                                      grace=not problem and not self._stopping)
        out.append(DeleteDone(t.peer.name, None, n, t.reason, problem))
        self._changed(out)

    def _resp_delete(self, msg: wire.KinkMessage, acc: AcceptedRequest, peer: PeerState,
                     now: float, out: list) -> list:
        pls, err = self._isakmp_chain(msg)
        if err is not None:
            return err
        client = acc.client
        lc = self.children
        reply: list = []
        notes: list = []
        for d in pls:
            if type(d) is not Delete:
                continue
            ours = []
            for spi_b in d.spis:
                spi = int.from_bytes(spi_b, "big")
                rec = self.sadb.by_spi_out(d.protocol_id, spi, peer.name)
                if rec is None:
                    notes.append(Notification(NotifyType.INVALID_SPI, d.protocol_id, spi_b))
                    continue
                m = lc.meta(rec.id)
                if client != m.remote_id and client != peer.cfg.principal:
                    notes.append(Notification(NotifyType.AUTHENTICATION_FAILED, d.protocol_id,
                                              spi_b))
                    self._refusal_event(out, peer.name, rec.child, client, "foreign-sa",
                                        m.remote_id)
                    continue
                ours.append(rec.spi_in.to_bytes(4, "big"))
                lc.local_delete(rec, now, out, "deleted by peer")
                ch = peer.cfg.child(rec.child)
                if ch is not None and self._child_start(peer, ch) == "start":
                    # keep "start" children up; the retry does nothing if a successor
                    # (rekey, collision winner) is live
                    self._schedule_retry(peer, ch, now)
            if ours:
                reply.append(Delete(d.protocol_id, ours))
        reply.extend(notes)
        if not reply:
            return []
        return [IsakmpPayload.from_payloads(reply)]

    def _refusal_event(self, out: list, peer: str, child: str | None, principal: str,
                       reason: str, detail: str) -> None:
        out.append(RequestRefused(peer, child, principal, reason, "AUTHENTICATION_FAILED",
                                  detail))
