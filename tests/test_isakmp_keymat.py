"""KEYMAT expansion (RFC 2409 §5.5), splitting and the algorithm catalogue."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from isakmp import algorithms as alg
from isakmp.doi import AhTransformId, AuthAlgorithm, EspTransformId, NotifyType, ProtocolId
from isakmp.errors import AttributesNotSupported
from isakmp.keymat import (
    KeyMaterial,
    derive,
    expand,
    hmac_prf,
    keymat_length,
    seed,
    split,
)
from isakmp.plugin import KeySource, StaticKeySource
from isakmp.proposals import parse_proposal
from isakmp.secret import Secret

# --- independent reference computations -----------------------------------------


def ref_keymat(hash_name, key, parts, length):
    """RFC 2409 §5.5 written out directly: K1 = prf(k, seed), Kn = prf(k, Kn-1 | seed)."""
    s = b"".join(parts)
    out = b""
    k = b""
    while len(out) < length:
        k = hmac.new(key, k + s, getattr(hashlib, hash_name)).digest()
        out += k
    return out[:length]


def _nfold(data: bytes, n: int) -> bytes:
    """RFC 3961 §5.1 n-fold (bit-string based, independent of the library code)."""
    from math import lcm

    length = len(data)
    total = lcm(n, length)
    bits = length * 8
    x = int.from_bytes(data, "big")
    buf = b""
    for i in range(total // length):
        r = (13 * i) % bits
        rot = ((x >> r) | (x << (bits - r))) & ((1 << bits) - 1)
        buf += rot.to_bytes(length, "big")
    acc = 0
    mod = 1 << (n * 8)
    for j in range(0, total, n):
        acc += int.from_bytes(buf[j : j + n], "big")
        while acc >= mod:
            acc = (acc & (mod - 1)) + (acc >> (n * 8))
    return acc.to_bytes(n, "big")


def _aes_block(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - single block
    return enc.update(block) + enc.finalize()


def _dk_prf_key(key: bytes) -> bytes:
    """DK(key, "prf") for AES (random-to-key = identity)."""
    k = _aes_block(key, _nfold(b"prf", 16))
    out = k
    while len(out) < len(key):
        k = _aes_block(key, k)
        out += k
    return out[: len(key)]


def aes_sha1_prf_literal(key: bytes, data: bytes) -> bytes:
    """Literal RFC 3961 §5.3 reading (m = 1, racoon2): AES-CTS over the full 20-octet SHA-1."""
    kp = _dk_prf_key(key)
    h = hashlib.sha1(data).digest()
    c1 = _aes_block(kp, h[:16])
    c2 = _aes_block(kp, bytes(a ^ b for a, b in zip(c1, h[16:20] + bytes(12), strict=True)))
    return c2 + c1[:4]


def aes_sha1_prf_library(key: bytes, data: bytes) -> bytes:
    """MIT/Heimdal ``krb5_c_prf`` reading: one AES block over SHA-1 truncated to 16."""
    return _aes_block(_dk_prf_key(key), hashlib.sha1(data).digest()[:16])


def rfc8009_prf(hash_name: str, bits: int):
    def prf(key: bytes, data: bytes) -> bytes:
        msg = b"\x00\x00\x00\x01" + b"prf" + b"\x00" + data + struct.pack(">I", bits)
        return hmac.new(key, msg, getattr(hashlib, hash_name)).digest()[: bits // 8]

    return prf


# --- expansion ----------------------------------------------------------------------

KEY = bytes(range(0x40, 0x54))
NI = bytes(range(16))
NR = bytes(range(0xA0, 0xB8))
G_XY = bytes(range(0xC0, 0x100)) * 4


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
@pytest.mark.parametrize("rounds", [1, 2, 3])
@pytest.mark.parametrize("with_nr", [False, True])
@pytest.mark.parametrize("with_ke", [False, True])
def test_expand_matches_reference(hash_name, rounds, with_nr, with_ke):
    block = hashlib.new(hash_name).digest_size
    length = block * (rounds - 1) + 5  # forces exactly `rounds` prf calls
    nr = NR if with_nr else b""
    gxy = G_XY if with_ke else b""
    got = expand(hmac_prf(hash_name), KEY, ProtocolId.ESP, 0x12345678, NI, nr, gxy, length=length)
    parts = [gxy, b"\x03", bytes.fromhex("12345678"), NI, nr]
    assert bytes(got) == ref_keymat(hash_name, KEY, parts, length)
    assert isinstance(got, Secret)
    assert len(got) == length


def test_prf_call_count_and_chaining():
    calls = []

    def prf(key, data):
        calls.append(data)
        return hashlib.sha256(key + data).digest()[:7]  # odd fixed size

    s = seed(ProtocolId.AH, 0x100, NI)
    out = expand(prf, KEY, ProtocolId.AH, 0x100, NI, length=20)
    assert len(calls) == 3
    assert calls[0] == s
    k1 = hashlib.sha256(KEY + s).digest()[:7]
    assert calls[1] == k1 + s
    assert bytes(out)[:7] == k1


def test_shorter_keymat_is_prefix():
    prf = hmac_prf("sha1")
    long = expand(prf, KEY, 3, 0x1234, NI, NR, length=100)
    for n in (0, 1, 19, 20, 21, 44, 99):
        assert bytes(expand(prf, KEY, 3, 0x1234, NI, NR, length=n)) == bytes(long)[:n]


def test_seed_layout():
    assert seed(3, 0x1234, NI) == bytes.fromhex("0300001234") + NI
    assert seed(3, b"\xab\xcd", NI, NR, b"\x01\x02") == b"\x01\x02\x03\xab\xcd" + NI + NR
    with pytest.raises(ValueError):
        seed(3, 1 << 32, NI)
    with pytest.raises(ValueError):
        seed(256, 1, NI)
    with pytest.raises(ValueError):
        seed(3, 1, b"")


def test_expand_rejects_bad_prf_and_length():
    with pytest.raises(ValueError):
        expand(lambda k, d: b"", KEY, 3, 1, NI, length=4)
    sizes = iter([20, 19])
    with pytest.raises(ValueError):
        expand(lambda k, d: bytes(next(sizes)), KEY, 3, 1, NI, length=30)
    with pytest.raises(ValueError):
        expand(hmac_prf("sha1"), KEY, 3, 1, NI, length=-1)
    with pytest.raises(ValueError):
        hmac_prf("no-such-hash")


def test_spi_differs_per_direction():
    prf = hmac_prf("sha256")
    a = expand(prf, KEY, 3, 0x1000, NI, NR, length=36)
    b = expand(prf, KEY, 3, 0x2000, NI, NR, length=36)
    assert a != b


# --- worked examples (derived, not published vectors) ----------------------------------
# RFC 2409 §5.5 KEYMAT from the RFC 3962 App. B iteration-1 aes128 key as session key.

SESSION_128 = bytes.fromhex("42263c6e89f4fc28b8df68ee09799f15")
NI_EX = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
EX_SPI = 0x00001234


def _example(prf):
    c = alg.cipher_spec(EspTransformId.ESP_AES_CBC, 128)
    i = alg.integrity_spec(AuthAlgorithm.HMAC_SHA)
    km = derive(prf, SESSION_128, ProtocolId.ESP, EX_SPI, NI_EX, cipher=c, integrity=i)
    return km.encryption.reveal_hex(), km.integrity.reveal_hex()


def test_local_prf_key_matches_derived_value():
    assert _dk_prf_key(SESSION_128).hex() == "35c2d50356823368668be794012f9eab"


def test_worked_example_aes_sha1_literal():
    assert _example(aes_sha1_prf_literal) == (
        "0f6713a1103e53d8484f78afe8076e5d",
        "41a5e63f018bbfc41f9e3d449e8c2c11719563c8",
    )


def test_worked_example_aes_sha1_library():
    assert _example(aes_sha1_prf_library) == (
        "41a5e63fc25a5104101f263fc26859dc",
        "3cebb227426fc782388740d2e43568ef22b44376",
    )


def test_worked_example_rfc8009():
    key19 = bytes.fromhex("3705d96080c17728a0e800eab6e0d23c")
    key20 = bytes.fromhex("6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b7182460c52")
    c = alg.cipher_spec(EspTransformId.ESP_AES_CBC, 128)
    i = alg.integrity_spec(AuthAlgorithm.HMAC_SHA)
    km = derive(rfc8009_prf("sha256", 256), key19, 3, EX_SPI, NI_EX, cipher=c, integrity=i)
    assert km.encryption.reveal_hex() == "123312cb226dcde86fe2dbfac2845969"
    assert km.integrity.reveal_hex() == "c3db5e905d43613d756e9c27c7f8c7ecfb69b2a5"
    km = derive(rfc8009_prf("sha384", 384), key20, 3, EX_SPI, NI_EX, cipher=c, integrity=i)
    assert km.encryption.reveal_hex() == "663fb56120eba223ea8c88dc650c90bd"
    assert km.integrity.reveal_hex() == "d0a6bde7ac3ba448ff0906add209e7fb83c80500"


def test_worked_example_with_kinkd_kerberos_crypto():
    """Cross-check against the project's Kerberos PRF if it exists (tests may import kinkd)."""
    crypto = pytest.importorskip("kink.kerberos.crypto")
    if not hasattr(crypto, "profile") or not hasattr(crypto, "prf_rfc3961_literal"):
        pytest.skip("kink.kerberos.crypto lacks profile()/prf_rfc3961_literal()")
    assert _example(crypto.profile(17).prf) == _example(aes_sha1_prf_library)
    assert _example(crypto.prf_rfc3961_literal) == _example(aes_sha1_prf_literal)


