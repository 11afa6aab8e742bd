#!/usr/bin/env python3
"""The benchmark harness: KINK (two kinkd processes) against strongSwan (two charons).

Usage (as root; ``make bench`` / ``make bench QUICK=1`` run this)::

    python bench/run.py [--quick] [--out bench/results] [--no-strongswan] [--no-kink]
                        [--no-scale] [--no-ikev1]

(``--no-kink --no-strongswan``: the IKEv1 section alone, with its own strongSwan half.)

Writes ``<out>/latest.json`` (``machine``, ``versions``, ``settings``, ``figures`` with
``{min, median, max, unit, n}`` per name; ``n`` = repetitions or samples), ``<out>/latency.png``
(latency percentiles against offered rate) and prints a table with the KINK/strongSwan
ratios and the targets of issues #8 and #15. See the "Benchmarks" section of README.md.

Sections:

* KINK rates (pair 1, loopback, memory backend, real KDC, tickets warm): CREATE closed loop
  at concurrency 1, 8, 64 (SAs/s, CPU ms per SA of each daemon from /proc, latency), the same
  at concurrency 8 with PFS (ecp256 KE, 3-way) and with user-to-user; an open-loop sweep of
  offered rates (fractions of the concurrency-8 peak; latency p50/p90/p99; the headline
  latency figures are at half the peak); rekey (successor CREATE + DELETE of the old SA) and
  DELETE (one SA per exchange) at concurrency 8. SAs are deleted between repetitions.
* KINK scale (pair 2, initiator configured with ~100,000 children): RSS growth per SA up to
  10,000 and 100,000 SAs held (QUICK: 10,000 held, the 100,000 figures extrapolated, marked
  in ``settings``) and the concurrency-8 CREATE rate with 100 vs 100,000 SAs held.
* strongSwan (two namespaces, kernel-libipsec): IKE_SA+CHILD_SA setups at concurrency 1 and 8,
  CHILD_SA-only creation in one IKE_SA at concurrency 1 and 8.
* IKEv1 (``bench/ikev1.py``; two kinkd processes, then two charons, in the same two
  namespaces in every repetition): Main Mode (PSK, aes128-sha256-ecp256) + Quick Mode with a
  fresh ISAKMP SA per setup, and Quick Mode only on one live ISAKMP SA, at concurrency 1
  and 8: ``ikev1.{mmqm,qm}.c{1,8}.per_s`` and ``swan.ikev1.{mmqm,qm}.c{1,8}.per_s``, CPU ms
  per setup of each daemon and latencies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.kink import KinkBench, PeerSet, loopback_ok, rss_bytes  # noqa: E402

FULL = dict(reps=3, c1=600, c8=2000, c64=2000, pfs=600, u2u=600, rekey=1500, delete=1500,
            sweep=(0.1, 0.25, 0.5, 0.75, 0.9), sweep_seconds=3.0, scale=(10_000, 100_000),
            scale_batch=2000, swan_c1=400, swan_c8=1000, swan_child=2000, swan_child_c1=500,
            ike_mmqm_c1=300, ike_mmqm_c8=1000, ike_qm_c1=600, ike_qm_c8=2000)
QUICK = dict(reps=3, c1=300, c8=1000, c64=1000, pfs=300, u2u=300, rekey=600, delete=600,
             sweep=(0.25, 0.5, 0.9), sweep_seconds=1.2, scale=(10_000,),
             scale_batch=1000, swan_c1=200, swan_c8=500, swan_child=800, swan_child_c1=300,
             ike_mmqm_c1=150, ike_mmqm_c8=400, ike_qm_c1=250, ike_qm_c8=800)


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


class Figures:
    def __init__(self) -> None:
        self.samples: dict[str, tuple[list[float], str]] = {}

    def add(self, name: str, value: float, unit: str) -> None:
        self.samples.setdefault(name, ([], unit))[0].append(float(value))

    def as_json(self) -> dict:
        out = {}
        for name, (xs, unit) in sorted(self.samples.items()):
            xs = [x for x in xs if x == x]
            if not xs:
                continue
            out[name] = {"min": round(min(xs), 4), "median": round(statistics.median(xs), 4),
                         "max": round(max(xs), 4), "unit": unit, "n": len(xs)}
        return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- KINK ----------------------------------------------------------------------------------


def kink_rates(S: dict, F: Figures, plot: dict, between=None) -> None:
    """KINK rates; ``between(rep)`` (strongSwan's repetition) runs after each KINK repetition,
    so both halves see the same background load of the machine."""
    reps = S["reps"]
    per_rep = S["c1"] + S["c8"] + S["c64"]
    main = PeerSet("r", 16, -(-per_rep // 16) + 1)
    pfs = PeerSet("p", 8, -(-S["pfs"] // 8) + 1, pfs=True)
    u2u = PeerSet("u", 8, -(-S["u2u"] // 8) + 1, u2u=True)
    t0 = time.monotonic()
    with KinkBench([main, pfs, u2u]) as kb:
        log(f"KINK pair up in {time.monotonic() - t0:.1f}s (pids {kb.ini.proc.pid}, {kb.res.proc.pid})")
        for p in ("r", "p", "u"):
            w = kb.warm(p)
            if w.failed:
                raise RuntimeError(f"STATUS warm-up of set {p} failed: {w.failed}")
        peak = []
        for rep in range(reps):
            for c in (1, 8, 64):
                r = kb.create("r", S[f"c{c}"], concurrency=c)
                check(r)
                F.add(f"kink.create.c{c}.per_s", r.per_s, "SAs/s")
                F.add(f"kink.latency_ms.c{c}.p50", pct(r.latency_ms, 50), "ms")
                F.add(f"kink.latency_ms.c{c}.p99", pct(r.latency_ms, 99), "ms")
                F.add(f"kink.cpu_ms_per_sa.c{c}.initiator", r.cpu_ini / r.ok * 1e3, "ms")
                F.add(f"kink.cpu_ms_per_sa.c{c}.responder", r.cpu_res / r.ok * 1e3, "ms")
                if c == 8:
                    F.add("kink.cpu_ms_per_sa.initiator", r.cpu_ini / r.ok * 1e3, "ms")
                    F.add("kink.cpu_ms_per_sa.responder", r.cpu_res / r.ok * 1e3, "ms")
                    peak.append(r.per_s)
                plot.setdefault("kink_closed", []).append(
                    (c, r.per_s, pct(r.latency_ms, 50), pct(r.latency_ms, 90), pct(r.latency_ms, 99)))
                log(f"KINK rep {rep + 1}/{reps} CREATE c{c}: {r.per_s:.0f}/s, p50 "
                    f"{pct(r.latency_ms, 50):.2f} ms, CPU/SA ini {r.cpu_ini / r.ok * 1e3:.3f} "
                    f"res {r.cpu_res / r.ok * 1e3:.3f} ms")
            # rekey and DELETE of SAs created at c8 in this repetition
            base = S["c1"]
            targets = [main.target(rep_off) for rep_off in range(base, base + S["rekey"])]
            r = kb.bench("rekey", targets, concurrency=8)
            check(r)
            F.add("kink.rekey.per_s", r.per_s, "rekeys/s")
            F.add("kink.cpu_ms_per_rekey.initiator", r.cpu_ini / r.ok * 1e3, "ms")
            F.add("kink.cpu_ms_per_rekey.responder", r.cpu_res / r.ok * 1e3, "ms")
            log(f"KINK rep {rep + 1}/{reps} rekey c8: {r.per_s:.0f}/s (CREATE + DELETE of the old SA)")
            targets = [main.target(i) for i in range(base, base + S["delete"])]
            r = kb.bench("delete", targets, concurrency=8)
            check(r)
            F.add("kink.delete.per_s", r.per_s, "DELETEs/s")
            F.add("kink.cpu_ms_per_delete.initiator", r.cpu_ini / r.ok * 1e3, "ms")
            F.add("kink.cpu_ms_per_delete.responder", r.cpu_res / r.ok * 1e3, "ms")
            log(f"KINK rep {rep + 1}/{reps} DELETE c8: {r.per_s:.0f}/s")
            kb.down_all("r")
            kb.reset_children("r")
            for name, st in (("pfs", "p"), ("u2u", "u")):
                r = kb.create(st, S[name], concurrency=8)
                check(r)
                F.add(f"kink.create.c8.{name}.per_s", r.per_s, "SAs/s")
                F.add(f"kink.cpu_ms_per_sa.{name}.initiator", r.cpu_ini / r.ok * 1e3, "ms")
                F.add(f"kink.cpu_ms_per_sa.{name}.responder", r.cpu_res / r.ok * 1e3, "ms")
                F.add(f"kink.latency_ms.c8.{name}.p50", pct(r.latency_ms, 50), "ms")
                log(f"KINK rep {rep + 1}/{reps} CREATE c8 {name}: {r.per_s:.0f}/s")
                kb.down_all(st)
                kb.reset_children(st)
            if between is not None:
                between(rep)
        # open-loop sweep of offered rates
        top = statistics.median(peak)
        plot["kink_peak"] = top
        for f in S["sweep"]:
            reps_here = reps if f == 0.5 else 1
            for _ in range(reps_here):
                rate = max(10.0, f * top)
                n = max(200, int(rate * S["sweep_seconds"]))
                n = min(n, main.capacity)
                r = kb.bench("create", main.take(n), concurrency=512, rate=rate)
                check(r)
                p50, p90, p99 = (pct(r.latency_ms, q) for q in (50, 90, 99))
                plot.setdefault("kink_sweep", []).append((rate, r.per_s, p50, p90, p99))
                if f == 0.5:
                    F.add("kink.latency_ms.p50", p50, "ms")
                    F.add("kink.latency_ms.p90", p90, "ms")
                    F.add("kink.latency_ms.p99", p99, "ms")
                log(f"KINK open loop at {rate:.0f}/s offered ({f:.0%} of peak): achieved "
                    f"{r.per_s:.0f}/s, p50 {p50:.2f} p90 {p90:.2f} p99 {p99:.2f} ms; "
                    f"{gc_text(r)}")
                kb.down_all("r")
                kb.reset_children("r")


def gc_text(r) -> str:
    """The collectors' pauses of a run, per daemon: full collections (generation 2) and
    how many pauses of any generation passed 1 ms."""
    parts = []
    for who, g in (("ini", r.gc_ini), ("res", r.gc_res)):
        if g:
            full = g["2"]
            slow = sum(v["over_1ms"] for v in g.values())
            freed = sum(v.get("collected", 0) for v in g.values())
            parts.append(f"{who} gc2 {full['n']}x max {full['max_ms']:.1f} ms, {slow} > 1 ms, "
                         f"{freed} cyclic objects freed")
        else:
            parts.append(f"{who} gc n/a")
    return "; ".join(parts)


def kink_scale(S: dict, F: Figures, settings: dict) -> None:
    levels = S["scale"]
    held = max(levels)
    batch = S["scale_batch"]
    reps = S.get("scale_reps", 3)  # samples of each "rate with N held" figure (medians)
    # children are not reused after a DELETE: the samples at ~100 held (100 + batch each),
    # the fill to `held`, the samples at `held`, and some slack
    total = reps * (100 + batch) + held + reps * batch + 200
    peers = 1000
    s = PeerSet("s", peers, -(-total // peers))
    t0 = time.monotonic()
    with KinkBench([s]) as kb:
        log(f"KINK scale pair up in {time.monotonic() - t0:.1f}s ({s.capacity} children configured)")
        w = kb.warm("s")
        if w.failed:
            raise RuntimeError(f"warm-up failed: {w.failed}")
        pi, pr = kb.ini.proc.pid, kb.res.proc.pid
        for _ in range(reps):  # each sample from ~100 held (the SAs are taken down after)
            check(kb.create("s", 100, concurrency=8))
            r = kb.create("s", batch, concurrency=8)
            check(r)
            F.add("kink.create.c8.at_100.per_s", r.per_s, "SAs/s")
            F.add("kink.cpu_ms_per_sa.responder.held_100", r.cpu_res / r.ok * 1e3, "ms")
            log(f"KINK CREATE c8 with ~100 SAs held: {r.per_s:.0f}/s, responder "
                f"{r.cpu_res / r.ok * 1e3:.3f} ms CPU/SA")
            kb.down_all("s")
            time.sleep(0.5)
        base_i, base_r = rss_bytes(pi), rss_bytes(pr)
        have = 0
        for level in sorted(levels):
            r = kb.create("s", level - have, concurrency=8)
            check(r)
            have = level
            di, dr = rss_bytes(pi) - base_i, rss_bytes(pr) - base_r
            F.add(f"kink.rss_bytes_per_sa.{level}.initiator", di / level, "bytes")
            F.add(f"kink.rss_bytes_per_sa.{level}.responder", dr / level, "bytes")
            F.add(f"kink.rss_bytes_per_sa.{level}", max(di, dr) / level, "bytes")
            log(f"KINK {level} SAs held: RSS +{di / level:.0f} B/SA initiator, +{dr / level:.0f} "
                f"B/SA responder (fill at {r.per_s:.0f}/s)")
        n_ini, n_res = kb.sas(kb.ini), kb.sas(kb.res)
        if min(n_ini, n_res) < held * 0.999:
            raise RuntimeError(f"expected {held} SAs held, have {n_ini}/{n_res}")
        for _ in range(reps):  # held, held + batch, ...: each sample within a few % of held
            r = kb.create("s", batch, concurrency=8)
            check(r)
            F.add(f"kink.create.c8.at_{held}.per_s", r.per_s, "SAs/s")
            # the responder holds every SA from one initiator principal (host1's)
            F.add(f"kink.create.c8.responder_held_{held}.per_s", r.per_s, "SAs/s")
            F.add(f"kink.cpu_ms_per_sa.responder.held_{held}", r.cpu_res / r.ok * 1e3, "ms")
            log(f"KINK CREATE c8 with {held} SAs held: {r.per_s:.0f}/s, responder "
                f"{r.cpu_res / r.ok * 1e3:.3f} ms CPU/SA")
            if held < 100_000:  # QUICK: extrapolate (per-SA cost assumed constant)
                F.add("kink.create.c8.at_100000.per_s", r.per_s, "SAs/s")
                F.add("kink.create.c8.responder_held_100000.per_s", r.per_s, "SAs/s")
                F.add("kink.cpu_ms_per_sa.responder.held_100000", r.cpu_res / r.ok * 1e3, "ms")
        if held < 100_000:
            src = F.samples[f"kink.rss_bytes_per_sa.{held}"][0][-1]
            F.add("kink.rss_bytes_per_sa.100000", src, "bytes")
            settings["extrapolated"] = [
                f"{name} (from {held})" for name in (
                    "kink.rss_bytes_per_sa.100000", "kink.create.c8.at_100000.per_s",
                    "kink.create.c8.responder_held_100000.per_s",
                    "kink.cpu_ms_per_sa.responder.held_100000")]


FAILURES: list[str] = []


def check(r) -> None:
    """A bench run tolerates rare failed operations (timeouts under load): at most 0.1 %,
    reported in the notes; more than that makes the run fail."""
    if not r.failed:
        return
    if r.failed * 1000 > r.n:
        raise RuntimeError(f"{r.op}: {r.failed} of {r.n} failed")
    FAILURES.append(f"{r.op}: {r.failed} of {r.n} failed (tolerated, <= 0.1 %)")


# --- strongSwan --------------------------------------------------------------------------------


class Swan:
    """strongSwan half; :meth:`rep` runs one repetition of every measurement."""

    def __init__(self, S: dict, F: Figures, plot: dict, notes: list, versions: dict):
        self.S, self.F, self.plot, self.notes, self.versions = S, F, plot, notes, versions
        self.sb = None
        self._tmp = None

    def __enter__(self) -> Swan:
        from bench.strongswan import SwanBench, ensure_installed

        ok, reason = ensure_installed()
        if not ok:
            self.notes.append(f"strongSwan half skipped: {reason}")
            log(self.notes[-1])
            return self
        self._tmp = tempfile.TemporaryDirectory(prefix="kinkd-bench-swan-")
        S = self.S
        self.sb = SwanBench(Path(self._tmp.name), n_children=max(S["swan_child"], S["swan_child_c1"]))
        self.sb.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.sb is not None:
            self.sb.__exit__(*exc)
        if self._tmp is not None:
            self._tmp.cleanup()

    def rep(self, rep: int) -> None:
        if self.sb is None:
            return
        S, F, plot, sb = self.S, self.F, self.plot, self.sb
        for c, n in ((1, S["swan_c1"]), (8, S["swan_c8"])):
            r = sb.ike_child(n, c)
            if "strongswan" not in self.versions:
                self.versions["strongswan"] = sb.version()
            if r.errors:
                raise RuntimeError(f"strongSwan ike_child: {r.errors}")
            F.add(f"strongswan.ike_child.c{c}.per_s", r.per_s, "SAs/s")
            F.add(f"strongswan.cpu_ms_per_sa.ike_child.c{c}.initiator", r.cpu_ini / r.ok * 1e3, "ms")
            F.add(f"strongswan.cpu_ms_per_sa.ike_child.c{c}.responder", r.cpu_res / r.ok * 1e3, "ms")
            F.add(f"strongswan.latency_ms.ike_child.c{c}.p50", pct(r.latency_ms, 50), "ms")
            F.add(f"strongswan.latency_ms.ike_child.c{c}.p99", pct(r.latency_ms, 99), "ms")
            plot.setdefault("swan_ike", []).append(
                (c, r.per_s, pct(r.latency_ms, 50), pct(r.latency_ms, 90), pct(r.latency_ms, 99)))
            log(f"strongSwan rep {rep + 1} IKE+CHILD c{c}: {r.per_s:.0f}/s, CPU/SA ini "
                f"{r.cpu_ini / r.ok * 1e3:.2f} res {r.cpu_res / r.ok * 1e3:.2f} ms")
        for c, n in ((1, S["swan_child_c1"]), (8, S["swan_child"])):
            r = sb.child_only(n, c)
            if r.errors:
                raise RuntimeError(f"strongSwan child_only: {r.errors}")
            name = "strongswan.child_only.per_s" if c == 8 else "strongswan.child_only.c1.per_s"
            F.add(name, r.per_s, "SAs/s")
            F.add(f"strongswan.cpu_ms_per_sa.child_only.c{c}.initiator", r.cpu_ini / r.ok * 1e3, "ms")
            F.add(f"strongswan.cpu_ms_per_sa.child_only.c{c}.responder", r.cpu_res / r.ok * 1e3, "ms")
            plot.setdefault("swan_child", []).append(
                (c, r.per_s, pct(r.latency_ms, 50), pct(r.latency_ms, 90), pct(r.latency_ms, 99)))
            log(f"strongSwan rep {rep + 1} CHILD-only c{c}: {r.per_s:.0f}/s")
        sb.stop()


# --- IKEv1 ----------------------------------------------------------------------------------


def ikev1_section(S: dict, F: Figures, plot: dict, notes: list, versions: dict) -> None:
    """kinkd's IKEv1 (two kinkd processes) against charon's IKEv1, in the same two network
    namespaces, both in every repetition (kinkd first, then the charons: both use port 500).
    Main Mode + Quick Mode with a fresh ISAKMP SA per setup, and Quick Mode only on one live
    ISAKMP SA, each at concurrency 1 and 8 (see bench/ikev1.py)."""
    from bench.ikev1 import IkeBench
    from bench.strongswan import ensure_installed

    ok, reason = ensure_installed()
    if not ok:
        notes.append(f"IKEv1 section skipped: {reason}")
        log(notes[-1])
        return
    mm = {1: S["ike_mmqm_c1"], 8: S["ike_mmqm_c8"]}
    qm = {1: S["ike_qm_c1"], 8: S["ike_qm_c8"]}
    with tempfile.TemporaryDirectory(prefix="kinkd-bench-ikev1-") as tmp, \
            IkeBench(Path(tmp), sum(mm.values()), sum(qm.values()), swan_conns=max(mm.values()),
                     swan_children=max(qm.values())) as ib:
        for rep in range(S["reps"]):
            t0 = time.monotonic()
            ib.kinkd_up()
            log(f"IKEv1 rep {rep + 1}: kinkd pair up in {time.monotonic() - t0:.1f}s")
            for kind, counts, run in (("mmqm", mm, ib.kinkd_mmqm), ("qm", qm, ib.kinkd_qm)):
                for c, n in counts.items():
                    r = run(n, c)
                    check(r)
                    _ike_figures(F, plot, f"ikev1.{kind}.c{c}", r, c)
                    log(f"IKEv1 rep {rep + 1} kinkd {kind} c{c}: {r.per_s:.0f}/s, CPU/setup ini "
                        f"{r.cpu_ini / r.ok * 1e3:.2f} res {r.cpu_res / r.ok * 1e3:.2f} ms, p50 "
                        f"{pct(r.latency_ms, 50):.2f} ms")
            counters = ib.kinkd_stats()
            bad = {f"{who}:{k}": v for who, cs in counters.items() for k, v in cs.items()
                   if v and (".failed." in k or "timeouts" in k or "retransmits" in k
                             or "initial_contact" in k and v > 1)}
            if bad:
                notes.append(f"kinkd IKEv1 rep {rep + 1}: {bad}")
            ib.kinkd_down()
            for kind, counts, run in (("mmqm", mm, ib.swan_mmqm), ("qm", qm, ib.swan_qm)):
                for c, n in counts.items():
                    r = run(n, c)
                    _ike_figures(F, plot, f"swan.ikev1.{kind}.c{c}", r, c)
                    log(f"IKEv1 rep {rep + 1} strongSwan {kind} c{c}: {r.per_s:.0f}/s, CPU/setup "
                        f"ini {r.cpu_ini / r.ok * 1e3:.2f} res {r.cpu_res / r.ok * 1e3:.2f} ms")
            if "strongswan" not in versions:
                versions["strongswan"] = ib.swan.version()
            ib.swan.stop()


def _ike_figures(F: Figures, plot: dict, prefix: str, r, c: int) -> None:
    """``<prefix>.per_s``, CPU ms per setup of each side, latency p50/p99."""
    unit = "setups/s" if ".mmqm." in prefix else "SAs/s"
    F.add(f"{prefix}.per_s", r.per_s, unit)
    side, rest = prefix.split(".c")[0], f"c{c}"
    F.add(f"{side}.cpu_ms_per_setup.{rest}.initiator", r.cpu_ini / r.ok * 1e3, "ms")
    F.add(f"{side}.cpu_ms_per_setup.{rest}.responder", r.cpu_res / r.ok * 1e3, "ms")
    F.add(f"{side}.latency_ms.{rest}.p50", pct(r.latency_ms, 50), "ms")
    F.add(f"{side}.latency_ms.{rest}.p99", pct(r.latency_ms, 99), "ms")
    plot.setdefault(side, []).append(
        (c, r.per_s, pct(r.latency_ms, 50), pct(r.latency_ms, 90), pct(r.latency_ms, 99)))


# --- report ---------------------------------------------------------------------------------


REQUIRED = ["kink.create.c1.per_s", "kink.create.c8.per_s", "kink.create.c64.per_s",
            "kink.latency_ms.p50", "kink.latency_ms.p99", "kink.cpu_ms_per_sa.initiator",
            "kink.cpu_ms_per_sa.responder", "kink.rss_bytes_per_sa.100000", "kink.rekey.per_s",
            "kink.delete.per_s", "kink.cpu_ms_per_sa.responder.held_100",
            "kink.cpu_ms_per_sa.responder.held_100000",
            "kink.create.c8.responder_held_100000.per_s", "strongswan.ike_child.c1.per_s", "strongswan.ike_child.c8.per_s",
            "strongswan.child_only.per_s",
            "ikev1.mmqm.c1.per_s", "ikev1.mmqm.c8.per_s", "ikev1.qm.c1.per_s", "ikev1.qm.c8.per_s",
            "swan.ikev1.mmqm.c1.per_s", "swan.ikev1.mmqm.c8.per_s", "swan.ikev1.qm.c1.per_s",
            "swan.ikev1.qm.c8.per_s"]

#: kinkd IKEv1 / strongSwan IKEv1 in the table
IKEV1_RATIOS = [(f"ikev1.{k}.c{c}.per_s", f"swan.ikev1.{k}.c{c}.per_s")
                for k in ("mmqm", "qm") for c in (1, 8)]


def med(figs: dict, name: str) -> float | None:
    f = figs.get(name)
    return f["median"] if f else None


def targets(figs: dict) -> list[tuple[str, bool | None, str]]:
    out = []

    def ratio(a, b):
        x, y = med(figs, a), med(figs, b)
        return None if x is None or not y else x / y

    r = ratio("kink.create.c8.per_s", "strongswan.ike_child.c8.per_s")
    out.append(("KINK c8 >= 3x strongSwan IKE+CHILD c8", None if r is None else r >= 3,
                "n/a" if r is None else f"{r:.2f}x"))
    r = ratio("kink.create.c8.per_s", "strongswan.child_only.per_s")
    out.append(("KINK c8 >= 2.5x strongSwan CHILD-only", None if r is None else r >= 2.5,
                "n/a" if r is None else f"{r:.2f}x"))
    v = med(figs, "kink.cpu_ms_per_sa.responder")
    out.append(("responder CPU/SA <= 0.3 ms", None if v is None else v <= 0.3, f"{v} ms"))
    v = med(figs, "kink.cpu_ms_per_sa.responder.held_100")
    out.append(("responder CPU/SA at 100 held <= 0.25 ms", None if v is None else v <= 0.25,
                f"{v} ms"))
    r = ratio("kink.cpu_ms_per_sa.responder.held_100000", "kink.cpu_ms_per_sa.responder.held_100")
    out.append(("responder CPU/SA at 100,000 held <= 1.2x at 100",
                None if r is None else r <= 1.2, "n/a" if r is None else f"{r:.2f}x"))
    v = med(figs, "kink.cpu_ms_per_sa.initiator")
    out.append(("initiator CPU/SA <= 0.5 ms", None if v is None else v <= 0.5, f"{v} ms"))
    v = med(figs, "kink.latency_ms.p99")
    out.append(("p99 at half peak <= 5 ms", None if v is None else v <= 5, f"{v} ms"))
    v = med(figs, "kink.rss_bytes_per_sa.100000")
    out.append(("RSS/SA at 100,000 <= 4 KiB", None if v is None else v <= 4096, f"{v} B"))
    r = ratio("kink.create.c8.at_100000.per_s", "kink.create.c8.at_100.per_s")
    out.append(("rate at 100,000 held within 10% of rate at 100",
                None if r is None else r >= 0.9, "n/a" if r is None else f"{r:.2f}"))
    # issue #15: IKEv1 against strongSwan's IKEv1 in the same run
    r = ratio("ikev1.mmqm.c8.per_s", "swan.ikev1.mmqm.c8.per_s")
    out.append(("IKEv1 Main+Quick ecp256 c8 >= 1.0x strongSwan", None if r is None else r >= 1.0,
                "n/a" if r is None else f"{r:.2f}x"))
    r = ratio("ikev1.qm.c8.per_s", "swan.ikev1.qm.c8.per_s")
    out.append(("IKEv1 Quick Mode only c8 >= 2x strongSwan", None if r is None else r >= 2.0,
                "n/a" if r is None else f"{r:.2f}x"))
    return out


def table(doc: dict) -> str:
    figs = doc["figures"]
    lines = [f"{'figure':48} {'median':>10} {'min':>10} {'max':>10}  unit       n"]
    for name in REQUIRED + sorted(set(figs) - set(REQUIRED)):
        f = figs.get(name)
        if f is None:
            lines.append(f"{name:48} {'(missing)':>10}")
            continue
        lines.append(f"{name:48} {f['median']:>10.4g} {f['min']:>10.4g} {f['max']:>10.4g}  "
                     f"{f['unit']:10} {f['n']}")
    lines.append("")
    lines.append("KINK / strongSwan (medians):")
    for a, b in (("kink.create.c1.per_s", "strongswan.ike_child.c1.per_s"),
                 ("kink.create.c8.per_s", "strongswan.ike_child.c8.per_s"),
                 ("kink.create.c8.per_s", "strongswan.child_only.per_s"),
                 ("kink.create.c1.per_s", "strongswan.child_only.c1.per_s")):
        x, y = med(figs, a), med(figs, b)
        if x is not None and y:
            lines.append(f"  {a} / {b} = {x / y:.2f}")
    lines.append("kinkd IKEv1 / strongSwan IKEv1 (medians):")
    for a, b in IKEV1_RATIOS:
        x, y = med(figs, a), med(figs, b)
        if x is not None and y:
            lines.append(f"  {a} / {b} = {x / y:.2f}")
    lines.append("")
    lines.append("targets (issues #8, #15):")
    for what, ok, val in targets(figs):
        mark = "n/a " if ok is None else ("MET " if ok else "MISS")
        lines.append(f"  [{mark}] {what}: {val}")
    for n in doc.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)


def make_plot(plot: dict, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]'): no plot"
    fig, ax = plt.subplots(figsize=(8, 5))
    sweep = sorted(plot.get("kink_sweep", []))
    if sweep:
        xs = [s[0] for s in sweep]
        for i, (label, style) in enumerate((("p50", "o-"), ("p90", "s--"), ("p99", "^:"))):
            ax.plot(xs, [s[2 + i] for s in sweep], style, label=f"KINK {label} (open loop)")
    for key, label, marker in (("kink_closed", "KINK closed loop", "x"),
                               ("swan_ike", "strongSwan IKE+CHILD", "D"),
                               ("swan_child", "strongSwan CHILD only", "v"),
                               ("ikev1.mmqm", "kinkd IKEv1 Main+Quick", "P"),
                               ("ikev1.qm", "kinkd IKEv1 Quick only", "*"),
                               ("swan.ikev1.mmqm", "strongSwan IKEv1 Main+Quick", "d"),
                               ("swan.ikev1.qm", "strongSwan IKEv1 Quick only", "^")):
        pts = plot.get(key, [])
        if not pts:
            continue
        ax.scatter([p[1] for p in pts], [p[2] for p in pts], marker=marker,
                   label=f"{label} p50 (c1/c8{'/c64' if key == 'kink_closed' else ''})")
        ax.scatter([p[1] for p in pts], [p[4] for p in pts], marker=marker, alpha=0.4,
                   label=f"{label} p99")
    ax.set_xlabel("offered / achieved rate (SAs per second)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("SA setup latency against rate (2-core machine, loopback / netns)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def machine() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"hostname": platform.node(), "kernel": platform.release(), "arch": platform.machine(),
            "cpu": cpu, "cpus": os.cpu_count(), "mem_bytes": mem,
            "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
            "os": _os_release()}


def _os_release() -> str:
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def versions() -> dict:
    from kinkd import __version__

    v = {"python": platform.python_version(), "kinkd": __version__}
    try:
        v["git"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for pkg in ("krb5-kdc", "strongswan-charon"):
        try:
            v[pkg] = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                                    text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import cryptography

        v["cryptography"] = cryptography.__version__
    except ImportError:
        pass
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced run (same figure names)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--no-strongswan", action="store_true")
    ap.add_argument("--no-kink", action="store_true")
    ap.add_argument("--no-scale", action="store_true", help="skip the 10,000/100,000 SA part")
    ap.add_argument("--no-ikev1", action="store_true",
                    help="skip the IKEv1 section (kinkd and strongSwan IKEv1)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run.py needs root (namespaces for strongSwan, the bench control command)",
              file=sys.stderr)
        return 2
    S = dict(QUICK if args.quick else FULL)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    F = Figures()
    plot: dict = {}
    notes: list[str] = []
    settings = {"mode": "quick" if args.quick else "full", **{k: list(v) if isinstance(v, tuple)
                                                              else v for k, v in S.items()},
                "kink": {"transport": "UDP loopback 127.0.0.1 <-> 127.0.0.2", "backend": "memory",
                         "state_file": None, "log_level": "warning", "esp": "aes128gcm16",
                         "pfs": "aes128gcm16-ecp256", "kdc": "MIT krb5kdc (krb5-testrealm/realm), tickets warm",
                         "driver": "'bench' control command of bench/driver.py (kinkd's Daemon "
                                   "plus that command, in-daemon, latency = initiate -> SA "
                                   "established)"},
                "strongswan": {"transport": "two netns, veth, kernel-libipsec (UDP-encapsulated)",
                               "ike": "IKEv2 PSK aes128gcm16-prfsha256-x25519",
                               "esp": "aes128gcm16", "driver": "vici initiate (blocking), 1 or 8 "
                                                               "sessions; done when the initiator "
                                                               "has installed every CHILD_SA "
                                                               "(child-updown events)"},
                "ikev1": {"transport": "two netns, veth 198.18.1.1 <-> 198.18.1.2 (kinkd and "
                                       "charon in the same namespaces, one after the other)",
                          "ike": "Main Mode PSK aes128-sha256-ecp256",
                          "esp": "aes128-sha256 tunnel, no PFS",
                          "kinkd": "memory backend, no state file, log level warning, bench "
                                   "control command; Main+Quick: one IKEv1 peer per setup "
                                   "(fresh ISAKMP SA each); Quick only: children of one peer "
                                   "on its live ISAKMP SA",
                          "strongswan": "kernel-libipsec (UDP-encapsulated), unique = never; "
                                        "Main+Quick: one connection per setup (charon reuses an "
                                        "IKEv1 SA of an equal config whatever reuse_ikesa says); "
                                        "Quick only: children of one IKE_SA"}}
    vers = versions()
    settings["loadavg_at_start"] = open("/proc/loadavg").read().split()[:3]
    started = time.monotonic()
    status = 0
    try:
        with contextlib.ExitStack() as stack:
            sw = None
            if not args.no_strongswan:
                sw = stack.enter_context(Swan(S, F, plot, notes, vers))
            ok, reason = loopback_ok()
            if args.no_kink or not ok:
                if not args.no_kink:
                    notes.append(f"KINK half skipped: {reason}")
                for rep in range(S["reps"]) if sw is not None else ():
                    sw.rep(rep)
            else:
                kink_rates(S, F, plot, between=sw.rep if sw is not None else None)
                if not args.no_scale:
                    kink_scale(S, F, settings)
            if not args.no_ikev1:
                ikev1_section(S, F, plot, notes, vers)
    except Exception as e:  # noqa: BLE001 - write what we have, then fail
        notes.append(f"run failed: {type(e).__name__}: {e}")
        log(notes[-1])
        status = 1
    notes.extend(FAILURES)
    settings["seconds"] = round(time.monotonic() - started, 1)
    doc = {"machine": machine(), "versions": vers, "settings": settings,
           "figures": F.as_json(), "notes": notes}
    note = make_plot(plot, out / "latency.png")
    if note:
        doc["notes"].append(note)
    doc["plot"] = {k: v for k, v in plot.items()}
    (out / "latest.json").write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print(table(doc))
    print(f"\nwrote {out / 'latest.json'} and {out / 'latency.png'} in {settings['seconds']}s")
    return status


if __name__ == "__main__":
    sys.exit(main())
