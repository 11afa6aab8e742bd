"""The sans-I/O KINK protocol engine (RFC 4430): every flow, no sockets, no clock.

See :mod:`kink.engine.api` for the driver contract. This module holds the
:class:`Engine`; the pieces live next to it: ``transactions`` (initiator
commands and retransmission), ``responder`` (reply cache), ``peers`` (epochs,
clock offset, rate limiting), ``keys`` (KEYMAT), ``policy`` (proposals and
traffic selectors), ``dh`` (KE groups), ``timers``.

State machines
--------------
Initiator CREATE: ``new -> [tgt (GETTGT, U2U)] -> ticket (FetchTicket) -> sent
-> done``. Before the first transmission the inbound SA of the optimistic
proposal is installed (LARVAL, keyed without Nr) unless KE is used. The REPLY
either completes 2-way (outbound installed, SA MATURE) or 3-way (inbound
re-keyed with Nr/KE and replaced, outbound installed, ACK sent; the ACK is
rebuilt and resent whenever the responder retransmits its REPLY during one
retransmission cycle).

Responder CREATE: authenticated and authorized -> proposal selection ->
optimistic and no KE: both SAs installed, REPLY without Nonce, A = 0;
otherwise: inbound only, REPLY with Nr (and KE), A = 1, REPLY retransmitted
until the ACK arrives (then outbound installed) or ``max_tries`` (then the
larval SA is removed).

DELETE (initiator): outbound removed at once, DELETE lists our inbound SPIs,
inbound removed ``delete_grace`` after the REPLY (or after giving up).
DELETE (responder): outbound removed at once, inbound after ``delete_grace``;
the REPLY lists our inbound SPIs; unknown SPIs get Notify INVALID-SPI, SPIs
of an SA created by another principal AUTHENTICATION-FAILED.

Refusals by policy: RFC 4430 §5.5 names the Notify error types KINK uses
(INVALID-PAYLOAD-TYPE, INVALID-SPI, NO-PROPOSAL-CHOSEN, PAYLOAD-MALFORMED) and
makes PAYLOAD-MALFORMED the one for rejections no other type covers. So a CREATE
from a principal that the peer's policy does not allow, or whose traffic
selectors (ID payloads) match no child of that peer, is answered with Notify
PAYLOAD-MALFORMED inside the authenticated REPLY (racoon2 sends
AUTHENTICATION-FAILED / INVALID-ID-INFORMATION there; we accept any error type on
receipt); the responder's REQUEST_REFUSED event names principal, peer and child.

STATUS: answered always; the REPLY proves liveness and carries the epoch.
DPD: after ``PeerConfig.dpd`` seconds without an authenticated message from
a peer that has SAs with us, a STATUS is sent; if all ``max_tries``
transmissions go unanswered the peer is dead: its SAs are deleted locally
(Event PEER_DEAD).

Receive pipeline (cheap checks first; an attacker must not make us do crypto):
header sanity (wire.decode) -> XID lookup for REPLYs / per-source token
bucket for commands -> Kerberos AP-REQ (acceptor: ticket, authenticator,
skew, replay cache) or AP-REP (against every authenticator of the
transaction) -> Cksum -> KINK_ENCRYPT -> epoch -> reply cache (a
retransmitted command carries a fresh authenticator, so the cache is
consulted only after it verified) -> ISAKMP decode and policy -> act. Every
drop increments ``stats["dropped.<reason>"]``; receive() never raises.
Unauthenticated errors never delete state and never abort a transaction
(it keeps retransmitting; the last such error is reported on timeout).

Decisions (and where RFC 4430 and the digest/implementations differ)
--------------------------------------------------------------------
* ACKREQ: set exactly when the optimistic proposal was not taken, Nr is sent
  or KE accepted (§3.2/§6.3; the §4 sentence misses a "not", kink.md §9.1).
  The initiator sends an ACK when A = 1 and also, like racoon2, when it sees a
  non-optimistic choice without A = 1.
* Nr: the responder sends Nr exactly in the 3-way case (racoon2); a REPLY with
  Nr but A = 0 is accepted and keyed with Nr (the inbound SA is replaced).
* Checksum/header patching per RFC 4430 §4 (wire.py); KINK_ENCRYPT always
  used when we have a key and ``PeerConfig.encrypt`` (default), unencrypted
  KINK_ISAKMP is accepted (racoon2 accepts both).
* AES-SHA1 PRF: per peer ``prf`` (default ``rfc3961``, the 20-octet literal
  reading racoon2 computes; ``library`` = MIT/Heimdal 16 octets).
* Clock skew (§3.5): only a *protected* KRB_AP_ERR_SKEW (AP-REP and Cksum
  verified) teaches an offset = stime - ctime; the command is then retried
  once as a **new transaction** (new XID, kink.md §7.6/§7.8, racoon2).
  KRB_AP_ERR_TKT_EXPIRED: FetchTicket(force_new=True), then a new transaction.
* U2U (§3.1, §3.7.1): a REPLY carrying only KINK_TGT_REP to a U2U command means
  the responder has a new TGT: fetch a new U2U ticket and retry once; the old
  ticket is kept until then, and no SA is touched (it is unauthenticated).
* Our responder answers an AP-REQ that fails before the ticket decrypts with
  a lone KRB-ERROR (rate limited per source), a failure after the ticket
  decrypted with a protected one (AP-REP only when the authenticator
  decrypted too, since the AP-REP must echo its ctime). Replays get nothing.
* ACK timeout on the responder: the larval inbound SA is removed (installing
  the outbound SA without knowing that the initiator installed its inbound
  one could black-hole traffic); the initiator resends ACKs on every REPLY
  retransmission, so this needs all ``max_tries`` exchanges to fail.
* Responder SAs get no soft lifetime: only the initiator rekeys (§3.6).
  Soft lifetimes of our own SAs are randomized: hard - uniform(T-retrans,
  T-rekey) with T-retrans the full retransmission cycle and T-rekey =
  max(2 T-retrans, lifetime - rekey_time).
* Duplicate pairs (simultaneous CREATEs, rekey collisions): whenever an SA
  becomes MATURE, the MATURE, not-replaced, not-deleting SAs of the same
  (peer, child) are ranked by (initiator principal, Ni) and the lowest one
  survives; each side deletes (DELETE command) the losers *it* initiated, so
  exactly one DELETE per loser is sent and both sides keep the same pair.
  SAs of different initiator principals with identical selectors (a user's SA
  and the daemon's) are ranked by this rule alone.
* Superseded responder pairs: when we install, as responder, a pair for
  (peer, child, selectors) and already hold, as responder, older MATURE pairs
  there created by the *same* initiator principal, only the newest (by
  creation) is what the initiator uses: the older ones are superseded (a
  rekey, or a re-creation after the initiator lost state without telling us,
  e.g. its DPD declared us dead while its DELETE was lost, or it restarted
  with the same epoch). A rekeying initiator DELETEs the old pair itself
  ``delete_grace`` after the REPLY, retransmitted for one cycle, so we wait
  ``delete_grace + T-retrans + 1 s`` from the newer pair's establishment; a
  superseded pair still there then (and still older than a live, MATURE
  pair of that principal) is removed locally like a peer's DELETE (outbound
  at once, inbound after ``delete_grace``; Event SA_DELETED, reason
  ``superseded``, counter ``sas.superseded``) and a best-effort DELETE naming
  it is sent (an initiator that does not know it answers INVALID-SPI). The
  rule never touches SAs we initiated, SAs of other principals, or a pair
  whose successor is gone again (e.g. deleted as a collision loser by its
  initiator); a rekey collision is unaffected (its losers are ranked and
  DELETEd as above; a superseded pair already being deleted is skipped).
  The check is re-armed by ``import_state``.
* Epochs: a changed epoch (both non-zero; 0 = unknown, as racoon2) in an
  authenticated AP-REQ/AP-REP deletes every established SA created with
  that principal (Event PEER_REBOOTED) and re-initiates children with
  start = "start" and the children whose SAs we had initiated.
* Only one KINK_ISAKMP per message and one protocol per child (ESP, or AH
  when a child has no ESP proposal) are handled; AH+ESP bundles are not.
* KE refused (§3.2, kink.md §7.2): a protected REPLY with Notify
  INVALID-PAYLOAD-TYPE whose data is payload type 4 makes the initiator retry
  once as a new transaction without KE, offering only the child's proposals
  that name no DH group (Event NOTIFY_RECEIVED, warning, reason
  ``retry-without-ke``); a child whose proposals all require PFS fails.
  KINK_BADQMVERS / KINK_INVDOI are not retried (we only speak QM 1.0 and DOI
  1): the failure reason says what the peer lacks.
* Persistence: ``export_state``/``import_state`` keep SAs (timers re-based),
  SA metadata including ``SAMeta.user_principal``, and per-peer epochs and
  clock offsets; import re-arms DPD, the DELETE of rekeyed SAs and the removal
  of SAs that were being deleted. A user's SA (``initiate(user=...)``) comes
  back without its credentials handle: it is **not rekeyed** (neither as the
  user nor silently as the daemon identity): Event REKEY_SKIPPED at its soft
  lifetime, SA_DELETED at its hard lifetime (the user reconnects). A child
  with start = "start" is then brought up by the daemon as it would be at start.
* Reconfigure: see :meth:`Engine.reconfigure` (removed -> DELETE to the peer
  as configured before; traffic selectors/mode/protocol changed -> replaced
  now; other changes -> kept until the next rekey; unchanged -> untouched).
* Shutdown with delete_sas: DELETEs keep retransmitting; Event SHUTDOWN_DONE
  when the last is answered or given up (:meth:`Engine.shutdown`).
* ACQUIRE: the backend's peer/child (from the reqid) or the flow matched
  against the children; one CREATE per child at a time (:meth:`Engine.acquire`).
"""

from __future__ import annotations