def test_key_source_protocol():
    src = StaticKeySource(SESSION_128, aes_sha1_prf_literal, "aes128-cts-hmac-sha1-96")
    assert isinstance(src, KeySource)
    assert isinstance(src.skeyid_d, Secret)
    assert "42263c" not in repr(src)
    out = expand(src.prf, src.skeyid_d, 3, EX_SPI, NI_EX, length=16)
    assert out.reveal_hex() == "0f6713a1103e53d8484f78afe8076e5d"


# --- splitting ------------------------------------------------------------------------


def _esp(tid, bits=None, auth=None):
    c = alg.cipher_spec(tid, bits)
    i = None if auth is None else alg.integrity_spec(auth)
    return c, i


E = EspTransformId
AA = AuthAlgorithm

# KEYMAT split (RFC 2409 leaves it to the IPsec service; racoon2 and libreswan take the
# encryption key first): (cipher, key bits, auth) -> (encryption octets, integrity octets)
SPLIT_TABLE = [
    ((E.ESP_3DES, None, AA.HMAC_SHA), 24, 20),
    ((E.ESP_AES_CBC, 128, AA.HMAC_SHA), 16, 20),
    ((E.ESP_AES_CBC, 192, AA.HMAC_SHA), 24, 20),
    ((E.ESP_AES_CBC, 256, AA.HMAC_SHA), 32, 20),
    ((E.ESP_AES_CBC, 128, AA.HMAC_MD5), 16, 16),
    ((E.ESP_AES_CBC, 256, AA.HMAC_SHA2_256), 32, 32),
    ((E.ESP_AES_CBC, 256, AA.HMAC_SHA2_384), 32, 48),
    ((E.ESP_AES_CBC, 256, AA.HMAC_SHA2_512), 32, 64),
    ((E.ESP_AES_CBC, 128, AA.AES_XCBC_MAC), 16, 16),
    ((E.ESP_AES_CTR, 128, AA.HMAC_SHA), 20, 20),
    ((E.ESP_AES_CTR, 256, AA.HMAC_SHA2_256), 36, 32),
    ((E.ESP_AES_GCM_16, 128, None), 20, 0),
    ((E.ESP_AES_GCM_8, 256, None), 36, 0),
    ((E.ESP_AES_GCM_12, 192, None), 28, 0),
    ((E.ESP_AES_CCM_8, 128, None), 19, 0),
    ((E.ESP_AES_CCM_16, 256, None), 35, 0),
    ((E.ESP_NULL_AUTH_AES_GMAC, 128, None), 20, 0),
    ((E.ESP_NULL, None, AA.HMAC_SHA), 0, 20),
    ((E.ESP_CAMELLIA, 128, AA.HMAC_SHA2_256), 16, 32),
]


