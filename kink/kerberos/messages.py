"""Typed Kerberos V5 messages (RFC 4120) used by KINK, with hand-written DER codecs.

Every message type is a frozen dataclass with ``encode() -> bytes`` and the
classmethod ``decode(data) -> instance``. Conventions:

* times (``KerberosTime``) are ``int`` POSIX seconds, UTC;
  microsecond fields (``cusec``/``susec``) are separate ``int`` 0..999999;
* flags (``TicketFlags``/``APOptions``/``KDCOptions``) are stored as plain
  ``int`` bitmasks whose bit values are the :class:`TicketFlags`,
  :class:`APOptions`, :class:`KDCOptions` members (RFC 4120 bit ``n`` =
  ``1 << (31 - n)``), so ``req.ap_options & APOptions.MUTUAL_REQUIRED`` works.
  Decoders return plain ints on purpose: building an ``IntFlag`` from an
  attacker-chosen value would grow the enum's pseudo-member cache without
  bound. Encoders accept ints or the IntFlag members;
* ``pvno``/``tkt-vno``/``authenticator-vno`` (always 5) and ``msg-type`` are not
  fields; decoders check them and raise :class:`DecodeError` with code
  ``KRB_AP_ERR_BADVERSION`` (39) or ``KRB_AP_ERR_MSG_TYPE`` (40);
* OPTIONAL fields are ``None`` when absent; SEQUENCE OF values are tuples
  (an empty tuple encodes an empty SEQUENCE, distinct from ``None``);
* key material (``EncryptionKey.keyvalue``) is decoded as
  :class:`isakmp.secret.Secret` and hidden from ``repr``;
* unknown/extension fields are rejected (DecodeError); RFC 4120's module has
  no extension markers in these types;
* decoding is canonical: every accepted input satisfies
  ``X.decode(b).encode() == b`` (DER is unique and the decoders accept only
  DER; KerberosFlags only in the 32-bit form MIT emits).

Encoding values that cannot be represented raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntFlag
from typing import ClassVar, TypeVar

from isakmp.secret import Secret

from .der import (
    INT32_MAX,
    INT32_MIN,
    MICROSECONDS_MAX,
    UINT32_MAX,
    Reader,
    enc_ctx,
    enc_flags,
    enc_int,
    enc_octets,
    enc_seq,
    enc_string,
    time_to_str,
    tlv,
)
from .errors import DecodeError, KrbErrorCode

__all__ = [
    # message types
    "AS_REQ", "AS_REP", "TGS_REQ", "TGS_REP", "AP_REQ", "AP_REP",
    "KRB_TGT_REQ", "KRB_TGT_REP", "KRB_SAFE", "KRB_PRIV", "KRB_CRED", "KRB_ERROR",
    "PVNO",
    # name types
    "NT_UNKNOWN", "NT_PRINCIPAL", "NT_SRV_INST", "NT_SRV_HST", "NT_SRV_XHST",
    "NT_UID", "NT_X500_PRINCIPAL", "NT_SMTP_NAME", "NT_ENTERPRISE",
    "PA_TGS_REQ",
    # flags
    "TicketFlags", "APOptions", "KDCOptions",
    # types
    "PrincipalName", "EncryptionKey", "EncryptedData", "Checksum", "HostAddress",
    "AuthorizationDataEntry", "PAData", "TransitedEncoding", "LastReqEntry",
    "Ticket", "EncTicketPart", "Authenticator", "APReq", "APRep", "EncAPRepPart",
    "KrbError", "KDCReqBody", "KDCReq", "ASReq", "TGSReq", "KDCRep", "ASRep", "TGSRep",
    "EncKDCRepPart", "EncASRepPart", "EncTGSRepPart",
]  # fmt: skip

# Message types (RFC 4120 section 7.5.7)
AS_REQ = 10
AS_REP = 11
TGS_REQ = 12
TGS_REP = 13
AP_REQ = 14
AP_REP = 15
KRB_TGT_REQ = 16
KRB_TGT_REP = 17
KRB_SAFE = 20
KRB_PRIV = 21
KRB_CRED = 22
KRB_ERROR = 30

PVNO = 5

# Name types (RFC 4120 section 7.5.8)
NT_UNKNOWN = 0
NT_PRINCIPAL = 1
NT_SRV_INST = 2
NT_SRV_HST = 3
NT_SRV_XHST = 4
NT_UID = 5
NT_X500_PRINCIPAL = 6
NT_SMTP_NAME = 7
NT_ENTERPRISE = 10

# Pre-authentication data types
PA_TGS_REQ = 1


def _bit(n: int) -> int:
    """Value of RFC 4120 KerberosFlags bit ``n`` (bit 0 = MSB of the first octet)."""
    return 1 << (31 - n)


class TicketFlags(IntFlag):
    RESERVED = _bit(0)
    FORWARDABLE = _bit(1)
    FORWARDED = _bit(2)
    PROXIABLE = _bit(3)
    PROXY = _bit(4)
    MAY_POSTDATE = _bit(5)
    POSTDATED = _bit(6)
    INVALID = _bit(7)
    RENEWABLE = _bit(8)
    INITIAL = _bit(9)
    PRE_AUTHENT = _bit(10)
    HW_AUTHENT = _bit(11)
    TRANSITED_POLICY_CHECKED = _bit(12)
    OK_AS_DELEGATE = _bit(13)


class APOptions(IntFlag):
    RESERVED = _bit(0)
    USE_SESSION_KEY = _bit(1)
    MUTUAL_REQUIRED = _bit(2)


class KDCOptions(IntFlag):
    RESERVED = _bit(0)
    FORWARDABLE = _bit(1)
    FORWARDED = _bit(2)
    PROXIABLE = _bit(3)
    PROXY = _bit(4)
    ALLOW_POSTDATE = _bit(5)
    POSTDATED = _bit(6)
    RENEWABLE = _bit(8)
    OPT_HARDWARE_AUTH = _bit(11)
    CANONICALIZE = _bit(15)
    DISABLE_TRANSITED_CHECK = _bit(26)
    RENEWABLE_OK = _bit(27)
    ENC_TKT_IN_SKEY = _bit(28)
    RENEW = _bit(30)
    VALIDATE = _bit(31)


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

T = TypeVar("T")

_SEQ = 0x30


def _check_pvno(r: Reader, n: int) -> None:
    v = r.ctx_int(n, INT32_MIN, INT32_MAX)
    if v != PVNO:
        raise DecodeError(f"unsupported protocol version {v}", KrbErrorCode.KRB_AP_ERR_BADVERSION)


def _check_msg_type(r: Reader, n: int, expected: int) -> None:
    v = r.ctx_int(n, INT32_MIN, INT32_MAX)
    if v != expected:
        raise DecodeError(f"msg-type {v}, expected {expected}", KrbErrorCode.KRB_AP_ERR_MSG_TYPE)


def _ctx_obj(r: Reader, n: int, read: Callable[[Reader], T]) -> T:
    s = r.enter(0xA0 | n)
    v = read(r)
    r.leave(s)
    return v


def _ctx_seq_of(r: Reader, n: int, read: Callable[[Reader], T]) -> tuple[T, ...]:
    s = r.enter(0xA0 | n)
    s2 = r.enter(_SEQ)
    items = []
    while r.pos < r.end:
        items.append(read(r))
    r.leave(s2)
    r.leave(s)
    return tuple(items)


def _top(cls_read: Callable[[Reader], T], data: bytes) -> T:
    r = Reader(data)
    v = cls_read(r)
    r.finish()
    return v


# [n] { INTEGER v } for the small values most fields hold (etype, name-type, ...)
_CTX_SMALL_INT = tuple(
    {v: bytes((0xA0 | n, 3, 2, 1, v & 0xFF)) for v in range(-128, 128)} for n in range(32)
)


def _i(n: int, v: int) -> bytes:
    small = _CTX_SMALL_INT[n].get(v) if v.__class__ is int else None
    if small is not None:
        return small
    return enc_ctx(n, enc_int(v, INT32_MIN, INT32_MAX))


def _u(n: int, v: int) -> bytes:
    return enc_ctx(n, enc_int(v, 0, UINT32_MAX))


def _us(n: int, v: int) -> bytes:
    return enc_ctx(n, enc_int(v, 0, MICROSECONDS_MAX))


def _s(n: int, v: str) -> bytes:
    return enc_ctx(n, enc_string(v))


def _o(n: int, v: bytes) -> bytes:
    k = len(v)
    if k < 0x7E and v.__class__ is bytes:  # both lengths in short form
        return bytes((0xA0 | n, k + 2, 4, k)) + v
    return enc_ctx(n, enc_octets(v))


_T_HEAD = tuple(bytes((0xA0 | n, 0x11, 0x18, 0x0F)) for n in range(32))


def _t(n: int, v: int) -> bytes:
    return _T_HEAD[n] + time_to_str(v)


def _f(n: int, v: int) -> bytes:
    return b"%c\x07" % (0xA0 | n) + enc_flags(v)


def _seq_of(n: int, items: tuple, enc: Callable[[object], bytes]) -> bytes:
    return enc_ctx(n, enc_seq(*[enc(x) for x in items]))


_PVNO0 = bytes.fromhex("a003020105")


# --------------------------------------------------------------------------
# PrincipalName (+ RFC 1964 string form)
# --------------------------------------------------------------------------

_ESCAPE = str.maketrans(
    {"\\": "\\\\", "/": "\\/", "@": "\\@", "\0": "\\0", "\b": "\\b", "\t": "\\t", "\n": "\\n"}
)
_UNESCAPE = {"\\": "\\", "/": "/", "@": "@", "0": "\0", "b": "\b", "t": "\t", "n": "\n"}
_RAW_FORBIDDEN = frozenset("\0\b\t\n")
_REALM_FORBIDDEN = frozenset("/:\0")


@dataclass(frozen=True, slots=True)
class PrincipalName:
    name_type: int
    components: tuple[str, ...]

    def _enc(self) -> bytes:
        return enc_seq(
            _i(0, self.name_type),
            enc_ctx(1, enc_seq(*[enc_string(c) for c in self.components])),
        )

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> PrincipalName:
        s = r.enter(_SEQ)
        nt = r.ctx_int(0)
        s1 = r.enter(0xA1)
        s2 = r.enter(_SEQ)
        comps = []
        read = r.string
        while r.pos < r.end:
            comps.append(read())
        r.leave(s2)
        r.leave(s1)
        r.leave(s)
        return cls(nt, tuple(comps))

    @classmethod
    def decode(cls, data: bytes) -> PrincipalName:
        return _top(cls._read, data)

    # -- string form ----------------------------------------------------------

    def to_text(self, realm: str) -> str:
        """Exported name ``comp1/comp2@REALM`` (RFC 1964 section 2.1.1 quoting).

        Quotes exactly ``\\``, ``/``, ``@`` and NUL, BS, TAB, LF. ValueError if
        there is no component or the realm is empty or contains ``/``, ``:``, NUL.
        """
        if not self.components:
            raise ValueError("principal name without components")
        if not realm or not _REALM_FORBIDDEN.isdisjoint(realm):
            raise ValueError("realm is empty or contains '/', ':' or NUL")
        return (
            "/".join(c.translate(_ESCAPE) for c in self.components) + "@" + realm.translate(_ESCAPE)
        )

    @classmethod
    def from_text(
        cls, text: str, name_type: int = NT_PRINCIPAL, default_realm: str | None = None
    ) -> tuple[PrincipalName, str]:
        """Parse ``comp1/comp2@REALM``; return ``(PrincipalName, realm)``.

        Strict inverse of :meth:`to_text`: only the escapes ``\\\\ \\/ \\@ \\0 \\b
        \\t \\n`` are allowed, the four control characters must be escaped, a
        realm is required (``default_realm`` is used when there is no ``@``).
        Raises DecodeError (this parses KINK_TGT_REQ payloads).
        """
        if not isinstance(text, str) or not text:
            raise DecodeError("empty principal name")
        comps: list[str] = []
        cur: list[str] = []
        realm: str | None = None
        in_realm = False
        i = 0
        n = len(text)
        while i < n:
            ch = text[i]
            i += 1
            if ch == "\\":
                if i >= n:
                    raise DecodeError("principal name ends with a backslash")
                un = _UNESCAPE.get(text[i])
                if un is None:
                    raise DecodeError("invalid escape in principal name")
                cur.append(un)
                i += 1
            elif ch in _RAW_FORBIDDEN:
                raise DecodeError("unescaped control character in principal name")
            elif in_realm:
                if ch == "@":
                    raise DecodeError("unescaped '@' in realm")
                cur.append(ch)
            elif ch == "/":
                comps.append("".join(cur))
                cur = []
            elif ch == "@":
                comps.append("".join(cur))
                cur = []
                in_realm = True
            else:
                cur.append(ch)
        if in_realm:
            realm = "".join(cur)
        else:
            comps.append("".join(cur))
            realm = default_realm
        if not realm:
            raise DecodeError("principal name without realm")
        if not _REALM_FORBIDDEN.isdisjoint(realm):
            raise DecodeError("realm contains '/', ':' or NUL")
        return cls(name_type, tuple(comps)), realm


# --------------------------------------------------------------------------
# Small SEQUENCEs
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncryptionKey:
    keytype: int
    keyvalue: bytes = field(repr=False)

    def _enc(self) -> bytes:
        return enc_seq(_i(0, self.keytype), _o(1, self.keyvalue))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> EncryptionKey:
        s = r.enter(_SEQ)
        kt = r.ctx_int(0)
        kv = Secret(r.ctx_octets(1))
        r.leave(s)
        return cls(kt, kv)

    @classmethod
    def decode(cls, data: bytes) -> EncryptionKey:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class EncryptedData:
    etype: int
    cipher: bytes
    kvno: int | None = None

    def _enc(self) -> bytes:
        if self.kvno is None:
            return enc_seq(_i(0, self.etype), _o(2, self.cipher))
        return enc_seq(_i(0, self.etype), _u(1, self.kvno), _o(2, self.cipher))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> EncryptedData:
        s = r.enter(_SEQ)
        et = r.ctx_int(0)
        kvno = r.ctx_int(1, 0, UINT32_MAX) if r.has(1) else None
        cipher = r.ctx_octets(2)
        r.leave(s)
        return cls(et, cipher, kvno)

    @classmethod
    def decode(cls, data: bytes) -> EncryptedData:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class Checksum:
    cksumtype: int
    checksum: bytes

    def _enc(self) -> bytes:
        return enc_seq(_i(0, self.cksumtype), _o(1, self.checksum))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> Checksum:
        s = r.enter(_SEQ)
        v = cls(r.ctx_int(0), r.ctx_octets(1))
        r.leave(s)
        return v

    @classmethod
    def decode(cls, data: bytes) -> Checksum:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class HostAddress:
    addr_type: int
    address: bytes

    def _enc(self) -> bytes:
        return enc_seq(_i(0, self.addr_type), _o(1, self.address))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> HostAddress:
        s = r.enter(_SEQ)
        v = cls(r.ctx_int(0), r.ctx_octets(1))
        r.leave(s)
        return v

    @classmethod
    def decode(cls, data: bytes) -> HostAddress:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class AuthorizationDataEntry:
    """One element of AuthorizationData; ``ad_data`` is kept opaque."""

    ad_type: int
    ad_data: bytes

    def _enc(self) -> bytes:
        return enc_seq(_i(0, self.ad_type), _o(1, self.ad_data))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> AuthorizationDataEntry:
        s = r.enter(_SEQ)
        v = cls(r.ctx_int(0), r.ctx_octets(1))
        r.leave(s)
        return v

    @classmethod
    def decode(cls, data: bytes) -> AuthorizationDataEntry:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class PAData:
    """PA-DATA (tags [1], [2]); for PA-TGS-REQ the value is an encoded AP-REQ."""

    padata_type: int
    padata_value: bytes

    def _enc(self) -> bytes:
        return enc_seq(_i(1, self.padata_type), _o(2, self.padata_value))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> PAData:
        s = r.enter(_SEQ)
        v = cls(r.ctx_int(1), r.ctx_octets(2))
        r.leave(s)
        return v

    @classmethod
    def decode(cls, data: bytes) -> PAData:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class TransitedEncoding:
    tr_type: int
    contents: bytes

    def _enc(self) -> bytes:
        return enc_seq(_i(0, self.tr_type), _o(1, self.contents))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> TransitedEncoding:
        s = r.enter(_SEQ)
        v = cls(r.ctx_int(0), r.ctx_octets(1))
        r.leave(s)
        return v

    @classmethod
    def decode(cls, data: bytes) -> TransitedEncoding:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class LastReqEntry:
    lr_type: int
    lr_value: int  # KerberosTime, POSIX seconds

    def _enc(self) -> bytes:
        return enc_seq(_i(0, self.lr_type), _t(1, self.lr_value))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> LastReqEntry:
        s = r.enter(_SEQ)
        v = cls(r.ctx_int(0), r.ctx_time(1))
        r.leave(s)
        return v

    @classmethod
    def decode(cls, data: bytes) -> LastReqEntry:
        return _top(cls._read, data)


def _enc_obj(x: object) -> bytes:
    return x._enc()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------
# Ticket / EncTicketPart
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ticket:
    """Ticket ::= [APPLICATION 1] (tkt-vno 5 implied)."""

    realm: str
    sname: PrincipalName
    enc_part: EncryptedData

    def _enc(self) -> bytes:
        return tlv(
            0x61,
            enc_seq(
                _PVNO0,
                _s(1, self.realm),
                enc_ctx(2, self.sname._enc()),
                enc_ctx(3, self.enc_part._enc()),
            ),
        )

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> Ticket:
        s0 = r.enter(0x61)
        s1 = r.enter(_SEQ)
        _check_pvno(r, 0)
        realm = r.ctx_string(1)
        sname = _ctx_obj(r, 2, PrincipalName._read)
        enc_part = _ctx_obj(r, 3, EncryptedData._read)
        r.leave(s1)
        r.leave(s0)
        return cls(realm, sname, enc_part)

    @classmethod
    def decode(cls, data: bytes) -> Ticket:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class EncTicketPart:
    """EncTicketPart ::= [APPLICATION 3]."""

    flags: int  # TicketFlags bitmask
    key: EncryptionKey
    crealm: str
    cname: PrincipalName
    transited: TransitedEncoding
    authtime: int
    endtime: int
    starttime: int | None = None
    renew_till: int | None = None
    caddr: tuple[HostAddress, ...] | None = None
    authorization_data: tuple[AuthorizationDataEntry, ...] | None = None

    def _enc(self) -> bytes:
        p = [
            _f(0, self.flags),
            enc_ctx(1, self.key._enc()),
            _s(2, self.crealm),
            enc_ctx(3, self.cname._enc()),
            enc_ctx(4, self.transited._enc()),
            _t(5, self.authtime),
        ]
        if self.starttime is not None:
            p.append(_t(6, self.starttime))
        p.append(_t(7, self.endtime))
        if self.renew_till is not None:
            p.append(_t(8, self.renew_till))
        if self.caddr is not None:
            p.append(_seq_of(9, self.caddr, _enc_obj))
        if self.authorization_data is not None:
            p.append(_seq_of(10, self.authorization_data, _enc_obj))
        return tlv(0x63, enc_seq(*p))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> EncTicketPart:
        s0 = r.enter(0x63)
        s1 = r.enter(_SEQ)
        flags = r.ctx_flags(0)
        key = _ctx_obj(r, 1, EncryptionKey._read)
        crealm = r.ctx_string(2)
        cname = _ctx_obj(r, 3, PrincipalName._read)
        transited = _ctx_obj(r, 4, TransitedEncoding._read)
        authtime = r.ctx_time(5)
        starttime = r.ctx_time(6) if r.has(6) else None
        endtime = r.ctx_time(7)
        renew_till = r.ctx_time(8) if r.has(8) else None
        caddr = _ctx_seq_of(r, 9, HostAddress._read) if r.has(9) else None
        ad = _ctx_seq_of(r, 10, AuthorizationDataEntry._read) if r.has(10) else None
        r.leave(s1)
        r.leave(s0)
        return cls(flags, key, crealm, cname, transited, authtime, endtime,
                   starttime, renew_till, caddr, ad)  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> EncTicketPart:
        return _top(cls._read, data)


# --------------------------------------------------------------------------
# AP exchange
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticator:
    """Authenticator ::= [APPLICATION 2] (authenticator-vno 5 implied)."""

    crealm: str
    cname: PrincipalName
    cusec: int
    ctime: int
    cksum: Checksum | None = None
    subkey: EncryptionKey | None = None
    seq_number: int | None = None
    authorization_data: tuple[AuthorizationDataEntry, ...] | None = None

    def _enc(self) -> bytes:
        p = [_PVNO0, _s(1, self.crealm), enc_ctx(2, self.cname._enc())]
        if self.cksum is not None:
            p.append(enc_ctx(3, self.cksum._enc()))
        p.append(_us(4, self.cusec))
        p.append(_t(5, self.ctime))
        if self.subkey is not None:
            p.append(enc_ctx(6, self.subkey._enc()))
        if self.seq_number is not None:
            p.append(_u(7, self.seq_number))
        if self.authorization_data is not None:
            p.append(_seq_of(8, self.authorization_data, _enc_obj))
        return tlv(0x62, enc_seq(*p))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> Authenticator:
        s0 = r.enter(0x62)
        s1 = r.enter(_SEQ)
        _check_pvno(r, 0)
        crealm = r.ctx_string(1)
        s = r.enter(0xA2)
        cname = PrincipalName._read(r)
        r.leave(s)
        buf = r.buf
        # the OPTIONAL fields: r.has(n) inlined
        cksum = _ctx_obj(r, 3, Checksum._read) if r.pos < r.end and buf[r.pos] == 0xA3 else None
        cusec = r.ctx_int(4, 0, MICROSECONDS_MAX)
        ctime = r.ctx_time(5)
        subkey = None
        seq = ad = None
        if r.pos < r.end:
            if buf[r.pos] == 0xA6:
                subkey = _ctx_obj(r, 6, EncryptionKey._read)
            if r.has(7):
                seq = r.ctx_int(7, 0, UINT32_MAX)
            if r.has(8):
                ad = _ctx_seq_of(r, 8, AuthorizationDataEntry._read)
        r.leave(s1)
        r.leave(s0)
        return cls(crealm, cname, cusec, ctime, cksum, subkey, seq, ad)

    @classmethod
    def decode(cls, data: bytes) -> Authenticator:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class APReq:
    """AP-REQ ::= [APPLICATION 14]; ``authenticator`` is the encrypted Authenticator."""

    ap_options: int  # APOptions bitmask
    ticket: Ticket
    authenticator: EncryptedData

    _HEAD: ClassVar[bytes] = bytes.fromhex("a003020105a10302010e")

    def _enc(self) -> bytes:
        return tlv(
            0x6E,
            enc_seq(
                self._HEAD,
                _f(2, self.ap_options),
                enc_ctx(3, self.ticket._enc()),
                enc_ctx(4, self.authenticator._enc()),
            ),
        )

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> APReq:
        s0 = r.enter(0x6E)
        s1 = r.enter(_SEQ)
        _check_pvno(r, 0)
        _check_msg_type(r, 1, AP_REQ)
        opts = r.ctx_flags(2)
        ticket = _ctx_obj(r, 3, Ticket._read)
        auth = _ctx_obj(r, 4, EncryptedData._read)
        r.leave(s1)
        r.leave(s0)
        return cls(opts, ticket, auth)

    @classmethod
    def decode(cls, data: bytes) -> APReq:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class APRep:
    """AP-REP ::= [APPLICATION 15]; ``enc_part`` is the encrypted EncAPRepPart."""

    enc_part: EncryptedData

    _HEAD: ClassVar[bytes] = bytes.fromhex("a003020105a10302010f")

    def _enc(self) -> bytes:
        return tlv(0x6F, enc_seq(self._HEAD, enc_ctx(2, self.enc_part._enc())))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> APRep:
        s0 = r.enter(0x6F)
        s1 = r.enter(_SEQ)
        _check_pvno(r, 0)
        _check_msg_type(r, 1, AP_REP)
        enc_part = _ctx_obj(r, 2, EncryptedData._read)
        r.leave(s1)
        r.leave(s0)
        return cls(enc_part)

    @classmethod
    def decode(cls, data: bytes) -> APRep:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class EncAPRepPart:
    """EncAPRepPart ::= [APPLICATION 27]."""

    ctime: int
    cusec: int
    subkey: EncryptionKey | None = None
    seq_number: int | None = None

    def _enc(self) -> bytes:
        p = [_t(0, self.ctime), _us(1, self.cusec)]
        if self.subkey is not None:
            p.append(enc_ctx(2, self.subkey._enc()))
        if self.seq_number is not None:
            p.append(_u(3, self.seq_number))
        return tlv(0x7B, enc_seq(*p))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> EncAPRepPart:
        s0 = r.enter(0x7B)
        s1 = r.enter(_SEQ)
        ctime = r.ctx_time(0)
        cusec = r.ctx_int(1, 0, MICROSECONDS_MAX)
        subkey = _ctx_obj(r, 2, EncryptionKey._read) if r.has(2) else None
        seq = r.ctx_int(3, 0, UINT32_MAX) if r.has(3) else None
        r.leave(s1)
        r.leave(s0)
        return cls(ctime, cusec, subkey, seq)

    @classmethod
    def decode(cls, data: bytes) -> EncAPRepPart:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class KrbError:
    """KRB-ERROR ::= [APPLICATION 30]."""

    error_code: int
    stime: int
    susec: int
    realm: str
    sname: PrincipalName
    ctime: int | None = None
    cusec: int | None = None
    crealm: str | None = None
    cname: PrincipalName | None = None
    e_text: str | None = None
    e_data: bytes | None = None

    _HEAD: ClassVar[bytes] = bytes.fromhex("a003020105a10302011e")

    def _enc(self) -> bytes:
        p = [self._HEAD]
        if self.ctime is not None:
            p.append(_t(2, self.ctime))
        if self.cusec is not None:
            p.append(_us(3, self.cusec))
        p.append(_t(4, self.stime))
        p.append(_us(5, self.susec))
        p.append(_i(6, self.error_code))
        if self.crealm is not None:
            p.append(_s(7, self.crealm))
        if self.cname is not None:
            p.append(enc_ctx(8, self.cname._enc()))
        p.append(_s(9, self.realm))
        p.append(enc_ctx(10, self.sname._enc()))
        if self.e_text is not None:
            p.append(_s(11, self.e_text))
        if self.e_data is not None:
            p.append(_o(12, self.e_data))
        return tlv(0x7E, enc_seq(*p))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> KrbError:
        s0 = r.enter(0x7E)
        s1 = r.enter(_SEQ)
        _check_pvno(r, 0)
        _check_msg_type(r, 1, KRB_ERROR)
        ctime = r.ctx_time(2) if r.has(2) else None
        cusec = r.ctx_int(3, 0, MICROSECONDS_MAX) if r.has(3) else None
        stime = r.ctx_time(4)
        susec = r.ctx_int(5, 0, MICROSECONDS_MAX)
        code = r.ctx_int(6)
        crealm = r.ctx_string(7) if r.has(7) else None
        cname = _ctx_obj(r, 8, PrincipalName._read) if r.has(8) else None
        realm = r.ctx_string(9)
        sname = _ctx_obj(r, 10, PrincipalName._read)
        e_text = r.ctx_string(11) if r.has(11) else None
        e_data = r.ctx_octets(12) if r.has(12) else None
        r.leave(s1)
        r.leave(s0)
        return cls(code, stime, susec, realm, sname, ctime, cusec, crealm, cname, e_text, e_data)

    @classmethod
    def decode(cls, data: bytes) -> KrbError:
        return _top(cls._read, data)


# --------------------------------------------------------------------------
# KDC exchange (TGS-REQ / TGS-REP incl. user-to-user, AS for completeness)
# --------------------------------------------------------------------------


def _read_int32(r: Reader) -> int:
    return r.integer(INT32_MIN, INT32_MAX)


def _enc_int32(v: object) -> bytes:
    return enc_int(v, INT32_MIN, INT32_MAX)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class KDCReqBody:
    kdc_options: int  # KDCOptions bitmask
    realm: str
    till: int
    nonce: int
    etype: tuple[int, ...]
    cname: PrincipalName | None = None
    sname: PrincipalName | None = None
    from_time: int | None = None  # ASN.1 field "from"
    rtime: int | None = None
    addresses: tuple[HostAddress, ...] | None = None
    enc_authorization_data: EncryptedData | None = None
    additional_tickets: tuple[Ticket, ...] | None = None

    def _enc(self) -> bytes:
        p = [_f(0, self.kdc_options)]
        if self.cname is not None:
            p.append(enc_ctx(1, self.cname._enc()))
        p.append(_s(2, self.realm))
        if self.sname is not None:
            p.append(enc_ctx(3, self.sname._enc()))
        if self.from_time is not None:
            p.append(_t(4, self.from_time))
        p.append(_t(5, self.till))
        if self.rtime is not None:
            p.append(_t(6, self.rtime))
        p.append(_u(7, self.nonce))
        p.append(_seq_of(8, self.etype, _enc_int32))
        if self.addresses is not None:
            p.append(_seq_of(9, self.addresses, _enc_obj))
        if self.enc_authorization_data is not None:
            p.append(enc_ctx(10, self.enc_authorization_data._enc()))
        if self.additional_tickets is not None:
            p.append(_seq_of(11, self.additional_tickets, _enc_obj))
        return enc_seq(*p)

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> KDCReqBody:
        s = r.enter(_SEQ)
        opts = r.ctx_flags(0)
        cname = _ctx_obj(r, 1, PrincipalName._read) if r.has(1) else None
        realm = r.ctx_string(2)
        sname = _ctx_obj(r, 3, PrincipalName._read) if r.has(3) else None
        from_time = r.ctx_time(4) if r.has(4) else None
        till = r.ctx_time(5)
        rtime = r.ctx_time(6) if r.has(6) else None
        nonce = r.ctx_int(7, 0, UINT32_MAX)
        etype = _ctx_seq_of(r, 8, _read_int32)
        addresses = _ctx_seq_of(r, 9, HostAddress._read) if r.has(9) else None
        ead = _ctx_obj(r, 10, EncryptedData._read) if r.has(10) else None
        tickets = _ctx_seq_of(r, 11, Ticket._read) if r.has(11) else None
        r.leave(s)
        return cls(opts, realm, till, nonce, etype, cname, sname, from_time, rtime,
                   addresses, ead, tickets)  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> KDCReqBody:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class KDCReq:
    """KDC-REQ. Use :class:`TGSReq` ([APPLICATION 12]) or :class:`ASReq` ([APPLICATION 10]).

    ``KDCReq.decode`` accepts either and returns the matching subclass.
    """

    req_body: KDCReqBody
    padata: tuple[PAData, ...] | None = None

    MSG_TYPE: ClassVar[int] = 0

    def _enc(self) -> bytes:
        mt = self.MSG_TYPE
        if mt not in (AS_REQ, TGS_REQ):
            raise TypeError("encode ASReq or TGSReq, not KDCReq")
        p = [bytes((0xA1, 3, 2, 1, PVNO, 0xA2, 3, 2, 1, mt))]
        if self.padata is not None:
            p.append(_seq_of(3, self.padata, _enc_obj))
        p.append(enc_ctx(4, self.req_body._enc()))
        return tlv(0x60 | mt, enc_seq(*p))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> KDCReq:
        ident = r.peek()
        if cls is KDCReq:
            sub: type[KDCReq] = ASReq if ident == 0x60 | AS_REQ else TGSReq
        else:
            sub = cls
        mt = sub.MSG_TYPE
        s0 = r.enter(0x60 | mt)
        s1 = r.enter(_SEQ)
        _check_pvno(r, 1)
        _check_msg_type(r, 2, mt)
        padata = _ctx_seq_of(r, 3, PAData._read) if r.has(3) else None
        body = _ctx_obj(r, 4, KDCReqBody._read)
        r.leave(s1)
        r.leave(s0)
        return sub(body, padata)

    @classmethod
    def decode(cls, data: bytes) -> KDCReq:
        return _top(cls._read, data)

    def find_padata(self, padata_type: int) -> bytes | None:
        for pa in self.padata or ():
            if pa.padata_type == padata_type:
                return pa.padata_value
        return None


@dataclass(frozen=True, slots=True)
class ASReq(KDCReq):
    MSG_TYPE: ClassVar[int] = AS_REQ


@dataclass(frozen=True, slots=True)
class TGSReq(KDCReq):
    """TGS-REQ; PA-TGS-REQ (padata-type 1) carries an encoded AP-REQ."""

    MSG_TYPE: ClassVar[int] = TGS_REQ

    def pa_tgs_req(self) -> APReq | None:
        """Decode the PA-TGS-REQ AP-REQ, if present (DecodeError if malformed)."""
        v = self.find_padata(PA_TGS_REQ)
        return None if v is None else APReq.decode(v)


@dataclass(frozen=True, slots=True)
class KDCRep:
    """KDC-REP. Use :class:`TGSRep` ([APPLICATION 13]) or :class:`ASRep` ([APPLICATION 11]).

    ``KDCRep.decode`` accepts either and returns the matching subclass.
    """

    crealm: str
    cname: PrincipalName
    ticket: Ticket
    enc_part: EncryptedData
    padata: tuple[PAData, ...] | None = None

    MSG_TYPE: ClassVar[int] = 0

    def _enc(self) -> bytes:
        mt = self.MSG_TYPE
        if mt not in (AS_REP, TGS_REP):
            raise TypeError("encode ASRep or TGSRep, not KDCRep")
        p = [bytes((0xA0, 3, 2, 1, PVNO, 0xA1, 3, 2, 1, mt))]
        if self.padata is not None:
            p.append(_seq_of(2, self.padata, _enc_obj))
        p.append(_s(3, self.crealm))
        p.append(enc_ctx(4, self.cname._enc()))
        p.append(enc_ctx(5, self.ticket._enc()))
        p.append(enc_ctx(6, self.enc_part._enc()))
        return tlv(0x60 | mt, enc_seq(*p))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> KDCRep:
        ident = r.peek()
        if cls is KDCRep:
            sub: type[KDCRep] = ASRep if ident == 0x60 | AS_REP else TGSRep
        else:
            sub = cls
        mt = sub.MSG_TYPE
        s0 = r.enter(0x60 | mt)
        s1 = r.enter(_SEQ)
        _check_pvno(r, 0)
        _check_msg_type(r, 1, mt)
        padata = _ctx_seq_of(r, 2, PAData._read) if r.has(2) else None
        crealm = r.ctx_string(3)
        cname = _ctx_obj(r, 4, PrincipalName._read)
        ticket = _ctx_obj(r, 5, Ticket._read)
        enc_part = _ctx_obj(r, 6, EncryptedData._read)
        r.leave(s1)
        r.leave(s0)
        return sub(crealm, cname, ticket, enc_part, padata)

    @classmethod
    def decode(cls, data: bytes) -> KDCRep:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class ASRep(KDCRep):
    MSG_TYPE: ClassVar[int] = AS_REP


@dataclass(frozen=True, slots=True)
class TGSRep(KDCRep):
    MSG_TYPE: ClassVar[int] = TGS_REP


@dataclass(frozen=True, slots=True)
class EncKDCRepPart:
    """EncKDCRepPart, wrapped in [APPLICATION 25] (EncASRepPart) or 26 (EncTGSRepPart).

    RFC 4120 section 5.4.2 lets receivers accept either tag, so ``decode`` of
    this class *and of both subclasses* accepts 25 and 26 and returns the
    subclass matching the tag actually received (so re-encoding is exact).
    """

    key: EncryptionKey
    last_req: tuple[LastReqEntry, ...]
    nonce: int
    flags: int  # TicketFlags bitmask
    authtime: int
    endtime: int
    srealm: str
    sname: PrincipalName
    key_expiration: int | None = None
    starttime: int | None = None
    renew_till: int | None = None
    caddr: tuple[HostAddress, ...] | None = None

    APP_TAG: ClassVar[int] = 0

    def _enc(self) -> bytes:
        tag = self.APP_TAG
        if tag not in (25, 26):
            raise TypeError("encode EncASRepPart or EncTGSRepPart, not EncKDCRepPart")
        p = [
            enc_ctx(0, self.key._enc()),
            _seq_of(1, self.last_req, _enc_obj),
            _u(2, self.nonce),
        ]
        if self.key_expiration is not None:
            p.append(_t(3, self.key_expiration))
        p.append(_f(4, self.flags))
        p.append(_t(5, self.authtime))
        if self.starttime is not None:
            p.append(_t(6, self.starttime))
        p.append(_t(7, self.endtime))
        if self.renew_till is not None:
            p.append(_t(8, self.renew_till))
        p.append(_s(9, self.srealm))
        p.append(enc_ctx(10, self.sname._enc()))
        if self.caddr is not None:
            p.append(_seq_of(11, self.caddr, _enc_obj))
        return tlv(0x60 | tag, enc_seq(*p))

    encode = _enc

    @classmethod
    def _read(cls, r: Reader) -> EncKDCRepPart:
        ident = r.peek()
        sub: type[EncKDCRepPart] = EncASRepPart if ident == 0x79 else EncTGSRepPart
        s0 = r.enter(0x60 | sub.APP_TAG)
        s1 = r.enter(_SEQ)
        key = _ctx_obj(r, 0, EncryptionKey._read)
        last_req = _ctx_seq_of(r, 1, LastReqEntry._read)
        nonce = r.ctx_int(2, 0, UINT32_MAX)
        key_exp = r.ctx_time(3) if r.has(3) else None
        flags = r.ctx_flags(4)
        authtime = r.ctx_time(5)
        starttime = r.ctx_time(6) if r.has(6) else None
        endtime = r.ctx_time(7)
        renew_till = r.ctx_time(8) if r.has(8) else None
        srealm = r.ctx_string(9)
        sname = _ctx_obj(r, 10, PrincipalName._read)
        caddr = _ctx_seq_of(r, 11, HostAddress._read) if r.has(11) else None
        r.leave(s1)
        r.leave(s0)
        return sub(key, last_req, nonce, flags, authtime, endtime, srealm, sname,
                   key_exp, starttime, renew_till, caddr)  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> EncKDCRepPart:
        return _top(cls._read, data)


@dataclass(frozen=True, slots=True)
class EncASRepPart(EncKDCRepPart):
    APP_TAG: ClassVar[int] = 25


@dataclass(frozen=True, slots=True)
class EncTGSRepPart(EncKDCRepPart):
    APP_TAG: ClassVar[int] = 26
