"""ISAKMP payloads (RFC 2408 §3) with the IPsec DOI interpretation (RFC 2407).

Every payload is a slots dataclass with a ``payload_type``.  Bare payload
chains (as carried inside KINK_ISAKMP) are handled by :func:`decode_payloads`
and :func:`encode_payloads`.

Decoding is strict and total: every length is checked against its container,
trailing bytes are errors, RESERVED fields must be zero, counts are bounded,
and only :class:`~isakmp.errors.IsakmpError` subclasses are raised.  Encoding
is canonical: ``encode(decode(b)) == b`` for every ``b`` the decoder accepts,
and ``decode(encode(x)) == x`` for every well-formed ``x``.  Encoding a value
that cannot be represented raises ``ValueError``.

Unknown payload types (RFC 2408 §3.1): ISAKMP v1 has no "critical" bit.
Values 14-127 are reserved to IANA; one that this module does not implement
is an INVALID-PAYLOAD-TYPE error (:class:`~isakmp.errors.InvalidPayloadType`,
notification data = the 1-octet type, RFC 2408 §5.1, RFC 4430 §5.5).  Values
128-255 are private use: such payloads are kept as :class:`UnknownPayload`
(opaque bytes, re-encoded unchanged) so traffic from other implementations
(vendor extensions, pre-RFC NAT-T numbers) round-trips; a protocol layer that
wants to refuse them (KINK does, RFC 4430 §5.5) checks for ``UnknownPayload``
and answers INVALID-PAYLOAD-TYPE itself.  Proposal (2) and Transform (3)
are only legal inside an SA payload; at chain level they are
INVALID-PAYLOAD-TYPE too.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from .attributes import (
    _TV_STRUCTS,
    MAX_ATTRIBUTES,
    Attribute,
    decode_attributes,
    encode_attributes,
)
from .doi import (
    IPSEC_DOI,
    ISAKMP_DOI,
    NONCE_MAX_LEN,
    NONCE_MIN_LEN,
    AhTransformId,
    EspTransformId,
    IdType,
    IpcompTransformId,
    IsakmpTransformId,
    NotifyType,
    PayloadType,
    ProtocolId,
    Situation,
)
from .errors import (
    BadProposalSyntax,
    DoiNotSupported,
    InvalidIdInformation,
    InvalidPayloadType,
    InvalidProtocolId,
    IsakmpError,
    PayloadMalformed,
    SituationNotSupported,
)

__all__ = [
    "MAX_PAYLOADS",
    "MAX_PROPOSALS",
    "MAX_TRANSFORMS",
    "Payload",
    "SecurityAssociation",
    "Proposal",
    "Transform",
    "KeyExchange",
    "Identification",
    "Certificate",
    "CertificateRequest",
    "Hash",
    "Signature",
    "Nonce",
    "Notification",
    "Delete",
    "VendorId",
    "NatD",
    "NatOa",
    "UnknownPayload",
    "decode_payloads",
    "encode_payloads",
    "payload_class",
]

#: Bounds applied while decoding.
MAX_PAYLOADS = 128  # payloads in one chain
MAX_PROPOSALS = 64  # proposals in one SA payload
MAX_TRANSFORMS = 64  # transforms in one proposal (the count octet allows 255)

_GEN = struct.Struct(">BBH")  # generic payload header
_PROP = struct.Struct(">BBHBBBB")  # generic header + proposal fixed part
_TRANS = struct.Struct(">BBHBBH")  # generic header + transform fixed part
_II = struct.Struct(">II")
_HH = struct.Struct(">HH")
_BBH = struct.Struct(">BBH")
_IBBH = struct.Struct(">IBBH")

_pack_gen = _GEN.pack
_unpack_gen = _GEN.unpack_from
_pack_prop = _PROP.pack
_unpack_prop = _PROP.unpack_from
_pack_trans = _TRANS.pack
_unpack_trans = _TRANS.unpack_from
_pack_ii = _II.pack
_unpack_ii = _II.unpack_from
_pack_bbh = _BBH.pack
_unpack_bbh = _BBH.unpack_from
_pack_ibbh = _IBBH.pack
_unpack_ibbh = _IBBH.unpack_from


def _members(enum_cls) -> dict[int, object]:
    return {int(m): m for m in enum_cls}


# value -> enum member lookups (plain dict.get is much cheaper than Enum(x))
_PROTO = _members(ProtocolId)
_IDTYPE = _members(IdType)
_NOTIFY = _members(NotifyType)
_TID_BY_PROTO = {
    ProtocolId.ISAKMP: _members(IsakmpTransformId),
    ProtocolId.AH: _members(AhTransformId),
    ProtocolId.ESP: _members(EspTransformId),
    ProtocolId.IPCOMP: _members(IpcompTransformId),
}
_EMPTY: dict[int, object] = {}
_MAX_TV_OCTETS = 4 * MAX_ATTRIBUTES
_minus_af = (0x8000).__rsub__  # w -> w - 0x8000 (clears the AF bit of a TV word)

# SPI sizes allowed per protocol inside a Proposal (RFC 2408 §3.5, RFC 2407 §4.6.1); the
# 16-bit IPCOMP CPI comes as 2 octets (racoon2) or as 4 with the CPI in the low 16 bits
_SPI_SIZES = {
    ProtocolId.ISAKMP: (0, 16),
    ProtocolId.AH: (4,),
    ProtocolId.ESP: (4,),
    ProtocolId.IPCOMP: (2, 4),
}

_SIT_PRIVATE = 0xC0000000  # top two bits private (RFC 2407 §4.2)
# situation bits that are neither defined nor private
_SIT_UNKNOWN = 0xFFFFFFFF & ~(_SIT_PRIVATE | 0x07)
_SIT_LABELED = int(Situation.SIT_SECRECY | Situation.SIT_INTEGRITY)


class Payload:
    """Base of all payload classes (no fields)."""

    __slots__ = ()
    payload_type: int

    def _body(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> Payload:  # pragma: no cover
        raise NotImplementedError

    def encode(self, next_payload: int = 0) -> bytes:
        """The payload with its generic header."""
        try:
            body = self._body()
        except struct.error as e:
            raise ValueError(f"{type(self).__name__}: field out of range: {e}") from None
        n = 4 + len(body)
        if n > 0xFFFF:
            raise ValueError(f"{type(self).__name__} too long ({n} octets)")
        return _pack_gen(next_payload, 0, n) + body


def _check_u8(name: str, v: int) -> None:
    if not 0 <= v <= 0xFF:
        raise ValueError(f"{name} {v} out of range 0..255")


# --- SA / Proposal / Transform -------------------------------------------------


class Transform:
    """Transform payload (RFC 2408 §3.6): only inside a :class:`Proposal`.

    Behaves like a slots dataclass with the fields ``number``,
    ``transform_id`` and ``attributes`` (positional or keyword arguments,
    ``==`` by value, the same ``repr``; ``attributes`` cannot be rebound, its
    list is mutable). A decoded transform whose
    attributes are all basic (TV) keeps their validated wire octets and
    builds the :class:`Attribute` objects on first access of
    ``attributes``; until then it re-encodes from those octets.
    """

    __slots__ = ("number", "transform_id", "_attrs", "_raw")
    __match_args__ = ("number", "transform_id", "attributes")
    __hash__ = None  # type: ignore[assignment]  # mutable, like an eq dataclass

    def __init__(
        self, number: int, transform_id: int, attributes: list[Attribute] | None = None
    ) -> None:
        self.number = number
        self.transform_id = transform_id
        self._attrs = [] if attributes is None else attributes
        self._raw = b""

    @property
    def attributes(self) -> list[Attribute]:
        a = self._attrs
        if a is None:
            raw = self._raw
            flat = _TV_STRUCTS[len(raw) >> 2].unpack(raw)
            a = self._attrs = list(map(Attribute, map(_minus_af, flat[::2]), flat[1::2]))
        return a

    def copy(self) -> Transform:
        """An independent copy (a decoded transform's attributes stay undecoded)."""
        t = Transform(self.number, self.transform_id,
                      None if self._attrs is None else list(self._attrs))
        if self._attrs is None:
            t._attrs, t._raw = None, self._raw
        return t

    def wire_key(self) -> tuple:
        """A hashable value equal for transforms with the same number, ID and attributes
        (the validated wire octets of a decoded transform not yet looked at, else the
        attribute list):
        for caches keyed by an offer's content."""
        if self._attrs is None:
            return (self.number, self.transform_id, self._raw)
        return (self.number, self.transform_id, tuple((a.type, a.value) for a in self.attributes))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        if self._attrs is None and other._attrs is None:  # type: ignore[attr-defined]
            attrs_equal = self._raw == other._raw  # type: ignore[attr-defined]
        else:
            attrs_equal = self.attributes == other.attributes  # type: ignore[attr-defined]
        return (
            self.number == other.number  # type: ignore[attr-defined]
            and self.transform_id == other.transform_id  # type: ignore[attr-defined]
            and attrs_equal
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__qualname__}(number={self.number!r}, "
            f"transform_id={self.transform_id!r}, attributes={self.attributes!r})"
        )

    def __getstate__(self) -> tuple:
        return (self.number, self.transform_id, self.attributes)

    def __setstate__(self, state: tuple) -> None:
        self.number, self.transform_id, self._attrs = state
        self._raw = b""


_new_object = object.__new__


@dataclass(slots=True)
class Proposal:
    """Proposal payload (RFC 2408 §3.5): only inside a :class:`SecurityAssociation`.

    ``spi`` is the sender's (inbound) SPI; the SPI Size on the wire is its length.
    """

    number: int
    protocol_id: int
    spi: bytes
    transforms: list[Transform] = field(default_factory=list)


def _transform_error(
    np: int, res: int, res2: int, tlen: int, tend: int, end: int, last: bool
) -> IsakmpError:
    """The error of a transform header that failed the combined fast check."""
    if tlen < 8 or tend > end:
        return PayloadMalformed("transform length exceeds its proposal")
    if res or res2:
        return PayloadMalformed("transform RESERVED field not zero")
    if np == 0:
        return BadProposalSyntax("fewer transforms than announced")
    if np != 3:
        return BadProposalSyntax(f"transform next payload {np} (must be 3 or 0)")
    return BadProposalSyntax("more transforms than announced")


def _decode_transforms(
    data: bytes, off: int, end: int, count: int, protocol_id: int
) -> list[Transform]:
    if count == 0:
        raise BadProposalSyntax("proposal without transforms")
    if count > MAX_TRANSFORMS:
        raise BadProposalSyntax(f"more than {MAX_TRANSFORMS} transforms")
    tids = _TID_BY_PROTO.get(protocol_id, _EMPTY)
    out: list[Transform] = []
    append = out.append
    new = _new_object
    last = count - 1
    expect = 3  # next payload of every transform but the last (0)
    for i in range(count):
        if end - off < 8:
            raise PayloadMalformed("truncated transform")
        np, res, tlen, tnum, tid, res2 = _unpack_trans(data, off)
        tend = off + tlen
        if i == last:
            expect = 0
        if np != expect or res or res2 or tlen < 8 or tend > end:
            raise _transform_error(np, res, res2, tlen, tend, end, i == last)
        raw = data[off + 8 : tend]
        n = tlen - 8
        if not n & 3 and n <= _MAX_TV_OCTETS and (not n or min(raw[::4]) >= 0x80):
            # only TV attributes (valid by construction): decoded on first access
            t = new(Transform)
            t.number = tnum
            t.transform_id = tids.get(tid, tid)
            t._attrs = None
            t._raw = raw
            append(t)
        else:
            append(Transform(tnum, tids.get(tid, tid), decode_attributes(data, off + 8, tend)))
        off = tend
    if off != end:
        raise PayloadMalformed("trailing bytes after the last transform")
    return out


def _encode_sa_body(sa: SecurityAssociation) -> bytes:
    parts = [_pack_ii(sa.doi, sa.situation), sa.labeled_situation]
    append = parts.append
    props = sa.proposals
    lastp = len(props) - 1
    for i, p in enumerate(props):
        ts = p.transforms
        nt = len(ts)
        lastt = nt - 1
        spi = p.spi
        k = len(parts)
        append(b"")  # proposal header, filled in below
        append(spi)
        n = 8 + len(spi)
        for j, t in enumerate(ts):
            attrs = t._attrs
            if attrs is None:  # decoded and never looked at: its own (validated) octets
                enc = t._raw
            else:  # the all-TV fast path of encode_attributes, inlined
                words: list[int] = []
                ext = words.extend
                for a in attrs:
                    at = a.type
                    v = a.value
                    if not isinstance(v, int) or at < 0:
                        enc = encode_attributes(attrs)
                        break
                    ext((at + 0x8000, v))
                else:
                    try:
                        enc = _TV_STRUCTS[len(attrs)].pack(*words)
                    except (struct.error, IndexError):
                        enc = encode_attributes(attrs)
            tl = 8 + len(enc)
            append(_pack_trans(0 if j == lastt else 3, 0, tl, t.number, t.transform_id, 0))
            append(enc)
            n += tl
        if n > 0xFFFF or len(spi) > 255 or nt > 255:
            raise ValueError("proposal too long (or too many transforms / SPI too long)")
        parts[k] = _pack_prop(0 if i == lastp else 2, 0, n, p.number, p.protocol_id, len(spi), nt)
    return b"".join(parts)


@dataclass(slots=True)
class SecurityAssociation(Payload):
    """SA payload (RFC 2408 §3.4, RFC 2407 §4.6.1).

    ``labeled_situation`` holds the raw Labeled Domain Identifier / Secrecy /
    Integrity fields, present only when the situation has SIT_SECRECY or
    SIT_INTEGRITY (both blocks are then present; never in KINK).
    Proposals with the same number form one AND bundle, see
    :meth:`proposal_groups`.
    """

    payload_type: ClassVar[int] = PayloadType.SA

    proposals: list[Proposal] = field(default_factory=list)
    doi: int = IPSEC_DOI
    situation: int = 1  # Situation.SIT_IDENTITY_ONLY
    labeled_situation: bytes = b""

    def _body(self) -> bytes:
        return _encode_sa_body(self)

    def proposal_groups(self) -> list[list[Proposal]]:
        """Proposals grouped by number (each group = one AND protection suite),
        in the sender's preference order."""
        groups: list[list[Proposal]] = []
        last = None
        for p in self.proposals:
            if groups and p.number == last:
                groups[-1].append(p)
            else:
                groups.append([p])
                last = p.number
        return groups

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> SecurityAssociation:
        if end - off < 8:
            raise PayloadMalformed("SA payload too short")
        doi, sit = _unpack_ii(data, off)
        off += 8
        if doi not in (IPSEC_DOI, ISAKMP_DOI):
            raise DoiNotSupported(f"SA DOI {doi}", data=doi.to_bytes(4, "big"))
        if sit & _SIT_UNKNOWN:
            raise SituationNotSupported(f"situation 0x{sit:08x}")
        labeled = b""
        if sit & _SIT_LABELED:
            start = off
            off = _skip_labeled(data, off, end)
            labeled = data[start:off]
        if off == end:
            raise BadProposalSyntax("SA payload without proposals")
        props: list[Proposal] = []
        append = props.append
        new_proposal = _new_object
        last_num = -1
        left = MAX_PROPOSALS
        while True:
            if not left:
                raise BadProposalSyntax(f"more than {MAX_PROPOSALS} proposals")
            left -= 1
            if end - off < 8:
                raise PayloadMalformed("truncated proposal")
            np, res, plen, num, proto, spisz, ntr = _unpack_prop(data, off)
            pend = off + plen
            if plen < 8 or pend > end:
                raise PayloadMalformed("proposal length exceeds its SA payload")
            if res:
                raise PayloadMalformed("proposal RESERVED field not zero")
            if np != 0 and np != 2:
                raise BadProposalSyntax(f"proposal next payload {np} (must be 2 or 0)")
            if num < last_num:
                raise BadProposalSyntax("proposal numbers not monotonically increasing")
            last_num = num
            if proto == 0:
                raise InvalidProtocolId("protocol id 0 in proposal")
            sizes = _SPI_SIZES.get(proto)
            if sizes is not None and spisz not in sizes:
                raise BadProposalSyntax(f"SPI size {spisz} invalid for protocol {proto}")
            tstart = off + 8 + spisz
            if tstart > pend:
                raise PayloadMalformed("SPI exceeds proposal")
            p = new_proposal(Proposal)  # Proposal(...) without the __init__ call
            p.number = num
            p.protocol_id = _PROTO.get(proto, proto)
            p.spi = data[off + 8 : tstart]
            p.transforms = _decode_transforms(data, tstart, pend, ntr, proto)
            append(p)
            off = pend
            if np == 0:
                if off != end:
                    raise PayloadMalformed("trailing bytes after the last proposal")
                break
            if off == end:
                raise BadProposalSyntax("proposal chain announces a proposal that is missing")
        return cls(props, doi, sit, labeled)


def _skip_labeled(data: bytes, off: int, end: int) -> int:
    """Validate the labeled-situation fields of RFC 2407 §4.6.1; return the end."""
    if end - off < 4:
        raise PayloadMalformed("truncated labeled domain identifier")
    off += 4
    for _ in range(2):  # secrecy block, integrity block
        for unit_bits in (False, True):  # level (octets), then category bitmap (bits)
            if end - off < 4:
                raise PayloadMalformed("truncated labeled situation")
            n, res = _HH.unpack_from(data, off)
            if res:
                raise PayloadMalformed("labeled situation RESERVED field not zero")
            if unit_bits:
                n = (n + 7) // 8
            off += 4 + ((n + 3) & ~3)  # padded to a 32-bit boundary
            if off > end:
                raise PayloadMalformed("labeled situation exceeds SA payload")
    return off


# --- simple opaque-data payloads -----------------------------------------------


@dataclass(slots=True)
class KeyExchange(Payload):
    """KE payload (RFC 2408 §3.7): Diffie-Hellman public value."""

    payload_type: ClassVar[int] = PayloadType.KE
    data: bytes

    def _body(self) -> bytes:
        return self.data

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> KeyExchange:
        return cls(data[off:end])


@dataclass(slots=True)
class Hash(Payload):
    """HASH payload (RFC 2408 §3.11); never used by KINK."""

    payload_type: ClassVar[int] = PayloadType.HASH
    data: bytes

    def _body(self) -> bytes:
        return self.data

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> Hash:
        return cls(data[off:end])


@dataclass(slots=True)
class Signature(Payload):
    """SIG payload (RFC 2408 §3.12)."""

    payload_type: ClassVar[int] = PayloadType.SIG
    data: bytes

    def _body(self) -> bytes:
        return self.data

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> Signature:
        return cls(data[off:end])


@dataclass(slots=True)
class Nonce(Payload):
    """Nonce payload (RFC 2408 §3.13); 8..256 octets (RFC 2409 §5)."""

    payload_type: ClassVar[int] = PayloadType.NONCE
    data: bytes

    def _body(self) -> bytes:
        return self.data

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> Nonce:
        n = end - off
        if n < NONCE_MIN_LEN or n > NONCE_MAX_LEN:
            raise PayloadMalformed(f"nonce of {n} octets (must be 8..256)")
        return cls(data[off:end])


@dataclass(slots=True)
class VendorId(Payload):
    """Vendor ID payload (RFC 2408 §3.16)."""

    payload_type: ClassVar[int] = PayloadType.VID
    data: bytes

    def _body(self) -> bytes:
        return self.data

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> VendorId:
        return cls(data[off:end])


@dataclass(slots=True)
class Certificate(Payload):
    """CERT payload (RFC 2408 §3.9): encoding octet + certificate data."""

    payload_type: ClassVar[int] = PayloadType.CERT
    encoding: int
    data: bytes

    def _body(self) -> bytes:
        _check_u8("certificate encoding", self.encoding)
        return bytes((self.encoding,)) + self.data

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> Certificate:
        if end - off < 1:
            raise PayloadMalformed("CERT payload too short")
        return cls(data[off], data[off + 1 : end])


@dataclass(slots=True)
class CertificateRequest(Payload):
    """CR payload (RFC 2408 §3.10): certificate type + certificate authority."""

    payload_type: ClassVar[int] = PayloadType.CR
    cert_type: int
    authority: bytes = b""

    def _body(self) -> bytes:
        _check_u8("certificate type", self.cert_type)
        return bytes((self.cert_type,)) + self.authority

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> CertificateRequest:
        if end - off < 1:
            raise PayloadMalformed("CR payload too short")
        return cls(data[off], data[off + 1 : end])


# --- ID ----------------------------------------------------------------------

_ID_DATA_LEN = {
    IdType.IPV4_ADDR: 4,
    IdType.IPV4_ADDR_SUBNET: 8,
    IdType.IPV4_ADDR_RANGE: 8,
    IdType.IPV6_ADDR: 16,
    IdType.IPV6_ADDR_SUBNET: 32,
    IdType.IPV6_ADDR_RANGE: 32,
}

_ADDR_CLASS = {IdType.IPV4_ADDR: ipaddress.IPv4Address, IdType.IPV6_ADDR: ipaddress.IPv6Address}
_HOST_NET_CLASS = {IdType.IPV4_ADDR: ipaddress.IPv4Network, IdType.IPV6_ADDR: ipaddress.IPv6Network}
_SUBNET_CLASS = {
    IdType.IPV4_ADDR_SUBNET: ipaddress.IPv4Network,
    IdType.IPV6_ADDR_SUBNET: ipaddress.IPv6Network,
}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class Identification(Payload):
    """ID payload with the IPsec DOI layout (RFC 2408 §3.8, RFC 2407 §4.6.2).

    ``protocol`` (IP protocol, 0 = any), ``port`` (0 = any).  For the address
    types the data length is checked on decode (INVALID-ID-INFORMATION).
    """

    payload_type: ClassVar[int] = PayloadType.ID
    id_type: int
    protocol: int
    port: int
    data: bytes

    def _body(self) -> bytes:
        return _pack_bbh(self.id_type, self.protocol, self.port) + self.data

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> Identification:
        if end - off < 4:
            raise PayloadMalformed("ID payload too short")
        t, proto, port = _unpack_bbh(data, off)
        if t == 0:
            raise InvalidIdInformation("ID type 0 is reserved")
        need = _ID_DATA_LEN.get(t)
        if need is not None and end - off - 4 != need:
            raise InvalidIdInformation(f"ID type {t} needs {need} octets of data")
        return cls(_IDTYPE.get(t, t), proto, port, data[off + 4 : end])

    # -- helpers --------------------------------------------------------------

    @classmethod
    def from_address(
        cls, addr: str | IPAddress, protocol: int = 0, port: int = 0
    ) -> Identification:
        a = ipaddress.ip_address(addr)
        t = IdType.IPV4_ADDR if a.version == 4 else IdType.IPV6_ADDR
        return cls(t, protocol, port, a.packed)

    @classmethod
    def from_network(cls, net: str | IPNetwork, protocol: int = 0, port: int = 0) -> Identification:
        n = ipaddress.ip_network(net, strict=False)
        t = IdType.IPV4_ADDR_SUBNET if n.version == 4 else IdType.IPV6_ADDR_SUBNET
        return cls(t, protocol, port, n.network_address.packed + n.netmask.packed)

    @classmethod
    def from_range(
        cls, first: str | IPAddress, last: str | IPAddress, protocol: int = 0, port: int = 0
    ) -> Identification:
        a, b = ipaddress.ip_address(first), ipaddress.ip_address(last)
        if a.version != b.version:
            raise ValueError("range ends of different address families")
        t = IdType.IPV4_ADDR_RANGE if a.version == 4 else IdType.IPV6_ADDR_RANGE
        return cls(t, protocol, port, a.packed + b.packed)

    def _check(self) -> int:
        need = _ID_DATA_LEN.get(self.id_type)
        if need is None:
            raise InvalidIdInformation(f"ID type {self.id_type} is not an IP address type")
        if len(self.data) != need:
            raise InvalidIdInformation(f"ID type {self.id_type} needs {need} octets")
        return need

    def address(self) -> IPAddress:
        """The address of an IPV4_ADDR / IPV6_ADDR identity."""
        cls = _ADDR_CLASS.get(self.id_type)
        if cls is None:
            raise InvalidIdInformation("not a single-address ID")
        self._check()
        return cls(self.data)

    def network(self) -> IPNetwork:
        """Network of an ADDR (host prefix) or ADDR_SUBNET identity; the mask
        must be contiguous (1-bits first)."""
        t = self.id_type
        cls = _HOST_NET_CLASS.get(t)
        if cls is not None:
            self._check()
            return cls(self.data)  # packed address -> host network (/32, /128)
        cls = _SUBNET_CLASS.get(t)
        if cls is None:
            raise InvalidIdInformation("not an address or subnet ID")
        n = self._check() // 2
        bits = n * 8
        mask = int.from_bytes(self.data[n:], "big")
        inv = mask ^ ((1 << bits) - 1)
        if inv & (inv + 1):
            raise InvalidIdInformation("non-contiguous subnet mask")
        prefix = bits - inv.bit_length()
        return cls((int.from_bytes(self.data[:n], "big"), prefix), strict=False)

    def address_range(self) -> tuple[IPAddress, IPAddress]:
        """(first, last) addresses covered, inclusive, for every IP ID type."""
        t = self.id_type
        if t in (IdType.IPV4_ADDR_RANGE, IdType.IPV6_ADDR_RANGE):
            n = self._check() // 2
            a = ipaddress.ip_address(self.data[:n])
            b = ipaddress.ip_address(self.data[n:])
            if int(a) > int(b):
                raise InvalidIdInformation("address range start after its end")
            return a, b
        net = self.network()
        return net.network_address, net.broadcast_address


# --- Notification / Delete ------------------------------------------------------


@dataclass(slots=True)
class Notification(Payload):
    """Notification payload (RFC 2408 §3.14)."""

    payload_type: ClassVar[int] = PayloadType.N
    notify_type: int
    protocol_id: int = 0
    spi: bytes = b""
    data: bytes = b""
    doi: int = IPSEC_DOI

    @property
    def is_error(self) -> bool:
        return self.notify_type < 16384

    def _body(self) -> bytes:
        if len(self.spi) > 255:
            raise ValueError("SPI too long")
        return (
            _pack_ibbh(self.doi, self.protocol_id, len(self.spi), self.notify_type)
            + self.spi
            + self.data
        )

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> Notification:
        if end - off < 8:
            raise PayloadMalformed("Notification payload too short")
        doi, proto, spisz, ntype = _unpack_ibbh(data, off)
        s = off + 8
        e = s + spisz
        if e > end:
            raise PayloadMalformed("Notification SPI exceeds payload")
        return cls(_NOTIFY.get(ntype, ntype), _PROTO.get(proto, proto), data[s:e], data[e:end], doi)


@dataclass(slots=True)
class Delete(Payload):
    """Delete payload (RFC 2408 §3.15): one protocol, several SPIs.

    ``spi_size`` defaults to the length of the first SPI (4 when empty).
    """

    payload_type: ClassVar[int] = PayloadType.D
    protocol_id: int
    spis: list[bytes] = field(default_factory=list)
    spi_size: int | None = None
    doi: int = IPSEC_DOI

    def __post_init__(self) -> None:
        if self.spi_size is None:
            self.spi_size = len(self.spis[0]) if self.spis else 4

    def _body(self) -> bytes:
        size = self.spi_size
        spis = self.spis
        if len(spis) > 0xFFFF:
            raise ValueError("too many SPIs")
        for s in spis:
            if len(s) != size:
                raise ValueError("all SPIs of a Delete payload must have spi_size octets")
        return _pack_ibbh(self.doi, self.protocol_id, size, len(spis)) + b"".join(spis)

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> Delete:
        if end - off < 8:
            raise PayloadMalformed("Delete payload too short")
        doi, proto, size, n = _unpack_ibbh(data, off)
        off += 8
        if end - off != size * n:
            raise PayloadMalformed("Delete payload length != 12 + #SPIs * SPI size")
        spis = [data[i : i + size] for i in range(off, end, size)] if size else [b""] * n
        return cls(_PROTO.get(proto, proto), spis, size, doi)


# --- NAT traversal (RFC 3947) ---------------------------------------------------


@dataclass(slots=True)
class NatD(Payload):
    """NAT-D payload (RFC 3947 §3.2): hash of address and port.

    ``payload_type`` is 20 (RFC) or 130 (pre-RFC drafts) and is preserved.
    """

    hash: bytes
    payload_type: int = PayloadType.NAT_D

    def _body(self) -> bytes:
        return self.hash

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> NatD:
        return cls(data[off:end], _PAYLOAD.get(ptype, ptype))


@dataclass(slots=True)
class NatOa(Payload):
    """NAT-OA payload (RFC 3947 §5.2): ID type (1 IPv4 / 5 IPv6) + address."""

    id_type: int
    address: bytes
    payload_type: int = PayloadType.NAT_OA

    def _body(self) -> bytes:
        return _pack_bbh(self.id_type, 0, 0) + self.address

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> NatOa:
        if end - off < 4:
            raise PayloadMalformed("NAT-OA payload too short")
        t, r1, r2 = _unpack_bbh(data, off)
        if r1 or r2:
            raise PayloadMalformed("NAT-OA RESERVED field not zero")
        n = end - off - 4
        if not ((t == IdType.IPV4_ADDR and n == 4) or (t == IdType.IPV6_ADDR and n == 16)):
            raise PayloadMalformed(f"NAT-OA ID type {t} with {n} octets of address")
        return cls(_IDTYPE.get(t, t), data[off + 4 : end], _PAYLOAD.get(ptype, ptype))

    def ip(self) -> IPAddress:
        return ipaddress.ip_address(self.address)


@dataclass(slots=True)
class UnknownPayload(Payload):
    """A private-use (128-255) payload type this module does not interpret."""

    payload_type: int
    data: bytes

    def _body(self) -> bytes:
        return self.data

    @classmethod
    def _decode(cls, ptype: int, data: bytes, off: int, end: int) -> UnknownPayload:
        return cls(ptype, data[off:end])


# --- chains ------------------------------------------------------------------

_PAYLOAD = _members(PayloadType)

_REGISTRY: dict[int, type[Payload]] = {
    PayloadType.SA: SecurityAssociation,
    PayloadType.KE: KeyExchange,
    PayloadType.ID: Identification,
    PayloadType.CERT: Certificate,
    PayloadType.CR: CertificateRequest,
    PayloadType.HASH: Hash,
    PayloadType.SIG: Signature,
    PayloadType.NONCE: Nonce,
    PayloadType.N: Notification,
    PayloadType.D: Delete,
    PayloadType.VID: VendorId,
    PayloadType.NAT_D: NatD,
    PayloadType.NAT_OA: NatOa,
    PayloadType.NAT_D_DRAFT: NatD,
    PayloadType.NAT_OA_DRAFT: NatOa,
}
_DECODERS = {t: c._decode for t, c in _REGISTRY.items()}
for _t in range(128, 256):
    _DECODERS.setdefault(_t, UnknownPayload._decode)
del _t


def payload_class(payload_type: int) -> type[Payload] | None:
    """The class decoding *payload_type* at chain level, or None."""
    if 128 <= payload_type <= 255 and payload_type not in _REGISTRY:
        return UnknownPayload
    return _REGISTRY.get(payload_type)


def _decode_chain(first_type: int, data: bytes, off: int, end: int) -> list[Payload]:
    out: list[Payload] = []
    append = out.append
    t = first_type
    decoders = _DECODERS
    left = MAX_PAYLOADS
    while t:
        if not left:
            raise PayloadMalformed(f"more than {MAX_PAYLOADS} payloads")
        left -= 1
        dec = decoders.get(t)
        if dec is None:
            raise InvalidPayloadType(t)
        if end - off < 4:
            raise PayloadMalformed("truncated payload header")
        np, res, plen = _unpack_gen(data, off)
        pend = off + plen
        if plen < 4 or pend > end:
            raise PayloadMalformed(f"payload length {plen} exceeds its container")
        if res:
            raise PayloadMalformed("payload RESERVED field not zero")
        append(dec(t, data, off + 4, pend))
        off = pend
        t = np
    if off != end:
        raise PayloadMalformed(f"{end - off} trailing bytes after the last payload")
    return out


def decode_payloads(first_type: int, data: bytes) -> list[Payload]:
    """Decode a bare payload chain whose first payload is of *first_type*.

    The chain must fill *data* exactly.  Raises only IsakmpError subclasses.
    """
    if type(data) is not bytes:
        data = bytes(data)
    return _decode_chain(first_type, data, 0, len(data))


def encode_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """Encode a chain; returns (type of the first payload or 0, chain bytes)."""
    n = len(payloads)
    if not n:
        return 0, b""
    parts = []
    append = parts.append
    types = [p.payload_type for p in payloads]
    for i, p in enumerate(payloads):
        try:
            body = p._body()
        except struct.error as e:
            raise ValueError(f"{type(p).__name__}: field out of range: {e}") from None
        ln = 4 + len(body)
        if ln > 0xFFFF:
            raise ValueError(f"{type(p).__name__} too long ({ln} octets)")
        append(_pack_gen(types[i + 1] if i + 1 < n else 0, 0, ln))
        append(body)
    return types[0], b"".join(parts)
