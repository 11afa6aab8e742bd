"""Phase-1 (ISAKMP SA) attributes and proposals (RFC 2409 §5 and Appendix A).

An ISAKMP SA is negotiated with an SA payload of DOI 1 whose proposal has protocol
PROTO_ISAKMP, no SPI, and transforms KEY_IKE carrying the Oakley attributes below. A
proposal of ours is written in swanctl's words (``aes256-sha256-modp2048``): one cipher,
one hash (also the HMAC prf), one DH group; authentication is always pre-shared key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum

from isakmp.attributes import Attribute
from isakmp.doi import IPSEC_DOI, IsakmpTransformId, ProtocolId
from isakmp.errors import AttributesNotSupported, BadProposalSyntax, NoProposalChosen
from isakmp.payloads import Proposal, SecurityAssociation, Transform

__all__ = [
    "AuthMethod",
    "EncryptionAlgorithm",
    "HashAlgorithm",
    "OakleyAttr",
    "Phase1Params",
    "build_phase1_offer",
    "parse_ike_proposal",
    "phase1_transform",
    "parse_phase1_transform",
    "select_phase1",
]


class OakleyAttr(IntEnum):
    """Phase-1 attribute classes (RFC 2409 Appendix A)."""

    ENCRYPTION_ALGORITHM = 1
    HASH_ALGORITHM = 2
    AUTHENTICATION_METHOD = 3
    GROUP_DESCRIPTION = 4
    GROUP_TYPE = 5
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    PRF = 13
    KEY_LENGTH = 14
    FIELD_SIZE = 15
    GROUP_ORDER = 16


class EncryptionAlgorithm(IntEnum):
    DES_CBC = 1
    TRIPLE_DES_CBC = 5
    AES_CBC = 7  # RFC 3602 §5


class HashAlgorithm(IntEnum):
    MD5 = 1
    SHA = 2
    SHA2_256 = 4  # RFC 4868 §3
    SHA2_384 = 5
    SHA2_512 = 6


class AuthMethod(IntEnum):
    PRE_SHARED_KEY = 1


_HASHES = {
    HashAlgorithm.SHA: hashlib.sha1,
    HashAlgorithm.SHA2_256: hashlib.sha256,
    HashAlgorithm.SHA2_384: hashlib.sha384,
    HashAlgorithm.SHA2_512: hashlib.sha512,
}
_HASH_WORDS = {"sha1": HashAlgorithm.SHA, "sha": HashAlgorithm.SHA,
               "sha256": HashAlgorithm.SHA2_256, "sha2_256": HashAlgorithm.SHA2_256,
               "sha384": HashAlgorithm.SHA2_384, "sha2_384": HashAlgorithm.SHA2_384,
               "sha512": HashAlgorithm.SHA2_512, "sha2_512": HashAlgorithm.SHA2_512}
_GROUP_WORDS = {"modp2048": 14, "ecp256": 19, "ecp384": 20}
_CIPHER_WORDS = {"aes128": 128, "aes256": 256, "aes192": 192}
SUPPORTED_GROUPS = frozenset(_GROUP_WORDS.values())
LIFE_SECONDS = 1
LIFE_KILOBYTES = 2
DEFAULT_IKE_LIFETIME = 10800  # seconds (strongSwan's default rekey time for IKE SAs)


@dataclass(frozen=True, slots=True)
class Phase1Params:
    """One phase-1 protection suite: AES-CBC key length (bits), hash, DH group, life."""

    key_length: int
    hash_alg: int
    group: int
    life_seconds: int | None = DEFAULT_IKE_LIFETIME
    encryption: int = EncryptionAlgorithm.AES_CBC
    auth: int = AuthMethod.PRE_SHARED_KEY

    @property
    def hash_function(self):
        return _HASHES[HashAlgorithm(self.hash_alg)]

    @property
    def key_bytes(self) -> int:
        return self.key_length // 8

    def suite(self) -> tuple:
        """What must match between an offer and a policy (the lifetime need not)."""
        return (self.encryption, self.key_length, self.hash_alg, self.group, self.auth)

    def keyword(self) -> str:
        h = {v: k for k, v in _HASH_WORDS.items() if "_" not in k and k != "sha"}
        g = {v: k for k, v in _GROUP_WORDS.items()}
        return f"aes{self.key_length}-{h[self.hash_alg]}-{g.get(self.group, self.group)}"


def parse_ike_proposal(text: str, *, life_seconds: int | None = DEFAULT_IKE_LIFETIME
                       ) -> Phase1Params:
    """A swanctl IKE proposal of one cipher, one hash and one group
    (``aes128-sha256-ecp256``); ValueError naming what is wrong."""
    words = text.strip().lower().split("-")
    if len(words) != 3:
        raise ValueError(f"IKE proposal {text!r}: expected cipher-hash-group")
    c, h, g = words
    if c not in _CIPHER_WORDS:
        raise ValueError(f"IKE proposal {text!r}: unsupported cipher {c!r} (aes128, aes256)")
    if h not in _HASH_WORDS:
        raise ValueError(f"IKE proposal {text!r}: unsupported hash {h!r}")
    if g not in _GROUP_WORDS:
        raise ValueError(f"IKE proposal {text!r}: unsupported DH group {g!r} "
                         "(modp2048, ecp256, ecp384)")
    return Phase1Params(_CIPHER_WORDS[c], int(_HASH_WORDS[h]), _GROUP_WORDS[g], life_seconds)


def phase1_transform(number: int, p: Phase1Params) -> Transform:
    attrs = [
        Attribute(OakleyAttr.ENCRYPTION_ALGORITHM, int(p.encryption)),
        Attribute(OakleyAttr.KEY_LENGTH, p.key_length),
        Attribute(OakleyAttr.HASH_ALGORITHM, int(p.hash_alg)),
        Attribute(OakleyAttr.AUTHENTICATION_METHOD, int(p.auth)),
        Attribute(OakleyAttr.GROUP_DESCRIPTION, int(p.group)),
    ]
    if p.life_seconds is not None:
        attrs.append(Attribute(OakleyAttr.LIFE_TYPE, LIFE_SECONDS))
        attrs.append(Attribute.number(OakleyAttr.LIFE_DURATION, p.life_seconds))
    return Transform(number, IsakmpTransformId.KEY_IKE, attrs)


def build_phase1_offer(suites: list[Phase1Params] | tuple[Phase1Params, ...]
                       ) -> SecurityAssociation:
    """The initiator's SA payload: one ISAKMP proposal, one transform per suite."""
    if not suites:
        raise ValueError("no IKE proposal")
    ts = [phase1_transform(i + 1, s) for i, s in enumerate(suites)]
    return SecurityAssociation([Proposal(1, ProtocolId.ISAKMP, b"", ts)], IPSEC_DOI, 1)


