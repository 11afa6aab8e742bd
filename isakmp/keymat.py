"""Quick Mode KEYMAT expansion and splitting (RFC 2409 §5.5, RFC 4430 §7).

Expansion
---------
::

    seed   = [ g(qm)^xy | ] protocol | SPI | Ni_b [ | Nr_b ]
    K1     = prf(SKEYID_d, seed)
    Kn     = prf(SKEYID_d, Kn-1 | seed)
    KEYMAT = first ``length`` octets of K1 | K2 | K3 | ...

* ``prf`` is a callable ``(key, data) -> bytes`` supplied by the key-exchange
  plugin (``isakmp.plugin``). Its output size may be anything fixed (16/20
  octets for the Kerberos AES-SHA1 PRF readings, 32/48 for RFC 8009, 20/32 for
  HMAC-SHA1/-SHA256); the number of rounds follows from it. KINK uses the
  Kerberos PRF of the ticket session key's etype, IKEv1 an HMAC
  (:func:`hmac_prf`).
* ``protocol`` is the one-octet Protocol-Id of the proposal (2 AH, 3 ESP,
  4 IPCOMP), ``SPI`` the SPI chosen by the *destination* of the SA, 4 octets
  big-endian for an ``int`` (pass ``bytes`` to use another encoding, e.g. a
  2-octet IPCOMP CPI). ``Ni_b``/``Nr_b`` are Nonce payload bodies, initiator
  first on both sides; ``Nr_b`` is empty when the REPLY carried no Nonce.
  ``shared_secret`` is the PFS Diffie-Hellman secret, left-padded to the
  prime length by the caller, empty without PFS.
* A shorter KEYMAT is a prefix of a longer one, so one expansion sized for the
  largest need serves every transform of a proposal.

Splitting (key order)
---------------------
KEYMAT is cut into the keys of one SA direction in this order::

    KEYMAT = encryption key | integrity key | (unused rest)

* **Encryption key first, then integrity key** (racoon2 ``pfkey.c``,
  libreswan). The Linux XFRM API takes them as two separate keys
  (``XFRMA_ALG_CRYPT`` / ``XFRMA_ALG_AUTH_TRUNC``), so they are returned as two
  :class:`~isakmp.secret.Secret` values in :class:`KeyMaterial`.
* Salted / nonce-carrying ciphers take the cipher key **and then** the salt
  from KEYMAT as one contiguous encryption blob, exactly the layout the kernel
  expects for its single key buffer:

  - AES-GCM (RFC 4106 §8.1, ``rfc4106(gcm(aes))``): key | 4-octet salt;
  - AES-CCM (RFC 4309 §7.1, ``rfc4309(ccm(aes))``): key | 3-octet salt;
  - AES-CTR (RFC 3686 §5.1, ``rfc3686(ctr(aes))``): key | 4-octet nonce,
    followed by the integrity key of its separate authentication algorithm;
  - NULL_AUTH_AES_GMAC / AH AES-GMAC (RFC 4543, ``rfc4543(gcm(aes))``):
    key | 4-octet salt.

* Combined-mode (AEAD) ciphers take no integrity key: ``integrity`` is empty.
  ESP_NULL has an empty ``encryption``; AH has an empty ``encryption`` and only
  an integrity key.
* Each direction of an SA has its own KEYMAT (different SPI), hence its own
  :class:`KeyMaterial`.

The sizes come from :mod:`isakmp.algorithms` (``CipherSpec.key_bytes``,
``IntegritySpec.key_bytes``, both including salt).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from isakmp.secret import Secret

if TYPE_CHECKING:
    from isakmp.algorithms import CipherSpec, IntegritySpec

__all__ = [
    "MAX_KEYMAT_BYTES",
    "KeyMaterial",
    "Prf",
    "derive",
    "expand",
    "hmac_prf",
    "keymat_length",
    "seed",
    "split",
]

Prf = Callable[[bytes, bytes], bytes]
"""A pseudo-random function ``prf(key, data) -> bytes`` of fixed output size."""

MAX_KEYMAT_BYTES = 4096
"""Sanity bound on one expansion (the largest real need is < 100 octets)."""


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """The keys of one SA direction, as handed to the IPsec backend.

    ``encryption`` includes the salt/nonce for GCM/CCM/CTR/GMAC (key first,
    salt last); ``integrity`` is empty for AEAD ciphers, ``encryption`` empty
    for ESP_NULL and AH.
    """

    encryption: Secret
    integrity: Secret

    def __post_init__(self) -> None:
        if not isinstance(self.encryption, Secret):
            object.__setattr__(self, "encryption", Secret(self.encryption))
        if not isinstance(self.integrity, Secret):
            object.__setattr__(self, "integrity", Secret(self.integrity))


def hmac_prf(hash_name: str) -> Prf:
    """IKE-style prf: ``HMAC-<hash>(key, data)`` (``"sha1"``, ``"sha256"``, ...).

    Raises ``ValueError`` for a hash unknown to :mod:`hashlib`.
    """
    name = hash_name.lower().replace("-", "")
    try:
        hashlib.new(name)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unknown hash for HMAC prf: {hash_name!r}") from exc

    def prf(key: bytes, data: bytes) -> bytes:
        return hmac.digest(key, data, name)

    prf.__name__ = f"hmac_{name}"
    prf.__qualname__ = prf.__name__
    return prf


def _spi_bytes(spi: int | bytes) -> bytes:
    if isinstance(spi, bytes | bytearray | memoryview):
        return bytes(spi)
    if not 0 <= spi <= 0xFFFFFFFF:
        raise ValueError(f"SPI out of 32-bit range: {spi:#x}")
    return spi.to_bytes(4, "big")


def seed(
    protocol: int,
    spi: int | bytes,
    ni_b: bytes,
    nr_b: bytes = b"",
    shared_secret: bytes = b"",
) -> bytes:
    """``[g^xy |] protocol | SPI | Ni_b [| Nr_b]`` (the per-round suffix)."""
    if not 0 <= int(protocol) <= 0xFF:
        raise ValueError(f"protocol id out of range: {protocol}")
    if not ni_b:
        raise ValueError("Ni_b must not be empty")
    return b"".join(
        (bytes(shared_secret), bytes((int(protocol),)), _spi_bytes(spi), bytes(ni_b), bytes(nr_b))
    )


def expand(
    prf: Prf,
    skeyid_d: bytes,
    protocol: int,
    spi: int | bytes,
    ni_b: bytes,
    nr_b: bytes = b"",
    shared_secret: bytes = b"",
    *,
    length: int,
) -> Secret:
    """RFC 2409 §5.5 KEYMAT of ``length`` octets (see module docstring)."""
    if length < 0 or length > MAX_KEYMAT_BYTES:
        raise ValueError(f"KEYMAT length out of range: {length}")
    s = seed(protocol, spi, ni_b, nr_b, shared_secret)
    if length == 0:
        return Secret(b"")
    key = bytes(skeyid_d)
    blocks: list[bytes] = []
    have = 0
    previous = b""
    block_size = -1
    while have < length:
        previous = bytes(prf(key, previous + s))
        if block_size < 0:
            block_size = len(previous)
            if block_size == 0:
                raise ValueError("prf returned no output")
        elif len(previous) != block_size:
            raise ValueError("prf output size is not fixed")
        blocks.append(previous)
        have += block_size
    return Secret(b"".join(blocks)[:length])


def keymat_length(cipher: CipherSpec | None, integrity: IntegritySpec | None) -> int:
    """Octets of KEYMAT one SA direction needs (encryption incl. salt + integrity).

    Raises ``ValueError`` for combinations that carry no keys at all or that
    pair an AEAD cipher with a separate integrity algorithm.
    """
    if cipher is not None and cipher.aead and integrity is not None:
        raise ValueError(f"{cipher.keyword} is combined-mode and takes no integrity algorithm")
    if cipher is None and integrity is None:
        raise ValueError("neither cipher nor integrity algorithm given")
    return (cipher.key_bytes if cipher is not None else 0) + (
        integrity.key_bytes if integrity is not None else 0
    )


def split(keymat: bytes, cipher: CipherSpec | None, integrity: IntegritySpec | None) -> KeyMaterial:
    """Cut KEYMAT into (encryption key | integrity key); extra octets are ignored."""
    need = keymat_length(cipher, integrity)
    if len(keymat) < need:
        raise ValueError(f"KEYMAT too short: {len(keymat)} < {need} octets")
    e = cipher.key_bytes if cipher is not None else 0
    i = integrity.key_bytes if integrity is not None else 0
    raw = bytes(keymat)
    return KeyMaterial(Secret(raw[:e]), Secret(raw[e : e + i]))


def derive(
    prf: Prf,
    skeyid_d: bytes,
    protocol: int,
    spi: int | bytes,
    ni_b: bytes,
    nr_b: bytes = b"",
    shared_secret: bytes = b"",
    *,
    cipher: CipherSpec | None,
    integrity: IntegritySpec | None,
) -> KeyMaterial:
    """Expand exactly the KEYMAT one SA direction needs and split it."""
    need = keymat_length(cipher, integrity)
    km = expand(prf, skeyid_d, protocol, spi, ni_b, nr_b, shared_secret, length=need)
    return split(km, cipher, integrity)
