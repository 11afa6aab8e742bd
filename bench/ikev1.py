"""IKEv1 half of the benchmark: two kinkd processes with IKEv1 peers against two charons
with IKEv1 connections, in the same two network namespaces (``bench.strongswan.SwanBench``:
198.18.1.1 <-> 198.18.1.2 over a veth), one after the other in every repetition.

Both sides negotiate the same thing: Main Mode with a pre-shared key, ``aes128-sha256-ecp256``
(phase 1), then Quick Mode, ESP ``aes128-sha256`` in tunnel mode between 198.19.1.0/24 and
198.19.2.0/24, the initiator's selector narrowed to one TCP port per child (so every child
SA has selectors of its own), no PFS, DPD off, no INITIAL-CONTACT after the first SA.

kinkd: ``python -m bench.driver`` (the real daemon plus the ``bench`` control command, see
``bench/driver.py``) in each namespace, memory backend, no state file, log level warning,
no KINK peer (a throw-away keytab satisfies the daemon's start-up). The initiator has

* ``mmqm`` peers ``m0`` .. ``mN`` (all the responder's address, one child each): a
  "create" on a peer that has no ISAKMP SA yet runs Main Mode, then Quick Mode, so each
  target is one full setup with a fresh ISAKMP SA and a fresh ECDH. ISAKMP SAs are not
  deleted during a measurement (as charon with ``reuse_ikesa = no`` keeps its IKE_SAs);
* peer ``q`` with children ``c`` (brings the ISAKMP SA up before anything is measured) and
  ``k0`` .. ``kM``: "create" on ``(q, kj)`` is one Quick Mode on the live ISAKMP SA.

The responder has one peer (the initiator's address) with one wide child. Both kinkd
processes are started fresh for every repetition (and stopped before the charons start:
both listen on port 500 in the same namespaces). CPU per setup of each daemon comes from
``/proc/PID/stat`` (utime + stime) as in the KINK half.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.kink import Result, _daemon_section, drive, wait_ready
from bench.nodes import Node
from bench.strongswan import SwanBench

IKE = "aes128-sha256-ecp256"
ESP = "aes128-sha256"
PSK = "kinkd-bench-ikev1-psk-0123456789"
NETS = ("198.19.1.0/24", "198.19.2.0/24")
PRINCIPAL = "kink/ikev1-bench.invalid@BENCH.INVALID"
MMQM_PORT, QM_PORT = 10000, 40000


def write_keytab(path: Path, principal: str = PRINCIPAL) -> None:
    """A keytab with one random aes256 key: the daemon checks it has one at start-up; with
    no KINK peer nothing ever uses it."""
    import krb5

    ctx = krb5.init_context()
    kt = krb5.kt_resolve(ctx, f"FILE:{path}".encode())
    krb5.kt_add_entry(ctx, kt, krb5.parse_name_flags(ctx, principal.encode()), 1, 0,
                      krb5.init_keyblock(ctx, 18, os.urandom(32)))


def _daemon(node: Node, keytab: Path) -> list[str]:
    return _daemon_section(node, port=910, principal=PRINCIPAL, keytab=str(keytab),
                           extra=(f'ike_listen = ["{node.address}:500"]',),
                           limits=("max_peers = 100000",))


def _peer(name: str, address: str, psk: Path) -> list[str]:
    return ["[[peer]]", f'name = "{name}"', 'exchange = "ikev1"', f'address = "{address}"',
            f'psk_file = "{psk}"', f'ike_proposals = ["{IKE}"]', 'dpd = "off"', ""]


def _child(name: str, local: str, remote: str) -> list[str]:
    return ["[[peer.child]]", f'name = "{name}"', f'local_ts = ["{local}"]',
            f'remote_ts = ["{remote}"]', 'mode = "tunnel"', f'esp_proposals = ["{ESP}"]', ""]


def initiator_config(node: Node, responder: str, keytab: Path, psk: Path, mmqm_peers: int,
                     qm_children: int) -> str:
    mine, theirs = NETS
    lines = _daemon(node, keytab)
    for i in range(mmqm_peers):
        lines += _peer(f"m{i}", responder, psk)
        lines += _child("c", f"{mine}[tcp/{MMQM_PORT + i}]", theirs)
    lines += _peer("q", responder, psk)
    lines += _child("c", f"{mine}[tcp/{QM_PORT - 1}]", theirs)
    for j in range(qm_children):
        lines += _child(f"k{j}", f"{mine}[tcp/{QM_PORT + j}]", theirs)
    return "\n".join(lines)


def responder_config(node: Node, initiator: str, keytab: Path, psk: Path) -> str:
    mine, theirs = NETS[1], NETS[0]
    return "\n".join(_daemon(node, keytab) + _peer("host1", initiator, psk)
                     + _child("net", mine, theirs))


@dataclass
class IkeResult:
    """What one measurement gives, for kinkd and charon alike."""

    op: str
    n: int
    ok: int
    seconds: float
    cpu_ini: float
    cpu_res: float
    latency_ms: list[float]

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> int:
        return self.n - self.ok


class IkeBench:
    """The namespaces (with strongSwan's IKEv1 configuration for ``SwanBench``) and the
    kinkd pair that runs in them between the charons' turns."""

    def __init__(self, workdir: Path, mmqm_peers: int, qm_children: int,
                 swan_conns: int | None = None, swan_children: int | None = None):
        self.workdir = Path(workdir)
        self.mmqm_peers, self.qm_children = mmqm_peers, qm_children
        self.swan = SwanBench(self.workdir / "swan", tag="ike1", version=1, ike=IKE, esp=ESP,
                              n_children=qm_children if swan_children is None else swan_children,
                              n_conns=mmqm_peers if swan_conns is None else swan_conns)
        self.ini: Node | None = None
        self.res: Node | None = None
        self.mmqm_used = 0
        self.qm_used = 0

    def __enter__(self) -> IkeBench:
        self.swan.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.kinkd_down()
        self.swan.__exit__(*exc)

    # --- kinkd ---------------------------------------------------------------------------

    def kinkd_up(self) -> None:
        """A fresh kinkd pair (the charons stopped first: both want port 500)."""
        self.swan.stop()
        self.kinkd_down()
        (a, b), (la, lb) = self.swan.ns, (SwanBench.ADDRS[0][0], SwanBench.ADDRS[1][0])
        base = self.workdir / "kinkd"
        if base.exists():
            shutil.rmtree(base)
        base.mkdir(parents=True)
        keytab, psk = base / "bench.keytab", base / "bench.psk"
        write_keytab(keytab)
        psk.write_text(PSK + "\n")
        os.chmod(psk, 0o600)
        self.ini = Node("ini", la, 500, base / "ini", None, wrap=["ip", "netns", "exec", a])
        self.res = Node("res", lb, 500, base / "res", None, wrap=["ip", "netns", "exec", b])
        for n in (self.ini, self.res):
            n.directory.mkdir()
        self.ini.config_path.write_text(initiator_config(self.ini, lb, keytab, psk,
                                                         self.mmqm_peers, self.qm_children))
        self.res.config_path.write_text(responder_config(self.res, la, keytab, psk))
        self.res.start()
        self.ini.start()
        for n in (self.res, self.ini):
            wait_ready(n, timeout=120)
        self.mmqm_used = self.qm_used = 0
        r = self._drive("create", [("q", "c")], 1)  # the ISAKMP SA of the Quick Mode runs
        if r.ok != 1:
            raise RuntimeError(f"kinkd IKEv1: the first Main Mode failed:\n{self.ini.log()[-3000:]}"
                               f"\n{self.res.log()[-3000:]}")

    def kinkd_down(self) -> None:
        for n in (self.ini, self.res):
            if n is not None and n.proc is not None:
                try:
                    n.stop()
                except Exception:  # noqa: BLE001
                    pass
        self.ini = self.res = None

    def _drive(self, op: str, targets: list, concurrency: int) -> Result:
        return drive(self.ini, self.res, op, targets, concurrency=concurrency, timeout=30)

    @staticmethod
    def _result(op: str, r: Result) -> IkeResult:
        return IkeResult(op, r.n, r.ok, r.seconds, r.cpu_ini, r.cpu_res, r.latency_ms)

    def kinkd_mmqm(self, n: int, concurrency: int) -> IkeResult:
        """n Main Mode + Quick Mode setups, each on a peer without an ISAKMP SA."""
        if self.mmqm_used + n > self.mmqm_peers:
            raise RuntimeError(f"only {self.mmqm_peers} Main Mode peers configured")
        targets = [(f"m{i}", "c") for i in range(self.mmqm_used, self.mmqm_used + n)]
        self.mmqm_used += n
        return self._result(f"kinkd IKEv1 Main+Quick c{concurrency}",
                            self._drive("create", targets, concurrency))

    def kinkd_qm(self, n: int, concurrency: int) -> IkeResult:
        """n Quick Modes on peer q's live ISAKMP SA."""
        if self.qm_used + n > self.qm_children:
            raise RuntimeError(f"only {self.qm_children} Quick Mode children configured")
        targets = [("q", f"k{j}") for j in range(self.qm_used, self.qm_used + n)]
        self.qm_used += n
        return self._result(f"kinkd IKEv1 Quick c{concurrency}",
                            self._drive("create", targets, concurrency))

    def kinkd_stats(self) -> dict:
        from kinkd import control

        return {n.name: control.call(n.socket, "stats", timeout=30)["counters"]
                for n in (self.ini, self.res)}

    # --- strongSwan ------------------------------------------------------------------------

    def swan_mmqm(self, n: int, concurrency: int) -> IkeResult:
        """n IKEv1 Main Mode + Quick Mode setups (fresh charons, reuse_ikesa = no)."""
        return self._swan(f"Main+Quick c{concurrency}", lambda: self.swan.ike_child(n, concurrency))

    def swan_qm(self, n: int, concurrency: int) -> IkeResult:
        """n IKEv1 Quick Modes on one ISAKMP SA (fresh charons, reuse_ikesa = yes)."""
        return self._swan(f"Quick c{concurrency}", lambda: self.swan.child_only(n, concurrency))

    def _swan(self, what: str, run) -> IkeResult:
        self.kinkd_down()
        r = run()
        if r.errors:
            raise RuntimeError(f"strongSwan IKEv1 {what.split(' c')[0]}: {r.errors}")
        return IkeResult(f"strongSwan IKEv1 {what}", r.n, r.ok, r.seconds, r.cpu_ini, r.cpu_res,
                         r.latency_ms)
