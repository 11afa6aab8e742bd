#!/usr/bin/env python3
"""Micro-benchmark of kink.kerberos.crypto (not a pytest test).

Usage: python bench/bench_kerberos_crypto.py [--seconds S] [--enctype N ...]

Prints operations per second, single thread, for each enctype:
  * encrypt+decrypt of 200 octets (one op = one encrypt plus one decrypt)
  * checksum of 300 octets
  * prf of 40 octets (library reading; for 17/18 also the literal reading)
  * "responder-like" mix of a KINK CREATE responder: 2 decrypts (ticket
    ~200 octets with the service key, authenticator ~100 octets with the
    session key), 1 encrypt (AP-REP / KINK_ENCRYPT ~120 octets),
    2 checksums (verify the request Cksum, compute the reply Cksum, ~300
    octets), 2 PRF calls (KEYMAT, 40-octet seeds). Reported with a warm
    derived-key cache (same session key) and cold (new session key every
    iteration, so every per-usage key is derived again).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kink.kerberos.crypto import (  # noqa: E402
    SUPPORTED_ENCTYPES,
    clear_key_cache,
    prf_for,
    profile,
)

TARGET_RESPONDER_OPS = 6000


def rate(fn, seconds: float) -> float:
    """Calls of fn per second, measured over about ``seconds``."""
    fn()  # warm up (fills caches)
    n = 1
    while True:  # calibrate a batch size of ~10 ms
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= 0.01:
            break
        n *= 2
    batches = max(1, int(seconds / dt))
    t0 = time.perf_counter()
    for _ in range(batches):
        for _ in range(n):
            fn()
    dt = time.perf_counter() - t0
    return batches * n / dt


def bench_enctype(etype: int, seconds: float) -> dict[str, float]:
    p = profile(etype)
    key = p.random_key()
    service_key = p.random_key()
    pt200 = os.urandom(200)
    data300 = os.urandom(300)
    seed40 = os.urandom(40)
    prf = prf_for(etype, "library")

    def enc_dec():
        p.decrypt(key, 39, p.encrypt(key, 39, pt200))

    def cksum():
        p.checksum(key, 40, data300)

    def do_prf():
        prf(key, seed40)

    ticket = p.encrypt(service_key, 2, os.urandom(200))
    reply_pt = os.urandom(120)

    def responder_with(session_key, authenticator, request, request_mic):
        p.decrypt(service_key, 2, ticket)
        p.decrypt(session_key, 11, authenticator)
        p.verify(session_key, 40, request, request_mic)
        p.encrypt(session_key, 12, reply_pt)
        p.checksum(session_key, 40, data300)
        prf(session_key, seed40)
        prf(session_key, seed40)

    authenticator = p.encrypt(key, 11, os.urandom(100))
    request_mic = p.checksum(key, 40, data300)

    def responder_warm():
        responder_with(key, authenticator, data300, request_mic)

    def responder_cold():
        # A brand-new session key: every Ke/Ki/Kc/prf key is derived again.
        sk = p.random_key()
        responder_with(sk, p.encrypt(sk, 11, b"\x00" * 100), data300, p.checksum(sk, 40, data300))

    results = {
        "encrypt+decrypt 200B": rate(enc_dec, seconds),
        "checksum 300B": rate(cksum, seconds),
        "prf 40B": rate(do_prf, seconds),
    }
    if etype in (17, 18):
        lit = prf_for(etype, "rfc3961")
        results["prf 40B (rfc3961 literal)"] = rate(lambda: lit(key, seed40), seconds)
    results["responder mix (warm)"] = rate(responder_warm, seconds)
    clear_key_cache()
    results["responder mix (new key each, +1 enc +1 cksum setup)"] = rate(responder_cold, seconds)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    ap.add_argument("--enctype", type=int, action="append", help="only these enctypes")
    args = ap.parse_args(argv)
    import cryptography

    print(f"python {sys.version.split()[0]}, cryptography {cryptography.__version__}")
    worst = None
    for etype in args.enctype or SUPPORTED_ENCTYPES:
        p = profile(etype)
        print(f"\n{etype} {p.name}")
        for label, ops in bench_enctype(etype, args.seconds).items():
            print(f"  {label:<55} {ops:>12,.0f} ops/s")
            if label == "responder mix (warm)":
                worst = ops if worst is None else min(worst, ops)
    if worst is not None:
        verdict = "OK" if worst >= TARGET_RESPONDER_OPS else "BELOW TARGET"
        print(
            f"\nslowest warm responder mix: {worst:,.0f} ops/s "
            f"(target {TARGET_RESPONDER_OPS:,}): {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
