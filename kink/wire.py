"""KINK message codec (RFC 4430 §4), sans-I/O.

Layout (RFC 4430 §4, §4.1, §4.2)::

    header (16 octets): Type | MjVer/RESRVED | Length | DOI | XID |
                        NextPayload | A/RESERVED2 | CksumLen
    payloads, each starting on a 4-octet boundary (zero padding between them)
    Cksum (CksumLen octets, 4-aligned, last)

Decoding runs in stages because the Cksum and KINK_ENCRYPT need the ticket
session key, which only the Kerberos check of the AP-REQ/AP-REP yields
(RFC 4430 §4, §4.2.7):

1. :func:`decode` - header and outer payload chain; a KINK_ENCRYPT payload is
   kept as ciphertext (:class:`EncryptPayload`), KINK_ISAKMP keeps its inner
   ISAKMP chain as raw bytes (:meth:`IsakmpPayload.payloads` decodes lazily).
2. the engine finds the KINK_AP_REQ / KINK_AP_REP and runs Kerberos on it to
   learn the ticket session key;
3. :func:`verify_checksum` - the Cksum (key usage 40) over the covered region
   with Length/CksumLen patched as RFC 4430 §4 says;
4. :func:`decrypt` - KINK_ENCRYPT (key usage 39) into ``KinkMessage.inner``;
5. :meth:`IsakmpPayload.payloads` - the Quick Mode chain (raises
   :class:`KinkDecodeError` with KINK_BADQMVERS for a QM version other than
   1.0, then :class:`isakmp.errors.IsakmpError` for a bad chain).

Only :class:`KinkDecodeError` (and its subclasses :class:`ChecksumError`,
:class:`DecryptError`) escape stages 1, 3 and 4; every length is checked
against its container and every loop is bounded.

Encoding: :func:`encode` builds a complete datagram, optionally wrapping the
trailing payloads into one KINK_ENCRYPT and appending the Cksum.

The module does no I/O, keeps no global mutable state and never logs.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar

import isakmp as _isakmp  # already loaded by kink.kerberos (isakmp.secret)
from kink.kerberos.crypto import KEY_USAGE_KINK_CKSUM, KEY_USAGE_KINK_ENCRYPT, Profile, profile
from kink.kerberos.errors import CryptoError, IntegrityError

if TYPE_CHECKING:  # pragma: no cover
    from isakmp.payloads import Payload as IsakmpPayloadObject

__all__ = [
    "kink_error_reason",
    "KINK_PORT",
    "KINK_VERSION",
    "KINK_DOI_IPSEC",
    "HEADER_SIZE",
    "MAX_PAYLOADS",
    "MAX_MESSAGE_SIZE",
    "MessageType",
    "PayloadType",
    "ErrorCode",
    "KinkDecodeError",
    "ChecksumError",
    "DecryptError",
    "KinkPayload",
    "ApReqPayload",
    "ApRepPayload",
    "KrbErrorPayload",
    "TgtReqPayload",
    "TgtRepPayload",
    "IsakmpPayload",
    "EncryptPayload",
    "ErrorPayload",
    "KinkMessage",
    "decode",
    "verify_checksum",
    "decrypt",
    "decrypt_payload",
    "encode",
    "encode_payloads",
    "format_principal",
    "parse_principal",
]

KINK_PORT = 910  # RFC 4430 §9 (UDP)
KINK_VERSION = 1  # MjVer (RFC 4430 §4)
KINK_DOI_IPSEC = 1  # the only DOI defined (RFC 4430 §4, RFC 2407)
HEADER_SIZE = 16
MAX_MESSAGE_SIZE = 0xFFFF  # the Length field is 16 bits
MAX_PAYLOADS = 32  # payloads in one chain (outer, or inside KINK_ENCRYPT)


class MessageType(IntEnum):
    """KINK message types (RFC 4430 §4)."""

    CREATE = 1
    DELETE = 2
    REPLY = 3
    GETTGT = 4
    ACK = 5
    STATUS = 6


class PayloadType(IntEnum):
    """KINK payload types (RFC 4430 §4.2); a separate space from ISAKMP's."""

    DONE = 0
    AP_REQ = 1
    AP_REP = 2
    KRB_ERROR = 3
    TGT_REQ = 4
    TGT_REP = 5
    ISAKMP = 6
    ENCRYPT = 7
    ERROR = 8