import random as _random
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from isakmp import dh as _dh
from isakmp.doi import EncapsulationMode, NotifyType, ProtocolId
from isakmp.errors import IsakmpError
from isakmp.payloads import (
    Delete,
    Identification,
    KeyExchange,
    Nonce,
    Notification,
    SecurityAssociation,
)
from isakmp.policy import ChildConfig, child_mode, child_policy, traffic_changed
from isakmp.proposals import (
    build_offer,
    optimistic_proposals,
    parse_transform,
    select,
    validate_answer,
)
from isakmp.ratelimit import RateLimiter
from isakmp.replycache import CacheEntry, ReplyCache
from isakmp.sadb import (
    SADB,
    ExpiryKind,
    Lifetime,
    SadbError,
    SAState,
    randomized_lifetime,
)
from isakmp.sadb import Transform as _SATransform
from isakmp.sakeys import derive_direction, derive_sa_keys, negotiated_transform
from isakmp.selectors import (
    Selectors,
    compile_children,
    host_ts,
    id_to_ts,
    match_child,
    match_compiled,
    needs_ids,
    proposed_from_id,
    proposed_host,
    resolve,
    ts_to_id,
)
from isakmp.timers import TimerHeap
from kink import wire
from kink.config import EngineConfig as Config
from kink.kerberos.acceptor import (
    KRB_AP_ERR_NO_TGT,
    AcceptedRequest,
    AcceptError,
    TGTKey,
    make_ap_rep,
    make_krb_error,
)
from kink.kerberos.apreq import (
    build_ap_req,
    clock_offset_from_error,
    parse_krb_error,
    verify_ap_rep,
)
from kink.kerberos.errors import KDCUnreachable, KerberosError, KrbErrorCode
from kink.kerberos.messages import Ticket
from kink.keys import ticket_key_source
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
    TgtReqPayload,
)

from .api import (
    Address,
    Counters,
    Effect,
    Event,
    EventKind,
    FetchTGT,
    FetchTicket,
    InstallSA,
    RemoveSA,
    Send,
    StateChanged,
)
from .peers import PeerState, user_key
from .transactions import MAX_AUTHENTICATORS, Kind, Txn

__all__ = ["Engine", "SAMeta", "NONCE_SIZE", "STATE_VERSION"]

NONCE_SIZE = 32  # RFC 2409 §5: 8..256 octets
# RFC 4430 §5.5: the Notify for rejections no other error type covers (see docstring)
REFUSED_BY_POLICY = NotifyType.PAYLOAD_MALFORMED
STATE_VERSION = 1
_C = KrbErrorCode
_REPLY = MessageType.REPLY
_ESP = ProtocolId.ESP


@dataclass(slots=True, eq=False)
class SAMeta:
    """What the engine knows about an SA beyond the SADB record."""

    remote_principal: str  # the peer principal the SA was created with
    initiator_principal: str  # client principal of the CREATE (tie-break rank)
    ni: bytes
    user: Any = None  # the initiate(user=...) handle (not persisted)
    in_installed: bool = False
    out_installed: bool = False
    deleting: bool = False
    #: client principal of the user credentials an SA we initiated for ``initiate(user=...)``
    #: was created with (persisted: after a restart the handle is gone, the owner is not)
    user_principal: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "remote_principal": self.remote_principal,
            "initiator_principal": self.initiator_principal,
            "ni": self.ni.hex(),
            "in": self.in_installed,
            "out": self.out_installed,
            "deleting": self.deleting,
        }
        if self.user_principal is not None:
            d["user_principal"] = self.user_principal
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAMeta:
        up = d.get("user_principal")
        return cls(
            d.get("remote_principal", ""),
            d.get("initiator_principal", ""),
            bytes.fromhex(d.get("ni", "")),
            None,
            bool(d.get("in", True)),
            bool(d.get("out", True)),
            bool(d.get("deleting", False)),
            str(up) if up else None,
        )

    @property
    def orphaned_user(self) -> bool:
        """A user's SA whose credentials handle is gone (restart): never rekeyed as daemon."""
        return self.user is None and self.user_principal is not None


