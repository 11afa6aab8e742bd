#!/usr/bin/env python3
"""Benchmark: encode+decode round trips of a typical KINK CREATE ISAKMP chain.

The chain is what a KINK CREATE carries inside KINK_ISAKMP: an SA payload
with 4 ESP proposals (AES-CBC-128/SHA1, AES-CBC-256/SHA1, AES-GCM-16-128,
3DES/SHA1; each with lifetime, mode, key length, integrity attributes), a
16-octet Nonce and two ID payloads (IDci subnet, IDcr address).

One round trip = ``encode_payloads(chain)`` + ``decode_payloads(...)``.
Prints round-trips/s (best of several runs, one core).  Target: >= 50,000.

    .venv/bin/python bench/bench_isakmp.py [--seconds 0.3] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import isakmp  # noqa: E402
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

TARGET = 50_000


def create_chain() -> list:
    def attrs(keylen: int | None, auth: int | None) -> list[Attribute]:
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

    spi = bytes.fromhex("12345678")
    offers = [
        (EspTransformId.ESP_AES_CBC, 128, AuthAlgorithm.HMAC_SHA),
        (EspTransformId.ESP_AES_CBC, 256, AuthAlgorithm.HMAC_SHA),
        (EspTransformId.ESP_AES_GCM_16, 128, None),
        (EspTransformId.ESP_3DES, None, AuthAlgorithm.HMAC_SHA),
    ]
    sa = SecurityAssociation(
        [
            Proposal(i + 1, ProtocolId.ESP, spi, [Transform(1, tid, attrs(kl, auth))])
            for i, (tid, kl, auth) in enumerate(offers)
        ]
    )
    return [
        sa,
        Nonce(bytes(range(16))),
        Identification.from_network("192.0.2.0/24"),
        Identification.from_address("198.51.100.7"),
    ]


def measure(seconds: float, repeat: int) -> tuple[float, int]:
    chain = create_chain()
    first, data = isakmp.encode_payloads(chain)
    assert isakmp.decode_payloads(first, data) == chain
    enc, dec = isakmp.encode_payloads, isakmp.decode_payloads
    # calibrate a batch size of roughly `seconds`
    n = 1000
    while True:
        t0 = time.process_time()
        for _ in range(n):
            dec(*enc(chain))
        dt = time.process_time() - t0
        if dt >= seconds / 4:
            break
        n *= 2
    n = max(1000, int(n * seconds / max(dt, 1e-9)))
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(n):
            dec(*enc(chain))
        best = min(best, time.process_time() - t0)
    return n / best, len(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.3, help="duration of one run")
    ap.add_argument("--repeat", type=int, default=7, help="runs; the best one counts")
    args = ap.parse_args(argv)
    rate, size = measure(args.seconds, args.repeat)
    print(f"chain: SA(4 proposals) + Nonce + 2 ID = {size} octets")
    print(f"{rate:,.0f} round-trips/s (encode+decode, best of {args.repeat}, process CPU time)")
    print("target >= 50,000:", "OK" if rate >= TARGET else "BELOW TARGET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
