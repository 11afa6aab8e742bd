"""Minimal, strict DER reader/writer for the Kerberos V5 messages KINK needs.

Only the ASN.1 subset used by RFC 4120 is supported:

* identifiers: single-octet forms only (tag number < 31); the identifier octet
  is compared as a whole, so tag class and the constructed bit are checked;
* lengths: definite, minimal (short form below 128, long form with at most
  four octets and no leading zero), never past the enclosing TLV;
* INTEGER: minimal two's complement, range-checked (Int32 / UInt32 /
  Microseconds);
* OCTET STRING, GeneralString (``KerberosString``), GeneralizedTime
  (``KerberosTime``), BIT STRING (``KerberosFlags``), SEQUENCE / SEQUENCE OF,
  ``[n] EXPLICIT`` context tags and ``[APPLICATION n]`` tags.

Representation choices (shared with :mod:`kink.kerberos.messages`):

* ``KerberosTime`` <-> ``int`` POSIX seconds (UTC). Only the 15-character form
  ``YYYYMMDDHHMMSSZ`` is accepted; the date must exist (no 31 February, no leap
  second 60), years 0000..9999.
* ``KerberosFlags`` <-> ``int``: the 32 bits read as a big-endian number, so
  RFC 4120 bit ``n`` has the value ``1 << (31 - n)``. Exactly the form MIT krb5
  (and Heimdal, Windows) emit is accepted and produced: a 5-octet BIT STRING,
  unused-bits octet 0. Since every named Kerberos flag is below bit 32, this is
  the only encoding RFC 4120 allows ("minimum number of bits, but no fewer
  than 32").
* ``KerberosString`` <-> ``str``. RFC 4120 restricts it to IA5 but lets
  receivers accept more (section 5.2.1) and RFC 6806 section 7 uses UTF-8 in
  practice; we decode strict UTF-8 (ASCII is a subset, invalid UTF-8 is a
  DecodeError) and encode UTF-8. NUL is allowed (RFC 1964 has an escape for
  it).

Because every accepted input is in canonical DER, decoding then re-encoding
any accepted input reproduces it byte for byte.

Every malformed input raises :class:`~kink.kerberos.errors.DecodeError`;
encoders raise ``ValueError`` for values that cannot be represented.
"""

from __future__ import annotations

from .errors import DecodeError

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "UINT32_MAX",
    "MICROSECONDS_MAX",
    "MAX_INPUT",
    "MAX_DEPTH",
    "TAG_INTEGER",
    "TAG_BIT_STRING",
    "TAG_OCTET_STRING",
    "TAG_SEQUENCE",
    "TAG_GENERALIZED_TIME",
    "TAG_GENERAL_STRING",
    "Reader",
    "app_tag",
    "ctx_tag",
    "enc_len",
    "tlv",
    "enc_int",
    "enc_octets",
    "enc_string",
    "enc_time",
    "enc_flags",
    "enc_seq",
    "enc_ctx",
    "enc_app",
    "time_to_str",
    "str_to_time",
    "check_well_formed",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
MICROSECONDS_MAX = 999_999

#: Largest input any decoder accepts (a Ticket with a big PAC stays far below).
MAX_INPUT = 1 << 20
#: Nesting limit of :func:`check_well_formed`. The typed decoders follow a
#: fixed schema, so their depth is bounded by construction (at most ~10).
MAX_DEPTH = 32

TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_SEQUENCE = 0x30
TAG_GENERALIZED_TIME = 0x18
TAG_GENERAL_STRING = 0x1B


def ctx_tag(n: int) -> int:
    """Identifier octet of a constructed ``[n]`` (context class) tag."""
    return 0xA0 | n


def app_tag(n: int) -> int:
    """Identifier octet of a constructed ``[APPLICATION n]`` tag."""
    return 0x60 | n


# --------------------------------------------------------------------------
# KerberosTime <-> POSIX seconds (proleptic Gregorian calendar, UTC)
# --------------------------------------------------------------------------

_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a Gregorian date (valid for any year)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    mp = m + 9 if m <= 2 else m - 3
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (m <= 2)
    return y, m, d


TIME_MIN = _days_from_civil(0, 1, 1) * 86400
TIME_MAX = _days_from_civil(9999, 12, 31) * 86400 + 86399

_DIGITS = frozenset(b"0123456789")


