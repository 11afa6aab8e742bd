"""Tests of the KINK message codec (kink/wire.py, RFC 4430 §4).

Wire vectors are written out by hand from the RFC 4430 layouts (§4, §4.2, §6);
every Cksum in them is computed here, independently of the codec, with
``crypto.profile(etype).checksum(key, 40, covered)`` over the header patched
as RFC 4430 §4 says (Length = offset of the Cksum, CksumLen = 0).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isakmp.errors import IsakmpError
from kink import wire
from kink.kerberos import crypto
from kink.wire import (
    ApRepPayload,
    ApReqPayload,
    ChecksumError,
    DecryptError,
    EncryptPayload,
    ErrorCode,
    ErrorPayload,
    IsakmpPayload,
    KinkDecodeError,
    KrbErrorPayload,
    MessageType,
    PayloadType,
    TgtRepPayload,
    TgtReqPayload,
    decode,
    decrypt,
    encode,
    verify_checksum,
)

# Session keys: the RFC 3962 App. B (17, 18) and RFC 8009 App. A (19, 20) keys
K17 = bytes.fromhex("42263c6e89f4fc28b8df68ee09799f15")
K18 = bytes.fromhex("fe697b52bc0d3ce14432ba036a92e65bbb52280990a2fa27883998d72af30161")
K19 = bytes.fromhex("3705d96080c17728a0e800eab6e0d23c")
K20 = bytes.fromhex("6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b7182460c52")
KEYS = {17: K17, 18: K18, 19: K19, 20: K20}
CONF = bytes.fromhex("101112131415161718191a1b1c1d1e1f")

AP_REQ = bytes.fromhex("6e03020105")  # stand-in octets; the codec does not parse DER
AP_REP = bytes.fromhex("6f0102")


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", "").replace("\n", ""))


def mic(etype: int, key: bytes, covered: bytes) -> bytes:
    """Cksum computed independently of the codec (usage 40)."""
    return crypto.profile(etype).checksum(key, 40, covered)


def with_cksum(etype: int, key: bytes, covered: bytes) -> bytes:
    """Patch Length/CksumLen of a hand-written covered region and append the Cksum."""
    assert covered[2:4] == struct.pack(">H", len(covered)) and covered[14:16] == b"\0\0"
    m = mic(etype, key, covered)
    total = len(covered) + len(m)
    return covered[:2] + struct.pack(">H", total) + covered[4:14] + struct.pack(">H", len(m)) + covered[16:] + m


# ---------------------------------------------------------------------------
# Numbers


def test_enum_values():
    assert [int(m) for m in MessageType] == [1, 2, 3, 4, 5, 6]
    assert [m.name for m in MessageType] == ["CREATE", "DELETE", "REPLY", "GETTGT", "ACK", "STATUS"]
    assert [int(p) for p in PayloadType] == list(range(9))
    assert PayloadType.ENCRYPT == 7 and PayloadType.ERROR == 8 and PayloadType.ISAKMP == 6
    assert {c.name: int(c) for c in ErrorCode} == {
        "KINK_OK": 0, "PROTOERR": 1, "INVDOI": 2, "INVMAJ": 3, "INTERR": 5,
        "BADQMVERS": 6, "U2UDENIED": 7,
    }
    assert wire.KINK_PORT == 910


def test_derived_kink_keys():
    # Kc(40), Ke(39), Ki(39) (RFC 3961 §5.3, usages of RFC 4430 §8) and the usage-40
    # checksum over 00..0f: derived illustrations, not published vectors.
    p = crypto.profile(17)
    kc, ke, ki = p.derive_keys(K17, 40)
    assert bytes(kc).hex() == "ab1ef7d4fbb31cd2866db63966370576"
    kc, ke, ki = p.derive_keys(K17, 39)
    assert bytes(ke).hex() == "38a5dec38051314df5fbc155e334fc7e"
    assert bytes(ki).hex() == "6a71816c07d45816560682ae47df909e"
    data = bytes(range(16))
    assert mic(17, K17, data).hex() == "d519447ff229681789028a6b"
    assert mic(18, K18, data).hex() == "72c7aa3b3ae2ca22844bf18d"
    assert mic(19, K19, data).hex() == "c3a974fc3825df50398f8576cba7da9e"
    assert mic(20, K20, data).hex() == "c927007cd1811ffdc0a85c3f97c4549c81f1c6cd4f9ecc53"


# ---------------------------------------------------------------------------
# Hand-built wire vectors, one per message type and per payload type

NONCE_CHAIN = h("0000000c 0102030405060708")  # ISAKMP Nonce (type 10), 8 octets
DELETE_CHAIN = h("00000010 00000001 03 04 0001 00001234")  # ISAKMP D: DOI 1, ESP, SPI 0x1234

# ACK: KINK_AP_REQ and Cksum only (RFC 4430 §6.2; AES-SHA1 key, CksumLen 12).
ACK_COVERED = h(
    "05 10 0020 00000001 01020304 01 00 0000"  # ACK, v1, L0=32, DOI 1, XID, NP=AP_REQ, A=0, CksumLen=0
    "00 00 000d 7fffffff 6e03020105 000000"  # KINK_AP_REQ len 13, EPOCH, AP-REQ, 3 pad
)
CREATE_COVERED = h(
    "01 10 0034 00000001 00003039 01 00 0000"
    "06 00 000d 12345678 6e03020105 000000"  # AP_REQ -> next ISAKMP
    "00 00 0014 0a 10 0000" + NONCE_CHAIN.hex()  # KINK_ISAKMP: inner NP=Nonce, QM 1.0
)
DELETE_COVERED = h(
    "02 10 0038 00000001 00003039 01 00 0000"
    "06 00 000d 12345678 6e03020105 000000"
    "00 00 0018 0c 10 0000" + DELETE_CHAIN.hex()  # inner NP = D (12)
)
STATUS_COVERED = h(
    "06 10 0020 00000001 0000abcd 01 00 0000"
    "00 00 000d 12345678 6e03020105 000000"
)
REPLY_COVERED = h(  # REPLY to CREATE with A=1 (3-way), unencrypted
    "03 10 0030 00000001 00003039 02 80 0000"
    "06 00 000b 87654321 6f0102 00"  # AP_REP len 11, 1 pad
    "00 00 0014 0a 10 0000" + NONCE_CHAIN.hex()
)
GETTGT = h(  # no Cksum, no trailing padding
    "04 10 0035 00000001 00000063 04 00 0000"
    "00 00 0025" + b"kink/host.example.com@EXAMPLE.COM".hex()
)
REPLY_TGT_REP = h("03 10 001a 00000001 00000063 05 00 0000  00 00 000a 610430020a00")
REPLY_KRB_ERROR = h("03 10 0019 00000001 00000063 03 00 0000  00 00 0009 7e03020105")
REPLY_ERROR = h("03 10 0018 00000001 00000063 08 00 0000  00 00 0008 00000007")

# KINK_ENCRYPT (usage 39, RFC 4430 §4.2.7) inside a REPLY, a derived illustration
# (aes128-sha1, 40 octets).
ENC17 = h("c82b46eb73e64900fc9561b57aaeeb3358cf6e27350f738bc4882003ddaed5a82837568f0d030a2b")
ENC19 = h(
    "f7fef5c1be2ab6c9998d4d5e747ed04374326a32c0fd64acb8e453fb7575df9592f73a46c71ba8ede877987f"
)
REPLY_ENC_COVERED = h(
    "03 10 0048 00000001 00000007 02 00 0000"
    "07 00 000b 00000005 6f0102 00"  # AP_REP -> next ENCRYPT
    "00 00 002c" + ENC17.hex()  # KINK_ENCRYPT, Payload Length 4 + 40
)


def test_ack_vector():
    wire_bytes = with_cksum(17, K17, ACK_COVERED)
    assert wire_bytes[:16] == h("05 10 002c 00000001 01020304 01 00 000c")
    assert len(wire_bytes) == 44
    out = encode(MessageType.ACK, 0x01020304, [ApReqPayload(0x7FFFFFFF, AP_REQ)], key=(17, K17))
    assert out == wire_bytes
    m = decode(wire_bytes)
    assert m.type is MessageType.ACK and m.xid == 0x01020304 and m.doi == 1
    assert not m.ack_request
    assert m.payloads == [ApReqPayload(0x7FFFFFFF, AP_REQ)]
    assert m.cksum == wire_bytes[32:] and m.cksum_offset == 32
    assert m.covered() == ACK_COVERED
    verify_checksum(m, 17, K17)
    assert decrypt(m, 17, K17) == [] and m.inner == []


@pytest.mark.parametrize("etype", [17, 18, 19, 20])
def test_create_vector_all_etypes(etype):
    key = KEYS[etype]
    wire_bytes = with_cksum(etype, key, CREATE_COVERED)
    payloads = [ApReqPayload(0x12345678, AP_REQ), IsakmpPayload(10, NONCE_CHAIN)]
    assert encode(MessageType.CREATE, 12345, payloads, key=(etype, key)) == wire_bytes
    m = decode(wire_bytes)
    assert m.type is MessageType.CREATE and m.payloads == payloads
    assert len(m.cksum) == crypto.profile(etype).checksum_size
    verify_checksum(m, etype, key)
    verify_checksum(m, crypto.profile(etype), key)  # a Profile works as well


def test_create_isakmp_chain_decodes_lazily():
    m = decode(with_cksum(17, K17, CREATE_COVERED))
    isa = m.find(IsakmpPayload)
    assert isa.qm_version_ok and isa.inner_next_payload == 10
    from isakmp import Nonce

    assert isa.payloads() == [Nonce(bytes(range(1, 9)))]
    assert IsakmpPayload.from_payloads([Nonce(bytes(range(1, 9)))]) == isa


def test_delete_vector():
    wire_bytes = with_cksum(17, K17, DELETE_COVERED)
    payloads = [ApReqPayload(0x12345678, AP_REQ), IsakmpPayload(12, DELETE_CHAIN)]
    assert encode(MessageType.DELETE, 12345, payloads, key=(17, K17)) == wire_bytes
    m = decode(wire_bytes)
    assert m.type is MessageType.DELETE and m.payloads == payloads
    verify_checksum(m, 17, K17)
    from isakmp import Delete

    (d,) = m.payloads[1].payloads()
    assert isinstance(d, Delete) and d.spis == [b"\x00\x00\x12\x34"]


def test_status_vector():
    wire_bytes = with_cksum(19, K19, STATUS_COVERED)
    assert wire_bytes[14:16] == b"\x00\x10"  # CksumLen 16 for aes128-sha256
    out = encode(MessageType.STATUS, 0xABCD, [ApReqPayload(0x12345678, AP_REQ)], key=(19, K19))
    assert out == wire_bytes
    m = decode(wire_bytes)
    assert m.type is MessageType.STATUS
    verify_checksum(m, 19, K19)


def test_reply_vector_with_ackreq():
    wire_bytes = with_cksum(18, K18, REPLY_COVERED)
    payloads = [ApRepPayload(0x87654321, AP_REP), IsakmpPayload(10, NONCE_CHAIN)]
    out = encode(MessageType.REPLY, 12345, payloads, ack_request=True, key=(18, K18))
    assert out == wire_bytes
    m = decode(wire_bytes)
    assert m.type is MessageType.REPLY and m.ack_request and m.payloads == payloads
    verify_checksum(m, 18, K18)


def test_gettgt_vector():
    p = TgtReqPayload("kink/host.example.com@EXAMPLE.COM")
    assert encode(MessageType.GETTGT, 0x63, [p]) == GETTGT
    m = decode(GETTGT)
    assert m.type is MessageType.GETTGT and m.payloads == [p] and m.cksum == b""
    with pytest.raises(ChecksumError) as ei:
        verify_checksum(m, 17, K17)
    assert ei.value.reason == "no-checksum"


@pytest.mark.parametrize(
    "vector, payload",
    [
        (REPLY_TGT_REP, TgtRepPayload(h("610430020a00"))),
        (REPLY_KRB_ERROR, KrbErrorPayload(h("7e03020105"))),
        (REPLY_ERROR, ErrorPayload(ErrorCode.U2UDENIED)),
    ],
)
def test_lone_reply_vectors(vector, payload):
    assert encode(MessageType.REPLY, 0x63, [payload]) == vector
    m = decode(vector)
    assert m.type is MessageType.REPLY and m.payloads == [payload] and m.cksum == b""


def test_error_payload_codes():
    m = decode(REPLY_ERROR)
    assert m.payloads[0].error is ErrorCode.U2UDENIED
    assert ErrorPayload(4).error is None  # RESERVED (ex KINK_INVMIN)
    assert ErrorPayload(9000).error is None  # private use, kept as int
    assert decode(encode(3, 1, [ErrorPayload(0xFFFFFFFF)])).payloads == [ErrorPayload(0xFFFFFFFF)]


def test_kink_encrypt_vector_aes128_sha1():
    wire_bytes = with_cksum(17, K17, REPLY_ENC_COVERED)
    out = encode(
        MessageType.REPLY, 7, [ApRepPayload(5, AP_REP), ErrorPayload(ErrorCode.PROTOERR)],
        key=(17, K17), encrypt_from=1, confounder=CONF,
    )
    assert out == wire_bytes
    m = decode(wire_bytes)
    assert m.encrypt_payload == EncryptPayload(ENC17)
    verify_checksum(m, 17, K17)
    assert decrypt(m, 17, K17) == [ErrorPayload(1)]
    assert m.all_payloads() == [ApRepPayload(5, AP_REP), ErrorPayload(1)]
    assert m.find(ErrorPayload) == ErrorPayload(1)
    # the plaintext of the illustration
    pt = crypto.profile(17).decrypt(K17, 39, ENC17)
    assert pt == h("08000000 00000008 00000001")


def test_kink_encrypt_vector_aes128_sha256():
    out = encode(
        MessageType.REPLY, 7, [ApRepPayload(5, AP_REP), ErrorPayload(1)],
        key=(19, K19), encrypt_from=1, confounder=CONF,
    )
    # KINK_ENCRYPT payload: NP 0, Payload Length 4 + 44 = 48
    assert out[28:32] == h("00 00 0030") and out[32:76] == ENC19
    m = decode(out)
    verify_checksum(m, 19, K19)
    assert decrypt(m, 19, K19) == [ErrorPayload(1)]


def test_encrypted_create_inner_alignment():
    # Two inner payloads with unaligned lengths: alignment is relative to the plaintext.
    inner = [ErrorPayload(0), KrbErrorPayload(b"\x7e\x01\x02"), IsakmpPayload(10, NONCE_CHAIN)]
    out = encode(MessageType.CREATE, 1, [ApReqPayload(1, AP_REQ), *inner], key=(18, K18),
                 encrypt_from=1, confounder=CONF)
    m = decode(out)
    assert m.payloads[0] == ApReqPayload(1, AP_REQ)
    ct = m.encrypt_payload.ciphertext
    pt = crypto.profile(18).decrypt(K18, 39, ct)
    assert pt == h(
        "08 000000"
        "03 00 0008 00000000"
        "06 00 0007 7e0102 00"  # KRB_ERROR len 7, 1 pad
        "00 00 0014 0a 10 0000" + NONCE_CHAIN.hex()  # last: no padding after it
    )
    verify_checksum(m, 18, K18)
    assert decrypt(m, 18, K18) == inner


# ---------------------------------------------------------------------------
# Header rules


def test_trailing_datagram_octets_ignored():
    wire_bytes = with_cksum(17, K17, CREATE_COVERED)
    for extra in (b"\0", b"\xff" * 3, b"garbage" * 20):
        m = decode(wire_bytes + extra)
        assert m.raw == wire_bytes
        verify_checksum(m, 17, K17)
    m = decode(GETTGT + b"\x01\x02\x03\x04\x05")
    assert m.payloads == [TgtReqPayload("kink/host.example.com@EXAMPLE.COM")]


def test_accepts_memoryview_and_bytearray():
    wire_bytes = with_cksum(17, K17, ACK_COVERED)
    for form in (bytearray(wire_bytes), memoryview(wire_bytes)):
        verify_checksum(decode(form), 17, K17)


def test_unauthenticated_trailing_pad_up_to_3():
    # GETTGT payload is 37 octets: a padding sender (TAHI) adds 3 octets inside Length.
    for pad in range(4):
        v = bytearray(GETTGT + b"\0" * pad)
        v[2:4] = struct.pack(">H", len(v))
        assert decode(bytes(v)).payloads == [TgtReqPayload("kink/host.example.com@EXAMPLE.COM")]
    v = bytearray(GETTGT + b"\0" * 4)
    v[2:4] = struct.pack(">H", len(v))
    with pytest.raises(KinkDecodeError) as ei:
        decode(bytes(v))
    assert ei.value.reason == "padding" and ei.value.error_code is ErrorCode.PROTOERR


def test_cksum_must_follow_aligned_padding():
    # AP_REQ of 13 octets, then Cksum directly at offset 29 (unaligned) -> padding error.
    covered = h("05 10 001d 00000001 01020304 01 00 0000 00 00 000d 7fffffff 6e03020105")
    with pytest.raises(KinkDecodeError) as ei:
        decode(with_cksum(17, K17, covered))
    assert ei.value.reason == "padding"


def header_error(data: bytes) -> KinkDecodeError:
    with pytest.raises(KinkDecodeError) as ei:
        decode(data)
    return ei.value


def test_header_errors():
    good = with_cksum(17, K17, ACK_COVERED)
    assert header_error(b"").reason == "short"
    assert header_error(good[:15]).reason == "short"
    e = header_error(b"\x05\x20" + good[2:])
    assert (e.reason, e.error_code, e.xid, e.message_type) == ("version", ErrorCode.INVMAJ, 0x01020304, 5)
    assert header_error(b"\x05\x00" + good[2:]).error_code is ErrorCode.INVMAJ
    e = header_error(good[:4] + b"\0\0\0\x02" + good[8:])
    assert (e.reason, e.error_code) == ("doi", ErrorCode.INVDOI)
    assert header_error(good[:-1]).reason == "length"  # Length > datagram
    assert header_error(good[:2] + b"\x00\x0f" + good[4:]).reason == "length"  # < 16
    assert header_error(good[:14] + b"\x00\x1d" + good[16:]).reason == "cksum-length"
    for t in (0, 7, 127, 128, 255):
        e = header_error(bytes([t]) + good[1:])
        assert e.reason == "message-type" and e.error_code is ErrorCode.PROTOERR


def test_reserved_bits_ignored_on_receipt():
    good = with_cksum(17, K17, ACK_COVERED)
    v = bytearray(good)
    v[1] = 0x1F  # RESRVED nibble (racoon2's "minor version") is ignored
    v[13] = 0x7F  # RESERVED2
    m = decode(bytes(v))
    assert not m.ack_request and m.payloads == [ApReqPayload(0x7FFFFFFF, AP_REQ)]
    v[13] = 0xFF
    assert decode(bytes(v)).ack_request


def test_header_only_message():
    out = encode(MessageType.STATUS, 5, [])
    assert out == h("06 10 0010 00000001 00000005 00 00 0000")
    m = decode(out)
    assert m.payloads == [] and m.cksum == b""


# ---------------------------------------------------------------------------
# Payload chain rules


def msg(np: int, chain: bytes, mtype: int = 3) -> bytes:
    return struct.pack(">BBHIIBBH", mtype, 0x10, 16 + len(chain), 1, 9, np, 0, 0) + chain


def chain_error(np: int, chain: bytes) -> KinkDecodeError:
    with pytest.raises(KinkDecodeError) as ei:
        decode(msg(np, chain))
    assert ei.value.error_code is ErrorCode.PROTOERR and ei.value.xid == 9
    return ei.value


def test_unknown_payload_types_are_protoerr():
    for t in (9, 14, 127, 128, 255):
        assert chain_error(t, h("00 00 0008 00000000")).reason == "payload-type"
    # unknown type announced by a later payload's Next Payload
    assert chain_error(8, h("09 00 0008 00000001 00 00 0008 00000000")).reason == "payload-type"


@pytest.mark.parametrize("ln", [0, 1, 2, 3])
def test_zero_or_short_payload_length(ln):
    assert chain_error(8, h("00 00") + struct.pack(">H", ln) + b"\0" * 8).reason == "payload-length"


def test_payload_length_beyond_message():
    assert chain_error(8, h("00 00 000c 00000001")).reason == "payload-length"
    assert chain_error(8, h("00 00")).reason == "payload-length"  # header cut
    assert chain_error(8, b"").reason == "payload-length"
    # next payload announced but no room for its header
    assert chain_error(8, h("08 00 0008 00000001")).reason == "payload-length"


@pytest.mark.parametrize(
    "np, body",
    [
        (1, "00000001"),  # AP_REQ without AP-REQ octets
        (2, "00000001"),
        (3, ""),
        (4, ""),
        (5, ""),
        (6, "0a1000"),  # KINK_ISAKMP shorter than its 8-octet fixed part
        (7, ""),
        (8, "000000"),  # KINK_ERROR must be exactly 8
        (8, "0000000000"),
    ],
)
def test_payload_minimum_sizes(np, body):
    b = h(body)
    chain = struct.pack(">BBH", 0, 0, 4 + len(b)) + b
    assert chain_error(np, chain).reason == "payload-length"


def test_tgt_req_must_be_utf8():
    assert chain_error(4, h("00 00 0006 ff fe")).reason == "payload-value"


def test_payload_count_bounded():
    one = h("08 00 0008 00000000")
    chain = one * wire.MAX_PAYLOADS + h("00 00 0008 00000000")
    assert chain_error(8, chain).reason == "payload-count"
    ok = one * (wire.MAX_PAYLOADS - 1) + h("00 00 0008 00000000")
    assert len(decode(msg(8, ok)).payloads) == wire.MAX_PAYLOADS


def test_encrypt_not_last():
    chain = h("08 00 0008 00112233 00 00 0008 00000000")  # ENCRYPT -> ERROR
    assert chain_error(7, chain).reason == "encrypt-not-last"


def test_nested_encrypt_rejected():
    p = crypto.profile(17)
    plaintext = h("07 000000 00 00 0008 00112233")  # inner chain starts with KINK_ENCRYPT
    ct = p.encrypt(K17, 39, plaintext, CONF)
    out = encode(3, 1, [ApRepPayload(1, AP_REP), EncryptPayload(ct)], key=(17, K17))
    m = decode(out)
    verify_checksum(m, 17, K17)
    with pytest.raises(KinkDecodeError) as ei:
        decrypt(m, 17, K17)
    assert ei.value.reason == "nested-encrypt" and ei.value.xid == 1
    plaintext = h("08 000000 07 00 0008 00000000 00 00 0008 00112233")  # ERROR -> ENCRYPT
    m = decode(encode(3, 1, [ApRepPayload(1, AP_REP), EncryptPayload(p.encrypt(K17, 39, plaintext))],
                      key=(17, K17)))
    with pytest.raises(KinkDecodeError) as ei:
        decrypt(m, 17, K17)
    assert ei.value.reason == "nested-encrypt"


def test_decrypted_trailing_octets_ignored():
    p = crypto.profile(17)
    for trailer in (b"", b"\0", b"\0\0\0", b"\x07" * 15):
        plaintext = h("08 000000 00 00 0008 00000005") + trailer
        out = encode(3, 1, [ApRepPayload(1, AP_REP), EncryptPayload(p.encrypt(K17, 39, plaintext))],
                     key=(17, K17))
        m = decode(out)
        assert decrypt(m, 17, K17) == [ErrorPayload(5)]


def test_decrypt_errors():
    out = encode(3, 1, [ApRepPayload(1, AP_REP), ErrorPayload(1)], key=(17, K17), encrypt_from=1)
    m = decode(out)
    with pytest.raises(DecryptError) as ei:
        decrypt(m, 17, K18[:16])  # wrong key
    assert ei.value.reason == "decrypt" and m.inner is None
    with pytest.raises(DecryptError):
        decrypt(m, 18, K18)  # wrong etype
    # ciphertext too short for the profile
    m = decode(encode(3, 1, [ApRepPayload(1, AP_REP), EncryptPayload(b"\x01" * 10)], key=(17, K17)))
    with pytest.raises(DecryptError):
        decrypt(m, 17, K17)
    # plaintext shorter than InnerNextPload + RESERVED2
    ct = crypto.profile(17).encrypt(K17, 39, b"\x08\0")
    m = decode(encode(3, 1, [ApRepPayload(1, AP_REP), EncryptPayload(ct)], key=(17, K17)))
    with pytest.raises(KinkDecodeError) as ei:
        decrypt(m, 17, K17)
    assert ei.value.reason == "encrypt-short"
    # bad inner chain
    ct = crypto.profile(17).encrypt(K17, 39, h("08 000000 00 00 0009 00000005"))
    m = decode(encode(3, 1, [ApRepPayload(1, AP_REP), EncryptPayload(ct)], key=(17, K17)))
    with pytest.raises(KinkDecodeError) as ei:
        decrypt(m, 17, K17)
    assert ei.value.reason == "payload-length"


def test_qm_version():
    chain = h("00 00 0014 0a 20 0000") + NONCE_CHAIN  # QM 2.0
    m = decode(msg(6, chain))  # decode keeps it: the check belongs after Kerberos
    isa = m.payloads[0]
    assert (isa.qm_major, isa.qm_minor) == (2, 0) and not isa.qm_version_ok
    with pytest.raises(KinkDecodeError) as ei:
        isa.payloads()
    assert ei.value.error_code is ErrorCode.BADQMVERS and ei.value.reason == "qm-version"
    isa = decode(msg(6, h("00 00 0014 0a 11 0000") + NONCE_CHAIN)).payloads[0]
    with pytest.raises(KinkDecodeError):
        isa.payloads()  # 1.1 is not 1.0
    assert decode(encode(3, 1, [isa])).payloads == [isa]  # round-trips unchanged


def test_isakmp_chain_errors_are_isakmp_errors():
    isa = IsakmpPayload(10, h("0000000c 01020304"))  # Nonce length beyond chain
    with pytest.raises(IsakmpError):
        isa.payloads()
    assert IsakmpPayload(0, b"").payloads() == []


# ---------------------------------------------------------------------------
# Checksum coverage


def test_every_covered_octet_is_protected():
    good = encode(MessageType.CREATE, 77, [ApReqPayload(3, AP_REQ), ErrorPayload(0),
                                             IsakmpPayload(10, NONCE_CHAIN)],
                  key=(17, K17), encrypt_from=1, confounder=CONF)
    verify_checksum(decode(good), 17, K17)
    for i in range(len(good)):
        for bit in (0x01, 0x80):
            v = bytearray(good)
            v[i] ^= bit
            try:
                m = decode(bytes(v))
            except KinkDecodeError:
                continue
            with pytest.raises(ChecksumError):
                verify_checksum(m, 17, K17)


def test_covered_region_is_patched_header():
    good = with_cksum(17, K17, CREATE_COVERED)
    m = decode(good)
    assert m.covered() == CREATE_COVERED
    assert m.cksum_offset == len(CREATE_COVERED)


def test_bytes_after_length_do_not_matter():
    good = with_cksum(17, K17, CREATE_COVERED)
    a, b = decode(good + b"\x00" * 9), decode(good + b"\xff" * 9)
    verify_checksum(a, 17, K17)
    verify_checksum(b, 17, K17)
    assert a.covered() == b.covered()


def test_checksum_errors():
    good = with_cksum(17, K17, ACK_COVERED)
    m = decode(good)
    with pytest.raises(ChecksumError) as ei:
        verify_checksum(m, 17, bytes(16))
    assert ei.value.reason == "checksum"
    with pytest.raises(ChecksumError) as ei:
        verify_checksum(m, 19, K19)  # 12-octet Cksum, aes-sha2 needs 16
    assert ei.value.reason == "checksum-length"
    unauth = decode(encode(MessageType.ACK, 1, [ApReqPayload(1, AP_REQ)]))
    with pytest.raises(ChecksumError) as ei:
        verify_checksum(unauth, 17, K17)
    assert ei.value.reason == "no-checksum"
    assert isinstance(ei.value, KinkDecodeError)
    with pytest.raises(ChecksumError):
        verify_checksum(m, 17, K17[:5])  # bad key length: still a typed error


# ---------------------------------------------------------------------------
# Encoding errors


def test_encode_errors():
    with pytest.raises(ValueError):
        encode(1, 1, [ErrorPayload(1)], encrypt_from=0)  # no key
    with pytest.raises(ValueError):
        encode(1, 1, [ErrorPayload(1)], key=(17, K17), encrypt_from=1)
    with pytest.raises(ValueError):
        encode(1, 1, [EncryptPayload(b"x"), ErrorPayload(1)])
    with pytest.raises(ValueError):
        encode(1, 1, [ErrorPayload(1), EncryptPayload(b"x")], key=(17, K17), encrypt_from=0)
    with pytest.raises(ValueError):
        encode(1, 1 << 32, [ErrorPayload(1)])
    with pytest.raises(ValueError):
        encode(1, 1, [ErrorPayload(-1)])
    with pytest.raises(ValueError):
        encode(1, 1, [ApReqPayload(1, b"")])
    with pytest.raises(ValueError):
        encode(1, 1, [KrbErrorPayload(b"x" * 70000)])
    with pytest.raises(ValueError):
        encode(1, 1, [KrbErrorPayload(b"x" * 40000), KrbErrorPayload(b"x" * 40000)])
    with pytest.raises(ValueError):
        encode(1, 1, [IsakmpPayload(1, b"", qm_major=16)])
    with pytest.raises(TypeError):
        encode(1, 1, [object()])


# ---------------------------------------------------------------------------
# RFC 1964 principal strings


def test_principal_strings():
    assert wire.format_principal(["kink", "host.example.com"], "EXAMPLE.COM") == \
        "kink/host.example.com@EXAMPLE.COM"
    assert wire.parse_principal("kink/host.example.com@EXAMPLE.COM") == \
        (("kink", "host.example.com"), "EXAMPLE.COM")
    s = wire.format_principal(["a/b", "c@d\\", "\0\b\t\n"], "R@/")
    assert s == "a\\/b/c\\@d\\\\/\\0\\b\\t\\n@R\\@\\/"
    assert wire.parse_principal(s) == (("a/b", "c@d\\", "\0\b\t\n"), "R@/")
    for bad in ("noreal", "a@", "@R", "a//b@R", "a@R@S", "a\\x@R", "a@R\\"):
        with pytest.raises(ValueError):
            wire.parse_principal(bad)


@given(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=4), st.text(min_size=1, max_size=10))
def test_principal_roundtrip(comps, realm):
    assert wire.parse_principal(wire.format_principal(comps, realm)) == (tuple(comps), realm)


# ---------------------------------------------------------------------------
# Property-based round trips

blob = st.binary(min_size=1, max_size=80)
u32 = st.integers(0, 0xFFFFFFFF)
text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)

plain_payload = st.one_of(
    st.builds(ApReqPayload, u32, blob),
    st.builds(ApRepPayload, u32, blob),
    st.builds(KrbErrorPayload, blob),
    st.builds(TgtReqPayload, text),
    st.builds(TgtRepPayload, blob),
    st.builds(IsakmpPayload, st.integers(0, 255), st.binary(max_size=80), st.integers(0, 15),
              st.integers(0, 15)),
    st.builds(ErrorPayload, u32),
)
mtypes = st.sampled_from(list(MessageType))


@given(mtypes, u32, st.lists(plain_payload, max_size=8), st.booleans(),
       st.one_of(st.none(), blob.map(EncryptPayload)))
def test_roundtrip_unauthenticated(mtype, xid, payloads, ackreq, enc):
    if enc is not None:
        payloads = [*payloads, enc]
    out = encode(mtype, xid, payloads, ack_request=ackreq)
    m = decode(out)
    assert (m.type, m.xid, m.ack_request, m.doi, m.cksum) == (mtype, xid, ackreq, 1, b"")
    assert m.payloads == payloads
    assert encode(m.type, m.xid, m.payloads, ack_request=m.ack_request) == out


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(mtypes, u32, st.lists(plain_payload, min_size=1, max_size=6), st.data(),
       st.sampled_from([17, 18, 19, 20]))
def test_roundtrip_authenticated_encrypted(mtype, xid, payloads, data, etype):
    key = KEYS[etype]
    ef = data.draw(st.one_of(st.none(), st.integers(0, len(payloads) - 1)))
    out = encode(mtype, xid, payloads, key=(etype, key), encrypt_from=ef, confounder=CONF)
    assert len(out) % 4 == 0  # everything aligned when a Cksum is present
    m = decode(out)
    verify_checksum(m, etype, key)
    inner = decrypt(m, etype, key)
    assert m.all_payloads() == payloads
    if ef is None:
        assert inner == [] and m.payloads == payloads
    else:
        assert inner == payloads[ef:] and m.payloads[:-1] == payloads[:ef]
        # re-encoding the decoded message with the same confounder is byte-identical
        again = encode(m.type, m.xid, m.all_payloads(), key=(etype, key), encrypt_from=ef,
                       confounder=CONF)
        assert again == out


# ---------------------------------------------------------------------------
# Fuzzing: only KinkDecodeError (and IsakmpError from the lazy ISAKMP decode) escape


def process(data: bytes) -> None:
    try:
        m = decode(data)
    except KinkDecodeError:
        return
    assert len(m.raw) <= len(data)
    for etype in (17, 19):
        try:
            verify_checksum(m, etype, KEYS[etype])
        except ChecksumError:
            pass
        try:
            decrypt(m, etype, KEYS[etype])
        except KinkDecodeError:
            pass
    for p in m.all_payloads():
        if isinstance(p, IsakmpPayload):
            try:
                p.payloads()
            except (KinkDecodeError, IsakmpError):
                pass


SEEDS = [
    with_cksum(17, K17, ACK_COVERED),
    with_cksum(17, K17, CREATE_COVERED),
    with_cksum(19, K19, STATUS_COVERED),
    with_cksum(17, K17, DELETE_COVERED),
    with_cksum(17, K17, REPLY_ENC_COVERED),
    GETTGT, REPLY_TGT_REP, REPLY_KRB_ERROR, REPLY_ERROR,
]


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data):
    process(data)


@settings(max_examples=300)
@given(st.binary(min_size=16, max_size=120))
def test_fuzz_random_body_valid_header(body):
    # A valid header in front of random octets reaches the chain walker.
    for np in (1, 6, 7, 8):
        for ck in (0, 12):
            data = struct.pack(">BBHIIBBH", 1, 0x10, 16 + len(body), 1, 1, np, 0, min(ck, len(body))) + body
            process(data)


@settings(max_examples=400)
@given(st.sampled_from(SEEDS), st.data())
def test_fuzz_mutations(seed, data):
    v = bytearray(seed)
    kind = data.draw(st.sampled_from(["truncate", "flip", "u16", "byte", "extend"]))
    if kind == "truncate":
        v = v[: data.draw(st.integers(0, len(v)))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(v) - 1))
            v[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "u16":  # wrong length fields (header Length/CksumLen or a payload length)
        off = data.draw(st.sampled_from([2, 14, 18, 34, 38, 50] + list(range(0, len(v) - 1, 2))))
        if off + 2 <= len(v):
            v[off : off + 2] = struct.pack(">H", data.draw(st.integers(0, 0xFFFF)))
    elif kind == "byte":  # payload types / next payload / versions
        i = data.draw(st.integers(0, len(v) - 1))
        v[i] = data.draw(st.integers(0, 255))
    else:
        v += data.draw(st.binary(max_size=32))
    process(bytes(v))


def test_fuzz_truncations_exhaustive():
    for seed in SEEDS:
        for n in range(len(seed)):
            with pytest.raises(KinkDecodeError):
                decode(seed[:n])  # Length always exceeds a truncated datagram
            # the same prefix with Length fixed up must fail or parse, never crash
            if n >= 16:
                v = bytearray(seed[:n])
                v[2:4] = struct.pack(">H", n)
                process(bytes(v))
