"""The responder's side of every command: authentication, authorization, reply cache.

Pipeline of a command (CREATE, DELETE, STATUS, ACK), cheap checks first so that an
attacker cannot make us do crypto: header sanity (``wire.decode``, done by the facade)
-> per-source token bucket (``isakmp.ratelimit``; when spent, only AP-REQs whose ticket
we already decrypted go on: they cost no ticket decryption, and a spoofer draining a
peer's address cannot starve that peer) -> Kerberos AP-REQ (acceptor: ticket,
authenticator, skew, replay cache) -> Cksum -> KINK_ENCRYPT -> the peer the principal
belongs to (authorization) -> the authenticator recorded in the replay cache (only now: a
refused request never fills it) -> epoch -> reply cache (a retransmitted command carries a fresh
authenticator, so the cache is consulted only after it verified; RFC 4430 §3.3) ->
ISAKMP decode and policy -> the exchange (``create``, ``delete``, ``status``) -> REPLY
with AP-REP, Cksum and, when we have a key, KINK_ENCRYPT.

Errors (RFC 4430 §3.5, §5.5):

* an AP-REQ that fails before the ticket decrypts gets a lone KRB-ERROR (rate limited per
  source); a failure after the ticket decrypted a protected one (with AP-REP only when
  the authenticator decrypted too, since the AP-REP must echo its ctime); replays get
  nothing; ACKs are never answered;
* a user-to-user ticket made for an older TGT of ours gets our current TGT (§3.7.1);
* header errors of a command get a lone KINK_ERROR (as racoon2 does), rate limited;
* refusals by policy: a principal that the peer's policy does not allow is answered with
  Notify PAYLOAD-MALFORMED inside the authenticated REPLY (§5.5: the type for rejections
  no other covers); the ``RequestRefused`` event names principal, peer and child.
* a principal is bound to its peer's configured address: a command authenticated by a
  known principal but sent from another address (a stolen or relayed ticket, a host
  speaking for another) is refused the same way (reason ``wrong-address``) unless that
  peer is configured with ``roam = true``; nothing of it is acted on (no SA, no DELETE,
  no epoch).
* KINK_ENCRYPT is used whenever we have a key and ``PeerConfig.encrypt`` (the default);
  unencrypted KINK_ISAKMP is accepted (racoon2 accepts both).
"""

from __future__ import annotations

from typing import Any

from isakmp.doi import NotifyType
from isakmp.errors import IsakmpError, notify_reason
from isakmp.events import Address, RequestRefused
from isakmp.payloads import Identification, Notification
from isakmp.replycache import CacheEntry
from isakmp.selectors import host_ts, id_to_ts, match_child
from kink import wire
from kink.kerberos.acceptor import (
    KRB_AP_ERR_NO_TGT,
    AcceptedRequest,
    AcceptError,
    make_ap_rep,
    make_krb_error,
)
from kink.kerberos.errors import KerberosError, KrbErrorCode, krb_reason
from kink.wire import (
    ApRepPayload,
    ApReqPayload,
    ErrorCode,
    ErrorPayload,
    IsakmpPayload,
    KinkDecodeError,
    KrbErrorPayload,
    MessageType,
    TgtRepPayload,
    kink_error_reason,
)

from .core import Timer
from .create import REFUSED_BY_POLICY, CreateMixin
from .peers import PeerState

__all__ = ["ResponderMixin"]

_C = KrbErrorCode
_REPLY = MessageType.REPLY


