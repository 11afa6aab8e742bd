"""Proposal policy, offers and selection (RFC 2408 §4.2, RFC 2407 §4.5, RFC 4430 §3.2).

Model
-----
* :class:`TransformSpec` - one acceptable algorithm combination of a protocol
  (transform id, cipher key length in bits, integrity algorithm).
* :class:`ProtocolPolicy` - a protocol (AH/ESP/IPCOMP) and its acceptable
  transforms in preference order (the transforms of one Proposal payload, OR).
* :class:`SuitePolicy` - one protection suite: one or more protocols that are
  applied together (AND bundle, e.g. AH+ESP), encapsulation mode, maximum
  lifetimes (seconds / kilobytes) and an optional PFS group.
* :class:`Policy` - suites in preference order (OR).

Offer (initiator): :func:`build_offer` turns a policy into an SA payload:
suite *i* becomes proposal number *i+1* (one Proposal per protocol, all with
that number), SPIs supplied by the caller.

Selection (responder): :func:`select` walks the offer in the initiator's
order and returns a :class:`Selection` with exactly one transform per
protocol.  What the responder may do with the SA Life Duration depends on the key
exchange (``isakmp.plugin.PluginCapabilities.responder_may_lower_lifetime``):

* lowering (KINK, RFC 4430 §3.2): the answer carries the offered transform with its
  durations lowered to the local maximum;
* echo (IKEv1, RFC 2409 §5.5: the responder must not change attributes): the answer
  carries the offered transform unchanged; the SA still lives no longer than the local
  maximum, and the shorter lifetime is announced with RESPONDER-LIFETIME.

Either way the effective lifetime is the shorter one, and a shorter lifetime that the
answer does not carry (echo, or no attribute to lower) is reported
(``Selection.lowered``, ``Selection.responder_lifetime``) so the caller sends
RESPONDER-LIFETIME (RFC 2407 §4.6.3.1, :meth:`Selection.responder_lifetime_notifications`).

Initiator check: :func:`validate_answer` verifies that the responder's SA is
a subset of the offer (one proposal group, one transform per proposal, same
attributes, lifetimes not raised) and :func:`is_optimistic` tells whether the
optimistic proposal (first transform of each protocol of the first proposal
number) was taken.

Keywords: :func:`parse_proposal` / :func:`parse_proposals` understand
strongSwan-style ESP/AH proposal strings such as ``aes128gcm16``,
``aes256-sha256-modp2048``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .attributes import Attribute, encode_attributes
from .doi import (
    DEFAULT_LIFETIME_SECONDS,
    AhTransformId,
    AuthAlgorithm,
    EncapsulationMode,
    EspTransformId,
    GroupDescription,
    IpsecAttr,
    LifeType,
    NotifyType,
    ProtocolId,
)
from .errors import AttributesNotSupported, BadProposalSyntax, NoProposalChosen
from .payloads import Notification, Proposal, SecurityAssociation, Transform
from .plugin import PluginCapabilities

__all__ = [
    "TransformSpec",
    "ProtocolPolicy",
    "SuitePolicy",
    "Policy",
    "TransformParams",
    "ChosenTransform",
    "Selection",
    "parse_transform",
    "build_offer",
    "select",
    "validate_answer",
    "is_optimistic",
    "optimistic_proposals",
    "parse_proposal",
    "parse_proposals",
    "transform_keyword",
    "describe_offer",
    "describe_policy",
    "explain_no_choice",
]


# --- policy model ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransformSpec:
    """An acceptable transform: id, key length (bits, None = attribute absent)
    and Authentication Algorithm (None = attribute absent)."""

    transform_id: int
    key_length: int | None = None
    auth: int | None = None


@dataclass(frozen=True, slots=True)
class ProtocolPolicy:
    protocol: int
    transforms: tuple[TransformSpec, ...]

    def __post_init__(self) -> None:
        if not self.transforms:
            raise ValueError("a protocol policy needs at least one transform")


@dataclass(frozen=True, slots=True)
class SuitePolicy:
    """One protection suite (AND of its protocols).

    ``lifetime_seconds`` / ``lifetime_kilobytes``: what we offer, and the
    maximum we accept as responder (None = no limit of that kind).
    ``pfs_group``: Group Description required in every transform (None = no
    PFS; offers naming a group are then refused).
    """

    protocols: tuple[ProtocolPolicy, ...]
    mode: int = EncapsulationMode.TRANSPORT
    lifetime_seconds: int | None = DEFAULT_LIFETIME_SECONDS
    lifetime_kilobytes: int | None = None
    pfs_group: int | None = None

    def __post_init__(self) -> None:
        if not self.protocols:
            raise ValueError("a suite needs at least one protocol")
        protos = [p.protocol for p in self.protocols]
        if len(set(protos)) != len(protos):
            raise ValueError("a protocol may appear only once in a suite")


@dataclass(frozen=True, slots=True)
class Policy:
    suites: tuple[SuitePolicy, ...]

    def __post_init__(self) -> None:
        if not self.suites:
            raise ValueError("a policy needs at least one suite")


# --- transform attribute interpretation --------------------------------------


@dataclass(frozen=True, slots=True)
class TransformParams:
    """The IPsec DOI meaning of a Transform's attributes (RFC 2407 §4.5)."""

    transform_id: int
    key_length: int | None = None
    auth: int | None = None
    mode: int | None = None
    group: int | None = None
    life_seconds: int | None = None
    life_kilobytes: int | None = None
    other: tuple[Attribute, ...] = ()

    @property
    def has_lifetime(self) -> bool:
        return self.life_seconds is not None or self.life_kilobytes is not None

    def effective_seconds(self) -> int | None:
        """Seconds lifetime with the RFC 2407 default (28800 s when no
        lifetime at all is given); None = unlimited."""
        if not self.has_lifetime:
            return DEFAULT_LIFETIME_SECONDS
        return self.life_seconds

    def algorithms(self) -> tuple:
        return (self.transform_id, self.key_length, self.auth, self.mode, self.group, self.other)