def str_to_time(raw: bytes) -> int:
    """``b"YYYYMMDDHHMMSSZ"`` -> POSIX seconds; DecodeError if not exactly that form."""
    if len(raw) != 15 or raw[14] != 0x5A or not raw[:14].isdigit():  # 'Z', ASCII digits
        raise DecodeError("KerberosTime must be YYYYMMDDHHMMSSZ")
    y = int(raw[0:4])
    mo = int(raw[4:6])
    d = int(raw[6:8])
    h = int(raw[8:10])
    mi = int(raw[10:12])
    s = int(raw[12:14])
    if not 1 <= mo <= 12 or h > 23 or mi > 59 or s > 59 or d < 1:
        raise DecodeError("KerberosTime field out of range")
    dim = _DAYS_IN_MONTH[mo]
    if mo == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0):
        dim = 29
    if d > dim:
        raise DecodeError("KerberosTime day out of range")
    return _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s


def time_to_str(t: int) -> bytes:
    """POSIX seconds -> ``b"YYYYMMDDHHMMSSZ"``."""
    if not TIME_MIN <= t <= TIME_MAX:
        raise ValueError("KerberosTime out of range (years 0000..9999)")
    days, secs = divmod(t, 86400)
    y, m, d = _civil_from_days(days)
    h, secs = divmod(secs, 3600)
    mi, s = divmod(secs, 60)
    return b"%04d%02d%02d%02d%02d%02dZ" % (y, m, d, h, mi, s)


# --------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------


