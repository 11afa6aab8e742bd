"""GETTGT and user-to-user (RFC 4430 §3.1, §3.7.1).

A peer configured with ``user_to_user`` has no keytab entry of its own: we ask it for its
TGT (GETTGT, answered with KINK_TGT_REP), then the daemon fetches a user-to-user ticket
for it (``FetchTicket(u2u_tgt=...)``). Commands to that peer wait for the TGT; one
GETTGT per peer is in flight.

As responder we hand out our own TGT (unless ``user_to_user_responder`` is off:
KINK_U2UDENIED); it is fetched from the KDC (``FetchTGT``) when missing or about to
expire, and its keys are given to the acceptor so that user-to-user tickets decrypt.

A REPLY carrying only KINK_TGT_REP to a user-to-user command means the responder has a
new TGT: a new user-to-user ticket is fetched and the command retried once; the old
ticket is kept until then and no SA is touched (that REPLY is unauthenticated).
"""

from __future__ import annotations

from typing import Any

from isakmp.events import Address, NegotiationFailed
from kink import wire
from kink.kerberos.acceptor import TGTKey, make_krb_error
from kink.kerberos.errors import KrbErrorCode
from kink.wire import (
    ErrorCode,
    ErrorPayload,
    KrbErrorPayload,
    MessageType,
    TgtRepPayload,
    TgtReqPayload,
)

from .api import FetchTGT
from .transactions import TransactionsMixin
from .txn import Txn, TxnState

__all__ = ["GetTgtMixin"]

_REPLY = MessageType.REPLY


class GetTgtMixin(TransactionsMixin):
    # -- responder --------------------------------------------------------------------------

    def _on_gettgt(self, msg: wire.KinkMessage, addr: Address, now: float, out: list) -> None:
        host = addr[0]
        if not self._rl.allow(host, now):
            self._drop("rate-limited")
            return
        self._rl.charge(host, now)
        req = msg.find(TgtReqPayload)
        if req is None:
            self._drop("no-tgt-req")
            return
        me = self.config.daemon.principal
        if not self.config.daemon.user_to_user_responder:
            self.stats["errors.sent.kink-u2udenied"] += 1
            self._send(out, wire.encode(_REPLY, msg.xid, [ErrorPayload(ErrorCode.U2UDENIED)]),
                       addr)
            return
        if req.princ_name != me:
            err = make_krb_error(KrbErrorCode.KRB_AP_ERR_NOT_US, now, sname=me)
            self.stats["errors.sent.krb-not-us"] += 1
            self._send(out, wire.encode(_REPLY, msg.xid, [KrbErrorPayload(err)]), addr)
            return
        tgt = self._tgt
        if tgt is None or tgt.endtime <= now + self._t_retrans:
            self._want_tgt(out)
            if tgt is None:
                self._drop("no-tgt")
                return
        self._send(out, wire.encode(_REPLY, msg.xid, [TgtRepPayload(bytes(tgt.ticket_bytes))]),
                   addr)

    def _want_tgt(self, out: list) -> None:
        if self._tgt_rid is None:
            self._tgt_rid = self._next_rid
            self._next_rid += 1
            self.stats["kdc.requests"] += 1
            out.append(FetchTGT(self._tgt_rid))

    def tgt_result(self, request_id: int, tgt: Any, error: Any, now: float) -> list:
        """Answer to ``FetchTGT``: our TGT, or the error that prevented it."""
        out: list = []
        if request_id != self._tgt_rid:
            return out
        self._tgt_rid = None
        if error is not None or tgt is None:
            out.append(NegotiationFailed(None, None, "kdc-tgt", str(error)))
            return out
        self._tgt = tgt
        k = TGTKey.from_ticket(tgt)
        # keep the previous keys too: U2U tickets made for an older TGT stay valid
        self._tgt_keys = [k] + [x for x in self._tgt_keys if x.key != k.key][:3]
        self.acceptor.set_tgt_keys(list(self._tgt_keys))
        return out

    # -- initiator ---------------------------------------------------------------------------

    def _on_tgt_reply(self, t: Txn, msg: wire.KinkMessage, now: float, out: list) -> None:
        peer = t.peer
        rep = msg.find(TgtRepPayload)
        if rep is None:
            err = msg.find(ErrorPayload)
            if err is not None and err.code == ErrorCode.U2UDENIED:
                self._fail(t, now, out, "u2u-denied", "")
                return
            self._unauth_reply(t, msg, now, out)
            return
        if not self._plausible_tgt(rep.ticket):
            self._drop("bad-tgt")
            return
        self._finish_txn(t)
        self._gettgt.pop(peer.name, None)
        peer.peer_tgt = bytes(rep.ticket)
        peer.peer_tgt_at = now
        for w in self._tgt_waiters.pop(peer.name, []):
            if w.state is not TxnState.DONE:
                self._start_txn(w, now, out)

    def _gettgt_failed(self, t: Txn, now: float, out: list, reason: str, detail: str) -> None:
        self._gettgt.pop(t.peer.name, None)
        for w in self._tgt_waiters.pop(t.peer.name, []):
            w.xid = 0
            self._fail(w, now, out, reason, f"GETTGT failed{': ' + detail if detail else ''}")
