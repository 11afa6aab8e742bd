"""IKEv1 phase-1 keys, IVs, CBC and hashes (ikev1.crypto, ikev1.phase1) against an
independent reading of RFC 2409 §5 / Appendix B written here with hmac and hashlib."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from ikev1 import crypto
from ikev1.phase1 import (
    HashAlgorithm,
    Phase1Params,
    build_phase1_offer,
    parse_ike_proposal,
    parse_phase1_transform,
    select_phase1,
)
from isakmp.errors import IsakmpError, NoProposalChosen
from isakmp.payloads import SecurityAssociation, decode_payloads, encode_payloads

HASHES = {HashAlgorithm.SHA: "sha1", HashAlgorithm.SHA2_256: "sha256",
          HashAlgorithm.SHA2_384: "sha384", HashAlgorithm.SHA2_512: "sha512"}

PSK = b"kinkd-test-main-mode-psk"
NI = bytes(range(32))
NR = bytes(range(100, 132))
GXY = bytes.fromhex("5a" * 256)
CKY_I = bytes.fromhex("0011223344556677")
CKY_R = bytes.fromhex("8899aabbccddeeff")


def _ref(name, key, data):
    return hmac.new(key, data, name).digest()


@pytest.mark.parametrize("h", list(HASHES))
@pytest.mark.parametrize("bits", [128, 256])
def test_skeyid_family_and_key_expansion(h, bits):
    p = Phase1Params(bits, h, 14)
    name = HASHES[h]
    k = crypto.derive_phase1(p, PSK, NI, NR, GXY, CKY_I, CKY_R)
    skeyid = _ref(name, PSK, NI + NR)
    d = _ref(name, skeyid, GXY + CKY_I + CKY_R + b"\x00")
    a = _ref(name, skeyid, d + GXY + CKY_I + CKY_R + b"\x01")
    e = _ref(name, skeyid, a + GXY + CKY_I + CKY_R + b"\x02")
    assert (k.skeyid, k.skeyid_d, k.skeyid_a, k.skeyid_e) == (skeyid, d, a, e)
    if len(e) >= bits // 8:
        assert k.enc_key == e[: bits // 8]
    else:  # sha1 (20 octets) with aes256: Appendix B expansion
        k1 = _ref(name, e, b"\x00")
        k2 = _ref(name, e, k1)
        assert k.enc_key == (k1 + k2)[:32]
        assert k.enc_key != e[:20] + e[:12]
    assert len(k.enc_key) == bits // 8


def test_expansion_is_used_only_when_needed():
    p = Phase1Params(256, HashAlgorithm.SHA, 14)
    e = bytes(20)
    assert crypto.expand_key(p, e, 16) == e[:16]
    assert crypto.expand_key(p, e, 32) != e[:20] + bytes(12)
    assert crypto.expand_key(p, e, 32)[:20] == _ref("sha1", e, b"\0")


def test_auth_hashes_and_ivs():
    p = Phase1Params(128, HashAlgorithm.SHA2_256, 14)
    skeyid = b"S" * 32
    gxi, gxr, sai, idii, idir = b"I" * 256, b"R" * 256, b"SA" * 20, b"\x01\0\0\0" + b"\xc6\x12\x01\x01", b"\x01\0\0\0" + b"\xc6\x12\x01\x02"
    assert crypto.hash_i(p, skeyid, gxi, gxr, CKY_I, CKY_R, sai, idii) == _ref(
        "sha256", skeyid, gxi + gxr + CKY_I + CKY_R + sai + idii)
    assert crypto.hash_r(p, skeyid, gxi, gxr, CKY_I, CKY_R, sai, idir) == _ref(
        "sha256", skeyid, gxr + gxi + CKY_R + CKY_I + sai + idir)
    assert crypto.phase1_iv(p, gxi, gxr) == hashlib.sha256(gxi + gxr).digest()[:16]
    last = bytes(range(16))
    assert crypto.phase2_iv(p, last, 0x01020304) == hashlib.sha256(
        last + b"\x01\x02\x03\x04").digest()[:16]
    a = b"A" * 32
    mid = 0xDEADBEEF
    m = mid.to_bytes(4, "big")
    assert crypto.qm_hash1(p, a, mid, b"rest") == _ref("sha256", a, m + b"rest")
    assert crypto.qm_hash2(p, a, mid, NI, b"rest") == _ref("sha256", a, m + NI + b"rest")
    assert crypto.qm_hash3(p, a, mid, NI, NR) == _ref("sha256", a, b"\0" + m + NI + NR)
    assert crypto.informational_hash(p, a, mid, b"D") == _ref("sha256", a, m + b"D")


def test_cbc_round_trip_and_chaining():
    key, iv = bytes(range(16)), bytes(16)
    pt = b"x" * 37
    ct = crypto.cbc_encrypt(key, iv, pt)
    assert len(ct) == 48
    ref = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    assert (ref.update(ct) + ref.finalize())[:37] == pt
    assert crypto.cbc_decrypt(key, iv, ct)[:37] == pt
    with pytest.raises(Exception, match="block size"):
        crypto.cbc_decrypt(key, iv, ct[:-1])


def test_phase1_proposals_round_trip_and_selection():
    ours = [parse_ike_proposal("aes256-sha256-modp2048"), parse_ike_proposal("aes128-sha1-ecp256")]
    offer = build_phase1_offer(ours)
    first, body = encode_payloads([offer])
    (back,) = decode_payloads(first, body)
    assert isinstance(back, SecurityAssociation)
    assert [parse_phase1_transform(t) for t in back.proposals[0].transforms] == ours
    t, chosen = select_phase1(back, [parse_ike_proposal("aes128-sha1-ecp256", life_seconds=600)])
    assert t.number == 2 and chosen.group == 19 and chosen.life_seconds == 600
    with pytest.raises(NoProposalChosen):
        select_phase1(back, [parse_ike_proposal("aes128-sha384-ecp384")])
    for bad in ("aes128-sha256", "3des-sha1-modp2048", "aes128-md5-modp2048",
                "aes128-sha256-modp1024"):
        with pytest.raises(ValueError):
            parse_ike_proposal(bad)

_SUITES = st.builds(
    Phase1Params, st.sampled_from([128, 256]),
    st.sampled_from([int(h) for h in HASHES]), st.sampled_from([14, 19, 20]),
    st.one_of(st.none(), st.integers(1, 2**32 - 1)))


@given(st.lists(_SUITES, min_size=1, max_size=8))
def test_phase1_offers_round_trip(suites):
    first, body = encode_payloads([build_phase1_offer(suites)])
    (back,) = decode_payloads(first, body)
    assert [parse_phase1_transform(t) for t in back.proposals[0].transforms] == suites
    assert back.encode() == build_phase1_offer(suites).encode()


@given(st.binary(max_size=300))
def test_phase1_decoding_raises_only_typed_errors(data):
    try:
        (sa,) = decode_payloads(1, data)
    except IsakmpError:
        return
    except ValueError:  # more than one payload in the chain
        return
    try:
        select_phase1(sa, [parse_ike_proposal("aes128-sha256-modp2048")])
    except IsakmpError:
        pass


def test_openssl_modp_agrees_with_the_exact_python_computation():
    """The OpenSSL MODP path and the pure-Python one are the same group: each side's
    shared secret from the other's public value is equal (and left-padded)."""
    import random

    from isakmp import dh

    for group in (14, 2):
        fast = dh.new(group, random.Random(1))
        slow = dh._Modp(group, random.Random(2))
        assert type(fast).__name__ == "_ModpOpenSSL"
        assert fast.shared(slow.public) == slow.shared(fast.public)
        assert len(fast.public) == len(slow.public) == fast.size
        for bad in (b"\0" * fast.size, (fast.p - 1).to_bytes(fast.size, "big"), b"\1"):
            with pytest.raises(ValueError):
                fast.shared(bad)
