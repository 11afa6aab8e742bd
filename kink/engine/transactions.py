"""The initiator's machinery common to every command (RFC 4430 §3.3, §3.5, §4).

A command we initiate (CREATE, DELETE, STATUS, GETTGT: a :class:`~kink.engine.txn.Txn`)
goes ``NEW -> [TGT (GETTGT, user-to-user)] -> TICKET (FetchTicket) -> SENT -> DONE``.

* Tickets: the daemon fetches them off the event loop (``FetchTicket``); concurrent
  commands to the same peer share one request. The *same* ticket is used for every
  retransmission, so the KEYMAT of a CREATE cannot change.
* Transmission: each (re)transmission carries a fresh authenticator (a new AP-REQ, hence
  a new Cksum and KINK_ENCRYPT confounder); the (ctime, cusec) of each is remembered
  since a REPLY may answer any of them. Back-off: ``isakmp.timers.Backoff``.
* REPLY: matched by XID and source address, then AP-REP (against every authenticator
  sent), Cksum, KINK_ENCRYPT, epoch. A REPLY without AP-REP is unauthenticated and never
  aborts the transaction: it keeps retransmitting and the last such error is reported on
  timeout (RFC 4430 §3.5 leaves unprotected errors advisory).
* Clock skew (RFC 4430 §3.5): only a *protected* KRB_AP_ERR_SKEW (AP-REP and Cksum
  verified) teaches an offset = stime - ctime; the command is then retried once as a
  **new transaction** (new XID, as racoon2 does). KRB_AP_ERR_TKT_EXPIRED / _NYV: a new
  ticket is fetched, then a new transaction.
* KINK_ERROR BADQMVERS / INVDOI: we only speak Quick Mode 1.0 and DOI 1, so nothing is
  retried; the failure reason says what the peer lacks.
"""

from __future__ import annotations

from typing import Any

from isakmp.events import Address, NegotiationFailed
from kink import wire
from kink.kerberos.apreq import (
    build_ap_req,
    clock_offset_from_error,
    parse_krb_error,
    verify_ap_rep,
)
from kink.kerberos.errors import KDCUnreachable, KerberosError, KrbErrorCode, krb_reason
from kink.kerberos.errors import describe as describe_krb
from kink.kerberos.messages import Ticket
from kink.wire import (
    ApRepPayload,
    ApReqPayload,
    ErrorCode,
    ErrorPayload,
    KinkDecodeError,
    KrbErrorPayload,
    MessageType,
    TgtRepPayload,
    TgtReqPayload,
    kink_error_reason,
)

from .api import ClockSkewCorrected, FetchTicket
from .core import EngineCore, Timer
from .peers import PeerState
from .txn import MAX_AUTHENTICATORS, Kind, Txn, TxnState

__all__ = ["TransactionsMixin", "kink_error_text"]

_C = KrbErrorCode
_SENT, _DONE = TxnState.SENT, TxnState.DONE
_KINK_ERRORS = {
    ErrorCode.PROTOERR: "peer answered KINK_PROTOERR (protocol error)",
    ErrorCode.INVDOI: "peer does not support the IPsec DOI (KINK_INVDOI)",
    ErrorCode.INVMAJ: "peer does not support KINK major version 1 (KINK_INVMAJ)",
    ErrorCode.INTERR: "peer answered KINK_INTERR (internal error)",
    ErrorCode.BADQMVERS: "peer does not support Quick Mode version 1.0 (KINK_BADQMVERS)",
    ErrorCode.U2UDENIED: "peer refuses user-to-user (KINK_U2UDENIED)",
}


def kink_error_text(code: int) -> str:
    """What a KINK_ERROR code from the peer means (a fact for the failure's detail)."""
    return _KINK_ERRORS.get(code, f"peer answered KINK_ERROR {int(code)}")


