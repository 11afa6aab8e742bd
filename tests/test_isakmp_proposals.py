"""Proposal policy: offers, responder selection, initiator validation, keywords."""

from __future__ import annotations

import pytest

from isakmp import (
    AhTransformId,
    Attribute,
    AuthAlgorithm,
    BadProposalSyntax,
    EncapsulationMode,
    EspTransformId,
    GroupDescription,
    IpsecAttr,
    NoProposalChosen,
    NotifyType,
    PluginCapabilities,
    Proposal,
    ProtocolId,
    SecurityAssociation,
    Transform,
    decode_payloads,
    encode_payloads,
)
from isakmp.attributes import decode_attributes
from isakmp.proposals import (
    Policy,
    ProtocolPolicy,
    SuitePolicy,
    TransformSpec,
    build_offer,
    is_optimistic,
    parse_proposal,
    parse_proposals,
    parse_transform,
    select,
    validate_answer,
)

ESP, AH = ProtocolId.ESP, ProtocolId.AH
SPIS = {ESP: 0x11111111, AH: 0x22222222}
RSPIS = {ESP: 0x33333333, AH: 0x44444444}

LOWER = PluginCapabilities(responder_may_lower_lifetime=True)  # KINK
ECHO = PluginCapabilities()  # IKEv1: the responder must not change attributes


def offer_of(text: str, **kw) -> SecurityAssociation:
    return build_offer(parse_proposals(text, **kw), SPIS)


def roundtrip(sa: SecurityAssociation) -> SecurityAssociation:
    t, b = encode_payloads([sa])
    [back] = decode_payloads(t, b)
    return back


# --- keywords -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, tid, kl, auth",
    [
        ("aes128gcm16", EspTransformId.ESP_AES_GCM_16, 128, None),
        ("aes256gcm16", EspTransformId.ESP_AES_GCM_16, 256, None),
        ("aes128-sha1", EspTransformId.ESP_AES_CBC, 128, AuthAlgorithm.HMAC_SHA),
        ("aes256-sha256", EspTransformId.ESP_AES_CBC, 256, AuthAlgorithm.HMAC_SHA2_256),
        ("aes128-sha256", EspTransformId.ESP_AES_CBC, 128, AuthAlgorithm.HMAC_SHA2_256),
        ("aes256-sha384", EspTransformId.ESP_AES_CBC, 256, AuthAlgorithm.HMAC_SHA2_384),
        ("aes256-sha512", EspTransformId.ESP_AES_CBC, 256, AuthAlgorithm.HMAC_SHA2_512),
        ("3des-sha1", EspTransformId.ESP_3DES, None, AuthAlgorithm.HMAC_SHA),
        ("null-sha256", EspTransformId.ESP_NULL, None, AuthAlgorithm.HMAC_SHA2_256),
    ],
)
def test_keywords(text, tid, kl, auth):
    suite = parse_proposal(text)
    assert suite.pfs_group is None
    [pp] = suite.protocols
    assert pp.protocol == ESP and pp.transforms == (TransformSpec(tid, kl, auth),)


def test_keyword_pfs_suffix_and_ah():
    assert parse_proposal("aes128-sha256-modp2048").pfs_group == GroupDescription.MODP_2048
    assert parse_proposal("aes256gcm16-ecp256").pfs_group == GroupDescription.ECP_256
    ah = parse_proposal("sha256", "ah")
    assert ah.protocols[0].transforms == (
        TransformSpec(AhTransformId.AH_SHA2_256, None, AuthAlgorithm.HMAC_SHA2_256),
    )
    multi = parse_proposal("aes128-aes256-sha1-sha256")
    assert [(t.key_length, t.auth) for t in multi.protocols[0].transforms] == [
        (128, 2),
        (128, 5),
        (256, 2),
        (256, 5),
    ]
    assert len(parse_proposals("aes128gcm16, aes128-sha256").suites) == 2


@pytest.mark.parametrize(
    "text, word",
    [("aes128-sha3", "sha3"), ("blowfish-sha1", "blowfish"), ("aes128-sha1-modp999", "modp999")],
)
def test_unknown_keyword(text, word):
    with pytest.raises(ValueError, match=word):
        parse_proposal(text)


