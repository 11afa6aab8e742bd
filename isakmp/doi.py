"""ISAKMP (RFC 2408), IPsec DOI (RFC 2407) and IKEv1 (RFC 2409) numbers.

Pure constants: IntEnums whose ``str()`` is the member name (readable logs),
plus a few numeric limits.  Values not listed in an enum still travel as plain
``int`` through the codecs; :func:`enum_name` renders either kind.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = [
    "IPSEC_DOI",
    "ISAKMP_DOI",
    "ISAKMP_MAJOR_VERSION",
    "ISAKMP_MINOR_VERSION",
    "ISAKMP_HEADER_LEN",
    "GENERIC_HEADER_LEN",
    "NONCE_MIN_LEN",
    "NONCE_MAX_LEN",
    "DEFAULT_LIFETIME_SECONDS",
    "FLAG_ENCRYPTION",
    "FLAG_COMMIT",
    "FLAG_AUTH_ONLY",
    "NamedIntEnum",
    "enum_name",
    "ProtocolId",
    "AhTransformId",
    "EspTransformId",
    "IpcompTransformId",
    "IsakmpTransformId",
    "IpsecAttr",
    "IPSEC_VARIABLE_ATTRS",
    "LifeType",
    "EncapsulationMode",
    "AuthAlgorithm",
    "GroupDescription",
    "EcnTunnel",
    "SigEncodingAlgorithm",
    "IdType",
    "NotifyType",
    "Situation",
    "PayloadType",
    "ExchangeType",
    "CertEncoding",
    "IkeAttr",
    "IKE_VARIABLE_ATTRS",
    "IkeEncryptionAlgorithm",
    "IkeHashAlgorithm",
    "IkeAuthMethod",
    "IkeGroupType",
    "IkeLifeType",
    "IkePrf",
]


class NamedIntEnum(IntEnum):
    """IntEnum whose ``str()``/``f"{x}"`` is the member name (for logs).

    Formatting with an explicit spec (``f"{x:d}"``, ``f"{x:02x}"``) still
    formats the integer.
    """

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        if spec:
            return int.__format__(int(self), spec)
        return self.name


def enum_name(enum_cls: type[IntEnum], value: int) -> str:
    """``NAME`` for a known value of *enum_cls*, ``UNKNOWN(<n>)`` otherwise."""
    try:
        return enum_cls(value).name
    except ValueError:
        return f"UNKNOWN({int(value)})"


# --- general constants --------------------------------------------------------

ISAKMP_DOI = 0  # generic ISAKMP DOI (phase 1 only)
IPSEC_DOI = 1  # RFC 2407
ISAKMP_MAJOR_VERSION = 1
ISAKMP_MINOR_VERSION = 0
ISAKMP_HEADER_LEN = 28  # RFC 2408 §3.1
GENERIC_HEADER_LEN = 4  # RFC 2408 §3.2
NONCE_MIN_LEN = 8  # RFC 2409 §5
NONCE_MAX_LEN = 256
DEFAULT_LIFETIME_SECONDS = 28800  # RFC 2407 §4.5

# ISAKMP header flags (RFC 2408 §3.1)
FLAG_ENCRYPTION = 0x01
FLAG_COMMIT = 0x02
FLAG_AUTH_ONLY = 0x04


# --- ISAKMP (RFC 2408) --------------------------------------------------------


class PayloadType(NamedIntEnum):
    """Next Payload / payload type numbers (RFC 2408 §3.1, RFC 3947)."""

    NONE = 0
    SA = 1
    P = 2
    T = 3
    KE = 4
    ID = 5
    CERT = 6
    CR = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    N = 11
    D = 12
    VID = 13
    NAT_D = 20  # RFC 3947
    NAT_OA = 21  # RFC 3947
    NAT_D_DRAFT = 130  # pre-RFC NAT-T drafts (private range)
    NAT_OA_DRAFT = 131


class ExchangeType(NamedIntEnum):
    """Exchange types (RFC 2408 §3.1, RFC 2409)."""

    NONE = 0
    BASE = 1
    IDENTITY_PROTECTION = 2  # IKE Main Mode
    AUTH_ONLY = 3
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    QUICK_MODE = 32
    NEW_GROUP_MODE = 33


class CertEncoding(NamedIntEnum):
    """Certificate encodings of CERT/CR payloads (RFC 2408 §3.9)."""

    NONE = 0
    PKCS7_WRAPPED_X509 = 1
    PGP = 2
    DNS_SIGNED_KEY = 3
    X509_SIGNATURE = 4
    X509_KEY_EXCHANGE = 5
    KERBEROS_TOKENS = 6
    CRL = 7
    ARL = 8
    SPKI = 9
    X509_ATTRIBUTE = 10


class NotifyType(NamedIntEnum):
    """Notify Message Types (RFC 2408 §3.14.1, RFC 2407 §4.6.3, RFC 3706).

    0-16383 are errors, 16384+ status types.
    """

    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    SITUATION_NOT_SUPPORTED = 3
    INVALID_COOKIE = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_MINOR_VERSION = 6
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    INVALID_TRANSFORM_ID = 12
    ATTRIBUTES_NOT_SUPPORTED = 13
    NO_PROPOSAL_CHOSEN = 14
    BAD_PROPOSAL_SYNTAX = 15
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    INVALID_CERT_ENCODING = 19
    INVALID_CERTIFICATE = 20
    CERT_TYPE_UNSUPPORTED = 21
    INVALID_CERT_AUTHORITY = 22
    INVALID_HASH_INFORMATION = 23
    AUTHENTICATION_FAILED = 24
    INVALID_SIGNATURE = 25
    ADDRESS_NOTIFICATION = 26
    NOTIFY_SA_LIFETIME = 27
    CERTIFICATE_UNAVAILABLE = 28
    UNSUPPORTED_EXCHANGE_TYPE = 29
    UNEQUAL_PAYLOAD_LENGTHS = 30
    CONNECTED = 16384
    # IPsec DOI status types (RFC 2407 §4.6.3)
    RESPONDER_LIFETIME = 24576
    REPLAY_STATUS = 24577
    INITIAL_CONTACT = 24578
    # Dead peer detection (RFC 3706, private-use range)
    R_U_THERE = 36136
    R_U_THERE_ACK = 36137

    @staticmethod
    def is_error(value: int) -> bool:
        """Types 0-16383 are errors, the rest status (RFC 2408 §3.14.1)."""
        return value < 16384


# --- IPsec DOI (RFC 2407) -----------------------------------------------------


class Situation(IntFlag):
    """IPsec DOI situation bitmap (RFC 2407 §4.2)."""

    SIT_IDENTITY_ONLY = 0x01
    SIT_SECRECY = 0x02
    SIT_INTEGRITY = 0x04

    def __str__(self) -> str:
        return self.name or f"0x{int(self):08x}"


class ProtocolId(NamedIntEnum):
    """Security Protocol Identifiers (RFC 2407 §4.4.1)."""

    ISAKMP = 1
    AH = 2
    ESP = 3
    IPCOMP = 4


class IsakmpTransformId(NamedIntEnum):
    """Transform ID for protocol ISAKMP (RFC 2407 §4.4.2)."""

    KEY_IKE = 1


class AhTransformId(NamedIntEnum):
    """AH Transform IDs (RFC 2407 §4.4.3 and IANA additions)."""

    AH_MD5 = 2
    AH_SHA = 3
    AH_DES = 4
    AH_SHA2_256 = 5
    AH_SHA2_384 = 6
    AH_SHA2_512 = 7
    AH_RIPEMD = 8
    AH_AES_XCBC_MAC = 9
    AH_RSA = 10
    AH_AES_128_GMAC = 11
    AH_AES_192_GMAC = 12
    AH_AES_256_GMAC = 13


class EspTransformId(NamedIntEnum):
    """ESP Transform IDs (RFC 2407 §4.4.4 and IANA additions)."""

    ESP_DES_IV64 = 1
    ESP_DES = 2
    ESP_3DES = 3
    ESP_RC5 = 4
    ESP_IDEA = 5
    ESP_CAST = 6
    ESP_BLOWFISH = 7
    ESP_3IDEA = 8
    ESP_DES_IV32 = 9
    ESP_RC4 = 10
    ESP_NULL = 11
    ESP_AES_CBC = 12
    ESP_AES_CTR = 13
    ESP_AES_CCM_8 = 14
    ESP_AES_CCM_12 = 15
    ESP_AES_CCM_16 = 16
    ESP_AES_GCM_8 = 18
    ESP_AES_GCM_12 = 19
    ESP_AES_GCM_16 = 20
    ESP_SEED_CBC = 21
    ESP_CAMELLIA = 22
    ESP_NULL_AUTH_AES_GMAC = 23


class IpcompTransformId(NamedIntEnum):
    """IPCOMP Transform IDs (RFC 2407 §4.4.5, RFC 3051)."""

    IPCOMP_OUI = 1
    IPCOMP_DEFLATE = 2
    IPCOMP_LZS = 3
    IPCOMP_LZJH = 4


class IpsecAttr(NamedIntEnum):
    """IPsec SA attribute classes (RFC 2407 §4.5 and IANA additions)."""

    SA_LIFE_TYPE = 1
    SA_LIFE_DURATION = 2
    GROUP_DESCRIPTION = 3
    ENCAPSULATION_MODE = 4
    AUTH_ALGORITHM = 5
    KEY_LENGTH = 6
    KEY_ROUNDS = 7
    COMPRESS_DICT_SIZE = 8
    COMPRESS_PRIVATE_ALG = 9
    ECN_TUNNEL = 10
    EXTENDED_SEQUENCE_NUMBER = 11
    AUTH_KEY_LENGTH = 12
    SIG_ENCODING_ALGORITHM = 13


#: IPsec attribute classes of kind V (variable): may be TLV on the wire.
IPSEC_VARIABLE_ATTRS = frozenset(
    {IpsecAttr.SA_LIFE_DURATION, IpsecAttr.COMPRESS_PRIVATE_ALG, IpsecAttr.AUTH_KEY_LENGTH}
)


class LifeType(NamedIntEnum):
    SECONDS = 1
    KILOBYTES = 2


class EncapsulationMode(NamedIntEnum):
    TUNNEL = 1
    TRANSPORT = 2
    UDP_ENCAPSULATED_TUNNEL = 3  # RFC 3947
    UDP_ENCAPSULATED_TRANSPORT = 4
    UDP_ENCAPSULATED_TUNNEL_DRAFT = 61443  # pre-RFC NAT-T drafts
    UDP_ENCAPSULATED_TRANSPORT_DRAFT = 61444


class AuthAlgorithm(NamedIntEnum):
    HMAC_MD5 = 1
    HMAC_SHA = 2
    DES_MAC = 3
    KPDK = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7
    HMAC_RIPEMD = 8
    AES_XCBC_MAC = 9
    SIG_RSA = 10
    AES_128_GMAC = 11
    AES_192_GMAC = 12
    AES_256_GMAC = 13


class GroupDescription(NamedIntEnum):
    """IKE group numbers (RFC 2409 §6, RFC 3526, RFC 5903, RFC 5114)."""

    MODP_768 = 1
    MODP_1024 = 2
    EC2N_155 = 3
    EC2N_185 = 4
    MODP_1536 = 5
    MODP_2048 = 14
    MODP_3072 = 15
    MODP_4096 = 16
    MODP_6144 = 17
    MODP_8192 = 18
    ECP_256 = 19
    ECP_384 = 20
    ECP_521 = 21
    MODP_1024_S160 = 22
    MODP_2048_S224 = 23
    MODP_2048_S256 = 24
    ECP_192 = 25
    ECP_224 = 26


class EcnTunnel(NamedIntEnum):
    ALLOWED = 1
    FORBIDDEN = 2


class SigEncodingAlgorithm(NamedIntEnum):
    RSASSA_PKCS1_V1_5 = 1
    RSASSA_PSS = 2


class IdType(NamedIntEnum):
    """IPsec DOI identification types (RFC 2407 §4.6.2.1, RFC 3554)."""

    IPV4_ADDR = 1
    FQDN = 2
    USER_FQDN = 3
    IPV4_ADDR_SUBNET = 4
    IPV6_ADDR = 5
    IPV6_ADDR_SUBNET = 6
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11
    LIST = 12


# --- IKEv1 phase 1 attributes (RFC 2409 Appendix A) ---------------------------


class IkeAttr(NamedIntEnum):
    ENCRYPTION_ALGORITHM = 1
    HASH_ALGORITHM = 2
    AUTHENTICATION_METHOD = 3
    GROUP_DESCRIPTION = 4
    GROUP_TYPE = 5
    GROUP_PRIME = 6
    GROUP_GENERATOR_ONE = 7
    GROUP_GENERATOR_TWO = 8
    GROUP_CURVE_A = 9
    GROUP_CURVE_B = 10
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    PRF = 13
    KEY_LENGTH = 14
    FIELD_SIZE = 15
    GROUP_ORDER = 16


#: IKE attribute classes of kind V (RFC 2409 Appendix A).
IKE_VARIABLE_ATTRS = frozenset(
    {
        IkeAttr.GROUP_PRIME,
        IkeAttr.GROUP_GENERATOR_ONE,
        IkeAttr.GROUP_GENERATOR_TWO,
        IkeAttr.GROUP_CURVE_A,
        IkeAttr.GROUP_CURVE_B,
        IkeAttr.LIFE_DURATION,
        IkeAttr.GROUP_ORDER,
    }
)


class IkeEncryptionAlgorithm(NamedIntEnum):
    DES_CBC = 1
    IDEA_CBC = 2
    BLOWFISH_CBC = 3
    RC5_R16_B64_CBC = 4
    TRIPLEDES_CBC = 5
    CAST_CBC = 6
    AES_CBC = 7  # RFC 3602
    CAMELLIA_CBC = 8  # RFC 4312


class IkeHashAlgorithm(NamedIntEnum):
    MD5 = 1
    SHA = 2
    TIGER = 3
    SHA2_256 = 4  # RFC 4868
    SHA2_384 = 5
    SHA2_512 = 6


class IkeAuthMethod(NamedIntEnum):
    PRE_SHARED_KEY = 1
    DSS_SIGNATURES = 2
    RSA_SIGNATURES = 3
    RSA_ENCRYPTION = 4
    REVISED_RSA_ENCRYPTION = 5


class IkeGroupType(NamedIntEnum):
    MODP = 1
    ECP = 2
    EC2N = 3


class IkeLifeType(NamedIntEnum):
    SECONDS = 1
    KILOBYTES = 2


class IkePrf(NamedIntEnum):
    """RFC 2409 defines no PRF values; kept for completeness of the class."""
