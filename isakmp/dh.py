"""Diffie-Hellman groups of the KE payload: Quick Mode PFS (RFC 2409 §5.5, KINK RFC 4430 §5.7)
and, for a key exchange that needs one, phase 1.

* MODP groups 2 (1024), 5 (1536), 14 (2048), 15 (3072) of RFC 2409 §6.2 /
  RFC 3526, generator 2. The primes are computed from their published
  definition ``p = 2^N - 2^(N-64) - 1 + 2^64 * (floor(2^(N-130) * pi) + c)``
  (pi from Machin's formula in exact integer arithmetic) once at import and
  checked against the well-known leading octets. Public values and the shared
  secret are big-endian, left-padded to the prime length (RFC 2409 §5, RFC 2408 §3.7).
* ECP groups 19 (P-256) and 20 (P-384) of RFC 5903 via ``cryptography``:
  the KE data is x | y (each the field size), the shared secret is the
  x coordinate (RFC 5903 §7, §9).

``new(group, rng)`` returns an object with ``public`` (KE data) and
``shared(peer_public) -> bytes``; ValueError for a bad peer value or an
unsupported group.

MODP key pairs and shared secrets come from OpenSSL through ``cryptography`` (about 10x
faster than Python's ``pow`` on 2048-bit numbers: a Main Mode costs one key pair and one
exchange per side); should a future ``cryptography`` drop finite-field DH, the exact
pure-Python computation with a 512-bit exponent from ``rng`` takes over.
"""

from __future__ import annotations

import warnings
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

try:  # finite-field DH in OpenSSL (deprecated by cryptography, still the fast path)
    from cryptography.hazmat.primitives.asymmetric import dh as _ffdh
    from cryptography.utils import CryptographyDeprecationWarning as _Deprecated
except ImportError:  # pragma: no cover - a cryptography without FFDH
    _ffdh = None
    _Deprecated = DeprecationWarning


def _quiet():
    """Silence cryptography's FFDH deprecation around one call (the warning says nothing an
    operator can act on; the fallback covers its removal)."""
    w = warnings.catch_warnings()
    w.__enter__()
    warnings.simplefilter("ignore", _Deprecated)
    return w

__all__ = ["SUPPORTED_GROUPS", "new", "modp_prime"]


def _pi_scaled(bits: int) -> int:
    """floor(pi * 2**bits) (exact, with guard bits)."""
    guard = 64
    one = 1 << (bits + guard)

    def atan_inv(x: int) -> int:
        total = term = one // x
        x2 = x * x
        n = 1
        sign = -1
        while term:
            term //= x2
            total += sign * (term // (2 * n + 1))
            sign = -sign
            n += 1
        return total

    pi = 16 * atan_inv(5) - 4 * atan_inv(239)
    return pi >> guard


_MODP_DEF = {2: (1024, 129093), 5: (1536, 741804), 14: (2048, 124476), 15: (3072, 1690314)}
_PRIMES: dict[int, int] = {}


def modp_prime(group: int) -> int:
    p = _PRIMES.get(group)
    if p is None:
        n, c = _MODP_DEF[group]
        p = (1 << n) - (1 << (n - 64)) - 1 + (1 << 64) * (_pi_scaled(n - 130) + c)
        if not hex(p).upper().startswith("0XFFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"):
            raise AssertionError("MODP prime derivation failed")  # pragma: no cover
        _PRIMES[group] = p
    return p


_ECP = {19: (ec.SECP256R1(), 32), 20: (ec.SECP384R1(), 48)}
SUPPORTED_GROUPS = frozenset(_MODP_DEF) | frozenset(_ECP)


class _Modp:
    __slots__ = ("p", "size", "_x", "public")

    def __init__(self, group: int, rng: Any) -> None:
        self.p = p = modp_prime(group)
        self.size = (p.bit_length() + 7) // 8
        self._x = rng.getrandbits(512) | (1 << 511)
        self.public = pow(2, self._x, p).to_bytes(self.size, "big")

    def shared(self, peer_public: bytes) -> bytes:
        if len(peer_public) != self.size:
            raise ValueError(f"KE data of {len(peer_public)} octets, group needs {self.size}")
        y = int.from_bytes(peer_public, "big")
        if not 1 < y < self.p - 1:
            raise ValueError("KE value out of range")
        return pow(y, self._x, self.p).to_bytes(self.size, "big")


class _Ecp:
    __slots__ = ("curve", "size", "_k", "public")

    def __init__(self, group: int) -> None:
        self.curve, self.size = _ECP[group]
        self._k = ec.generate_private_key(self.curve)
        nums = self._k.public_key().public_numbers()
        self.public = nums.x.to_bytes(self.size, "big") + nums.y.to_bytes(self.size, "big")

    def shared(self, peer_public: bytes) -> bytes:
        if len(peer_public) != 2 * self.size:
            raise ValueError(f"KE data of {len(peer_public)} octets, group needs {2 * self.size}")
        try:
            pub = ec.EllipticCurvePublicKey.from_encoded_point(self.curve, b"\x04" + peer_public)
            return self._k.exchange(ec.ECDH(), pub)
        except Exception as e:  # invalid point
            raise ValueError(f"bad ECP public value: {e}") from None


_FFDH_PARAMS: dict[int, Any] = {}


class _ModpOpenSSL:
    """The same group and encodings as :class:`_Modp`, computed by OpenSSL."""

    __slots__ = ("p", "size", "_numbers", "_k", "public")

    def __init__(self, group: int) -> None:
        self.p = p = modp_prime(group)
        self.size = (p.bit_length() + 7) // 8
        w = _quiet()
        try:
            params = _FFDH_PARAMS.get(group)
            if params is None:
                params = _FFDH_PARAMS[group] = _ffdh.DHParameterNumbers(p, 2).parameters()
            self._numbers = params.parameter_numbers()
            self._k = params.generate_private_key()
            self.public = self._k.public_key().public_numbers().y.to_bytes(self.size, "big")
        finally:
            w.__exit__(None, None, None)

    def shared(self, peer_public: bytes) -> bytes:
        if len(peer_public) != self.size:
            raise ValueError(f"KE data of {len(peer_public)} octets, group needs {self.size}")
        y = int.from_bytes(peer_public, "big")
        if not 1 < y < self.p - 1:
            raise ValueError("KE value out of range")
        w = _quiet()
        try:
            pub = _ffdh.DHPublicNumbers(y, self._numbers).public_key()
            return self._k.exchange(pub).rjust(self.size, b"\0")
        except Exception as e:  # OpenSSL refused the value
            raise ValueError(f"bad MODP public value: {e}") from None
        finally:
            w.__exit__(None, None, None)


def _openssl_modp(group: int) -> Any:
    if _ffdh is None:
        return None
    try:
        return _ModpOpenSSL(group)
    except Exception:  # pragma: no cover - FFDH gone from this OpenSSL/cryptography
        return None


def new(group: int, rng: Any) -> Any:
    group = int(group)
    if group in _MODP_DEF:
        return _openssl_modp(group) or _Modp(group, rng)
    if group in _ECP:
        return _Ecp(group)
    raise ValueError(f"Diffie-Hellman group {group} is not supported")
