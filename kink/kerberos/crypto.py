"""Kerberos crypto profiles used by KINK (RFC 3961, RFC 3962, RFC 8009).

Supported encryption types:

====  ==========================  ====  ========  ===========  ===
etype name                        key   checksum  cksum octets PRF
====  ==========================  ====  ========  ===========  ===
17    aes128-cts-hmac-sha1-96     16    15        12           16
18    aes256-cts-hmac-sha1-96     32    16        12           16
19    aes128-cts-hmac-sha256-128  16    19        16           32
20    aes256-cts-hmac-sha384-192  32    20        24           48
====  ==========================  ====  ========  ===========  ===

DES, 3DES and RC4 enctypes are deliberately not implemented; asking for them
raises :class:`~kink.kerberos.errors.UnsupportedEnctype`.

Entry point: :func:`profile` returns the (immutable, shared) :class:`Profile`
of an enctype::

    p = profile(17)
    ct = p.encrypt(session_key, 39, plaintext)
    pt = p.decrypt(session_key, 39, ct)
    mic = p.checksum(session_key, 40, data)
    p.verify(session_key, 40, data, mic)
    keymat_block = p.prf(session_key, seed)

The PRF of etypes 17/18 has two incompatible readings of RFC 3961 §5.3 with
RFC 3962's parameters: :meth:`Profile.prf` is what MIT/Heimdal ``krb5_c_prf``
return (SHA-1 truncated to one AES block, 16 octets), :func:`prf_rfc3961_literal`
is the literal reading (m = 1: AES-CTS over all 20 octets) that racoon2 uses.
They give different KEYMAT.
:func:`prf_for` picks one by name.

Keys are raw ``bytes`` (``isakmp.secret.Secret`` works as well). The cipher
state of every operation is the initial (all-zero) one, which is all KINK
and the Kerberos messages it carries need.

Derived keys (Ke/Ki/Kc per usage, the PRF key) and the ``cryptography``
cipher objects built from them are cached in a bounded LRU cache keyed by
(enctype, key, usage); :func:`clear_key_cache` empties it. That cache is the
only module-level mutable state. Exception messages never contain key bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from isakmp.secret import Secret
from kink.kerberos.errors import CryptoError, IntegrityError, InvalidKeyLength, UnsupportedEnctype

__all__ = [
    "AES128_CTS_HMAC_SHA1_96",
    "AES256_CTS_HMAC_SHA1_96",
    "AES128_CTS_HMAC_SHA256_128",
    "AES256_CTS_HMAC_SHA384_192",
    "SUPPORTED_ENCTYPES",
    "KEY_USAGE_KINK_ENCRYPT",
    "KEY_USAGE_KINK_CKSUM",
    "PRF_READINGS",
    "KEY_CACHE_SIZE",
    "MAX_S2K_ITERATIONS",
    "DerivedKeys",
    "Profile",
    "profile",
    "is_supported",
    "prf_rfc3961_literal",
    "prf_for",
    "clear_key_cache",
    "key_cache_info",
    "nfold",
    "dr",
    "dk",
    "kdf_hmac_sha2",
    "aes_cts_encrypt",
    "aes_cts_decrypt",
]

AES128_CTS_HMAC_SHA1_96 = 17
AES256_CTS_HMAC_SHA1_96 = 18
AES128_CTS_HMAC_SHA256_128 = 19
AES256_CTS_HMAC_SHA384_192 = 20
SUPPORTED_ENCTYPES: tuple[int, ...] = (17, 18, 19, 20)

KEY_USAGE_KINK_ENCRYPT = 39  # RFC 4430 §4.2.7, §8
KEY_USAGE_KINK_CKSUM = 40  # RFC 4430 §4, §8

PRF_READINGS = ("library", "rfc3961")

KEY_CACHE_SIZE = 4096

_BLOCK = 16
_ZERO_IV = bytes(_BLOCK)
_CONFOUNDER = 16
_MAX_USAGE = 0xFFFFFFFF
# PBKDF2 iteration ceiling: parameters may come from the network (ETYPE-INFO2);
# RFC 3962 allows up to 2**32, which would pin a CPU for hours.
MAX_S2K_ITERATIONS = 1 << 24

_KNOWN_NAMES = {
    1: "des-cbc-crc",
    2: "des-cbc-md4",
    3: "des-cbc-md5",
    5: "des3-cbc-md5",
    7: "des3-cbc-sha1",
    16: "des3-cbc-sha1-kd",
    17: "aes128-cts-hmac-sha1-96",
    18: "aes256-cts-hmac-sha1-96",
    19: "aes128-cts-hmac-sha256-128",
    20: "aes256-cts-hmac-sha384-192",
    23: "rc4-hmac",
    24: "rc4-hmac-exp",
    25: "camellia128-cts-cmac",
    26: "camellia256-cts-cmac",
}

_from_bytes = int.from_bytes
_urandom = os.urandom
_sha1 = hashlib.sha1


def _xor(a: bytes, b: bytes) -> bytes:
    """XOR of two equal-length octet strings."""
    return (_from_bytes(a, "big") ^ _from_bytes(b, "big")).to_bytes(len(a), "big")


def _as_bytes(value, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{what} must be bytes-like, not {type(value).__name__}")


def _check_usage(usage: int) -> int:
    if not isinstance(usage, int):
        raise TypeError(f"key usage must be an int, not {type(usage).__name__}")
    if not 0 <= usage <= _MAX_USAGE:
        raise CryptoError(f"key usage {usage} out of range 0..2^32-1")
    return usage


# ---------------------------------------------------------------------------
# RFC 3961 building blocks


def nfold(data: bytes, nbytes: int) -> bytes:
    """n-fold ``data`` to ``nbytes`` octets (RFC 3961 §5.1)."""
    data = _as_bytes(data, "n-fold input")
    if nbytes <= 0 or not data:
        raise CryptoError("n-fold needs a non-empty input and a positive output size")
    inlen = len(data)
    bits = inlen * 8
    mask = (1 << bits) - 1
    x = _from_bytes(data, "big")
    lcm = inlen * nbytes // _gcd(inlen, nbytes)
    # Concatenate copies of the input, copy i rotated right by 13*i bits.
    parts = []
    for i in range(lcm // inlen):
        rot = (13 * i) % bits
        parts.append((((x >> rot) | (x << (bits - rot))) & mask).to_bytes(inlen, "big"))
    buf = b"".join(parts)
    # One's-complement addition of the nbytes-sized chunks.
    outbits = nbytes * 8
    outmask = (1 << outbits) - 1
    total = 0
    for off in range(0, lcm, nbytes):
        total += _from_bytes(buf[off : off + nbytes], "big")
    while total >> outbits:
        total = (total & outmask) + (total >> outbits)
    return total.to_bytes(nbytes, "big")


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _aes_ecb(key: bytes) -> Cipher:
    return Cipher(algorithms.AES(key), modes.ECB())


def dr(key: bytes, constant: bytes) -> bytes:
    """DR(key, constant) of the AES simplified profile (RFC 3961 §5.1), as many
    octets as the key has (k = key size for AES)."""
    key = _as_bytes(key, "key")
    constant = _as_bytes(constant, "constant")
    if len(key) not in (16, 32):
        raise InvalidKeyLength(f"AES key must be 16 or 32 octets, got {len(key)}")
    if not constant or len(constant) > _BLOCK:
        raise CryptoError("DR constant must be 1..16 octets")
    nbytes = len(key)
    block = constant if len(constant) == _BLOCK else nfold(constant, _BLOCK)
    enc = _aes_ecb(key).encryptor()
    out = []
    have = 0
    while have < nbytes:
        block = enc.update(block)
        out.append(block)
        have += _BLOCK
    return b"".join(out)[:nbytes]


def dk(key: bytes, constant: bytes) -> Secret:
    """DK(key, constant) = random-to-key(DR(key, constant)); AES: identity."""
    return Secret(dr(key, constant))


def kdf_hmac_sha2(key: bytes, label: bytes, context: bytes, bits: int, hashname: str) -> bytes:
    """KDF-HMAC-SHA2 of RFC 8009 §3 (``hashname``: "sha256" or "sha384").

    Single-iteration counter mode: ``bits`` must not exceed the hash size.
    """
    msg = b"\x00\x00\x00\x01" + label + b"\x00" + context + bits.to_bytes(4, "big")
    out = hmac.digest(key, msg, hashname)
    if bits > len(out) * 8 or bits % 8:
        raise CryptoError(f"KDF-HMAC-SHA2 output of {bits} bits not supported")
    return out[: bits // 8]


# ---------------------------------------------------------------------------
# AES-CBC with ciphertext stealing (RFC 3962 §5; last two blocks swapped)


def _cts_encrypt(cbc: Cipher, data: bytes) -> bytes:
    """CTS-encrypt ``data`` (>= 16 octets) with a cached CBC cipher object."""
    n = len(data)
    r = n % _BLOCK
    if r:
        data += _ZERO_IV[r:]
    else:
        r = _BLOCK
    c = cbc.encryptor().update(data)
    if n <= _BLOCK:
        return c
    # All blocks but the last two, then the last block, then the
    # second-to-last truncated to the length of the final plaintext block.
    m = len(c)
    return c[: m - 32] + c[m - 16 :] + c[m - 32 : m - 32 + r]


def _cts_decrypt(ecb: Cipher, data: bytes, iv: bytes) -> bytes:
    """Inverse of :func:`_cts_encrypt` (``data`` >= 16 octets), single ECB context."""
    return _cts_decrypt_ctx(ecb.decryptor(), data, iv)


def _cts_decrypt_ctx(dec, data: bytes, iv: bytes) -> bytes:
    """:func:`_cts_decrypt` with an ECB decryption context (left reusable: whole blocks only)."""
    n = len(data)
    if n == _BLOCK:
        return _xor(dec.update(data), iv)
    r = n % _BLOCK or _BLOCK
    m = n - r  # octets of X1..X(n-2) | Y, always whole blocks
    d = dec.update(data[:m])
    dy = d[m - 16 :]  # D(Y) = Pn|0-pad XOR C(n-1)
    z = data[m:]  # first r octets of C(n-1)
    head = d[: m - 16] + dec.update(z + dy[r:])  # D(C1..C(n-2), C(n-1))
    chain = iv + data[: m - 16]  # IV, C1..C(n-2)
    return _xor(head, chain) + _xor(dy[:r], z)


def aes_cts_encrypt(key: bytes, plaintext: bytes, iv: bytes = _ZERO_IV) -> bytes:
    """AES-CBC-CTS encryption as in RFC 3962 §5 (input of at least one block)."""
    key = _as_bytes(key, "key")
    plaintext = _as_bytes(plaintext, "plaintext")
    if len(key) not in (16, 32):
        raise InvalidKeyLength(f"AES key must be 16 or 32 octets, got {len(key)}")
    if len(iv) != _BLOCK:
        raise CryptoError("IV must be 16 octets")
    if len(plaintext) < _BLOCK:
        raise CryptoError("AES-CTS input shorter than one block")
    return _cts_encrypt(Cipher(algorithms.AES(key), modes.CBC(bytes(iv))), plaintext)


def aes_cts_decrypt(key: bytes, ciphertext: bytes, iv: bytes = _ZERO_IV) -> bytes:
    """AES-CBC-CTS decryption as in RFC 3962 §5 (input of at least one block)."""
    key = _as_bytes(key, "key")
    ciphertext = _as_bytes(ciphertext, "ciphertext")
    if len(key) not in (16, 32):
        raise InvalidKeyLength(f"AES key must be 16 or 32 octets, got {len(key)}")
    if len(iv) != _BLOCK:
        raise CryptoError("IV must be 16 octets")
    if len(ciphertext) < _BLOCK:
        raise CryptoError("AES-CTS input shorter than one block")
    return _cts_decrypt(_aes_ecb(key), ciphertext, bytes(iv))


# ---------------------------------------------------------------------------
# Derived-key cache


class DerivedKeys(NamedTuple):
    """The three per-usage keys of a base key (RFC 3961 §5.3, RFC 8009 §5)."""

    kc: Secret
    ke: Secret
    ki: Secret


_TRANS_36 = bytes(x ^ 0x36 for x in range(256))
_TRANS_5C = bytes(x ^ 0x5C for x in range(256))
_HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384}


class _Mac:
    """HMAC (RFC 2104) of one key with the inner/outer hash states precomputed.

    ``digest(data)`` equals ``hmac.digest(key, prefix + data, hashname)``;
    ``prefix`` (fed to the inner state once, here) serves the RFC 8009
    HMAC over ``IV | C``. The stored hash objects are only ever copied, never
    updated, so an instance can be shared between threads.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, hashname: str, prefix: bytes = b""):
        new = _HASHES[hashname]
        bs = new().block_size
        if len(key) > bs:
            key = new(key).digest()
        key = key.ljust(bs, b"\x00")
        inner = new(key.translate(_TRANS_36))
        if prefix:
            inner.update(prefix)
        self._inner = inner
        self._outer = new(key.translate(_TRANS_5C))

    def digest(self, data: bytes) -> bytes:
        h = self._inner.copy()
        h.update(data)
        o = self._outer.copy()
        o.update(h.digest())
        return o.digest()