_BASIC_ONLY = frozenset(
    {
        IpsecAttr.SA_LIFE_TYPE,
        IpsecAttr.GROUP_DESCRIPTION,
        IpsecAttr.ENCAPSULATION_MODE,
        IpsecAttr.AUTH_ALGORITHM,
        IpsecAttr.KEY_LENGTH,
    }
)


_A_LIFE_TYPE = int(IpsecAttr.SA_LIFE_TYPE)
_A_LIFE_DURATION = int(IpsecAttr.SA_LIFE_DURATION)
_A_KEY_LENGTH = int(IpsecAttr.KEY_LENGTH)
_A_AUTH = int(IpsecAttr.AUTH_ALGORITHM)
_A_MODE = int(IpsecAttr.ENCAPSULATION_MODE)
_A_GROUP = int(IpsecAttr.GROUP_DESCRIPTION)
_L_SECONDS = int(LifeType.SECONDS)
_L_KILOBYTES = int(LifeType.KILOBYTES)


def parse_transform(transform: Transform) -> TransformParams:
    """Interpret a transform's attributes; ATTRIBUTES-NOT-SUPPORTED when they
    are contradictory or malformed (RFC 2407 §4.5.2/§4.5.3)."""
    key_length = auth = mode = group = secs = kbs = None
    other: list[Attribute] = []
    life_type = None
    seen: dict[int, int] = {}
    for a in transform.attributes:
        t = a.type
        v = a.value
        if not isinstance(v, int):  # TLV form (Attribute.is_tv / int_value inlined)
            if t in _BASIC_ONLY:
                raise AttributesNotSupported(f"basic attribute {t} sent as TLV")
            v = int.from_bytes(v, "big")
        if t == _A_LIFE_TYPE:
            if v != _L_SECONDS and v != _L_KILOBYTES:
                raise AttributesNotSupported(f"SA Life Type {v}")
            if life_type is not None:
                raise AttributesNotSupported("SA Life Type without its Duration")
            life_type = v
            continue
        if t == _A_LIFE_DURATION:
            if life_type is None:
                raise AttributesNotSupported("SA Life Duration without a preceding Life Type")
            if v == 0:
                raise AttributesNotSupported("SA Life Duration 0")
            if life_type == _L_SECONDS:
                if secs is not None:
                    raise AttributesNotSupported("two seconds lifetimes")
                secs = v
            else:
                if kbs is not None:
                    raise AttributesNotSupported("two kilobytes lifetimes")
                kbs = v
            life_type = None
            continue
        if t in seen:
            if seen[t] != v:
                raise AttributesNotSupported(f"conflicting values for attribute {t}")
            continue
        seen[t] = v
        if t == _A_KEY_LENGTH:
            key_length = v
        elif t == _A_AUTH:
            auth = v
        elif t == _A_MODE:
            mode = v
        elif t == _A_GROUP:
            group = v
        else:
            other.append(a)
    if life_type is not None:
        raise AttributesNotSupported("SA Life Type without its Duration")
    return TransformParams(
        transform.transform_id, key_length, auth, mode, group, secs, kbs, tuple(other)
    )


def _transform_attributes(spec: TransformSpec, suite: SuitePolicy) -> list[Attribute]:
    """Attributes in racoon2's order: lifetimes, mode, group, key length, auth."""
    attrs: list[Attribute] = []
    if suite.lifetime_seconds is not None:
        attrs.append(Attribute(IpsecAttr.SA_LIFE_TYPE, int(LifeType.SECONDS)))
        attrs.append(Attribute.number(IpsecAttr.SA_LIFE_DURATION, suite.lifetime_seconds))
    if suite.lifetime_kilobytes is not None:
        attrs.append(Attribute(IpsecAttr.SA_LIFE_TYPE, int(LifeType.KILOBYTES)))
        attrs.append(Attribute.number(IpsecAttr.SA_LIFE_DURATION, suite.lifetime_kilobytes))
    attrs.append(Attribute(IpsecAttr.ENCAPSULATION_MODE, int(suite.mode)))
    if suite.pfs_group is not None:
        attrs.append(Attribute(IpsecAttr.GROUP_DESCRIPTION, int(suite.pfs_group)))
    if spec.key_length is not None:
        attrs.append(Attribute(IpsecAttr.KEY_LENGTH, int(spec.key_length)))
    if spec.auth is not None:
        attrs.append(Attribute(IpsecAttr.AUTH_ALGORITHM, int(spec.auth)))
    return attrs