class Engine:
    """The KINK engine of one daemon (one identity, one epoch).

    ``config``: the policy; ``epoch``: our epoch (RFC 4430 §3.7; normally the
    POSIX start time); ``acceptor``: a :class:`kink.kerberos.acceptor.Acceptor`
    with our service keys and replay cache (the engine gives it our TGT keys
    for user-to-user); ``rng``: randomness for XIDs, SPIs, nonces, DH keys and
    lifetime jitter (``random.SystemRandom()`` by default; tests seed a
    ``random.Random``); ``local_address``: our KINK address, used for
    ``dynamic`` selectors and ID payloads when the driver does not pass
    ``local=`` to :meth:`receive`.
    """

    def __init__(
        self,
        config: Config,
        *,
        epoch: int,
        acceptor: Any,
        rng: Any = None,
        local_address: str | None = None,
    ) -> None:
        self.epoch = int(epoch) & 0xFFFFFFFF
        self.acceptor = acceptor
        self.rng = rng if rng is not None else _random.SystemRandom()
        self.local_address = local_address
        self.stats = Counters()
        self.sadb = SADB(max_sas=config.limits.max_sas, rng=self.rng)
        self._meta: dict[int, SAMeta] = {}
        self._groups: dict[tuple, set[int]] = {}
        self._timers = TimerHeap()
        self._txns: dict[int, Txn] = {}
        self._acked: dict[int, Txn] = {}
        self._fetches: dict[int, tuple[tuple, list[Txn]]] = {}
        self._fetch_keys: dict[tuple, int] = {}
        self._next_rid = 1
        self._tgt: Any = None  # our TGT (ServiceTicket) for GETTGT / U2U
        self._tgt_keys: list[TGTKey] = []
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
        self._apply_config(config)

    # ------------------------------------------------------------------ config

    def _apply_config(self, config: Config) -> None:
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
        self._child_cfg: dict[tuple[str, str], ChildConfig] = {}
        # (peer, local host, remote host) -> (children, compile_children(...))
        self._compiled: dict[tuple, tuple] = {}
        for ps in self._peers.values():
            self._by_host.setdefault(ps.cfg.address.host, []).append(ps)
            for pr in (ps.cfg.principal, *ps.cfg.allow_principals):
                self._by_principal.setdefault(pr, []).append(ps)
            for ch in ps.cfg.children:
                self._policies[(ps.name, ch.name)] = child_policy(ch)
                self._child_cfg[(ps.name, ch.name)] = ch
        if not hasattr(self, "_cache"):
            self._cache = ReplyCache(self.timers.reply_cache, max(1024, 4 * lim.max_transactions))
            self._rl = RateLimiter(lim.unauth_rate, lim.unauth_burst, lim.max_sources)
        else:
            self._cache.ttl = self.timers.reply_cache
            self._rl.configure(lim.unauth_rate, lim.unauth_burst)
        self._backoff = self.timers.backoff
        self._t_retrans = self._backoff.full_cycle()

    # ------------------------------------------------------------------ helpers

    def _peer_addr(self, peer: PeerState) -> Address:
        return (peer.cfg.address.host, peer.cfg.address.port)

    def _send(self, out: list, data: bytes, addr: Address) -> None:
        self.stats["tx.datagrams"] += 1
        out.append(Send(data, addr))

    def _drop(self, reason: str) -> None:
        self.stats["dropped." + reason] += 1

    def _event(self, out: list, kind: EventKind, peer: str | None, child: str | None = None,
               message: str = "", level: str = "info", **fields: Any) -> None:
        out.append(Event(kind, peer, child, message, level, fields))

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

    # ------------------------------------------------------------------ public API

    def next_deadline(self) -> float | None:
        a = self._timers.next_deadline()
        b = self.sadb.next_event_time()
        if a is None:
            return b
        if b is None:
            return a
        return a if a < b else b

    def sas(self) -> list:
        return list(self.sadb)

    def sa_meta(self, sa_id: int) -> SAMeta | None:
        return self._meta.get(sa_id)

    def peer_states(self) -> list[dict[str, Any]]:
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
                "transactions": sum(1 for t in self._txns.values() if t.peer is p),
            })
        return out

    def start(self, now: float) -> list[Effect]:
        """Initial effects: CREATE every child whose start policy is "start"."""
        out: list[Effect] = []
        for p in self._peers.values():
            for ch in p.cfg.children:
                if self._child_start(p, ch) == "start":
                    self._initiate_child(p, ch, now, out)
        return out

    def initiate(self, peer: str, child: str | None = None, now: float = 0.0, *,
                 user: Any = None) -> list[Effect]:
        out: list[Effect] = []
        p = self._peers.get(peer)
        if p is None:
            self._event(out, EventKind.NEGOTIATION_FAILED, peer, child, "unknown peer",
                        "warning", reason="unknown-peer")
            return out
        if child is None:
            children = p.cfg.children
        else:
            ch = self._child_cfg.get((p.name, child))
            children = (ch,) if ch is not None else ()
        if not children:
            self._event(out, EventKind.NEGOTIATION_FAILED, peer, child, "unknown child",
                        "warning", reason="unknown-child")
            return out
        for ch in children:
            self._initiate_child(p, ch, now, out, user=user)
        return out

    def rekey(self, peer: str, child: str | None = None, now: float = 0.0) -> list[Effect]:
        """Create successors of the current SAs of a peer/child now (operator rekey)."""
        out: list[Effect] = []
        p = self._peers.get(peer)
        if p is None:
            return out
        for ch in p.cfg.children:
            if child is not None and ch.name != child:
                continue
            cur = self._live(p.name, ch.name)
            for r in [r for r in cur if self._meta[r.id].orphaned_user]:
                self._rekey_skipped(r, self._meta[r.id], out)
            cur = [r for r in cur if not self._meta[r.id].orphaned_user]
            if cur:
                m = self._meta.get(cur[0].id)
                self._initiate_child(p, ch, now, out, user=m.user if m else None,
                                     replaces=[r.id for r in cur], force=True)
        return out

    def delete(self, peer: str, child: str | None = None, now: float = 0.0) -> list[Effect]:
        out: list[Effect] = []
        p = self._peers.get(peer)
        if p is None:
            return out
        recs = self.sadb.by_peer(p.name) if child is None else self.sadb.by_child(p.name, child)
        recs = [r for r in recs if not self._meta[r.id].deleting]
        if not recs:
            self._event(out, EventKind.DELETE_DONE, p.name, child, "no SA to delete",
                        deleted=0)
            return out
        self._start_delete(p, recs, now, out, reason="requested")
        return out

    def status(self, peer: str, now: float = 0.0) -> list[Effect]:
        out: list[Effect] = []
        p = self._peers.get(peer)
        if p is None:
            return out
        self._start_status(p, now, out, dpd=False)
        return out

    def acquire(self, selector: Any, now: float) -> list[Effect]:
        """Kernel ACQUIRE: CREATE the child SA the triggering traffic needs.

        ``selector`` is an ``isakmp.sadb.AcquireRequest``. When the backend filled in
        ``peer``/``child`` (isakmp.kernel.xfrm does from the policy's reqid) that child
        is negotiated. Otherwise the flow in ``.selectors`` is matched against the
        children: an xfrm ``Acquire`` (its ``traffic_selectors()``; peers whose
        address is its ``daddr`` first), a :class:`Selectors` or a ``(local, remote)``
        pair of ``TrafficSelector``. The first child whose selectors (``dynamic``
        resolved to the two KINK addresses) cover the flow is negotiated. Repeated
        ACQUIREs while a CREATE of that child is in flight, or while its SA is up, add
        nothing (one CREATE).
        """
        out: list[Effect] = []
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
            self._event(out, EventKind.NEGOTIATION_FAILED, None, None,
                        "ACQUIRE without peer/child or flow selectors", "warning",
                        reason="acquire-no-policy")
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
        self._event(out, EventKind.NEGOTIATION_FAILED, None, None,
                    f"ACQUIRE for {local} <-> {remote} matches no child", "warning",
                    reason="acquire-no-policy")
        return out

    def kernel_expire(self, spi: int, hard: bool, now: float, *,
                      inbound: bool | None = None) -> list[Effect]:
        """Kernel EXPIRE of one SA direction (byte or time limit).

        ``spi`` is our inbound SPI (``inbound=True``), the peer's SPI of an outbound SA
        (``inbound=False``) or unknown (``None``: inbound SPIs first, then outbound
        ones). Soft: the initiator of the SA rekeys it (the responder does nothing,
        RFC 4430 §3.6). Hard: both directions are removed (Event SA_DELETED); a child
        with start = "start" is negotiated again by its initiator side.
        """
        out: list[Effect] = []
        rec = self.sadb.by_spi_in(spi) if inbound is not False else None
        if rec is None and inbound is not True:
            rec = next((r for r in self.sadb if r.spi_out == spi), None)
        if rec is None:
            self.stats["kernel_expire.unknown"] += 1
            return out
        ev = self.sadb.mark_expired(rec.id, ExpiryKind.HARD if hard else ExpiryKind.SOFT, now)
        if ev is not None:
            self._on_expiry(ev, now, out)
        return out

    def handle_timers(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        try:
            for ev in self.sadb.expire(now):
                self._on_expiry(ev, now, out)
            for key in self._timers.pop_due(now):
                self._on_timer(key, now, out)
        except Exception as e:  # pragma: no cover - never raise into the driver
            self.stats["errors.internal"] += 1
            self._event(out, EventKind.NEGOTIATION_FAILED, None, None,
                        f"internal error in timers: {type(e).__name__}: {e}", "error")
        if self._stopping:
            self._maybe_shutdown_done(now, out)
        return out

    def reconfigure(self, config: Config, now: float) -> list[Effect]:
        """Apply a new policy (SIGHUP). Rules, per (peer, child) by name:

        * removed peer or child: CREATEs in flight are abandoned (a best-effort DELETE
          names the SPI we offered, as after a timeout); LARVAL SAs are removed at once;
          established SAs are deleted with a DELETE command to the peer *as configured
          before* (address, principal, ticket): outbound at once, inbound when the
          REPLY arrives (after ``delete_grace``) or the DELETE is given up.
        * changed child: when its traffic selectors, mode or IPsec protocol changed the
          SAs no longer describe the configured traffic, so they are *replaced now*: a
          CREATE under the new policy (either side may do it, like an operator rekey),
          and the old pair is DELETEd after ``delete_grace`` once the new one is up (if
          the CREATE fails, the old SAs stay until their lifetime). Any other change
          (proposals, lifetimes, start, ...) keeps the SAs untouched until their next
          rekey, which negotiates under the new policy. CREATEs in flight finish under
          the policy they started with.
        * unchanged peer/child: untouched (SAs, transactions, timers, tickets).
        * children with start = "start" that have no SA are negotiated.
        """
        out: list[Effect] = []
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
                t.state = "done"  # ticket_result / the TGT reply will not start it
        doomed: dict[str, list] = {}
        for rec in list(self.sadb):
            if not gone(rec.peer, rec.child):
                continue
            m = self._meta[rec.id]
            if m.deleting:
                continue  # a DELETE or its grace timer is already running
            if rec.state == SAState.LARVAL:
                self._remove_sa(rec.id, out, "policy removed")
            else:
                doomed.setdefault(rec.peer, []).append(rec)
        for name, recs in doomed.items():
            ps = self._peers.get(name) or old_peers.get(name)
            if ps is None:
                for r in recs:
                    self._remove_sa(r.id, out, "policy removed")
                continue
            self._event(out, EventKind.SA_DELETED, name, None,
                        f"{len(recs)} SA(s) removed from the configuration: DELETE sent",
                        level="info", deleted=len(recs), reason="policy removed")
            self._start_delete(ps, recs, now, out, reason="policy removed")
        for p in self._peers.values():
            oc = old_cfgs.get(p.name)
            for ch in p.cfg.children:
                prev = oc.child(ch.name) if oc is not None else None
                if prev is None or prev == ch or not traffic_changed(prev, ch):
                    continue
                cur = [r for r in self._live(p.name, ch.name) if r.state == SAState.MATURE
                       and not self._meta[r.id].orphaned_user]
                if cur:
                    self._event(out, EventKind.NEGOTIATION_STARTED, p.name, ch.name,
                                "traffic selectors/mode changed: replacing the SAs",
                                level="info", reason="reconfigured")
                    m = self._meta[cur[0].id]
                    self._initiate_child(p, ch, now, out, user=m.user,
                                         replaces=[r.id for r in cur], force=True)
        for p in self._peers.values():
            for ch in p.cfg.children:
                if self._child_start(p, ch) == "start" and not self._live(p.name, ch.name):
                    self._initiate_child(p, ch, now, out)
        self._changed(out)
        return out

    def _cancel_create(self, t: Txn, now: float, out: list, why: str) -> None:
        """Abandon a CREATE in flight (its policy went away)."""
        spis = dict(t.spis) if t.tries else {}
        self._finish_txn(t)
        self._abort_create_local(t, out)
        if spis:
            isa = IsakmpPayload.from_payloads([Delete(p, [s.to_bytes(4, "big")])
                                               for p, s in spis.items()])
            self._start_txn(Txn(Kind.DELETE, t.peer, started=now, isakmp=isa,
                                reason="cleanup", user=t.user, ukey=t.ukey), now, out)
        self.stats["negotiations.failed.reconfigured"] += 1
        self._event(out, EventKind.NEGOTIATION_FAILED, t.peer.name,
                    t.child.name if t.child else None, why, "info", reason="reconfigured")

    def shutdown(self, now: float, delete_sas: bool) -> list[Effect]:
        """Orderly stop. Nothing new is started afterwards (no CREATE, rekey, DPD, retry;
        CREATE commands from peers are dropped) and every transaction but DELETEs ends.

        ``delete_sas=False``: SAs stay installed (for a restart with the state file);
        Event SHUTDOWN_DONE at once. ``delete_sas=True``: outbound SAs are removed at
        once and a DELETE per peer is sent; the driver keeps calling ``receive`` and
        ``handle_timers`` (bounded: at most one retransmission cycle, see
        :meth:`shutdown_deadline`) so that the DELETEs are retransmitted; the inbound
        SAs are removed when their DELETE is answered or given up, and Event
        SHUTDOWN_DONE (``fields``: ``answered``, ``given_up``) follows the last one,
        at the latest at :meth:`shutdown_deadline` (a timer: DELETEs still waiting
        for a ticket are given up then). Calling ``shutdown`` again before that
        finishes at once: the remaining DELETEs are given up, every SA is removed.
        """
        out: list[Effect] = []
        if self._stopping:
            if not self._shutdown_emitted:
                self._force_shutdown_done(now, out)
            return out
        self._stopping = True
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
                t.state = "done"
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
        for p in self._peers.values():
            recs = [r for r in self.sadb.by_peer(p.name)
                    if r.state != SAState.LARVAL and not self._meta[r.id].deleting]
            if recs:
                self._start_delete(p, recs, now, out, reason="shutdown")
        busy = {sa_id for t in self._delete_txns() for sa_id in t.sa_ids}
        for rec in list(self.sadb):
            if rec.id not in busy:
                self._remove_sa(rec.id, out, "shutdown")
        self._changed(out)
        self._timers.set(("shutdown",), self._shutdown_until)
        self._maybe_shutdown_done(now, out)
        return out

    def shutdown_deadline(self, now: float) -> float | None:
        """After :meth:`shutdown` (delete_sas=True): when the driver may stop waiting for
        Event SHUTDOWN_DONE (one full retransmission cycle plus a KDC round); None once
        it was emitted."""
        if not self._stopping or self._shutdown_emitted:
            return None
        return self._shutdown_until

    def _delete_txns(self) -> list[Txn]:
        ts = [t for t in self._txns.values() if t.kind == Kind.DELETE and t.state != "done"]
        ts.extend(t for t in self._waiting_txns() if t.kind == Kind.DELETE
                  and t.state != "done")
        return ts

    def _maybe_shutdown_done(self, now: float, out: list) -> None:
        if not self._stopping or self._shutdown_emitted:
            return
        if now >= self._shutdown_until:
            self._force_shutdown_done(now, out)
        elif not self._delete_txns():
            for rec in list(self.sadb):
                self._remove_sa(rec.id, out, "shutdown")
            self._shutdown_finished(now, out)

    def _force_shutdown_done(self, now: float, out: list) -> None:
        for t in self._delete_txns():
            self._shutdown_stats["given_up"] += 1
            self._finish_txn(t)
        for rec in list(self.sadb):
            self._remove_sa(rec.id, out, "shutdown")
        self._shutdown_finished(now, out)

    def _shutdown_finished(self, now: float, out: list) -> None:
        self._shutdown_emitted = True
        self._txns.clear()
        self._timers = TimerHeap()
        st = self._shutdown_stats
        self._event(out, EventKind.SHUTDOWN_DONE, None, None,
                    f"shutdown complete: {st['answered']} DELETE(s) answered, "
                    f"{st['given_up']} given up", answered=st["answered"],
                    given_up=st["given_up"], sas=len(self.sadb))

    def ticket_result(self, request_id: int, ticket: Any, error: Any, now: float) -> list[Effect]:
        out: list[Effect] = []
        ent = self._fetches.pop(request_id, None)
        if ent is None:
            return out
        key, txns = ent
        self._fetch_keys.pop(key, None)
        if error is not None or ticket is None:
            for t in txns:
                if t.state == "done":
                    continue
                t.peer.kdc_failures += 1
                if isinstance(error, KDCUnreachable):  # say so plainly; details in the log
                    self._fail(t, now, out, "kdc-unreachable",
                               f"KDC unreachable: cannot get a ticket for "
                               f"{t.peer.cfg.principal} ({error})")
                else:
                    self._fail(t, now, out, "kdc", f"cannot get a ticket: {error}")
            if self._stopping:
                self._maybe_shutdown_done(now, out)
            return out
        for t in txns:
            t.peer.kdc_failures = 0
            t.peer.tickets[t.ukey] = ticket
            t.ticket = ticket
            if t.state == "ticket":
                self._begin(t, now, out)
        if self._stopping:
            self._maybe_shutdown_done(now, out)
        return out

    def tgt_result(self, request_id: int, tgt: Any, error: Any, now: float) -> list[Effect]:
        out: list[Effect] = []
        if request_id != self._tgt_rid:
            return out
        self._tgt_rid = None
        if error is not None or tgt is None:
            self._event(out, EventKind.NEGOTIATION_FAILED, None, None,
                        f"cannot get our TGT: {error}", "warning", reason="kdc")
            return out
        self._tgt = tgt
        k = TGTKey.from_ticket(tgt)
        # keep the previous keys too: U2U tickets made for an older TGT stay valid
        self._tgt_keys = [k] + [x for x in self._tgt_keys if x.key != k.key][:3]
        self.acceptor.set_tgt_keys(list(self._tgt_keys))
        return out

    # ------------------------------------------------------------------ persistence

    def export_state(self, now: float, *, include_keys: bool = False) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "sadb": self.sadb.export_state(
                now, include_keys=include_keys,
                selectors_encoder=lambda s: s.to_json() if s is not None else None),
            "meta": {str(k): m.to_dict() for k, m in self._meta.items()},
            "peers": {n: p.to_dict() for n, p in self._peers.items()},
        }

    def import_state(self, data: dict[str, Any], now: float) -> list[Effect]:
        """Load a state file written by :meth:`export_state`; the SAs are assumed still
        installed in the backend (returns no InstallSA).

        Timers resume: SA soft/hard lifetimes (re-based on ``now``), DPD of every peer
        with SAs (armed ``dpd`` seconds from ``now``: silence before the restart is not
        counted), the DELETE of rekeyed SAs we initiated (``delete_grace`` from ``now``),
        the final removal of SAs that were being deleted and the check for superseded
        responder pairs (bound counted from ``now``). Transactions in flight
        are not persisted; the peers' epochs and clock offsets are. SAs that belonged
        to a user (``SAMeta.user_principal``) come back without their credentials
        handle and are not rekeyed (Event REKEY_SKIPPED at their soft lifetime).
        """
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported engine state version {data.get('version')!r}")
        recs = self.sadb.import_state(data["sadb"], now,
                                      selectors_decoder=Selectors.from_json)
        metas = data.get("meta", {})
        grace = self.timers.delete_grace
        for r in recs:
            d = metas.get(str(r.id))
            m = SAMeta.from_dict(d) if d else SAMeta("", "", b"", None, True, True)
            self._meta[r.id] = m
            self._group_add(r)
            if m.deleting:
                self._timers.set(("grace", r.id), now + grace)
            elif r.initiator and r.replaced_by is not None:
                self._timers.set(("rekeydel", r.id), now + grace)
        for r in recs:
            if not r.initiator and r.state == SAState.MATURE:
                self._check_superseded(r, now)
        for n, d in data.get("peers", {}).items():
            if n in self._peers:
                self._peers[n].load(d)
        for p in self._peers.values():
            if self.sadb.by_peer(p.name):
                if p.last_heard is None:
                    p.last_heard = now  # DPD counts silence from the restart on
                self._arm_dpd(p, now)
        return []

    # ------------------------------------------------------------------ receive

    def receive(self, data: bytes, addr: Address, now: float, *,
                local: Address | None = None) -> list[Effect]:
        """A datagram from ``addr`` (to our ``local`` address, if the driver knows it)."""
        out: list[Effect] = []
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
            elif t == MessageType.GETTGT:
                self._on_gettgt(msg, addr, now, out)
            else:
                self._on_command(msg, addr, now, local, out)
        except Exception as e:  # never raise into the driver; counted and reported
            self.stats["errors.internal"] += 1
            self._drop("internal-error")
            self._event(out, EventKind.NEGOTIATION_FAILED, None, None,
                        f"internal error on receive: {type(e).__name__}: {e}", "error")
        if self._stopping:
            self._maybe_shutdown_done(now, out)
        return out

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
        self.stats[f"errors.sent.kink-{int(e.error_code)}"] += 1
        self._send(out, data, addr)

    # -- responder: authentication -----------------------------------------------------

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
            self._drop("rate-limited")
            return None
        try:
            acc = self.acceptor.accept(apreq.ap_req, now, client_addr=host)
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
        self.stats[f"errors.sent.krb-{code}"] += 1
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
        for p in self._by_host.get(host, ()):
            if client == p.cfg.principal or client in p.cfg.allow_principals:
                return p
        cands = self._by_principal.get(client)
        return cands[0] if cands else None

    def _reply_bytes(self, xid: int, acc: AcceptedRequest, inner: list, encrypt: bool,
                     ack_request: bool = False) -> bytes:
        payloads = [ApRepPayload(self.epoch, make_ap_rep(acc)), *inner]
        return wire.encode(_REPLY, xid, payloads, ack_request=ack_request,
                           key=(acc.enctype, acc.session_key),
                           encrypt_from=1 if (encrypt and inner) else None)

    # -- responder: commands ---------------------------------------------------------

    def _on_command(self, msg: wire.KinkMessage, addr: Address, now: float,
                    local: Address | None, out: list) -> None:
        auth = self._authenticate(msg, addr, now, out)
        if auth is None:
            return
        acc, apreq = auth
        client = acc.client
        peer = self._peer_for(client, addr[0])
        if peer is not None:
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
            pname, cname = self._refused_policy(msg, addr, local)
            inner = self._refusal(REFUSED_BY_POLICY, out, pname, cname,
                                  f"principal {client} is not allowed"
                                  + (f" by peer {pname}" if pname else ""), client,
                                  policy=pname)
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
            self._timers.set(("ackwait", key), now + self._backoff.delay(1))
        self._send(out, reply, addr)

    def _cache_gone(self, key: tuple, e: CacheEntry, now: float, out: list) -> None:
        if e.pending_sas:
            self._ack_timeout(key, e, now, out)

    def _refused_policy(self, msg: wire.KinkMessage, addr: Address,
                        local: Address | None) -> tuple[str | None, str | None]:
        """For the log of a refused principal: the peer configured for the source address
        and, for a CREATE, its child whose selectors the request asks for (best effort)."""
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
                 why: str, principal: str, protocol: int = 0, spi: bytes = b"",
                 data: bytes = b"", **fields: Any) -> list:
        self.stats[f"errors.sent.notify-{int(notify)}"] += 1
        self._event(out, EventKind.REQUEST_REFUSED, peer, child,
                    f"refused request of {principal}: {why}", "warning",
                    principal=principal, notify=NotifyType(notify).name
                    if notify in NotifyType._value2member_map_ else int(notify), reason=why,
                    policy=child or fields.get("policy"))
        return [IsakmpPayload.from_payloads([Notification(int(notify), protocol, spi, data)])]

    def _isakmp_chain(self, msg: wire.KinkMessage) -> tuple[list | None, list | None]:
        """(ISAKMP payloads, None) or (None, error inner payloads for the REPLY)."""
        isa = msg.find(IsakmpPayload)
        if isa is None:
            return [], None
        if not isa.qm_version_ok:
            self.stats["errors.sent.kink-6"] += 1
            return None, [ErrorPayload(int(ErrorCode.BADQMVERS))]
        try:
            return isa.payloads(), None
        except IsakmpError as e:
            self.stats[f"errors.sent.notify-{int(e.notify)}"] += 1
            return None, [IsakmpPayload.from_payloads([Notification(int(e.notify), 0, b"",
                                                                    e.data)])]

    def _resp_create(self, msg: wire.KinkMessage, acc: AcceptedRequest, peer: PeerState,
                     addr: Address, local: Address | None, now: float,
                     out: list) -> tuple[list, bool, list[int] | None]:
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
        if sa is None or nonce is None or not 8 <= len(nonce.data) <= 256:
            return self._refusal(M.PAYLOAD_MALFORMED, out, peer.name, None,
                                 "CREATE without SA or valid Nonce", client), False, None
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
            return self._refusal(M.PAYLOAD_MALFORMED, out, peer.name, None,
                                 f"bad ID payload: {e}", client), False, None
        child = self._match_child(peer, local_host, addr[0], lkey, rkey)
        if child is None:
            return self._refusal(REFUSED_BY_POLICY, out, peer.name, None,
                                 f"traffic selectors {remote_ts} <-> {local_ts} match no child",
                                 client, policy="selectors"), False, None
        policy = self._policies[(peer.name, child.name)]
        try:
            sel = select(sa, policy)
            c = sel.chosen[0]
            proto = c.protocol_id
            if len(sel.chosen) != 1 or proto not in (ProtocolId.ESP, ProtocolId.AH):
                raise IsakmpError("only single ESP or AH SAs", notify=M.NO_PROPOSAL_CHOSEN)
            transform = negotiated_transform(c)
        except IsakmpError as e:
            return self._refusal(e.notify, out, peer.name, child.name, f"proposal: {e}",
                                 client), False, None
        spi_b = c.proposal.spi
        if len(spi_b) != 4:
            return self._refusal(M.INVALID_SPI, out, peer.name, child.name, "SPI size",
                                 client, proto, spi_b), False, None
        spi_i = int.from_bytes(spi_b, "big")
        if spi_i < 256 or self.sadb.by_spi_out(proto, spi_i, peer.name) is not None:
            return self._refusal(M.INVALID_SPI, out, peer.name, child.name,
                                 f"SPI {spi_i:08x} already in use", client, proto,
                                 spi_b), False, None
        secret = b""
        dh = None
        if sel.pfs_group is not None:
            if ke is None:
                return self._refusal(M.PAYLOAD_MALFORMED, out, peer.name, child.name,
                                     "PFS group without KE", client), False, None
            try:
                dh = _dh.new(sel.pfs_group, self.rng)
                secret = dh.shared(ke.data)
            except ValueError as e:
                return self._refusal(M.INVALID_KEY_INFORMATION, out, peer.name, child.name,
                                     f"KE: {e}", client), False, None
        elif ke is not None:
            return self._refusal(M.INVALID_PAYLOAD_TYPE, out, peer.name, child.name,
                                 "KE without PFS policy", client, data=b"\x04"), False, None
        three_way = (not sel.optimistic) or dh is not None
        nr = self._nonce() if three_way else b""
        try:
            spi_r = self.sadb.allocate_spi(proto)
        except SadbError as e:
            return self._refusal(e.notify, out, peer.name, child.name, str(e),
                                 client), False, None
        keys = derive_sa_keys(ticket_key_source(acc.enctype, acc.session_key, peer.cfg.prf),
                              protocol=proto, transform=transform,
                              spi_initiator=spi_i, spi_responder=spi_r, ni=nonce.data, nr=nr,
                              ke_secret=secret)
        mode = c.params.mode if c.params.mode is not None else child_mode(child)
        lifetime = Lifetime(hard_seconds=sel.life_seconds, hard_kilobytes=sel.life_kilobytes)
        rec = self.sadb.add(peer=peer.name, child=child.name, protocol=proto, spi_in=spi_r,
                            transform=transform, mode=mode, now=now, lifetime=lifetime,
                            initiator=False, spi_out=spi_i, keys_in=keys.to_responder,
                            keys_out=keys.to_initiator, selectors=Selectors(local_ts, remote_ts),
                            mature=not three_way)
        meta = SAMeta(client, client, bytes(nonce.data), None, True, not three_way)
        self._meta[rec.id] = meta
        self._group_add(rec)
        out.append(InstallSA(rec, "in"))
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
        out.append(InstallSA(rec, "out"))
        self._established(rec, peer, now, out, "responder")
        return inner, False, None

    def _established(self, rec: Any, peer: PeerState, now: float, out: list, role: str,
                     rekeyed: bool = False) -> None:
        self.stats["negotiations.succeeded"] += 1
        proto, kw = rec.protocol.name, rec.transform.keyword
        self._event(out, EventKind.SA_REKEYED if rekeyed else EventKind.SA_ESTABLISHED,
                    peer.name, rec.child,
                    f"{proto} SA {rec.spi_in:08x}/{rec.spi_out:08x} {kw} as {role}",
                    spi_in=rec.spi_in, spi_out=rec.spi_out, protocol=proto,
                    transform=kw, role=role,
                    principal=self._meta[rec.id].remote_principal)
        peer.failures.pop(rec.child, None)
        self._resolve_duplicates(peer, rec, now, out)
        if not rec.initiator:
            self._check_superseded(rec, now)
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
        self._timers.cancel(("ackwait", key))
        for sa_id in sas:
            rec = self.sadb.get(sa_id)
            if rec is None or rec.state != SAState.LARVAL:
                continue
            self.sadb.activate(sa_id)
            out.append(InstallSA(rec, "out"))
            self._meta[sa_id].out_installed = True
            self._established(rec, peer, now, out, "responder")

    def _ack_timeout(self, key: tuple, e: CacheEntry, now: float, out: list) -> None:
        sas, e.pending_sas = e.pending_sas or [], None
        self._timers.cancel(("ackwait", key))
        gone: dict[int, list[bytes]] = {}
        for sa_id in sas:
            rec = self.sadb.get(sa_id)
            if rec is not None and rec.state == SAState.LARVAL:
                gone.setdefault(int(rec.protocol), []).append(rec.spi_in.to_bytes(4, "big"))
                self._remove_sa(sa_id, out, "no ACK", event=False)
                self.stats["negotiations.failed.no-ack"] += 1
                self._event(out, EventKind.NEGOTIATION_FAILED, e.peer, rec.child,
                            "no ACK for the 3-way CREATE", "warning", reason="no-ack")
        peer = self._peers.get(e.peer) if e.peer is not None else None
        if gone and peer is not None:
            # the initiator may have installed the pair (only its ACKs were lost): a
            # best-effort DELETE with our inbound SPI makes it drop its half too
            isa = IsakmpPayload.from_payloads([Delete(p, s) for p, s in gone.items()])
            self._start_txn(Txn(Kind.DELETE, peer, started=now, isakmp=isa, reason="no-ack"),
                            now, out)

    def _resp_delete(self, msg: wire.KinkMessage, acc: AcceptedRequest, peer: PeerState,
                     now: float, out: list) -> list:
        pls, err = self._isakmp_chain(msg)
        if err is not None:
            return err
        client = acc.client
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
                m = self._meta[rec.id]
                if client != m.remote_principal and client != peer.cfg.principal:
                    notes.append(Notification(NotifyType.AUTHENTICATION_FAILED, d.protocol_id,
                                              spi_b))
                    self._event(out, EventKind.REQUEST_REFUSED, peer.name, rec.child,
                                f"{client} may not delete an SA of {m.remote_principal}",
                                "warning", principal=client, reason="foreign-sa")
                    continue
                ours.append(rec.spi_in.to_bytes(4, "big"))
                self._local_delete(rec, now, out, "deleted by peer")
                ch = peer.cfg.child(rec.child)
                if ch is not None and self._child_start(peer, ch) == "start":
                    # keep "start" children up (like strongSwan's close_action=start); the
                    # retry does nothing if a successor (rekey, collision winner) is live
                    self._schedule_retry(peer, ch, now)
            if ours:
                reply.append(Delete(d.protocol_id, ours))
        reply.extend(notes)
        if not reply:
            return []
        return [IsakmpPayload.from_payloads(reply)]

    def _resp_status(self, msg: wire.KinkMessage, peer: PeerState, out: list) -> list:
        pls, err = self._isakmp_chain(msg)
        if err is not None:
            return err
        for p in pls:
            if type(p) is Notification:
                self._event(out, EventKind.NOTIFY_RECEIVED, peer.name, None,
                            f"notify {p.notify_type} in STATUS", notify=int(p.notify_type))
        return []

    # -- responder: GETTGT -------------------------------------------------------------

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
            self.stats["errors.sent.kink-7"] += 1
            self._send(out, wire.encode(_REPLY, msg.xid, [ErrorPayload(ErrorCode.U2UDENIED)]),
                       addr)
            return
        if req.princ_name != me:
            err = make_krb_error(_C.KRB_AP_ERR_NOT_US, now, sname=me)
            self.stats["errors.sent.krb-35"] += 1
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

    # ------------------------------------------------------------------ epochs / liveness

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
        # RFC 4430 §3.7: the peer lost its state; SAs created with that principal are invalid
        self.stats["peers.rebooted"] += 1
        victims = [r for r in self.sadb.by_peer(peer.name)
                   if r.state != SAState.LARVAL
                   and self._meta[r.id].remote_principal == principal]
        again = self._reinit.setdefault(peer.name, {})
        for r in victims:
            if r.initiator and r.replaced_by is None:
                again.setdefault(r.child, self._meta[r.id].user)
            self._remove_sa(r.id, out, "peer rebooted")
        for host, port, pr, xid in [k for k in self._cache._d if k[2] == principal]:
            e = self._cache._d.pop((host, port, pr, xid))
            self._cache_gone((host, port, pr, xid), e, now, out)
        self._event(out, EventKind.PEER_REBOOTED, peer.name, None,
                    f"{principal} changed epoch {old:#x} -> {epoch:#x}; "
                    f"{len(victims)} SA(s) deleted", "warning", principal=principal,
                    old_epoch=old, epoch=epoch, deleted=len(victims))
        self._timers.set(("reinit", peer.name), now)

    def _heard(self, peer: PeerState, now: float, out: list) -> None:
        peer.last_heard = now
        if peer.dead:
            peer.dead = False
            self._event(out, EventKind.PEER_ALIVE, peer.name, None, "peer answers again")

    def _arm_dpd(self, peer: PeerState, now: float) -> None:
        if peer.cfg.dpd and ("dpd", peer.name) not in self._timers:
            base = peer.last_heard if peer.last_heard is not None else now
            self._timers.set(("dpd", peer.name), base + peer.cfg.dpd)

    def _on_dpd(self, peer: PeerState, now: float, out: list) -> None:
        if not peer.cfg.dpd or not self.sadb.by_peer(peer.name):
            return
        last = peer.last_heard if peer.last_heard is not None else now
        if now - last < peer.cfg.dpd:
            self._timers.set(("dpd", peer.name), last + peer.cfg.dpd)
            return
        if peer.dpd_xid is None:
            self.stats["dpd.probes"] += 1
            self._start_status(peer, now, out, dpd=True)
        self._timers.set(("dpd", peer.name), now + peer.cfg.dpd)

    def _peer_dead(self, peer: PeerState, now: float, out: list) -> None:
        peer.dead = True
        recs = self.sadb.by_peer(peer.name)
        by_proto: dict[int, list[bytes]] = {}
        for r in recs:
            if r.state != SAState.LARVAL:
                by_proto.setdefault(int(r.protocol), []).append(r.spi_in.to_bytes(4, "big"))
            self._remove_sa(r.id, out, "peer dead")
        if by_proto:
            # best effort: if the peer is alive after all (lossy path), it drops its half too
            isa = IsakmpPayload.from_payloads([Delete(p, s) for p, s in by_proto.items()])
            self._start_txn(Txn(Kind.DELETE, peer, started=now, isakmp=isa, reason="peer-dead"),
                            now, out)
        self._event(out, EventKind.PEER_DEAD, peer.name, None,
                    f"no answer to STATUS; {len(recs)} SA(s) deleted", "warning",
                    deleted=len(recs))
        self._changed(out)
        for ch in peer.cfg.children:
            if self._child_start(peer, ch) == "start":
                self._schedule_retry(peer, ch, now)

    # ------------------------------------------------------------------ initiator

    def _live(self, peer: str, child: str) -> list:
        meta = self._meta
        return [r for r in self.sadb.by_child(peer, child)
                if r.state in (SAState.MATURE, SAState.LARVAL) and r.replaced_by is None
                and not meta[r.id].deleting]

    def _initiate_child(self, peer: PeerState, child: ChildConfig, now: float, out: list, *,
                        user: Any = None, replaces: list[int] | None = None,
                        force: bool = False) -> None:
        if self._stopping:
            return
        uk = user_key(user)
        cur = self._creating.get((peer.name, child.name, uk))
        if cur is not None and cur.state != "done":
            return  # already negotiating (sent, or waiting for a ticket/TGT)
        if not force and not replaces:
            mature = [r for r in self._live(peer.name, child.name) if r.state == SAState.MATURE]
            if mature and user is None:
                return  # already up
        limit = self.config.limits.max_transactions
        if len(self._creating) >= limit:  # CREATEs in flight or waiting for a ticket
            # Bounded: refuse (and, for "start" children and rekeys, retry later) rather
            # than let new negotiations pile up; DELETE and STATUS are never refused.
            self.stats["negotiations.failed.too-many-transactions"] += 1
            self._event(out, EventKind.NEGOTIATION_FAILED, peer.name, child.name,
                        f"too many concurrent transactions (limit {limit})", "warning",
                        reason="too-many-transactions")
            if replaces or self._child_start(peer, child) == "start":
                self._schedule_retry(peer, child, now)
            return
        t = Txn(Kind.CREATE, peer, user=user, ukey=uk, started=now, child=child,
                policy=self._policies[(peer.name, child.name)], replaces=list(replaces or ()))
        self.stats["negotiations.started"] += 1
        if replaces:
            self.stats["rekeys"] += 1
        self._event(out, EventKind.NEGOTIATION_STARTED, peer.name, child.name,
                    "rekey" if replaces else "create", level="debug")
        self._start_txn(t, now, out)

    def _waiting_txns(self) -> list[Txn]:
        ws = [t for _, ts in self._fetches.values() for t in ts]
        for ts in self._tgt_waiters.values():
            ws.extend(ts)
        return ws

    def _start_status(self, peer: PeerState, now: float, out: list, dpd: bool) -> None:
        if self._stopping:
            return
        t = Txn(Kind.STATUS, peer, started=now, dpd=dpd)
        if dpd:
            peer.dpd_xid = 1  # a DPD probe is in progress
        self._start_txn(t, now, out)

    def _start_delete(self, peer: PeerState, recs: list, now: float, out: list,
                      reason: str) -> None:
        by_proto: dict[int, list[bytes]] = {}
        ids = []
        user = None
        for r in recs:
            m = self._meta[r.id]
            if m.deleting and reason != "shutdown":
                continue
            if m.out_installed:
                out.append(RemoveSA(r, "out"))
                m.out_installed = False
            m.deleting = True
            if r.state != SAState.DEAD:
                r.state = SAState.DYING
            ids.append(r.id)
            user = user or m.user
            by_proto.setdefault(int(r.protocol), []).append(r.spi_in.to_bytes(4, "big"))
        if not ids:
            return
        isa = IsakmpPayload.from_payloads([Delete(p, s) for p, s in by_proto.items()])
        t = Txn(Kind.DELETE, peer, started=now, isakmp=isa, sa_ids=ids, reason=reason,
                user=user, ukey=user_key(user))
        self._start_txn(t, now, out)

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
                t.state = "tgt"
                self._tgt_waiters.setdefault(peer.name, []).append(t)
                if peer.name not in self._gettgt:
                    g = Txn(Kind.GETTGT, peer, started=now)
                    self._gettgt[peer.name] = g
                    self._begin(g, now, out)
                return
            u2u = peer.peer_tgt
        t.state = "ticket"
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

    def _begin(self, t: Txn, now: float, out: list) -> None:
        """Ticket in hand (or not needed): build the command and send it."""
        t.xid = self._new_xid()
        t.state = "sent"
        t.tries = 0
        t.sent = []
        t.offset = t.peer.clock_offset
        if t.kind == Kind.CREATE:
            try:
                self._build_create(t, now, out)
            except (IsakmpError, SadbError, ValueError) as e:
                self._txns[t.xid] = t
                self._fail(t, now, out, "local", f"cannot build CREATE: {e}")
                return
        self._txns[t.xid] = t
        self._transmit(t, now, out)

    def _build_create(self, t: Txn, now: float, out: list) -> None:
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
        remote_host = peer.cfg.address.host
        sel_local = resolve(child.local_ts[0], local_host)
        sel_remote = resolve(child.remote_ts[0], remote_host)
        if needs_ids(child) and sel_local.network is not None and sel_remote.network is not None:
            pls.append(ts_to_id(sel_local))  # IDci
            pls.append(ts_to_id(sel_remote))  # IDcr
        t.selectors = Selectors(sel_local, sel_remote)
        t.isakmp = IsakmpPayload.from_payloads(pls)
        if t.dh is None:
            # RFC 4430 §3.2: inbound SA of the optimistic proposal before sending
            prop, tr = optimistic_proposals(offer)[0]
            p = parse_transform(tr)
            transform = _SATransform.negotiated(proto, p.transform_id, p.key_length, p.auth)
            tk = t.ticket
            # the initiator's direction only (the responder's is not known yet)
            keys_in = derive_direction(ticket_key_source(tk.enctype, tk.session_key,
                                                         peer.cfg.prf), proto, transform, spi, t.ni)
            rec = self.sadb.add(peer=peer.name, child=child.name, protocol=proto, spi_in=spi,
                                transform=transform, mode=child_mode(child), now=now,
                                lifetime=self._own_lifetime(child, p.life_seconds,
                                                            p.life_kilobytes),
                                initiator=True, keys_in=keys_in,
                                selectors=t.selectors, mature=False)
            self._meta[rec.id] = SAMeta(peer.cfg.principal, tk.client, t.ni, t.user, True, False,
                                        user_principal=tk.client if t.user is not None else None)
            self._group_add(rec)
            t.larval = [rec.id]
            out.append(InstallSA(rec, "in"))

    def _own_lifetime(self, child: ChildConfig, secs: int | None, kbs: int | None) -> Lifetime:
        tr = self._t_retrans
        hard = float(secs) if secs is not None else None
        t_rekey = max(2 * tr, child.lifetime - child.rekey_time)
        return randomized_lifetime(self.rng, hard_seconds=hard, t_retrans=tr, t_rekey=t_rekey,
                                   hard_kilobytes=kbs)

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
        self._timers.set(("rtx", t.xid), now + self._backoff.delay(t.tries))

    def _finish_txn(self, t: Txn) -> None:
        t.state = "done"
        if t.kind == Kind.CREATE:
            k = (t.peer.name, t.child.name, t.ukey)
            if self._creating.get(k) is t:
                del self._creating[k]
        self._txns.pop(t.xid, None)
        self._timers.cancel(("rtx", t.xid))
        if t.dpd:
            t.peer.dpd_xid = None

    def _abort_create_local(self, t: Txn, out: list) -> None:
        for sa_id in t.larval:
            if self.sadb.get(sa_id) is not None:
                self._remove_sa(sa_id, out, "negotiation failed", event=False)
        t.larval = []
        for spi in t.spis.values():
            self.sadb.release_spi(spi)

    def _fail(self, t: Txn, now: float, out: list, reason: str, message: str) -> None:
        self._finish_txn(t)
        peer = t.peer
        if t.kind == Kind.CREATE:
            spis = dict(t.spis) if t.tries else {}
            self._abort_create_local(t, out)
            if reason == "timeout" and spis:
                # The responder may have created the SA and only its REPLYs were lost: a
                # best-effort DELETE naming our inbound SPI removes such an orphan (the
                # responder answers INVALID-SPI when it has nothing).
                isa = IsakmpPayload.from_payloads([Delete(p, [s.to_bytes(4, "big")])
                                                   for p, s in spis.items()])
                self._start_txn(Txn(Kind.DELETE, peer, started=now, isakmp=isa,
                                    reason="cleanup", user=t.user, ukey=t.ukey), now, out)
            self.stats[f"negotiations.failed.{reason}"] += 1
            self._event(out, EventKind.NEGOTIATION_FAILED, peer.name,
                        t.child.name if t.child else None, message, "warning", reason=reason)
            if t.child is not None:
                peer.failures[t.child.name] = peer.failures.get(t.child.name, 0) + 1
                if self._child_start(peer, t.child) == "start" or t.replaces:
                    self._schedule_retry(peer, t.child, now)
        elif t.kind == Kind.GETTGT:
            self._gettgt.pop(peer.name, None)
            for w in self._tgt_waiters.pop(peer.name, []):
                w.xid = 0
                self._fail(w, now, out, reason, f"GETTGT failed: {message}")
        elif t.kind == Kind.DELETE:
            self._delete_done(t, now, out, message)
        elif t.kind == Kind.STATUS:
            if reason == "timeout":
                self._peer_dead(peer, now, out)
            else:
                self._event(out, EventKind.STATUS_DONE, peer.name, None, message, "warning",
                            reason=reason)

    def _schedule_retry(self, peer: PeerState, child: ChildConfig, now: float) -> None:
        n = max(peer.failures.get(child.name, 1), peer.kdc_failures, 1)
        delay = min(self.timers.kdc_backoff_max, self.timers.retransmit * (2 ** min(n, 16)))
        self._timers.set_if_earlier(("retry", peer.name, child.name), now + delay)

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

    # -- initiator: REPLY -----------------------------------------------------------------

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
            # BADQMVERS / INVDOI: we only speak Quick Mode 1.0 and DOI 1, so there is
            # nothing to retry with; the reason says what the peer lacks
            self._fail(t, now, out, f"kink-error-{int(kinkerr.code)}",
                       _kink_error_text(kinkerr.code))
            return
        if t.kind == Kind.CREATE:
            self._create_reply(t, msg, now, out)
        elif t.kind == Kind.DELETE:
            self._finish_txn(t)
            self._delete_done(t, now, out, "")
        else:
            self._finish_txn(t)
            self._event(out, EventKind.STATUS_DONE, peer.name, None, "STATUS answered",
                        level="debug", epoch=aprep.epoch)
            self._arm_dpd(peer, now)

    def _unauth_reply(self, t: Txn, msg: wire.KinkMessage, now: float, out: list) -> None:
        """A REPLY without AP-REP: never aborts the transaction (kink.md §7.6)."""
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
                t.last_error = f"unauthenticated KRB-ERROR {code}"
            except KerberosError:
                t.last_error = "malformed KRB-ERROR"
        kinkerr = msg.find(ErrorPayload)
        if kinkerr is not None:
            t.last_error = f"unauthenticated {_kink_error_text(kinkerr.code)}"

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
                # concurrent commands all learn about the same skew: warn once, not per
                # transaction (estimates differing by network delay are no news)
                news = abs(off - peer.clock_offset) >= 1.0
                peer.clock_offset = off
                self._event(out, EventKind.CLOCK_SKEW_CORRECTED, peer.name, None,
                            f"clock offset to {peer.name} is now {off:+.3f} s",
                            "warning" if news else "debug", offset=off)
                self._changed(out)
                self._restart(t, now, out, retried_skew=True)
                return
        if code in (_C.KRB_AP_ERR_TKT_EXPIRED, _C.KRB_AP_ERR_TKT_NYV) and not t.retried_expired:
            peer.tickets.pop(t.ukey, None)
            self._restart(t, now, out, retried_expired=True, force_new=True)
            return
        self._fail(t, now, out, f"krb-error-{code}", f"peer answered KRB-ERROR {code}")

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
            self._fail(t, now, out, "malformed", f"REPLY: {e}")
            return
        sa = nr = ke = None
        for p in pls:
            tp = type(p)
            if tp is Notification and p.is_error:
                if p.notify_type == NotifyType.INVALID_PAYLOAD_TYPE and \
                        bytes(p.data)[:1] == b"\x04" and t.dh is not None:
                    self._retry_without_ke(t, now, out)
                    return
                name = getattr(p.notify_type, "name", p.notify_type)
                hint = (" (malformed request, or not allowed by the peer's policy: "
                        "principal or traffic selectors)"
                        if p.notify_type == REFUSED_BY_POLICY else "")
                self._fail(t, now, out, f"notify-{int(p.notify_type)}",
                           f"peer refused: notify {name}{hint}")
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
            self._fail(t, now, out, "bad-reply", f"REPLY does not answer our offer: {e}")
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
        try:
            if t.larval:
                sa_id = t.larval[0]
                rec = self.sadb.activate(sa_id, spi_out=spi_r, keys_out=keys_out,
                                         keys_in=keys_in,
                                         transform=transform, lifetime=lifetime)
                if rekey_in:
                    out.append(InstallSA(rec, "in", replace=True))
            else:
                rec = self.sadb.add(peer=peer.name, child=child.name, protocol=proto,
                                    spi_in=spi_i, transform=transform, mode=child_mode(child),
                                    now=now, lifetime=lifetime, initiator=True, spi_out=spi_r,
                                    keys_in=keys_in, keys_out=keys_out,
                                    selectors=t.selectors)
                self._meta[rec.id] = SAMeta(
                    peer.cfg.principal, tk.client, t.ni, t.user, False, False,
                    user_principal=tk.client if t.user is not None else None)
                self._group_add(rec)
                t.larval = [rec.id]
                out.append(InstallSA(rec, "in"))
                self._meta[rec.id].in_installed = True
        except SadbError as e:
            if ack_request:
                self._send_ack(t, now, out, remember=False)
            self._fail(t, now, out, "sadb", f"cannot install: {e}")
            return
        self._finish_txn(t)
        t.larval = []
        out.append(InstallSA(rec, "out"))
        self._meta[rec.id].out_installed = True
        self.stats["sas.installed"] += 1
        if ack_request or not sel.optimistic:
            self._send_ack(t, now, out, remember=True)
        rekeyed = False
        for old_id in t.replaces:
            old = self.sadb.get(old_id)
            if old is not None and old.replaced_by is None and old_id != rec.id:
                self.sadb.replace(old_id, rec.id)
                rekeyed = True
                self._timers.set(("rekeydel", old_id), now + self.timers.delete_grace)
        self._established(rec, peer, now, out, "initiator", rekeyed=rekeyed)

    def _retry_without_ke(self, t: Txn, now: float, out: list) -> None:
        """RFC 4430 §3.2 / kink.md §7.2: the responder does not support KE (Notify
        INVALID-PAYLOAD-TYPE, data = payload type 4). Retry once as a new transaction
        offering only the child's proposals without PFS; a child whose proposals all
        name a DH group fails instead (we never drop PFS the policy requires)."""
        peer, child = t.peer, t.child
        suites = tuple(s for s in t.policy.suites if s.pfs_group is None)
        name = child.name if child else None
        if t.no_ke or not suites:
            why = ("peer does not support KE (PFS) and every proposal of child "
                   f"{name} requires it") if not suites else "peer refused KE again"
            self._fail(t, now, out, f"notify-{int(NotifyType.INVALID_PAYLOAD_TYPE)}", why)
            return
        self.stats["negotiations.retried.no-ke"] += 1
        self._event(out, EventKind.NOTIFY_RECEIVED, peer.name, name,
                    "peer does not support KE (INVALID-PAYLOAD-TYPE 4): retrying without "
                    "KE as a new transaction, without PFS", "warning",
                    notify="INVALID_PAYLOAD_TYPE", reason="retry-without-ke")
        from isakmp.proposals import Policy
        self._restart(t, now, out, no_ke=True, policy=Policy(suites))

    def _send_ack(self, t: Txn, now: float, out: list, remember: bool) -> None:
        tk = t.ticket
        ap_req, _c, _u = build_ap_req(tk, now, t.offset)
        data = wire.encode(MessageType.ACK, t.xid, [ApReqPayload(self.epoch, ap_req)],
                           key=(tk.enctype, tk.session_key))
        self._send(out, data, self._peer_addr(t.peer))
        if remember:
            self._acked[t.xid] = t
            self._timers.set(("acked", t.xid), now + self._t_retrans + 1.0)

    def _reack(self, t: Txn, msg: wire.KinkMessage, addr: Address, now: float,
               out: list) -> None:
        """The responder retransmitted its REPLY (A = 1): our ACK got lost, send a new one."""
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

    def _on_tgt_reply(self, t: Txn, msg: wire.KinkMessage, now: float, out: list) -> None:
        peer = t.peer
        rep = msg.find(TgtRepPayload)
        if rep is None:
            err = msg.find(ErrorPayload)
            if err is not None and err.code == ErrorCode.U2UDENIED:
                self._fail(t, now, out, "u2u-denied", "peer refuses user-to-user (U2UDENIED)")
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
            if w.state != "done":
                self._start_txn(w, now, out)

    # ------------------------------------------------------------------ SA removal / DELETE

    def _delete_done(self, t: Txn, now: float, out: list, problem: str) -> None:
        grace = self.timers.delete_grace if not problem and not self._stopping else 0.0
        if self._stopping:
            self._shutdown_stats["given_up" if problem else "answered"] += 1
        n = 0
        for sa_id in t.sa_ids:
            if self.sadb.get(sa_id) is None:
                continue
            n += 1
            if grace > 0:
                self._timers.set(("grace", sa_id), now + grace)
            else:
                self._remove_sa(sa_id, out, "deleted")
        self._event(out, EventKind.DELETE_DONE, t.peer.name, None,
                    problem or f"DELETE of {n} SA(s) answered", deleted=n,
                    reason=t.reason)
        self._changed(out)

    def _local_delete(self, rec: Any, now: float, out: list, why: str) -> None:
        """Responder side of DELETE: outbound now, inbound after the grace period."""
        m = self._meta[rec.id]
        if m.out_installed:
            out.append(RemoveSA(rec, "out"))
            m.out_installed = False
        if m.deleting:
            return
        m.deleting = True
        rec.state = SAState.DYING
        g = self.timers.delete_grace
        if g > 0:
            self._timers.set(("grace", rec.id), now + g)
        else:
            self._remove_sa(rec.id, out, why)
        self._changed(out)

    def _remove_sa(self, sa_id: int, out: list, why: str, event: bool = True) -> None:
        rec = self.sadb.get(sa_id)
        m = self._meta.pop(sa_id, None)
        if rec is None:
            return
        self._group_del(rec)
        if m is None or m.out_installed:
            out.append(RemoveSA(rec, "out"))
        if m is None or m.in_installed:
            out.append(RemoveSA(rec, "in"))
        self.sadb.delete(sa_id)
        self._timers.cancel(("grace", sa_id))
        self._timers.cancel(("rekeydel", sa_id))
        self._timers.cancel(("superseded", sa_id))
        self.stats["sas.deleted"] += 1
        if event:
            self._event(out, EventKind.SA_DELETED, str(rec.peer), rec.child,
                        f"{rec.protocol.name} SA {rec.spi_in:08x} removed: {why}",
                        spi_in=rec.spi_in, spi_out=rec.spi_out, reason=why)
        self._changed(out)

    def _group_add(self, rec: Any) -> None:
        self._groups.setdefault((rec.peer, rec.child, rec.selectors), set()).add(rec.id)

    def _group_del(self, rec: Any) -> None:
        k = (rec.peer, rec.child, rec.selectors)
        g = self._groups.get(k)
        if g is not None:
            g.discard(rec.id)
            if not g:
                del self._groups[k]

    def _resolve_duplicates(self, peer: PeerState, rec: Any, now: float, out: list) -> None:
        """One pair per (peer, child, selectors): lowest (initiator principal, Ni) wins."""
        g = self._groups.get((rec.peer, rec.child, rec.selectors))
        if g is None or len(g) < 2:
            return
        meta, get = self._meta, self.sadb.get
        live = []
        for i in g:
            r = get(i)
            if r is not None and r.state == SAState.MATURE and r.replaced_by is None \
                    and not meta[i].deleting:
                live.append(r)
        if len(live) < 2:
            return
        winner = min(live, key=lambda r: (meta[r.id].initiator_principal, meta[r.id].ni))
        mine = [r for r in live if r is not winner and r.initiator]
        if mine:
            self.stats["collisions"] += 1
            self._start_delete(peer, mine, now, out, reason="duplicate")

    def _same_initiator(self, rec: Any) -> list:
        """The live MATURE pairs we hold as responder in ``rec``'s (peer, child, selectors)
        created by ``rec``'s initiator principal, oldest first (``rec`` included if live)."""
        g = self._groups.get((rec.peer, rec.child, rec.selectors))
        m = self._meta.get(rec.id)
        if g is None or len(g) < 2 or m is None:
            return []
        who = m.initiator_principal
        meta, get = self._meta, self.sadb.get
        same = []
        for i in g:
            r, mi = get(i), meta.get(i)
            if r is not None and mi is not None and not r.initiator \
                    and r.state == SAState.MATURE and r.replaced_by is None \
                    and not mi.deleting and mi.initiator_principal == who:
                same.append(r)
        same.sort(key=lambda r: (r.created, r.id))
        return same

    def _check_superseded(self, rec: Any, now: float) -> None:
        """A responder pair became MATURE: give the initiator ``delete_grace`` plus a
        retransmission cycle to DELETE the older pairs of the same principal it
        supersedes (see the module docstring), then remove them ourselves."""
        same = self._same_initiator(rec)
        if len(same) < 2:
            return
        when = now + self.timers.delete_grace + self._t_retrans + 1.0
        for r in same[:-1]:
            self._timers.set_if_earlier(("superseded", r.id), when)

    def _drop_superseded(self, rec: Any, now: float, out: list) -> None:
        peer = self._peers.get(rec.peer)
        if peer is None:
            return
        same = self._same_initiator(rec)
        if len(same) < 2 or same[-1] is rec or not any(r is rec for r in same):
            return  # not superseded (any more) by a live newer pair
        new, m = same[-1], self._meta[rec.id]
        self.stats["sas.superseded"] += 1
        self._event(out, EventKind.SA_DELETED, peer.name, rec.child,
                    f"{rec.protocol.name} SA {rec.spi_in:08x}/{rec.spi_out:08x} of "
                    f"{m.initiator_principal} superseded by {new.spi_in:08x}/"
                    f"{new.spi_out:08x} and not deleted by the initiator: removed, "
                    f"DELETE sent", spi_in=rec.spi_in, spi_out=rec.spi_out,
                    principal=m.initiator_principal, reason="superseded")
        self._local_delete(rec, now, out, "superseded")
        isa = IsakmpPayload.from_payloads([Delete(int(rec.protocol),
                                                  [rec.spi_in.to_bytes(4, "big")])])
        self._start_txn(Txn(Kind.DELETE, peer, started=now, isakmp=isa, reason="superseded"),
                        now, out)

    # ------------------------------------------------------------------ timers

    def _on_expiry(self, ev: Any, now: float, out: list) -> None:
        rec = ev.sa
        m = self._meta.get(rec.id)
        if ev.kind == ExpiryKind.HARD:
            # the SADB already dropped the record
            self._group_del(rec)
            if m is not None:
                self._meta.pop(rec.id, None)
                if m.out_installed:
                    out.append(RemoveSA(rec, "out"))
                if m.in_installed:
                    out.append(RemoveSA(rec, "in"))
            self.stats["sas.deleted"] += 1
            self.stats["sas.expired"] += 1
            self._timers.cancel(("grace", rec.id))
            self._timers.cancel(("superseded", rec.id))
            self._event(out, EventKind.SA_DELETED, str(rec.peer), rec.child,
                        f"{rec.protocol.name} SA {rec.spi_in:08x} expired",
                        spi_in=rec.spi_in, spi_out=rec.spi_out, reason="expired")
            self._changed(out)
            peer = self._peers.get(rec.peer)
            if peer is not None and rec.initiator and m is not None and not m.deleting:
                ch = peer.cfg.child(rec.child)
                if ch is not None and self._child_start(peer, ch) == "start" \
                        and not self._live(peer.name, ch.name):
                    self._initiate_child(peer, ch, now, out, user=m.user)
            return
        # SOFT: the initiator of the SA creates its successor (RFC 4430 §3.6)
        if m is None or m.deleting or not rec.initiator or rec.replaced_by is not None:
            return
        peer = self._peers.get(rec.peer)
        ch = peer.cfg.child(rec.child) if peer is not None else None
        if ch is None:
            return
        if m.orphaned_user:
            self._rekey_skipped(rec, m, out)
            return
        self._initiate_child(peer, ch, now, out, user=m.user, replaces=[rec.id])

    def _rekey_skipped(self, rec: Any, m: SAMeta, out: list) -> None:
        """A user's SA whose credentials handle did not survive a restart: it is not
        rekeyed (not as the user, whose ccache we no longer know, and never silently as
        the daemon identity); it runs until its hard lifetime."""
        self.stats["rekeys.skipped"] += 1
        self._event(out, EventKind.REKEY_SKIPPED, str(rec.peer), rec.child,
                    f"{rec.protocol.name} SA {rec.spi_in:08x} of {m.user_principal} is not "
                    f"rekeyed: the user's credentials are unknown since the restart; it "
                    f"expires at its hard lifetime", "warning", spi_in=rec.spi_in,
                    principal=m.user_principal, reason="user-credentials-unavailable",
                    hard_at=rec.hard_at)

    def _on_timer(self, key: tuple, now: float, out: list) -> None:
        kind = key[0]
        if self._stopping and kind not in ("rtx", "grace"):
            return  # ("shutdown",): _maybe_shutdown_done after the timers
        if kind == "rtx":
            t = self._txns.get(key[1])
            if t is None or t.state != "sent":
                return
            if t.tries >= max(1, self.timers.max_tries):
                self._fail(t, now, out, "timeout",
                           "no answer" + (f" (last: {t.last_error})" if t.last_error else ""))
            else:
                self._transmit(t, now, out)
        elif kind == "ackwait":
            e = self._cache._d.get(key[1])
            if e is None or not e.pending_sas:
                return
            if e.tries >= max(1, self.timers.max_tries):
                self._ack_timeout(key[1], e, now, out)
                return
            e.tries += 1
            self.stats["retransmissions"] += 1
            self._send(out, e.reply, e.addr)
            self._timers.set(key, now + self._backoff.delay(e.tries))
        elif kind == "acked":
            self._acked.pop(key[1], None)
        elif kind == "grace":
            if self.sadb.get(key[1]) is not None:
                self._remove_sa(key[1], out, "deleted")
        elif kind == "rekeydel":
            rec = self.sadb.get(key[1])
            peer = self._peers.get(rec.peer) if rec is not None else None
            if rec is not None and peer is not None and not self._meta[rec.id].deleting:
                self._start_delete(peer, [rec], now, out, reason="rekeyed")
        elif kind == "superseded":
            rec = self.sadb.get(key[1])
            if rec is not None and rec.id in self._meta:
                self._drop_superseded(rec, now, out)
        elif kind == "dpd":
            peer = self._peers.get(key[1])
            if peer is not None:
                self._on_dpd(peer, now, out)
        elif kind == "retry":
            peer = self._peers.get(key[1])
            ch = peer.cfg.child(key[2]) if peer is not None else None
            if ch is None:
                return
            if self._live(peer.name, ch.name):
                return
            dying = [r for r in self.sadb.by_child(peer.name, ch.name)
                     if r.initiator and r.state == SAState.DYING and r.replaced_by is None
                     and not self._meta[r.id].deleting
                     and not self._meta[r.id].orphaned_user]
            if dying:
                self._initiate_child(peer, ch, now, out, user=self._meta[dying[0].id].user,
                                     replaces=[dying[0].id])
            elif self._child_start(peer, ch) == "start":
                self._initiate_child(peer, ch, now, out)
        elif kind == "reinit":
            peer = self._peers.get(key[1])
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


_KINK_ERRORS = {
    ErrorCode.PROTOERR: "peer answered KINK_PROTOERR (protocol error)",
    ErrorCode.INVDOI: "peer does not support the IPsec DOI (KINK_INVDOI)",
    ErrorCode.INVMAJ: "peer does not support KINK major version 1 (KINK_INVMAJ)",
    ErrorCode.INTERR: "peer answered KINK_INTERR (internal error)",
    ErrorCode.BADQMVERS: "peer does not support Quick Mode version 1.0 (KINK_BADQMVERS)",
    ErrorCode.U2UDENIED: "peer refuses user-to-user (KINK_U2UDENIED)",
}


def _kink_error_text(code: int) -> str:
    return _KINK_ERRORS.get(code, f"peer answered KINK_ERROR {int(code)}")


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


def _unused() -> None:  # keep names referenced for linters
    _ = (EncapsulationMode, _ESP, Hashable, KrbErrorPayload)