class ResponderMixin(CreateMixin):
    def _decode_error(self, e: KinkDecodeError, addr: Address, now: float, out: list) -> None:
        """Header errors of a command get a lone KINK_ERROR (racoon2 does), rate limited."""
        if e.xid is None or e.message_type not in (1, 2, 4, 6):
            return
        if e.error_code not in (ErrorCode.INVMAJ, ErrorCode.INVDOI):
            return
        host = addr[0]
        if not self._rl.allow(host, now):
            return
        self._rl.charge(host, now)
        data = wire.encode(_REPLY, e.xid, [ErrorPayload(int(e.error_code))])
        self.stats[f"errors.sent.{kink_error_reason(e.error_code)}"] += 1
        self._send(out, data, addr)

    # -- authentication ------------------------------------------------------------------

    def _authenticate(self, msg: wire.KinkMessage, addr: Address, now: float,
                      out: list) -> tuple[AcceptedRequest, ApReqPayload] | None:
        apreq = None
        for p in msg.payloads:
            if type(p) is ApReqPayload:
                apreq = p
                break
        if apreq is None:
            self._drop("no-ap-req")
            return None
        host = addr[0]
        rl = self._rl
        if not rl.allow(host, now):
            # The source's allowance for unauthenticated work is spent (by it, or by a
            # spoofer using its address). An AP-REQ with a ticket we already decrypted is
            # still cheap to check (authenticator only), so a peer that authenticated
            # before is not starved by someone draining its address's allowance.
            if host not in self._by_host and not self._roamers or \
                    not self.acceptor.knows_ticket(apreq.ap_req):
                self._drop("rate-limited")
                return None
            self.stats["rate-limited.known-ticket"] += 1
        try:
            acc = self.acceptor.accept(apreq.ap_req, now, client_addr=host, store=False)
        except AcceptError as e:
            rl.charge(host, now)
            self._ap_error(msg, addr, e, now, out)
            return None
        except KerberosError:
            rl.charge(host, now)
            self._drop("ap-req")
            return None
        try:
            wire.verify_checksum(msg, acc.enctype, acc.session_key)
            wire.decrypt(msg, acc.enctype, acc.session_key)
        except KinkDecodeError as e:
            rl.charge(host, now)
            self._drop(e.reason)
            return None
        return acc, apreq

    def _ap_error(self, msg: wire.KinkMessage, addr: Address, e: AcceptError, now: float,
                  out: list) -> None:
        code = int(e.code)
        if code == _C.KRB_AP_ERR_REPEAT:
            self._drop("replay")
            return
        if code == KRB_AP_ERR_NO_TGT:
            self._drop("no-tgt")
            self._want_tgt(out)
            return
        if msg.type == MessageType.ACK:
            self._drop("ap-req")  # ACKs are never answered
            return
        if e.user_to_user and code == _C.KRB_AP_ERR_BAD_INTEGRITY and self._tgt is not None:
            # RFC 4430 §3.7.1: a U2U ticket for an older TGT of ours -> send the current one
            self._drop("u2u-old-tgt")
            data = wire.encode(_REPLY, msg.xid, [TgtRepPayload(bytes(self._tgt.ticket_bytes))])
            self._send(out, data, addr)
            return
        self._drop("ap-req")
        sname = e.server or self.config.daemon.principal
        try:
            krb_err = make_krb_error(code, now, sname=sname, ctime=e.ctime, cusec=e.cusec,
                                     client=e.client or None)
        except (ValueError, KerberosError):
            return
        self.stats[f"errors.sent.krb-{krb_reason(code)}"] += 1
        if e.session_key is not None and e.ctime is not None and e.enctype is not None:
            acc = AcceptedRequest(e.client or "", e.server or "", e.session_key, e.enctype,
                                  e.ticket_endtime or 0, 0, 0, 0, e.ctime, e.cusec or 0, None,
                                  e.user_to_user, None)
            data = wire.encode(
                _REPLY, msg.xid,
                [ApRepPayload(self.epoch, make_ap_rep(acc)), KrbErrorPayload(krb_err)],
                key=(e.enctype, e.session_key), encrypt_from=1)
        else:
            data = wire.encode(_REPLY, msg.xid, [KrbErrorPayload(krb_err)])
        self._send(out, data, addr)

    def _peer_for(self, client: str, host: str) -> PeerState | None:
        """The peer an authenticated principal speaks for: the one configured at the
        source address that allows the principal, else one that allows it and may roam.
        A principal is bound to its peer's address: the same ticket from another source
        speaks for nobody (refused), so it can neither create, delete nor reset (epoch)
        the pairs of that peer."""
        for p in self._by_host.get(host, ()):
            if client == p.cfg.principal or client in p.cfg.allow_principals:
                return p
        for p in self._by_principal.get(client, ()):
            if p.cfg.roam:
                return p
        return None

    def _reply_bytes(self, xid: int, acc: AcceptedRequest, inner: list, encrypt: bool,
                     ack_request: bool = False) -> bytes:
        payloads = [ApRepPayload(self.epoch, make_ap_rep(acc)), *inner]
        return wire.encode(_REPLY, xid, payloads, ack_request=ack_request,
                           key=(acc.enctype, acc.session_key),
                           encrypt_from=1 if (encrypt and inner) else None)

    # -- commands -------------------------------------------------------------------------

    def _on_command(self, msg: wire.KinkMessage, addr: Address, now: float,
                    local: Address | None, out: list) -> None:
        auth = self._authenticate(msg, addr, now, out)
        if auth is None:
            return
        acc, apreq = auth
        client = acc.client
        peer = self._peer_for(client, addr[0])
        if peer is not None:
            # authorized and its Cksum verified: only now is the authenticator recorded
            # (refused principals never fill the replay cache; each principal has a share)
            try:
                self.acceptor.commit(acc, now)
            except AcceptError as e:
                self._ap_error(msg, addr, e, now, out)
                return
            self._check_epoch(peer, client, apreq.epoch, now, out)
            self._heard(peer, now, out)
        mtype = msg.type
        if mtype == MessageType.ACK:
            self._on_ack(msg, acc, peer, addr, now, out)
            return
        if self._stopping and mtype == MessageType.CREATE:
            self._drop("shutting-down")
            return
        key = (addr[0], addr[1], client, msg.xid)
        cache = self._cache
        hit = cache.get(key, now)
        if hit is not None and hit.msg_type == mtype:
            self.stats["reply_cache.hits"] += 1
            self._send(out, hit.reply, addr)
            return
        for k, e in cache.purge(now):
            self._cache_gone(k, e, now, out)
        encrypt = msg.encrypt_payload is not None or (peer is not None and peer.cfg.encrypt)
        ack_request = False
        pending: list[int] | None = None
        if peer is None:
            bound = self._by_principal.get(client)
            if bound:  # a known principal from an address that is not its peer's
                self.stats["refused.wrong-address"] += 1
                inner = self._refusal(REFUSED_BY_POLICY, out, bound[0].name, None,
                                      "wrong-address", client, addr[0])
            else:
                pname, cname = self._refused_policy(msg, addr, local)
                inner = self._refusal(REFUSED_BY_POLICY, out, pname, cname, "not-allowed",
                                      client)
        elif mtype == MessageType.CREATE:
            inner, ack_request, pending = self._resp_create(msg, acc, peer, addr, local, now,
                                                            out)
        elif mtype == MessageType.DELETE:
            inner = self._resp_delete(msg, acc, peer, now, out)
        else:
            inner = self._resp_status(msg, peer, out)
        reply = self._reply_bytes(msg.xid, acc, inner, encrypt, ack_request)
        ttl = cache.ttl
        if pending is not None:
            ttl = max(ttl, self._t_retrans + 1.0)
        entry = CacheEntry(mtype, reply, now + ttl, addr, peer.name if peer else None, pending)
        for k, e in cache.put(key, entry):
            self._cache_gone(k, e, now, out)
        if pending is not None:
            self._half_open_add(key)
            self._timers.set((Timer.ACK_WAIT, key), now + self._backoff.delay(1))
        self._send(out, reply, addr)

    def _cache_gone(self, key: tuple, e: CacheEntry, now: float, out: list) -> None:
        if e.pending_sas:
            self._ack_timeout(key, e, now, out)

    def _refused_policy(self, msg: wire.KinkMessage, addr: Address,
                        local: Address | None) -> tuple[str | None, str | None]:
        """For the report of a refused principal: the peer configured for the source
        address and, for a CREATE, its child whose selectors the request asks for (best
        effort)."""
        cands = self._by_host.get(addr[0])
        if not cands:
            return None, None
        p = cands[0]
        if msg.type != MessageType.CREATE:
            return p.name, None
        ch = None
        try:
            isa = msg.find(IsakmpPayload)
            pls = isa.payloads() if isa is not None and isa.qm_version_ok else []
            ids = [x for x in pls if type(x) is Identification]
            local_host = self._local_host(local)
            if len(ids) == 2:
                remote_ts, local_ts = id_to_ts(ids[0]), id_to_ts(ids[1])
            else:
                remote_ts, local_ts = host_ts(addr[0]), host_ts(local_host)
            ch = match_child(p.cfg.children, local_ts, remote_ts, local_host, addr[0])
        except (IsakmpError, KinkDecodeError, ValueError):
            pass
        return p.name, ch.name if ch is not None else None

    def _refusal(self, notify: int, out: list, peer: str | None, child: str | None,
                 reason: str, principal: str, detail: str = "", protocol: int = 0,
                 spi: bytes = b"", data: bytes = b"") -> list:
        """The inner payloads of a REPLY refusing the request with ``notify``."""
        self.stats[f"errors.sent.{notify_reason(notify)}"] += 1
        name: Any = NotifyType(notify).name if notify in NotifyType._value2member_map_ \
            else int(notify)
        out.append(RequestRefused(peer, child, principal, reason, name, detail))
        return [IsakmpPayload.from_payloads([Notification(int(notify), protocol, spi, data)])]

    def _isakmp_chain(self, msg: wire.KinkMessage) -> tuple[list | None, list | None]:
        """(ISAKMP payloads, None) or (None, error inner payloads for the REPLY)."""
        isa = msg.find(IsakmpPayload)
        if isa is None:
            return [], None
        if not isa.qm_version_ok:
            self.stats["errors.sent.kink-badqmvers"] += 1
            return None, [ErrorPayload(int(ErrorCode.BADQMVERS))]
        try:
            return isa.payloads(), None
        except IsakmpError as e:
            self.stats[f"errors.sent.{notify_reason(e.notify)}"] += 1
            return None, [IsakmpPayload.from_payloads([Notification(int(e.notify), 0, b"",
                                                                    e.data)])]
