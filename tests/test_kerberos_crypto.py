"""Tests of kink.kerberos.crypto against published vectors (RFC 3961 App. A.1,
RFC 3962 App. B, RFC 8009 App. A, RFC 2202 / RFC 4231 HMAC, and AES-SHA1 vectors
from the MIT krb5 / Heimdal test suites) read from JSON files outside the
repository (see ``_vectors_dir``; skipped when absent), against derived KINK
key illustrations (RFC 3961 §5.3 / RFC 8009 §5 with the KINK key usages 39/40
of RFC 4430 §8; computed, not published), and property tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kink.kerberos import crypto
from kink.kerberos.crypto import (
    SUPPORTED_ENCTYPES,
    Profile,
    aes_cts_decrypt,
    aes_cts_encrypt,
    clear_key_cache,
    dk,
    kdf_hmac_sha2,
    nfold,
    prf_for,
    prf_rfc3961_literal,
    profile,
)
from kink.kerberos.errors import CryptoError, IntegrityError, InvalidKeyLength, UnsupportedEnctype

# ---------------------------------------------------------------------------
# Vector loading


def _vectors_dir() -> Path | None:
    here = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "vectors"
    if here.is_dir():
        return here
    env = os.environ.get("KINK_SPEC_DIR")
    if env:
        base = Path(env)
        for cand in (base / "vectors", base):
            if (cand / "rfc3961-nfold.json").is_file():
                return cand
    return None


VECTORS_DIR = _vectors_dir()
_SKIP_REASON = (
    "spec vectors not found: expected ../shared/spec/vectors beside the repository "
    "checkout, or set KINK_SPEC_DIR to the spec (or vectors) folder"
)


def _load(name: str) -> dict | None:
    if VECTORS_DIR is None:
        return None
    return json.loads((VECTORS_DIR / name).read_text())


def _params(name: str, section: str) -> list:
    data = _load(name)
    if data is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=_SKIP_REASON), id="no-spec")]
    vectors = data[section]
    assert vectors, f"{name}:{section} is empty"
    return [pytest.param(v, id=v["id"]) for v in vectors]


def h(s: str) -> bytes:
    return bytes.fromhex(s)


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Every test starts cold so derivation bugs can't hide behind cached state.
    clear_key_cache()
    yield


# ---------------------------------------------------------------------------
# HMAC building block (RFC 2202 / RFC 4231)


@pytest.mark.parametrize("v", _params("hmac-rfc2202-rfc4231.json", "vectors"))
def test_hmac_vectors(v):
    algo = v["algorithm"].removeprefix("hmac-")
    mac = hmac.digest(h(v["key_hex"]), h(v["data_hex"]), algo)
    checked = 0
    if "digest_hex" in v:
        assert mac.hex() == v["digest_hex"]
        checked += 1
    if "digest_96_hex" in v:
        assert mac[:12].hex() == v["digest_96_hex"]
        checked += 1
    if "truncated_128_hex" in v:
        assert mac[:16].hex() == v["truncated_128_hex"]
        checked += 1
    assert checked


# ---------------------------------------------------------------------------
# RFC 3961 n-fold


@pytest.mark.parametrize("v", _params("rfc3961-nfold.json", "vectors"))
def test_nfold_vectors(v):
    data = h(v["input_hex"])
    assert data == v["input_ascii"].encode()
    assert v["n_bits"] % 8 == 0
    assert nfold(data, v["n_bits"] // 8).hex() == v["output_hex"]


def test_nfold_rfc3961_a1_examples():
    assert nfold(b"012345", 8).hex() == "be072631276b1955"
    assert nfold(b"kerberos", 16).hex() == "6b65726265726f737b9b5b2b93132b93"


# ---------------------------------------------------------------------------
# RFC 3962


@pytest.mark.parametrize("v", _params("rfc3962-aes-sha1.json", "string_to_key"))
def test_rfc3962_string_to_key(v):
    pw = h(v["passphrase_hex"])
    salt = h(v["salt_hex"])
    it = v["iteration_count"]
    if "passphrase_ascii" in v:
        assert pw == v["passphrase_ascii"].encode()
    params = it.to_bytes(4, "big")
    # Intermediate PBKDF2 output, then DK(tkey, "kerberos").
    tkey128 = hashlib.pbkdf2_hmac("sha1", pw, salt, it, 16)
    tkey256 = hashlib.pbkdf2_hmac("sha1", pw, salt, it, 32)
    assert tkey128.hex() == v["pbkdf2_128_hex"]
    assert tkey256.hex() == v["pbkdf2_256_hex"]
    assert dk(tkey128, b"kerberos").reveal_hex() == v["aes128_key_hex"]
    assert profile(17).string_to_key(pw, salt, params).reveal_hex() == v["aes128_key_hex"]
    assert profile(18).string_to_key(pw, salt, params).reveal_hex() == v["aes256_key_hex"]


@pytest.mark.parametrize("v", _params("rfc3962-aes-sha1.json", "cts"))
def test_rfc3962_cts(v):
    key, iv, pt = h(v["aes128_key_hex"]), h(v["iv_hex"]), h(v["input_hex"])
    assert key == b"chicken teriyaki"
    out = aes_cts_encrypt(key, pt, iv)
    assert out.hex() == v["output_hex"]
    assert aes_cts_decrypt(key, out, iv) == pt
    # Next cipher state = second-to-last block of the output.
    r = len(pt) % 16 or 16
    assert out[-(16 + r) : len(out) - r].hex() == v["next_iv_hex"]


def test_s2k_default_params():
    # Default iteration counts: 4096 (RFC 3962), 32768 (RFC 8009).
    assert profile(17).default_s2k_params == h("00001000")
    assert profile(18).default_s2k_params == h("00001000")
    assert profile(19).default_s2k_params == h("00008000")
    assert profile(20).default_s2k_params == h("00008000")
    k = profile(17).string_to_key(b"password", b"ATHENA.MIT.EDUraeburn")
    assert k == profile(17).string_to_key(b"password", b"ATHENA.MIT.EDUraeburn", h("00001000"))
    with pytest.raises(CryptoError):
        profile(17).string_to_key(b"password", b"salt", b"\x00\x01")
    with pytest.raises(CryptoError):  # 0 means 2^32: refused, not run for hours
        profile(18).string_to_key(b"password", b"salt", h("00000000"))


# ---------------------------------------------------------------------------
# MIT / Heimdal AES-SHA1 vectors


@pytest.mark.parametrize("v", _params("impl-aes-sha1-krb5-testsuites.json", "prf"))
def test_impl_aes_sha1_prf(v):
    p = profile(v["etype"])
    key, data = h(v["key_hex"]), h(v["input_hex"])
    out = p.prf(key, data)
    assert len(out) == p.prf_size == 16
    assert out.hex() == v["output_hex"]
    assert prf_for(v["etype"], "library")(key, data).hex() == v["output_hex"]
    # The literal reading: 20 octets, its last 4 = first 4 of the library block.
    lit = prf_for(v["etype"], "rfc3961")(key, data)
    assert len(lit) == 20
    assert lit[16:] == out[:4]


@pytest.mark.parametrize("v", _params("impl-aes-sha1-krb5-testsuites.json", "checksum"))
def test_impl_aes_sha1_checksum(v):
    p = profile(v["etype"])
    assert p.checksum_type == v["cksumtype"]
    data = h(v["data_hex"])
    assert data == v["data_ascii"].encode()
    key = h(v["key_hex"])
    mic = p.checksum(key, v["usage"], data)
    assert mic.hex() == v["checksum_hex"]
    p.verify(key, v["usage"], data, mic)
    with pytest.raises(IntegrityError):
        p.verify(key, v["usage"] + 1, data, mic)


@pytest.mark.parametrize("v", _params("impl-aes-sha1-krb5-testsuites.json", "encryption"))
def test_impl_aes_sha1_encryption(v):
    p = profile(v["etype"])
    key, pt = h(v["key_hex"]), h(v["plaintext_hex"])
    assert pt == v["plaintext_ascii"].encode()
    ct = p.encrypt(key, v["usage"], pt, confounder=h(v["confounder_hex"]))
    assert ct.hex() == v["ciphertext_hex"]
    assert p.decrypt(key, v["usage"], h(v["ciphertext_hex"])) == pt
    # The confounder is recoverable from the ciphertext.
    ke = p.derive_keys(key, v["usage"]).ke
    assert aes_cts_decrypt(ke, ct[:-12])[:16].hex() == v["confounder_hex"]


# ---------------------------------------------------------------------------
# RFC 8009


@pytest.mark.parametrize("v", _params("rfc8009-aes-sha2.json", "string_to_key"))
def test_rfc8009_string_to_key(v):
    p = profile(v["etype"])
    assert p.name == v["enctype"]
    salt = h(v["salt_hex"])
    assert h(v["saltp_hex"]) == p.name.encode() + b"\x00" + salt
    params = v["iteration_count"].to_bytes(4, "big")
    assert p.default_s2k_params == params
    key = p.string_to_key(v["passphrase_ascii"].encode(), salt, params)
    assert key.reveal_hex() == v["base_key_hex"]
    assert p.string_to_key(v["passphrase_ascii"].encode(), salt) == key


@pytest.mark.parametrize("v", _params("rfc8009-aes-sha2.json", "key_derivation"))
def test_rfc8009_key_derivation(v):
    p = profile(v["etype"])
    usage = v["usage"]
    u = usage.to_bytes(4, "big")
    assert h(v["kc_label_hex"]) == u + b"\x99"
    assert h(v["ke_label_hex"]) == u + b"\xaa"
    assert h(v["ki_label_hex"]) == u + b"\x55"
    keys = p.derive_keys(h(v["base_key_hex"]), usage)
    assert keys.kc.reveal_hex() == v["kc_hex"]
    assert keys.ke.reveal_hex() == v["ke_hex"]
    assert keys.ki.reveal_hex() == v["ki_hex"]


@pytest.mark.parametrize("v", _params("rfc8009-aes-sha2.json", "encryption"))
def test_rfc8009_encryption(v):
    p = profile(v["etype"])
    key, pt, conf = h(v["base_key_hex"]), h(v["plaintext_hex"]), h(v["confounder_hex"])
    keys = p.derive_keys(key, v["usage"])
    assert keys.ke.reveal_hex() == v["ke_hex"]
    assert keys.ki.reveal_hex() == v["ki_hex"]
    assert v["iv_hex"] == "00" * 16
    # Intermediate values.
    aes_out = aes_cts_encrypt(keys.ke, conf + pt)
    assert aes_out.hex() == v["aes_output_hex"]
    mac = hmac.digest(keys.ki, h(v["iv_hex"]) + aes_out, p._hash)[: p.mac_size]
    assert mac.hex() == v["hmac_output_hex"]
    # The full operation.
    ct = p.encrypt(key, v["usage"], pt, confounder=conf)
    assert ct.hex() == v["ciphertext_hex"]
    assert len(ct) == p.ciphertext_length(len(pt))
    assert p.decrypt(key, v["usage"], h(v["ciphertext_hex"])) == pt


@pytest.mark.parametrize("v", _params("rfc8009-aes-sha2.json", "checksum"))
def test_rfc8009_checksum(v):
    p = profile(v["sumtype"])
    assert p.checksum_type == v["sumtype"]
    assert v["cksumtype"] == {19: "hmac-sha256-128-aes128", 20: "hmac-sha384-192-aes256"}[p.enctype]
    key, data = h(v["base_key_hex"]), h(v["plaintext_hex"])
    assert p.derive_keys(key, v["usage"]).kc.reveal_hex() == v["kc_hex"]
    mic = p.checksum(key, v["usage"], data)
    assert mic.hex() == v["checksum_hex"]
    assert len(mic) == p.checksum_size
    p.verify(key, v["usage"], data, mic)


@pytest.mark.parametrize("v", _params("rfc8009-aes-sha2.json", "prf"))
def test_rfc8009_prf(v):
    p = profile(v["etype"])
    key, data = h(v["input_key_hex"]), h(v["input_hex"])
    assert data == v["input_ascii"].encode()
    bits = p.prf_size * 8
    assert h(v["hmac_input_hex"]) == b"\x00\x00\x00\x01prf\x00" + data + bits.to_bytes(4, "big")
    assert kdf_hmac_sha2(key, b"prf", data, bits, p._hash).hex() == v["output_hex"]
    out = p.prf(key, data)
    assert out.hex() == v["output_hex"]
    assert len(out) == p.prf_size
    # Both readings are the same for RFC 8009 etypes.
    assert prf_for(v["etype"], "library")(key, data) == out
    assert prf_for(v["etype"], "rfc3961")(key, data) == out


# ---------------------------------------------------------------------------
# Derived KINK key illustrations (RFC 3961 §5.3 / RFC 8009 §5, usages 39/40 of
# RFC 4430 §8; KEYMAT per RFC 2409 §5.5): computed, not published vectors

K17 = h("42263c6e89f4fc28b8df68ee09799f15")
K18 = h("fe697b52bc0d3ce14432ba036a92e65bbb52280990a2fa27883998d72af30161")
K19 = h("3705d96080c17728a0e800eab6e0d23c")
K20 = h("6d404d37faf79f9df0d33568d320669800eb4836472ea8a026d16b7182460c52")
BASE_KEYS = {17: K17, 18: K18, 19: K19, 20: K20}

DERIVED_KINK_KEYS = {
    17: (
        "ab1ef7d4fbb31cd2866db63966370576",
        "38a5dec38051314df5fbc155e334fc7e",
        "6a71816c07d45816560682ae47df909e",
    ),
    18: (
        "e45cd913d4ac35bd9a592122e769927db559ba5284e6d3cc6adbcafb61bc0a87",
        "3692dfbcd833032aa811f4c641009463235d92f2613424719424830c6d2d9e4c",
        "22db124c67bdb3c19f874483b5ba764d279d97093c6e2929661757e33362c9cd",
    ),
    19: (
        "a44da992ce9808dd6ab24a980b53915f",
        "e69628b107025c92452e8798b785fea3",
        "efb72c6a7d4602ad02a80268766086b4",
    ),
    20: (
        "ea688001dca008ecf22ce7510afcca6c28eababbd8d39ba2",
        "8f4e482348a622cf8228c9cd19a3952ca5a38def9564eb243740ef173e18b3e5",
        "aebd38e9bd47e2fd18b91a304d93652e714513f8d6d95374",
    ),
}

DERIVED_CKSUM_40 = {
    17: "d519447ff229681789028a6b",
    18: "72c7aa3b3ae2ca22844bf18d",
    19: "c3a974fc3825df50398f8576cba7da9e",
    20: "c927007cd1811ffdc0a85c3f97c4549c81f1c6cd4f9ecc53",
}

KINK_ENCRYPT_CONF = h("101112131415161718191a1b1c1d1e1f")
KINK_ENCRYPT_PT = h("080000000000000800000001")
KINK_ENCRYPT_CT = {
    17: "c82b46eb73e64900fc9561b57aaeeb3358cf6e27350f738bc4882003ddaed5a82837568f0d030a2b",
    19: "f7fef5c1be2ab6c9998d4d5e747ed04374326a32c0fd64acb8e453fb7575df9592f73a46c71ba8ede877987f",
}


@pytest.mark.parametrize("etype", SUPPORTED_ENCTYPES)
def test_derived_kink_keys(etype):
    p = profile(etype)
    kc40 = p.derive_keys(BASE_KEYS[etype], 40).kc
    ke39 = p.derive_keys(BASE_KEYS[etype], 39).ke
    ki39 = p.derive_keys(BASE_KEYS[etype], 39).ki
    exp_kc, exp_ke, exp_ki = DERIVED_KINK_KEYS[etype]
    assert kc40.reveal_hex() == exp_kc
    assert ke39.reveal_hex() == exp_ke
    assert ki39.reveal_hex() == exp_ki
    # Usage constants of RFC 3961 §5.3: usage | 0xAA (Ke), 0x55 (Ki), 0x99 (Kc).
    if etype in (17, 18):
        assert dk(BASE_KEYS[etype], h("00000027aa")).reveal_hex() == exp_ke
        assert dk(BASE_KEYS[etype], h("0000002755")).reveal_hex() == exp_ki
        assert dk(BASE_KEYS[etype], h("0000002899")).reveal_hex() == exp_kc


def test_derived_prf_keys():
    assert profile(17).prf_key(K17).reveal_hex() == "35c2d50356823368668be794012f9eab"
    assert (
        profile(18).prf_key(K18).reveal_hex()
        == "513d73f49817ae2c48306070ed8459237473db6905d21ec72c7ca30b348c76d6"
    )


@pytest.mark.parametrize("etype", SUPPORTED_ENCTYPES)
def test_derived_kink_cksum(etype):
    p = profile(etype)
    data = bytes(range(16))
    mic = p.checksum(BASE_KEYS[etype], 40, data)
    assert mic.hex() == DERIVED_CKSUM_40[etype]
    p.verify(BASE_KEYS[etype], 40, data, mic)


@pytest.mark.parametrize("etype", sorted(KINK_ENCRYPT_CT))
def test_derived_kink_encrypt(etype):
    p = profile(etype)
    ct = p.encrypt(BASE_KEYS[etype], 39, KINK_ENCRYPT_PT, confounder=KINK_ENCRYPT_CONF)
    assert ct.hex() == KINK_ENCRYPT_CT[etype]
    assert len(ct) == {17: 40, 19: 44}[etype] == p.ciphertext_length(len(KINK_ENCRYPT_PT))
    assert p.decrypt(BASE_KEYS[etype], 39, ct) == KINK_ENCRYPT_PT


def _keymat(prf, key: bytes, seed: bytes, n: int) -> bytes:
    """RFC 2409 §5.5 expansion: K1 = prf(seed), K(i+1) = prf(Ki | seed)."""
    out = b""
    block = b""
    while len(out) < n:
        block = prf(key, block + seed)
        out += block
    return out[:n]


KEYMAT_SEED = h("0300001234000102030405060708090a0b0c0d0e0f")


def test_keymat_example_aes128_sha1_both_readings():
    literal = _keymat(prf_for(17, "rfc3961"), K17, KEYMAT_SEED, 36)
    library = _keymat(prf_for(17, "library"), K17, KEYMAT_SEED, 36)
    assert literal.hex() == (
        "0f6713a1103e53d8484f78afe8076e5d41a5e63f018bbfc41f9e3d449e8c2c11719563c8"
    )
    assert library.hex() == (
        "41a5e63fc25a5104101f263fc26859dc3cebb227426fc782388740d2e43568ef22b44376"
    )
    # The two AES-SHA1 PRF readings: the first library (MIT/Heimdal) block is
    # AES(Kp, P1); the literal RFC 3961 §5.3 block (racoon2) carries its first
    # 4 octets at positions 16-19.
    assert literal[16:20] == library[:4]
    assert prf_rfc3961_literal(K17, KEYMAT_SEED) == profile(17).prf_literal(K17, KEYMAT_SEED)
    assert len(prf_rfc3961_literal(K17, KEYMAT_SEED)) == 20


@pytest.mark.parametrize(
    "etype,expected",
    [
        (19, "123312cb226dcde86fe2dbfac2845969c3db5e905d43613d756e9c27c7f8c7ecfb69b2a5"),
        (20, "663fb56120eba223ea8c88dc650c90bdd0a6bde7ac3ba448ff0906add209e7fb83c80500"),
    ],
)
def test_keymat_example_sha2(etype, expected):
    for reading in ("library", "rfc3961"):
        assert _keymat(prf_for(etype, reading), BASE_KEYS[etype], KEYMAT_SEED, 36).hex() == expected


def test_prf_literal_formula():
    # PRF = AES(Kp, AES(Kp, P1) XOR (P2 | 0^12)) | AES(Kp, P1)[0:4]
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    for key in (K17, K18):
        kp = dk(key, b"prf")
        sha = hashlib.sha1(KEYMAT_SEED).digest()
        p1, p2 = sha[:16], sha[16:]
        enc = Cipher(algorithms.AES(kp), modes.ECB()).encryptor()
        c1 = enc.update(p1)
        c2 = enc.update(bytes(a ^ b for a, b in zip(c1, p2 + bytes(12), strict=True)))
        assert prf_rfc3961_literal(key, KEYMAT_SEED) == c2 + c1[:4]
        assert profile(len(key) // 16 + 16).prf(key, KEYMAT_SEED) == c1


# ---------------------------------------------------------------------------
# API surface


def test_profile_attributes():
    expected = {
        17: ("aes128-cts-hmac-sha1-96", 16, 15, 12, 16),
        18: ("aes256-cts-hmac-sha1-96", 32, 16, 12, 16),
        19: ("aes128-cts-hmac-sha256-128", 16, 19, 16, 32),
        20: ("aes256-cts-hmac-sha384-192", 32, 20, 24, 48),
    }
    for etype, (name, ks, ct, cs, ps) in expected.items():
        p = profile(etype)
        assert isinstance(p, Profile)
        assert p is profile(etype)
        assert (p.enctype, p.name, p.key_size, p.checksum_type, p.checksum_size, p.prf_size) == (
            etype,
            name,
            ks,
            ct,
            cs,
            ps,
        )
        assert len(p.random_key()) == ks
        assert p.random_to_key(bytes(ks)) == bytes(ks)
        assert len(p.prf(p.random_key(), b"x")) == ps
        with pytest.raises(AttributeError):
            p.key_size = 3


@pytest.mark.parametrize("etype", [0, 1, 2, 3, 5, 7, 16, 23, 24, 25, 26, 21, -1, 65536])
def test_unsupported_enctypes(etype):
    with pytest.raises(UnsupportedEnctype) as ei:
        profile(etype)
    assert str(etype) in str(ei.value)
    with pytest.raises(UnsupportedEnctype):
        prf_for(etype, "library")
    assert not crypto.is_supported(etype)


def test_unsupported_message_names_enctype():
    with pytest.raises(UnsupportedEnctype, match=r"enctype 16 \(des3-cbc-sha1-kd\)"):
        profile(16)
    with pytest.raises(UnsupportedEnctype, match=r"enctype 23 \(rc4-hmac\)"):
        profile(23)
    with pytest.raises(UnsupportedEnctype, match=r"enctype 1 \(des-cbc-crc\)"):
        profile(1)
    with pytest.raises(UnsupportedEnctype):
        profile("17")  # type: ignore[arg-type]


def test_prf_for_bad_reading_and_literal_guards():
    with pytest.raises(ValueError):
        prf_for(17, "heimdal")
    with pytest.raises(InvalidKeyLength):
        prf_rfc3961_literal(bytes(24), b"x")
    with pytest.raises(CryptoError):
        prf_rfc3961_literal(bytes(16), b"x", enctype=19)
    assert prf_rfc3961_literal(K18, b"x") == profile(18).prf_literal(K18, b"x")


@pytest.mark.parametrize("etype", SUPPORTED_ENCTYPES)
def test_wrong_key_lengths(etype):
    p = profile(etype)
    secretish = bytes([0xA5]) * 64
    for n in (0, 1, 8, 15, 17, 24, 31, 33, 64):
        if n == p.key_size:
            continue
        bad = secretish[:n]
        for call in (
            lambda k: p.encrypt(k, 39, b"x"),
            lambda k: p.decrypt(k, 39, bytes(64)),
            lambda k: p.checksum(k, 40, b"x"),
            lambda k: p.verify(k, 40, b"x", bytes(p.checksum_size)),
            lambda k: p.prf(k, b"x"),
            lambda k: p.random_to_key(k),
            lambda k: prf_for(etype, "rfc3961")(k, b"x"),
        ):
            with pytest.raises(InvalidKeyLength) as ei:
                call(bad)
            msg = str(ei.value)
            assert "a5a5" not in msg.lower() and "\\xa5" not in msg


@pytest.mark.parametrize("etype", SUPPORTED_ENCTYPES)
def test_key_never_in_error_messages(etype):
    p = profile(etype)
    key = bytes([0x5A]) * p.key_size
    ct = bytearray(p.encrypt(key, 39, b"hello"))
    ct[-1] ^= 1
    for call, exc in (
        (lambda: p.decrypt(key, 39, bytes(ct)), IntegrityError),
        (lambda: p.decrypt(key, 39, b"short"), CryptoError),
        (lambda: p.verify(key, 40, b"data", b"nope"), IntegrityError),
    ):
        with pytest.raises(exc) as ei:
            call()
        msg = str(ei.value) + repr(ei.value)
        assert "5a5a" not in msg.lower() and "ZZZZ" not in msg and "\\x5a" not in msg.lower()


def test_derived_keys_are_secret():
    keys = profile(17).derive_keys(K17, 39)
    assert K17.hex() not in repr(keys)
    assert "38a5" not in repr(keys)


def test_key_cache_bounded_and_used():
    p = profile(17)
    p.checksum(K17, 40, b"a")
    p.checksum(K17, 40, b"b")
    info = crypto.key_cache_info()["checksum"]
    assert info.hits >= 1 and info.misses == 1
    assert info.maxsize == crypto.KEY_CACHE_SIZE
    clear_key_cache()
    assert crypto.key_cache_info()["checksum"].currsize == 0


def test_bytes_like_inputs():
    p = profile(19)
    ct = p.encrypt(bytearray(K19), 39, memoryview(b"abc"), confounder=bytearray(16))
    assert p.decrypt(memoryview(K19), 39, bytearray(ct)) == b"abc"
    with pytest.raises(TypeError):
        p.encrypt("not bytes", 39, b"x")  # type: ignore[arg-type]
    with pytest.raises(CryptoError):
        p.encrypt(K19, 39, b"x", confounder=bytes(15))
    with pytest.raises(CryptoError):
        p.encrypt(K19, -1, b"x")
    with pytest.raises(CryptoError):
        p.checksum(K19, 1 << 32, b"x")


def test_cts_guards():
    with pytest.raises(CryptoError):
        aes_cts_encrypt(bytes(16), bytes(15))
    with pytest.raises(CryptoError):
        aes_cts_decrypt(bytes(16), bytes(15))
    with pytest.raises(InvalidKeyLength):
        aes_cts_encrypt(bytes(24), bytes(32))


# ---------------------------------------------------------------------------
# Property tests

enctypes = st.sampled_from(SUPPORTED_ENCTYPES)
usages = st.integers(min_value=0, max_value=0xFFFFFFFF)


def _key_for(etype: int, seed: bytes) -> bytes:
    return hashlib.sha512(seed).digest()[: profile(etype).key_size]


@settings(max_examples=200, deadline=None)
@given(etype=enctypes, seed=st.binary(max_size=8), usage=usages, pt=st.binary(max_size=300))
def test_roundtrip(etype, seed, usage, pt):
    p = profile(etype)
    key = _key_for(etype, seed)
    ct = p.encrypt(key, usage, pt)
    assert len(ct) == p.ciphertext_length(len(pt))
    assert p.decrypt(key, usage, ct) == pt
    conf = hashlib.sha256(seed).digest()[:16]
    assert p.encrypt(key, usage, pt, conf) == p.encrypt(key, usage, pt, conf)


@settings(max_examples=200, deadline=None)
@given(etype=enctypes, pt=st.binary(max_size=100), data=st.data())
def test_bit_flip_raises_integrity_error(etype, pt, data):
    p = profile(etype)
    key = _key_for(etype, b"flip")
    ct = bytearray(p.encrypt(key, 39, pt))
    bit = data.draw(st.integers(min_value=0, max_value=len(ct) * 8 - 1))
    ct[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError):
        p.decrypt(key, 39, bytes(ct))


@settings(max_examples=200, deadline=None)
@given(etype=enctypes, pt=st.binary(max_size=100), data=st.data())
def test_truncation_raises_crypto_error(etype, pt, data):
    p = profile(etype)
    key = _key_for(etype, b"trunc")
    ct = p.encrypt(key, 39, pt)
    n = data.draw(st.integers(min_value=0, max_value=len(ct) - 1))
    try:
        p.decrypt(key, 39, ct[:n])
    except CryptoError:
        pass
    else:
        pytest.fail("truncated ciphertext decrypted")


@settings(max_examples=100, deadline=None)
@given(etype=enctypes, junk=st.binary(max_size=80))
def test_garbage_raises_crypto_error(etype, junk):
    p = profile(etype)
    with pytest.raises(CryptoError):
        p.decrypt(_key_for(etype, b"junk"), 39, junk)


@settings(max_examples=100, deadline=None)
@given(etype=enctypes, usage=usages, msg=st.binary(max_size=200), data=st.data())
def test_checksum_verify(etype, usage, msg, data):
    p = profile(etype)
    key = _key_for(etype, b"mic")
    mic = p.checksum(key, usage, msg)
    assert len(mic) == p.checksum_size
    p.verify(key, usage, msg, mic)
    bit = data.draw(st.integers(min_value=0, max_value=len(mic) * 8 - 1))
    bad = bytearray(mic)
    bad[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError):
        p.verify(key, usage, msg, bytes(bad))
    with pytest.raises(IntegrityError):
        p.verify(key, usage, msg, mic[:-1])


@settings(max_examples=100, deadline=None)
@given(etype=enctypes, u1=usages, u2=usages, pt=st.binary(max_size=40))
def test_wrong_usage_fails(etype, u1, u2, pt):
    if u1 == u2:
        return
    p = profile(etype)
    key = _key_for(etype, b"usage")
    with pytest.raises(IntegrityError):
        p.decrypt(key, u2, p.encrypt(key, u1, pt))


@settings(max_examples=100, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=16),
    iv=st.binary(min_size=16, max_size=16),
    pt=st.binary(min_size=16, max_size=120),
)
def test_cts_roundtrip_and_length(key, iv, pt):
    ct = aes_cts_encrypt(key, pt, iv)
    assert len(ct) == len(pt)
    assert aes_cts_decrypt(key, ct, iv) == pt
