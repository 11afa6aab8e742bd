"""CPU cost of a responder CREATE (engine + Kerberos + crypto + codec), real tickets."""

from __future__ import annotations

import time

from kink import wire
from kinkd.config import parse_selector
from tests.support.simnet import A1, A2, child
from tests.test_engine_flows import kit, pair

__all__ = ["kit"]

N = 1000


def test_responder_create_cpu_cost(kit):
    c1 = [child(f"c{i}", local_ts=(parse_selector(f"10.1.{i // 250}.{i % 250 + 1}/32"),),
                remote_ts=(parse_selector(f"10.2.{i // 250}.{i % 250 + 1}/32"),))
          for i in range(N)]
    c2 = [child("all", local_ts=(parse_selector("10.2.0.0/16"),),
                remote_ts=(parse_selector("10.1.0.0/16"),))]
    net, n1, n2 = pair(kit, c1=c1, c2=c2)
    now = net.t(n1)
    eff = n1.engine.initiate("h2", None, now)
    net.apply(n1, eff)
    creates = [d for _, d, _ in n1.sent if wire.decode(d).type == wire.MessageType.CREATE]
    assert len(creates) == N
    eng = n2.engine
    t_now = net.t(n2) + 0.01
    # warm-up (key derivation caches, imports) on a separate engine is not needed: the
    # measurement includes everything a fresh responder does per CREATE
    import os
    prof = None
    if os.environ.get("KINKD_PROFILE"):
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t0 = time.process_time()
    replies = 0
    for d in creates:
        for e in eng.receive(d, A1, t_now, local=A2):
            if type(e).__name__ == "Send":
                replies += 1
    if prof is not None:
        prof.disable()
        import pstats
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    cpu = (time.process_time() - t0) / N
    print(f"\nresponder CREATE: {cpu * 1e3:.3f} ms CPU each ({N} CREATEs)")
    assert replies == N and len(eng.sas()) == N
    assert cpu < 1.0e-3


def test_initiator_create_cpu_cost(kit):
    """The initiator side of a 2-way CREATE: build and send the CREATE (SPI, nonce,
    larval inbound SA with KEYMAT, AP-REQ, Cksum, KINK_ENCRYPT) plus the REPLY (AP-REP,
    Cksum, decrypt, answer check, KEYMAT, outbound SA). The ticket is fetched once
    before the measurement (a KDC round trip is I/O, not engine CPU)."""
    c1 = [child(f"c{i}", local_ts=(parse_selector(f"10.1.{i // 250}.{i % 250 + 1}/32"),),
                remote_ts=(parse_selector(f"10.2.{i // 250}.{i % 250 + 1}/32"),))
          for i in range(N + 1)]
    c2 = [child("all", local_ts=(parse_selector("10.2.0.0/16"),),
                remote_ts=(parse_selector("10.1.0.0/16"),))]
    net, n1, n2 = pair(kit, c1=c1, c2=c2)
    eng = n1.engine
    # warm-up: one CREATE end to end, so that the service ticket is cached
    net.call(n1, "initiate", "h2", c1[N].name, net.t(n1))
    net.settle(2)
    assert len(eng.sas()) == 1
    t_now = net.t(n1)
    t0 = time.process_time()
    creates = []
    for ch in c1[:N]:
        for e in eng.initiate("h2", ch.name, t_now):
            if type(e).__name__ == "Send":
                creates.append(e.data)
    t_build = time.process_time() - t0
    assert len(creates) == N
    replies = []
    r_now = net.t(n2) + 0.01
    for d in creates:
        for e in n2.engine.receive(d, A1, r_now, local=A2):
            if type(e).__name__ == "Send":
                replies.append(e.data)
    assert len(replies) == N
    t1 = time.process_time()
    for d in replies:
        eng.receive(d, A2, t_now + 0.02, local=A1)
    t_reply = time.process_time() - t1
    cpu = (t_build + t_reply) / N
    print(f"\ninitiator CREATE: {cpu * 1e3:.3f} ms CPU each "
          f"(build+send {t_build / N * 1e3:.3f} ms, REPLY {t_reply / N * 1e3:.3f} ms; "
          f"{N} CREATEs)")
    assert sum(1 for s in eng.sas() if s.state.name == "MATURE") == N + 1
    assert cpu < 2.0e-3