class ErrorCode(IntEnum):
    """KINK_ERROR codes (RFC 4430 §4.2.8); 4 is RESERVED (ex KINK_INVMIN)."""

    KINK_OK = 0
    PROTOERR = 1
    INVDOI = 2
    INVMAJ = 3
    INTERR = 5
    BADQMVERS = 6
    U2UDENIED = 7


def kink_error_reason(code: int) -> str:
    """Stable lower-case name of a KINK_ERROR code: ``kink-badqmvers`` for 6,
    ``kink-error-<n>`` for numbers without a name."""
    if int(code) in ErrorCode._value2member_map_:
        return "kink-" + ErrorCode(int(code)).name.lower().replace("_", "-")
    return f"kink-error-{int(code)}"


_MESSAGE_TYPES: dict[int, MessageType] = {m.value: m for m in MessageType}
_ERROR_CODES: dict[int, ErrorCode] = {c.value: c for c in ErrorCode}


# ---------------------------------------------------------------------------
# Errors


class KinkDecodeError(Exception):
    """A malformed or unacceptable KINK message.

    Attributes:
        error_code: the KINK_ERROR code a responder would answer with
            (PROTOERR, INVMAJ, INVDOI or BADQMVERS).
        reason: short fixed string, usable as a metrics label.
        xid, message_type: taken from the header when it could be read
            (so a responder can build a lone KINK_ERROR REPLY), else None.
    """

    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        error_code: ErrorCode = ErrorCode.PROTOERR,
        xid: int | None = None,
        message_type: int | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.error_code = error_code
        self.xid = xid
        self.message_type = message_type

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r}, error_code={self.error_code.name})"


class ChecksumError(KinkDecodeError):
    """The Cksum is missing, has the wrong size or does not verify (drop silently)."""


class DecryptError(KinkDecodeError):
    """KINK_ENCRYPT could not be decrypted (bad integrity / too short)."""


# ---------------------------------------------------------------------------
# Structures

_HEADER = struct.Struct(">BBHIIBBH")  # Type, MjVer|RESRVED, Length, DOI, XID, NP, A|RES2, CksumLen
_GEN = struct.Struct(">BBH")  # generic payload header
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_ISAKMP_HDR = struct.Struct(">BBH")  # InnerNextPload, QMMaj|QMMin, RESERVED
_ENC_HDR = struct.Struct(">B3x")  # InnerNextPload, RESERVED2

_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack
_unpack_gen = _GEN.unpack_from
_pack_gen = _GEN.pack
_unpack_u32 = _U32.unpack_from
_pack_u32 = _U32.pack
_pack_u16 = _U16.pack
_unpack_isakmp_hdr = _ISAKMP_HDR.unpack_from
_pack_isakmp_hdr = _ISAKMP_HDR.pack
_pack_enc_hdr = _ENC_HDR.pack

_PADS = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")
_ZERO2 = b"\x00\x00"


# ---------------------------------------------------------------------------
# Payloads