# --- offer ---------------------------------------------------------------------


def _spi_bytes(spi: bytes | int, protocol: int) -> bytes:
    if isinstance(spi, int):
        size = 2 if protocol == ProtocolId.IPCOMP else 4
        return spi.to_bytes(size, "big")
    return bytes(spi)


def build_offer(policy: Policy, spis: Mapping[int, bytes | int]) -> SecurityAssociation:
    """SA payload for *policy*; ``spis`` maps protocol id -> our inbound SPI
    (the same SPI is used in every proposal of that protocol)."""
    proposals: list[Proposal] = []
    for n, suite in enumerate(policy.suites, start=1):
        for pp in suite.protocols:
            if pp.protocol not in spis:
                raise ValueError(f"no SPI supplied for protocol {pp.protocol}")
            transforms = [
                Transform(i, int(spec.transform_id), _transform_attributes(spec, suite))
                for i, spec in enumerate(pp.transforms, start=1)
            ]
            proposals.append(
                Proposal(
                    n, int(pp.protocol), _spi_bytes(spis[pp.protocol], pp.protocol), transforms
                )
            )
    return SecurityAssociation(proposals)


def optimistic_proposals(offer: SecurityAssociation) -> list[tuple[Proposal, Transform]]:
    """The optimistic choice: first transform of each proposal of the first
    proposal number (RFC 4430 §5.2)."""
    groups = offer.proposal_groups()
    if not groups:
        raise BadProposalSyntax("SA payload without proposals")
    return [(p, p.transforms[0]) for p in groups[0]]


# --- selection (responder) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChosenTransform:
    """The choice for one protocol of the selected proposal group.

    ``proposal`` / ``transform``: as offered (the proposal's SPI is the
    initiator's inbound SPI).  ``reply_transform``: what goes back, identical
    except for lowered SA Life Durations.  ``params``: effective values.
    """

    protocol_id: int
    proposal: Proposal
    transform: Transform
    reply_transform: Transform
    params: TransformParams


@dataclass(slots=True)
class Selection:
    proposal_number: int
    chosen: tuple[ChosenTransform, ...]
    life_seconds: int | None
    life_kilobytes: int | None
    lowered: bool = False
    responder_lifetime: bool = False
    optimistic: bool = False
    pfs_group: int | None = None
    #: responder side: None; initiator side (validate_answer): peer SPIs
    peer_spis: dict[int, bytes] = field(default_factory=dict)

    def protocols(self) -> list[int]:
        return [c.protocol_id for c in self.chosen]

    def reply_sa(self, spis: Mapping[int, bytes | int]) -> SecurityAssociation:
        """The responder's SA payload: the chosen proposal(s) with one
        transform each, carrying our inbound SPIs."""
        return SecurityAssociation(
            [
                Proposal(
                    self.proposal_number,
                    c.protocol_id,
                    _spi_bytes(spis[c.protocol_id], c.protocol_id),
                    [_copy_transform(c.reply_transform)],
                )
                for c in self.chosen
            ]
        )

    def lifetime_attributes(self) -> list[Attribute]:
        attrs: list[Attribute] = []
        if self.life_seconds is not None:
            attrs.append(Attribute(IpsecAttr.SA_LIFE_TYPE, int(LifeType.SECONDS)))
            attrs.append(Attribute.number(IpsecAttr.SA_LIFE_DURATION, self.life_seconds))
        if self.life_kilobytes is not None:
            attrs.append(Attribute(IpsecAttr.SA_LIFE_TYPE, int(LifeType.KILOBYTES)))
            attrs.append(Attribute.number(IpsecAttr.SA_LIFE_DURATION, self.life_kilobytes))
        return attrs

    def responder_lifetime_notifications(
        self, spis: Mapping[int, bytes | int]
    ) -> list[Notification]:
        """RESPONDER-LIFETIME notifies (RFC 2407 §4.6.3.1), one per protocol,
        SPI = our inbound SPI, data = the effective lifetime attributes."""
        data = encode_attributes(self.lifetime_attributes())
        return [
            Notification(
                NotifyType.RESPONDER_LIFETIME,
                c.protocol_id,
                _spi_bytes(spis[c.protocol_id], c.protocol_id),
                data,
            )
            for c in self.chosen
        ]


def _copy_transform(t: Transform) -> Transform:
    return t.copy()