@pytest.mark.parametrize(("args", "enc", "integ"), SPLIT_TABLE)
def test_split_per_algorithm(args, enc, integ):
    c, i = _esp(*args)
    assert keymat_length(c, i) == enc + integ
    km_bytes = bytes(range(200))
    km = split(km_bytes, c, i)
    assert isinstance(km, KeyMaterial)
    assert isinstance(km.encryption, Secret) and isinstance(km.integrity, Secret)
    assert bytes(km.encryption) == km_bytes[:enc]  # encryption key (+ salt) first
    assert bytes(km.integrity) == km_bytes[enc : enc + integ]  # then integrity key
    assert "00010203" not in repr(km)


@pytest.mark.parametrize(
    ("ah", "octets"),
    [
        (AhTransformId.AH_MD5, 16),
        (AhTransformId.AH_SHA, 20),
        (AhTransformId.AH_SHA2_256, 32),
        (AhTransformId.AH_AES_XCBC_MAC, 16),
        (AhTransformId.AH_AES_256_GMAC, 36),
    ],
)
def test_split_ah(ah, octets):
    i = alg.ah_integrity_spec(ah)
    assert keymat_length(None, i) == octets
    km = split(bytes(range(100)), None, i)
    assert km.encryption == b"" and bytes(km.integrity) == bytes(range(octets))


