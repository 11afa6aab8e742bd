"""ISAKMP data attributes (RFC 2408 §3.3).

An attribute is either *basic* (TV, AF bit set, 2-octet value, 4 octets in
total) or *variable* (TLV, AF bit clear, 2-octet length then that many value
octets).  The form used on the wire is preserved through the Python type of
:attr:`Attribute.value`:

* ``int``  -> TV form (value 0..0xFFFF),
* ``bytes`` -> TLV form (the raw value octets, length 0..0xFFFF).

so ``encode(decode(b)) == b`` even for a Variable attribute sent as TV (e.g.
SA Life Duration 28800 as ``80 02 70 80``) or a small value sent as TLV with
leading zero octets.  :attr:`Attribute.int_value` gives the numeric value for
either form.  Use :meth:`Attribute.number` to build a numeric attribute in the
shortest legal form (TV when the value fits 16 bits, otherwise a 4-octet TLV
as racoon2 sends SA Life Duration).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .doi import IpsecAttr, enum_name
from .errors import PayloadMalformed

__all__ = [
    "Attribute",
    "MAX_ATTRIBUTES",
    "decode_attributes",
    "encode_attributes",
    "find_attribute",
    "find_attributes",
]

#: Upper bound on attributes inside one container (transform, notify data).
MAX_ATTRIBUTES = 64

_HH = struct.Struct(">HH")
_pack_hh = _HH.pack
_unpack_hh = _HH.unpack_from


@dataclass(slots=True)
class Attribute:
    """One data attribute.

    ``type`` is the 15-bit attribute class (e.g. :class:`~isakmp.doi.IpsecAttr`);
    ``value`` is an ``int`` for the TV (basic) form or ``bytes`` for the TLV
    (variable) form -- the wire form flag.
    """

    type: int
    value: int | bytes

    # -- constructors ---------------------------------------------------------

    @classmethod
    def tv(cls, attr_type: int, value: int) -> Attribute:
        """Basic (TV) attribute."""
        return cls(attr_type, int(value))

    @classmethod
    def tlv(cls, attr_type: int, value: bytes) -> Attribute:
        """Variable (TLV) attribute with raw value octets."""
        return cls(attr_type, bytes(value))

    @classmethod
    def number(cls, attr_type: int, value: int) -> Attribute:
        """Numeric attribute: TV if it fits in 16 bits, else TLV (4 octets, or
        the minimal length for values beyond 32 bits)."""
        value = int(value)
        if value < 0:
            raise ValueError("attribute value must be non-negative")
        if value <= 0xFFFF:
            return cls(attr_type, value)
        n = max(4, (value.bit_length() + 7) // 8)
        return cls(attr_type, value.to_bytes(n, "big"))

    # -- accessors ------------------------------------------------------------

    @property
    def is_tv(self) -> bool:
        """True for the basic (TV, AF=1) form."""
        return isinstance(self.value, int)

    @property
    def int_value(self) -> int:
        """Numeric value for either form (TLV octets read big-endian)."""
        v = self.value
        if isinstance(v, int):
            return v
        return int.from_bytes(v, "big")

    def __repr__(self) -> str:
        v = self.value
        vs = str(v) if isinstance(v, int) else f"0x{v.hex()}"
        form = "TV" if isinstance(v, int) else "TLV"
        return f"Attribute({enum_name(IpsecAttr, self.type)}={vs} {form})"


# one precompiled Struct per count of all-TV attribute lists (fast path)
_TV_STRUCTS = tuple(struct.Struct(">" + "HH" * n) for n in range(MAX_ATTRIBUTES + 1))


def encode_attributes(attrs: Sequence[Attribute]) -> bytes:
    """Encode attributes back to back (no padding, RFC 2408 §3.6)."""
    words: list[int] = []
    ext = words.extend
    for a in attrs:
        t = a.type
        v = a.value
        if not isinstance(v, int) or t < 0:
            break
        ext((t + 0x8000, v))  # t > 0x7FFF or v out of range -> struct.error below
    else:
        n = len(attrs)
        if n <= MAX_ATTRIBUTES:
            try:
                return _TV_STRUCTS[n].pack(*words)
            except struct.error:
                pass  # fall through to the checking path for a precise error
    return _encode_attributes_slow(attrs)


def _encode_attributes_slow(attrs: Iterable[Attribute]) -> bytes:
    out = []
    append = out.append
    for a in attrs:
        t = a.type
        v = a.value
        if not 0 <= t <= 0x7FFF:
            raise ValueError(f"attribute type {t} out of range")
        if isinstance(v, int):
            if not 0 <= v <= 0xFFFF:
                raise ValueError(f"TV attribute {t} value {v} does not fit 16 bits; use TLV")
            append(_pack_hh(0x8000 | t, v))
        else:
            n = len(v)
            if n > 0xFFFF:
                raise ValueError(f"TLV attribute {t} too long")
            append(_pack_hh(t, n))
            append(v)
    return b"".join(out)


def decode_attributes(data: bytes, off: int = 0, end: int | None = None) -> list[Attribute]:
    """Decode the attributes in ``data[off:end]``; they must fill it exactly."""
    if end is None:
        end = len(data)
    n = end - off
    if not n & 3 and n <= 4 * MAX_ATTRIBUTES and (not n or min(data[off:end:4]) >= 0x80):
        # fast path: only TV attributes (every first octet has the AF bit)
        return [Attribute(w & 0x7FFF, v) for w, v in _HH.iter_unpack(data[off:end])]
    attrs: list[Attribute] = []
    append = attrs.append
    count = 0
    while off < end:
        if end - off < 4:
            raise PayloadMalformed("truncated data attribute header")
        count += 1
        if count > MAX_ATTRIBUTES:
            raise PayloadMalformed(f"more than {MAX_ATTRIBUTES} data attributes")
        w, v = _unpack_hh(data, off)
        off += 4
        if w & 0x8000:
            append(Attribute(w & 0x7FFF, v))
        else:
            nxt = off + v
            if nxt > end:
                raise PayloadMalformed(f"TLV attribute {w} length {v} exceeds its container")
            append(Attribute(w, data[off:nxt]))
            off = nxt
    return attrs


def find_attribute(attrs: Iterable[Attribute], attr_type: int) -> Attribute | None:
    """First attribute of class *attr_type*, or None."""
    for a in attrs:
        if a.type == attr_type:
            return a
    return None


def find_attributes(attrs: Iterable[Attribute], attr_type: int) -> list[Attribute]:
    return [a for a in attrs if a.type == attr_type]
