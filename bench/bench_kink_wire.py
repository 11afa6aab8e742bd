#!/usr/bin/env python3
"""Benchmark of the KINK message codec (kink/wire.py).

The message is a typical CREATE of about 700 octets: KINK_AP_REQ (EPOCH +
a 400-octet AP-REQ stand-in), KINK_ENCRYPT{KINK_ISAKMP(SA with 4 ESP
proposals, Nonce, IDci, IDcr)} and a 12-octet Cksum (aes128-cts-hmac-sha1-96).

Rates printed (best of several runs, one core):

* codec only: one cycle = encode + decode + verify_checksum + decrypt with a
  null crypto profile (no cipher/HMAC work), i.e. the codec's own cost.
  Target: >= 20,000 cycles/s.
* with aes128-sha1 crypto: the same cycle and each stage separately.

    .venv/bin/python bench/bench_kink_wire.py [--seconds 0.3] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from isakmp import (  # noqa: E402
    Attribute,
    AuthAlgorithm,
    EncapsulationMode,
    EspTransformId,
    Identification,
    IpsecAttr,
    LifeType,
    Nonce,
    Proposal,
    ProtocolId,
    SecurityAssociation,
    Transform,
)
from kink import wire  # noqa: E402
from kink.kerberos import crypto  # noqa: E402

TARGET = 20_000
KEY = bytes.fromhex("42263c6e89f4fc28b8df68ee09799f15")
ETYPE = 17


class NullProfile:
    """Duck-typed crypto profile doing no cryptography (codec-only timing)."""

    name = "null"
    checksum_size = 12
    _MAC = bytes(12)

    def encrypt(self, key, usage, plaintext, confounder=None):
        return (confounder or bytes(16)) + plaintext + self._MAC

    def decrypt(self, key, usage, ciphertext):
        return ciphertext[16:-12]

    def checksum(self, key, usage, data):
        return self._MAC

    def verify(self, key, usage, data, mic):
        if mic != self._MAC:
            raise AssertionError("null checksum mismatch")


def isakmp_chain() -> list:
    def attrs(keylen, auth):
        a = [
            Attribute(IpsecAttr.SA_LIFE_TYPE, LifeType.SECONDS),
            Attribute(IpsecAttr.SA_LIFE_DURATION, 28800),
            Attribute(IpsecAttr.ENCAPSULATION_MODE, EncapsulationMode.TRANSPORT),
        ]
        if keylen:
            a.append(Attribute(IpsecAttr.KEY_LENGTH, keylen))
        if auth:
            a.append(Attribute(IpsecAttr.AUTH_ALGORITHM, auth))
        return a

    offers = [
        (EspTransformId.ESP_AES_CBC, 128, AuthAlgorithm.HMAC_SHA),
        (EspTransformId.ESP_AES_CBC, 256, AuthAlgorithm.HMAC_SHA),
        (EspTransformId.ESP_AES_GCM_16, 128, None),
        (EspTransformId.ESP_3DES, None, AuthAlgorithm.HMAC_SHA),
    ]
    sa = SecurityAssociation(
        [
            Proposal(i + 1, ProtocolId.ESP, b"\x12\x34\x56\x78", [Transform(1, t, attrs(k, a))])
            for i, (t, k, a) in enumerate(offers)
        ]
    )
    return [
        sa,
        Nonce(bytes(range(16))),
        Identification.from_network("192.0.2.0/24"),
        Identification.from_address("198.51.100.7"),
    ]


def create_payloads() -> list:
    ap_req = b"\x6e\x82\x01\x8c" + bytes(range(256)) + bytes(140)  # 400 octets
    return [
        wire.ApReqPayload(0x65000000, ap_req),
        wire.IsakmpPayload.from_payloads(isakmp_chain()),
    ]


def rate(fn, seconds: float, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while True:
            for _ in range(50):
                fn()
            n += 50
            t = time.perf_counter()
            if t >= deadline:
                break
        best = max(best, n / (t - t0))
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    payloads = create_payloads()
    conf = bytes(range(16))
    null = NullProfile()

    def cycle(prof):
        def run():
            d = wire.encode(
                wire.MessageType.CREATE, 1, payloads, key=(prof, KEY), encrypt_from=1,
                confounder=conf,
            )
            m = wire.decode(d)
            wire.verify_checksum(m, prof, KEY)
            wire.decrypt(m, prof, KEY)
        return run

    datagram = wire.encode(
        wire.MessageType.CREATE, 1, payloads, key=(ETYPE, KEY), encrypt_from=1, confounder=conf
    )
    msg = wire.decode(datagram)
    wire.verify_checksum(msg, ETYPE, KEY)
    assert wire.decrypt(msg, ETYPE, KEY) == payloads[1:]

    def enc():
        wire.encode(wire.MessageType.CREATE, 1, payloads, key=(ETYPE, KEY), encrypt_from=1)

    def enc_plain():
        wire.encode(wire.MessageType.CREATE, 1, payloads)

    def dec():
        wire.decode(datagram)

    def ver():
        wire.verify_checksum(msg, ETYPE, KEY)

    def dcr():
        wire.decrypt(msg, ETYPE, KEY)

    print(f"CREATE datagram: {len(datagram)} octets (AP-REQ 400, KINK_ENCRYPT{{KINK_ISAKMP}}, "
          f"Cksum 12, aes128-cts-hmac-sha1-96)")
    results = [
        ("codec only: encode+decode+verify+decrypt (null crypto)", rate(cycle(null), args.seconds, args.repeat)),
        ("full cycle with aes128-sha1 crypto", rate(cycle(crypto.profile(ETYPE)), args.seconds, args.repeat)),
        ("encode (encrypt + Cksum)", rate(enc, args.seconds, args.repeat)),
        ("encode (no key)", rate(enc_plain, args.seconds, args.repeat)),
        ("decode (header + outer chain)", rate(dec, args.seconds, args.repeat)),
        ("verify_checksum", rate(ver, args.seconds, args.repeat)),
        ("decrypt (+ inner chain)", rate(dcr, args.seconds, args.repeat)),
    ]
    for name, r in results:
        print(f"{name:58s} {r:12,.0f} /s   {1e6 / r:7.2f} us")
    ok = results[0][1] >= TARGET
    print(f"target codec-only >= {TARGET:,}/s: {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
