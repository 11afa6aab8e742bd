"""IKEv1 phase-1 keys, IVs, CBC and the authentication hashes (RFC 2409 §5, App. B).

With pre-shared keys (§5.4), ``prf`` being the HMAC of the negotiated hash::

    SKEYID   = prf(pre-shared-key, Ni_b | Nr_b)
    SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0)
    SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R | 1)
    SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2)
    HASH_I   = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)
    HASH_R   = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b)

``SAi_b`` is the body of the initiator's SA payload (without its generic header), ``IDii_b``
/ ``IDir_b`` the bodies of the ID payloads, ``g^x`` the KE payload data. The encryption
key is the first octets of SKEYID_e, or, when SKEYID_e is too short, of
``Ka = K1 | K2 | ...`` with ``K1 = prf(SKEYID_e, 0)``, ``Kn = prf(SKEYID_e, Kn-1)``
(Appendix B; the ``0`` is one zero octet).

IVs (§5, App. B): phase 1 starts with ``hash(g^xi | g^xr)`` (the plain hash, truncated to
the cipher block); every later message of phase 1 uses the last ciphertext block of the
previous one. Each Quick Mode or Informational exchange starts with
``hash(last phase-1 CBC block | M-ID)`` and chains within its own exchange.

Quick Mode (§5.5) and Informational (§5.7) hashes, ``|`` the payloads in wire form::

    HASH(1) = prf(SKEYID_a, M-ID | SA | Ni [| KE] [| IDci | IDcr])   (all after HASH)
    HASH(2) = prf(SKEYID_a, M-ID | Ni_b | SA | Nr [| KE] [| IDci | IDcr])
    HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)
    HASH(1) of Informational = prf(SKEYID_a, M-ID | N/D)
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from isakmp.errors import IsakmpError, PayloadMalformed
from isakmp.secret import Secret

from .phase1 import Phase1Params

__all__ = [
    "BLOCK",
    "Phase1Keys",
    "cbc_decrypt",
    "cbc_encrypt",
    "decrypt_chain",
    "derive_phase1",
    "expand_key",
    "hash_i",
    "hash_r",
    "informational_hash",
    "phase1_iv",
    "phase2_iv",
    "prf",
    "qm_hash1",
    "qm_hash2",
    "qm_hash3",
    "skeyid_psk",
]

BLOCK = 16  # AES block size
MAX_PADDING = 255  # the most padding a sender may add after the payload chain


def prf(params: Phase1Params, key: bytes, data: bytes) -> bytes:
    return hmac.new(bytes(key), data, params.hash_function).digest()


def skeyid_psk(params: Phase1Params, psk: bytes, ni_b: bytes, nr_b: bytes) -> bytes:
    return prf(params, psk, ni_b + nr_b)


def expand_key(params: Phase1Params, skeyid_e: bytes, length: int) -> bytes:
    """The cipher key from SKEYID_e (Appendix B)."""
    if len(skeyid_e) >= length:
        return bytes(skeyid_e[:length])
    blocks = []
    k = b"\0"
    have = 0
    while have < length:
        k = prf(params, skeyid_e, k)
        blocks.append(k)
        have += len(k)
    return b"".join(blocks)[:length]


@dataclass(frozen=True, slots=True)
class Phase1Keys:
    """The keys of an ISAKMP SA (their ``repr`` hides them)."""

    skeyid: Secret
    skeyid_d: Secret
    skeyid_a: Secret
    skeyid_e: Secret
    enc_key: Secret


def derive_phase1(params: Phase1Params, psk: bytes, ni_b: bytes, nr_b: bytes,
                  g_xy: bytes, cky_i: bytes, cky_r: bytes) -> Phase1Keys:
    skeyid = skeyid_psk(params, psk, ni_b, nr_b)
    tail = g_xy + cky_i + cky_r
    d = prf(params, skeyid, tail + b"\0")
    a = prf(params, skeyid, d + tail + b"\1")
    e = prf(params, skeyid, a + tail + b"\2")
    ka = expand_key(params, e, params.key_bytes)
    return Phase1Keys(Secret(skeyid), Secret(d), Secret(a), Secret(e), Secret(ka))


def hash_i(params: Phase1Params, skeyid: bytes, g_xi: bytes, g_xr: bytes, cky_i: bytes,
           cky_r: bytes, sai_b: bytes, idii_b: bytes) -> bytes:
    return prf(params, skeyid, g_xi + g_xr + cky_i + cky_r + sai_b + idii_b)


def hash_r(params: Phase1Params, skeyid: bytes, g_xi: bytes, g_xr: bytes, cky_i: bytes,
           cky_r: bytes, sai_b: bytes, idir_b: bytes) -> bytes:
    return prf(params, skeyid, g_xr + g_xi + cky_r + cky_i + sai_b + idir_b)


def phase1_iv(params: Phase1Params, g_xi: bytes, g_xr: bytes) -> bytes:
    return params.hash_function(g_xi + g_xr).digest()[:BLOCK]


def phase2_iv(params: Phase1Params, last_block: bytes, message_id: int) -> bytes:
    return params.hash_function(last_block + message_id.to_bytes(4, "big")).digest()[:BLOCK]


def qm_hash1(params: Phase1Params, skeyid_a: bytes, message_id: int, rest: bytes) -> bytes:
    """``rest``: every payload after HASH(1), with its generic header."""
    return prf(params, skeyid_a, message_id.to_bytes(4, "big") + rest)


def qm_hash2(params: Phase1Params, skeyid_a: bytes, message_id: int, ni_b: bytes,
             rest: bytes) -> bytes:
    return prf(params, skeyid_a, message_id.to_bytes(4, "big") + ni_b + rest)


def qm_hash3(params: Phase1Params, skeyid_a: bytes, message_id: int, ni_b: bytes,
             nr_b: bytes) -> bytes:
    return prf(params, skeyid_a, b"\0" + message_id.to_bytes(4, "big") + ni_b + nr_b)


def informational_hash(params: Phase1Params, skeyid_a: bytes, message_id: int,
                       rest: bytes) -> bytes:
    return prf(params, skeyid_a, message_id.to_bytes(4, "big") + rest)


def cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-CBC of the payload chain, zero-padded to the block (RFC 2409 §5.3: the
    receiver finds the end of the chain from the payload headers)."""
    data = plaintext + b"\0" * (-len(plaintext) % BLOCK)
    enc = Cipher(algorithms.AES(bytes(key)), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    if not ciphertext or len(ciphertext) % BLOCK:
        raise PayloadMalformed(f"encrypted body of {len(ciphertext)} octets is not a "
                               "multiple of the block size")
    dec = Cipher(algorithms.AES(bytes(key)), modes.CBC(iv)).decryptor()
    return dec.update(ciphertext) + dec.finalize()


def decrypt_chain(key: bytes, iv: bytes, ciphertext: bytes, first: int) -> bytes:
    """The payload chain of an encrypted message body (``first``: the header's next
    payload), its CBC padding cut off; IsakmpError when the chain does not fit the body."""
    data = cbc_decrypt(key, iv, ciphertext)
    off, t, n = 0, first, len(data)
    while t:
        if n - off < 4:
            raise IsakmpError("truncated payload header in the decrypted body")
        t, _res, plen = struct.unpack_from(">BBH", data, off)
        if plen < 4:
            raise IsakmpError("payload length below 4 in the decrypted body")
        off += plen
    if off > n or n - off > MAX_PADDING + BLOCK:
        raise IsakmpError("decrypted payload chain does not fit its message")
    return data[:off]