def _min_opt(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _lower_durations(t: Transform, secs: int | None, kbs: int | None) -> Transform:
    """Copy of *t* with SA Life Durations lowered; keeps each attribute's form."""
    attrs: list[Attribute] = []
    life_type = None
    changed = False
    for a in t.attributes:
        if a.type == IpsecAttr.SA_LIFE_TYPE:
            life_type = a.int_value
        elif a.type == IpsecAttr.SA_LIFE_DURATION:
            limit = secs if life_type == LifeType.SECONDS else kbs
            if limit is not None and a.int_value > limit:
                v = a.value
                if isinstance(v, int):
                    a = Attribute(a.type, limit)
                else:
                    a = Attribute(a.type, limit.to_bytes(max(len(v), 4), "big"))
                changed = True
        attrs.append(a)
    return Transform(t.number, t.transform_id, attrs) if changed else t


def _spec_matches(spec: TransformSpec, p: TransformParams) -> bool:
    return (
        int(spec.transform_id) == p.transform_id
        and spec.key_length == p.key_length
        and spec.auth == p.auth
    )


def _try_group(group: list[Proposal], suite: SuitePolicy, lower: bool) -> Selection | None:
    by_proto = {pp.protocol: pp for pp in suite.protocols}
    if sorted(by_proto) != sorted(p.protocol_id for p in group):
        return None
    picks: list[tuple[Proposal, Transform, TransformParams]] = []
    for prop in group:
        pp = by_proto[prop.protocol_id]
        found = None
        for t in prop.transforms:
            try:
                params = parse_transform(t)
            except AttributesNotSupported:
                continue
            if params.other:
                continue  # attribute classes we do not implement (RFC 2407 §4.5.3)
            if params.mode is not None and params.mode != suite.mode:
                continue
            if params.group != suite.pfs_group:
                continue  # PFS required but absent, or unwanted/different group
            if any(_spec_matches(spec, params) for spec in pp.transforms):
                found = (prop, t, params)
                break
        if found is None:
            return None
        picks.append(found)
    # lifetimes: common effective values over the bundle, capped by our policy
    secs = kbs = None
    unexpressible = False
    for _, _, params in picks:
        secs = _min_opt(secs, params.effective_seconds())
        kbs = _min_opt(kbs, params.life_kilobytes)
    new_secs = _min_opt(secs, suite.lifetime_seconds)
    new_kbs = _min_opt(kbs, suite.lifetime_kilobytes)
    chosen = []
    lowered = False
    for prop, t, params in picks:
        if new_secs != params.effective_seconds() and (params.life_seconds is None or not lower):
            unexpressible = True  # no seconds attribute to lower, or echo only
        if new_kbs != params.life_kilobytes and (params.life_kilobytes is None or not lower):
            unexpressible = True
        reply = _lower_durations(t, new_secs, new_kbs) if lower else t
        if reply is not t:
            lowered = True
        eff = TransformParams(
            params.transform_id,
            params.key_length,
            params.auth,
            params.mode,
            params.group,
            new_secs,
            new_kbs,
            params.other,
        )
        chosen.append(ChosenTransform(prop.protocol_id, prop, t, reply, eff))
    return Selection(
        group[0].number,
        tuple(chosen),
        new_secs,
        new_kbs,
        lowered=lowered,
        responder_lifetime=lowered or unexpressible,
        pfs_group=suite.pfs_group,
    )


def _check_group_syntax(group: list[Proposal]) -> None:
    protos = [p.protocol_id for p in group]
    if len(set(protos)) != len(protos):
        raise BadProposalSyntax("a protocol appears twice in one proposal number")
    for p in group:
        if not p.transforms:
            raise BadProposalSyntax("proposal without transforms")


def select(offer: SecurityAssociation, policy: Policy,
           capabilities: PluginCapabilities) -> Selection:
    """Responder: pick the first offered proposal group (initiator's order)
    that one of our suites accepts, with the first acceptable transform of
    each protocol.  ``capabilities``: the key exchange's, which say whether the
    answer lowers lifetimes or echoes them (module docstring).  Raises
    NoProposalChosen when nothing is acceptable."""
    lower = capabilities.responder_may_lower_lifetime
    groups = offer.proposal_groups()
    if not groups:
        raise BadProposalSyntax("SA payload without proposals")
    for gi, group in enumerate(groups):
        _check_group_syntax(group)
        for suite in policy.suites:
            sel = _try_group(group, suite, lower)
            if sel is not None:
                sel.optimistic = gi == 0 and all(
                    c.transform is c.proposal.transforms[0] for c in sel.chosen
                )
                return sel
    raise NoProposalChosen(f"no acceptable proposal: {explain_no_choice(offer, policy)}")


class SelectionCache:
    """:func:`select` memoized by the offer's content without its SPIs, per policy.

    A responder sees the same offer over and over (one initiator, one configuration):
    the choice, the lowered reply transforms and the effective parameters depend only on
    the proposal numbers, protocols, SPI sizes, transforms and attributes, and on the
    policy. A hit rebuilds the :class:`Selection` around the current offer's own
    proposals (so ``chosen[i].proposal.spi`` is this offer's SPI). Bounded (least
    recently used evicted); refusals are not cached (they raise, and are rare)."""

    def __init__(self, capacity: int = 256) -> None:
        from collections import OrderedDict

        self.capacity = capacity
        self._entries: OrderedDict[tuple, tuple] = OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def offer_key(offer: SecurityAssociation) -> tuple:
        return (offer.doi, offer.situation, offer.labeled_situation,
                tuple((p.number, p.protocol_id, len(p.spi),
                       tuple(t.wire_key() for t in p.transforms)) for p in offer.proposals))

    def select(self, offer: SecurityAssociation, policy: Policy,
               capabilities: PluginCapabilities) -> Selection:
        lower = capabilities.responder_may_lower_lifetime
        key = (id(policy), lower, self.offer_key(offer))
        entries = self._entries
        hit = entries.get(key)
        if hit is not None and hit[0] is policy:
            entries.move_to_end(key)
            self.hits += 1
            _, template, picks = hit
            props = offer.proposals
            chosen = []
            for c, (pi, ti) in zip(template.chosen, picks, strict=True):
                prop = props[pi]
                t = prop.transforms[ti]
                reply = t if c.reply_transform is c.transform else c.reply_transform
                chosen.append(ChosenTransform(c.protocol_id, prop, t, reply, c.params))
            return Selection(template.proposal_number, tuple(chosen), template.life_seconds,
                             template.life_kilobytes, lowered=template.lowered,
                             responder_lifetime=template.responder_lifetime,
                             optimistic=template.optimistic, pfs_group=template.pfs_group)
        self.misses += 1
        sel = select(offer, policy, capabilities)
        picks = []
        for c in sel.chosen:
            pi = next(i for i, p in enumerate(offer.proposals) if p is c.proposal)
            ti = next(i for i, t in enumerate(c.proposal.transforms) if t is c.transform)
            picks.append((pi, ti))
        entries[key] = (policy, sel, tuple(picks))
        if len(entries) > self.capacity:
            entries.popitem(last=False)
        return sel


# --- initiator side -------------------------------------------------------------


def _answer_matches(offered: TransformParams, answered: TransformParams) -> bool:
    if offered.algorithms() != answered.algorithms():
        return False
    o_s, a_s = offered.effective_seconds(), answered.effective_seconds()
    if o_s is not None and (a_s is None or a_s > o_s):
        return False
    o_k, a_k = offered.life_kilobytes, answered.life_kilobytes
    if o_k is not None and (a_k is None or a_k > o_k):
        return False
    return True


def validate_answer(offer: SecurityAssociation, answer: SecurityAssociation) -> Selection:
    """Initiator: check the responder's SA against our offer.

    BadProposalSyntax: not exactly one proposal group, or not exactly one
    transform per proposal.  NoProposalChosen: not a subset of the offer
    (unknown proposal number, other protocols, changed attributes, raised
    lifetime).  Returns the Selection (``peer_spis`` = responder's SPIs).
    """
    groups = answer.proposal_groups()
    if len(groups) != 1:
        raise BadProposalSyntax("the answer must contain exactly one proposal group")
    agroup = groups[0]
    _check_group_syntax(agroup)
    if any(len(p.transforms) != 1 for p in agroup):
        raise BadProposalSyntax("each answered proposal must carry exactly one transform")
    ogroups = offer.proposal_groups()
    match = [g for g in ogroups if g[0].number == agroup[0].number]
    if not match:
        raise NoProposalChosen(f"answer names proposal {agroup[0].number} that was not offered")
    ogroup = match[0]
    oby = {p.protocol_id: p for p in ogroup}
    if sorted(oby) != sorted(p.protocol_id for p in agroup):
        raise NoProposalChosen("answer's protocols differ from the offered bundle")
    chosen = []
    secs = kbs = None
    lowered = False
    optimistic = ogroup is ogroups[0]
    for ap in agroup:
        at = ap.transforms[0]
        try:
            aparams = parse_transform(at)
        except AttributesNotSupported as e:
            raise NoProposalChosen(f"answered transform: {e}") from None
        op = oby[ap.protocol_id]
        hit = None
        for i, ot in enumerate(op.transforms):
            try:
                oparams = parse_transform(ot)
            except AttributesNotSupported:
                continue
            if ot.transform_id == at.transform_id and _answer_matches(oparams, aparams):
                hit = ot
                if i != 0:
                    optimistic = False
                break
        if hit is None:
            raise NoProposalChosen("answered transform does not match any offered one")
        oparams = parse_transform(hit)
        if (
            aparams.effective_seconds() != oparams.effective_seconds()
            or aparams.life_kilobytes != oparams.life_kilobytes
        ):
            lowered = True
        secs = _min_opt(secs, aparams.effective_seconds())
        kbs = _min_opt(kbs, aparams.life_kilobytes)
        chosen.append(ChosenTransform(ap.protocol_id, op, hit, at, aparams))
    return Selection(
        agroup[0].number,
        tuple(chosen),
        secs,
        kbs,
        lowered=lowered,
        optimistic=optimistic,
        pfs_group=chosen[0].params.group,
        peer_spis={ap.protocol_id: ap.spi for ap in agroup},
    )


def is_optimistic(offer: SecurityAssociation, choice: SecurityAssociation | Selection) -> bool:
    """True when *choice* (the responder's SA or a Selection) is the optimistic
    proposal: first proposal number, first transform of each protocol, all
    attributes equal except SA Life Durations that may be lower."""
    if isinstance(choice, Selection):
        return choice.optimistic
    try:
        return validate_answer(offer, choice).optimistic
    except (BadProposalSyntax, NoProposalChosen):
        return False


# --- strongSwan-style keywords -----------------------------------------------------

_INTEGRITY = {
    # keyword: (ESP Authentication Algorithm, AH transform id)
    "md5": (AuthAlgorithm.HMAC_MD5, AhTransformId.AH_MD5),
    "sha1": (AuthAlgorithm.HMAC_SHA, AhTransformId.AH_SHA),
    "sha": (AuthAlgorithm.HMAC_SHA, AhTransformId.AH_SHA),
    "sha256": (AuthAlgorithm.HMAC_SHA2_256, AhTransformId.AH_SHA2_256),
    "sha2_256": (AuthAlgorithm.HMAC_SHA2_256, AhTransformId.AH_SHA2_256),
    "sha384": (AuthAlgorithm.HMAC_SHA2_384, AhTransformId.AH_SHA2_384),
    "sha2_384": (AuthAlgorithm.HMAC_SHA2_384, AhTransformId.AH_SHA2_384),
    "sha512": (AuthAlgorithm.HMAC_SHA2_512, AhTransformId.AH_SHA2_512),
    "sha2_512": (AuthAlgorithm.HMAC_SHA2_512, AhTransformId.AH_SHA2_512),
    "aesxcbc": (AuthAlgorithm.AES_XCBC_MAC, AhTransformId.AH_AES_XCBC_MAC),
}

_GROUPS = {
    "modp768": GroupDescription.MODP_768,
    "modp1024": GroupDescription.MODP_1024,
    "modp1536": GroupDescription.MODP_1536,
    "modp2048": GroupDescription.MODP_2048,
    "modp3072": GroupDescription.MODP_3072,
    "modp4096": GroupDescription.MODP_4096,
    "modp6144": GroupDescription.MODP_6144,
    "modp8192": GroupDescription.MODP_8192,
    "ecp256": GroupDescription.ECP_256,
    "ecp384": GroupDescription.ECP_384,
    "ecp521": GroupDescription.ECP_521,
    "ecp192": GroupDescription.ECP_192,
    "ecp224": GroupDescription.ECP_224,
    "modp1024s160": GroupDescription.MODP_1024_S160,
    "modp2048s224": GroupDescription.MODP_2048_S224,
    "modp2048s256": GroupDescription.MODP_2048_S256,
}


def _cipher(word: str) -> tuple[TransformSpec, bool] | None:
    """Keyword -> (spec without auth, is_aead)."""
    fixed = {
        "3des": EspTransformId.ESP_3DES,
        "des": EspTransformId.ESP_DES,
        "null": EspTransformId.ESP_NULL,
    }
    if word in fixed:
        return TransformSpec(fixed[word]), False
    for prefix, tid in (
        ("aes", EspTransformId.ESP_AES_CBC),
        ("camellia", EspTransformId.ESP_CAMELLIA),
    ):
        if not word.startswith(prefix):
            continue
        rest = word[len(prefix) :]
        bits, mode = rest[:3], rest[3:]
        if bits not in ("128", "192", "256"):
            return None
        kl = int(bits)
        if mode == "":
            return TransformSpec(tid, kl), False
        if prefix != "aes":
            return None
        if mode == "ctr":
            return TransformSpec(EspTransformId.ESP_AES_CTR, kl), False
        aead = {
            "gcm8": EspTransformId.ESP_AES_GCM_8,
            "gcm64": EspTransformId.ESP_AES_GCM_8,
            "gcm12": EspTransformId.ESP_AES_GCM_12,
            "gcm96": EspTransformId.ESP_AES_GCM_12,
            "gcm16": EspTransformId.ESP_AES_GCM_16,
            "gcm128": EspTransformId.ESP_AES_GCM_16,
            "ccm8": EspTransformId.ESP_AES_CCM_8,
            "ccm64": EspTransformId.ESP_AES_CCM_8,
            "ccm12": EspTransformId.ESP_AES_CCM_12,
            "ccm96": EspTransformId.ESP_AES_CCM_12,
            "ccm16": EspTransformId.ESP_AES_CCM_16,
            "ccm128": EspTransformId.ESP_AES_CCM_16,
        }.get(mode)
        if aead is None:
            return None
        return TransformSpec(aead, kl), True
    return None


def parse_proposal(
    text: str,
    protocol: str | int = "esp",
    *,
    mode: int = EncapsulationMode.TRANSPORT,
    lifetime_seconds: int | None = DEFAULT_LIFETIME_SECONDS,
    lifetime_kilobytes: int | None = None,
) -> SuitePolicy:
    """One strongSwan-style proposal (``esp_proposals``/``ah_proposals``
    entry) such as ``aes128-sha256-modp2048`` or ``aes256gcm16``.

    ESP: cipher keyword(s), then integrity keyword(s) (none for AEAD), then
    at most one DH group (PFS).  AH: integrity keyword(s), optional group.
    Several ciphers/integrity keywords give several transforms (cipher-major
    order).  Unknown keywords raise ValueError naming the keyword.
    """
    proto = {"esp": ProtocolId.ESP, "ah": ProtocolId.AH}.get(protocol, protocol)
    if proto not in (ProtocolId.ESP, ProtocolId.AH):
        raise ValueError(f"unsupported protocol {protocol!r}")
    words = [w for w in text.strip().lower().split("-")]
    if not words or any(not w for w in words):
        raise ValueError(f"empty keyword in proposal {text!r}")
    ciphers: list[tuple[TransformSpec, bool]] = []
    integ: list[tuple[int, int]] = []
    groups: list[int] = []
    for w in words:
        if w in _GROUPS:
            groups.append(_GROUPS[w])
            continue
        if w in _INTEGRITY:
            if groups:
                raise ValueError(f"keyword {w!r} after the DH group in {text!r}")
            integ.append(_INTEGRITY[w])
            continue
        c = _cipher(w) if proto == ProtocolId.ESP else None
        if c is None:
            raise ValueError(f"unknown proposal keyword {w!r} in {text!r}")
        if integ or groups:
            raise ValueError(f"cipher keyword {w!r} must come first in {text!r}")
        ciphers.append(c)
    if len(groups) > 1:
        raise ValueError(f"more than one DH group in {text!r}")
    if proto == ProtocolId.AH:
        if not integ:
            raise ValueError(f"AH proposal {text!r} needs an integrity keyword")
        specs = tuple(TransformSpec(ah, None, esp_auth) for esp_auth, ah in integ)
    else:
        if not ciphers:
            raise ValueError(f"ESP proposal {text!r} needs a cipher keyword")
        specs_l: list[TransformSpec] = []
        for spec, aead in ciphers:
            if aead:
                if integ:
                    raise ValueError(f"AEAD cipher in {text!r} takes no integrity keyword")
                specs_l.append(spec)
            elif not integ:
                if spec.transform_id == EspTransformId.ESP_NULL:
                    raise ValueError(f"'null' needs an integrity keyword in {text!r}")
                specs_l.append(spec)
            else:
                specs_l.extend(
                    TransformSpec(spec.transform_id, spec.key_length, esp_auth)
                    for esp_auth, _ in integ
                )
        specs = tuple(specs_l)
    return SuitePolicy(
        (ProtocolPolicy(proto, specs),),
        mode=mode,
        lifetime_seconds=lifetime_seconds,
        lifetime_kilobytes=lifetime_kilobytes,
        pfs_group=groups[0] if groups else None,
    )


def parse_proposals(
    text: str | Sequence[str],
    protocol: str | int = "esp",
    **kwargs,
) -> Policy:
    """Comma-separated (or listed) proposals -> Policy in that order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return Policy(tuple(parse_proposal(i, protocol, **kwargs) for i in items if i.strip()))


# --- describing offers and policies (for NO-PROPOSAL-CHOSEN diagnostics) ---------------

_PROTO_WORD = {int(ProtocolId.ESP): "esp", int(ProtocolId.AH): "ah"}
_AUTH_WORD = {int(v[0]): k for k, v in reversed(list(_INTEGRITY.items()))
              if k not in ("sha", "sha2_256", "sha2_384", "sha2_512")}
_AH_WORD = {int(v[1]): k for k, v in reversed(list(_INTEGRITY.items()))
            if k not in ("sha", "sha2_256", "sha2_384", "sha2_512")}
_GROUP_WORD = {int(v): k for k, v in _GROUPS.items()}
_AEAD_WORD = {
    int(EspTransformId.ESP_AES_GCM_8): "gcm8", int(EspTransformId.ESP_AES_GCM_12): "gcm12",
    int(EspTransformId.ESP_AES_GCM_16): "gcm16", int(EspTransformId.ESP_AES_CCM_8): "ccm8",
    int(EspTransformId.ESP_AES_CCM_12): "ccm12", int(EspTransformId.ESP_AES_CCM_16): "ccm16",
}


def _cipher_word(tid: int, key_length: int | None) -> str:
    kl = "" if key_length is None else str(key_length)
    if tid == EspTransformId.ESP_AES_CBC:
        return f"aes{kl}"
    if tid == EspTransformId.ESP_AES_CTR:
        return f"aes{kl}ctr"
    if tid == EspTransformId.ESP_CAMELLIA:
        return f"camellia{kl}"
    if tid in _AEAD_WORD:
        return f"aes{kl}{_AEAD_WORD[tid]}"
    fixed = {int(EspTransformId.ESP_3DES): "3des", int(EspTransformId.ESP_DES): "des",
             int(EspTransformId.ESP_NULL): "null"}
    return fixed.get(int(tid), f"transform{int(tid)}")


def transform_keyword(protocol: int, transform_id: int, key_length: int | None = None,
                      auth: int | None = None, group: int | None = None) -> str:
    """strongSwan-style keyword of one transform: ``aes256-sha256-modp2048``."""
    if protocol == ProtocolId.AH:
        words = [_AH_WORD.get(int(transform_id), f"transform{int(transform_id)}")]
    else:
        words = [_cipher_word(int(transform_id), key_length)]
        if auth is not None:
            words.append(_AUTH_WORD.get(int(auth), f"auth{int(auth)}"))
    if group is not None:
        words.append(_GROUP_WORD.get(int(group), f"group{int(group)}"))
    return "-".join(words)


def _unique(words: list[str]) -> list[str]:
    return list(dict.fromkeys(words))


def _mode_word(mode: int | None) -> str:
    return "" if mode is None else (
        "tunnel" if mode == EncapsulationMode.TUNNEL else
        "transport" if mode == EncapsulationMode.TRANSPORT else f"mode {int(mode)}")


def describe_offer(offer: SecurityAssociation) -> str:
    """What an SA payload offers, compactly: ``esp aes128gcm16 / aes256-sha256-modp2048
    (tunnel)``; proposal groups are separated by `` | ``."""
    out = []
    for group in offer.proposal_groups():
        parts = []
        modes: list[str] = []
        for prop in group:
            words = []
            for t in prop.transforms:
                try:
                    p = parse_transform(t)
                except AttributesNotSupported:
                    words.append(f"transform{t.transform_id}(bad attributes)")
                    continue
                words.append(transform_keyword(prop.protocol_id, p.transform_id,
                                               p.key_length, p.auth, p.group))
                if p.mode is not None:
                    modes.append(_mode_word(p.mode))
            proto = _PROTO_WORD.get(int(prop.protocol_id), f"protocol{prop.protocol_id}")
            parts.append(f"{proto} " + " / ".join(_unique(words)))
        text = " + ".join(parts)
        if modes:
            text += f" ({', '.join(_unique(modes))})"
        out.append(text)
    return " | ".join(out) or "nothing"


def describe_policy(policy: Policy) -> str:
    """What a local policy accepts, in the same form as :func:`describe_offer`."""
    out = []
    for suite in policy.suites:
        parts = []
        for pp in suite.protocols:
            words = [transform_keyword(pp.protocol, s.transform_id, s.key_length, s.auth,
                                       suite.pfs_group) for s in pp.transforms]
            proto = _PROTO_WORD.get(int(pp.protocol), f"protocol{pp.protocol}")
            parts.append(f"{proto} " + " / ".join(_unique(words)))
        out.append(" + ".join(parts) + f" ({_mode_word(suite.mode)})")
    return " | ".join(_unique(out))


def _group_word(g: int | None) -> str:
    return "no PFS" if g is None else _GROUP_WORD.get(int(g), f"group {int(g)}")


def explain_no_choice(offer: SecurityAssociation, policy: Policy) -> str:
    """Why :func:`select` found nothing acceptable, as precisely as the offer allows:
    ``DH group: offered modp2048, policy wants no PFS``, ``mode: offered tunnel, policy
    wants transport``, ``protocol: offered ah, policy wants esp``, ``no common transform``
    or ``unsupported attributes``."""
    close: list[str] = []  # an algorithm matched but something else did not
    far: list[str] = []
    for group in offer.proposal_groups():
        for suite in policy.suites:
            by_proto = {pp.protocol: pp for pp in suite.protocols}
            offered = sorted(int(p.protocol_id) for p in group)
            if sorted(int(p) for p in by_proto) != offered:
                far.append("protocol: offered "
                           + "+".join(_PROTO_WORD.get(p, str(p)) for p in offered)
                           + ", policy wants "
                           + "+".join(_PROTO_WORD.get(int(p), str(p)) for p in by_proto))
                continue
            for prop in group:
                pp = by_proto[prop.protocol_id]
                for t in prop.transforms:
                    try:
                        params = parse_transform(t)
                    except AttributesNotSupported as e:
                        far.append(f"unsupported attributes ({e})")
                        continue
                    if not any(_spec_matches(s, params) for s in pp.transforms):
                        far.append("no common transform")
                        continue
                    if params.other:
                        close.append("unsupported attributes")
                    if params.mode is not None and params.mode != suite.mode:
                        close.append(f"mode: offered {_mode_word(params.mode)}, policy wants "
                                     f"{_mode_word(suite.mode)}")
                    if params.group != suite.pfs_group:
                        close.append(f"DH group: offered {_group_word(params.group)}, policy "
                                     f"wants {_group_word(suite.pfs_group)}")
    reasons = _unique(close) or _unique(far)
    return "; ".join(reasons) or "no acceptable proposal"