def test_salt_follows_key_in_encryption_blob():
    c = alg.cipher_spec(E.ESP_AES_GCM_16, 256)
    assert (c.key_bits, c.salt_bytes, c.key_bytes) == (256, 4, 36)
    km = split(bytes(range(36)), c, None)
    assert bytes(km.encryption)[:32] == bytes(range(32))  # AES key
    assert bytes(km.encryption)[32:] == bytes(range(32, 36))  # salt


def test_derive_equals_expand_then_split():
    prf = hmac_prf("sha1")
    c, i = _esp(E.ESP_AES_CBC, 256, AA.HMAC_SHA2_256)
    km = derive(prf, KEY, 3, 0x4242, NI, NR, cipher=c, integrity=i)
    raw = expand(prf, KEY, 3, 0x4242, NI, NR, length=64)
    assert km == split(raw, c, i)


def test_split_errors():
    c, _ = _esp(E.ESP_AES_GCM_16, 128)
    with pytest.raises(ValueError):
        keymat_length(c, alg.integrity_spec(AA.HMAC_SHA))  # AEAD + integrity
    with pytest.raises(ValueError):
        keymat_length(None, None)
    c, i = _esp(E.ESP_AES_CBC, 128, AA.HMAC_SHA)
    with pytest.raises(ValueError):
        split(bytes(35), c, i)


# --- catalogue --------------------------------------------------------------------------


