"""ISAKMP codec: hand-written vectors, round trips, fuzzing."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import isakmp
from isakmp import (
    Attribute,
    BadProposalSyntax,
    Certificate,
    CertificateRequest,
    Delete,
    Hash,
    Identification,
    IdType,
    InvalidIdInformation,
    InvalidMajorVersion,
    InvalidPayloadType,
    IsakmpError,
    KeyExchange,
    Message,
    NatD,
    NatOa,
    Nonce,
    Notification,
    NotifyType,
    PayloadMalformed,
    PayloadType,
    Proposal,
    ProtocolId,
    SecurityAssociation,
    Signature,
    Transform,
    UnknownPayload,
    VendorId,
    decode_payloads,
    encode_payloads,
)
from isakmp.attributes import decode_attributes, encode_attributes

H = bytes.fromhex


def rt(first: int, hexstr: str) -> list:
    """Decode a chain, check it re-encodes byte-identically, return payloads."""
    data = H(hexstr.replace(" ", ""))
    payloads = decode_payloads(first, data)
    assert encode_payloads(payloads) == (first, data)
    return payloads


# --- attributes -------------------------------------------------------------------


def test_attribute_vectors_rfc2407_lifetime():
    data = H("80010001 000200040001518 0 80010002 00020004000186a0".replace(" ", ""))
    attrs = decode_attributes(data)
    assert attrs == [
        Attribute(1, 1),
        Attribute(2, H("00015180")),
        Attribute(1, 2),
        Attribute(2, H("000186a0")),
    ]
    assert [a.int_value for a in attrs] == [1, 86400, 2, 100000]
    assert [a.is_tv for a in attrs] == [True, False, True, False]
    assert encode_attributes(attrs) == data


def test_attribute_form_preserved():
    tv = H("80027080")  # duration 28800 as TV
    tlv = H("0002000400007080")  # same value as 4-octet TLV
    a, b = decode_attributes(tv)[0], decode_attributes(tlv)[0]
    assert a.int_value == b.int_value == 28800
    assert a != b
    assert encode_attributes([a]) == tv and encode_attributes([b]) == tlv


def test_attribute_number_chooses_form():
    assert Attribute.number(2, 65535) == Attribute(2, 65535)
    big = Attribute.number(2, 86400)
    assert big.value == H("00015180") and encode_attributes([big]) == H("0002000400015180")


def test_attribute_errors():
    with pytest.raises(PayloadMalformed):
        decode_attributes(H("800100"))
    with pytest.raises(PayloadMalformed):
        decode_attributes(H("00020004000151"))
    with pytest.raises(ValueError):
        encode_attributes([Attribute(1, 70000)])
    with pytest.raises(ValueError):
        encode_attributes([Attribute(0x8001, 1)])


# --- SA / proposals / transforms ---------------------------------------------------

# hand-built from the RFC 2408 §3.4-§3.6 layouts with IPsec DOI attributes (RFC 2407 §4.5)
EXAMPLE_SA = (
    "0a000034 00000001 00000001"  # SA hdr (NP nonce, len 52), DOI 1, SIT 1
    "00000028 01030401 12345678"  # proposal #1 ESP, SPI size 4, 1 transform
    "0000001c 010c0000 80010001 80027080 80040002 80060080 80050002"
)


def test_sa_example_vector():
    [sa, nonce] = rt(1, EXAMPLE_SA + "00000014" + bytes(range(16)).hex())
    assert isinstance(sa, SecurityAssociation)
    assert sa.doi == 1 and sa.situation == 1 and sa.labeled_situation == b""
    [p] = sa.proposals
    assert (p.number, p.protocol_id, p.spi) == (1, ProtocolId.ESP, H("12345678"))
    [t] = p.transforms
    assert (t.number, t.transform_id) == (1, 12)
    assert [(a.type, a.value) for a in t.attributes] == [
        (1, 1),
        (2, 28800),
        (4, 2),
        (6, 128),
        (5, 2),
    ]
    assert nonce == Nonce(bytes(range(16)))
    assert str(p.protocol_id) == "ESP" and str(t.transform_id) == "ESP_AES_CBC"


AH_ESP_BUNDLE = (
    "0000006c 00000001 00000001"
    # proposal #1 AH (NP=2), AH_SHA + auth HMAC-SHA
    "0200001c 01020401 aaaaaaaa"
    "00000010 01030000 80040002 80050002"
    # proposal #1 ESP (same number: AND), two transforms (OR)
    "02000030 01030402 bbbbbbbb"
    "0300001c 010c0000 80010001 00020004 00015180 80060100 80040002"
    "00000008 02030000"
    # proposal #2 ESP alone, 3DES-SHA1
    "00000014 02030401 cccccccc"
    "00000008 01030000"
)


def test_and_bundle_groups():
    [sa] = rt(1, AH_ESP_BUNDLE)
    groups = sa.proposal_groups()
    assert [[(p.number, p.protocol_id) for p in g] for g in groups] == [
        [(1, ProtocolId.AH), (1, ProtocolId.ESP)],
        [(2, ProtocolId.ESP)],
    ]
    esp = groups[0][1]
    assert [t.number for t in esp.transforms] == [1, 2]
    assert esp.transforms[0].attributes[1] == Attribute(2, H("00015180"))
    assert esp.transforms[1].attributes == []


@pytest.mark.parametrize(
    "hexstr, exc",
    [
        # proposal next payload 3 (must be 2 or 0)
        (
            "00000020 00000001 00000001 03000014 01030401 12345678 00000008 010c0000",
            BadProposalSyntax,
        ),
        # transform next payload 2
        (
            "00000020 00000001 00000001 00000014 01030401 12345678 02000008 010c0000",
            BadProposalSyntax,
        ),
        # # of transforms = 2 but only one present
        (
            "00000020 00000001 00000001 00000014 01030402 12345678 00000008 010c0000",
            BadProposalSyntax,
        ),
        # proposal says another proposal follows but SA ends
        (
            "00000020 00000001 00000001 02000014 01030401 12345678 00000008 010c0000",
            BadProposalSyntax,
        ),
        # decreasing proposal numbers
        (
            "00000034 00000001 00000001 02000014 02030401 12345678 00000008 010c0000"
            " 00000014 01030401 12345678 00000008 010c0000",
            BadProposalSyntax,
        ),
        # ESP SPI size 3
        (
            "0000001f 00000001 00000001 00000013 01030301 123456 00000008 010c0000",
            BadProposalSyntax,
        ),
        # no proposals
        ("0000000c 00000001 00000001", BadProposalSyntax),
        # proposal length beyond SA
        (
            "00000018 00000001 00000001 00000014 01030401 12345678 00000008 010c0000",
            PayloadMalformed,
        ),
        # transform RESERVED2 non-zero
        (
            "00000020 00000001 00000001 00000014 01030401 12345678 00000008 010c0001",
            PayloadMalformed,
        ),
        # unknown DOI
        (
            "00000020 00000007 00000001 00000014 01030401 12345678 00000008 010c0000",
            isakmp.DoiNotSupported,
        ),
        # reserved situation bit
        (
            "00000020 00000001 00000100 00000014 01030401 12345678 00000008 010c0000",
            isakmp.SituationNotSupported,
        ),
    ],
)
def test_sa_errors(hexstr, exc):
    with pytest.raises(exc):
        decode_payloads(1, H(hexstr.replace(" ", "")))


def test_labeled_situation_kept():
    # SIT_SECRECY: LDI, secrecy len 1 + level (padded), cat bits 8 + bitmap, integrity empty
    labeled = "0000002a 00010000 01000000 00080000 ff000000 00000000 00000000"
    body = "00000001 00000003" + labeled + "00000014 01030401 12345678 00000008 010c0000"
    n = 4 + len(H(body.replace(" ", "")))
    [sa] = rt(1, f"0000{n:04x}" + body)
    assert sa.situation == 3 and sa.labeled_situation == H(labeled.replace(" ", ""))


# --- other payloads -----------------------------------------------------------------


def test_ke_vector():
    [ke] = rt(4, "0000000c 01020304 05060708")
    assert ke == KeyExchange(H("0102030405060708"))


def test_id_vectors():
    [a, b] = rt(5, "05000010 04000000 c0000200 ffffff00  0000000c 01110035 c6336407")
    assert a.id_type == IdType.IPV4_ADDR_SUBNET and (a.protocol, a.port) == (0, 0)
    assert a.network() == ipaddress.ip_network("192.0.2.0/24")
    assert a == Identification.from_network("192.0.2.0/24")
    assert b.address() == ipaddress.ip_address("198.51.100.7")
    assert (b.protocol, b.port) == (17, 53)
    assert b.address_range() == (b.address(), b.address())


def test_id_v6_and_range():
    v6 = Identification.from_address("2001:db8::1", 6, 443)
    rng = Identification.from_range("10.0.0.1", "10.0.0.9")
    sub6 = Identification.from_network("2001:db8::/32")
    first, data = encode_payloads([v6, rng, sub6])
    assert data[:8] == H("0500001805060 1bb".replace(" ", ""))
    assert decode_payloads(first, data) == [v6, rng, sub6]
    assert rng.address_range() == (
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("10.0.0.9"),
    )
    assert sub6.network() == ipaddress.ip_network("2001:db8::/32")


def test_id_errors():
    with pytest.raises(InvalidIdInformation):
        decode_payloads(5, H("0000000b 01000000 c00002".replace(" ", "")))
    bad_mask = Identification(IdType.IPV4_ADDR_SUBNET, 0, 0, H("c0000200ff00ff00"))
    with pytest.raises(InvalidIdInformation):
        bad_mask.network()
    fqdn = rt(5, "00000010 02000000" + b"host.ex".hex() + "2e")[0]
    assert fqdn.data == b"host.ex." and fqdn.id_type == IdType.FQDN


def test_nonce_bounds():
    rt(10, "0000000c" + "00" * 8)
    rt(10, "00000104" + "00" * 256)
    with pytest.raises(PayloadMalformed):
        decode_payloads(10, H("0000000b" + "00" * 7))
    with pytest.raises(PayloadMalformed):
        decode_payloads(10, H("00000105" + "00" * 257))


def test_notify_vectors():
    [n] = rt(11, "00000010 00000001 03040 00b 12345678".replace(" ", ""))
    assert n == Notification(NotifyType.INVALID_SPI, ProtocolId.ESP, H("12345678"))
    assert n.is_error and str(n.notify_type) == "INVALID_SPI"
    [n2] = rt(11, "0000000d 00000001 00000001 04")  # INVALID-PAYLOAD-TYPE, data = KE
    assert n2.notify_type == NotifyType.INVALID_PAYLOAD_TYPE and n2.data == b"\x04"
    [n3] = rt(11, "00000018 00000001 03046000 12345678 80010001 80020e10")
    assert n3.notify_type == NotifyType.RESPONDER_LIFETIME and not n3.is_error
    assert decode_attributes(n3.data) == [Attribute(1, 1), Attribute(2, 3600)]


def test_delete_vectors():
    [d] = rt(12, "00000010 00000001 03040001 12345678")
    assert d == Delete(ProtocolId.ESP, [H("12345678")])
    [d2] = rt(12, "00000018 00000001 02040003 00000001 00000002 00000003")
    assert d2.spis == [H("00000001"), H("00000002"), H("00000003")] and d2.spi_size == 4
    [d3] = rt(12, "0000000c 00000001 03040000")
    assert d3.spis == [] and d3.spi_size == 4
    with pytest.raises(PayloadMalformed):
        decode_payloads(12, H("00000014 00000001 03040002 12345678 9abc".replace(" ", "")))


def test_misc_payload_vectors():
    chain = rt(
        6,
        "07000009 04 aabbccdd"  # CERT X.509 sig
        " 08000006 04 01"  # CR X.509 sig, authority 01
        " 0900000c 0102030405060708"  # HASH
        " 0d000008 0a0b0c0d"  # SIG
        " 14000014 4a131c81070358455c5728f20e95452f"  # VID
        " 1500000c 00112233 44556677"  # NAT-D
        " 0000000c 01000000 c0000201",  # NAT-OA IPv4
    )
    assert chain == [
        Certificate(4, H("aabbccdd")),
        CertificateRequest(4, H("01")),
        Hash(H("0102030405060708")),
        Signature(H("0a0b0c0d")),
        VendorId(H("4a131c81070358455c5728f20e95452f")),
        NatD(H("0011223344556677")),
        NatOa(IdType.IPV4_ADDR, H("c0000201")),
    ]
    assert chain[-1].ip() == ipaddress.ip_address("192.0.2.1")


def test_nat_draft_numbers_preserved():
    [a, b] = rt(130, "83000008 01020304 0000000c 01000000 0a000001")
    assert a.payload_type == 130 and b.payload_type == 131


def test_unknown_payload_types():
    # private use: kept opaque and re-encoded unchanged
    [vid, unk, n] = rt(13, "c8000008 01020304 0b000007 aabbcc 00000010 00000001 00040018 01020304")
    assert unk == UnknownPayload(200, H("aabbcc"))
    assert n.notify_type == NotifyType.AUTHENTICATION_FAILED
    # IANA-reserved unknown -> INVALID-PAYLOAD-TYPE with the 1-octet type as data
    with pytest.raises(InvalidPayloadType) as ei:
        decode_payloads(13, H("3c000008 01020304 00000004"))
    assert ei.value.notify == NotifyType.INVALID_PAYLOAD_TYPE and ei.value.data == b"\x3c"
    # Proposal / Transform outside an SA
    for t in (2, 3):
        with pytest.raises(InvalidPayloadType):
            decode_payloads(t, H("00000008 01030000"))


def test_chain_errors():
    with pytest.raises(PayloadMalformed):  # trailing bytes
        decode_payloads(4, H("00000008 01020304 00".replace(" ", "")))
    with pytest.raises(PayloadMalformed):  # length beyond data
        decode_payloads(4, H("00000009 01020304"))
    with pytest.raises(PayloadMalformed):  # length < 4
        decode_payloads(4, H("00000003 01020304"))
    with pytest.raises(PayloadMalformed):  # reserved octet
        decode_payloads(4, H("00010008 01020304"))
    with pytest.raises(PayloadMalformed):  # next payload announced but missing
        decode_payloads(4, H("0a000008 01020304"))
    assert decode_payloads(0, b"") == [] and encode_payloads([]) == (0, b"")


# --- message ----------------------------------------------------------------------

MSG_HEX = (
    "0011223344556677 0000000000000000 01 10 02 00 00000000 00000038"
    " 0000001c 00000001 00000001 00000010 01010001 00000008 01010000"
)


def test_message_vector():
    data = H(MSG_HEX.replace(" ", ""))
    m = Message.decode(data)
    assert m.initiator_cookie == H("0011223344556677") and m.responder_cookie == bytes(8)
    assert m.exchange_type == isakmp.ExchangeType.IDENTITY_PROTECTION
    assert (m.major_version, m.minor_version, m.flags, m.message_id) == (1, 0, 0, 0)
    assert m.first_payload_type == PayloadType.SA
    assert m.payloads[0].proposals[0].protocol_id == ProtocolId.ISAKMP
    assert m.encode() == data


def test_message_encrypted_body_opaque():
    data = H(
        "0011223344556677 8899aabbccddeeff 08 10 20 01 01020304 00000024 deadbeef cafebabe".replace(
            " ", ""
        )
    )
    m = Message.decode(data)
    assert m.encrypted and m.payloads == [] and m.next_payload == PayloadType.HASH
    assert m.encrypted_body == H("deadbeefcafebabe")
    assert m.encode() == data


def test_message_errors():
    data = bytearray(H(MSG_HEX.replace(" ", "")))
    with pytest.raises(PayloadMalformed):
        Message.decode(bytes(data[:27]))
    bad = bytearray(data)
    bad[17] = 0x20
    with pytest.raises(InvalidMajorVersion):
        Message.decode(bytes(bad))
    bad = bytearray(data)
    bad[19] = 0x08
    with pytest.raises(isakmp.InvalidFlags):
        Message.decode(bytes(bad))
    with pytest.raises(isakmp.UnequalPayloadLengths):
        Message.decode(bytes(data) + b"\x00")


# --- hypothesis ---------------------------------------------------------------------

u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
blob = st.binary(max_size=40)

attr_st = st.one_of(
    st.builds(Attribute, st.integers(0, 0x7FFF), u16),
    st.builds(Attribute, st.integers(0, 0x7FFF), st.binary(max_size=12)),
)
transform_st = st.builds(Transform, u8, u8, st.lists(attr_st, max_size=6))


@st.composite
def proposal_st(draw, number):
    proto = draw(st.sampled_from([1, 2, 3, 4, 9]))
    size = {
        1: st.sampled_from([0, 16]),
        2: st.just(4),
        3: st.just(4),
        4: st.sampled_from([2, 4]),
    }.get(proto, st.integers(0, 8))
    n = draw(size)
    spi = draw(st.binary(min_size=n, max_size=n))
    return Proposal(number, proto, spi, draw(st.lists(transform_st, min_size=1, max_size=3)))


@st.composite
def sa_st(draw):
    nums = sorted(draw(st.lists(u8, min_size=1, max_size=5)))
    props = [draw(proposal_st(n)) for n in nums]
    return SecurityAssociation(
        props,
        doi=draw(st.sampled_from([0, 1])),
        situation=draw(st.sampled_from([1, 0, 0x80000001])),
    )


ip4 = st.binary(min_size=4, max_size=4)
ip6 = st.binary(min_size=16, max_size=16)
id_st = st.one_of(
    st.builds(Identification, st.just(1), u8, u16, ip4),
    st.builds(Identification, st.just(4), u8, u16, st.binary(min_size=8, max_size=8)),
    st.builds(Identification, st.just(6), u8, u16, st.binary(min_size=32, max_size=32)),
    st.builds(Identification, st.sampled_from([2, 3, 9, 11, 200]), u8, u16, blob),
)
payload_st = st.one_of(
    sa_st(),
    st.builds(KeyExchange, blob),
    id_st,
    st.builds(Certificate, u8, blob),
    st.builds(CertificateRequest, u8, blob),
    st.builds(Hash, blob),
    st.builds(Signature, blob),
    st.builds(Nonce, st.binary(min_size=8, max_size=256)),
    st.builds(Notification, u16, u8, st.binary(max_size=16), blob, u32),
    st.builds(VendorId, blob),
    st.integers(0, 5).flatmap(
        lambda n: st.builds(
            Delete,
            u8,
            st.lists(st.binary(min_size=4, max_size=4), min_size=n, max_size=n),
            st.just(4),
            u32,
        )
    ),
    st.builds(NatD, blob, st.sampled_from([20, 130])),
    st.builds(NatOa, st.just(1), ip4, st.sampled_from([21, 131])),
    st.builds(NatOa, st.just(5), ip6),
    st.builds(UnknownPayload, st.sampled_from([128, 140, 255]), blob),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payload_st, max_size=6))
def test_chain_round_trip(payloads):
    first, data = encode_payloads(payloads)
    back = decode_payloads(first, data)
    assert back == payloads
    assert encode_payloads(back) == (first, data)


message_st = st.builds(
    Message,
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=8, max_size=8),
    u8,
    st.lists(payload_st, max_size=4),
    st.sampled_from([0, 2, 4, 6]),
    u32,
    st.just(1),
    st.integers(0, 15),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(message_st)
def test_message_round_trip(msg):
    data = msg.encode()
    assert Message.decode(data) == msg
    assert Message.decode(data).encode() == data


@settings(max_examples=100)
@given(st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8), u8, blob, u8, u32)
def test_encrypted_message_round_trip(ic, rc, x, body, np, mid):
    m = Message(ic, rc, x, [], 1, mid, encrypted_body=body, next_payload=np)
    assert Message.decode(m.encode()) == m


def _only_isakmp_errors(fn, *args):
    try:
        fn(*args)
    except IsakmpError:
        pass


@settings(max_examples=1000)
@given(u8, st.binary(max_size=200))
def test_fuzz_garbage_chain(first, data):
    _only_isakmp_errors(decode_payloads, first, data)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_fuzz_garbage_message(data):
    _only_isakmp_errors(Message.decode, data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payload_st, min_size=1, max_size=4), st.data())
def test_fuzz_truncation_and_bitflips(payloads, data):
    first, raw = encode_payloads(payloads)
    cut = data.draw(st.integers(0, len(raw) - 1))
    _only_isakmp_errors(decode_payloads, first, raw[:cut])
    flipped = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        flipped[pos] ^= 1 << data.draw(st.integers(0, 7))
    try:
        back = decode_payloads(first, bytes(flipped))
    except IsakmpError:
        return
    # anything accepted must re-encode canonically
    assert encode_payloads(back) == (first, bytes(flipped))


def test_public_api_exports():
    for name in (
        "Message",
        "decode_payloads",
        "encode_payloads",
        "SecurityAssociation",
        "Proposal",
        "Transform",
        "Nonce",
        "Identification",
        "Notification",
        "Delete",
        "UnknownPayload",
    ):
        assert hasattr(isakmp, name)


def test_transform_copy_is_independent_and_keeps_the_wire_form():
    from isakmp import (
        Attribute,
        Proposal,
        SecurityAssociation,
        Transform,
        decode_payloads,
        encode_payloads,
    )

    sa = SecurityAssociation([Proposal(1, 3, b"\x00\x00\x01\x00",
                                       [Transform(1, 12, [Attribute(1, 1), Attribute(2, 3600)])])])
    t, b = encode_payloads([sa])
    [back] = decode_payloads(t, b)
    orig = back.proposals[0].transforms[0]
    c = orig.copy()
    assert c == orig and c.wire_key() == orig.wire_key() and c is not orig
    assert encode_payloads([SecurityAssociation([Proposal(1, 3, b"\x00\x00\x01\x00", [c])])]) == (t, b)
    c.attributes.append(Attribute(4, 1))  # changing the copy leaves the original alone
    assert len(orig.attributes) == 2 and c != orig
    d = orig.copy()  # a copy of a transform whose attributes were looked at
    d.attributes[0] = Attribute(1, 2)
    assert orig.attributes[0] == Attribute(1, 1)