class _Aes:
    """AES under one key: CTS encryption/decryption with reused cipher contexts.

    Creating a ``cryptography`` cipher context costs more than encrypting a
    KINK-sized message with it, so contexts are kept in small pools (list
    pop/append are atomic, so concurrent threads each get their own context):

    * ECB contexts carry no state between ``update`` calls (whole blocks);
    * a CBC encryptor continues its chain: the next message's first block is
      XORed with the previous last ciphertext block, which turns the
      continued chain back into a fresh zero-IV CBC encryption.
    """

    __slots__ = ("_cbc", "_ecb", "_cbc_pool", "_enc_pool", "_dec_pool")

    def __init__(self, key: bytes):
        aes = algorithms.AES(key)
        self._cbc = Cipher(aes, modes.CBC(_ZERO_IV))
        self._ecb = Cipher(aes, modes.ECB())
        self._cbc_pool: list = []  # [(CBC encryptor, last ciphertext block as int)]
        self._enc_pool: list = []  # [ECB encryptor]
        self._dec_pool: list = []  # [ECB decryptor]

    def cbc(self, data: bytes) -> bytes:
        """AES-CBC with a zero IV of whole blocks."""
        pool = self._cbc_pool
        try:
            ctx, last = pool.pop()
        except IndexError:
            ctx, last = self._cbc.encryptor(), 0
        if last:
            data = (_from_bytes(data[:_BLOCK], "big") ^ last).to_bytes(_BLOCK, "big") + data[
                _BLOCK:
            ]
        c = ctx.update(data)
        pool.append((ctx, _from_bytes(c[-_BLOCK:], "big")))
        return c

    def ecb_encrypt(self, data: bytes) -> bytes:
        pool = self._enc_pool
        ctx = pool.pop() if pool else self._ecb.encryptor()
        out = ctx.update(data)
        pool.append(ctx)
        return out

    def cts_encrypt(self, data: bytes) -> bytes:
        """CTS-encrypt ``data`` (>= 16 octets), zero IV."""
        n = len(data)
        r = n % _BLOCK
        if r:
            data += _ZERO_IV[r:]
        else:
            r = _BLOCK
        # self.cbc(data), inlined
        pool = self._cbc_pool
        try:
            ctx, last = pool.pop()
        except IndexError:
            ctx, last = self._cbc.encryptor(), 0
        if last:
            data = (_from_bytes(data[:_BLOCK], "big") ^ last).to_bytes(_BLOCK, "big") + data[
                _BLOCK:
            ]
        c = ctx.update(data)
        m = len(c)
        pool.append((ctx, _from_bytes(c[m - _BLOCK :], "big")))
        if n <= _BLOCK:
            return c
        return b"".join((c[: m - 32], c[m - 16 :], c[m - 32 : m - 32 + r]))

    def cts_encrypt2(self, data: bytes) -> bytes:
        """:meth:`cts_encrypt` of 17..31 octets (two blocks, e.g. a SHA-1 digest)."""
        r = len(data) - _BLOCK
        data += _ZERO_IV[r:]
        pool = self._cbc_pool
        try:
            ctx, last = pool.pop()
        except IndexError:
            ctx, last = self._cbc.encryptor(), 0
        if last:
            data = (_from_bytes(data[:_BLOCK], "big") ^ last).to_bytes(_BLOCK, "big") + data[
                _BLOCK:
            ]
        c = ctx.update(data)
        c2 = c[_BLOCK:]
        pool.append((ctx, _from_bytes(c2, "big")))
        return c2 + c[:r]

    def cts_decrypt(self, data: bytes) -> bytes:
        """Inverse of :meth:`cts_encrypt` (``data`` >= 16 octets), zero IV."""
        pool = self._dec_pool
        dec = pool.pop() if pool else self._ecb.decryptor()
        out = _cts_decrypt_ctx(dec, data, _ZERO_IV)
        pool.append(dec)
        return out