class KinkPayload:
    """Base of the KINK payload dataclasses; ``payload_type`` is a class constant."""

    __slots__ = ()
    payload_type: ClassVar[PayloadType]

    def _body(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ApReqPayload(KinkPayload):
    """KINK_AP_REQ (RFC 4430 §4.2.1): sender's EPOCH + raw DER AP-REQ (no GSS framing)."""

    payload_type: ClassVar[PayloadType] = PayloadType.AP_REQ
    epoch: int
    ap_req: bytes

    def _body(self) -> bytes:
        if not self.ap_req:
            raise ValueError("KINK_AP_REQ needs a non-empty AP-REQ")
        return _pack_u32(self.epoch) + self.ap_req


@dataclass(frozen=True, slots=True)
class ApRepPayload(KinkPayload):
    """KINK_AP_REP (RFC 4430 §4.2.2): responder's EPOCH + raw DER AP-REP."""

    payload_type: ClassVar[PayloadType] = PayloadType.AP_REP
    epoch: int
    ap_rep: bytes

    def _body(self) -> bytes:
        if not self.ap_rep:
            raise ValueError("KINK_AP_REP needs a non-empty AP-REP")
        return _pack_u32(self.epoch) + self.ap_rep


@dataclass(frozen=True, slots=True)
class KrbErrorPayload(KinkPayload):
    """KINK_KRB_ERROR (RFC 4430 §4.2.3): raw DER KRB-ERROR."""

    payload_type: ClassVar[PayloadType] = PayloadType.KRB_ERROR
    krb_error: bytes

    def _body(self) -> bytes:
        if not self.krb_error:
            raise ValueError("KINK_KRB_ERROR needs a non-empty KRB-ERROR")
        return self.krb_error


@dataclass(frozen=True, slots=True)
class TgtReqPayload(KinkPayload):
    """KINK_TGT_REQ (RFC 4430 §4.2.4).

    ``princ_name`` is the RFC 1964 §2.1.1 string form including the realm
    (``kink/host.example.com@EXAMPLE.COM``, with ``\\``-escapes), carried as
    UTF-8 octets without length prefix or NUL terminator. See
    :func:`format_principal` / :func:`parse_principal`.
    """

    payload_type: ClassVar[PayloadType] = PayloadType.TGT_REQ
    princ_name: str

    def _body(self) -> bytes:
        if not self.princ_name:
            raise ValueError("KINK_TGT_REQ needs a principal name")
        return self.princ_name.encode("utf-8")


@dataclass(frozen=True, slots=True)
class TgtRepPayload(KinkPayload):
    """KINK_TGT_REP (RFC 4430 §4.2.5): DER Ticket of the responder's TGT."""

    payload_type: ClassVar[PayloadType] = PayloadType.TGT_REP
    ticket: bytes

    def _body(self) -> bytes:
        if not self.ticket:
            raise ValueError("KINK_TGT_REP needs a non-empty Ticket")
        return self.ticket


@dataclass(frozen=True, slots=True)
class IsakmpPayload(KinkPayload):
    """KINK_ISAKMP (RFC 4430 §4.2.6): a bare ISAKMP Quick Mode payload chain.

    ``chain`` is kept as raw bytes; ``inner_next_payload`` is the ISAKMP type
    of its first payload. :meth:`payloads` decodes it (after the QM version
    check), :meth:`from_payloads` builds one from ISAKMP payload objects.
    """

    payload_type: ClassVar[PayloadType] = PayloadType.ISAKMP
    inner_next_payload: int
    chain: bytes
    qm_major: int = 1
    qm_minor: int = 0

    @property
    def qm_version_ok(self) -> bool:
        return self.qm_major == 1 and self.qm_minor == 0

    def check_qm_version(self) -> None:
        """Raise KinkDecodeError(BADQMVERS) unless the QM version is 1.0."""
        if not (self.qm_major == 1 and self.qm_minor == 0):
            raise KinkDecodeError(
                "qm-version",
                f"Quick Mode version {self.qm_major}.{self.qm_minor}",
                error_code=ErrorCode.BADQMVERS,
            )

    def payloads(self) -> list[IsakmpPayloadObject]:
        """Decode the ISAKMP chain.

        Raises KinkDecodeError (BADQMVERS) for a QM version other than 1.0,
        then ``isakmp.errors.IsakmpError`` subclasses for a bad chain (those
        map to Notify payloads, not to KINK_ERROR).
        """
        self.check_qm_version()
        return _isakmp.decode_payloads(self.inner_next_payload, self.chain)

    @classmethod
    def from_payloads(
        cls, payloads: Sequence[IsakmpPayloadObject], *, qm_major: int = 1, qm_minor: int = 0
    ) -> IsakmpPayload:
        first, chain = _isakmp.encode_payloads(payloads)
        return cls(first, chain, qm_major, qm_minor)

    def _body(self) -> bytes:
        if not (0 <= self.qm_major <= 15 and 0 <= self.qm_minor <= 15):
            raise ValueError("QM version nibbles must be 0..15")
        return (
            _pack_isakmp_hdr(self.inner_next_payload, (self.qm_major << 4) | self.qm_minor, 0)
            + self.chain
        )


@dataclass(frozen=True, slots=True)
class EncryptPayload(KinkPayload):
    """KINK_ENCRYPT (RFC 4430 §4.2.7): the Kerberos ``encrypt`` output (usage 39).

    The plaintext is ``InnerNextPload | 3 zero octets | inner payload chain``;
    see :func:`decrypt` and :func:`encode` (``encrypt_from``).
    """

    payload_type: ClassVar[PayloadType] = PayloadType.ENCRYPT
    ciphertext: bytes

    def _body(self) -> bytes:
        if not self.ciphertext:
            raise ValueError("KINK_ENCRYPT needs a non-empty ciphertext")
        return self.ciphertext


@dataclass(frozen=True, slots=True)
class ErrorPayload(KinkPayload):
    """KINK_ERROR (RFC 4430 §4.2.8): a 32-bit ErrorCode (kept as int; see ``error``)."""

    payload_type: ClassVar[PayloadType] = PayloadType.ERROR
    code: int

    @property
    def error(self) -> ErrorCode | None:
        """The code as :class:`ErrorCode`, or None if it is reserved/private."""
        return _ERROR_CODES.get(self.code)

    def _body(self) -> bytes:
        return _pack_u32(self.code)


# ---------------------------------------------------------------------------
# Message


@dataclass(slots=True)
class KinkMessage:
    """A decoded KINK message.

    ``payloads`` is the outer chain in wire order (a KINK_ENCRYPT, if any, is
    last and still encrypted). ``inner`` is None until :func:`decrypt` ran,
    then the list of decrypted inner payloads (empty if there was no
    KINK_ENCRYPT). ``raw`` is the message octets ``[0, Length)`` (datagram
    octets after Length are not part of it) and ``cksum_offset`` is
    ``Length - CksumLen``, the end of the region covered by the Cksum.
    """

    type: int
    xid: int
    payloads: list[KinkPayload] = field(default_factory=list)
    doi: int = KINK_DOI_IPSEC
    ack_request: bool = False
    cksum: bytes = b""
    inner: list[KinkPayload] | None = None
    raw: bytes = field(default=b"", repr=False)
    cksum_offset: int = field(default=0, repr=False)

    @property
    def encrypt_payload(self) -> EncryptPayload | None:
        p = self.payloads
        if p and type(last := p[-1]) is EncryptPayload:
            return last
        return None

    def all_payloads(self) -> list[KinkPayload]:
        """Outer payloads except KINK_ENCRYPT, followed by the decrypted inner ones."""
        inner = self.inner
        if self.encrypt_payload is None:
            return list(self.payloads) + (inner or [])
        return self.payloads[:-1] + (inner or [])

    def find(self, cls: type[Any]) -> Any:
        """First payload of class ``cls`` (outer, then inner), or None."""
        for p in self.payloads:
            if type(p) is cls:
                return p
        for p in self.inner or ():
            if type(p) is cls:
                return p
        return None

    def find_all(self, cls: type[Any]) -> list[Any]:
        return [p for p in self.all_payloads() if type(p) is cls]

    def covered(self) -> bytes:
        """The octets the Cksum covers, with Length = Cksum offset and CksumLen = 0."""
        raw = self.raw
        end = self.cksum_offset
        return b"".join((raw[:2], _pack_u16(end), raw[4:14], _ZERO2, raw[16:end]))


# ---------------------------------------------------------------------------
# Decoding


def _err(reason: str, detail: str = "") -> KinkDecodeError:
    return KinkDecodeError(reason, detail)


def _d_ap_req(data: bytes, off: int, ln: int) -> KinkPayload:
    if ln < 9:
        raise _err("payload-length", f"KINK_AP_REQ of {ln} octets")
    return ApReqPayload(_unpack_u32(data, off + 4)[0], data[off + 8 : off + ln])


def _d_ap_rep(data: bytes, off: int, ln: int) -> KinkPayload:
    if ln < 9:
        raise _err("payload-length", f"KINK_AP_REP of {ln} octets")
    return ApRepPayload(_unpack_u32(data, off + 4)[0], data[off + 8 : off + ln])


def _d_krb_error(data: bytes, off: int, ln: int) -> KinkPayload:
    if ln < 5:
        raise _err("payload-length", f"KINK_KRB_ERROR of {ln} octets")
    return KrbErrorPayload(data[off + 4 : off + ln])


def _d_tgt_req(data: bytes, off: int, ln: int) -> KinkPayload:
    if ln < 5:
        raise _err("payload-length", f"KINK_TGT_REQ of {ln} octets")
    try:
        name = data[off + 4 : off + ln].decode("utf-8")
    except UnicodeDecodeError:
        raise _err("payload-value", "KINK_TGT_REQ PrincName is not UTF-8") from None
    return TgtReqPayload(name)


def _d_tgt_rep(data: bytes, off: int, ln: int) -> KinkPayload:
    if ln < 5:
        raise _err("payload-length", f"KINK_TGT_REP of {ln} octets")
    return TgtRepPayload(data[off + 4 : off + ln])


def _d_isakmp(data: bytes, off: int, ln: int) -> KinkPayload:
    if ln < 8:
        raise _err("payload-length", f"KINK_ISAKMP of {ln} octets")
    inp, ver, _res = _unpack_isakmp_hdr(data, off + 4)
    return IsakmpPayload(inp, data[off + 8 : off + ln], ver >> 4, ver & 0x0F)


def _d_encrypt(data: bytes, off: int, ln: int) -> KinkPayload:
    if ln < 5:
        raise _err("payload-length", f"KINK_ENCRYPT of {ln} octets")
    return EncryptPayload(data[off + 4 : off + ln])


def _d_error(data: bytes, off: int, ln: int) -> KinkPayload:
    if ln != 8:
        raise _err("payload-length", f"KINK_ERROR of {ln} octets (must be 8)")
    return ErrorPayload(_unpack_u32(data, off + 4)[0])


_DECODERS = {
    PayloadType.AP_REQ.value: _d_ap_req,
    PayloadType.AP_REP.value: _d_ap_rep,
    PayloadType.KRB_ERROR.value: _d_krb_error,
    PayloadType.TGT_REQ.value: _d_tgt_req,
    PayloadType.TGT_REP.value: _d_tgt_rep,
    PayloadType.ISAKMP.value: _d_isakmp,
    PayloadType.ENCRYPT.value: _d_encrypt,
    PayloadType.ERROR.value: _d_error,
}
_ENCRYPT = PayloadType.ENCRYPT.value


def _walk(data: bytes, np: int, off: int, end: int, inner: bool) -> tuple[list[KinkPayload], int]:
    """Decode a payload chain in ``data[off:end]``; returns (payloads, end of last payload)."""
    out: list[KinkPayload] = []
    append = out.append
    last_end = off
    decoders = _DECODERS
    while np:
        if len(out) >= MAX_PAYLOADS:
            raise _err("payload-count", f"more than {MAX_PAYLOADS} payloads")
        dec = decoders.get(np)
        if dec is None:
            raise _err("payload-type", f"unknown payload type {np}")
        if off + 4 > end:
            raise _err("payload-length", f"payload header at {off} beyond {end}")
        nxt, _res, ln = _unpack_gen(data, off)
        if ln < 4 or off + ln > end:
            raise _err("payload-length", f"payload length {ln} at {off} (end {end})")
        if np == _ENCRYPT:
            if inner:
                raise _err("nested-encrypt", "KINK_ENCRYPT inside KINK_ENCRYPT")
            if nxt:
                raise _err("encrypt-not-last", "KINK_ENCRYPT must be the last payload")
        append(dec(data, off, ln))
        last_end = off + ln
        off = last_end + (-ln & 3)
        np = nxt
    return out, last_end


def decode(datagram: bytes | bytearray | memoryview) -> KinkMessage:
    """Decode the header and the outer payload chain (KINK_ENCRYPT stays encrypted).

    Octets after ``Length`` in the datagram are ignored. Raises only
    :class:`KinkDecodeError` (reasons: short, version, length, cksum-length,
    doi, message-type, payload-type, payload-length, payload-value,
    payload-count, encrypt-not-last, padding).
    """
    data = datagram if type(datagram) is bytes else bytes(datagram)
    n = len(data)
    if n < HEADER_SIZE:
        raise _err("short", f"{n} octets")
    mtype, ver, length, doi, xid, np, flags, cksum_len = _unpack_header(data, 0)
    if ver >> 4 != KINK_VERSION:
        raise KinkDecodeError(
            "version", f"MjVer {ver >> 4}", error_code=ErrorCode.INVMAJ, xid=xid,
            message_type=mtype,
        )
    if length < HEADER_SIZE or length > n:
        raise KinkDecodeError(
            "length", f"Length {length}, datagram {n}", xid=xid, message_type=mtype
        )
    if HEADER_SIZE + cksum_len > length:
        raise KinkDecodeError(
            "cksum-length", f"CksumLen {cksum_len}, Length {length}", xid=xid,
            message_type=mtype,
        )
    if doi != KINK_DOI_IPSEC:
        raise KinkDecodeError(
            "doi", f"DOI {doi}", error_code=ErrorCode.INVDOI, xid=xid, message_type=mtype
        )
    mt = _MESSAGE_TYPES.get(mtype)
    if mt is None:
        raise KinkDecodeError("message-type", f"type {mtype}", xid=xid, message_type=mtype)
    if length != n:
        data = data[:length]
    end = length - cksum_len
    try:
        payloads, last_end = _walk(data, np, HEADER_SIZE, end, False)
    except KinkDecodeError as e:
        e.xid = xid
        e.message_type = mtype
        raise
    pad = end - last_end
    if cksum_len:
        if pad != (-last_end & 3):
            raise KinkDecodeError(
                "padding", f"{pad} octets between the last payload and Cksum", xid=xid,
                message_type=mtype,
            )
    elif pad > 3:
        raise KinkDecodeError(
            "padding", f"{pad} octets after the last payload", xid=xid, message_type=mtype
        )
    return KinkMessage(
        mt, xid, payloads, doi, bool(flags & 0x80), data[end:length], None, data, end
    )


def _get_profile(enctype: int | Profile) -> Profile:
    if isinstance(enctype, int):
        return profile(enctype)
    return enctype


def verify_checksum(msg: KinkMessage, enctype: int | Profile, session_key: bytes) -> None:
    """Verify the Cksum with the ticket session key (usage 40, RFC 4430 §4).

    Raises :class:`ChecksumError` (reasons: no-checksum, checksum-length,
    checksum) - a message with an AP-REQ/AP-REP but without Cksum fails too.
    ``enctype`` may be an etype number or a :class:`Profile`.
    """
    prof = _get_profile(enctype)
    c = len(msg.cksum)
    if not c:
        raise ChecksumError("no-checksum", xid=msg.xid, message_type=msg.type)
    if c != prof.checksum_size:
        raise ChecksumError(
            "checksum-length", f"CksumLen {c}, {prof.name} needs {prof.checksum_size}",
            xid=msg.xid, message_type=msg.type,
        )
    try:
        prof.verify(session_key, KEY_USAGE_KINK_CKSUM, msg.covered(), msg.cksum)
    except IntegrityError:
        raise ChecksumError("checksum", xid=msg.xid, message_type=msg.type) from None
    except CryptoError as e:
        raise ChecksumError("checksum", str(e), xid=msg.xid, message_type=msg.type) from None


def decrypt_payload(
    payload: EncryptPayload, enctype: int | Profile, session_key: bytes
) -> list[KinkPayload]:
    """Decrypt one KINK_ENCRYPT payload and decode its inner chain."""
    prof = _get_profile(enctype)
    try:
        pt = prof.decrypt(session_key, KEY_USAGE_KINK_ENCRYPT, payload.ciphertext)
    except CryptoError as e:
        raise DecryptError("decrypt", str(e)) from None
    if len(pt) < 4:
        raise KinkDecodeError("encrypt-short", f"plaintext of {len(pt)} octets")
    # Trailing octets after the last inner payload are ignored (RFC 4430 §4.2.7).
    inner, _ = _walk(pt, pt[0], 4, len(pt), True)
    return inner


def decrypt(msg: KinkMessage, enctype: int | Profile, session_key: bytes) -> list[KinkPayload]:
    """Decrypt the KINK_ENCRYPT payload (usage 39) into ``msg.inner`` and return it.

    A message without KINK_ENCRYPT gets ``inner = []``. Raises
    :class:`DecryptError` (reason decrypt) or :class:`KinkDecodeError`
    (encrypt-short, nested-encrypt, payload-* reasons) for a bad plaintext.
    """
    enc = msg.encrypt_payload
    if enc is None:
        msg.inner = []
        return msg.inner
    try:
        inner = decrypt_payload(enc, enctype, session_key)
    except KinkDecodeError as e:
        e.xid = msg.xid
        e.message_type = msg.type
        raise
    msg.inner = inner
    return inner


# ---------------------------------------------------------------------------
# Encoding


def encode_payloads(payloads: Sequence[KinkPayload], pad_last: bool = False) -> tuple[int, bytes]:
    """Encode a KINK payload chain; returns (type of the first payload or 0, octets).

    Every payload but the last is followed by zero padding to a 4-octet
    boundary; the last one too if ``pad_last``.
    """
    n = len(payloads)
    if not n:
        return 0, b""
    parts: list[bytes] = []
    append = parts.append
    try:
        types = [p.payload_type for p in payloads]
    except AttributeError:
        raise TypeError("KINK payloads must be KinkPayload instances") from None
    last = n - 1
    for i, p in enumerate(payloads):
        try:
            body = p._body()
        except struct.error as e:
            raise ValueError(f"{type(p).__name__}: field out of range: {e}") from None
        ln = 4 + len(body)
        if ln > MAX_MESSAGE_SIZE:
            raise ValueError(f"{type(p).__name__} too long ({ln} octets)")
        append(_pack_gen(types[i + 1] if i < last else 0, 0, ln))
        append(body)
        if ln & 3 and (i < last or pad_last):
            append(_PADS[-ln & 3])
    return types[0], b"".join(parts)


def encode(
    msg_type: int,
    xid: int,
    payloads: Sequence[KinkPayload],
    *,
    ack_request: bool = False,
    doi: int = KINK_DOI_IPSEC,
    key: tuple[int | Profile, bytes] | None = None,
    encrypt_from: int | None = None,
    confounder: bytes | None = None,
) -> bytes:
    """Build a KINK datagram.

    ``payloads[encrypt_from:]`` (if ``encrypt_from`` is not None) are wrapped
    into one KINK_ENCRYPT appended as the last outer payload: plaintext =
    InnerNextPload | 3 zero octets | inner chain (4-aligned, no padding after
    the last inner payload), Kerberos ``encrypt`` with usage 39. With ``key``
    = (enctype or Profile, ticket session key) the Cksum (usage 40) is computed
    over the message with Length = L0 and CksumLen = 0 and appended; without
    ``key`` there is no Cksum and no trailing padding. ``confounder`` fixes the
    encryption confounder (tests only). Raises ValueError/TypeError on values
    that cannot be encoded.
    """
    if encrypt_from is not None:
        if key is None:
            raise ValueError("encrypt_from needs a key")
        if not 0 <= encrypt_from < len(payloads):
            raise ValueError("encrypt_from must index a payload")
        outer = list(payloads[:encrypt_from])
        inner = payloads[encrypt_from:]
        for p in inner:
            if type(p) is EncryptPayload:
                raise ValueError("KINK_ENCRYPT cannot be nested")
        prof = _get_profile(key[0])
        first, chain = encode_payloads(inner)
        ct = prof.encrypt(
            key[1], KEY_USAGE_KINK_ENCRYPT, _pack_enc_hdr(first) + chain, confounder
        )
        outer.append(EncryptPayload(ct))
    else:
        outer = payloads
    for p in outer[:-1]:
        if type(p) is EncryptPayload:
            raise ValueError("KINK_ENCRYPT must be the last payload")
    np, chain = encode_payloads(outer, pad_last=key is not None)
    flags = 0x80 if ack_request else 0
    l0 = HEADER_SIZE + len(chain)
    try:
        if key is None:
            if l0 > MAX_MESSAGE_SIZE:
                raise ValueError(f"message too long ({l0} octets)")
            return _pack_header(msg_type, 0x10, l0, doi, xid, np, flags, 0) + chain
        prof = _get_profile(key[0])
        c = prof.checksum_size
        if l0 + c > MAX_MESSAGE_SIZE:
            raise ValueError(f"message too long ({l0 + c} octets)")
        body = _pack_header(msg_type, 0x10, l0, doi, xid, np, flags, 0) + chain
        mic = prof.checksum(key[1], KEY_USAGE_KINK_CKSUM, body)
        if len(mic) != c:  # pragma: no cover - profile invariant
            raise ValueError("checksum size mismatch")
        return b"".join(
            (_pack_header(msg_type, 0x10, l0 + c, doi, xid, np, flags, c), chain, mic)
        )
    except struct.error as e:
        raise ValueError(f"header field out of range: {e}") from None


# ---------------------------------------------------------------------------
# RFC 1964 §2.1.1 principal strings (KINK_TGT_REQ PrincName)

_ESCAPES = {"\\": "\\\\", "/": "\\/", "@": "\\@", "\0": "\\0", "\b": "\\b", "\t": "\\t",
            "\n": "\\n"}
_UNESCAPES = {"\\": "\\", "/": "/", "@": "@", "0": "\0", "b": "\b", "t": "\t", "n": "\n"}


def _escape(s: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in s)


def format_principal(components: Sequence[str], realm: str) -> str:
    """RFC 1964 string form ``comp1/comp2@REALM`` with ``\\`` escapes."""
    if not components:
        raise ValueError("a principal needs at least one component")
    return "/".join(_escape(c) for c in components) + "@" + _escape(realm)


def parse_principal(name: str) -> tuple[tuple[str, ...], str]:
    """Inverse of :func:`format_principal`; the realm is mandatory. ValueError if malformed."""
    comps: list[str] = []
    cur: list[str] = []
    realm: str | None = None
    it = iter(name)
    for ch in it:
        if ch == "\\":
            nxt = next(it, None)
            if nxt is None or nxt not in _UNESCAPES:
                raise ValueError("bad escape in principal name")
            cur.append(_UNESCAPES[nxt])
        elif ch == "/" and realm is None:
            comps.append("".join(cur))
            cur = []
        elif ch == "@" and realm is None:
            comps.append("".join(cur))
            cur = []
            realm = ""
        elif ch in "/@":
            raise ValueError(f"unescaped {ch!r} in realm")
        else:
            cur.append(ch)
    if realm is None:
        raise ValueError("principal name without realm")
    realm = "".join(cur)
    if not realm or any(not c for c in comps):
        raise ValueError("empty component or realm")
    return tuple(comps), realm
