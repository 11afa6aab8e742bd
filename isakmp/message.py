"""ISAKMP message: fixed header (RFC 2408 §3.1) plus payload chain.

When the E (encryption) flag is set the body after the header is kept as
opaque bytes in :attr:`Message.encrypted_body` together with the header's
Next Payload in :attr:`Message.next_payload`; :attr:`Message.payloads` is then
empty.  For plain messages ``next_payload`` stays 0 and the header value is
derived from ``payloads`` (see :attr:`Message.first_payload_type`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .doi import (
    FLAG_AUTH_ONLY,
    FLAG_COMMIT,
    FLAG_ENCRYPTION,
    ISAKMP_HEADER_LEN,
    ISAKMP_MAJOR_VERSION,
    ISAKMP_MINOR_VERSION,
    ExchangeType,
)
from .errors import InvalidFlags, InvalidMajorVersion, PayloadMalformed, UnequalPayloadLengths
from .payloads import Payload, _decode_chain, encode_payloads

__all__ = ["Message"]

_HDR = struct.Struct(">8s8sBBBBII")
_pack_hdr = _HDR.pack
_unpack_hdr = _HDR.unpack_from
_FLAGS_KNOWN = FLAG_ENCRYPTION | FLAG_COMMIT | FLAG_AUTH_ONLY
_EXCHANGE = {int(m): m for m in ExchangeType}


@dataclass(slots=True)
class Message:
    """An ISAKMP message.

    Fields: ``initiator_cookie`` / ``responder_cookie`` (8 octets each),
    ``exchange_type``, ``payloads``, ``flags`` (E=1, C=2, A=4),
    ``message_id``, ``major_version`` (must be 1), ``minor_version``,
    ``encrypted_body`` and ``next_payload`` (E-flag messages only).
    """

    initiator_cookie: bytes
    responder_cookie: bytes
    exchange_type: int
    payloads: list[Payload] = field(default_factory=list)
    flags: int = 0
    message_id: int = 0
    major_version: int = ISAKMP_MAJOR_VERSION
    minor_version: int = ISAKMP_MINOR_VERSION
    encrypted_body: bytes = b""
    next_payload: int = 0

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTION)

    @property
    def first_payload_type(self) -> int:
        """Next Payload of the header."""
        if self.flags & FLAG_ENCRYPTION:
            return self.next_payload
        return self.payloads[0].payload_type if self.payloads else 0

    def encode(self) -> bytes:
        if len(self.initiator_cookie) != 8 or len(self.responder_cookie) != 8:
            raise ValueError("ISAKMP cookies are 8 octets each")
        if self.flags & FLAG_ENCRYPTION:
            if self.payloads:
                raise ValueError("E flag set: the body must be given as encrypted_body")
            first, body = self.next_payload, self.encrypted_body
        else:
            if self.encrypted_body or self.next_payload:
                raise ValueError("encrypted_body/next_payload only with the E flag")
            first, body = encode_payloads(self.payloads)
        if not (0 <= self.major_version <= 15 and 0 <= self.minor_version <= 15):
            raise ValueError("ISAKMP version nibbles out of range")
        try:
            hdr = _pack_hdr(
                self.initiator_cookie,
                self.responder_cookie,
                first,
                (self.major_version << 4) | self.minor_version,
                self.exchange_type,
                self.flags,
                self.message_id,
                ISAKMP_HEADER_LEN + len(body),
            )
        except struct.error as e:
            raise ValueError(f"ISAKMP header field out of range: {e}") from None
        return hdr + body

    @classmethod
    def decode(cls, data: bytes) -> Message:
        """Decode a whole ISAKMP message; the Length field must equal len(data)."""
        if type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        if n < ISAKMP_HEADER_LEN:
            raise PayloadMalformed("shorter than the ISAKMP header")
        icky, rcky, np, ver, xchg, flags, mid, length = _unpack_hdr(data, 0)
        if ver >> 4 != ISAKMP_MAJOR_VERSION:
            raise InvalidMajorVersion(f"ISAKMP major version {ver >> 4}")
        if flags & ~_FLAGS_KNOWN:
            raise InvalidFlags(f"unknown ISAKMP flags 0x{flags:02x}")
        if length != n:
            raise UnequalPayloadLengths(f"header length {length} but {n} octets received")
        xchg = _EXCHANGE.get(xchg, xchg)
        if flags & FLAG_ENCRYPTION:
            return cls(icky, rcky, xchg, [], flags, mid, ver >> 4, ver & 15, data[28:], np)
        payloads = _decode_chain(np, data, ISAKMP_HEADER_LEN, n)
        return cls(icky, rcky, xchg, payloads, flags, mid, ver >> 4, ver & 15)