class _EncState(NamedTuple):
    aes: _Aes  # AES(Ke)
    mac: _Mac  # HMAC(Ki) (RFC 8009: with the zero IV already fed)


def _derive(enctype: int, key: bytes, usage: int, const: int) -> Secret:
    label = usage.to_bytes(4, "big") + bytes((const,))
    if enctype in (17, 18):
        return dk(key, label)
    hashname, ke_bits, kci_bits = _SHA2_PARAMS[enctype]
    bits = ke_bits if const == 0xAA else kci_bits
    return Secret(kdf_hmac_sha2(key, label, b"", bits, hashname))


def _hash_of(enctype: int) -> str:
    return "sha1" if enctype in (17, 18) else _SHA2_PARAMS[enctype][0]


@lru_cache(maxsize=KEY_CACHE_SIZE)
def _enc_state(enctype: int, key: bytes, usage: int) -> _EncState:
    ke = _derive(enctype, key, usage, 0xAA)
    ki = _derive(enctype, key, usage, 0x55)
    prefix = b"" if enctype in (17, 18) else _ZERO_IV
    return _EncState(_Aes(ke), _Mac(ki, _hash_of(enctype), prefix))


@lru_cache(maxsize=KEY_CACHE_SIZE)
def _cksum_key(enctype: int, key: bytes, usage: int) -> _Mac:
    return _Mac(_derive(enctype, key, usage, 0x99), _hash_of(enctype))