@pytest.mark.parametrize(
    "text", ["aes128gcm16-sha1", "null", "sha1", "aes128-sha1-modp2048-ecp256", ""]
)
def test_bad_keyword_combinations(text):
    with pytest.raises(ValueError):
        parse_proposal(text)


# --- offer ----------------------------------------------------------------------


def test_build_offer_layout():
    sa = offer_of(
        "aes128-sha1,aes256gcm16-modp2048", lifetime_seconds=86400, lifetime_kilobytes=100000
    )
    assert [(p.number, p.protocol_id, p.spi) for p in sa.proposals] == [
        (1, ESP, bytes.fromhex("11111111")),
        (2, ESP, bytes.fromhex("11111111")),
    ]
    t1 = sa.proposals[0].transforms[0]
    # racoon2 order: life secs, life KB, mode, key length, auth; 86400 > 0xffff -> TLV
    assert t1.attributes == [
        Attribute(1, 1),
        Attribute(2, bytes.fromhex("00015180")),
        Attribute(1, 2),
        Attribute(2, bytes.fromhex("000186a0")),
        Attribute(4, 2),
        Attribute(6, 128),
        Attribute(5, 2),
    ]
    t2 = sa.proposals[1].transforms[0]
    assert Attribute(IpsecAttr.GROUP_DESCRIPTION, 14) in t2.attributes
    assert roundtrip(sa) == sa


# --- selection table ---------------------------------------------------------------


@pytest.mark.parametrize(
    "offer, local, number, optimistic",
    [
        ("aes128-sha1,aes256-sha256", "aes128-sha1", 1, True),
        ("aes128-sha1,aes256-sha256", "aes256-sha256", 2, False),
        # initiator's order wins over the responder's
        ("aes128-sha1,aes256-sha256", "aes256-sha256,aes128-sha1", 1, True),
        ("aes128gcm16,3des-sha1", "3des-sha1,aes256gcm16", 2, False),
        ("aes128-sha256-modp2048,aes128-sha256", "aes128-sha256", 2, False),
        ("aes128-sha256-modp2048,aes128-sha256", "aes128-sha256-modp2048", 1, True),
    ],
)
def test_selection_ordering(offer, local, number, optimistic):
    sel = select(roundtrip(offer_of(offer)), parse_proposals(local), LOWER)
    assert sel.proposal_number == number
    assert sel.optimistic is optimistic
    [c] = sel.chosen
    assert c.protocol_id == ESP and c.reply_transform == c.transform
    ans = sel.reply_sa(RSPIS)
    assert is_optimistic(offer_of(offer), ans) is optimistic


def test_select_second_transform_of_proposal():
    # one proposal carrying two transforms (OR)
    offer = offer_of("aes128-aes256-sha1")
    assert len(offer.proposals) == 1 and len(offer.proposals[0].transforms) == 2
    sel = select(offer, parse_proposals("aes256-sha1"), LOWER)
    assert sel.chosen[0].transform.number == 2 and not sel.optimistic
    ans = sel.reply_sa(RSPIS)
    assert len(ans.proposals[0].transforms) == 1
    v = validate_answer(offer, ans)
    assert not v.optimistic and v.peer_spis == {ESP: bytes.fromhex("33333333")}


def test_key_length_mismatch():
    with pytest.raises(NoProposalChosen):
        select(offer_of("aes128-sha1"), parse_proposals("aes256-sha1"), LOWER)
    # key length attribute missing for AES
    t = Transform(1, EspTransformId.ESP_AES_CBC, [Attribute(4, 2), Attribute(5, 2)])
    offer = SecurityAssociation([Proposal(1, ESP, b"\x00\x00\x00\x01", [t])])
    with pytest.raises(NoProposalChosen):
        select(offer, parse_proposals("aes128-sha1"), LOWER)


def test_pfs_required_but_absent():
    with pytest.raises(NoProposalChosen):
        select(offer_of("aes128-sha256"), parse_proposals("aes128-sha256-modp2048"), LOWER)
    with pytest.raises(NoProposalChosen):  # different group
        select(offer_of("aes128-sha256-ecp256"), parse_proposals("aes128-sha256-modp2048"), LOWER)
    with pytest.raises(NoProposalChosen):  # PFS offered, we do not do it
        select(offer_of("aes128-sha256-modp2048"), parse_proposals("aes128-sha256"), LOWER)


