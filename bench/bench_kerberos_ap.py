#!/usr/bin/env python3
"""Benchmark of the KINK AP exchange code (not a pytest test).

Usage: python bench/bench_kerberos_ap.py [--n N] [--enctype E ...] [--profile]

Tickets are built locally with crypto + messages under a made-up service key
(no KDC needed). Single thread, ops/s:

(a) responder path: Acceptor.accept(AP-REQ) + make_ap_rep + one PRF (40-octet
    seed) + verify a checksum over a 300-octet message (KINK Cksum, usage 40).
    Every AP-REQ has a distinct authenticator (the replay cache is active).
    Target: >= 6000 ops/s.
    "warm": one ticket reused (a peer's ticket serves many transactions; the
    acceptor caches decrypted tickets); "cold": a new ticket for every request
    (worst case: every request decodes and decrypts its ticket).
(b) initiator: build_ap_req.

With ``--profile`` the responder loop runs under cProfile and the top
functions (cumulative) are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kink.kerberos.acceptor import Acceptor, make_ap_rep  # noqa: E402
from kink.kerberos.apreq import build_ap_req  # noqa: E402
from kink.kerberos.credentials import ServiceTicket  # noqa: E402
from kink.kerberos.crypto import profile  # noqa: E402
from kink.kerberos.keytab import KeySet, ServiceKey  # noqa: E402
from kink.kerberos.messages import (  # noqa: E402
    EncryptedData,
    EncryptionKey,
    EncTicketPart,
    PrincipalName,
    Ticket,
    TicketFlags,
    TransitedEncoding,
)
from kink.kerberos.replay import ReplayCache  # noqa: E402

TARGET = 6000
SERVICE = "kink/responder.kink.test@KINK.TEST"
CLIENT = "kink/initiator.kink.test@KINK.TEST"


def make_ticket(service_key: ServiceKey, session_etype: int, now: int) -> ServiceTicket:
    sk = profile(session_etype).random_key()
    sname, realm = PrincipalName.from_text(SERVICE)
    cname, crealm = PrincipalName.from_text(CLIENT)
    flags = int(TicketFlags.FORWARDABLE | TicketFlags.PRE_AUTHENT)
    etp = EncTicketPart(flags, EncryptionKey(session_etype, sk), crealm, cname,
                        TransitedEncoding(1, b""), now, now + 36000, now)
    cipher = profile(service_key.enctype).encrypt(service_key.key, 2, etp.encode())
    t = Ticket(realm, sname, EncryptedData(service_key.enctype, cipher, service_key.kvno))
    return ServiceTicket(CLIENT, SERVICE, t.encode(), sk, session_etype, now, now + 36000)


def bench(enctype: int, n: int, do_profile: bool) -> tuple[float, float, float]:
    now = time.time()
    skey = ServiceKey(SERVICE, 3, 18, profile(18).random_key())
    st = make_ticket(skey, enctype, int(now))
    p = profile(enctype)
    msg = os.urandom(300)
    mic = p.checksum(st.session_key, 40, msg)
    seed = os.urandom(40)

    # (b) initiator
    t0 = time.perf_counter()
    reqs = [build_ap_req(st, now)[0] for _ in range(n)]
    init_rate = n / (time.perf_counter() - t0)

    # (a) responder
    acc = Acceptor(KeySet([skey]), ReplayCache(capacity=max(65536, 2 * n), start_time=now - 1))

    def responder():
        for r in reqs:
            a = acc.accept(r, now)
            make_ap_rep(a)
            p.prf(a.session_key, seed)
            p.verify(a.session_key, 40, msg, mic)

    # warm the derived-key caches with one request outside the timed loop
    w = acc.accept(build_ap_req(st, now)[0], now)
    make_ap_rep(w)
    p.prf(w.session_key, seed)
    if do_profile:
        prof = cProfile.Profile()
        prof.enable()
        responder()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        return 0.0, 0.0, init_rate
    t0 = time.perf_counter()
    responder()
    resp_rate = n / (time.perf_counter() - t0)

    # cold: a distinct ticket per request
    m = max(1, n // 4)
    cold = []
    for _ in range(m):
        t = make_ticket(skey, enctype, int(now))
        cold.append((build_ap_req(t, now)[0], p.checksum(t.session_key, 40, msg)))
    acc2 = Acceptor(KeySet([skey]), ReplayCache(capacity=max(65536, 2 * m), start_time=now - 1),
                    ticket_cache_size=m + 1)
    t0 = time.perf_counter()
    for r, mic2 in cold:
        a = acc2.accept(r, now)
        make_ap_rep(a)
        p.prf(a.session_key, seed)
        p.verify(a.session_key, 40, msg, mic2)
    cold_rate = m / (time.perf_counter() - t0)
    return resp_rate, cold_rate, init_rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--enctype", type=int, nargs="*", default=[17, 18, 19, 20])
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    worst = None
    print(f"{'enctype':>8} {'responder warm':>15} {'responder cold':>15} {'build_ap_req':>13}"
          "   (ops/s, one thread)")
    for e in args.enctype:
        r, c, i = bench(e, args.n, args.profile)
        if args.profile:
            continue
        worst = r if worst is None else min(worst, r)
        flag = "" if r >= TARGET else "  < target"
        print(f"{e:>8} {r:>15,.0f} {c:>15,.0f} {i:>13,.0f}{flag}")
    if worst is not None:
        print(f"target {TARGET} ops/s for the responder path: "
              f"{'met' if worst >= TARGET else 'MISSED'} (worst {worst:,.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