class Reader:
    """Cursor over a DER buffer.

    ``pos`` is the next octet to read, ``end`` the end of the TLV currently
    being read. :meth:`enter` descends into a constructed TLV and returns the
    outer end, :meth:`leave` checks that the inner TLV was consumed completely
    and restores it. A reader is used for one decode and then discarded (after
    an exception its state is meaningless).
    """

    __slots__ = ("buf", "pos", "end")

    def __init__(self, data: bytes | bytearray | memoryview):
        if not isinstance(data, bytes):
            data = bytes(data)
        if len(data) > MAX_INPUT:
            raise DecodeError("DER input too large")
        self.buf = data
        self.pos = 0
        self.end = len(data)

    # -- structure -------------------------------------------------------

    def header(self, tag: int) -> int:
        """Read identifier ``tag`` and a length; return the content end.

        Afterwards ``pos`` is at the first content octet.
        """
        buf = self.buf
        pos = self.pos
        end = self.end
        if pos + 2 > end:
            raise DecodeError("truncated DER (missing identifier/length)")
        if buf[pos] != tag:
            raise DecodeError(f"unexpected DER tag 0x{buf[pos]:02x}, expected 0x{tag:02x}")
        n = buf[pos + 1]
        pos += 2
        if n & 0x80:
            k = n & 0x7F
            if k == 0:
                raise DecodeError("indefinite length not allowed in DER")
            if k > 4:
                raise DecodeError("DER length too long")
            if pos + k > end:
                raise DecodeError("truncated DER length")
            if buf[pos] == 0:
                raise DecodeError("non-minimal DER length")
            n = int.from_bytes(buf[pos : pos + k], "big")
            if n < 0x80:
                raise DecodeError("non-minimal DER length")
            pos += k
        cend = pos + n
        if cend > end:
            raise DecodeError("DER length exceeds enclosing data")
        self.pos = pos
        return cend

    def enter(self, tag: int) -> int:
        """Descend into the constructed TLV ``tag``; return the saved outer end."""
        saved = self.end
        buf = self.buf
        p = self.pos
        # fast path: minimal 1-, 2- and 3-octet length forms (anything else,
        # including every error, goes through header())
        if p + 2 <= saved and buf[p] == tag:
            n = buf[p + 1]
            if n < 0x80:
                if p + 2 + n <= saved:
                    self.pos = p + 2
                    self.end = p + 2 + n
                    return saved
            elif n == 0x81:
                n = buf[p + 2] if p + 3 <= saved else 0
                if n >= 0x80 and p + 3 + n <= saved:
                    self.pos = p + 3
                    self.end = p + 3 + n
                    return saved
            elif n == 0x82 and p + 4 <= saved:
                n = (buf[p + 2] << 8) | buf[p + 3]
                if n >= 0x100 and p + 4 + n <= saved:
                    self.pos = p + 4
                    self.end = p + 4 + n
                    return saved
        self.end = self.header(tag)
        return saved

    def leave(self, saved: int) -> None:
        """Finish the current constructed TLV (no unread content) and go back up."""
        if self.pos != self.end:
            raise DecodeError("unexpected trailing data inside DER element")
        self.end = saved

    def finish(self) -> None:
        """Check the whole buffer was consumed."""
        if self.pos != len(self.buf) or self.end != len(self.buf):
            raise DecodeError("trailing bytes after DER message")

    def peek(self) -> int:
        """Next identifier octet, or -1 at the end of the current element."""
        return self.buf[self.pos] if self.pos < self.end else -1

    def more(self) -> bool:
        return self.pos < self.end

    # -- universal types ---------------------------------------------------

    def integer(self, lo: int = INT32_MIN, hi: int = INT32_MAX) -> int:
        e = self.header(TAG_INTEGER)
        buf = self.buf
        p = self.pos
        n = e - p
        if n == 1:
            v = buf[p]
            if v & 0x80:
                v -= 256
        else:
            if n == 0:
                raise DecodeError("empty INTEGER")
            if n > 9:
                raise DecodeError("INTEGER too large")
            b0 = buf[p]
            b1 = buf[p + 1]
            if (b0 == 0 and b1 < 0x80) or (b0 == 0xFF and b1 >= 0x80):
                raise DecodeError("non-minimal INTEGER encoding")
            v = int.from_bytes(buf[p:e], "big", signed=True)
        if v < lo or v > hi:
            raise DecodeError(f"INTEGER {v} out of range {lo}..{hi}")
        self.pos = e
        return v

    def octets(self) -> bytes:
        e = self.header(TAG_OCTET_STRING)
        v = self.buf[self.pos : e]
        self.pos = e
        return v

    def string(self) -> str:
        buf = self.buf
        p = self.pos
        if p + 2 <= self.end and buf[p] == TAG_GENERAL_STRING and buf[p + 1] < 0x80:
            e = p + 2 + buf[p + 1]
            if e > self.end:
                raise DecodeError("DER length exceeds enclosing data")
            raw = buf[p + 2 : e]
        else:
            e = self.header(TAG_GENERAL_STRING)
            raw = buf[self.pos : e]
        self.pos = e
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("KerberosString is not valid UTF-8") from None

    def time(self) -> int:
        e = self.header(TAG_GENERALIZED_TIME)
        raw = self.buf[self.pos : e]
        self.pos = e
        return str_to_time(raw)

    def flags(self) -> int:
        e = self.header(TAG_BIT_STRING)
        p = self.pos
        if e - p != 5 or self.buf[p] != 0:
            raise DecodeError("KerberosFlags must be a 32-bit BIT STRING")
        self.pos = e
        return int.from_bytes(self.buf[p + 1 : e], "big")

    # -- [n] EXPLICIT wrappers (fused for speed) -----------------------------

    # Each one first tries the common shape (short-form lengths, the inner TLV
    # filling the [n] wrapper exactly, a 1-octet INTEGER) in one step; any
    # other input takes the general path, which accepts or rejects exactly the
    # same octets with the precise error.

    def ctx_int(self, n: int, lo: int = INT32_MIN, hi: int = INT32_MAX) -> int:
        buf = self.buf
        p = self.pos
        if (
            p + 5 <= self.end
            and buf[p] == 0xA0 | n
            and buf[p + 1] == 3
            and buf[p + 2] == TAG_INTEGER
            and buf[p + 3] == 1
        ):
            v = buf[p + 4]
            if v & 0x80:
                v -= 256
            if lo <= v <= hi:
                self.pos = p + 5
                return v
        return self._ctx_int(n, lo, hi)

    def _ctx_int(self, n: int, lo: int, hi: int) -> int:
        saved = self.end
        self.end = self.header(0xA0 | n)
        v = self.integer(lo, hi)
        self.leave(saved)
        return v

    def _ctx_short(self, n: int, tag: int) -> int:
        """Start of the content of ``[n] { tag short-TLV }``, short forms only; else -1."""
        buf = self.buf
        p = self.pos
        if p + 4 <= self.end and buf[p] == 0xA0 | n and buf[p + 2] == tag:
            m = buf[p + 1]
            k = buf[p + 3]
            if m < 0x80 and m == k + 2 and p + 2 + m <= self.end:
                return p + 4
        return -1

    def ctx_octets(self, n: int) -> bytes:
        s = self._ctx_short(n, TAG_OCTET_STRING)
        if s >= 0:
            e = s + self.buf[s - 1]
            self.pos = e
            return self.buf[s:e]
        saved = self.end
        self.end = self.header(0xA0 | n)
        v = self.octets()
        self.leave(saved)
        return v

    def ctx_string(self, n: int) -> str:
        s = self._ctx_short(n, TAG_GENERAL_STRING)
        if s < 0:
            saved = self.end
            self.end = self.header(0xA0 | n)
            v = self.string()
            self.leave(saved)
            return v
        e = s + self.buf[s - 1]
        raw = self.buf[s:e]
        try:
            v = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("KerberosString is not valid UTF-8") from None
        self.pos = e
        return v

    def ctx_time(self, n: int) -> int:
        buf = self.buf
        p = self.pos
        if (
            p + 19 <= self.end
            and buf[p] == 0xA0 | n
            and buf[p + 1] == 17
            and buf[p + 2] == TAG_GENERALIZED_TIME
            and buf[p + 3] == 15
        ):
            v = str_to_time(buf[p + 4 : p + 19])
            self.pos = p + 19
            return v
        saved = self.end
        self.end = self.header(0xA0 | n)
        v = self.time()
        self.leave(saved)
        return v

    def ctx_flags(self, n: int) -> int:
        buf = self.buf
        p = self.pos
        if (
            p + 9 <= self.end
            and buf[p] == 0xA0 | n
            and buf[p + 1] == 7
            and buf[p + 2] == TAG_BIT_STRING
            and buf[p + 3] == 5
            and buf[p + 4] == 0
        ):
            self.pos = p + 9
            return int.from_bytes(buf[p + 5 : p + 9], "big")
        saved = self.end
        self.end = self.header(0xA0 | n)
        v = self.flags()
        self.leave(saved)
        return v

    def has(self, n: int) -> bool:
        """Is the next element the context tag ``[n]`` (for OPTIONAL fields)?"""
        return self.pos < self.end and self.buf[self.pos] == 0xA0 | n


