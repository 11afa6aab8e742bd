#!/usr/bin/env python3
"""SADB benchmark: memory per SA (tracemalloc) and lookup/insert/expiry rates.

Usage: python bench/bench_sadb.py [--sas 100000] [--peers 25000]

Two memory figures are reported:
* "SADB only": allocations made by the SADB itself (records, indices, timer
  heap, lifetimes), with key material and peer keys created *before* the
  measurement (they belong to the caller);
* "incl. keys": the same plus four Secret keys and two KeyMaterial objects per
  SA (ESP AES-128-CBC + HMAC-SHA1, both directions).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from isakmp.algorithms import cipher_spec, integrity_spec  # noqa: E402
from isakmp.doi import AuthAlgorithm, EncapsulationMode, EspTransformId, ProtocolId  # noqa: E402
from isakmp.keymat import KeyMaterial  # noqa: E402
from isakmp.sadb import SADB, ExpiryKind, Transform, randomized_lifetime  # noqa: E402
from isakmp.secret import Secret  # noqa: E402


def make_keys(rng: random.Random) -> KeyMaterial:  # ESP AES-128-CBC + HMAC-SHA1
    return KeyMaterial(Secret(rng.randbytes(16)), Secret(rng.randbytes(20)))


def fill(db, n, peers, transform, rng, keys, lifetimes):
    recs = []
    add = db.add
    alloc = db.allocate_spi
    for i in range(n):
        peer = peers[i % len(peers)]
        kin, kout = keys[i] if keys else (None, None)
        recs.append(
            add(
                peer=peer,
                child="default",
                protocol=ProtocolId.ESP,
                spi_in=alloc(),
                spi_out=0x1000 + i,
                transform=transform,
                mode=EncapsulationMode.TRANSPORT,
                now=float(i % 600),
                lifetime=lifetimes[i],
                initiator=bool(i & 1),
                keys_in=kin,
                keys_out=kout,
            )
        )
    return recs


def measure(n, peers, transform, traced):
    """Build a DB of n SAs (lifetimes included, keys not: they are measured apart)."""
    rng = random.Random(1)
    gc.collect()
    if traced:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0] if traced else 0
    t0 = time.perf_counter()
    lifetimes = [
        randomized_lifetime(rng, hard_seconds=28800, t_retrans=31, t_rekey=90) for _ in range(n)
    ]
    db = SADB(max_sas=n, rng=random.Random(2))
    recs = fill(db, n, peers, transform, rng, None, lifetimes)
    t_insert = time.perf_counter() - t0
    used = 0
    if traced:
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
    del lifetimes
    return db, recs, used, t_insert


def measure_keys_only(n):
    rng = random.Random(1)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    keys = [(make_keys(rng), make_keys(rng)) for _ in range(n)]
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del keys
    return used


def rate(fn, items):
    t0 = time.perf_counter()
    for x in items:
        fn(x)
    return len(items) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sas", type=int, default=100_000)
    ap.add_argument("--peers", type=int, default=25_000)
    args = ap.parse_args()
    n = args.sas
    peers = [
        (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", f"host/h{i}@REALM")
        for i in range(args.peers)
    ]
    transform = Transform(
        cipher_spec(EspTransformId.ESP_AES_CBC, 128), integrity_spec(AuthAlgorithm.HMAC_SHA)
    )

    _, _, sadb_bytes, _ = measure(n, peers, transform, traced=True)
    key_bytes = measure_keys_only(n)
    gc.collect()
    db, recs, _, t_insert = measure(n, peers, transform, traced=False)
    print(f"SAs: {n}, peers: {len(peers)}")
    print(f"insert: {n / t_insert:,.0f} SAs/s (incl. SPI allocation and soft-lifetime jitter)")
    print(f"memory, SADB only : {sadb_bytes / n:,.0f} bytes/SA ({sadb_bytes / 2**20:.1f} MiB)")
    print(
        f"memory, incl. keys: {(sadb_bytes + key_bytes) / n:,.0f} bytes/SA "
        f"(keys in+out {key_bytes / n:,.0f} bytes/SA)"
    )

    rng = random.Random(3)
    sample = [recs[rng.randrange(n)] for _ in range(200_000)]
    spis = [r.spi_in for r in sample]
    outs = [(r.protocol, r.spi_out, r.peer) for r in sample]
    ppl = [r.peer for r in sample]
    print(f"lookup by inbound SPI : {rate(db.by_spi_in, spis):,.0f} /s")
    print(f"lookup by outbound SPI: {rate(lambda t: db.by_spi_out(*t), outs):,.0f} /s")
    print(f"lookup by peer        : {rate(db.by_peer, ppl):,.0f} /s")
    print(f"current(peer, child)  : {rate(lambda p: db.current(p, 'default'), ppl):,.0f} /s")
    misses = [rng.randrange(1 << 32) for _ in range(200_000)]
    print(f"miss by inbound SPI   : {rate(db.by_spi_in, misses):,.0f} /s")

    t0 = time.perf_counter()
    ev = db.expire(30_000)  # every soft and hard timer fires
    t_exp = time.perf_counter() - t0
    soft = sum(1 for e in ev if e.kind == ExpiryKind.SOFT)
    print(
        f"expire: {soft:,} soft + {len(ev) - soft:,} hard events in {t_exp:.2f} s "
        f"({len(ev) / t_exp:,.0f} events/s); left {len(db)}"
    )
    t0 = time.perf_counter()
    for _ in range(10_000):
        db.expire(0.0)
    print(f"expire() with nothing due: {(time.perf_counter() - t0) / 10_000 * 1e6:.2f} us/call")


if __name__ == "__main__":
    main()