@lru_cache(maxsize=KEY_CACHE_SIZE)
def _prf_state(key: bytes) -> _Aes:
    return _Aes(dk(key, b"prf"))


def clear_key_cache() -> None:
    """Forget every cached derived key (e.g. after a key was revoked)."""
    _enc_state.cache_clear()
    _cksum_key.cache_clear()
    _prf_state.cache_clear()


def key_cache_info() -> dict[str, object]:
    """Hit/miss statistics of the derived-key caches (no key material)."""
    return {
        "encrypt": _enc_state.cache_info(),
        "checksum": _cksum_key.cache_info(),
        "prf": _prf_state.cache_info(),
    }


# ---------------------------------------------------------------------------
# Profiles


class Profile:
    """One Kerberos encryption type: its constants and operations.

    Instances are shared, immutable singletons; obtain them with
    :func:`profile`. All methods take the base (protocol) key as raw bytes.
    """

    __slots__ = (
        "enctype",
        "name",
        "key_size",
        "checksum_type",
        "checksum_size",
        "prf_size",
        "mac_size",
        "block_size",
        "default_s2k_params",
        "_hash",
        "_prf_bits",
    )

    enctype: int
    name: str
    key_size: int
    checksum_type: int
    checksum_size: int
    prf_size: int
    mac_size: int  # octets of HMAC appended to a ciphertext (h)
    block_size: int
    default_s2k_params: bytes
    _hash: str
    _prf_bits: bytes

    def __init__(
        self,
        enctype: int,
        name: str,
        key_size: int,
        checksum_type: int,
        checksum_size: int,
        prf_size: int,
        default_iterations: int,
        hash_name: str,
    ):
        object.__setattr__(self, "enctype", enctype)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "key_size", key_size)
        object.__setattr__(self, "checksum_type", checksum_type)
        object.__setattr__(self, "checksum_size", checksum_size)
        object.__setattr__(self, "prf_size", prf_size)
        object.__setattr__(self, "mac_size", checksum_size)
        object.__setattr__(self, "block_size", _BLOCK)
        object.__setattr__(self, "default_s2k_params", default_iterations.to_bytes(4, "big"))
        object.__setattr__(self, "_hash", hash_name)
        object.__setattr__(self, "_prf_bits", (prf_size * 8).to_bytes(4, "big"))

    def __setattr__(self, name, value):
        raise AttributeError("Profile objects are immutable")

    def __repr__(self) -> str:
        return f"<Profile {self.enctype} {self.name}>"

    # -- helpers -----------------------------------------------------------

    def _key(self, key) -> bytes:
        if not isinstance(key, bytes):
            key = _as_bytes(key, "key")
        if len(key) != self.key_size:
            raise InvalidKeyLength(
                f"{self.name} needs a {self.key_size}-octet key, got {len(key)} octets"
            )
        return key

    def ciphertext_length(self, plaintext_length: int) -> int:
        """Length of :meth:`encrypt` output for a plaintext of that length."""
        return _CONFOUNDER + plaintext_length + self.mac_size

    def _confounder(self, confounder) -> bytes:
        if confounder is None:
            return os.urandom(_CONFOUNDER)
        confounder = _as_bytes(confounder, "confounder")
        if len(confounder) != _CONFOUNDER:
            raise CryptoError(f"confounder must be {_CONFOUNDER} octets, got {len(confounder)}")
        return confounder

    # -- key generation ------------------------------------------------------

    def random_to_key(self, data: bytes) -> Secret:
        """random-to-key: identity for AES (input must be ``key_size`` octets)."""
        data = _as_bytes(data, "random-to-key input")
        if len(data) != self.key_size:
            raise InvalidKeyLength(
                f"{self.name} random-to-key needs {self.key_size} octets, got {len(data)}"
            )
        return Secret(data)

    def random_key(self) -> Secret:
        """A fresh random protocol key."""
        return self.random_to_key(os.urandom(self.key_size))

    def _iterations(self, params: bytes | None) -> int:
        if params is None:
            params = self.default_s2k_params
        params = _as_bytes(params, "s2k params")
        if len(params) != 4:
            raise CryptoError(f"{self.name} s2k params must be 4 octets, got {len(params)}")
        count = _from_bytes(params, "big")
        if count == 0:
            count = 1 << 32  # RFC 3962 §4
        if count > MAX_S2K_ITERATIONS:
            raise CryptoError(
                f"{self.name} s2k iteration count {count} exceeds the limit {MAX_S2K_ITERATIONS}"
            )
        return count

    def derive_keys(self, key: bytes, usage: int) -> DerivedKeys:
        """Kc, Ke, Ki of ``key`` for ``usage`` (uncached; for tests/diagnostics)."""
        key = self._key(key)
        _check_usage(usage)
        return DerivedKeys(
            _derive(self.enctype, key, usage, 0x99),
            _derive(self.enctype, key, usage, 0xAA),
            _derive(self.enctype, key, usage, 0x55),
        )

    # Abstract operations ----------------------------------------------------

    def string_to_key(self, password: bytes, salt: bytes, params: bytes | None = None) -> Secret:
        raise NotImplementedError

    def encrypt(
        self, key: bytes, usage: int, plaintext: bytes, confounder: bytes | None = None
    ) -> bytes:
        raise NotImplementedError

    def decrypt(self, key: bytes, usage: int, ciphertext: bytes) -> bytes:
        raise NotImplementedError

    def checksum(self, key: bytes, usage: int, data: bytes) -> bytes:
        raise NotImplementedError

    def verify(self, key: bytes, usage: int, data: bytes, mic: bytes) -> None:
        """Check a checksum made by :meth:`checksum`; raise IntegrityError if wrong."""
        expected = self.checksum(key, usage, data)
        mic = _as_bytes(mic, "checksum")
        if not hmac.compare_digest(expected, mic):
            raise IntegrityError(f"{self.name} checksum (usage {usage}) does not verify")

    def prf(self, key: bytes, data: bytes) -> bytes:
        raise NotImplementedError