# --------------------------------------------------------------------------
# Writer helpers (all return complete TLVs as bytes)
# --------------------------------------------------------------------------


def enc_len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x81, n))
    if n < 0x10000:
        return bytes((0x82, n >> 8, n & 0xFF))
    if n < 0x1000000:
        return bytes((0x83, n >> 16, (n >> 8) & 0xFF, n & 0xFF))
    if n < 0x100000000:
        return b"\x84" + n.to_bytes(4, "big")
    raise ValueError("DER content too long")


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return bytes((tag,)) + enc_len(n) + content


_SMALL_INTS = {v: bytes((TAG_INTEGER, 1, v & 0xFF)) for v in range(-128, 128)}


def enc_int(v: int, lo: int = INT32_MIN, hi: int = INT32_MAX) -> bytes:
    """INTEGER TLV in minimal two's complement; ValueError if outside lo..hi."""
    small = _SMALL_INTS.get(v)
    if small is not None and lo <= v <= hi:
        return small
    if not isinstance(v, int) or v < lo or v > hi:
        raise ValueError(f"INTEGER {v!r} out of range {lo}..{hi}")
    n = ((v if v >= 0 else ~v).bit_length() + 8) // 8
    return bytes((TAG_INTEGER, n)) + v.to_bytes(n, "big", signed=True)


def enc_octets(v: bytes) -> bytes:
    return tlv(TAG_OCTET_STRING, bytes(v))


def enc_string(v: str) -> bytes:
    return tlv(TAG_GENERAL_STRING, v.encode("utf-8"))


def enc_time(t: int) -> bytes:
    return b"\x18\x0f" + time_to_str(t)


def enc_flags(v: int) -> bytes:
    if not 0 <= v <= UINT32_MAX:
        raise ValueError("KerberosFlags must fit in 32 bits")
    return b"\x03\x05\x00" + int(v).to_bytes(4, "big")


def enc_seq(*parts: bytes) -> bytes:
    return tlv(TAG_SEQUENCE, b"".join(parts))


def enc_ctx(n: int, inner: bytes) -> bytes:
    return tlv(0xA0 | n, inner)


def enc_app(n: int, inner: bytes) -> bytes:
    return tlv(0x60 | n, inner)


# --------------------------------------------------------------------------
# Generic structural check
# --------------------------------------------------------------------------


def check_well_formed(data: bytes, max_depth: int = MAX_DEPTH) -> None:
    """Check that ``data`` is one well-formed DER TLV tree (structure only).

    Iterative (no recursion), bounded by ``max_depth`` and :data:`MAX_INPUT`.
    Constructed elements are descended into; primitive contents are not
    interpreted. Raises DecodeError on any violation.
    """
    r = Reader(data)
    buf = r.buf
    stack: list[int] = []
    if not r.more():
        raise DecodeError("empty DER input")
    top = True
    while True:
        while r.pos == r.end:
            if not stack:
                r.finish()
                return
            r.end = stack.pop()
        if not top and not stack:
            raise DecodeError("trailing bytes after DER message")
        top = False
        ident = buf[r.pos]
        if ident & 0x1F == 0x1F:
            raise DecodeError("high tag numbers are not supported")
        cend = r.header(ident)
        if ident & 0x20:
            if len(stack) >= max_depth:
                raise DecodeError("DER nesting too deep")
            stack.append(r.end)
            r.end = cend
        else:
            r.pos = cend
