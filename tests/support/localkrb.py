"""A Kerberos realm without a KDC process, for engine tests (tests only).

:class:`LocalRealm` holds random long-term keys for ``krbtgt/REALM@REALM``, the KINK
host services (``kink/<host>@REALM``) and users, as the MIT test realm of
``tests/realm.py`` / ``krb5-testrealm`` does (same names, same four enctypes in the
same order, same kvnos), and issues tickets in memory the way that KDC does:

* AS exchange (a daemon's keytab, or :meth:`LocalRealm.kinit` for a user): a TGT
  encrypted in the krbtgt key, flags forwardable, renewable, initial (and
  enc-pa-rep, as MIT);
* TGS exchange: the client presents its TGT, which the KDC decrypts and checks
  (expired: error 32) before issuing a service ticket encrypted in the service's
  key (flags forwardable, renewable, transited-policy-checked; authtime from the
  TGT, endtime at most the TGT's);
* user-to-user (RFC 4120 ENC-TKT-IN-SKEY): the peer's TGT is decrypted with the
  krbtgt key, its client must be the requested server (error 26), and the ticket is
  encrypted in that TGT's session key, so that the acceptor opens it with the key
  the engine got from ``get_tgt()``;
* the session key enctype is the first of the client's enctypes (default: the
  realm's order 18, 17, 19, 20) that the server has a key for; the ticket's enctype
  is the server's first key (18).

Ticket times come from the KDC clock (:attr:`LocalRealm.clock`, default the real
time, as the real KDC's; tests/support/simnet.py starts its virtual clock there),
never from the requester's ``now``, which — as with the real ccache — only decides
whether a cached ticket is still good. Lifetimes are the test realm's: 10 h
(``max_life``), renewable for a day.

:class:`LocalCredentials` has the interface of
:class:`kink.kerberos.credentials.Credentials` that simnet and the engine tests use
(``get_service_ticket``, ``get_u2u_ticket``, ``get_tgt``, ``principal``,
``daemon_mode``, ``close``) and returns the same
:class:`~kink.kerberos.credentials.ServiceTicket` type. ``LocalRealm.stop_kdc()`` makes
every exchange fail with :class:`~kink.kerberos.errors.KDCUnreachable` (cached tickets
still serve, as with a real ccache) until ``start_kdc()``.

Not modelled: the PAC (authorization-data; the acceptor ignores it), pre-authentication,
renewal, cross-realm, kvno rotation.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from isakmp.secret import Secret
from kink.kerberos.credentials import ServiceTicket
from kink.kerberos.crypto import SUPPORTED_ENCTYPES, profile
from kink.kerberos.errors import CredentialsError, CryptoError, DecodeError, KDCUnreachable
from kink.kerberos.errors import KrbErrorCode as C
from kink.kerberos.keytab import KeySet, ServiceKey
from kink.kerberos.messages import (
    NT_PRINCIPAL,
    NT_SRV_INST,
    EncryptedData,
    EncryptionKey,
    EncTicketPart,
    PrincipalName,
    Ticket,
    TicketFlags,
    TransitedEncoding,
)

__all__ = ["ENCTYPES", "LocalRealm", "LocalCredentials", "LocalCCache"]

#: the test realm's enctypes, in its order (krb5-testrealm/bootstrap.py ENCTYPES)
ENCTYPES = (18, 17, 19, 20)
MAX_LIFE = 10 * 3600  # krb5-testrealm max_life
RENEW_LIFE = 24 * 3600  # what the MIT test realm's tickets carry (renew-till)
SERVICE = "kink"
KEY_USAGE_TICKET = 2

#: RFC 6806 "enc-pa-rep" (bit 15), which the MIT KDC sets on every ticket
ENC_PA_REP = 1 << (31 - 15)
_TGT_FLAGS = int(TicketFlags.FORWARDABLE | TicketFlags.RENEWABLE | TicketFlags.INITIAL) \
    | ENC_PA_REP
_TGS_FLAGS = int(TicketFlags.FORWARDABLE | TicketFlags.RENEWABLE
                 | TicketFlags.TRANSITED_POLICY_CHECKED) | ENC_PA_REP


@dataclass
class _Principal:
    name: str
    kvno: int
    keys: dict[int, Secret] = field(repr=False)  # enctype -> key, in the realm's order


@dataclass
class LocalCCache:
    """What a ccache holds: the client principal and its tickets (TGT included)."""

    name: str
    principal: str
    tickets: list[ServiceTicket] = field(default_factory=list)


class LocalRealm:
    """The keys of a realm and its KDC, in memory (module docstring).

    ``hosts`` and ``users`` are short names as for ``tests.realm.up``; the principals
    are ``kink/<host>@REALM`` and ``<user>@REALM``. ``clock``: the KDC's time.
    """

    def __init__(self, realm: str = "KINK.TEST",
                 hosts: Iterable[str] = ("host1.kink.test", "host2.kink.test"),
                 users: Iterable[str] = ("alice", "bob"), *,
                 enctypes: Iterable[int] = ENCTYPES, clock: Callable[[], float] = time.time,
                 max_life: int = MAX_LIFE, renew_life: int = RENEW_LIFE):
        self.realm = realm
        self.enctypes = tuple(enctypes)
        if not self.enctypes or any(e not in SUPPORTED_ENCTYPES for e in self.enctypes):
            raise ValueError(f"unsupported enctypes {self.enctypes}")
        self.clock = clock
        self.max_life = int(max_life)
        self.renew_life = int(renew_life)
        self.reachable = True
        #: KDC exchanges served: ("as"|"tgs"|"u2u", client, server)
        self.requests: list[tuple[str, str, str]] = []
        self.hosts = {h.lower(): {"principal": f"{SERVICE}/{h.lower()}@{realm}"} for h in hosts}
        self.users = {u: "" for u in users}  # short name -> password (none: no kinit prompt)
        self.krbtgt = f"krbtgt/{realm}@{realm}"
        self._db: dict[str, _Principal] = {}
        self._ccaches: dict[str, LocalCCache] = {}
        self._n = itertools.count(1)
        # kvnos as in the MIT test realm: krbtgt 1, services 2 (addprinc + ktadd), users 1
        self.add_principal(self.krbtgt, kvno=1)
        for info in self.hosts.values():
            self.add_principal(info["principal"], kvno=2)
        for u in self.users:
            self.add_principal(self.user(u), kvno=1)

    # -- names, as tests.realm.Realm ----------------------------------------------------

    def service(self, host: str) -> str:
        return self.hosts[host]["principal"]

    def user(self, name: str) -> str:
        return f"{name}@{self.realm}"

    def __repr__(self) -> str:
        return f"<LocalRealm {self.realm} {sorted(self._db)}>"

    # -- the database -------------------------------------------------------------------

    def add_principal(self, principal: str, *, kvno: int = 1,
                      enctypes: Iterable[int] | None = None) -> None:
        """A principal with random keys (``addprinc -randkey``)."""
        ets = tuple(enctypes) if enctypes is not None else self.enctypes
        self._db[principal] = _Principal(principal, kvno,
                                         {e: profile(e).random_key() for e in ets})

    def keys(self, principal: str) -> list[ServiceKey]:
        p = self._db[principal]
        return [ServiceKey(principal, p.kvno, e, k) for e, k in p.keys.items()]

    def keyset(self, host: str) -> KeySet:
        """The acceptor's keys of ``kink/<host>`` (what ``KeyTable(realm.keytab(host))`` reads)."""
        return KeySet(self.keys(self.service(host)))

    # -- the KDC ------------------------------------------------------------------------

    def now(self) -> int:
        return int(self.clock())

    def stop_kdc(self) -> None:
        self.reachable = False

    def start_kdc(self) -> None:
        self.reachable = True

    def _contact(self) -> None:
        if not self.reachable:
            raise KDCUnreachable(f"Cannot contact any KDC for realm '{self.realm}'")

    def _lookup(self, principal: str, code: int) -> _Principal:
        p = self._db.get(principal)
        if p is None:
            raise CredentialsError(f"{principal} not found in Kerberos database", code)
        return p

    @staticmethod
    def _session_enctype(client_enctypes: tuple[int, ...], server: _Principal) -> int:
        for e in client_enctypes:
            if e in server.keys:
                return e
        raise CredentialsError(f"no common enctype with {server.name}", C.KDC_ERR_ETYPE_NOSUPP)

    def _issue(self, client: str, server: str, *, key_etype: int, key: Secret, kvno: int | None,
               session_etype: int, flags: int, authtime: int, starttime: int, endtime: int,
               user_to_user: bool = False) -> ServiceTicket:
        sk = profile(session_etype).random_key()
        cname, crealm = PrincipalName.from_text(client)
        stype = NT_SRV_INST if server == self.krbtgt else NT_PRINCIPAL
        sname, srealm = PrincipalName.from_text(server, stype)
        renew = authtime + self.renew_life  # a TGS ticket's is its TGT's
        # MIT leaves starttime out of the ticket when it equals authtime
        etp = EncTicketPart(flags, EncryptionKey(session_etype, sk), crealm, cname,
                            TransitedEncoding(1, b""), authtime, endtime,
                            None if starttime == authtime else starttime, renew)
        cipher = profile(key_etype).encrypt(key, KEY_USAGE_TICKET, etp.encode())
        t = Ticket(srealm, sname, EncryptedData(key_etype, cipher, kvno))
        return ServiceTicket(client=client, server=server, ticket_bytes=t.encode(),
                             session_key=sk, enctype=session_etype, starttime=starttime,
                             endtime=endtime, user_to_user=user_to_user, authtime=authtime,
                             flags=flags)

    def _open_tgt(self, raw: bytes) -> EncTicketPart:
        """Decrypt a TGT (ours, or a peer's second ticket) with the krbtgt key."""
        try:
            t = Ticket.decode(bytes(raw))
        except DecodeError as e:
            raise CredentialsError(f"malformed ticket: {e}", C.KRB_ERR_GENERIC) from None
        tgs = self._db[self.krbtgt]
        if t.sname.components != ("krbtgt", self.realm) or t.realm != self.realm:
            raise CredentialsError("not a TGT of this realm", C.KDC_ERR_POLICY)
        key = tgs.keys.get(t.enc_part.etype)
        if key is None or (t.enc_part.kvno is not None and t.enc_part.kvno != tgs.kvno):
            raise CredentialsError("TGT made with a key we do not have", C.KRB_AP_ERR_BADKEYVER)
        try:
            plain = profile(t.enc_part.etype).decrypt(key, KEY_USAGE_TICKET, t.enc_part.cipher)
            etp = EncTicketPart.decode(plain)
        except (CryptoError, DecodeError):
            raise CredentialsError("Decrypt integrity check failed",
                                   C.KRB_AP_ERR_BAD_INTEGRITY) from None
        if etp.endtime < self.now():
            raise CredentialsError("Ticket expired", C.KRB_AP_ERR_TKT_EXPIRED)
        return etp

    def as_exchange(self, client: str, enctypes: tuple[int, ...] | None = None) -> ServiceTicket:
        """A TGT for ``client`` (kinit / a daemon's keytab)."""
        self._contact()
        c = self._lookup(client, C.KDC_ERR_C_PRINCIPAL_UNKNOWN)
        tgs = self._db[self.krbtgt]
        now = self.now()
        etype = self._session_enctype(enctypes or self.enctypes, c)
        kt = next(iter(tgs.keys))
        self.requests.append(("as", client, self.krbtgt))
        return self._issue(client, self.krbtgt, key_etype=kt, key=tgs.keys[kt], kvno=tgs.kvno,
                           session_etype=etype, flags=_TGT_FLAGS, authtime=now, starttime=now,
                           endtime=now + self.max_life)

    def tgs_exchange(self, tgt: ServiceTicket, server: str,
                     enctypes: tuple[int, ...] | None = None,
                     second_ticket: bytes | None = None) -> ServiceTicket:
        """A ticket for ``server`` with ``tgt``; ``second_ticket``: user-to-user."""
        self._contact()
        mine = self._open_tgt(tgt.ticket_bytes)
        client = mine.cname.to_text(mine.crealm)
        now = self.now()
        if second_ticket is None:
            s = self._lookup(server, C.KDC_ERR_S_PRINCIPAL_UNKNOWN)
            etype = self._session_enctype(enctypes or self.enctypes, s)
            kt = next(iter(s.keys))
            key, kvno = s.keys[kt], s.kvno
            self.requests.append(("tgs", client, server))
        else:
            theirs = self._open_tgt(second_ticket)
            if theirs.cname.to_text(theirs.crealm) != server:
                raise CredentialsError("Requested server and ticket don't match",
                                       C.KDC_ERR_SERVER_NOMATCH)
            s = self._lookup(server, C.KDC_ERR_S_PRINCIPAL_UNKNOWN)
            etype = self._session_enctype(enctypes or self.enctypes, s)
            kt, key, kvno = theirs.key.keytype, theirs.key.keyvalue, None
            self.requests.append(("u2u", client, server))
        end = min(mine.endtime, now + self.max_life)
        return self._issue(client, server, key_etype=kt, key=key, kvno=kvno,
                           session_etype=etype, flags=_TGS_FLAGS, authtime=mine.authtime,
                           starttime=now, endtime=end, user_to_user=second_ticket is not None)

    # -- clients ------------------------------------------------------------------------

    def kinit(self, user: str, ccache: str | None = None) -> str:
        """kinit USER into a new in-memory ccache named ``ccache``; returns its name
        (pass it to :meth:`from_ccache`). Same signature as ``tests.realm.Realm.kinit``."""
        principal = self.user(user) if "@" not in user else user
        name = ccache or f"LOCAL:{user}-{next(self._n)}"
        self._ccaches[name] = LocalCCache(name, principal, [self.as_exchange(principal)])
        return name

    def from_keytab(self, principal: str, *, enctypes=None,
                    min_lifetime: float = 60.0) -> LocalCredentials:
        """Daemon mode (``Credentials.from_keytab``): TGTs are acquired as needed."""
        self._lookup(principal, C.KDC_ERR_C_PRINCIPAL_UNKNOWN)
        cc = LocalCCache(f"LOCAL:{principal}-{next(self._n)}", principal)
        return LocalCredentials(self, cc, daemon=True, enctypes=enctypes,
                                min_lifetime=min_lifetime)

    def from_ccache(self, name: str, *, enctypes=None,
                    min_lifetime: float = 60.0) -> LocalCredentials:
        """User mode (``Credentials.from_ccache``) on a ccache made by :meth:`kinit`."""
        cc = self._ccaches.get(name)
        if cc is None:
            raise CredentialsError(f"no credentials in ccache {name!r} (run kinit)")
        return LocalCredentials(self, cc, daemon=False, enctypes=enctypes,
                                min_lifetime=min_lifetime)