class _AesSha1Profile(Profile):
    """RFC 3962: aes128/aes256-cts-hmac-sha1-96 (simplified profile, DK)."""

    __slots__ = ()

    def string_to_key(self, password: bytes, salt: bytes, params: bytes | None = None) -> Secret:
        password = _as_bytes(password, "password")
        salt = _as_bytes(salt, "salt")
        iterations = self._iterations(params)
        tkey = hashlib.pbkdf2_hmac("sha1", password, salt, iterations, self.key_size)
        return dk(tkey, b"kerberos")

    def encrypt(
        self, key: bytes, usage: int, plaintext: bytes, confounder: bytes | None = None
    ) -> bytes:
        if not isinstance(key, bytes) or len(key) != self.key_size:
            key = self._key(key)
        if usage.__class__ is not int or not 0 <= usage <= _MAX_USAGE:
            _check_usage(usage)
        st = _enc_state(self.enctype, key, usage)
        conf = _urandom(_CONFOUNDER) if confounder is None else self._confounder(confounder)
        if plaintext.__class__ is not bytes:
            plaintext = _as_bytes(plaintext, "plaintext")
        data = conf + plaintext
        return st.aes.cts_encrypt(data) + st.mac.digest(data)[:12]

    def decrypt(self, key: bytes, usage: int, ciphertext: bytes) -> bytes:
        if not isinstance(key, bytes) or len(key) != self.key_size:
            key = self._key(key)
        if usage.__class__ is not int or not 0 <= usage <= _MAX_USAGE:
            _check_usage(usage)
        st = _enc_state(self.enctype, key, usage)
        if ciphertext.__class__ is not bytes:
            ciphertext = _as_bytes(ciphertext, "ciphertext")
        n = len(ciphertext)
        if n < 28:
            raise CryptoError(f"{self.name} ciphertext too short ({n} octets, minimum 28)")
        data = st.aes.cts_decrypt(ciphertext[: n - 12])
        if not hmac.compare_digest(st.mac.digest(data)[:12], ciphertext[n - 12 :]):
            raise IntegrityError(f"{self.name} decryption (usage {usage}): integrity check failed")
        return data[_CONFOUNDER:]

    def checksum(self, key: bytes, usage: int, data: bytes) -> bytes:
        if not isinstance(key, bytes) or len(key) != self.key_size:
            key = self._key(key)
        if usage.__class__ is not int or not 0 <= usage <= _MAX_USAGE:
            _check_usage(usage)
        return _cksum_key(self.enctype, key, usage).digest(data)[:12]

    def prf_key(self, key: bytes) -> Secret:
        """DK(key, "prf"), the key of the RFC 3961 §5.3 PRF."""
        return dk(self._key(key), b"prf")

    def prf(self, key: bytes, data: bytes) -> bytes:
        """MIT/Heimdal ``krb5_c_prf``: AES(DK(key,"prf"), SHA-1(data)[0:16]), 16 octets."""
        if not isinstance(key, bytes) or len(key) != self.key_size:
            key = self._key(key)
        return _prf_state(key).ecb_encrypt(_sha1(data).digest()[:16])

    def prf_literal(self, key: bytes, data: bytes) -> bytes:
        """Literal RFC 3961 reading: AES-CTS(DK(key,"prf"), SHA-1(data)), 20 octets."""
        if not isinstance(key, bytes) or len(key) != self.key_size:
            key = self._key(key)
        return _prf_state(key).cts_encrypt2(_sha1(data).digest())  # 20 octets