def parse_phase1_transform(t: Transform) -> Phase1Params:
    """The Oakley attributes of a KEY_IKE transform (AttributesNotSupported when one is
    unknown or unsupported, or a required one is missing)."""
    if int(t.transform_id) != IsakmpTransformId.KEY_IKE:
        raise AttributesNotSupported(f"phase-1 transform id {int(t.transform_id)}")
    vals: dict[int, int] = {}
    life_type = None
    life_seconds = None
    for a in t.attributes:
        try:
            v = a.int_value
        except Exception:
            raise AttributesNotSupported(f"phase-1 attribute {a.type} is not a number") from None
        if a.type == OakleyAttr.LIFE_TYPE:
            life_type = v
        elif a.type == OakleyAttr.LIFE_DURATION:
            if life_type == LIFE_SECONDS:
                life_seconds = v
            elif life_type != LIFE_KILOBYTES:
                raise AttributesNotSupported("life duration without a life type")
        elif a.type in (OakleyAttr.ENCRYPTION_ALGORITHM, OakleyAttr.HASH_ALGORITHM,
                        OakleyAttr.AUTHENTICATION_METHOD, OakleyAttr.GROUP_DESCRIPTION,
                        OakleyAttr.KEY_LENGTH):
            vals[int(a.type)] = v
        else:
            raise AttributesNotSupported(f"phase-1 attribute class {a.type}")
    enc = vals.get(OakleyAttr.ENCRYPTION_ALGORITHM)
    kl = vals.get(OakleyAttr.KEY_LENGTH)
    h = vals.get(OakleyAttr.HASH_ALGORITHM)
    auth = vals.get(OakleyAttr.AUTHENTICATION_METHOD)
    g = vals.get(OakleyAttr.GROUP_DESCRIPTION)
    if enc != EncryptionAlgorithm.AES_CBC or kl not in (128, 192, 256):
        raise AttributesNotSupported(f"phase-1 cipher {enc} key length {kl}")
    if h not in _HASHES:
        raise AttributesNotSupported(f"phase-1 hash {h}")
    if auth != AuthMethod.PRE_SHARED_KEY:
        raise AttributesNotSupported(f"phase-1 authentication method {auth}")
    if g not in SUPPORTED_GROUPS:
        raise AttributesNotSupported(f"phase-1 group {g}")
    return Phase1Params(kl, h, g, life_seconds)


def select_phase1(offer: SecurityAssociation, policy: tuple[Phase1Params, ...] | list
                  ) -> tuple[Transform, Phase1Params]:
    """Responder: the first offered transform one of our suites accepts (its lifetime
    capped by ours). Returns the transform as offered (the reply echoes it, RFC 2409 §5)
    and the effective parameters. NoProposalChosen otherwise."""
    if len(offer.proposals) != 1:
        raise BadProposalSyntax("a phase-1 SA payload has exactly one proposal")
    prop = offer.proposals[0]
    if prop.protocol_id != ProtocolId.ISAKMP:
        raise BadProposalSyntax(f"phase-1 proposal of protocol {prop.protocol_id}")
    wanted = {p.suite(): p for p in policy}
    for t in prop.transforms:
        try:
            params = parse_phase1_transform(t)
        except AttributesNotSupported:
            continue
        ours = wanted.get(params.suite())
        if ours is None:
            continue
        life = params.life_seconds
        if ours.life_seconds is not None and (life is None or life > ours.life_seconds):
            life = ours.life_seconds
        return t, Phase1Params(params.key_length, params.hash_alg, params.group, life)
    raise NoProposalChosen("no acceptable phase-1 transform")