def test_nothing_acceptable():
    with pytest.raises(NoProposalChosen) as ei:
        select(offer_of("3des-sha1,aes128-sha1"), parse_proposals("aes256gcm16"), LOWER)
    assert ei.value.notify == NotifyType.NO_PROPOSAL_CHOSEN


def test_mode_mismatch():
    offer = offer_of("aes128-sha1", mode=EncapsulationMode.TUNNEL)
    with pytest.raises(NoProposalChosen):
        select(offer, parse_proposals("aes128-sha1"), LOWER)
    assert select(offer, parse_proposals("aes128-sha1", mode=EncapsulationMode.TUNNEL), LOWER)


def test_lifetime_lowering():
    offer = offer_of("aes128-sha1", lifetime_seconds=86400, lifetime_kilobytes=100000)
    local = parse_proposals("aes128-sha1", lifetime_seconds=3600, lifetime_kilobytes=50000)
    sel = select(offer, local, LOWER)
    assert (sel.life_seconds, sel.life_kilobytes) == (3600, 50000)
    assert sel.lowered and sel.responder_lifetime and sel.optimistic
    rt_attrs = sel.chosen[0].reply_transform.attributes
    # the TLV form of the offer is kept, only the value changes
    assert rt_attrs[1] == Attribute(2, (3600).to_bytes(4, "big"))
    assert rt_attrs[3] == Attribute(2, (50000).to_bytes(4, "big"))
    assert rt_attrs[4:] == offer.proposals[0].transforms[0].attributes[4:]
    [n] = sel.responder_lifetime_notifications(RSPIS)
    assert n.notify_type == NotifyType.RESPONDER_LIFETIME and n.protocol_id == ESP
    assert n.spi == bytes.fromhex("33333333")
    assert [a.int_value for a in decode_attributes(n.data)] == [1, 3600, 2, 50000]
    # initiator accepts the lowered lifetime and still counts it as optimistic
    ans = roundtrip(sel.reply_sa(RSPIS))
    v = validate_answer(offer, ans)
    assert v.optimistic and v.lowered and v.life_seconds == 3600
    assert is_optimistic(offer, ans)


def test_lifetime_echo_capability_keeps_the_offered_transform():
    # IKEv1 (RFC 2409 §5.5): the responder must not change attributes. The answer echoes
    # the offered durations, the SA lives no longer than the local maximum and the
    # shorter lifetime goes out as RESPONDER-LIFETIME (RFC 2407 §4.6.3.1).
    offer = offer_of("aes128-sha1", lifetime_seconds=7200, lifetime_kilobytes=100000)
    sel = select(offer, parse_proposals("aes128-sha1", lifetime_seconds=3600,
                                        lifetime_kilobytes=50000), ECHO)
    assert sel.chosen[0].reply_transform == offer.proposals[0].transforms[0]
    assert sel.life_seconds == 3600 and sel.life_kilobytes == 50000
    assert not sel.lowered and sel.responder_lifetime
    (n,) = sel.responder_lifetime_notifications(RSPIS)
    assert n.notify_type == NotifyType.RESPONDER_LIFETIME
    assert [a.int_value for a in decode_attributes(n.data)] == [1, 3600, 2, 50000]
    ans = roundtrip(sel.reply_sa(RSPIS))
    v = validate_answer(offer, ans)
    assert v.optimistic and not v.lowered and v.life_seconds == 7200
    # the same offer under KINK's capability is answered with lowered durations
    low = select(offer, parse_proposals("aes128-sha1", lifetime_seconds=3600,
                                        lifetime_kilobytes=50000), LOWER)
    assert low.lowered and low.chosen[0].reply_transform != offer.proposals[0].transforms[0]


def test_lifetime_echo_without_shorter_local_lifetime_sends_no_notify():
    offer = offer_of("aes128-sha1", lifetime_seconds=600)
    sel = select(offer, parse_proposals("aes128-sha1", lifetime_seconds=3600), ECHO)
    assert sel.life_seconds == 600 and not sel.lowered and not sel.responder_lifetime


def test_lifetime_not_lowered_when_local_longer():
    sel = select(offer_of("aes128-sha1", lifetime_seconds=3600), parse_proposals("aes128-sha1"), LOWER)
    assert sel.life_seconds == 3600 and not sel.lowered and not sel.responder_lifetime


