"""User-to-user service tickets through a minimal ctypes shim on MIT ``libkrb5.so.3``.

Neither python-gssapi nor pykrb5 can send a TGS-REQ with ENC-TKT-IN-SKEY and
an additional ticket. Of the two ways to get one — our own TGS client
(messages + crypto + KDC discovery from krb5.conf + UDP/TCP fallback + error
handling) or letting libkrb5 do it — the shim is much smaller and inherits
everything libkrb5 already does right (krb5.conf/DNS KDC location, TCP
fallback, KDC error mapping, FAST, referrals, etype negotiation). It is limited
to one call, ``krb5_get_credentials(ctx, KRB5_GC_USER_USER | KRB5_GC_NO_STORE,
ccache, in_creds, &out)`` with ``in_creds.second_ticket`` = the peer's TGT,
plus the context/ccache/principal plumbing around it.

KRB5_GC_NO_STORE: the U2U ticket is *not* written to the ccache. MIT's
non-U2U cache lookups do not match on ``is_skey``, so a stored U2U ticket
could later be handed out by a plain GSS/krb5 request for the same server;
:class:`~kink.kerberos.credentials.Credentials` caches U2U tickets in memory
instead.

Structure layouts follow MIT ``krb5.h`` (``krb5_creds``, ``krb5_keyblock``,
``krb5_data``, ``krb5_ticket_times``); ctypes computes the padding. MIT only
(Heimdal's ``krb5_creds`` differs) — which is what the project targets.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from ctypes import POINTER, Structure, byref, c_char_p, c_int32, c_uint, c_void_p
from dataclasses import dataclass, field

from isakmp.secret import Secret

from .errors import CredentialsError, library_error

__all__ = ["U2UCredentials", "get_u2u_credentials", "KRB5_GC_USER_USER", "KRB5_GC_NO_STORE"]

KRB5_GC_USER_USER = 1
KRB5_GC_NO_STORE = 8
KRB5_ERR_BASE = -1765328384  # ERROR_TABLE_BASE_krb5: protocol error n is BASE + n
KRB5_KDC_UNREACH = -1765328228


class _Data(Structure):
    _fields_ = [("magic", c_int32), ("length", c_uint), ("data", c_void_p)]


class _KeyBlock(Structure):
    _fields_ = [("magic", c_int32), ("enctype", c_int32), ("length", c_uint),
                ("contents", c_void_p)]


class _Times(Structure):
    _fields_ = [("authtime", c_int32), ("starttime", c_int32), ("endtime", c_int32),
                ("renew_till", c_int32)]


class _Creds(Structure):
    _fields_ = [
        ("magic", c_int32),
        ("client", c_void_p),
        ("server", c_void_p),
        ("keyblock", _KeyBlock),
        ("times", _Times),
        ("is_skey", c_uint),
        ("ticket_flags", c_int32),
        ("addresses", c_void_p),
        ("ticket", _Data),
        ("second_ticket", _Data),
        ("authdata", c_void_p),
    ]


_lib = None
_lib_lock = threading.Lock()


def _load():
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("krb5") or "libkrb5.so.3")
        except OSError as e:
            raise CredentialsError(f"cannot load MIT libkrb5 for user-to-user: {e}") from None
        sigs = {
            "krb5_init_context": (c_int32, [POINTER(c_void_p)]),
            "krb5_free_context": (None, [c_void_p]),
            "krb5_cc_resolve": (c_int32, [c_void_p, c_char_p, POINTER(c_void_p)]),
            "krb5_cc_close": (c_int32, [c_void_p, c_void_p]),
            "krb5_cc_get_principal": (c_int32, [c_void_p, c_void_p, POINTER(c_void_p)]),
            "krb5_parse_name": (c_int32, [c_void_p, c_char_p, POINTER(c_void_p)]),
            "krb5_unparse_name": (c_int32, [c_void_p, c_void_p, POINTER(c_void_p)]),
            "krb5_free_unparsed_name": (None, [c_void_p, c_void_p]),
            "krb5_free_principal": (None, [c_void_p, c_void_p]),
            "krb5_get_credentials": (c_int32, [c_void_p, c_int32, c_void_p, POINTER(_Creds),
                                               POINTER(POINTER(_Creds))]),
            "krb5_free_creds": (None, [c_void_p, POINTER(_Creds)]),
            "krb5_set_default_tgs_enctypes": (c_int32, [c_void_p, POINTER(c_int32)]),
            "krb5_get_error_message": (c_void_p, [c_void_p, c_int32]),
            "krb5_free_error_message": (None, [c_void_p, c_void_p]),
        }
        for name, (res, args) in sigs.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        _lib = lib
        return lib


@dataclass(frozen=True, slots=True)
class U2UCredentials:
    client: str
    server: str
    ticket: bytes = field(repr=False)
    session_key: Secret = field(repr=False)
    enctype: int
    authtime: int
    starttime: int
    endtime: int
    flags: int
    is_skey: bool


def _u32(v: int) -> int:
    return v & 0xFFFFFFFF


class _Ctx:
    def __init__(self):
        self.lib = _load()
        self.ctx = c_void_p()
        code = self.lib.krb5_init_context(byref(self.ctx))
        if code:
            raise CredentialsError(f"krb5_init_context failed (error {code})")

    def message(self, code: int) -> str:
        p = self.lib.krb5_get_error_message(self.ctx, code)
        if not p:
            return f"error {code}"
        try:
            return ctypes.string_at(p).decode("utf-8", "replace")
        finally:
            self.lib.krb5_free_error_message(self.ctx, p)

    def check(self, code: int, what: str) -> None:
        if code:
            raise _error(code, f"{what}: {self.message(code)}")

    def unparse(self, princ) -> str:
        out = c_void_p()
        self.check(self.lib.krb5_unparse_name(self.ctx, princ, byref(out)), "unparse name")
        try:
            return ctypes.string_at(out).decode("utf-8", "surrogateescape")
        finally:
            self.lib.krb5_free_unparsed_name(self.ctx, out)

    def close(self) -> None:
        self.lib.krb5_free_context(self.ctx)


def _error(code: int, message: str) -> CredentialsError:
    what, _, detail = message.partition(": ")
    return library_error(code, what, detail)


def get_u2u_credentials(
    ccache: str, server: str, server_tgt: bytes, enctypes: tuple[int, ...] | None = None
) -> U2UCredentials:
    """TGS-REQ (ENC-TKT-IN-SKEY, additional-tickets = [server_tgt]) with our TGT from ``ccache``.

    ``server``: the peer's principal (must be the client of ``server_tgt``).
    ``enctypes``: restrict the session key enctypes (default: krb5.conf).
    Raises KDCUnreachable / CredentialsError (``code`` = the KDC's error code
    when it sent one). Must be called with our TGT in ``ccache``.
    """
    k = _Ctx()
    lib = k.lib
    cc = c_void_p()
    client = c_void_p()
    srv = c_void_p()
    out = POINTER(_Creds)()
    try:
        if enctypes:
            arr = (c_int32 * (len(enctypes) + 1))(*enctypes, 0)
            k.check(lib.krb5_set_default_tgs_enctypes(k.ctx, arr), "set TGS enctypes")
        k.check(lib.krb5_cc_resolve(k.ctx, ccache.encode(), byref(cc)),
                f"cannot open ccache {ccache!r}")
        k.check(lib.krb5_cc_get_principal(k.ctx, cc, byref(client)),
                f"no credentials in ccache {ccache!r}")
        k.check(lib.krb5_parse_name(k.ctx, server.encode(), byref(srv)),
                f"bad principal name {server!r}")
        tgt = bytes(server_tgt)
        buf = ctypes.create_string_buffer(tgt, len(tgt))
        inc = _Creds()
        inc.client = client
        inc.server = srv
        inc.second_ticket.length = len(tgt)
        inc.second_ticket.data = ctypes.cast(buf, c_void_p)
        code = lib.krb5_get_credentials(k.ctx, KRB5_GC_USER_USER | KRB5_GC_NO_STORE, cc,
                                        byref(inc), byref(out))
        k.check(code, f"user-to-user ticket for {server}")
        c = out.contents
        kb = c.keyblock
        return U2UCredentials(
            client=k.unparse(c.client),
            server=k.unparse(c.server),
            ticket=ctypes.string_at(c.ticket.data, c.ticket.length),
            session_key=Secret(ctypes.string_at(kb.contents, kb.length)),
            enctype=kb.enctype,
            authtime=_u32(c.times.authtime),
            starttime=_u32(c.times.starttime or c.times.authtime),
            endtime=_u32(c.times.endtime),
            flags=_u32(c.ticket_flags),
            is_skey=bool(c.is_skey),
        )
    finally:
        if out:
            lib.krb5_free_creds(k.ctx, out)
        if srv:
            lib.krb5_free_principal(k.ctx, srv)
        if client:
            lib.krb5_free_principal(k.ctx, client)
        if cc:
            lib.krb5_cc_close(k.ctx, cc)
        k.close()
