"""Responder side of the KINK AP exchange (sans-I/O): check AP-REQ, build AP-REP / KRB-ERROR.

:class:`Acceptor` performs the checks of RFC 4120 §3.2.3 on a raw AP-REQ and
returns an :class:`AcceptedRequest` carrying the **ticket session key** (the
only key KINK uses, RFC 4430 §7). Authenticator subkeys and checksums (e.g.
the 0x8003 checksum of GSS-made AP-REQs) are ignored.

Order of the checks (error code):

1. decode AP-REQ (39 BADVERSION / 40 MSG_TYPE from the decoder);
2. service key: ``use-session-key`` set -> one of our TGT session keys
   (none at all: 67 KRB_AP_ERR_NO_TGT; ticket for another principal:
   35 NOT_US; none decrypts: 31 with ``error.user_to_user`` True, the engine
   answers with KINK_TGT_REP, RFC 4430 §3.7.1); otherwise the keytab: ticket
   for a principal we have no key for 35 NOT_US, not with that etype 45
   NOKEY, not with that kvno 44 BADKEYVER;
3. decrypt ticket (usage 2) and authenticator (usage 11) [31 BAD_INTEGRITY];
4. cname/crealm of ticket and authenticator [36 BADMATCH];
5. caddr, if the ticket has addresses and ``client_addr`` is given [38 BADADDR];
6. mutual-required must be set (KINK answers every AP-REQ with an AP-REP)
   [60 KRB_ERR_GENERIC];
7. |now - ctime| <= skew [37 SKEW];
8. ticket starttime (authtime if absent) - skew <= now and INVALID clear
   [33 TKT_NYV]; now - skew <= endtime [32 TKT_EXPIRED];
9. replay cache [34 REPEAT; 37 SKEW below the cache floor, see replay.py].
   Only authenticators that passed 1-8 are recorded.

Every refusal raises :class:`AcceptError` (an ``APError``) whose ``code`` is
the Kerberos error code and whose ``session_key``/``enctype`` (ticket
decrypted) and ``ctime``/``cusec`` (authenticator decrypted) are set when
known, else ``None`` — the engine protects the KRB-ERROR with the session key
when it has one (RFC 4430 §3.5).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from isakmp.secret import Secret

from .crypto import profile
from .der import Reader
from .errors import APError, CryptoError, DecodeError, KerberosError, KrbErrorCode
from .keytab import KeySet, Lookup, ServiceKey
from .messages import (
    AP_REQ,
    NT_PRINCIPAL,
    PVNO,
    APOptions,
    APRep,
    Authenticator,
    EncAPRepPart,
    EncryptedData,
    EncTicketPart,
    KrbError,
    PrincipalName,
    Ticket,
    TicketFlags,
)
from .replay import ReplayCache

__all__ = [
    "KRB_AP_ERR_NO_TGT",
    "KEY_USAGE_TICKET",
    "KEY_USAGE_AP_REQ_AUTH",
    "KEY_USAGE_AP_REP",
    "TGTKey",
    "AcceptedRequest",
    "AcceptError",
    "Acceptor",
    "make_ap_rep",
    "make_krb_error",
]

#: RFC 4120 §7.5.9 code 67, missing from KrbErrorCode
KRB_AP_ERR_NO_TGT = 67

KEY_USAGE_TICKET = 2
KEY_USAGE_AP_REQ_AUTH = 11
KEY_USAGE_AP_REP = 12

_USE_SESSION_KEY = int(APOptions.USE_SESSION_KEY)
_MUTUAL_REQUIRED = int(APOptions.MUTUAL_REQUIRED)
_INVALID = int(TicketFlags.INVALID)
_C = KrbErrorCode


@dataclass(frozen=True, slots=True)
class TGTKey:
    """Session key of one of our own TGTs: the key user-to-user tickets are encrypted in."""

    principal: str  # our principal, e.g. "kink/host2.example.com@EXAMPLE.COM"
    enctype: int
    key: Secret = field(repr=False)

    @classmethod
    def from_ticket(cls, tgt) -> TGTKey:
        """From a :class:`~kink.kerberos.credentials.ServiceTicket` returned by ``get_tgt()``."""
        return cls(tgt.client, tgt.enctype, Secret(tgt.session_key))


@dataclass(frozen=True, slots=True, eq=False)
class AcceptedRequest:
    """A verified AP-REQ. ``session_key`` is the ticket session key (never a subkey)."""

    client: str  # "alice@EXAMPLE.COM"
    server: str  # the ticket's sname@realm (one of ours)
    session_key: Secret = field(repr=False)
    enctype: int
    ticket_endtime: int
    ticket_starttime: int  # starttime, or authtime when the ticket has none
    authtime: int
    ticket_flags: int
    ctime: int
    cusec: int
    seq_number: int | None
    user_to_user: bool
    kvno: int | None  # kvno of the service key used (None for user-to-user)
    #: replay-cache key of the authenticator when ``accept(store=False)`` left it for
    #: :meth:`Acceptor.commit`
    replay_key: bytes | None = field(default=None, repr=False)

    def make_ap_rep(self) -> bytes:
        return make_ap_rep(self)


class AcceptError(APError):
    """AP-REQ refused. ``code``: the Kerberos error code for the KRB-ERROR.

    ``session_key``/``enctype``: set once the ticket was decrypted (the engine
    can then protect the error); ``ctime``/``cusec``: set once the
    authenticator was decrypted (copy them into the KRB-ERROR, essential for
    KRB_AP_ERR_SKEW); ``client``/``server``: principal strings when known;
    ``user_to_user``: the AP-REQ had use-session-key (a BAD_INTEGRITY then
    means "ticket made for an older TGT of ours": answer KINK_TGT_REP).
    """

    def __init__(
        self,
        message: str,
        code: KrbErrorCode | int,
        *,
        session_key: Secret | None = None,
        enctype: int | None = None,
        ctime: int | None = None,
        cusec: int | None = None,
        client: str | None = None,
        server: str | None = None,
        user_to_user: bool = False,
        ticket_endtime: int | None = None,
    ):
        super().__init__(message, code)
        self.session_key = session_key
        self.enctype = enctype
        self.ctime = ctime
        self.cusec = cusec
        self.client = client
        self.server = server
        self.user_to_user = user_to_user
        self.ticket_endtime = ticket_endtime

    @property
    def protectable(self) -> bool:
        """True when the ticket was decrypted, i.e. the error can be sent under a Cksum."""
        return self.session_key is not None


def _principal_text(name: PrincipalName, realm: str) -> str:
    try:
        return name.to_text(realm)
    except ValueError:
        return ""


def _split_ap_req(data: bytes) -> tuple[int, bytes, EncryptedData]:
    """AP-REQ -> (ap-options, raw Ticket TLV, authenticator EncryptedData).

    Same strictness as ``APReq.decode`` for everything but the ticket, whose
    bytes are returned undecoded: a ticket seen before is then served from the
    acceptor's ticket cache without being decoded or decrypted again.
    """
    r = Reader(data)
    s0 = r.enter(0x6E)
    s1 = r.enter(0x30)
    if r.ctx_int(0) != PVNO:
        raise DecodeError("AP-REQ pvno is not 5", _C.KRB_AP_ERR_BADVERSION)
    if r.ctx_int(1) != AP_REQ:
        raise DecodeError("not an AP-REQ", _C.KRB_AP_ERR_MSG_TYPE)
    opts = r.ctx_flags(2)
    s3 = r.enter(0xA3)
    t0, t1 = r.pos, r.end
    r.pos = t1
    r.leave(s3)
    s4 = r.enter(0xA4)
    auth = EncryptedData._read(r)
    r.leave(s4)
    r.leave(s1)
    r.leave(s0)
    r.finish()
    return opts, r.buf[t0:t1], auth


@dataclass(frozen=True, slots=True, eq=False)
class _TicketEntry:
    """A ticket that decrypted before: its content and the key that decrypted it."""

    etp: EncTicketPart
    server: str
    client: str
    key: object  # the ServiceKey or TGTKey used (must still be current on reuse)
    kvno: int | None


class Acceptor:
    """Checks AP-REQs for one or more service principals.

    ``keys``: a :class:`~kink.kerberos.keytab.KeyTable`/``KeySet``, an
    iterable of :class:`ServiceKey`, or None (user-to-user only).
    ``replay_cache``: a :class:`ReplayCache` (a new one, floor = now, if None).
    ``tgt_keys``: our TGT session keys for user-to-user (sequence of
    :class:`TGTKey` or objects with ``client``/``session_key``/``enctype``, or a
    callable returning them); replace later with :meth:`set_tgt_keys`.
    ``check_addresses``: enforce ticket caddr when ``client_addr`` is given.
    """

    def __init__(
        self,
        keys: KeySet | Iterable[ServiceKey] | None,
        replay_cache: ReplayCache,
        skew: float = 300,
        *,
        tgt_keys: Iterable | Callable[[], Iterable] = (),
        require_mutual: bool = True,
        check_addresses: bool = True,
        ticket_cache_size: int = 4096,
    ):
        if keys is None:
            keys = KeySet(())
        elif not hasattr(keys, "find"):
            keys = KeySet(keys)
        self.keys = keys
        self.skew = float(skew)
        self.replay_cache = replay_cache
        self.require_mutual = require_mutual
        self.check_addresses = check_addresses
        self.ticket_cache_size = ticket_cache_size
        self._tickets: dict[bytes, _TicketEntry] = {}
        self._tgt_source: Callable[[], Iterable] | None = None
        self._tgt_keys: tuple[TGTKey, ...] = ()
        self.set_tgt_keys(tgt_keys)

    # -- user-to-user key source ------------------------------------------------------

    def set_tgt_keys(self, tgt_keys: Iterable | Callable[[], Iterable]) -> None:
        if callable(tgt_keys):
            self._tgt_source = tgt_keys
            self._tgt_keys = ()
        else:
            self._tgt_source = None
            self._tgt_keys = tuple(self._as_tgt_key(k) for k in tgt_keys)

    @staticmethod
    def _as_tgt_key(k) -> TGTKey:
        if isinstance(k, TGTKey):
            return k
        return TGTKey.from_ticket(k)

    def _current_tgt_keys(self) -> tuple[TGTKey, ...]:
        if self._tgt_source is not None:
            return tuple(self._as_tgt_key(k) for k in self._tgt_source())
        return self._tgt_keys

    # -- tickets ----------------------------------------------------------------------

    def _still_current(self, entry: _TicketEntry, u2u: bool) -> bool:
        """A cached ticket is reused only while the key that decrypted it is still ours."""
        if u2u:
            return isinstance(entry.key, TGTKey) and entry.key in self._current_tgt_keys()
        if not isinstance(entry.key, ServiceKey):
            return False
        k = entry.key
        found = self.keys.find(k.principal, k.kvno, k.enctype)[1]
        return found is k or found == k

    def _open_ticket(self, raw_ticket: bytes, u2u: bool) -> _TicketEntry:
        try:
            ticket = Ticket.decode(raw_ticket)
        except DecodeError as e:
            raise AcceptError(f"malformed ticket in AP-REQ: {e}", e.code) from None
        server = _principal_text(ticket.sname, ticket.realm)
        tenc = ticket.enc_part
        used: TGTKey | ServiceKey
        if u2u:
            tgts = self._current_tgt_keys()
            if not tgts:
                raise AcceptError("user-to-user AP-REQ but we hold no TGT", KRB_AP_ERR_NO_TGT,
                                  server=server, user_to_user=True)
            mine = [t for t in tgts if t.principal == server]
            if not mine:
                raise AcceptError("user-to-user ticket is not for us", _C.KRB_AP_ERR_NOT_US,
                                  server=server, user_to_user=True)
            plain = None
            for t in mine:
                if t.enctype != tenc.etype:
                    continue
                try:
                    plain = profile(t.enctype).decrypt(t.key, KEY_USAGE_TICKET, tenc.cipher)
                except CryptoError:
                    continue
                used = t
                break
            if plain is None:
                raise AcceptError(
                    "user-to-user ticket does not decrypt with our current TGT session key",
                    _C.KRB_AP_ERR_BAD_INTEGRITY, server=server, user_to_user=True)
            kvno = None
        else:
            status, sk = self.keys.find(server, tenc.kvno, tenc.etype)
            if sk is None:
                if status is Lookup.NO_KVNO:
                    raise AcceptError(f"no key version {tenc.kvno} for {server}",
                                      _C.KRB_AP_ERR_BADKEYVER, server=server)
                if status is Lookup.NO_ENCTYPE:
                    raise AcceptError(f"no key of enctype {tenc.etype} for {server}",
                                      _C.KRB_AP_ERR_NOKEY, server=server)
                raise AcceptError(f"ticket is for {server!r}, not for us", _C.KRB_AP_ERR_NOT_US,
                                  server=server)
            try:
                plain = profile(sk.enctype).decrypt(sk.key, KEY_USAGE_TICKET, tenc.cipher)
            except CryptoError:
                raise AcceptError("ticket does not decrypt with our service key",
                                  _C.KRB_AP_ERR_BAD_INTEGRITY, server=server) from None
            used = sk
            kvno = sk.kvno
        try:
            etp = EncTicketPart.decode(plain)
        except DecodeError:
            raise AcceptError("malformed EncTicketPart", _C.KRB_AP_ERR_BAD_INTEGRITY,
                              server=server, user_to_user=u2u) from None
        entry = _TicketEntry(etp, server, _principal_text(etp.cname, etp.crealm), used, kvno)
        cache = self._tickets
        if len(cache) >= self.ticket_cache_size:
            # drop the oldest half (dicts keep insertion order); cheap and bounded
            for k in list(cache)[: max(1, len(cache) // 2)]:
                del cache[k]
        cache[raw_ticket] = entry
        return entry

    def knows_ticket(self, ap_req_bytes: bytes) -> bool:
        """Whether the AP-REQ carries a ticket this acceptor already decrypted (it is in
        the ticket cache): accepting it costs no ticket decryption, only the
        authenticator's. Tickets travel in clear, so this proves nothing about the sender;
        it only says the work is cheap."""
        try:
            _opts, raw_ticket, _auth = _split_ap_req(ap_req_bytes)
        except DecodeError:
            return False
        return raw_ticket in self._tickets

    # -- the checks -----------------------------------------------------------------

    def accept(self, ap_req_bytes: bytes, now: float, client_addr=None, *,
               store: bool = True) -> AcceptedRequest:
        """Verify a raw AP-REQ at time ``now``; AcceptError on refusal (module docstring).

        The replay cache refuses a replay either way; with ``store=False`` the
        authenticator is not recorded yet: the caller records it with :meth:`commit` once
        the request is authorized and its own integrity check passed (so that requests
        we refuse never fill the cache)."""
        try:
            opts, raw_ticket, auth_ed = _split_ap_req(ap_req_bytes)
        except DecodeError as e:
            raise AcceptError(f"malformed AP-REQ: {e}", e.code) from None
        u2u = bool(opts & _USE_SESSION_KEY)
        entry = self._tickets.get(raw_ticket)
        if entry is None or not self._still_current(entry, u2u):
            entry = self._open_ticket(raw_ticket, u2u)
        etp = entry.etp
        server = entry.server
        kvno = entry.kvno
        session_key = etp.key.keyvalue
        enctype = etp.key.keytype
        client = entry.client
        ctx = {"session_key": session_key, "enctype": enctype, "client": client,
               "server": server, "user_to_user": u2u, "ticket_endtime": etp.endtime}

        # -- the authenticator
        try:
            if auth_ed.etype != enctype:
                raise AcceptError("authenticator enctype differs from the session key's",
                                  _C.KRB_AP_ERR_BAD_INTEGRITY, **ctx)
            try:
                aplain = profile(enctype).decrypt(session_key, KEY_USAGE_AP_REQ_AUTH,
                                                  auth_ed.cipher)
            except CryptoError:
                raise AcceptError("authenticator does not decrypt with the session key",
                                  _C.KRB_AP_ERR_BAD_INTEGRITY, **ctx) from None
            try:
                auth = Authenticator.decode(aplain)
            except DecodeError:
                raise AcceptError("malformed Authenticator", _C.KRB_AP_ERR_BAD_INTEGRITY,
                                  **ctx) from None
        except KerberosError as e:
            if isinstance(e, AcceptError):
                raise
            raise AcceptError(str(e), e.code, **ctx) from None

        ctime = auth.ctime
        cusec = auth.cusec
        ctx["ctime"] = ctime
        ctx["cusec"] = cusec
        if auth.crealm != etp.crealm or auth.cname.components != etp.cname.components:
            raise AcceptError("authenticator client differs from the ticket's",
                              _C.KRB_AP_ERR_BADMATCH, **ctx)
        if etp.caddr and self.check_addresses and client_addr is not None:
            if not _addr_in(client_addr, etp.caddr):
                raise AcceptError("client address not in the ticket", _C.KRB_AP_ERR_BADADDR,
                                  **ctx)
        if self.require_mutual and not (opts & _MUTUAL_REQUIRED):
            raise AcceptError("KINK requires mutual-required in the AP-REQ",
                              _C.KRB_ERR_GENERIC, **ctx)
        skew = self.skew
        if abs(now - (ctime + cusec * 1e-6)) > skew:
            raise AcceptError("clock skew too great", _C.KRB_AP_ERR_SKEW, **ctx)
        start = etp.starttime if etp.starttime is not None else etp.authtime
        if start - skew > now or etp.flags & _INVALID:
            raise AcceptError("ticket not yet valid", _C.KRB_AP_ERR_TKT_NYV, **ctx)
        if now - skew > etp.endtime:
            raise AcceptError("ticket expired", _C.KRB_AP_ERR_TKT_EXPIRED, **ctx)
        rc = self.replay_cache
        try:
            key = rc.check(auth_ed.cipher, ctime, cusec, now, client)
            if store:
                rc.store(key, ctime, cusec, now, client)
        except APError as e:
            raise AcceptError(str(e), e.code, **ctx) from None

        return AcceptedRequest(client, server, session_key, enctype, etp.endtime, start,
                               etp.authtime, etp.flags, ctime, cusec, auth.seq_number, u2u, kvno,
                               None if store else key)

    def commit(self, accepted: AcceptedRequest, now: float) -> None:
        """Record the authenticator of a request accepted with ``store=False`` (see
        :meth:`accept`). AcceptError (REPEAT, or SKEW when the principal's share of a
        full cache holds only newer authenticators) when it cannot be recorded."""
        key = accepted.replay_key
        if key is None:
            return
        try:
            self.replay_cache.store(key, accepted.ctime, accepted.cusec, now, accepted.client)
        except APError as e:
            raise AcceptError(str(e), e.code, session_key=accepted.session_key,
                              enctype=accepted.enctype, ctime=accepted.ctime,
                              cusec=accepted.cusec, client=accepted.client,
                              server=accepted.server, user_to_user=accepted.user_to_user,
                              ticket_endtime=accepted.ticket_endtime) from None


def _addr_in(client_addr, caddr) -> bool:
    """``client_addr``: bytes (packed), an ``ipaddress`` object, or a string."""
    import ipaddress

    if isinstance(client_addr, bytes | bytearray):
        packed = bytes(client_addr)
    else:
        packed = ipaddress.ip_address(
            client_addr if not isinstance(client_addr, tuple) else client_addr[0]
        ).packed
    return any(a.address == packed for a in caddr)


# ---------------------------------------------------------------------------
# Replies


def make_ap_rep(accepted: AcceptedRequest) -> bytes:
    """AP-REP for an accepted request: EncAPRepPart{ctime, cusec[, seq-number]}, usage 12.

    No subkey (KINK never uses one). The seq-number is echoed when the
    authenticator carried one.
    """
    part = EncAPRepPart(accepted.ctime, accepted.cusec, None, accepted.seq_number)
    cipher = profile(accepted.enctype).encrypt(accepted.session_key, KEY_USAGE_AP_REP,
                                               part.encode())
    return APRep(EncryptedData(accepted.enctype, cipher)).encode()


def _split_name(name, realm: str | None) -> tuple[PrincipalName, str]:
    if isinstance(name, PrincipalName):
        if realm is None:
            raise ValueError("realm required with a PrincipalName")
        return name, realm
    pn, r = PrincipalName.from_text(name, NT_PRINCIPAL, default_realm=realm)
    return pn, (realm if realm is not None else r)


def make_krb_error(
    code: KrbErrorCode | int,
    now: float,
    *,
    realm: str | None = None,
    sname: str | PrincipalName,
    ctime: int | None = None,
    cusec: int | None = None,
    e_text: str | None = None,
    client: str | None = None,
) -> bytes:
    """KRB-ERROR with stime/susec = ``now`` (RFC 4120 §5.9.1; RFC 4430 §3.5).

    ``sname``: our principal, ``"kink/host@REALM"`` or ``"kink/host"`` plus
    ``realm`` (or a PrincipalName plus ``realm``). ``ctime``/``cusec``: copy
    them from the authenticator (``AcceptError.ctime/cusec``), needed for
    KRB_AP_ERR_SKEW. ``client``: optional ``"user@REALM"`` for crealm/cname.
    """
    pn, srealm = _split_name(sname, realm)
    stime = int(now)
    susec = min(999_999, max(0, int((now - stime) * 1_000_000)))
    crealm = cname = None
    if client:
        cname, crealm = PrincipalName.from_text(client, NT_PRINCIPAL, default_realm=srealm)
    if ctime is None:
        cusec = None
    elif cusec is None:
        cusec = 0
    return KrbError(int(code), stime, susec, srealm, pn, ctime, cusec, crealm, cname,
                    e_text).encode()