class LocalCredentials:
    """``kink.kerberos.credentials.Credentials`` over a :class:`LocalRealm` (same caching
    rules: a ticket is reused while it ends more than ``min_lifetime`` after ``now``)."""

    def __init__(self, realm: LocalRealm, ccache: LocalCCache, *, daemon: bool,
                 enctypes=None, min_lifetime: float = 60.0):
        self.realm = realm
        self.cc = ccache
        self.ccache_name = ccache.name
        self.keytab = f"LOCAL:{ccache.principal}" if daemon else None
        self.enctypes = tuple(enctypes) if enctypes else None
        if self.enctypes and any(e not in SUPPORTED_ENCTYPES for e in self.enctypes):
            raise CredentialsError(f"unsupported enctypes in {self.enctypes}")
        self.min_lifetime = float(min_lifetime)
        self._u2u_cache: dict[tuple[str, bytes], ServiceTicket] = {}

    @property
    def principal(self) -> str:
        return self.cc.principal

    @property
    def daemon_mode(self) -> bool:
        return self.keytab is not None

    def __repr__(self) -> str:
        mode = "keytab" if self.daemon_mode else "ccache"
        return f"<LocalCredentials {mode} {self.principal} ccache={self.ccache_name}>"

    def close(self) -> None:
        self._u2u_cache.clear()

    def __enter__(self) -> LocalCredentials:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the ccache ---------------------------------------------------------------------

    def _allowed(self, enctype: int) -> bool:
        return enctype in (self.enctypes or SUPPORTED_ENCTYPES)

    def _read(self, server: str, now: float) -> ServiceTicket | None:
        found = [t for t in self.cc.tickets
                 if t.server == server and self._allowed(t.enctype)
                 and t.endtime > now + self.min_lifetime and t.starttime <= now + 300]
        if not found:
            return None
        return max(found, key=lambda t: (t.endtime, t.authtime))

    def _store(self, st: ServiceTicket) -> None:
        self.cc.tickets.append(st)

    def _forget(self, server: str) -> None:
        self.cc.tickets[:] = [t for t in self.cc.tickets if t.server != server]

    def _my_tgt(self, now: float) -> ServiceTicket:
        """The TGT for a TGS exchange (daemon mode: acquired when missing or past half its
        lifetime, as MIT's GSS does with a client keytab; user mode: the kinit one,
        CredentialsError when it expired)."""
        tgt = self._read(self.realm.krbtgt, now)
        if tgt is None:
            tgt = self._read(self.realm.krbtgt, self.realm.now())
        if tgt is not None and self.daemon_mode \
                and self.realm.now() > tgt.starttime + (tgt.endtime - tgt.starttime) // 2:
            tgt = None  # MIT's GSS refreshes a keytab-made TGT after half its lifetime
        if tgt is None:
            if not self.daemon_mode:
                raise CredentialsError(
                    f"no valid TGT for {self.principal} in ccache {self.ccache_name!r} "
                    "(run kinit)", C.KRB_AP_ERR_TKT_EXPIRED)
            tgt = self.realm.as_exchange(self.principal, self.enctypes)
            self._store(tgt)
        return tgt

    # -- the Credentials API ------------------------------------------------------------

    def get_service_ticket(self, server_principal: str, now: float | None = None,
                           force_new: bool = False) -> ServiceTicket:
        if now is None:
            now = self.realm.clock()
        if not force_new:
            st = self._read(server_principal, now)
            if st is not None:
                return st
        else:
            self._forget(server_principal)
        try:
            tgt = self._my_tgt(now)
            st = self.realm.tgs_exchange(tgt, server_principal, self.enctypes)
        except CredentialsError as e:
            raise type(e)(f"cannot get a service ticket for {server_principal}: {e}",
                          e.code) from None
        self._store(st)
        got = self._read(server_principal, now)
        if got is None:
            got = self._read(server_principal, self.realm.clock())  # ``now`` was not the KDC's
        if got is None:
            raise CredentialsError(
                f"no usable ticket for {server_principal} in {self.ccache_name!r} after "
                f"fetching one (enctype not allowed, or lifetime below {self.min_lifetime}s)")
        return got

    def get_tgt(self, now: float | None = None) -> ServiceTicket:
        if now is None:
            now = self.realm.clock()
        server = self.realm.krbtgt
        st = self._read(server, now)
        if st is not None:
            return st
        if not self.daemon_mode:
            raise CredentialsError(
                f"no valid TGT for {self.principal} in ccache {self.ccache_name!r} (run kinit)")
        try:
            self._store(self.realm.as_exchange(self.principal, self.enctypes))
        except CredentialsError as e:
            raise type(e)(f"cannot get a TGT for {self.principal}: {e}", e.code) from None
        st = self._read(server, self.realm.clock())
        if st is None:
            raise CredentialsError(f"TGT for {self.principal} unusable after acquiring it")
        return st

    def get_u2u_ticket(self, server_principal: str, server_tgt_bytes: bytes,
                       now: float | None = None, force_new: bool = False) -> ServiceTicket:
        if now is None:
            now = self.realm.clock()
        key = (server_principal, hashlib.sha256(bytes(server_tgt_bytes)).digest())
        hit = self._u2u_cache.get(key)
        if hit is not None and not force_new and hit.valid_at(now, self.min_lifetime):
            return hit
        try:
            tgt = self._my_tgt(now)
            st = self.realm.tgs_exchange(tgt, server_principal, self.enctypes,
                                         second_ticket=bytes(server_tgt_bytes))
        except CredentialsError as e:
            raise type(e)(f"user-to-user ticket for {server_principal}: {e}", e.code) from None
        for k in [k for k, v in self._u2u_cache.items() if not v.valid_at(now)]:
            del self._u2u_cache[k]
        self._u2u_cache[key] = st
        return st