def test_lifetime_default_not_expressible():
    # offer without any lifetime attribute: RFC 2407 default 28800 s; we want
    # less but cannot lower an absent attribute -> RESPONDER-LIFETIME needed
    offer = offer_of("aes128-sha1", lifetime_seconds=None)
    sel = select(offer, parse_proposals("aes128-sha1", lifetime_seconds=600), LOWER)
    assert sel.life_seconds == 600 and not sel.lowered and sel.responder_lifetime
    assert sel.chosen[0].reply_transform == offer.proposals[0].transforms[0]


def test_raised_lifetime_rejected_by_initiator():
    offer = offer_of("aes128-sha1", lifetime_seconds=3600)
    ans = select(offer, parse_proposals("aes128-sha1"), LOWER).reply_sa(RSPIS)
    ans.proposals[0].transforms[0].attributes[1] = Attribute(2, 7200)
    with pytest.raises(NoProposalChosen):
        validate_answer(offer, ans)
    assert not is_optimistic(offer, ans)


def test_tv_tlv_re_encoding_is_not_a_change():
    offer = offer_of("aes128-sha1", lifetime_seconds=3600)
    ans = select(offer, parse_proposals("aes128-sha1"), LOWER).reply_sa(RSPIS)
    ans.proposals[0].transforms[0].attributes[1] = Attribute(2, (3600).to_bytes(4, "big"))
    v = validate_answer(offer, ans)
    assert v.optimistic and not v.lowered


# --- AND bundles ----------------------------------------------------------------------

BUNDLE = Policy(
    (
        SuitePolicy(
            (
                ProtocolPolicy(AH, (TransformSpec(AhTransformId.AH_SHA2_256, None, 5),)),
                ProtocolPolicy(ESP, (TransformSpec(EspTransformId.ESP_AES_CBC, 128, None),)),
            )
        ),
    )
)


def test_and_bundle_offer_and_select():
    offer = roundtrip(
        build_offer(Policy(BUNDLE.suites + parse_proposals("aes128-sha1").suites), SPIS)
    )
    assert [(p.number, p.protocol_id) for p in offer.proposals] == [(1, AH), (1, ESP), (2, ESP)]
    sel = select(offer, BUNDLE, LOWER)
    assert sel.proposal_number == 1 and sel.protocols() == [AH, ESP] and sel.optimistic
    ans = sel.reply_sa(RSPIS)
    assert [(p.number, p.protocol_id, p.spi.hex()) for p in ans.proposals] == [
        (1, AH, "44444444"),
        (1, ESP, "33333333"),
    ]
    v = validate_answer(offer, ans)
    assert v.optimistic and v.peer_spis == {
        AH: bytes.fromhex("44444444"),
        ESP: bytes.fromhex("33333333"),
    }
    # a responder that only does ESP skips the bundle and takes proposal 2
    sel2 = select(offer, parse_proposals("aes128-sha1"), LOWER)
    assert sel2.proposal_number == 2 and sel2.protocols() == [ESP] and not sel2.optimistic


def test_and_bundle_partial_match_rejected():
    offer = build_offer(BUNDLE, SPIS)
    esp_only = Policy(
        (
            SuitePolicy(
                (ProtocolPolicy(ESP, (TransformSpec(EspTransformId.ESP_AES_CBC, 128, None),)),)
            ),
        )
    )
    with pytest.raises(NoProposalChosen):
        select(offer, esp_only, LOWER)
    # answer dropping the AH half of the bundle is not a subset of the offer
    ans = select(offer, BUNDLE, LOWER).reply_sa(RSPIS)
    ans.proposals = ans.proposals[1:]
    with pytest.raises(NoProposalChosen):
        validate_answer(offer, ans)


# --- answer syntax ----------------------------------------------------------------------


def test_answer_syntax_errors():
    offer = offer_of("aes128-sha1,aes256-sha256")
    with pytest.raises(BadProposalSyntax):  # two proposal groups answered
        validate_answer(offer, offer)
    two = SecurityAssociation(
        [Proposal(1, ESP, b"\x00\x00\x00\x01", offer.proposals[0].transforms * 2)]
    )
    with pytest.raises(BadProposalSyntax):  # two transforms in the answer
        validate_answer(offer, two)
    other = SecurityAssociation(
        [Proposal(7, ESP, b"\x00\x00\x00\x01", offer.proposals[0].transforms)]
    )
    with pytest.raises(NoProposalChosen):
        validate_answer(offer, other)
    dup = SecurityAssociation([offer.proposals[0], offer.proposals[0]])
    with pytest.raises(BadProposalSyntax):
        select(dup, parse_proposals("aes128-sha1"), LOWER)