def test_catalogue_names():
    cases = {
        (E.ESP_3DES, None): ("cbc(des3_ede)", "3des", "crypt"),
        (E.ESP_AES_CBC, 128): ("cbc(aes)", "aes128", "crypt"),
        (E.ESP_AES_CTR, 192): ("rfc3686(ctr(aes))", "aes192ctr", "crypt"),
        (E.ESP_AES_GCM_16, 128): ("rfc4106(gcm(aes))", "aes128gcm16", "aead"),
        (E.ESP_AES_GCM_8, 256): ("rfc4106(gcm(aes))", "aes256gcm8", "aead"),
        (E.ESP_AES_CCM_12, 128): ("rfc4309(ccm(aes))", "aes128ccm12", "aead"),
        (E.ESP_NULL_AUTH_AES_GMAC, 256): ("rfc4543(gcm(aes))", "aes256gmac", "aead"),
        (E.ESP_NULL, None): ("ecb(cipher_null)", "null", "crypt"),
        (E.ESP_CAMELLIA, 256): ("cbc(camellia)", "camellia256", "crypt"),
    }
    for (tid, bits), (xfrm, kw, kind) in cases.items():
        c = alg.cipher_spec(tid, bits)
        assert (c.xfrm_name, c.keyword, c.xfrm_kind) == (xfrm, kw, kind)
    assert alg.cipher_spec(E.ESP_AES_GCM_12, 128).icv_bits == 96
    assert alg.cipher_spec(E.ESP_AES_CCM_8, 128).icv_bits == 64
    integ = {
        AA.HMAC_MD5: ("hmac(md5)", 96, 16, "md5"),
        AA.HMAC_SHA: ("hmac(sha1)", 96, 20, "sha1"),
        AA.HMAC_SHA2_256: ("hmac(sha256)", 128, 32, "sha256"),
        AA.HMAC_SHA2_384: ("hmac(sha384)", 192, 48, "sha384"),
        AA.HMAC_SHA2_512: ("hmac(sha512)", 256, 64, "sha512"),
        AA.AES_XCBC_MAC: ("xcbc(aes)", 96, 16, "aesxcbc"),
        AA.AES_128_GMAC: ("rfc4543(gcm(aes))", 128, 20, "aes128gmac"),
    }
    for a, (xfrm, icv, octets, kw) in integ.items():
        s = alg.integrity_spec(a)
        assert (s.xfrm_name, s.icv_bits, s.key_bytes, s.keyword) == (xfrm, icv, octets, kw)


def _parsed(text: str, protocol: str = "esp"):
    """The catalogue entries of a one-transform proposal parsed by isakmp.proposals."""
    [pp] = parse_proposal(text, protocol).protocols
    [t] = pp.transforms
    if protocol == "ah":
        return None, alg.ah_integrity_spec(t.transform_id, t.auth)
    c = alg.cipher_spec(t.transform_id, t.key_length)
    return c, None if t.auth is None else alg.integrity_spec(t.auth)


def test_keywords_round_trip():
    # esp_keyword (the display name) and the proposal parser agree on the keywords
    c, i = _esp(E.ESP_AES_CBC, 256, AA.HMAC_SHA2_256)
    assert alg.esp_keyword(c, i) == "aes256-sha256"
    assert _parsed("aes256-sha256") == (c, i)
    g = alg.cipher_spec(E.ESP_AES_GCM_16, 128)
    assert alg.esp_keyword(g, None) == "aes128gcm16"
    assert _parsed("AES128GCM16") == (g, None)
    assert _parsed("sha1", "ah") == (None, alg.integrity_spec(AA.HMAC_SHA))
    for s in alg.all_cipher_specs():
        if s.transform_id == E.ESP_NULL_AUTH_AES_GMAC:
            continue  # aesNNNgmac: not accepted by the proposal parser
        if s.transform_id == E.ESP_NULL:
            assert _parsed("null-sha1") == (s, alg.integrity_spec(AA.HMAC_SHA))
        else:
            assert _parsed(s.keyword) == (s, None)
    for s in alg.all_integrity_specs():
        if s.salt_bytes:
            continue  # AES-GMAC as integrity is AH-only and has no keyword here
        assert _parsed(f"aes128-{s.keyword}") == (alg.cipher_spec(E.ESP_AES_CBC, 128), s)
    for bad in ("", "aes128gcm16-sha1", "sha1-aes128", "bogus"):
        with pytest.raises(ValueError):
            parse_proposal(bad)
    # unlike a display name, a proposal may list several ciphers: one transform each
    [pp] = parse_proposal("aes128-aes256").protocols
    assert [t.key_length for t in pp.transforms] == [128, 256]


