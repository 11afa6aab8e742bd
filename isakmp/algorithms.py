"""Catalogue of the IPsec algorithms the framework can key.

Maps negotiated IPsec DOI numbers (ESP Transform ID + Key Length attribute,
Authentication Algorithm attribute, AH Transform ID) to what KEYMAT splitting
(:mod:`isakmp.keymat`) and SA backends need:

* ``key_bytes`` -- octets taken from KEYMAT, **including** the salt/nonce of
  AES-GCM (4), AES-CCM (3), AES-CTR (4) and AES-GMAC (4), which follows the
  cipher key in the same blob (RFC 4106 §8.1, RFC 4309 §7.1, RFC 3686 §5.1,
  RFC 4543 §3.2);
* ``xfrm_name`` -- the Linux XFRM (crypto API) algorithm name, and
  ``xfrm_kind`` -- which netlink attribute carries it (``"crypt"``,
  ``"aead"`` or ``"auth"``);
* ``icv_bits`` -- ICV length: truncation of HMACs (96/128/192/256) or the
  AEAD tag (64/96/128);
* ``keyword`` -- strongSwan-style display name (``aes128gcm16``,
  ``aes256``, ``sha256``); :func:`esp_keyword` joins cipher and integrity
  (``aes256-sha256``).

Lookups raise :class:`UnsupportedAlgorithm` (carrying the ISAKMP notify type
to answer with) for unknown or unsupported combinations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from isakmp.doi import AhTransformId, AuthAlgorithm, EspTransformId, NotifyType
from isakmp.errors import AttributesNotSupported

__all__ = [
    "CipherSpec",
    "IntegritySpec",
    "UnsupportedAlgorithm",
    "ah_integrity_spec",
    "all_cipher_specs",
    "all_integrity_specs",
    "cipher_spec",
    "esp_keyword",
    "integrity_spec",
]


class UnsupportedAlgorithm(AttributesNotSupported, ValueError):
    """An algorithm / key length combination the catalogue does not know.

    ``notify`` is the ISAKMP Notify Message Type a responder would answer with:
    ATTRIBUTES-NOT-SUPPORTED (default: bad key length or authentication
    algorithm) or INVALID-TRANSFORM-ID (unknown transform).
    """


@dataclass(frozen=True, slots=True)
class CipherSpec:
    """An ESP cipher at one key length."""

    transform_id: EspTransformId
    key_bits: int  # cipher key length without salt (fixed 192 for 3DES, 0 for NULL)
    salt_bytes: int  # salt / nonce appended to the key in KEYMAT and in the kernel blob
    xfrm_name: str
    keyword: str
    aead: bool = False  # combined mode: no separate integrity algorithm
    icv_bits: int = 0  # AEAD tag length; 0 for plain ciphers
    variable_key_length: bool = True  # Key Length attribute required (RFC 2407 §4.5)

    @property
    def key_bytes(self) -> int:
        """Octets taken from KEYMAT: key then salt."""
        return self.key_bits // 8 + self.salt_bytes

    @property
    def xfrm_kind(self) -> str:
        return "aead" if self.aead else "crypt"


@dataclass(frozen=True, slots=True)
class IntegritySpec:
    """An authentication algorithm (ESP Authentication Algorithm or AH transform)."""

    auth_algorithm: AuthAlgorithm
    ah_transform_id: AhTransformId
    key_bytes: int  # octets from KEYMAT, incl. salt for GMAC
    salt_bytes: int
    icv_bits: int  # truncation length
    xfrm_name: str
    keyword: str

    @property
    def xfrm_kind(self) -> str:
        # AES-GMAC is an AEAD transform in the Linux crypto API.
        return "aead" if self.salt_bytes else "auth"


_AES_BITS = (128, 192, 256)


def _build_ciphers() -> dict[tuple[int, int], CipherSpec]:
    E = EspTransformId
    specs: list[CipherSpec] = [
        CipherSpec(E.ESP_3DES, 192, 0, "cbc(des3_ede)", "3des", variable_key_length=False),
        CipherSpec(E.ESP_NULL, 0, 0, "ecb(cipher_null)", "null", variable_key_length=False),
    ]
    for bits in _AES_BITS:
        specs += [
            CipherSpec(E.ESP_AES_CBC, bits, 0, "cbc(aes)", f"aes{bits}"),
            CipherSpec(E.ESP_AES_CTR, bits, 4, "rfc3686(ctr(aes))", f"aes{bits}ctr"),
            CipherSpec(E.ESP_CAMELLIA, bits, 0, "cbc(camellia)", f"camellia{bits}"),
            CipherSpec(
                E.ESP_NULL_AUTH_AES_GMAC,
                bits,
                4,
                "rfc4543(gcm(aes))",
                f"aes{bits}gmac",
                aead=True,
                icv_bits=128,
            ),
        ]
        for tid, icv in ((E.ESP_AES_CCM_8, 8), (E.ESP_AES_CCM_12, 12), (E.ESP_AES_CCM_16, 16)):
            specs.append(
                CipherSpec(
                    tid,
                    bits,
                    3,
                    "rfc4309(ccm(aes))",
                    f"aes{bits}ccm{icv}",
                    aead=True,
                    icv_bits=icv * 8,
                )
            )
        for tid, icv in ((E.ESP_AES_GCM_8, 8), (E.ESP_AES_GCM_12, 12), (E.ESP_AES_GCM_16, 16)):
            specs.append(
                CipherSpec(
                    tid,
                    bits,
                    4,
                    "rfc4106(gcm(aes))",
                    f"aes{bits}gcm{icv}",
                    aead=True,
                    icv_bits=icv * 8,
                )
            )
    return {(int(s.transform_id), s.key_bits): s for s in specs}


def _build_integrity() -> dict[int, IntegritySpec]:
    A = AuthAlgorithm
    specs = [
        IntegritySpec(A.HMAC_MD5, AhTransformId.AH_MD5, 16, 0, 96, "hmac(md5)", "md5"),
        IntegritySpec(A.HMAC_SHA, AhTransformId.AH_SHA, 20, 0, 96, "hmac(sha1)", "sha1"),
        IntegritySpec(
            A.HMAC_SHA2_256, AhTransformId.AH_SHA2_256, 32, 0, 128, "hmac(sha256)", "sha256"
        ),
        IntegritySpec(
            A.HMAC_SHA2_384, AhTransformId.AH_SHA2_384, 48, 0, 192, "hmac(sha384)", "sha384"
        ),
        IntegritySpec(
            A.HMAC_SHA2_512, AhTransformId.AH_SHA2_512, 64, 0, 256, "hmac(sha512)", "sha512"
        ),
        IntegritySpec(
            A.AES_XCBC_MAC, AhTransformId.AH_AES_XCBC_MAC, 16, 0, 96, "xcbc(aes)", "aesxcbc"
        ),
        IntegritySpec(
            A.AES_128_GMAC,
            AhTransformId.AH_AES_128_GMAC,
            20,
            4,
            128,
            "rfc4543(gcm(aes))",
            "aes128gmac",
        ),
        IntegritySpec(
            A.AES_192_GMAC,
            AhTransformId.AH_AES_192_GMAC,
            28,
            4,
            128,
            "rfc4543(gcm(aes))",
            "aes192gmac",
        ),
        IntegritySpec(
            A.AES_256_GMAC,
            AhTransformId.AH_AES_256_GMAC,
            36,
            4,
            128,
            "rfc4543(gcm(aes))",
            "aes256gmac",
        ),
    ]
    return {int(s.auth_algorithm): s for s in specs}


# Read-only lookup tables (built once at import, never mutated).
_CIPHERS: Mapping[tuple[int, int], CipherSpec] = MappingProxyType(_build_ciphers())
_INTEGRITY: Mapping[int, IntegritySpec] = MappingProxyType(_build_integrity())
_INTEGRITY_BY_AH: Mapping[int, IntegritySpec] = MappingProxyType(
    {int(s.ah_transform_id): s for s in _INTEGRITY.values()}
)
_VARIABLE = frozenset(tid for (tid, _), s in _CIPHERS.items() if s.variable_key_length)
_FIXED: Mapping[int, CipherSpec] = MappingProxyType(
    {tid: s for (tid, _), s in _CIPHERS.items() if not s.variable_key_length}
)


def _name(enum_cls: type, value: int) -> str:
    try:
        return enum_cls(value).name
    except ValueError:
        return f"UNKNOWN({int(value)})"


def cipher_spec(transform_id: int, key_length_bits: int | None = None) -> CipherSpec:
    """The cipher for an ESP Transform ID and its Key Length attribute (bits).

    Variable-length ciphers require ``key_length_bits``; fixed-length ones
    (3DES, NULL) take ``None`` (or their own fixed length, tolerated).
    """
    tid = int(transform_id)
    if tid in _FIXED:
        spec = _FIXED[tid]
        if key_length_bits is None or int(key_length_bits) == spec.key_bits:
            return spec
        raise UnsupportedAlgorithm(
            f"{_name(EspTransformId, tid)} has a fixed key length; got {key_length_bits} bits"
        )
    if tid not in _VARIABLE:
        raise UnsupportedAlgorithm(
            f"unsupported ESP transform {_name(EspTransformId, tid)}",
            notify=NotifyType.INVALID_TRANSFORM_ID,
        )
    if key_length_bits is None:
        raise UnsupportedAlgorithm(f"{_name(EspTransformId, tid)} needs a Key Length attribute")
    spec = _CIPHERS.get((tid, int(key_length_bits)))
    if spec is None:
        raise UnsupportedAlgorithm(
            f"unsupported key length {key_length_bits} for {_name(EspTransformId, tid)}"
        )
    return spec


def integrity_spec(auth_algorithm: int) -> IntegritySpec:
    """The integrity algorithm for an Authentication Algorithm attribute value."""
    spec = _INTEGRITY.get(int(auth_algorithm))
    if spec is None:
        raise UnsupportedAlgorithm(
            f"unsupported authentication algorithm {_name(AuthAlgorithm, auth_algorithm)}"
        )
    return spec


def ah_integrity_spec(transform_id: int, auth_algorithm: int | None = None) -> IntegritySpec:
    """The integrity algorithm of an AH transform.

    RFC 2407 §4.4.3 requires the Authentication Algorithm attribute to match
    the AH Transform ID; ``None`` (attribute absent) is tolerated.
    """
    spec = _INTEGRITY_BY_AH.get(int(transform_id))
    if spec is None:
        raise UnsupportedAlgorithm(
            f"unsupported AH transform {_name(AhTransformId, transform_id)}",
            notify=NotifyType.INVALID_TRANSFORM_ID,
        )
    if auth_algorithm is not None and int(auth_algorithm) != int(spec.auth_algorithm):
        raise UnsupportedAlgorithm(
            f"AH transform {_name(AhTransformId, transform_id)} does not match "
            f"authentication algorithm {_name(AuthAlgorithm, auth_algorithm)}"
        )
    return spec


def esp_keyword(cipher: CipherSpec | None, integrity: IntegritySpec | None) -> str:
    """strongSwan-style name of an ESP/AH transform: ``aes256-sha256``, ``aes128gcm16``."""
    parts = [s.keyword for s in (cipher, integrity) if s is not None]
    return "-".join(parts) if parts else "none"


def all_cipher_specs() -> tuple[CipherSpec, ...]:
    return tuple(_CIPHERS.values())


def all_integrity_specs() -> tuple[IntegritySpec, ...]:
    return tuple(_INTEGRITY.values())