def test_parse_transform_rules():
    ok = parse_transform(offer_of("aes128-sha1").proposals[0].transforms[0])
    assert (ok.key_length, ok.auth, ok.mode, ok.life_seconds) == (128, 2, 2, 28800)
    from isakmp import AttributesNotSupported

    bad = [
        [Attribute(2, 100)],  # duration without type
        [Attribute(1, 1)],  # type without duration
        [Attribute(1, 9), Attribute(2, 1)],  # unknown life type
        [Attribute(6, b"\x00\x80")],  # basic attribute as TLV
        [Attribute(5, 1), Attribute(5, 2)],  # conflicting
    ]
    for attrs in bad:
        with pytest.raises(AttributesNotSupported):
            parse_transform(Transform(1, 12, attrs))


def test_unknown_attribute_makes_transform_unacceptable():
    offer = offer_of("aes128-sha1")
    offer.proposals[0].transforms[0].attributes.append(
        Attribute(IpsecAttr.EXTENDED_SEQUENCE_NUMBER, 1)
    )
    with pytest.raises(NoProposalChosen):
        select(offer, parse_proposals("aes128-sha1"), LOWER)


# --- SelectionCache: memoized selection answers exactly like select() ---------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from isakmp.proposals import SelectionCache  # noqa: E402

_WORDS = ["aes128gcm16", "aes256gcm16", "aes128-sha1", "aes256-sha256", "aes128-sha256-modp2048",
          "aes128-aes256-sha1", "3des-sha1"]


def _sel_view(sel):
    return (sel.proposal_number, sel.life_seconds, sel.life_kilobytes, sel.lowered,
            sel.responder_lifetime, sel.optimistic, sel.pfs_group,
            [(c.protocol_id, c.proposal.spi, c.transform, c.reply_transform, c.params)
             for c in sel.chosen], encode_payloads([sel.reply_sa(RSPIS)]))


@settings(max_examples=60, deadline=None)
@given(offer=st.lists(st.sampled_from(_WORDS), min_size=1, max_size=3, unique=True),
       local=st.lists(st.sampled_from(_WORDS), min_size=1, max_size=3, unique=True),
       life=st.sampled_from([None, 600, 86400]), spis=st.lists(
           st.integers(256, 2**32 - 1), min_size=3, max_size=3),
       caps=st.sampled_from([LOWER, ECHO]))
def test_selection_cache_answers_like_select(offer, local, life, spis, caps):
    policy = parse_proposals(",".join(local), lifetime_seconds=3600)
    cache = SelectionCache(capacity=4)
    for spi in spis:  # the same offer with another SPI each time: a hit after the first
        o = roundtrip(build_offer(parse_proposals(",".join(offer), lifetime_seconds=life),
                                  {ESP: spi, AH: spi}))
        try:
            want = select(o, policy, caps)
        except NoProposalChosen:
            with pytest.raises(NoProposalChosen):
                cache.select(o, policy, caps)
            continue
        got = cache.select(o, policy, caps)
        assert _sel_view(got) == _sel_view(want)
        assert got.chosen[0].proposal.spi == spi.to_bytes(4, "big")  # this offer's SPI


def test_selection_cache_hits_per_policy_and_is_bounded():
    cache = SelectionCache(capacity=2)
    p1, p2 = parse_proposals("aes128gcm16"), parse_proposals("aes128gcm16", lifetime_seconds=60)
    for spi in (0x1000, 0x2000):
        cache.select(build_offer(parse_proposals("aes128gcm16"), {ESP: spi}), p1, LOWER)
    assert (cache.hits, cache.misses) == (1, 1)
    sel = cache.select(build_offer(parse_proposals("aes128gcm16"), {ESP: 0x3000}), p2, LOWER)
    assert cache.misses == 2 and sel.life_seconds == 60  # another policy: its own answer
    cache.select(build_offer(parse_proposals("aes256gcm16"), {ESP: 0x4000}),
                 parse_proposals("aes256gcm16"), LOWER)
    assert len(cache._entries) == 2
