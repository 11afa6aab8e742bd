"""CREATE (RFC 4430 §3.2): negotiating a child SA pair, initiator and responder.

Initiator: ``new -> [tgt] -> ticket -> sent -> done`` (``transactions``). Before the first
transmission the inbound SA of the optimistic proposal is installed (LARVAL, keyed without
Nr) unless KE is used. The REPLY either completes 2-way (outbound installed, pair MATURE)
or 3-way (inbound re-keyed with Nr/KE and replaced, outbound installed, ACK sent; the ACK
is rebuilt and resent whenever the responder retransmits its REPLY during one
retransmission cycle).

Responder: authenticated and authorized (``responder``) -> traffic selectors matched
against the peer's children -> proposal selection (``isakmp.proposals.select`` with
KINK's capabilities: the responder may lower lifetimes, RFC 4430 §3.2) -> optimistic and
no KE: both SAs installed, REPLY without Nonce, ACKREQ clear; otherwise: inbound only,
REPLY with Nr (and KE), ACKREQ set, REPLY retransmitted until the ACK arrives (then
outbound installed) or ``max_tries`` (then the larval SA is removed: installing the
outbound SA without knowing that the initiator installed its inbound one could
black-hole traffic, and the initiator resends ACKs on every REPLY retransmission, so
this needs all ``max_tries`` exchanges to fail).

Decisions (RFC 4430 and implementations):

* ACKREQ is set exactly when the optimistic proposal was not taken, Nr is sent or KE
  accepted (§3.2, §6.3; the §4 sentence that says otherwise misses a "not"). The
  initiator sends an ACK when ACKREQ is set and also, like racoon2, when it sees a
  non-optimistic choice without it.
* Nr: sent exactly in the 3-way case (racoon2); a REPLY with Nr but no ACKREQ is accepted
  and keyed with Nr (the inbound SA is replaced).
* KE refused (§3.2): a protected REPLY with Notify INVALID-PAYLOAD-TYPE whose data is
  payload type 4 makes the initiator retry once as a new transaction without KE,
  offering only the child's proposals that name no DH group; a child whose proposals
  all require PFS fails.
* Only one KINK_ISAKMP per message and one protocol per child (ESP, or AH when a child
  has no ESP proposal) are handled; AH+ESP bundles are not.
* Refusals by policy: §5.5 names the Notify types KINK uses and makes PAYLOAD-MALFORMED
  the one for rejections no other type covers, so a CREATE whose selectors match no
  child is answered with PAYLOAD-MALFORMED inside the authenticated REPLY (racoon2 sends
  INVALID-ID-INFORMATION; any error type is accepted on receipt).
* Soft lifetimes of our own SAs are randomized: hard - uniform(T-retrans, T-rekey) with
  T-retrans the full retransmission cycle and T-rekey = max(2 T-retrans,
  lifetime - rekey_time) (§3.6). Responder SAs get no soft lifetime: only the
  initiator rekeys.
"""

from __future__ import annotations

from typing import Any

from isakmp import dh as _dh
from isakmp.childsa import PairMeta, RekeyWanted
from isakmp.doi import NotifyType, ProtocolId
from isakmp.errors import IsakmpError, notify_reason
from isakmp.events import (
    Address,
    Direction,
    NegotiationStarted,
    NotifyReceived,
    Role,
    SADeleted,
)
from isakmp.payloads import (
    Delete,
    Identification,
    KeyExchange,
    Nonce,
    Notification,
    SecurityAssociation,
)
from isakmp.policy import ChildConfig, child_mode
from isakmp.proposals import (
    Policy,
    build_offer,
    describe_offer,
    describe_policy,
    optimistic_proposals,
    parse_transform,
    validate_answer,
)
from isakmp.sadb import Lifetime, SadbError, SAState, randomized_lifetime
from isakmp.sadb import Transform as SATransform
from isakmp.sakeys import derive_direction, derive_sa_keys, negotiated_transform
from isakmp.selectors import (
    Selectors,
    needs_ids,
    proposed_from_id,
    proposed_host,
    resolve,
    ts_to_id,
)
from kink import wire
from kink.kerberos.acceptor import AcceptedRequest
from kink.kerberos.apreq import build_ap_req, verify_ap_rep
from kink.kerberos.errors import KerberosError
from kink.keys import ticket_key_source
from kink.wire import ApRepPayload, ApReqPayload, IsakmpPayload, KinkDecodeError, MessageType

