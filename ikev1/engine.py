"""The sans-I/O IKEv1 engine: Main Mode with pre-shared keys, Quick Mode, Informational
(RFC 2409 §5, §5.4, §5.5, §5.7; RFC 2408 §4.8), NAT traversal (RFC 3947).

Shape of the KINK engine (``isakmp.plugin.KeyExchangeEngine``): every entry point takes
``now`` and returns a list of effects and events (``isakmp.events`` plus the two below);
the driver sends the datagrams (``Send``, the non-ESP marker included on port 4500),
applies ``InstallSA``/``RemoveSA``, and arms one timer at :meth:`IkeV1Engine.next_deadline`.

Main Mode (PSK)::

    I -> R  HDR, SA [, VID(RFC 3947)]
    R -> I  HDR, SA [, VID]
    I -> R  HDR, KE, Ni [, NAT-D, NAT-D]
    R -> I  HDR, KE, Nr [, NAT-D, NAT-D]
    I -> R  HDR*, IDii, HASH_I            (port 4500 when a NAT was detected)
    R -> I  HDR*, IDir, HASH_R

Quick Mode::

    I -> R  HDR*, HASH(1), SA, Ni [, KE] [, IDci, IDcr]
    R -> I  HDR*, HASH(2), SA, Nr [, KE] [, IDci, IDcr] [, N(RESPONDER-LIFETIME)]
    I -> R  HDR*, HASH(3)

The responder keeps no Diffie-Hellman state before the third message (a first message
costs one proposal selection and a small record); first messages from addresses that are
no configured peer are refused before decoding; half-open ISAKMP SAs are capped
(``max_half_open``: when full, the oldest one without DH state is evicted, so a flood
cannot lock a legitimate initiator out once it stops) and expire after
``half_open_timeout``. Aggressive Mode is refused
(PSK + Aggressive Mode exposes an offline-crackable hash). Child SAs live in
``isakmp.childsa`` exactly as KINK's do; their keys come from ``isakmp.sakeys`` with
SKEYID_d and the phase-1 prf as key source.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import random
import struct
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from isakmp import dh as dhmod
from isakmp.attributes import decode_attributes
from isakmp.childsa import ChildSAs, DeleteWanted, PairMeta, RekeyWanted
from isakmp.doi import (
    FLAG_ENCRYPTION,
    EncapsulationMode,
    ExchangeType,
    IdType,
    IpsecAttr,
    LifeType,
    NotifyType,
    PayloadType,
    ProtocolId,
)
from isakmp.errors import IsakmpError, NoProposalChosen, notify_reason
from isakmp.events import (
    DeleteDone,
    Direction,
    InternalError,
    NegotiationFailed,
    NegotiationStarted,
    NotifyReceived,
    PeerAlive,
    PeerDead,
    RequestRefused,
    Role,
    SAEstablished,
    Send,
    ShutdownDone,
)
from isakmp.message import Message
from isakmp.payloads import (
    Delete,
    Hash,
    Identification,
    KeyExchange,
    NatD,
    NatOa,
    Nonce,
    Notification,
    Payload,
    Proposal,
    SecurityAssociation,
    VendorId,
    decode_payloads,
    encode_payloads,
)
from isakmp.plugin import PluginCapabilities, StaticKeySource
from isakmp.policy import ChildConfig, child_mode, child_policy, child_protocol
from isakmp.proposals import Policy, build_offer, select, validate_answer
from isakmp.sadb import SADB, Lifetime
from isakmp.sakeys import derive_sa_keys, negotiated_transform
from isakmp.secret import Secret
from isakmp.selectors import (
    Selectors,
    TrafficSelector,
    host_ts,
    id_to_ts,
    match_child,
    needs_ids,
    resolve,
    ts_to_id,
)
from isakmp.timers import Backoff, TimerHeap

from . import crypto
from .phase1 import (
    Phase1Params,
    build_phase1_offer,
    parse_ike_proposal,
    parse_phase1_transform,
    select_phase1,
)

__all__ = [
    "EngineConfig",
    "IkeV1Engine",
    "IsakmpSAAlive",
    "IsakmpSADeleted",
    "IsakmpSAEstablished",
    "PeerConfig",
    "VID_DPD",
    "VID_RFC3947",
]

#: Vendor ID of RFC 3947 NAT traversal (MD5 of "RFC 3947")
VID_RFC3947 = hashlib.md5(b"RFC 3947").digest()
#: Vendor ID of dead peer detection (RFC 3706 §4.1; version 1.0)
VID_DPD = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")
NON_ESP_MARKER = b"\0\0\0\0"
_NO_COOKIE = bytes(8)
MAX_PENDING_QUICK = 64  # answered Quick Modes per ISAKMP SA waiting for their message 3
IKE_PORT, NATT_PORT = 500, 4500
#: the modes that carry NAT-OA payloads in Quick Mode (RFC 3947 §5.2)
_UDP_TRANSPORT = frozenset({EncapsulationMode.UDP_ENCAPSULATED_TRANSPORT,
                            EncapsulationMode.UDP_ENCAPSULATED_TRANSPORT_DRAFT})
IKEV1_CAPABILITIES = PluginCapabilities(responder_may_lower_lifetime=False)
_IN, _OUT = Direction.IN, Direction.OUT


# --- configuration -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """One IKEv1 peer: where it is, the pre-shared key, phase-1 proposals (swanctl words),
    identities (default: the addresses) and its children."""

    name: str
    address: str
    psk: bytes
    ike_proposals: tuple[str, ...] = ("aes128-sha256-modp2048",)
    children: tuple[ChildConfig, ...] = ()
    local_id: str | None = None
    remote_id: str | None = None
    port: int = IKE_PORT
    ike_lifetime: int = 10800
    start: str = "none"  # none | start | trap (a child's own start overrides it)
    #: dead peer detection (RFC 3706): R-U-THERE after this many seconds on an ISAKMP SA
    #: whose peer announced DPD; None: only answer the peer's
    dpd: float | None = None
    dpd_tries: int = 3  # unanswered R-U-THEREs (one per retry interval) before the peer is dead
    #: force UDP encapsulation: our own NAT-D is a random hash, so both sides see a NAT
    #: and float to 4500 (strongSwan's ``encap = yes``); needs the peer's NAT-T support
    encap: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.psk, Secret):
            object.__setattr__(self, "psk", Secret(bytes(self.psk)))

    def suites(self) -> tuple[Phase1Params, ...]:
        return tuple(parse_ike_proposal(p, life_seconds=self.ike_lifetime)
                     for p in self.ike_proposals)

    def child(self, name: str | None) -> ChildConfig:
        for c in self.children:
            if name is None or c.name == name:
                return c
        raise KeyError(f"peer {self.name} has no child {name!r}")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    local_address: str
    peers: tuple[PeerConfig, ...]
    max_half_open: int = 1024
    half_open_timeout: float = 30.0
    backoff: Backoff = Backoff(initial=1.0, maximum=8.0, tries=5)
    nat_traversal: bool = True
    #: NAT keepalives (RFC 3948 §4: one 0xFF octet to port 4500) while behind a NAT
    nat_keepalive: float = 20.0
    delete_grace: float = 2.0
    max_sas: int = 100_000
    #: the first SA record id (a daemon hosting several key exchanges keeps them apart)
    first_sa_id: int = 1


# --- events of this key exchange -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IsakmpSAEstablished:
    kind: ClassVar[str] = "isakmp-sa-established"
    peer: str
    role: Role
    remote_id: str
    cookies: str  # CKY-I:CKY-R in hex
    nat: bool = False
    child: ClassVar[None] = None


@dataclass(frozen=True, slots=True)
class IsakmpSAAlive:
    """The peer answered our probe on its ISAKMP SA (``probed``: an R-U-THERE was ACKed;
    False: the peer does not do DPD, the SA is up)."""

    kind: ClassVar[str] = "isakmp-sa-alive"
    peer: str
    cookies: str
    probed: bool = True
    nat: bool = False
    child: ClassVar[None] = None


@dataclass(frozen=True, slots=True)
class IsakmpSADeleted:
    kind: ClassVar[str] = "isakmp-sa-deleted"
    peer: str
    cookies: str
    reason: str
    child: ClassVar[None] = None


# --- helpers ------------------------------------------------------------------------------


def _encode_selectors(sel: Any) -> Any:
    return sel.to_json() if sel is not None else None


def identity_payload(ident: str) -> Identification:
    """ID payload of a phase-1 identity: an IP address, ``user@fqdn`` or an FQDN."""
    try:
        return Identification.from_address(ident)
    except ValueError:
        pass
    t = IdType.USER_FQDN if "@" in ident else IdType.FQDN
    return Identification(t, 0, 0, ident.encode())


def identity_text(idp: Identification) -> str:
    if idp.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        return str(idp.address())
    if idp.id_type in (IdType.FQDN, IdType.USER_FQDN):
        return idp.data.decode("utf-8", "replace")
    return f"id-type-{int(idp.id_type)}:{idp.data.hex()}"


def _first(payloads: list, cls: type) -> Any:
    for p in payloads:
        if type(p) is cls:
            return p
    return None


def _responder_lifetime(payloads: list, secs: int | None, kbs: int | None
                        ) -> tuple[int | None, int | None]:
    """The lifetimes of an answered Quick Mode, shortened by the responder's
    RESPONDER-LIFETIME notifies (RFC 2407 §4.6.3.1: SA Life Type/Duration attributes)."""
    for n in payloads:
        if type(n) is not Notification or n.notify_type != NotifyType.RESPONDER_LIFETIME:
            continue
        try:
            attrs = decode_attributes(n.data)
        except IsakmpError:
            continue
        life_type = None
        for a in attrs:
            if a.type == IpsecAttr.SA_LIFE_TYPE:
                life_type = a.int_value
            elif a.type == IpsecAttr.SA_LIFE_DURATION and a.int_value > 0:
                if life_type == LifeType.SECONDS:
                    secs = a.int_value if secs is None else min(secs, a.int_value)
                elif life_type == LifeType.KILOBYTES:
                    kbs = a.int_value if kbs is None else min(kbs, a.int_value)
    return secs, kbs


def _names_by_address(peers: tuple[PeerConfig, ...]) -> dict[str, tuple[str, ...]]:
    """Peer names by their configured address (several entries may name one host)."""
    out: dict[str, list[str]] = {}
    for p in peers:
        out.setdefault(p.address, []).append(p.name)
    return {a: tuple(n) for a, n in out.items()}


def _nat_hash(params: Phase1Params, cky_i: bytes, cky_r: bytes, addr: tuple[str, int]) -> bytes:
    ip = ipaddress.ip_address(addr[0]).packed
    return params.hash_function(cky_i + cky_r + ip + addr[1].to_bytes(2, "big")).digest()


# --- state ---------------------------------------------------------------------------------


@dataclass(eq=False)
class QuickMode:
    mid: int
    role: Role
    child: ChildConfig
    iv: bytes
    ni: bytes = b""
    nr: bytes = b""
    spi: int = 0
    offer: SecurityAssociation | None = None
    dh: Any = None
    ids: list = field(default_factory=list)
    selectors: Selectors | None = None
    keys: Any = None
    sel: Any = None
    rekey_of: int | None = None


@dataclass(eq=False)
class IsakmpSA:
    peer: PeerConfig
    role: Role
    cky_i: bytes
    cky_r: bytes
    remote: tuple[str, int]
    local: tuple[str, int]
    state: str
    created: float
    suites: tuple[Phase1Params, ...] = ()
    params: Phase1Params | None = None
    sai_b: bytes = b""
    natt: bool = False  # both sides announced RFC 3947
    nat: bool = False  # a NAT (or a peer faking one) was detected: UDP encapsulation
    behind_nat: bool = False  # our own address is translated: we send NAT keepalives
    dh: Any = None
    ni: bytes = b""
    nr: bytes = b""
    g_xi: bytes = b""
    g_xr: bytes = b""
    keys: crypto.Phase1Keys | None = None
    iv: bytes = b""
    last_p1: bytes = b""
    remote_id: str = ""
    pending: list = field(default_factory=list)  # children waiting for phase 1
    quick: dict = field(default_factory=dict)  # M-ID -> QuickMode
    replies: OrderedDict = field(default_factory=OrderedDict)  # received -> our answer
    used_mids: set = field(default_factory=set)
    dpd_peer: bool = False  # the peer announced RFC 3706 DPD
    dpd_seq: int = 0
    dpd_unanswered: int = 0
    probing: bool = False  # an R-U-THERE of `kinkctl check` is out (its ACK is reported)

    @property
    def our_cookie(self) -> bytes:
        return self.cky_i if self.role is Role.INITIATOR else self.cky_r

    @property
    def cookies(self) -> str:
        return f"{self.cky_i.hex()}:{self.cky_r.hex()}"

    @property
    def established(self) -> bool:
        return self.state == "established"


class _Failed(Exception):
    def __init__(self, reason: str, notify: int | None, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason, self.notify, self.detail = reason, notify, detail


# --- the engine ----------------------------------------------------------------------------


def _counted(fn):
    """Count what an entry point reports under the daemon's metric families
    (``negotiations.started``, ``negotiations.succeeded``, ``negotiations.failed.<reason>``,
    ``rekeys``), once per outermost call."""

    @functools.wraps(fn)
    def entry(self, *args, **kwargs):
        self._depth += 1
        try:
            out = fn(self, *args, **kwargs)
        finally:
            self._depth -= 1
        if not self._depth:
            st = self.stats
            for e in out:
                t = type(e)
                if t is NegotiationFailed:
                    st[f"negotiations.failed.{e.reason}"] += 1
                elif t is NegotiationStarted:
                    st["negotiations.started"] += 1
                elif t is SAEstablished:
                    st["negotiations.succeeded"] += 1
                    if e.rekeyed:
                        st["rekeys"] += 1
        return out

    return entry


class IkeV1Engine:
    """``keylog``: opt-in debugging hook (None by default, and then nothing is written
    anywhere): called with one text line per Diffie-Hellman secret the engine computes,
    in the format ``kinkctl dump --ike-keys`` reads::

        IKEV1_DH_SECRET <CKY-I hex> <CKY-R hex> <g^xy hex>
        IKEV1_QM_DH_SECRET <CKY-I hex> <CKY-R hex> <M-ID hex> <g^xy hex>  (Quick Mode PFS)

    With the pre-shared key and a capture of the exchange these lines decrypt it and give
    every key of its SAs: whoever sets the hook must keep the lines as secret as the keys
    (kinkd writes them only when ``daemon.ike_keylog`` is set, to a file of mode 0600)."""

    def __init__(self, config: EngineConfig, *, rng: Any = None,
                 stats: Counter | None = None, keylog: Any = None) -> None:
        self.config = config
        self.keylog = keylog
        self.rng = rng if rng is not None else random.SystemRandom()
        self.stats: Counter = stats if stats is not None else Counter()
        self._depth = 0
        self.sadb = SADB(max_sas=config.max_sas, rng=self.rng, first_id=config.first_sa_id)
        self.children = ChildSAs(self.sadb, delete_grace=config.delete_grace,
                                 supersede_wait=10.0, stats=self.stats)
        self.timers = TimerHeap()
        self._peers = {p.name: p for p in config.peers}
        self._by_addr = {ipaddress.ip_address(p.address).compressed: p for p in config.peers}
        self._by_host = _names_by_address(config.peers)
        self._sas: dict[bytes, IsakmpSA] = {}  # our cookie -> SA
        #: peer name -> our cookie -> SA (the same SAs: lookups by peer without a scan)
        self._peer_sas: dict[str, dict[bytes, IsakmpSA]] = {}
        self._mm1: dict[tuple[bytes, str], bytes] = {}  # (CKY-I, peer ip) -> our CKY-R
        #: responder SAs before message 5, oldest first
        self._half_open: OrderedDict[bytes, None] = OrderedDict()
        self._rt: dict[tuple[bytes, int], list] = {}  # (cookie, M-ID) -> [data, addr, local, n]
        for k in ("half_open.dropped", "aggressive.refused", "malformed", "unknown_peer"):
            self.stats.setdefault(f"ikev1.{k}", 0)

    # ------------------------------------------------------------------ public API

    def next_deadline(self) -> float | None:
        a, b = self.timers.next_deadline(), self.children.next_deadline()
        if a is None:
            return b
        return a if b is None else min(a, b)

    @_counted
    def handle_timers(self, now: float) -> list:
        out: list = []
        for key in self.timers.pop_due(now):
            kind = key[0]
            if kind == "rt":
                self._retransmit(key[1], key[2], now, out)
            elif kind == "half":
                sa = self._sas.get(key[1])
                if sa is not None and not sa.established:
                    self.stats["ikev1.half_open.expired"] += 1
                    self._drop_sa(sa, out, "half-open timeout", report=False)
            elif kind == "p1rekey":
                sa = self._sas.get(key[1])
                if sa is not None and sa is self.isakmp_sa(sa.peer.name):
                    self.stats["ikev1.isakmp_sa.rekeyed"] += 1
                    self._start_main(sa.peer, None, now, out)
            elif kind == "qm":  # our answer was never confirmed by message 3
                sa = self._sas.get(key[1])
                qm = sa.quick.get(key[2]) if sa is not None else None
                if qm is not None and qm.role is Role.RESPONDER:
                    del sa.quick[key[2]]
                    self.sadb.release_spi(qm.spi)
                    self.stats["ikev1.quick_mode.expired"] += 1
            elif kind == "ka":
                sa = self._sas.get(key[1])
                if sa is not None and sa.established and sa.local[1] == NATT_PORT:
                    self.stats["ikev1.nat_keepalives"] += 1
                    out.append(Send(b"\xff", sa.remote, sa.local))
                    self.timers.set(key, now + self.config.nat_keepalive)
            elif kind == "dpd":
                sa = self._sas.get(key[1])
                if sa is not None and sa.established:
                    self._dpd(sa, now, out)
            elif kind == "p1life":
                sa = self._sas.get(key[1])
                if sa is not None:
                    if sa.established:
                        self._send_info(sa, [Delete(ProtocolId.ISAKMP, [sa.cky_i + sa.cky_r],
                                                    16)], now, out)
                    self._drop_sa(sa, out, "expired")
        for w in self.children.handle_timers(now):
            self._absorb(w, now, out)
        return out

    def isakmp_sa(self, peer: str) -> IsakmpSA | None:
        """The newest established ISAKMP SA with ``peer``."""
        best = None
        for sa in self._peer_sas.get(peer, {}).values():
            if sa.established:
                if best is None or sa.created >= best.created:
                    best = sa
        return best

    def half_open(self) -> int:
        return len(self._half_open)

    @_counted
    def initiate(self, peer: str, child: str | None, now: float, *, user: Any = None) -> list:
        """Negotiate ``child`` of ``peer`` (Main Mode first when no ISAKMP SA is up);
        ``child`` None: only the ISAKMP SA."""
        p = self._peers[peer]
        c = p.child(child) if child is not None else None
        out: list = [NegotiationStarted(peer, c.name if c else None)]
        sa = self.isakmp_sa(peer)
        if sa is not None:
            if c is not None:
                self._start_quick(sa, c, now, out)
            return out
        for s in self._peer_sas.get(peer, {}).values():  # a Main Mode already under way
            if s.role is Role.INITIATOR:
                if c is not None:
                    s.pending.append(c)
                return out
        self._start_main(p, c, now, out)
        return out

    @_counted
    def probe(self, peer: str, now: float) -> list:
        """Is the peer there and does the pre-shared key work (``kinkctl check``)? On the
        ISAKMP SA: an R-U-THERE (RFC 3706) whose ACK gives :class:`IsakmpSAAlive` (a peer
        without DPD: ``IsakmpSAAlive(probed=False)`` at once; an unanswered probe counts
        towards the peer's death as a DPD one does). Without an ISAKMP SA: a Main Mode
        only (:class:`IsakmpSAEstablished` or ``NegotiationFailed`` with its reason)."""
        sa = self.isakmp_sa(peer)
        if sa is None:
            return self.initiate(peer, None, now)
        out: list = []
        if not sa.dpd_peer:
            out.append(IsakmpSAAlive(peer, sa.cookies, False, sa.nat))
            return out
        sa.probing = True
        self._r_u_there(sa, now, out)
        return out

    @_counted
    def rekey(self, peer: str, child: str | None, now: float) -> list:
        """A new Quick Mode for each live pair of ``child`` (all children for None) on the
        ISAKMP SA; the old pair is DELETEd ``delete_grace`` after its successor is up."""
        out: list = []
        sa = self.isakmp_sa(peer)
        p = self._peers[peer]
        if sa is None:
            return self.initiate(peer, child, now)
        for c in p.children:
            if child is not None and c.name != child:
                continue
            for rec in self.children.live(peer, c.name):
                out.append(NegotiationStarted(peer, c.name, rekey=True))
                self._start_quick(sa, c, now, out, rekey_of=rec.id)
        return out

    @_counted
    def delete(self, peer: str, child: str | None, now: float, *, isakmp: bool | None = None
               ) -> list:
        """DELETE the child's SAs (all children for None) with the peer; ``isakmp`` (default:
        when ``child`` is None) deletes the ISAKMP SA afterwards too."""
        out: list = []
        sa = self.isakmp_sa(peer)
        p = self._peers[peer]
        names = [child] if child is not None else [c.name for c in p.children]
        recs = [r for n in names for r in self.children.live(peer, n)]
        if recs:
            ids, by_proto, _user = self.children.begin_delete(recs, out)
            if sa is not None:
                for proto, spis in by_proto.items():
                    self._send_info(sa, [Delete(proto, spis)], now, out)
            self.children.delete_done(ids, now, out, grace=sa is not None)
        if sa is not None and (isakmp if isakmp is not None else child is None):
            self._send_info(sa, [Delete(ProtocolId.ISAKMP, [sa.cky_i + sa.cky_r], 16)], now, out)
            self._drop_sa(sa, out, "deleted")
        # IKEv1 DELETEs are not answered: done once sent
        out.append(DeleteDone(peer, child, len(recs), "deleted"))
        return out

    def sas(self) -> list:
        return list(self.children)

    # ------------------------------------------------------------------ the rest of the
    # isakmp.plugin.KeyExchangeEngine shape (what a daemon drives)

    @_counted
    def start(self, now: float) -> list:
        """Negotiate every child whose start policy is "start"."""
        out: list = []
        for p in self._peers.values():
            for c in p.children:
                if (c.start or p.start) == "start":
                    out.extend(self.initiate(p.name, c.name, now))
        return out

    @_counted
    def acquire(self, request: Any, now: float) -> list:
        """Kernel ACQUIRE: negotiate the child the backend named (``request.peer`` and
        ``request.child``, as ``isakmp.kernel.xfrm`` fills them in from the reqid)."""
        peer, child = getattr(request, "peer", None), getattr(request, "child", None)
        if peer not in self._peers:
            self.stats["ikev1.acquire.unmatched"] += 1
            return []
        if child is not None and self.children.live(peer, child):
            return []
        return self.initiate(peer, child or self._peers[peer].child(None).name, now)

    @_counted
    def kernel_expire(self, spi: int, hard: bool, now: float, *,
                      inbound: bool | None = None) -> list:
        out: list = []
        for item in self.children.kernel_expire(spi, hard, now, inbound) or []:
            self._absorb(item, now, out)
        return out

    @_counted
    def reconfigure(self, config: EngineConfig, now: float) -> list:
        """New peers and children; SAs and ISAKMP SAs of peers still configured stay, those
        of removed peers are deleted with the peer (while their ISAKMP SA is still up)."""
        out: list = []
        gone = [n for n in self._peers if n not in {p.name for p in config.peers}]
        for name in gone:
            out.extend(self.delete(name, None, now))
        self.config = config
        self._peers = {p.name: p for p in config.peers}
        self._by_addr = {ipaddress.ip_address(p.address).compressed: p for p in config.peers}
        self._by_host = _names_by_address(config.peers)
        for sa in self._sas.values():
            if sa.peer.name in self._peers:
                sa.peer = self._peers[sa.peer.name]
        return out

    @_counted
    def shutdown(self, now: float, delete_sas: bool) -> list:
        """An orderly stop: with ``delete_sas`` every child SA and ISAKMP SA is DELETEd with
        its peer (IKEv1 DELETEs are not answered, so nothing is awaited)."""
        out: list = []
        n = len(self.children)
        self.children.stop()
        if delete_sas:
            for name in list(self._peers):
                out.extend(self.delete(name, None, now))
        out.append(ShutdownDone(answered=0, given_up=0, sas=n))
        return out

    def shutdown_deadline(self, now: float) -> float | None:
        return None

    def peer_states(self) -> list[dict[str, Any]]:
        out = []
        for p in self._peers.values():
            sa = self.isakmp_sa(p.name)
            out.append({
                "peer": p.name, "exchange": "ikev1", "address": p.address,
                "isakmp_sa": sa.cookies if sa is not None else None,
                "nat": bool(sa and sa.nat),
                "negotiating": sum(len(s.quick) + (not s.established)
                                   for s in self._peer_sas.get(p.name, {}).values()),
                "sas": len(self.sadb.by_peer(p.name)),
            })
        return out

    def export_state(self, now: float, *, include_keys: bool = False) -> dict[str, Any]:
        """The child SAs (ISAKMP SAs are not persisted: after a restart a new Main Mode with
        INITIAL-CONTACT replaces them)."""
        sadb, metas = self.children.export_state(now, include_keys=include_keys,
                                                 selectors_encoder=_encode_selectors)
        return {"exchange": "ikev1", "sadb": sadb, "meta": metas}

    def import_state(self, data: dict[str, Any], now: float) -> list:
        if data.get("exchange") != "ikev1":
            raise ValueError("not an IKEv1 engine's state")
        self.children.import_state(data["sadb"], data.get("meta", {}), now,
                                   selectors_decoder=Selectors.from_json)
        return []

    # ------------------------------------------------------------------ receiving

    @_counted
    def receive(self, data: bytes, addr: tuple[str, int], now: float, *,
                local: tuple[str, int] | None = None) -> list:
        out: list = []
        lport = local[1] if local is not None else IKE_PORT
        if lport == NATT_PORT or addr[1] == NATT_PORT:
            if data == b"\xff" or data[:4] != NON_ESP_MARKER:
                return out  # NAT keepalive or ESP-in-UDP: not ours
            data = data[4:]
        if local is None:
            local = (self.config.local_address, lport)
        if data[8:16] == _NO_COOKIE and len(data) >= 28 and data[18] != ExchangeType.AGGRESSIVE:
            # a first message: the cheap refusals come before any decoding (flood)
            if addr[0] not in self._by_addr:
                self.stats["ikev1.unknown_peer"] += 1
                return out
            if len(self._half_open) >= self.config.max_half_open and (
                    data[:8], addr[0]) not in self._mm1 and not self._make_room(out):
                self.stats["ikev1.half_open.dropped"] += 1
                return out
        try:
            msg = Message.decode(data)
        except IsakmpError:
            self.stats["ikev1.malformed"] += 1
            return out
        xchg = int(msg.exchange_type)
        if xchg == ExchangeType.AGGRESSIVE:
            self.stats["ikev1.aggressive.refused"] += 1
            out.append(RequestRefused(self._peer_name(addr), None, addr[0],
                                      "aggressive-mode-refused",
                                      detail="Aggressive Mode with a pre-shared key exposes an "
                                             "offline-crackable hash; use Main Mode"))
            return out
        sa = self._lookup(msg)
        if sa is not None:
            reply = sa.replies.get(data)
            if reply is not None:  # a retransmission: answer as before
                self.stats["ikev1.retransmits.answered"] += 1
                out.append(Send(reply, sa.remote, sa.local))
                return out
        try:
            if xchg == ExchangeType.IDENTITY_PROTECTION:
                if sa is None:
                    if msg.responder_cookie == bytes(8):
                        self._on_mm1(msg, data, addr, local, now, out)
                    return out
                self._on_main(sa, msg, data, addr, local, now, out)
            elif sa is None:
                self.stats["ikev1.unknown_sa"] += 1
            elif xchg == ExchangeType.QUICK_MODE:
                self._on_quick(sa, msg, data, now, out)
            elif xchg == ExchangeType.INFORMATIONAL:
                self._on_info(sa, msg, now, out)
            else:
                self.stats["ikev1.unsupported_exchange"] += 1
        except _Failed as f:
            self._fail(sa, f, now, out)
        except IsakmpError as e:
            self._fail(sa, _Failed("malformed", int(e.notify), str(e)), now, out)
        except Exception as e:  # a bug: reported, never fatal to the daemon
            self.stats["ikev1.internal_errors"] += 1
            out.append(InternalError("ikev1.receive", f"{type(e).__name__}: {e}"))
        return out

    def _peer_name(self, addr: tuple[str, int]) -> str | None:
        p = self._by_addr.get(addr[0])
        return p.name if p else None

    def _lookup(self, msg: Message) -> IsakmpSA | None:
        sa = self._sas.get(msg.responder_cookie)
        if sa is not None and sa.role is Role.RESPONDER and sa.cky_i == msg.initiator_cookie:
            return sa
        sa = self._sas.get(msg.initiator_cookie)
        if sa is not None and sa.role is Role.INITIATOR and (
                sa.cky_r == msg.responder_cookie or sa.state == "mm1"):
            return sa
        return None

    # ------------------------------------------------------------------ sending

    def _local_for(self, remote: tuple[str, int], nat: bool) -> tuple[str, int]:
        return (self.config.local_address, NATT_PORT if nat else IKE_PORT)

    def _wire(self, sa: IsakmpSA, data: bytes) -> bytes:
        return NON_ESP_MARKER + data if sa.local[1] == NATT_PORT else data

    def _plain(self, sa: IsakmpSA, xchg: int, payloads: list, mid: int = 0) -> bytes:
        return Message(sa.cky_i, sa.cky_r, xchg, payloads, 0, mid).encode()

    def _encrypted(self, sa: IsakmpSA, xchg: int, first: int, chain: bytes, iv: bytes,
                   mid: int) -> tuple[bytes, bytes]:
        """(message, its last ciphertext block)."""
        ct = crypto.cbc_encrypt(sa.keys.enc_key, iv, chain)
        msg = Message(sa.cky_i, sa.cky_r, xchg, [], FLAG_ENCRYPTION, mid,
                      encrypted_body=ct, next_payload=first).encode()
        return msg, ct[-crypto.BLOCK:]

    def _decrypt(self, sa: IsakmpSA, msg: Message, iv: bytes) -> tuple[list, bytes, bytes]:
        """(payloads, plaintext chain, last ciphertext block); raises _Failed."""
        if not msg.encrypted:
            raise _Failed("malformed", NotifyType.PAYLOAD_MALFORMED, "message not encrypted")
        if sa.keys is None:
            raise _Failed("malformed", None, "encrypted message before the keys")
        ct = msg.encrypted_body
        chain = crypto.decrypt_chain(sa.keys.enc_key, iv, ct, msg.next_payload)
        return decode_payloads(msg.next_payload, chain), chain, ct[-crypto.BLOCK:]

    def _send(self, sa: IsakmpSA, data: bytes, out: list, *, request_key: tuple | None = None,
              now: float = 0.0, answer_to: bytes | None = None) -> None:
        wire = self._wire(sa, data)
        out.append(Send(wire, sa.remote, sa.local))
        if answer_to is not None:
            sa.replies[answer_to] = wire
            while len(sa.replies) > 8:
                sa.replies.popitem(last=False)
        if request_key is not None:
            self._rt[request_key] = [wire, sa.remote, sa.local, 1]
            self.timers.set(("rt", *request_key), now + self.config.backoff.delay(1))

    def _stop_rt(self, sa: IsakmpSA, mid: int) -> None:
        self._rt.pop((sa.our_cookie, mid), None)
        self.timers.cancel(("rt", sa.our_cookie, mid))

    def _retransmit(self, cookie: bytes, mid: int, now: float, out: list) -> None:
        st = self._rt.get((cookie, mid))
        sa = self._sas.get(cookie)
        if st is None or sa is None:
            return
        bo = self.config.backoff
        if st[3] >= bo.tries:
            del self._rt[(cookie, mid)]
            qm = sa.quick.pop(mid, None)
            child = qm.child.name if qm is not None else None
            self.stats["ikev1.timeouts"] += 1
            detail = f"no answer after {bo.tries} transmissions"
            if sa.state == "mm5":  # the peer could not decrypt or verify our message 5
                detail += (" of Main Mode message 5: the peer did not authenticate us "
                           "(pre-shared key or identity mismatch?)")
            if qm is None and sa.pending:
                out.extend(NegotiationFailed(sa.peer.name, c.name, "timeout", detail)
                           for c in sa.pending)
            else:
                out.append(NegotiationFailed(sa.peer.name, child, "timeout", detail))
            if qm is not None:
                self.sadb.release_spi(qm.spi)
            if not sa.established:
                self._drop_sa(sa, out, "timeout", report=False)
            return
        st[3] += 1
        self.stats["ikev1.retransmits"] += 1
        out.append(Send(st[0], st[1], st[2]))
        self.timers.set(("rt", cookie, mid), now + bo.delay(st[3]))

    # ------------------------------------------------------------------ Main Mode

    def _new_cookie(self) -> bytes:
        while True:
            c = self.rng.randbytes(8)
            if c != bytes(8) and c not in self._sas:
                return c

    def _start_main(self, p: PeerConfig, child: ChildConfig | None, now: float,
                    out: list) -> None:
        remote = (p.address, p.port)
        sa = IsakmpSA(p, Role.INITIATOR, self._new_cookie(), bytes(8), remote,
                      self._local_for(remote, False), "mm1", now, suites=p.suites())
        if child is not None:
            sa.pending.append(child)
        self._add_sa(sa)
        offer = build_phase1_offer(sa.suites)
        sa.sai_b = offer.encode()[4:]
        pl: list[Payload] = [offer, VendorId(VID_DPD)]
        if self.config.nat_traversal:
            pl.append(VendorId(VID_RFC3947))
        self.stats["ikev1.main_mode.initiated"] += 1
        self._send(sa, self._plain(sa, ExchangeType.IDENTITY_PROTECTION, pl), out,
                   request_key=(sa.cky_i, 0), now=now)

    def _make_room(self, out: list) -> bool:
        """The half-open table is full: forget the oldest entry that cost us nothing but a
        proposal selection (message 2 sent, no Diffie-Hellman yet), so that a flood of
        first messages cannot lock out a legitimate initiator once it stops."""
        for cookie in self._half_open:
            sa = self._sas.get(cookie)
            if sa is None or sa.state == "mm2":
                if sa is not None:
                    self._drop_sa(sa, out, "evicted", report=False)
                else:
                    del self._half_open[cookie]
                self.stats["ikev1.half_open.evicted"] += 1
                return True
        return False

    def _on_mm1(self, msg: Message, data: bytes, addr: tuple[str, int],
                local: tuple[str, int], now: float, out: list) -> None:
        p = self._by_addr.get(addr[0])
        key = (msg.initiator_cookie, addr[0])
        known = self._mm1.get(key)
        if known is not None and known in self._sas:
            sa = self._sas[known]
            reply = sa.replies.get(data)
            if reply is not None:
                self.stats["ikev1.retransmits.answered"] += 1
                out.append(Send(reply, sa.remote, sa.local))
            return
        if p is None:  # pragma: no cover - refused in receive()
            return
        sa_p = _first(msg.payloads, SecurityAssociation)
        if sa_p is None:
            self.stats["ikev1.malformed"] += 1
            return
        sa = IsakmpSA(p, Role.RESPONDER, msg.initiator_cookie, self._new_cookie(), addr,
                      local, "mm2", now)
        try:
            t, params = select_phase1(sa_p, p.suites())
        except IsakmpError as e:
            self.stats["ikev1.no_proposal_chosen"] += 1
            out.append(RequestRefused(p.name, None, addr[0], "no-proposal-chosen",
                                      int(e.notify), str(e)))
            self._send_plain_notify(sa, int(e.notify), out)
            return
        sa.params = params
        sa.sai_b = sa_p.encode()[4:]
        sa.natt = self.config.nat_traversal and any(
            type(x) is VendorId and x.data == VID_RFC3947 for x in msg.payloads)
        self._add_sa(sa)
        self._mm1[key] = sa.cky_r
        self._half_open[sa.cky_r] = None
        self.timers.set(("half", sa.cky_r), now + self.config.half_open_timeout)
        reply = SecurityAssociation([Proposal(sa_p.proposals[0].number, ProtocolId.ISAKMP, b"",
                                              [t.copy()])], sa_p.doi, sa_p.situation)
        pl: list[Payload] = [reply]
        if any(type(x) is VendorId and x.data == VID_DPD for x in msg.payloads):
            sa.dpd_peer = True
            pl.append(VendorId(VID_DPD))  # we answer R-U-THERE (and may ask)
        if sa.natt:
            pl.append(VendorId(VID_RFC3947))
        self.stats["ikev1.main_mode.responded"] += 1
        self._send(sa, self._plain(sa, ExchangeType.IDENTITY_PROTECTION, pl), out,
                   answer_to=data)

    def _nat_payloads(self, sa: IsakmpSA) -> list[Payload]:
        if not sa.natt:
            return []
        mine = (self.rng.randbytes(sa.params.hash_function(b"").digest_size)
                if sa.peer.encap else _nat_hash(sa.params, sa.cky_i, sa.cky_r, sa.local))
        return [NatD(_nat_hash(sa.params, sa.cky_i, sa.cky_r, sa.remote)), NatD(mine)]

    def _check_nat(self, sa: IsakmpSA, payloads: list) -> None:
        hashes = [p.hash for p in payloads if type(p) is NatD]
        if not sa.natt or len(hashes) < 2:
            return
        mine = _nat_hash(sa.params, sa.cky_i, sa.cky_r, sa.local)
        theirs = _nat_hash(sa.params, sa.cky_i, sa.cky_r, sa.remote)
        # the first NAT-D is the receiver's (our) address, the others the sender's
        sa.behind_nat = hashes[0] != mine
        # forced encapsulation: our NAT-D is faked, the peer sees a NAT in front of us
        sa.nat = sa.behind_nat or theirs not in hashes[1:] or sa.peer.encap

    def _on_main(self, sa: IsakmpSA, msg: Message, data: bytes, addr: tuple[str, int],
                 local: tuple[str, int], now: float, out: list) -> None:
        st = sa.state
        if sa.role is Role.INITIATOR:
            if st == "mm1" and not msg.encrypted:
                self._on_mm2(sa, msg, now, out)
            elif st == "mm3" and not msg.encrypted:
                self._on_mm4(sa, msg, now, out)
            elif st == "mm5":
                self._on_mm6(sa, msg, now, out)
            return
        if st == "mm2" and not msg.encrypted:
            self._on_mm3(sa, msg, data, now, out)
        elif st == "mm4":
            if addr != sa.remote or local != sa.local:  # the initiator floated (NAT-T)
                sa.remote, sa.local = addr, local
                sa.nat = sa.nat or (sa.natt and local[1] == NATT_PORT)
            self._on_mm5(sa, msg, data, now, out)

    def _on_mm2(self, sa: IsakmpSA, msg: Message, now: float, out: list) -> None:
        sa_p = _first(msg.payloads, SecurityAssociation)
        if sa_p is None:
            self._notify_in_phase1(sa, msg, out)
            return
        if len(sa_p.proposals) != 1 or len(sa_p.proposals[0].transforms) != 1:
            raise _Failed("no-proposal-chosen", None, "answer must carry one transform")
        params = parse_phase1_transform(sa_p.proposals[0].transforms[0])
        ours = {s.suite(): s for s in sa.suites}
        if params.suite() not in ours:
            raise _Failed("no-proposal-chosen", None, "answer was not offered")
        if params.life_seconds is not None and ours[params.suite()].life_seconds is not None \
                and params.life_seconds > ours[params.suite()].life_seconds:
            raise _Failed("no-proposal-chosen", None, "answer raised the lifetime")
        self._stop_rt(sa, 0)
        sa.params = params
        sa.cky_r = msg.responder_cookie
        sa.natt = self.config.nat_traversal and any(
            type(x) is VendorId and x.data == VID_RFC3947 for x in msg.payloads)
        sa.dpd_peer = any(type(x) is VendorId and x.data == VID_DPD for x in msg.payloads)
        sa.dh = dhmod.new(params.group, self.rng)
        sa.ni = self.rng.randbytes(32)
        sa.g_xi = sa.dh.public
        sa.state = "mm3"
        pl = [KeyExchange(sa.g_xi), Nonce(sa.ni), *self._nat_payloads(sa)]
        self._send(sa, self._plain(sa, ExchangeType.IDENTITY_PROTECTION, pl), out,
                   request_key=(sa.cky_i, 0), now=now)

    def _log_secret(self, sa: IsakmpSA, shared: bytes, mid: int | None = None) -> None:
        if self.keylog is None:
            return
        label = "IKEV1_DH_SECRET" if mid is None else "IKEV1_QM_DH_SECRET"
        where = "" if mid is None else f" {mid:08x}"
        self.keylog(f"{label} {sa.cky_i.hex()} {sa.cky_r.hex()}{where} {bytes(shared).hex()}")

    def _derive(self, sa: IsakmpSA, shared: bytes) -> None:
        self._log_secret(sa, shared)
        sa.keys = crypto.derive_phase1(sa.params, sa.peer.psk, sa.ni, sa.nr, shared,
                                       sa.cky_i, sa.cky_r)
        sa.iv = crypto.phase1_iv(sa.params, sa.g_xi, sa.g_xr)

    def _on_mm3(self, sa: IsakmpSA, msg: Message, data: bytes, now: float, out: list) -> None:
        ke, ni = _first(msg.payloads, KeyExchange), _first(msg.payloads, Nonce)
        if ke is None or ni is None:
            raise _Failed("malformed", NotifyType.PAYLOAD_MALFORMED, "KE and Nonce needed")
        sa.dh = dhmod.new(sa.params.group, self.rng)  # the first DH work of a responder
        try:
            shared = sa.dh.shared(ke.data)
        except ValueError as e:
            raise _Failed("invalid-ke", NotifyType.INVALID_KEY_INFORMATION, str(e)) from None
        sa.ni, sa.g_xi, sa.g_xr = ni.data, ke.data, sa.dh.public
        sa.nr = self.rng.randbytes(32)
        self._check_nat(sa, msg.payloads)
        self._derive(sa, shared)
        sa.dh = None
        sa.state = "mm4"
        pl = [KeyExchange(sa.g_xr), Nonce(sa.nr), *self._nat_payloads(sa)]
        self._send(sa, self._plain(sa, ExchangeType.IDENTITY_PROTECTION, pl), out,
                   answer_to=data)

    def _on_mm4(self, sa: IsakmpSA, msg: Message, now: float, out: list) -> None:
        ke, nr = _first(msg.payloads, KeyExchange), _first(msg.payloads, Nonce)
        if ke is None or nr is None:
            self._notify_in_phase1(sa, msg, out)
            return
        try:
            shared = sa.dh.shared(ke.data)
        except ValueError as e:
            raise _Failed("invalid-ke", NotifyType.INVALID_KEY_INFORMATION, str(e)) from None
        self._stop_rt(sa, 0)
        sa.nr, sa.g_xr = nr.data, ke.data
        self._check_nat(sa, msg.payloads)
        self._derive(sa, shared)
        sa.dh = None
        if sa.nat:  # float to 4500 (RFC 3947 §4)
            sa.remote = (sa.remote[0], NATT_PORT)
            sa.local = (sa.local[0], NATT_PORT)
        idp = identity_payload(sa.peer.local_id or self.config.local_address)
        h = crypto.hash_i(sa.params, sa.keys.skeyid, sa.g_xi, sa.g_xr, sa.cky_i, sa.cky_r,
                          sa.sai_b, idp.encode()[4:])
        first, chain = encode_payloads([idp, Hash(h), *self._initial_contact(sa)])
        data, last = self._encrypted(sa, ExchangeType.IDENTITY_PROTECTION, first, chain,
                                     sa.iv, 0)
        sa.iv = last
        sa.state = "mm5"
        self._send(sa, data, out, request_key=(sa.cky_i, 0), now=now)

    def _check_id(self, sa: IsakmpSA, idp: Identification | None) -> str:
        if idp is None:
            raise _Failed("malformed", NotifyType.PAYLOAD_MALFORMED, "no ID payload")
        got = identity_text(idp)
        want = sa.peer.remote_id or sa.peer.address
        if got != want:
            raise _Failed("id-mismatch", NotifyType.INVALID_ID_INFORMATION,
                          f"peer identified as {got!r}, expected {want!r}")
        return got

    def _phase1_payloads(self, sa: IsakmpSA, msg: Message) -> tuple[list, bytes]:
        """Decrypt message 5/6; a key that does not decrypt is a wrong pre-shared key."""
        try:
            pl, _chain, last = self._decrypt(sa, msg, sa.iv)
        except IsakmpError as e:
            raise _Failed("psk-mismatch", NotifyType.AUTHENTICATION_FAILED,
                          f"message does not decrypt (pre-shared key mismatch?): {e}") from None
        return pl, last

    def _on_mm5(self, sa: IsakmpSA, msg: Message, data: bytes, now: float, out: list) -> None:
        pl, last = self._phase1_payloads(sa, msg)
        idp, h = _first(pl, Identification), _first(pl, Hash)
        if h is None or idp is None:
            raise _Failed("psk-mismatch", NotifyType.AUTHENTICATION_FAILED,
                          "no ID or HASH_I (pre-shared key mismatch?)")
        want = crypto.hash_i(sa.params, sa.keys.skeyid, sa.g_xi, sa.g_xr, sa.cky_i, sa.cky_r,
                             sa.sai_b, idp.encode()[4:])
        if not hmac.compare_digest(want, h.data):
            raise _Failed("psk-mismatch", NotifyType.AUTHENTICATION_FAILED,
                          "HASH_I does not verify (pre-shared key mismatch)")
        sa.remote_id = self._check_id(sa, idp)
        sa.iv = last
        my = identity_payload(sa.peer.local_id or self.config.local_address)
        hr = crypto.hash_r(sa.params, sa.keys.skeyid, sa.g_xi, sa.g_xr, sa.cky_i, sa.cky_r,
                           sa.sai_b, my.encode()[4:])
        self._on_initial_contact(sa, pl, now, out)
        first, chain = encode_payloads([my, Hash(hr), *self._initial_contact(sa)])
        reply, last = self._encrypted(sa, ExchangeType.IDENTITY_PROTECTION, first, chain,
                                      sa.iv, 0)
        sa.last_p1 = sa.iv = last
        self._send(sa, reply, out, answer_to=data)
        self._established(sa, now, out)

    def _on_mm6(self, sa: IsakmpSA, msg: Message, now: float, out: list) -> None:
        pl, last = self._phase1_payloads(sa, msg)
        idp, h = _first(pl, Identification), _first(pl, Hash)
        if h is None or idp is None:
            raise _Failed("psk-mismatch", NotifyType.AUTHENTICATION_FAILED,
                          "no ID or HASH_R")
        want = crypto.hash_r(sa.params, sa.keys.skeyid, sa.g_xi, sa.g_xr, sa.cky_i, sa.cky_r,
                             sa.sai_b, idp.encode()[4:])
        if not hmac.compare_digest(want, h.data):
            raise _Failed("psk-mismatch", NotifyType.AUTHENTICATION_FAILED,
                          "HASH_R does not verify (pre-shared key mismatch)")
        sa.remote_id = self._check_id(sa, idp)
        self._stop_rt(sa, 0)
        sa.last_p1 = sa.iv = last
        self._on_initial_contact(sa, pl, now, out)
        self._established(sa, now, out)
        pending, sa.pending = sa.pending, []
        for c in pending:
            self._start_quick(sa, c, now, out)

    def _initial_contact(self, sa: IsakmpSA) -> list[Payload]:
        """N(INITIAL-CONTACT) when we hold nothing with the peer (RFC 2407 §4.6.3.3): the
        peer drops whatever it still has of an earlier life of ours. The peer is the remote
        host: SAs held under another peer entry with the same address count too (the peer
        finds its peer by our address and would drop those as well)."""
        address = sa.peer.address
        for s in self._sas.values():
            if s.established and s.peer.address == address:
                return []
        by_peer = self.sadb.by_peer
        if any(by_peer(name) for name in self._by_host.get(address, ())):
            return []
        return [Notification(NotifyType.INITIAL_CONTACT, ProtocolId.ISAKMP,
                             sa.cky_i + sa.cky_r)]

    def _on_initial_contact(self, sa: IsakmpSA, payloads: list, now: float,
                            out: list) -> None:
        if not any(type(p) is Notification and p.notify_type == NotifyType.INITIAL_CONTACT
                   for p in payloads):
            return
        name = sa.peer.name
        self.stats["ikev1.initial_contact"] += 1
        for other in [s for s in self._peer_sas.get(name, {}).values() if s is not sa
                      and s.established]:
            self._drop_sa(other, out, "peer rebooted")
        for rec in self.sadb.by_peer(name):
            self.children.remove(rec.id, out, "peer rebooted")

    def _established(self, sa: IsakmpSA, now: float, out: list) -> None:
        sa.state = "established"
        self._half_open.pop(sa.our_cookie, None)
        self.timers.cancel(("half", sa.our_cookie))
        if sa.params.life_seconds:
            life = sa.params.life_seconds
            self.timers.set(("p1life", sa.our_cookie), now + life)
            if sa.role is Role.INITIATOR:  # a new Main Mode before this one expires
                self.timers.set(("p1rekey", sa.our_cookie), now + life * 0.9)
        if sa.peer.dpd and sa.dpd_peer:
            self.timers.set(("dpd", sa.our_cookie), now + sa.peer.dpd)
        if sa.behind_nat and self.config.nat_keepalive:
            self.timers.set(("ka", sa.our_cookie), now + self.config.nat_keepalive)
        self.stats["ikev1.isakmp_sa.established"] += 1
        out.append(IsakmpSAEstablished(sa.peer.name, sa.role, sa.remote_id, sa.cookies,
                                       sa.nat))

    def _notify_in_phase1(self, sa: IsakmpSA, msg: Message, out: list) -> None:
        self.stats["ikev1.malformed"] += 1

    def _send_plain_notify(self, sa: IsakmpSA, notify: int, out: list) -> None:
        """An unprotected error notify (no keys yet, RFC 2408 §5)."""
        data = self._plain(sa, ExchangeType.INFORMATIONAL,
                           [Notification(notify, ProtocolId.ISAKMP, sa.cky_i + sa.cky_r)])
        out.append(Send(self._wire(sa, data), sa.remote, sa.local))

    def _add_sa(self, sa: IsakmpSA) -> None:
        self._sas[sa.our_cookie] = sa
        self._peer_sas.setdefault(sa.peer.name, {})[sa.our_cookie] = sa

    def _drop_sa(self, sa: IsakmpSA, out: list, reason: str, report: bool = True) -> None:
        cookie = sa.our_cookie
        if self._sas.get(cookie) is not sa:
            return
        del self._sas[cookie]
        mine = self._peer_sas.get(sa.peer.name)
        if mine is not None:
            mine.pop(cookie, None)
            if not mine:
                del self._peer_sas[sa.peer.name]
        self._half_open.pop(cookie, None)
        self._mm1.pop((sa.cky_i, sa.remote[0]), None)
        for key in [k for k in self._rt if k[0] == cookie]:
            self._rt.pop(key, None)
            self.timers.cancel(("rt", *key))
        for t in ("half", "p1life", "p1rekey", "dpd", "ka"):
            self.timers.cancel((t, cookie))
        for mid, qm in sa.quick.items():
            self.timers.cancel(("qm", cookie, mid))
            if qm.spi and self.sadb.by_spi_in(qm.spi) is None:
                self.sadb.release_spi(qm.spi)
        if report and sa.established:
            self.stats["ikev1.isakmp_sa.deleted"] += 1
            out.append(IsakmpSADeleted(sa.peer.name, sa.cookies, reason))

    def _fail(self, sa: IsakmpSA | None, f: _Failed, now: float, out: list) -> None:
        if sa is not None and sa.established:
            # a protected message that does not decrypt or decode on a live ISAKMP SA:
            # garbage (or a forgery) to drop, not a failed negotiation; an exchange of ours
            # it breaks ends in its own timeout
            self.stats[f"ikev1.dropped.{f.reason}"] += 1
            return
        self.stats[f"ikev1.failed.{f.reason}"] += 1
        if sa is None:
            return
        if sa.role is Role.RESPONDER and not sa.established:
            out.append(RequestRefused(sa.peer.name, None, sa.remote[0], f.reason,
                                      f.notify, f.detail))
        elif sa.pending and not sa.established:  # each child waiting for this Main Mode
            out.extend(NegotiationFailed(sa.peer.name, c.name, f.reason, f.detail)
                       for c in sa.pending)
        else:
            out.append(NegotiationFailed(sa.peer.name, None, f.reason, f.detail))
        if not sa.established:
            if f.notify is not None:
                self._send_plain_notify(sa, f.notify, out)
            self._drop_sa(sa, out, f.reason, report=False)

    # ------------------------------------------------------------------ Quick Mode

    def _new_mid(self, sa: IsakmpSA) -> int:
        while True:
            mid = self.rng.getrandbits(32)
            if mid and mid not in sa.quick and mid not in sa.used_mids:
                sa.used_mids.add(mid)
                return mid

    def _key_source(self, sa: IsakmpSA) -> StaticKeySource:
        params = sa.params
        return StaticKeySource(sa.keys.skeyid_d, lambda k, d: crypto.prf(params, k, d),
                               "ikev1")

    def _policy(self, sa: IsakmpSA, child: ChildConfig) -> Policy:
        pol = child_policy(child)
        if not sa.nat:
            return pol
        m = child_mode(child)
        udp = (EncapsulationMode.UDP_ENCAPSULATED_TUNNEL if m == EncapsulationMode.TUNNEL
               else EncapsulationMode.UDP_ENCAPSULATED_TRANSPORT)
        return Policy(tuple(replace(s, mode=udp) for s in pol.suites))

    def _selectors(self, sa: IsakmpSA, child: ChildConfig) -> tuple[TrafficSelector,
                                                                    TrafficSelector]:
        return (resolve(child.local_ts[0], self.config.local_address),
                resolve(child.remote_ts[0], sa.peer.address))

    def _start_quick(self, sa: IsakmpSA, child: ChildConfig, now: float, out: list,
                     rekey_of: int | None = None) -> None:
        mid = self._new_mid(sa)
        proto = child_protocol(child)
        policy = self._policy(sa, child)
        group = policy.suites[0].pfs_group
        policy = Policy(tuple(s for s in policy.suites if s.pfs_group == group))
        qm = QuickMode(mid, Role.INITIATOR, child,
                       crypto.phase2_iv(sa.params, sa.last_p1, mid),
                       ni=self.rng.randbytes(32), spi=self.sadb.allocate_spi(proto),
                       rekey_of=rekey_of)
        qm.offer = build_offer(policy, {proto: qm.spi})
        rest: list[Payload] = [qm.offer, Nonce(qm.ni)]
        if group is not None:
            qm.dh = dhmod.new(group, self.rng)
            rest.append(KeyExchange(qm.dh.public))
        lts, rts = self._selectors(sa, child)
        qm.selectors = Selectors(lts, rts)
        if needs_ids(child):
            qm.ids = [ts_to_id(lts), ts_to_id(rts)]
            rest.extend(qm.ids)
        if any(int(s.mode) in _UDP_TRANSPORT for s in policy.suites):
            rest.extend(self._nat_oa(sa, initiator=True))
        first, body = encode_payloads(rest)
        h = crypto.qm_hash1(sa.params, sa.keys.skeyid_a, mid, body)
        chain = Hash(h).encode(first) + body
        data, qm.iv = self._encrypted(sa, ExchangeType.QUICK_MODE, PayloadType.HASH, chain,
                                      qm.iv, mid)
        sa.quick[mid] = qm
        self.stats["ikev1.quick_mode.initiated"] += 1
        self._send(sa, data, out, request_key=(sa.our_cookie, mid), now=now)

    def _qm_payloads(self, sa: IsakmpSA, msg: Message, iv: bytes) -> tuple[list, bytes, bytes,
                                                                          bytes]:
        """(payloads, HASH data, the chain after HASH, last ciphertext block)."""
        pl, chain, last = self._decrypt(sa, msg, iv)
        if not pl or type(pl[0]) is not Hash:
            raise _Failed("malformed", NotifyType.INVALID_HASH_INFORMATION,
                          "HASH must be the first payload")
        hlen = struct.unpack_from(">H", chain, 2)[0]
        return pl, pl[0].data, chain[hlen:], last

    def _on_quick(self, sa: IsakmpSA, msg: Message, data: bytes, now: float,
                  out: list) -> None:
        if not sa.established:
            return
        mid = msg.message_id
        qm = sa.quick.get(mid)
        if qm is None:
            if mid in sa.used_mids or mid == 0:
                return
            self._on_qm1(sa, msg, data, now, out)
        elif qm.role is Role.INITIATOR:
            self._on_qm2(sa, qm, msg, data, now, out)
        else:
            self._on_qm3(sa, qm, msg, now, out)

    def _qm_refuse(self, sa: IsakmpSA, child: str | None, notify: int, reason: str,
                   detail: str, now: float, out: list) -> None:
        self.stats[f"ikev1.quick_mode.refused.{reason}"] += 1
        out.append(RequestRefused(sa.peer.name, child, sa.remote_id, reason, notify, detail))
        self._send_info(sa, [Notification(notify, ProtocolId.ISAKMP, sa.cky_i + sa.cky_r)],
                        now, out)

    def _on_qm1(self, sa: IsakmpSA, msg: Message, data: bytes, now: float, out: list) -> None:
        mid = msg.message_id
        iv = crypto.phase2_iv(sa.params, sa.last_p1, mid)
        pl, h, rest, last = self._qm_payloads(sa, msg, iv)
        if not hmac.compare_digest(h, crypto.qm_hash1(sa.params, sa.keys.skeyid_a, mid, rest)):
            self.stats["ikev1.quick_mode.bad_hash"] += 1
            return
        sa.used_mids.add(mid)
        offer, ni = _first(pl, SecurityAssociation), _first(pl, Nonce)
        ke = _first(pl, KeyExchange)
        ids = [p for p in pl if type(p) is Identification]
        if offer is None or ni is None or len(ids) not in (0, 2):
            self._qm_refuse(sa, None, NotifyType.PAYLOAD_MALFORMED, "malformed",
                            "Quick Mode needs SA, Nonce and zero or two IDs", now, out)
            return
        waiting = sum(q.role is Role.RESPONDER for q in sa.quick.values())
        if waiting >= MAX_PENDING_QUICK:  # answered Quick Modes whose third message is due
            self.stats["ikev1.quick_mode.refused.busy"] += 1
            return
        try:
            if ids:
                remote_ts, local_ts = id_to_ts(ids[0]), id_to_ts(ids[1])
            else:
                remote_ts, local_ts = host_ts(sa.remote[0]), host_ts(self.config.local_address)
        except IsakmpError as e:
            self._qm_refuse(sa, None, NotifyType.INVALID_ID_INFORMATION, "id-mismatch", str(e),
                            now, out)
            return
        child = match_child(sa.peer.children, local_ts, remote_ts, self.config.local_address,
                            sa.peer.address)
        if child is None:
            self._qm_refuse(sa, None, NotifyType.INVALID_ID_INFORMATION, "ts-unacceptable",
                            f"no child covers {local_ts} <-> {remote_ts}", now, out)
            return
        try:
            sel = select(offer, self._policy(sa, child), IKEV1_CAPABILITIES)
        except NoProposalChosen as e:
            self._qm_refuse(sa, child.name, NotifyType.NO_PROPOSAL_CHOSEN, "no-proposal-chosen",
                            str(e), now, out)
            return
        except IsakmpError as e:
            self._qm_refuse(sa, child.name, int(e.notify), "malformed", str(e), now, out)
            return
        c = sel.chosen[0]
        secret = b""
        dh = None
        if sel.pfs_group is not None:
            if ke is None:
                self._qm_refuse(sa, child.name, NotifyType.NO_PROPOSAL_CHOSEN,
                                "no-proposal-chosen", "PFS group without KE", now, out)
                return
            dh = dhmod.new(sel.pfs_group, self.rng)
            try:
                secret = dh.shared(ke.data)
            except ValueError as e:
                self._qm_refuse(sa, child.name, NotifyType.INVALID_KEY_INFORMATION,
                                "invalid-ke", str(e), now, out)
                return
            self._log_secret(sa, secret, mid)
        proto = c.protocol_id
        qm = QuickMode(mid, Role.RESPONDER, child, last, ni=ni.data,
                       nr=self.rng.randbytes(32), spi=self.sadb.allocate_spi(proto), sel=sel)
        qm.selectors = Selectors(local_ts, remote_ts)
        qm.keys = derive_sa_keys(self._key_source(sa), protocol=proto,
                                 transform=negotiated_transform(c),
                                 spi_initiator=int.from_bytes(c.proposal.spi, "big"),
                                 spi_responder=qm.spi, ni=qm.ni, nr=qm.nr, ke_secret=secret)
        reply: list[Payload] = [sel.reply_sa({proto: qm.spi}), Nonce(qm.nr)]
        if dh is not None:
            reply.append(KeyExchange(dh.public))
        reply.extend(ids)
        if c.params.mode is not None and int(c.params.mode) in _UDP_TRANSPORT:
            reply.extend(self._nat_oa(sa, initiator=False))
        if sel.responder_lifetime:
            reply.extend(sel.responder_lifetime_notifications({proto: qm.spi}))
        first, body = encode_payloads(reply)
        h2 = crypto.qm_hash2(sa.params, sa.keys.skeyid_a, mid, qm.ni, body)
        chain = Hash(h2).encode(first) + body
        out_data, qm.iv = self._encrypted(sa, ExchangeType.QUICK_MODE, PayloadType.HASH, chain,
                                          qm.iv, mid)
        sa.quick[mid] = qm
        self.timers.set(("qm", sa.our_cookie, mid), now + self.config.half_open_timeout)
        self.stats["ikev1.quick_mode.responded"] += 1
        self._send(sa, out_data, out, answer_to=data)

    def _on_qm2(self, sa: IsakmpSA, qm: QuickMode, msg: Message, data: bytes, now: float,
                out: list) -> None:
        mid = qm.mid
        pl, h, rest, last = self._qm_payloads(sa, msg, qm.iv)
        if not hmac.compare_digest(h, crypto.qm_hash2(sa.params, sa.keys.skeyid_a, mid,
                                                       qm.ni, rest)):
            self.stats["ikev1.quick_mode.bad_hash"] += 1
            return
        answer, nr = _first(pl, SecurityAssociation), _first(pl, Nonce)
        ke = _first(pl, KeyExchange)
        self._stop_rt(sa, mid)
        del sa.quick[mid]
        try:
            if answer is None or nr is None:
                raise _Failed("malformed", None, "QM2 without SA or Nonce")
            sel = validate_answer(qm.offer, answer)
            secret = b""
            if qm.dh is not None:
                if ke is None:
                    raise _Failed("no-proposal-chosen", None, "PFS answered without KE")
                try:
                    secret = qm.dh.shared(ke.data)
                except ValueError as e:
                    raise _Failed("invalid-ke", None, str(e)) from None
                self._log_secret(sa, secret, mid)
        except (_Failed, IsakmpError) as e:
            self.sadb.release_spi(qm.spi)
            reason = e.reason if isinstance(e, _Failed) else "no-proposal-chosen"
            out.append(NegotiationFailed(sa.peer.name, qm.child.name, reason, str(e)))
            return
        c = sel.chosen[0]
        proto = c.protocol_id
        spi_r = int.from_bytes(sel.peer_spis[proto], "big")
        keys = derive_sa_keys(self._key_source(sa), protocol=proto,
                              transform=negotiated_transform(c), spi_initiator=qm.spi,
                              spi_responder=spi_r, ni=qm.ni, nr=nr.data, ke_secret=secret)
        h3 = crypto.qm_hash3(sa.params, sa.keys.skeyid_a, mid, qm.ni, nr.data)
        reply, _ = self._encrypted(sa, ExchangeType.QUICK_MODE, PayloadType.HASH,
                                   Hash(h3).encode(), last, mid)
        self._send(sa, reply, out, answer_to=data)
        mode = c.params.mode if c.params.mode is not None else child_mode(qm.child)
        secs, kbs = _responder_lifetime(pl, sel.life_seconds, sel.life_kilobytes)
        lifetime = Lifetime(hard_seconds=secs, hard_kilobytes=kbs,
                            soft_seconds=self._soft(qm.child, secs))
        rec = self.children.add(PairMeta(sa.remote_id, self._local_id(sa), qm.ni,
                                         encap=self._encap(sa)),
                                peer=sa.peer.name, child=qm.child.name, protocol=proto,
                                spi_in=qm.spi, transform=keys.transform, mode=mode, now=now,
                                lifetime=lifetime, initiator=True, spi_out=spi_r,
                                keys_in=keys.to_initiator, keys_out=keys.to_responder,
                                selectors=qm.selectors)
        self._up(sa, rec, qm, Role.INITIATOR, now, out)

    def _soft(self, child: ChildConfig, hard: int | None) -> float | None:
        if hard is None:
            return None
        soft = min(float(child.rekey_time), hard * 0.9)
        return soft if 0 < soft < hard else None

    def _nat_oa(self, sa: IsakmpSA, *, initiator: bool) -> list[NatOa]:
        """NAT-OAi, NAT-OAr (RFC 3947 §5.2, UDP-Encapsulated-Transport): the initiator's
        and the responder's original address, as this side sees them."""
        me, other = ipaddress.ip_address(sa.local[0]), ipaddress.ip_address(sa.remote[0])
        pair = (me, other) if initiator else (other, me)
        return [NatOa(IdType.IPV4_ADDR if a.version == 4 else IdType.IPV6_ADDR, a.packed)
                for a in pair]

    @staticmethod
    def _encap(sa: IsakmpSA) -> tuple[int, int] | None:
        """The UDP ports a child's ESP travels between (NAT-T: ours and the peer's, as
        the ISAKMP SA floated to them), None for plain ESP."""
        return (sa.local[1], sa.remote[1]) if sa.nat else None

    def _local_id(self, sa: IsakmpSA) -> str:
        return sa.peer.local_id or self.config.local_address

    def _on_qm3(self, sa: IsakmpSA, qm: QuickMode, msg: Message, now: float,
                out: list) -> None:
        pl, h, _rest, _last = self._qm_payloads(sa, msg, qm.iv)
        if not hmac.compare_digest(h, crypto.qm_hash3(sa.params, sa.keys.skeyid_a, qm.mid,
                                                       qm.ni, qm.nr)):
            self.stats["ikev1.quick_mode.bad_hash"] += 1
            return
        del sa.quick[qm.mid]
        self.timers.cancel(("qm", sa.our_cookie, qm.mid))
        sel = qm.sel
        c = sel.chosen[0]
        mode = c.params.mode if c.params.mode is not None else child_mode(qm.child)
        lifetime = Lifetime(hard_seconds=sel.life_seconds, hard_kilobytes=sel.life_kilobytes)
        rec = self.children.add(PairMeta(sa.remote_id, sa.remote_id, qm.ni,
                                         encap=self._encap(sa)),
                                peer=sa.peer.name, child=qm.child.name,
                                protocol=c.protocol_id, spi_in=qm.spi,
                                transform=qm.keys.transform, mode=mode, now=now,
                                lifetime=lifetime, initiator=False,
                                spi_out=qm.keys.spi_initiator, keys_in=qm.keys.to_responder,
                                keys_out=qm.keys.to_initiator, selectors=qm.selectors)
        self._up(sa, rec, qm, Role.RESPONDER, now, out)

    def _up(self, sa: IsakmpSA, rec: Any, qm: QuickMode, role: Role, now: float,
            out: list) -> None:
        self.children.install(rec, _IN, out)
        self.children.install(rec, _OUT, out)
        rekeyed = False
        if qm.rekey_of is not None:
            rekeyed = self.children.replaced([qm.rekey_of], rec, now)
        self.stats["ikev1.child_sa.established"] += 1
        for w in self.children.established(rec, now, role, rekeyed):
            self._absorb(w, now, out)

    def _absorb(self, item: Any, now: float, out: list) -> None:
        """Turn the lifecycle's wants into exchanges; pass effects and events through."""
        if isinstance(item, RekeyWanted):
            sa = self.isakmp_sa(str(item.sa.peer))
            p = self._peers.get(str(item.sa.peer))
            if sa is None or p is None:
                return
            try:
                child = p.child(item.sa.child)
            except KeyError:
                return
            out.append(NegotiationStarted(p.name, child.name, rekey=True))
            self._start_quick(sa, child, now, out, rekey_of=item.sa.id)
        elif isinstance(item, DeleteWanted):
            sa = self.isakmp_sa(item.peer)
            recs = list(item.sa)
            if item.notify_only:
                by_proto: dict[int, list[bytes]] = {}
                for r in recs:
                    by_proto.setdefault(int(r.protocol), []).append(r.spi_in.to_bytes(4, "big"))
                ids: list[int] = []
            else:
                ids, by_proto, _ = self.children.begin_delete(recs, out)
            if sa is not None:
                for proto, spis in by_proto.items():
                    self._send_info(sa, [Delete(proto, spis)], now, out)
            if ids:
                self.children.delete_done(ids, now, out, grace=True)
        else:
            out.append(item)

    # ------------------------------------------------------------------ Informational

    def _send_info(self, sa: IsakmpSA, payloads: list, now: float, out: list) -> None:
        if not sa.established:
            return
        mid = self._new_mid(sa)
        first, body = encode_payloads(payloads)
        h = crypto.informational_hash(sa.params, sa.keys.skeyid_a, mid, body)
        chain = Hash(h).encode(first) + body
        data, _ = self._encrypted(sa, ExchangeType.INFORMATIONAL, PayloadType.HASH, chain,
                                  crypto.phase2_iv(sa.params, sa.last_p1, mid), mid)
        self.stats["ikev1.informational.sent"] += 1
        self._send(sa, data, out)

    def _on_info(self, sa: IsakmpSA, msg: Message, now: float, out: list) -> None:
        if not msg.encrypted:
            for n in msg.payloads:
                if type(n) is Notification:
                    out.append(NotifyReceived(sa.peer.name, None, n.notify_type,
                                              "unprotected"))
                    if not sa.established and n.is_error and sa.role is Role.INITIATOR:
                        name = getattr(n.notify_type, "name", str(n.notify_type))
                        self._fail(sa, _Failed(notify_reason(n.notify_type), None, name),
                                   now, out)
                        return
            return
        if not sa.established:
            return
        mid = msg.message_id
        iv = crypto.phase2_iv(sa.params, sa.last_p1, mid)
        pl, h, rest, _last = self._qm_payloads(sa, msg, iv)
        if not hmac.compare_digest(h, crypto.informational_hash(sa.params, sa.keys.skeyid_a,
                                                                 mid, rest)):
            self.stats["ikev1.informational.bad_hash"] += 1
            return
        self.stats["ikev1.informational.received"] += 1
        for p in pl[1:]:
            if type(p) is Delete:
                self._on_delete(sa, p, now, out)
            elif type(p) is Notification:
                if p.notify_type == NotifyType.R_U_THERE:
                    self._send_info(sa, [Notification(NotifyType.R_U_THERE_ACK,
                                                      ProtocolId.ISAKMP, p.spi, p.data)],
                                    now, out)
                    continue
                if p.notify_type == NotifyType.R_U_THERE_ACK:
                    if p.data == sa.dpd_seq.to_bytes(4, "big") and sa.dpd_unanswered:
                        self.stats["ikev1.dpd.acks"] += 1
                        if sa.dpd_unanswered > 1:
                            out.append(PeerAlive(sa.peer.name))
                        if sa.probing:
                            sa.probing = False
                            out.append(IsakmpSAAlive(sa.peer.name, sa.cookies, True, sa.nat))
                        sa.dpd_unanswered = 0
                        if sa.peer.dpd:
                            self.timers.set(("dpd", sa.our_cookie), now + sa.peer.dpd)
                    continue
                out.append(NotifyReceived(sa.peer.name, None, p.notify_type))

    def _dpd(self, sa: IsakmpSA, now: float, out: list) -> None:
        """One R-U-THERE (RFC 3706 §5); ``dpd_tries`` unanswered in a row: the peer is dead,
        its ISAKMP SA and child SAs are removed here (nothing to tell a dead peer)."""
        p = sa.peer
        if sa.dpd_unanswered >= p.dpd_tries:
            name = p.name
            recs = self.sadb.by_peer(name)
            self.stats["ikev1.dpd.dead"] += 1
            for rec in recs:
                self.children.remove(rec.id, out, "peer dead")
            for other in list(self._peer_sas.get(name, {}).values()):
                self._drop_sa(other, out, "peer dead")
            out.append(PeerDead(name, len(recs)))
            return
        self._r_u_there(sa, now, out)
        retry = min(p.dpd, self.config.backoff.delay(sa.dpd_unanswered))
        self.timers.set(("dpd", sa.our_cookie), now + retry)

    def _r_u_there(self, sa: IsakmpSA, now: float, out: list) -> None:
        """One R-U-THERE with the next sequence number; it counts as unanswered until its
        ACK comes back."""
        sa.dpd_seq = (sa.dpd_seq + 1) & 0xFFFFFFFF or 1
        sa.dpd_unanswered += 1
        self.stats["ikev1.dpd.sent"] += 1
        self._send_info(sa, [Notification(NotifyType.R_U_THERE, ProtocolId.ISAKMP,
                                          sa.cky_i + sa.cky_r, sa.dpd_seq.to_bytes(4, "big"))],
                        now, out)

    def _on_delete(self, sa: IsakmpSA, d: Delete, now: float, out: list) -> None:
        if d.protocol_id == ProtocolId.ISAKMP:
            if any(s == sa.cky_i + sa.cky_r for s in d.spis):
                self._drop_sa(sa, out, "deleted by peer")
            return
        for spi in d.spis:
            if len(spi) != 4:
                continue
            n = int.from_bytes(spi, "big")
            rec = self.sadb.by_spi_out(d.protocol_id, n, sa.peer.name)
            if rec is None:
                # the peer named our inbound SPI (strongSwan does when its installation
                # failed): the same pair, and the peer is authenticated by the ISAKMP SA
                rec = self.sadb.by_spi_in(n)
                if rec is not None and (rec.peer != sa.peer.name
                                        or int(rec.protocol) != int(d.protocol_id)):
                    rec = None
            if rec is not None:
                self.stats["ikev1.child_sa.deleted_by_peer"] += 1
                self.children.local_delete(rec, now, out, "deleted by peer")