def test_lookup_errors_are_typed():
    with pytest.raises(AttributesNotSupported) as ei:
        alg.cipher_spec(E.ESP_AES_CBC, 100)
    assert ei.value.notify == NotifyType.ATTRIBUTES_NOT_SUPPORTED
    with pytest.raises(alg.UnsupportedAlgorithm):
        alg.cipher_spec(E.ESP_AES_CBC)  # key length required
    with pytest.raises(alg.UnsupportedAlgorithm):
        alg.cipher_spec(E.ESP_3DES, 128)  # fixed length
    assert alg.cipher_spec(E.ESP_3DES, 192).key_bytes == 24
    with pytest.raises(alg.UnsupportedAlgorithm) as ei:
        alg.cipher_spec(E.ESP_BLOWFISH, 128)
    assert ei.value.notify == NotifyType.INVALID_TRANSFORM_ID
    with pytest.raises(alg.UnsupportedAlgorithm):
        alg.cipher_spec(250, 128)
    with pytest.raises(alg.UnsupportedAlgorithm):
        alg.integrity_spec(AA.KPDK)
    with pytest.raises(alg.UnsupportedAlgorithm):
        alg.ah_integrity_spec(AhTransformId.AH_SHA, AA.HMAC_MD5)  # mismatch
    assert alg.ah_integrity_spec(AhTransformId.AH_SHA, AA.HMAC_SHA).key_bytes == 20
    with pytest.raises(alg.UnsupportedAlgorithm) as ei:
        alg.ah_integrity_spec(AhTransformId.AH_DES)
    assert ei.value.notify == NotifyType.INVALID_TRANSFORM_ID


# --- plugin interface ----------------------------------------------------------------------


def test_plugin_interfaces_are_what_the_code_consumes():
    """The plugin interface names what the framework and the daemon consume: a KeySource
    (isakmp.sakeys derives KEYMAT through it), capabilities (proposal selection) and the
    engine shape the daemon drives, which the KINK engine has."""
    from isakmp.plugin import KeyExchangeEngine, PluginCapabilities
    from isakmp.sadb import Transform as SaTransform
    from isakmp.sakeys import derive_direction
    from kink.engine import KINK_CAPABILITIES, Engine
    from kink.keys import ticket_key_source
    from kinkd.config import Config, DaemonConfig

    src = StaticKeySource(SESSION_128, aes_sha1_prf_literal)
    assert isinstance(src, KeySource)
    km = derive(src.prf, src.skeyid_d, ProtocolId.ESP, EX_SPI, NI_EX,
                cipher=alg.cipher_spec(E.ESP_AES_CBC, 128),
                integrity=alg.integrity_spec(AA.HMAC_SHA))
    assert km.encryption.reveal_hex() == "0f6713a1103e53d8484f78afe8076e5d"
    # KINK's key source (ticket session key, literal RFC 3961 PRF of etype 17) is the same
    kink_src = ticket_key_source(17, SESSION_128, "rfc3961")
    assert isinstance(kink_src, KeySource) and repr(SESSION_128.hex()) not in repr(kink_src)
    t = SaTransform.negotiated(ProtocolId.ESP, E.ESP_AES_CBC, 128, AA.HMAC_SHA)
    assert derive_direction(kink_src, ProtocolId.ESP, t, EX_SPI, NI_EX) == km
    assert isinstance(KINK_CAPABILITIES, PluginCapabilities)
    assert KINK_CAPABILITIES.responder_may_lower_lifetime
    cfg = Config(daemon=DaemonConfig(principal="kink/a.test@R", keytab=None))
    assert isinstance(Engine(cfg, epoch=1, acceptor=None), KeyExchangeEngine)
    assert not isinstance(object(), KeyExchangeEngine)