from .api import KINK_CAPABILITIES
from .core import Timer
from .peers import PeerState, user_key
from .transactions import TransactionsMixin
from .txn import Kind, Txn, TxnState

__all__ = ["CreateMixin", "REFUSED_BY_POLICY"]

#: RFC 4430 §5.5: the Notify for rejections no other error type covers
REFUSED_BY_POLICY = NotifyType.PAYLOAD_MALFORMED
_IN, _OUT = Direction.IN, Direction.OUT
_ESP, _AH = ProtocolId.ESP, ProtocolId.AH


class CreateMixin(TransactionsMixin):
    # ================================================================== initiator

    def _initiate_child(self, peer: PeerState, child: ChildConfig, now: float, out: list, *,
                        user: Any = None, replaces: list[int] | None = None,
                        force: bool = False) -> None:
        if self._stopping:
            return
        uk = user_key(user)
        cur = self._creating.get((peer.name, child.name, uk))
        if cur is not None and cur.state is not TxnState.DONE:
            return  # already negotiating (sent, or waiting for a ticket/TGT)
        if not force and not replaces and user is None:
            if any(r.state is SAState.MATURE for r in self._live(peer.name, child.name)):
                return  # already up
        limit = self.config.limits.max_transactions
        if len(self._creating) >= limit:  # CREATEs in flight or waiting for a ticket
            # Bounded: refuse (and, for "start" children and rekeys, retry later) rather
            # than let new negotiations pile up; DELETE and STATUS are never refused.
            self._negotiation_failed(out, peer.name, child.name, "too-many-transactions",
                                     str(limit))
            if replaces or self._child_start(peer, child) == "start":
                self._schedule_retry(peer, child, now)
            return
        t = Txn(Kind.CREATE, peer, user=user, ukey=uk, started=now, child=child,
                policy=self._policies[(peer.name, child.name)], replaces=list(replaces or ()))
        self.stats["negotiations.started"] += 1
        if replaces:
            self.stats["rekeys"] += 1
        out.append(NegotiationStarted(peer.name, child.name, bool(replaces)))
        self._start_txn(t, now, out)

    def _build_create(self, t: Txn, now: float, out: list) -> None:
        """The CREATE's KINK_ISAKMP payload (and the larval inbound SA of the optimistic
        proposal); when it cannot be built the transaction fails (state DONE)."""
        try:
            self._build_create_payloads(t, now, out)
        except (IsakmpError, SadbError, ValueError) as e:
            self._txns[t.xid] = t
            self._fail(t, now, out, "local", str(e))

    def _build_create_payloads(self, t: Txn, now: float, out: list) -> None:
        peer, child, policy = t.peer, t.child, t.policy
        suite = policy.suites[0]
        proto = int(suite.protocols[0].protocol)
        spi = self.sadb.allocate_spi(proto)
        t.spis = {proto: spi}
        t.ni = self._nonce()
        offer = build_offer(policy, {proto: spi})
        t.offer = offer
        pls: list = [offer, Nonce(t.ni)]
        if suite.pfs_group is not None:
            t.dh = _dh.new(suite.pfs_group, self.rng)
            pls.append(KeyExchange(t.dh.public))
        local_host = self._local_host(None)
        sel_local = resolve(child.local_ts[0], local_host)
        sel_remote = resolve(child.remote_ts[0], peer.cfg.address.host)
        if needs_ids(child) and sel_local.network is not None and sel_remote.network is not None:
            pls.append(ts_to_id(sel_local))  # IDci
            pls.append(ts_to_id(sel_remote))  # IDcr
        t.selectors = Selectors(sel_local, sel_remote)
        t.isakmp = IsakmpPayload.from_payloads(pls)
        if t.dh is not None:
            return
        # RFC 4430 §3.2: inbound SA of the optimistic proposal before sending
        prop, tr = optimistic_proposals(offer)[0]
        p = parse_transform(tr)
        transform = SATransform.negotiated(proto, p.transform_id, p.key_length, p.auth)
        tk = t.ticket
        # the initiator's direction only (the responder's is not known yet)
        keys_in = derive_direction(ticket_key_source(tk.enctype, tk.session_key, peer.cfg.prf),
                                   proto, transform, spi, t.ni)
        meta = PairMeta(peer.cfg.principal, tk.client, t.ni, t.user,
                        owner=tk.client if t.user is not None else None)
        rec = self.children.add(
            meta, peer=peer.name, child=child.name, protocol=proto, spi_in=spi,
            transform=transform, mode=child_mode(child), now=now,
            lifetime=self._own_lifetime(child, p.life_seconds, p.life_kilobytes),
            initiator=True, keys_in=keys_in, selectors=t.selectors, mature=False)
        t.larval = [rec.id]
        self.children.install(rec, _IN, out)

    def _own_lifetime(self, child: ChildConfig, secs: int | None, kbs: int | None) -> Lifetime:
        tr = self._t_retrans
        hard = float(secs) if secs is not None else None
        t_rekey = max(2 * tr, child.lifetime - child.rekey_time)
        return randomized_lifetime(self.rng, hard_seconds=hard, t_retrans=tr, t_rekey=t_rekey,
                                   hard_kilobytes=kbs)

    def _create_reply(self, t: Txn, msg: wire.KinkMessage, now: float, out: list) -> None:
        peer, child, tk = t.peer, t.child, t.ticket
        isa = msg.find(IsakmpPayload)
        ack_request = msg.ack_request
        if isa is None:
            self._fail(t, now, out, "malformed", "REPLY without KINK_ISAKMP")
            return
        try:
            pls = isa.payloads()
        except (IsakmpError, KinkDecodeError) as e:
            if ack_request:
                self._send_ack(t, now, out, remember=False)
            self._fail(t, now, out, "malformed", str(e))
            return
        sa = nr = ke = None
        for p in pls:
            tp = type(p)
            if tp is Notification and p.is_error:
                if p.notify_type == NotifyType.INVALID_PAYLOAD_TYPE and \
                        bytes(p.data)[:1] == b"\x04" and t.dh is not None:
                    self._retry_without_ke(t, now, out)
                    return
                name = str(getattr(p.notify_type, "name", p.notify_type))
                if p.notify_type == NotifyType.NO_PROPOSAL_CHOSEN and t.offer is not None:
                    name += f"; we offered {describe_offer(t.offer)}"
                self._fail(t, now, out, notify_reason(p.notify_type), name)
                return
            if tp is SecurityAssociation and sa is None:
                sa = p
            elif tp is Nonce:
                nr = p.data
            elif tp is KeyExchange:
                ke = p.data
        try:
            if sa is None:
                raise IsakmpError("REPLY without SA")
            sel = validate_answer(t.offer, sa)
            c = sel.chosen[0]
            proto = c.protocol_id
            transform = negotiated_transform(c)
            spi_r = int.from_bytes(sel.peer_spis[proto], "big")
            secret = b""
            if t.dh is not None:
                if ke is None:
                    raise IsakmpError("no KE in the REPLY")
                secret = t.dh.shared(ke)
            elif ke is not None:
                raise IsakmpError("unexpected KE")
        except (IsakmpError, ValueError) as e:
            if ack_request:
                self._send_ack(t, now, out, remember=False)
            self._fail(t, now, out, "bad-reply", str(e))
            return
        nr = nr or b""
        spi_i = t.spis[proto]
        rekey_in = bool(nr) or not sel.optimistic
        src = ticket_key_source(tk.enctype, tk.session_key, peer.cfg.prf)
        keys_out = derive_direction(src, proto, transform, spi_r, t.ni, nr, secret)
        # the inbound KEYMAT of an optimistic 2-way CREATE is the larval SA's (same inputs)
        keys_in = derive_direction(src, proto, transform, spi_i, t.ni, nr, secret) \
            if rekey_in or not t.larval else None
        lifetime = self._own_lifetime(child, sel.life_seconds, sel.life_kilobytes)
        lc = self.children
        try:
            if t.larval:
                rec = lc.activate(t.larval[0], spi_out=spi_r, keys_out=keys_out,
                                  keys_in=keys_in, transform=transform, lifetime=lifetime)
                if rekey_in:
                    lc.install(rec, _IN, out, replace=True)
            else:
                meta = PairMeta(peer.cfg.principal, tk.client, t.ni, t.user,
                                owner=tk.client if t.user is not None else None)
                rec = lc.add(meta, peer=peer.name, child=child.name, protocol=proto,
                             spi_in=spi_i, transform=transform, mode=child_mode(child),
                             now=now, lifetime=lifetime, initiator=True, spi_out=spi_r,
                             keys_in=keys_in, keys_out=keys_out, selectors=t.selectors)
                t.larval = [rec.id]
                lc.install(rec, _IN, out)
        except SadbError as e:
            if ack_request:
                self._send_ack(t, now, out, remember=False)
            self._fail(t, now, out, "sadb", str(e))
            return
        self._finish_txn(t)
        t.larval = []
        lc.install(rec, _OUT, out)
        self.stats["sas.installed"] += 1
        if ack_request or not sel.optimistic:
            self._send_ack(t, now, out, remember=True)
        rekeyed = lc.replaced(t.replaces, rec, now)
        self._established(rec, peer, now, out, Role.INITIATOR, rekeyed=rekeyed)

    def _retry_without_ke(self, t: Txn, now: float, out: list) -> None:
        """RFC 4430 §3.2: the responder does not support KE (Notify INVALID-PAYLOAD-TYPE,
        data = payload type 4). Retry once as a new transaction offering only the child's
        proposals without PFS; a child whose proposals all name a DH group fails instead
        (we never drop PFS the policy requires)."""
        peer, child = t.peer, t.child
        suites = tuple(s for s in t.policy.suites if s.pfs_group is None)
        name = child.name if child else None
        if t.no_ke or not suites:
            why = (f"peer does not support KE (PFS) and every proposal of child {name} "
                   "requires it") if not suites else "peer refused KE again"
            self._fail(t, now, out, notify_reason(NotifyType.INVALID_PAYLOAD_TYPE),
                       f"INVALID_PAYLOAD_TYPE: {why}")
            return
        self.stats["negotiations.retried.no-ke"] += 1
        out.append(NotifyReceived(peer.name, name, "INVALID_PAYLOAD_TYPE", "retry-without-ke"))
        self._restart(t, now, out, no_ke=True, policy=Policy(suites))

    def _send_ack(self, t: Txn, now: float, out: list, remember: bool) -> None:
        tk = t.ticket
        ap_req, _c, _u = build_ap_req(tk, now, t.offset)
        data = wire.encode(MessageType.ACK, t.xid, [ApReqPayload(self.epoch, ap_req)],
                           key=(tk.enctype, tk.session_key))
        self._send(out, data, self._peer_addr(t.peer))
        if remember:
            self._acked[t.xid] = t
            self._timers.set((Timer.ACKED, t.xid), now + self._t_retrans + 1.0)

    def _reack(self, t: Txn, msg: wire.KinkMessage, addr: Address, now: float,
               out: list) -> None:
        """The responder retransmitted its REPLY (ACKREQ): our ACK got lost, send another."""
        if addr[0] != t.peer.cfg.address.host or not msg.ack_request:
            self._drop("unknown-xid")
            return
        aprep = msg.find(ApRepPayload)
        tk = t.ticket
        if aprep is None:
            self._drop("unauthenticated-reply")
            return
        try:
            verify_ap_rep(aprep.ap_rep, tk, t.sent)
            wire.verify_checksum(msg, tk.enctype, tk.session_key)
        except KerberosError:
            self._drop("ap-rep")
            return
        except KinkDecodeError as e:
            self._drop(e.reason)
            return
        self.stats["retransmissions"] += 1
        self._send_ack(t, now, out, remember=False)

    def _abort_create_local(self, t: Txn, out: list) -> None:
        for sa_id in t.larval:
            if self.sadb.get(sa_id) is not None:
                self.children.remove(sa_id, out, "negotiation failed", report=False)
        t.larval = []
        for spi in t.spis.values():
            self.sadb.release_spi(spi)

    def _cleanup_delete(self, t: Txn, spis: dict[int, int], now: float, out: list) -> None:
        """The responder may have created the pair and only its REPLYs were lost: a
        best-effort DELETE naming our inbound SPI removes such an orphan (a responder that
        has nothing answers INVALID-SPI)."""
        isa = IsakmpPayload.from_payloads([Delete(p, [s.to_bytes(4, "big")])
                                           for p, s in spis.items()])
        self._start_txn(Txn(Kind.DELETE, t.peer, started=now, isakmp=isa, reason="cleanup",
                            user=t.user, ukey=t.ukey), now, out)

    def _create_failed(self, t: Txn, now: float, out: list, reason: str, detail: str) -> None:
        peer = t.peer
        spis = dict(t.spis) if t.tries else {}
        self._abort_create_local(t, out)
        if reason == "timeout" and spis:
            self._cleanup_delete(t, spis, now, out)
        self._negotiation_failed(out, peer.name, t.child.name if t.child else None, reason,
                                 detail)
        if t.child is not None:
            peer.failures[t.child.name] = peer.failures.get(t.child.name, 0) + 1
            if self._child_start(peer, t.child) == "start" or t.replaces:
                self._schedule_retry(peer, t.child, now)

    def _cancel_create(self, t: Txn, now: float, out: list, why: str) -> None:
        """Abandon a CREATE in flight (its policy went away)."""
        spis = dict(t.spis) if t.tries else {}
        self._finish_txn(t)
        self._abort_create_local(t, out)
        if spis:
            self._cleanup_delete(t, spis, now, out)
        self._negotiation_failed(out, t.peer.name, t.child.name if t.child else None,
                                 "reconfigured", why)

    def _on_retry(self, peer_name: str, child_name: str, now: float, out: list) -> None:
        peer = self._peers.get(peer_name)
        ch = peer.cfg.child(child_name) if peer is not None else None
        if ch is None or self._live(peer.name, ch.name):
            return
        meta = self.children.meta
        dying = [r for r in self.sadb.by_child(peer.name, ch.name)
                 if r.initiator and r.state == SAState.DYING and r.replaced_by is None
                 and not meta(r.id).deleting and not meta(r.id).orphaned]
        if dying:
            self._initiate_child(peer, ch, now, out, user=meta(dying[0].id).user,
                                 replaces=[dying[0].id])
        elif self._child_start(peer, ch) == "start":
            self._initiate_child(peer, ch, now, out)

    # -- lifetimes ------------------------------------------------------------------------

    def _on_rekey_wanted(self, want: RekeyWanted, now: float, out: list) -> None:
        """Soft lifetime of a pair we initiated: its successor (RFC 4430 §3.6)."""
        rec, m = want.sa, want.meta
        peer = self._peers.get(rec.peer)
        ch = peer.cfg.child(rec.child) if peer is not None else None
        if ch is None:
            return
        if m.orphaned:
            self._rekey_skipped(rec, out)
            return
        self._initiate_child(peer, ch, now, out, user=m.user, replaces=[rec.id])

    def _on_sa_gone(self, ev: SADeleted, now: float, out: list) -> None:
        """A pair expired: a "start" child we had initiated is negotiated again."""
        rec, m = ev.sa, ev.meta
        if ev.reason != "expired" or not rec.initiator or m is None or m.deleting:
            return
        peer = self._peers.get(rec.peer)
        ch = peer.cfg.child(rec.child) if peer is not None else None
        if ch is not None and self._child_start(peer, ch) == "start" \
                and not self._live(peer.name, ch.name):
            self._initiate_child(peer, ch, now, out, user=m.user)

    # ================================================================== responder

    def _resp_create(self, msg: wire.KinkMessage, acc: AcceptedRequest, peer: PeerState,
                     addr: Address, local: Address | None, now: float,
                     out: list) -> tuple[list, bool, list[int] | None]:
        """(inner payloads of the REPLY, ACKREQ, larval SA ids awaiting the ACK)."""
        client = acc.client
        pls, err = self._isakmp_chain(msg)
        if err is not None:
            return err, False, None
        sa = nonce = ke = None
        ids: list[Identification] = []
        for p in pls:
            tp = type(p)
            if tp is SecurityAssociation:
                if sa is None:
                    sa = p
            elif tp is Nonce:
                nonce = p
            elif tp is KeyExchange:
                ke = p
            elif tp is Identification:
                ids.append(p)
        M = NotifyType
        refuse = self._refusal
        if sa is None or nonce is None or not 8 <= len(nonce.data) <= 256:
            return refuse(M.PAYLOAD_MALFORMED, out, peer.name, None, "malformed", client,
                          "CREATE without SA or valid Nonce"), False, None
        local_host = self._local_host(local)
        try:
            if ids:
                if len(ids) != 2:
                    raise IsakmpError("need IDci and IDcr", notify=M.INVALID_ID_INFORMATION)
                remote_ts, rkey = proposed_from_id(ids[0])
                local_ts, lkey = proposed_from_id(ids[1])
            else:
                remote_ts, rkey = proposed_host(addr[0])
                local_ts, lkey = proposed_host(local_host)
        except IsakmpError as e:
            return refuse(M.PAYLOAD_MALFORMED, out, peer.name, None, "bad-id", client,
                          str(e)), False, None
        child = self._match_child(peer, local_host, addr[0], lkey, rkey)
        if child is None:
            return refuse(REFUSED_BY_POLICY, out, peer.name, None, "selectors", client,
                          f"{remote_ts} <-> {local_ts}"), False, None
        policy = self._policies[(peer.name, child.name)]
        try:
            sel = self._selections.select(sa, policy, KINK_CAPABILITIES)
            c = sel.chosen[0]
            proto = c.protocol_id
            if len(sel.chosen) != 1 or proto not in (_ESP, _AH):
                raise IsakmpError("only single ESP or AH SAs", notify=M.NO_PROPOSAL_CHOSEN)
            transform = negotiated_transform(c)
        except IsakmpError as e:
            detail = str(e)
            if e.notify == M.NO_PROPOSAL_CHOSEN:
                detail += (f"; offered {describe_offer(sa)}; local policy of child "
                           f"{child.name}: {describe_policy(policy)}")
            return refuse(e.notify, out, peer.name, child.name, "proposal", client,
                          detail), False, None
        spi_b = c.proposal.spi
        if len(spi_b) != 4:
            return refuse(M.INVALID_SPI, out, peer.name, child.name, "spi", client,
                          "SPI size", proto, spi_b), False, None
        spi_i = int.from_bytes(spi_b, "big")
        if spi_i < 256 or self.sadb.by_spi_out(proto, spi_i, peer.name) is not None:
            return refuse(M.INVALID_SPI, out, peer.name, child.name, "spi", client,
                          f"SPI {spi_i:08x} already in use", proto, spi_b), False, None
        if (not sel.optimistic or sel.pfs_group is not None) and self._half_open_full(client):
            # a 3-way CREATE leaves a larval SA and a REPLY retransmitted until the ACK:
            # bounded per principal and in all (a flood of never-ACKed CREATEs costs little
            # memory and cannot make us send more than a bounded number of datagrams)
            self.stats["refused.half-open-limit"] += 1
            return refuse(REFUSED_BY_POLICY, out, peer.name, child.name, "half-open-limit",
                          client, str(self._half_open.get(client, 0))), False, None
        secret = b""
        dh = None
        if sel.pfs_group is not None:
            if ke is None:
                return refuse(M.PAYLOAD_MALFORMED, out, peer.name, child.name, "ke", client,
                              "PFS group without KE"), False, None
            try:
                dh = _dh.new(sel.pfs_group, self.rng)
                secret = dh.shared(ke.data)
            except ValueError as e:
                return refuse(M.INVALID_KEY_INFORMATION, out, peer.name, child.name, "ke",
                              client, str(e)), False, None
        elif ke is not None:
            return refuse(M.INVALID_PAYLOAD_TYPE, out, peer.name, child.name, "ke", client,
                          "KE without PFS policy", data=b"\x04"), False, None
        three_way = (not sel.optimistic) or dh is not None
        nr = self._nonce() if three_way else b""
        try:
            spi_r = self.sadb.allocate_spi(proto)
        except SadbError as e:
            return refuse(e.notify, out, peer.name, child.name, "sadb", client,
                          str(e)), False, None
        keys = derive_sa_keys(ticket_key_source(acc.enctype, acc.session_key, peer.cfg.prf),
                              protocol=proto, transform=transform, spi_initiator=spi_i,
                              spi_responder=spi_r, ni=nonce.data, nr=nr, ke_secret=secret)
        mode = c.params.mode if c.params.mode is not None else child_mode(child)
        lifetime = Lifetime(hard_seconds=sel.life_seconds, hard_kilobytes=sel.life_kilobytes)
        lc = self.children
        rec = lc.add(PairMeta(client, client, bytes(nonce.data)),
                     peer=peer.name, child=child.name, protocol=proto, spi_in=spi_r,
                     transform=transform, mode=mode, now=now, lifetime=lifetime,
                     initiator=False, spi_out=spi_i, keys_in=keys.to_responder,
                     keys_out=keys.to_initiator, selectors=Selectors(local_ts, remote_ts),
                     mature=not three_way)
        lc.install(rec, _IN, out)
        self.stats["sas.installed"] += 1
        reply_pl: list = [sel.reply_sa({proto: spi_r})]
        if three_way:
            reply_pl.append(Nonce(nr))
        if dh is not None:
            reply_pl.append(KeyExchange(dh.public))
        if ids:
            reply_pl.extend(ids[:2])
        if sel.responder_lifetime:
            reply_pl.extend(sel.responder_lifetime_notifications({proto: spi_r}))
        inner = [IsakmpPayload.from_payloads(reply_pl)]
        self.stats["negotiations.responded"] += 1
        if three_way:
            return inner, True, [rec.id]
        lc.install(rec, _OUT, out)
        self._established(rec, peer, now, out, Role.RESPONDER)
        return inner, False, None

    def _established(self, rec: Any, peer: PeerState, now: float, out: list, role: Role,
                     rekeyed: bool = False) -> None:
        self.stats["negotiations.succeeded"] += 1
        peer.failures.pop(rec.child, None)
        self._absorb(self.children.established(rec, now, role, rekeyed), now, out)
        self._arm_dpd(peer, now)
        self._changed(out)

    def _on_ack(self, msg: wire.KinkMessage, acc: AcceptedRequest, peer: PeerState | None,
                addr: Address, now: float, out: list) -> None:
        key = (addr[0], addr[1], acc.client, msg.xid)
        e = self._cache.get(key, now)
        if e is None or not e.pending_sas or peer is None:
            self._drop("unexpected-ack")
            return
        sas, e.pending_sas = e.pending_sas, None
        self._half_open_done(key)
        self._timers.cancel((Timer.ACK_WAIT, key))
        for sa_id in sas:
            rec = self.sadb.get(sa_id)
            if rec is None or rec.state != SAState.LARVAL:
                continue
            self.children.activate(sa_id)
            self.children.install(rec, _OUT, out)
            self._established(rec, peer, now, out, Role.RESPONDER)

    def _on_ack_wait(self, key: tuple, now: float, out: list) -> None:
        e = self._cache.peek(key)
        if e is None or not e.pending_sas:
            return
        if e.tries >= max(1, self.timers.max_tries):
            self._ack_timeout(key, e, now, out)
            return
        e.tries += 1
        self.stats["retransmissions"] += 1
        self._send(out, e.reply, e.addr)
        self._timers.set((Timer.ACK_WAIT, key), now + self._backoff.delay(e.tries))

    def _half_open_full(self, principal: str) -> bool:
        lim = self.config.limits
        return (self._half_open_total >= lim.max_half_open
                or self._half_open.get(principal, 0) >= lim.max_half_open_per_principal)

    def _half_open_add(self, key: tuple) -> None:
        principal = key[2]
        self._half_open[principal] = self._half_open.get(principal, 0) + 1
        self._half_open_total += 1

    def _half_open_done(self, key: tuple) -> None:
        principal = key[2]
        n = self._half_open.get(principal, 0) - 1
        if n > 0:
            self._half_open[principal] = n
        else:
            self._half_open.pop(principal, None)
        self._half_open_total -= 1

    def _ack_timeout(self, key: tuple, e: Any, now: float, out: list) -> None:
        if e.pending_sas is not None:
            self._half_open_done(key)
        sas, e.pending_sas = e.pending_sas or [], None
        self._timers.cancel((Timer.ACK_WAIT, key))
        gone: dict[int, list[bytes]] = {}
        for sa_id in sas:
            rec = self.sadb.get(sa_id)
            if rec is not None and rec.state == SAState.LARVAL:
                gone.setdefault(int(rec.protocol), []).append(rec.spi_in.to_bytes(4, "big"))
                self.children.remove(sa_id, out, "no ACK", report=False)
                self._negotiation_failed(out, e.peer, rec.child, "no-ack")
        peer = self._peers.get(e.peer) if e.peer is not None else None
        if gone and peer is not None:
            # the initiator may have installed the pair (only its ACKs were lost): a
            # best-effort DELETE with our inbound SPI makes it drop its half too
            isa = IsakmpPayload.from_payloads([Delete(p, s) for p, s in gone.items()])
            self._start_txn(Txn(Kind.DELETE, peer, started=now, isakmp=isa, reason="no-ack"),
                            now, out)