# enctype -> (HMAC/PBKDF2 hash, Ke bits, Kc/Ki bits)  (RFC 8009 §5)
_SHA2_PARAMS = {
    19: ("sha256", 128, 128),
    20: ("sha384", 256, 192),
}


class _AesSha2Profile(Profile):
    """RFC 8009: aes128-cts-hmac-sha256-128 / aes256-cts-hmac-sha384-192."""

    __slots__ = ()

    def string_to_key(self, password: bytes, salt: bytes, params: bytes | None = None) -> Secret:
        password = _as_bytes(password, "password")
        salt = _as_bytes(salt, "salt")
        iterations = self._iterations(params)
        hashname = _SHA2_PARAMS[self.enctype][0]
        saltp = self.name.encode("ascii") + b"\x00" + salt
        tkey = hashlib.pbkdf2_hmac(hashname, password, saltp, iterations, self.key_size)
        return Secret(kdf_hmac_sha2(tkey, b"kerberos", b"", self.key_size * 8, hashname))

    def encrypt(
        self, key: bytes, usage: int, plaintext: bytes, confounder: bytes | None = None
    ) -> bytes:
        if not isinstance(key, bytes) or len(key) != self.key_size:
            key = self._key(key)
        if usage.__class__ is not int or not 0 <= usage <= _MAX_USAGE:
            _check_usage(usage)
        st = _enc_state(self.enctype, key, usage)
        conf = _urandom(_CONFOUNDER) if confounder is None else self._confounder(confounder)
        if plaintext.__class__ is not bytes:
            plaintext = _as_bytes(plaintext, "plaintext")
        data = conf + plaintext
        c = st.aes.cts_encrypt(data)
        return c + st.mac.digest(c)[: self.mac_size]

    def decrypt(self, key: bytes, usage: int, ciphertext: bytes) -> bytes:
        if not isinstance(key, bytes) or len(key) != self.key_size:
            key = self._key(key)
        if usage.__class__ is not int or not 0 <= usage <= _MAX_USAGE:
            _check_usage(usage)
        st = _enc_state(self.enctype, key, usage)
        if ciphertext.__class__ is not bytes:
            ciphertext = _as_bytes(ciphertext, "ciphertext")
        h = self.mac_size
        n = len(ciphertext)
        if n < _CONFOUNDER + h:
            raise CryptoError(
                f"{self.name} ciphertext too short ({n} octets, minimum {_CONFOUNDER + h})"
            )
        c = ciphertext[: n - h]
        # Encrypt-then-MAC: authenticate before decrypting anything.
        if not hmac.compare_digest(st.mac.digest(c)[:h], ciphertext[n - h :]):
            raise IntegrityError(f"{self.name} decryption (usage {usage}): integrity check failed")
        return st.aes.cts_decrypt(c)[_CONFOUNDER:]

    def checksum(self, key: bytes, usage: int, data: bytes) -> bytes:
        if not isinstance(key, bytes) or len(key) != self.key_size:
            key = self._key(key)
        if usage.__class__ is not int or not 0 <= usage <= _MAX_USAGE:
            _check_usage(usage)
        return _cksum_key(self.enctype, key, usage).digest(data)[: self.checksum_size]

    def prf(self, key: bytes, data: bytes) -> bytes:
        """KDF-HMAC-SHA2(key, "prf", data, 256|384) (RFC 8009 §5)."""
        key = self._key(key)
        msg = b"\x00\x00\x00\x01prf\x00" + data + self._prf_bits
        return hmac.digest(key, msg, self._hash)