class TransactionsMixin(EngineCore):
    # ------------------------------------------------------------------ starting

    def _waiting_txns(self) -> list[Txn]:
        ws = [t for _, ts in self._fetches.values() for t in ts]
        for ts in self._tgt_waiters.values():
            ws.extend(ts)
        return ws

    def _start_txn(self, t: Txn, now: float, out: list) -> None:
        if t.kind == Kind.CREATE:
            self._creating[(t.peer.name, t.child.name, t.ukey)] = t
        if t.kind == Kind.GETTGT:
            self._begin(t, now, out)
            return
        peer = t.peer
        tk = peer.tickets.get(t.ukey)
        if tk is not None and not t.force_new and tk.endtime > now + self._t_retrans + 10:
            t.ticket = tk
            self._begin(t, now, out)
            return
        u2u = None
        if peer.cfg.user_to_user:
            if peer.peer_tgt is None:
                t.state = TxnState.TGT
                self._tgt_waiters.setdefault(peer.name, []).append(t)
                if peer.name not in self._gettgt:
                    g = Txn(Kind.GETTGT, peer, started=now)
                    self._gettgt[peer.name] = g
                    self._begin(g, now, out)
                return
            u2u = peer.peer_tgt
        t.state = TxnState.TICKET
        key = (peer.name, t.ukey, t.force_new, u2u)
        rid = self._fetch_keys.get(key)
        if rid is not None:
            self._fetches[rid][1].append(t)
            return
        rid = self._next_rid
        self._next_rid += 1
        self._fetch_keys[key] = rid
        self._fetches[rid] = (key, [t])
        self.stats["kdc.requests"] += 1
        out.append(FetchTicket(rid, peer.cfg.principal, t.user, t.force_new, u2u))

    def ticket_result(self, request_id: int, ticket: Any, error: Any,
                      now: float) -> list:
        """Answer to ``FetchTicket``: the ticket, or the error that prevented it."""
        out: list = []
        ent = self._fetches.pop(request_id, None)
        if ent is None:
            return out
        key, txns = ent
        self._fetch_keys.pop(key, None)
        if error is not None or ticket is None:
            for t in txns:
                if t.state is _DONE:
                    continue
                t.peer.kdc_failures += 1
                if isinstance(error, KDCUnreachable):
                    self._fail(t, now, out, "kdc-unreachable",
                               f"{t.peer.cfg.principal} ({error})")
                else:
                    # CredentialsError.reason: principal-unknown, wrong-key ... (or "kdc")
                    self._fail(t, now, out, getattr(error, "reason", None) or "kdc",
                               str(error))
            if self._stopping:
                self._maybe_shutdown_done(now, out)
            return out
        for t in txns:
            t.peer.kdc_failures = 0
            t.peer.tickets[t.ukey] = ticket
            t.ticket = ticket
            if t.state is TxnState.TICKET:
                self._begin(t, now, out)
        if self._stopping:
            self._maybe_shutdown_done(now, out)
        return out

    def _begin(self, t: Txn, now: float, out: list) -> None:
        """Ticket in hand (or not needed): build the command and send it."""
        t.xid = self._new_xid()
        t.state = _SENT
        t.tries = 0
        t.sent = []
        t.offset = t.peer.clock_offset
        if t.kind == Kind.CREATE:
            self._build_create(t, now, out)
            if t.state is _DONE:  # could not be built: failed
                return
        self._txns[t.xid] = t
        self._transmit(t, now, out)

    def _transmit(self, t: Txn, now: float, out: list) -> None:
        peer = t.peer
        t.tries += 1
        if t.tries > 1:
            self.stats["retransmissions"] += 1
        if t.kind == Kind.GETTGT:
            data = wire.encode(MessageType.GETTGT, t.xid, [TgtReqPayload(peer.cfg.principal)])
        else:
            tk = t.ticket
            ap_req, ctime, cusec = build_ap_req(tk, now, t.offset)
            sent = t.sent
            sent.append((ctime, cusec))
            if len(sent) > MAX_AUTHENTICATORS:
                del sent[0]
            payloads = [ApReqPayload(self.epoch, ap_req)]
            enc = None
            if t.isakmp is not None:
                payloads.append(t.isakmp)
                if peer.cfg.encrypt:
                    enc = 1
            data = wire.encode(int(t.kind), t.xid, payloads, key=(tk.enctype, tk.session_key),
                               encrypt_from=enc)
        self._send(out, data, self._peer_addr(peer))
        self._timers.set((Timer.RETRANSMIT, t.xid), now + self._backoff.delay(t.tries))

    def _on_retransmit(self, xid: int, now: float, out: list) -> None:
        t = self._txns.get(xid)
        if t is None or t.state is not _SENT:
            return
        if t.tries >= max(1, self.timers.max_tries):
            self._fail(t, now, out, "timeout",
                       f"last: {t.last_error}" if t.last_error else "")
        else:
            self._transmit(t, now, out)

    # ------------------------------------------------------------------ ending

    def _finish_txn(self, t: Txn) -> None:
        t.state = _DONE
        if t.kind == Kind.CREATE:
            k = (t.peer.name, t.child.name, t.ukey)
            if self._creating.get(k) is t:
                del self._creating[k]
        self._txns.pop(t.xid, None)
        self._timers.cancel((Timer.RETRANSMIT, t.xid))
        if t.dpd:
            t.peer.dpd_xid = None

    def _fail(self, t: Txn, now: float, out: list, reason: str, detail: str) -> None:
        """The command failed for ``reason`` (``timeout``, ``kdc``, ``no-proposal-chosen`` ...)."""
        self._finish_txn(t)
        kind = t.kind
        if kind == Kind.CREATE:
            self._create_failed(t, now, out, reason, detail)
        elif kind == Kind.GETTGT:
            self._gettgt_failed(t, now, out, reason, detail)
        elif kind == Kind.DELETE:
            self._delete_done(t, now, out, f"{reason}: {detail}" if detail else reason)
        else:
            self._status_failed(t, now, out, reason, detail)

    def _schedule_retry(self, peer: PeerState, child: Any, now: float) -> None:
        n = max(peer.failures.get(child.name, 1), peer.kdc_failures, 1)
        delay = min(self.timers.kdc_backoff_max, self.timers.retransmit * (2 ** min(n, 16)))
        self._timers.set_if_earlier((Timer.RETRY, peer.name, child.name), now + delay)

    def _restart(self, t: Txn, now: float, out: list, **flags: Any) -> None:
        """Start the same command again as a new transaction (new XID)."""
        self._finish_txn(t)
        if t.kind == Kind.CREATE:
            self._abort_create_local(t, out)
            n = Txn(Kind.CREATE, t.peer, user=t.user, ukey=t.ukey, started=now, child=t.child,
                    policy=t.policy, replaces=t.replaces, retried_skew=t.retried_skew,
                    retried_expired=t.retried_expired, retried_u2u=t.retried_u2u,
                    no_ke=t.no_ke)
        else:
            n = Txn(t.kind, t.peer, user=t.user, ukey=t.ukey, started=now, isakmp=t.isakmp,
                    sa_ids=t.sa_ids, dpd=t.dpd, reason=t.reason, retried_skew=t.retried_skew,
                    retried_expired=t.retried_expired, retried_u2u=t.retried_u2u)
        for k, v in flags.items():
            setattr(n, k, v)
        if n.dpd:
            n.peer.dpd_xid = 1
        self._start_txn(n, now, out)

    # ------------------------------------------------------------------ REPLY

    def _on_reply(self, msg: wire.KinkMessage, addr: Address, now: float, out: list) -> None:
        t = self._txns.get(msg.xid)
        if t is None:
            a = self._acked.get(msg.xid)
            if a is not None:
                self._reack(a, msg, addr, now, out)
                return
            self._drop("unknown-xid")
            return
        if addr[0] != t.peer.cfg.address.host:
            self._drop("wrong-source")
            return
        if t.kind == Kind.GETTGT:
            self._on_tgt_reply(t, msg, now, out)
            return
        aprep = None
        for p in msg.payloads:
            if type(p) is ApRepPayload:
                aprep = p
                break
        tk = t.ticket
        if aprep is None:
            self._unauth_reply(t, msg, now, out)
            return
        try:
            verify_ap_rep(aprep.ap_rep, tk, t.sent)
            wire.verify_checksum(msg, tk.enctype, tk.session_key)
            wire.decrypt(msg, tk.enctype, tk.session_key)
        except KerberosError:
            self._drop("ap-rep")
            return
        except KinkDecodeError as e:
            self._drop(e.reason)
            return
        peer = t.peer
        self._check_epoch(peer, tk.server, aprep.epoch, now, out)
        self._heard(peer, now, out)
        kerr = msg.find(KrbErrorPayload)
        if kerr is not None:
            self._protected_krb_error(t, kerr, now, out)
            return
        kinkerr = msg.find(ErrorPayload)
        if kinkerr is not None and kinkerr.code != ErrorCode.KINK_OK:
            self._fail(t, now, out, kink_error_reason(kinkerr.code),
                       kink_error_text(kinkerr.code))
            return
        if t.kind == Kind.CREATE:
            self._create_reply(t, msg, now, out)
        elif t.kind == Kind.DELETE:
            self._finish_txn(t)
            self._delete_done(t, now, out, "")
        else:
            self._finish_txn(t)
            self._status_answered(t, aprep.epoch, now, out)

    def _unauth_reply(self, t: Txn, msg: wire.KinkMessage, now: float, out: list) -> None:
        """A REPLY without AP-REP: never aborts the transaction."""
        self._drop("unauthenticated-reply")
        tgtrep = msg.find(TgtRepPayload)
        if tgtrep is not None and t.ticket is not None and t.ticket.user_to_user \
                and not t.retried_u2u and self._plausible_tgt(tgtrep.ticket):
            # RFC 4430 §3.7.1: the responder has a new TGT; keep SAs, fetch a new U2U ticket
            peer = t.peer
            peer.peer_tgt = bytes(tgtrep.ticket)
            peer.peer_tgt_at = now
            self._restart(t, now, out, retried_u2u=True, force_new=True)
            return
        kerr = msg.find(KrbErrorPayload)
        if kerr is not None:
            try:
                code = parse_krb_error(kerr.krb_error).error_code
                # named, with its hint: "kvno-mismatch: the key version ... (export ...)"
                t.last_error = f"unauthenticated KRB-ERROR {describe_krb(krb_reason(code))}"
            except KerberosError:
                t.last_error = "malformed KRB-ERROR"
        kinkerr = msg.find(ErrorPayload)
        if kinkerr is not None:
            t.last_error = f"unauthenticated {kink_error_text(kinkerr.code)}"

    def _plausible_tgt(self, data: bytes) -> bool:
        try:
            tkt = Ticket.decode(bytes(data))
        except KerberosError:
            return False
        comps = tkt.sname.components
        return len(comps) == 2 and comps[0] == "krbtgt" and comps[1] == tkt.realm

    def _protected_krb_error(self, t: Txn, kerr: KrbErrorPayload, now: float,
                             out: list) -> None:
        peer = t.peer
        try:
            err = parse_krb_error(kerr.krb_error)
        except KerberosError:
            self._drop("krb-error")
            return
        code = err.error_code
        if code == _C.KRB_AP_ERR_SKEW and not t.retried_skew:
            try:
                off = clock_offset_from_error(err, None, t.offset)
            except ValueError:
                off = None
            if off is not None:
                previous, peer.clock_offset = peer.clock_offset, off
                out.append(ClockSkewCorrected(peer.name, off, previous))
                self._changed(out)
                self._restart(t, now, out, retried_skew=True)
                return
        if code in (_C.KRB_AP_ERR_TKT_EXPIRED, _C.KRB_AP_ERR_TKT_NYV) and not t.retried_expired:
            peer.tickets.pop(t.ukey, None)
            self._restart(t, now, out, retried_expired=True, force_new=True)
            return
        self._fail(t, now, out, f"krb-{krb_reason(code)}", "")

    def _negotiation_failed(self, out: list, peer: str | None, child: str | None,
                            reason: str, detail: str = "") -> None:
        self.stats[f"negotiations.failed.{reason}"] += 1
        out.append(NegotiationFailed(peer, child, reason, detail))
