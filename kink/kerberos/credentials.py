"""Initiator credentials: service tickets, our TGT, user-to-user tickets (synchronous).

The only module of ``kink.kerberos`` that talks to libkrb5 and the KDC. All
calls block; the daemon runs them in a worker thread. One lock per
:class:`Credentials` object serialises them.

Two modes:

* :meth:`Credentials.from_keytab` (daemon): the daemon's principal and
  client keytab, with its **own** ccache — by default a ``MEMORY:`` ccache
  unique to the object — so the invoking user's ccache is never read or
  written.
* :meth:`Credentials.from_ccache` (``kinit`` then connect): the user's ccache
  (``KRB5CCNAME`` / the default), read and extended with service tickets.

:meth:`Credentials.get_service_ticket` reads the ticket and its session key
from the ccache with pykrb5; when there is none (or it expires within
``min_lifetime`` seconds, or ``force_new``) it is fetched once through
``gss_init_sec_context`` (which stores it in the ccache) and read again.
GSS is used only as a ticket fetcher; its token is discarded. User-to-user
tickets come from :mod:`kink.kerberos.u2u` (ctypes, ``krb5_get_credentials``
with KRB5_GC_USER_USER) and are cached in memory.

Errors: :class:`KDCUnreachable` when no KDC answers (KRB5_KDC_UNREACH,
"Cannot contact any KDC"), otherwise :class:`CredentialsError` whose ``code``
is the Kerberos protocol error code when the KDC sent one (e.g. 7
KDC_ERR_S_PRINCIPAL_UNKNOWN, 27 KDC_ERR_MUST_USE_USER2USER). Every error has a
stable ``reason`` (``principal-unknown``, ``clock-skew``, ``kdc-unreachable``,
``wrong-key`` ...) and ``hint``; for a named reason its message says what is wrong
and what to check, and the library's text is kept in ``raw`` (debug logs). Messages
never contain key or ticket bytes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from dataclasses import dataclass, field

import gssapi
import gssapi.raw
import krb5

from isakmp.secret import Secret

from . import u2u as _u2u
from .crypto import SUPPORTED_ENCTYPES
from .errors import CredentialsError, library_error
from .keytab import KeyTable

__all__ = ["ServiceTicket", "Credentials", "KRB5_KDC_UNREACH"]

KRB5_ERR_BASE = _u2u.KRB5_ERR_BASE
KRB5_KDC_UNREACH = _u2u.KRB5_KDC_UNREACH

_MUTUAL = gssapi.RequirementFlag.mutual_authentication


@dataclass(frozen=True, slots=True)
class ServiceTicket:
    """A ticket we hold as a client, with its session key (the KINK key)."""

    client: str  # "alice@EXAMPLE.COM"
    server: str  # "kink/host.example.com@EXAMPLE.COM" (or krbtgt/R@R for get_tgt)
    ticket_bytes: bytes = field(repr=False)  # DER Ticket (0x61...)
    session_key: Secret = field(repr=False)
    enctype: int
    starttime: int
    endtime: int
    user_to_user: bool = False
    authtime: int = 0
    flags: int = 0  # TicketFlags bitmask

    def valid_at(self, now: float, min_lifetime: float = 0.0) -> bool:
        return self.endtime > now + min_lifetime


def _gss_error(e: gssapi.exceptions.GSSError, what: str,
               principal: str | None = None) -> CredentialsError:
    try:
        detail = e.gen_message()
    except Exception:  # pragma: no cover - gen_message itself failed
        detail = str(e)
    detail = " ".join(detail.split())
    return library_error(getattr(e, "min_code", None), what, detail, principal)


def _krb5_error(e: krb5.Krb5Error, what: str, principal: str | None = None) -> CredentialsError:
    return library_error(getattr(e, "err_code", None), what, str(e), principal)


class Credentials:
    """Client-side Kerberos credentials of a KINK peer. Use the two constructors."""

    def __init__(
        self,
        ccache: str,
        *,
        principal: str | None = None,
        keytab: str | None = None,
        enctypes: tuple[int, ...] | list[int] | None = None,
        min_lifetime: float = 60.0,
    ):
        self.ccache_name = ccache
        self.keytab = keytab
        self._principal = principal
        self.enctypes = tuple(enctypes) if enctypes else None
        if self.enctypes and any(e not in SUPPORTED_ENCTYPES for e in self.enctypes):
            raise CredentialsError(f"unsupported enctypes in {self.enctypes}")
        self.min_lifetime = float(min_lifetime)
        self.owns_ccache = False  # True for the private MEMORY ccache of from_keytab()
        self._lock = threading.RLock()
        self._ctx = krb5.init_context()
        self._u2u_cache: dict[tuple[str, bytes], ServiceTicket] = {}

    # -- constructors ---------------------------------------------------------------

    @classmethod
    def from_keytab(
        cls,
        principal: str,
        keytab: str | os.PathLike,
        ccache: str | None = None,
        *,
        enctypes=None,
        min_lifetime: float = 60.0,
    ) -> Credentials:
        """Daemon mode: ``principal``'s keys from ``keytab``, tickets in our own ccache.

        The keytab is checked now: CredentialsError naming the file if it is
        missing, unreadable or has no key for ``principal``.
        """
        kt = os.fspath(keytab)
        KeyTable(kt, principal)  # validates; raises a clear CredentialsError
        kt_name = kt if ":" in kt and not kt.startswith("/") else f"FILE:{kt}"
        own = ccache is None
        if own:
            ccache = f"MEMORY:kinkd-{uuid.uuid4().hex}"
        creds = cls(ccache, principal=principal, keytab=kt_name, enctypes=enctypes,
                    min_lifetime=min_lifetime)
        creds.owns_ccache = own
        return creds

    @classmethod
    def from_ccache(cls, ccache_name: str | None = None, *, enctypes=None,
                    min_lifetime: float = 60.0) -> Credentials:
        """User mode: the invoking user's ccache (default: KRB5CCNAME / the library default)."""
        if ccache_name is None:
            ctx = krb5.init_context()
            try:
                cc = krb5.cc_default(ctx)
                ccache_name = f"{cc.cache_type.decode()}:{cc.name.decode()}"
            except krb5.Krb5Error as e:
                raise _krb5_error(e, "no default credential cache", "the user") from None
        return cls(ccache_name, enctypes=enctypes, min_lifetime=min_lifetime)

    def close(self) -> None:
        """Destroy the private MEMORY ccache of a from_keytab() object (no-op otherwise)."""
        with self._lock:
            self._u2u_cache.clear()
            if self.owns_ccache:
                try:
                    krb5.cc_destroy(self._ctx, self._cc())
                except krb5.Krb5Error:
                    pass
                self.owns_ccache = False

    def __enter__(self) -> Credentials:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def daemon_mode(self) -> bool:
        return self.keytab is not None

    @property
    def principal(self) -> str:
        """Our client principal (from the ccache in user mode)."""
        if self._principal is None:
            with self._lock:
                cc = self._cc()
                try:
                    p = krb5.cc_get_principal(self._ctx, cc)
                except krb5.Krb5Error as e:
                    raise _krb5_error(
                        e, f"no credentials in ccache {self.ccache_name!r} (run kinit)",
                        f"ccache {self.ccache_name}") from None
                self._principal = self._unparse(p)
        return self._principal

    def __repr__(self) -> str:
        mode = "keytab" if self.daemon_mode else "ccache"
        return f"<Credentials {mode} {self._principal or '?'} ccache={self.ccache_name}>"

    # -- helpers --------------------------------------------------------------------

    def _unparse(self, princ) -> str:
        return krb5.unparse_name_flags(self._ctx, princ).decode("utf-8", "surrogateescape")

    def _cc(self):
        return krb5.cc_resolve(self._ctx, self.ccache_name.encode())

    def _allowed(self, enctype: int) -> bool:
        if self.enctypes is not None:
            return enctype in self.enctypes
        return enctype in SUPPORTED_ENCTYPES

    def _find_creds(self, server: str, now: float) -> list:
        """Matching non-U2U creds in our ccache, valid at ``now`` (+ min_lifetime)."""
        try:
            cc = self._cc()
            client = self._unparse(krb5.cc_get_principal(self._ctx, cc))
        except krb5.Krb5Error:
            return []
        found = []
        for cred in cc:
            if self._unparse(cred.server) != server:
                continue
            if cred.second_ticket:
                continue  # a user-to-user ticket
            kb = cred.keyblock
            if not self._allowed(kb.enctype):
                continue
            t = cred.times
            start = t.starttime or t.authtime
            if t.endtime <= now + self.min_lifetime or start > now + 300:
                continue
            if self._unparse(cred.client) != client:
                continue
            found.append(cred)
        return found

    def _read(self, server: str, now: float) -> ServiceTicket | None:
        found = self._find_creds(server, now)
        if not found:
            return None
        cred = max(found, key=lambda c: (c.times.endtime, c.times.authtime))
        t = cred.times
        flags = getattr(cred, "ticket_flags_raw", None)
        if flags is None:
            flags = int(cred.ticket_flags)
        return ServiceTicket(
            client=self._unparse(cred.client),
            server=server,
            ticket_bytes=bytes(cred.ticket),
            session_key=Secret(cred.keyblock.data),
            enctype=int(cred.keyblock.enctype),
            starttime=int(t.starttime or t.authtime),
            endtime=int(t.endtime),
            user_to_user=False,
            authtime=int(t.authtime),
            flags=int(flags) & 0xFFFFFFFF,
        )

    def _forget(self, server: str) -> None:
        """Remove every cached ticket for ``server`` from our ccache (force_new)."""
        try:
            cc = self._cc()
            victims = [c for c in cc if self._unparse(c.server) == server]
            for c in victims:
                krb5.cc_remove_cred(self._ctx, cc, 0, c)
        except krb5.Krb5Error as e:
            raise _krb5_error(e, f"cannot remove old ticket for {server} from ccache "
                                 f"{self.ccache_name!r}") from None

    def _gss_creds(self):
        store = {"ccache": self.ccache_name}
        try:
            if self.keytab is not None:
                store["client_keytab"] = self.keytab
                name = gssapi.Name(self._principal, gssapi.NameType.kerberos_principal)
                creds = gssapi.Credentials(name=name, usage="initiate", store=store)
            else:
                creds = gssapi.Credentials(usage="initiate", store=store)
            if self.enctypes:
                gssapi.raw.krb5_set_allowable_enctypes(creds, list(self.enctypes))
        except gssapi.exceptions.GSSError as e:
            raise _gss_error(e, f"cannot use credentials of {self!r}",
                             self._principal or self.ccache_name) from None
        return creds

    def _fetch(self, server: str) -> None:
        """Get a service ticket for ``server`` into our ccache via gss_init_sec_context."""
        creds = self._gss_creds()
        try:
            target = gssapi.Name(server, gssapi.NameType.kerberos_principal)
            ctx = gssapi.SecurityContext(name=target, usage="initiate", creds=creds, flags=_MUTUAL)
            ctx.step()
        except gssapi.exceptions.GSSError as e:
            raise _gss_error(e, f"cannot get a service ticket for {server}", server) from None

    # -- public API -----------------------------------------------------------------

    def get_service_ticket(self, server_principal: str, now: float | None = None,
                           force_new: bool = False) -> ServiceTicket:
        """Service ticket (+ session key) for ``server_principal``, fetched once if needed."""
        with self._lock:
            if now is None:
                now = time.time()
            if not force_new:
                st = self._read(server_principal, now)
                if st is not None:
                    return st
            else:
                self._forget(server_principal)
            self._fetch(server_principal)
            st = self._read(server_principal, now)
            if st is None and now != time.time():
                st = self._read(server_principal, time.time())  # ``now`` was not the real time
            if st is None:
                raise CredentialsError(
                    f"no usable ticket for {server_principal} in {self.ccache_name!r} after "
                    f"fetching one (enctype not allowed, or lifetime below {self.min_lifetime}s)")
            return st

    def get_tgt(self, now: float | None = None) -> ServiceTicket:
        """Our TGT (krbtgt/REALM@REALM) with its session key — for GETTGT (KINK_TGT_REP).

        Daemon mode acquires a TGT from the keytab when there is no valid one.
        """
        with self._lock:
            if now is None:
                now = time.time()
            me = self.principal
            realm = me.rsplit("@", 1)[1]
            server = f"krbtgt/{realm}@{realm}"
            st = self._read(server, now)
            if st is not None:
                return st
            if self.keytab is None:
                raise CredentialsError(
                    f"no-ticket: no valid TGT for {me} in ccache {self.ccache_name!r} "
                    "(run kinit)", reason="no-ticket")
            self._acquire_tgt()
            st = self._read(server, time.time())
            if st is None:
                raise CredentialsError(f"TGT for {me} unusable after acquiring it from "
                                       f"{self.keytab!r}")
            return st

    def _acquire_tgt(self) -> None:
        ctx = self._ctx
        me = self._principal
        try:
            princ = krb5.parse_name_flags(ctx, me.encode())
            kt = krb5.kt_resolve(ctx, self.keytab.encode())
            opt = krb5.get_init_creds_opt_alloc(ctx)
            creds = krb5.get_init_creds_keytab(ctx, princ, opt, keytab=kt)
        except krb5.Krb5Error as e:
            raise _krb5_error(e, f"cannot get a TGT for {me} with keytab {self.keytab!r}",
                              me) from None
        try:
            cc = self._cc()
            try:
                same = self._unparse(krb5.cc_get_principal(ctx, cc)) == me
            except krb5.Krb5Error:
                same = False
            if not same:
                krb5.cc_initialize(ctx, cc, princ)
            krb5.cc_store_cred(ctx, cc, creds)
        except krb5.Krb5Error as e:
            raise _krb5_error(e, f"cannot store the TGT in {self.ccache_name!r}") from None

    def get_u2u_ticket(self, server_principal: str, server_tgt_bytes: bytes,
                       now: float | None = None, force_new: bool = False) -> ServiceTicket:
        """User-to-user ticket for ``server_principal``, encrypted in the session key of
        ``server_tgt_bytes`` (the peer's TGT from KINK_TGT_REP). Cached in memory per
        (server, TGT)."""
        with self._lock:
            if now is None:
                now = time.time()
            key = (server_principal, hashlib.sha256(bytes(server_tgt_bytes)).digest())
            hit = self._u2u_cache.get(key)
            if hit is not None and not force_new and hit.valid_at(now, self.min_lifetime):
                return hit
            if self.keytab is not None:
                self.get_tgt(now)  # make sure our own TGT is there
            c = _u2u.get_u2u_credentials(self.ccache_name, server_principal,
                                         bytes(server_tgt_bytes), self.enctypes)
            st = ServiceTicket(client=c.client, server=c.server, ticket_bytes=c.ticket,
                               session_key=c.session_key, enctype=c.enctype,
                               starttime=c.starttime, endtime=c.endtime, user_to_user=True,
                               authtime=c.authtime, flags=c.flags)
            for k in [k for k, v in self._u2u_cache.items() if not v.valid_at(now)]:
                del self._u2u_cache[k]
            self._u2u_cache[key] = st
            return st