_PROFILES: dict[int, Profile] = {
    17: _AesSha1Profile(17, "aes128-cts-hmac-sha1-96", 16, 15, 12, 16, 4096, "sha1"),
    18: _AesSha1Profile(18, "aes256-cts-hmac-sha1-96", 32, 16, 12, 16, 4096, "sha1"),
    19: _AesSha2Profile(19, "aes128-cts-hmac-sha256-128", 16, 19, 16, 32, 32768, "sha256"),
    20: _AesSha2Profile(20, "aes256-cts-hmac-sha384-192", 32, 20, 24, 48, 32768, "sha384"),
}


def _unsupported(enctype) -> UnsupportedEnctype:
    name = _KNOWN_NAMES.get(enctype) if isinstance(enctype, int) else None
    what = f"enctype {enctype}" + (f" ({name})" if name else "")
    supported = ", ".join(str(e) for e in SUPPORTED_ENCTYPES)
    return UnsupportedEnctype(f"{what} is not supported (supported enctypes: {supported})")


def profile(enctype: int) -> Profile:
    """The :class:`Profile` of ``enctype``; UnsupportedEnctype for anything else."""
    try:
        return _PROFILES[enctype]
    except (KeyError, TypeError):
        raise _unsupported(enctype) from None


def is_supported(enctype: int) -> bool:
    return enctype in _PROFILES


def prf_rfc3961_literal(key: bytes, data: bytes, enctype: int | None = None) -> bytes:
    """Literal RFC 3961 §5.3 PRF for etypes 17/18 (as racoon2 computes it): 20 octets.

    ``PRF = AES-CTS(DK(key, "prf"), SHA-1(data), zero IV)``. The etype is
    taken from the key length (16 -> 17, 32 -> 18) unless given.
    """
    key = _as_bytes(key, "key")
    if enctype is None:
        enctype = {16: 17, 32: 18}.get(len(key))
        if enctype is None:
            raise InvalidKeyLength(
                f"aes-cts-hmac-sha1-96 needs a 16- or 32-octet key, got {len(key)} octets"
            )
    p = profile(enctype)
    if not isinstance(p, _AesSha1Profile):
        raise CryptoError(f"the literal RFC 3961 PRF applies to enctypes 17/18 only, not {enctype}")
    return p.prf_literal(key, data)


def prf_for(enctype: int, reading: str = "library") -> Callable[[bytes, bytes], bytes]:
    """The KINK PRF ``(key, data) -> bytes`` of ``enctype`` under a reading.

    ``reading``: ``"library"`` (MIT/Heimdal ``krb5_c_prf``; 16 octets for
    17/18) or ``"rfc3961"`` (literal 20-octet reading racoon2 computes).
    For etypes 19/20 both readings are the same function.
    """
    p = profile(enctype)
    if reading not in PRF_READINGS:
        raise ValueError(f"unknown PRF reading {reading!r}; expected one of {PRF_READINGS}")
    if reading == "rfc3961" and isinstance(p, _AesSha1Profile):
        return p.prf_literal
    return p.prf
