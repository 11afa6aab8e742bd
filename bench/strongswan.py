"""strongSwan baseline: two charon instances in two network namespaces, IKEv2 PSK, ESP
aes128gcm16, driven over vici (:mod:`bench.vici`).

The approach of ``tests/support/strongswan.py`` is reused (its :class:`Charon`: private
``/run`` through ``unshare -m`` + bind mount because charon's pid file is fixed at
/var/run/charon.pid, ``STRONGSWAN_CONF``/``SWANCTL_DIR`` per instance, vici socket in the
instance directory), with a strongswan.conf tuned for load:

* ``kernel-libipsec`` (the kernel has no ESP; it forces UDP encapsulation and refuses traffic
  selectors equal to the IKE addresses, so the protected subnets 198.19.1.0/24 and
  198.19.2.0/24 live on ``lo`` of each namespace);
* ``threads = 32``, ``dos_protection = no`` and high cookie/block/half-open thresholds, so
  8 concurrent blocking initiates are not throttled;
* ``reuse_ikesa = no`` for the IKE_SA+CHILD_SA measurement (every initiate makes a new
  IKE_SA), ``yes`` for CHILD_SA-only creation (one IKE_SA, many children that differ by
  a port in the initiator's selector: one CHILD_SA per identical selector per IKE_SA).

Both charons are restarted for every repetition, so every repetition starts empty.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.vici import Session, ViciError
from tests.support.netns import NetnsBed, can_create_netns
from tests.support.strongswan import CHARON, LIBIPSEC_PLUGIN, Charon

PSK = "kinkd-bench-psk-0123456789"
IKE_PROPOSAL = "aes128gcm16-prfsha256-x25519"
ESP_PROPOSAL = "aes128gcm16"
PLUGINS = ("random nonce openssl pem pkcs1 pubkey x509 hmac kdf gcm aes sha2 curve25519 "
           "kernel-libipsec kernel-netlink socket-default vici")
APT = ["strongswan-charon", "strongswan-swanctl", "libcharon-extra-plugins"]


def ensure_installed() -> tuple[bool, str]:
    """Install strongSwan with apt when it is missing; (ok, reason to skip)."""
    def missing() -> bool:
        return not (CHARON.exists() and shutil.which("swanctl") and LIBIPSEC_PLUGIN.exists())

    if missing() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False,
                       capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT],
                       env=env, check=False, capture_output=True, timeout=900)
    if missing():
        return False, ("strongSwan not installed and could not be installed "
                       f"(apt-get install {' '.join(APT)})")
    if not os.path.exists("/dev/net/tun"):
        return False, "/dev/net/tun missing (kernel-libipsec needs TUN)"
    return can_create_netns()


def strongswan_conf(inst: Charon, reuse_ikesa: bool) -> str:
    return f"""\
charon {{
    load_modular = no
    load = {PLUGINS}
    threads = 32
    dos_protection = no
    cookie_threshold = 1000000
    block_threshold = 1000000
    init_limit_half_open = 1000000
    init_limit_job_load = 0
    reuse_ikesa = {"yes" if reuse_ikesa else "no"}
    install_virtual_ip = no
    retransmit_timeout = 2.0
    retransmit_tries = 3
    ikesa_table_size = 4096
    ikesa_table_segments = 16
    plugins {{
        vici {{
            socket = unix://{inst.vici}
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
    filelog {{
        log {{
            path = {inst.directory / "charon.log"}
            default = 0
            time_format = %H:%M:%S
        }}
    }}
}}
"""


def swanctl_conf(me: str, peer: str, my_net: str, peer_net: str, n_children: int,
                 initiator: bool) -> str:
    children = [f"""\
            c {{
                local_ts = {my_net}
                remote_ts = {peer_net}
                esp_proposals = {ESP_PROPOSAL}
                start_action = none
                dpd_action = none
            }}"""]
    if initiator:
        for i in range(n_children):
            children.append(f"""\
            k{i} {{
                local_ts = {my_net}[tcp/{10000 + i}]
                remote_ts = {peer_net}
                esp_proposals = {ESP_PROPOSAL}
                start_action = none
            }}""")
    body = "\n".join(children)
    return f"""\
connections {{
    bench {{
        version = 2
        local_addrs = {me}
        remote_addrs = {peer}
        proposals = {IKE_PROPOSAL}
        dpd_delay = 0
        unique = no
        mobike = no
        local {{
            auth = psk
            id = {me}
        }}
        remote {{
            auth = psk
            id = {peer}
        }}
        children {{
{body}
        }}
    }}
}}
secrets {{
    ike-bench {{
        id-a = {me}
        id-b = {peer}
        secret = "{PSK}"
    }}
}}
"""


def cpu_seconds(pid: int) -> float:
    from bench.kink import cpu_seconds as cs

    return cs(pid)


@dataclass
class SwanResult:
    what: str
    n: int
    ok: int
    seconds: float
    cpu_ini: float
    cpu_res: float
    latency_ms: list[float]
    errors: list[str]

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


class SwanBench:
    """Two namespaces with a veth (198.18.1.1 <-> 198.18.1.2) and a charon in each."""

    def __init__(self, workdir: Path, n_children: int = 4000):
        self.workdir = Path(workdir)
        self.n_children = n_children
        self.bed: NetnsBed | None = None
        self.ini: Charon | None = None
        self.res: Charon | None = None

    def __enter__(self) -> SwanBench:
        self.bed = NetnsBed("swanbench")
        a, b = self.bed.add_namespace("swb-a"), self.bed.add_namespace("swb-b")
        self.link = self.bed.link(a, b)
        self.bed.add_address(a, "lo", "198.19.1.1/24")
        self.bed.add_address(b, "lo", "198.19.2.1/24")
        self.ns = (a, b)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if self.bed is not None:
            self.bed.close()

    def start(self, reuse_ikesa: bool) -> None:
        self.stop()
        a, b = self.ns
        la, lb = self.link.addr_a, self.link.addr_b
        self.ini = Charon(self.bed, a, self.workdir / "initiator")
        self.res = Charon(self.bed, b, self.workdir / "responder")
        for inst, me, peer, mine, theirs, is_ini in (
                (self.ini, la, lb, "198.19.1.0/24", "198.19.2.0/24", True),
                (self.res, lb, la, "198.19.2.0/24", "198.19.1.0/24", False)):
            if inst.directory.exists():
                shutil.rmtree(inst.directory)
            (inst.directory / "run").mkdir(parents=True)
            (inst.directory / "swanctl").mkdir()
            (inst.directory / "strongswan.conf").write_text(strongswan_conf(inst, reuse_ikesa))
            (inst.directory / "swanctl" / "swanctl.conf").write_text(
                swanctl_conf(me, peer, mine, theirs, self.n_children, is_ini))
        self.res.start(timeout=20)
        self.ini.start(timeout=20)
        self.res.load()
        self.ini.load()

    def stop(self) -> None:
        for inst in (self.ini, self.res):
            if inst is not None:
                inst.stop()
        self.ini = self.res = None

    def _pids(self) -> tuple[int, int]:
        return self.ini.proc.pid, self.res.proc.pid

    def _drive(self, what: str, names: list[str], concurrency: int) -> SwanResult:
        """Initiate every child name in ``names`` with ``concurrency`` blocking vici sessions."""
        lat: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        it = iter(names)

        sessions = [Session(str(self.ini.vici), timeout=120) for _ in range(concurrency)]

        def worker(s: Session) -> None:
            with s:
                while True:
                    with lock:
                        name = next(it, None)
                    if name is None:
                        return
                    t0 = time.perf_counter()
                    try:
                        s.initiate(name, "bench")
                    except (ViciError, OSError) as e:
                        with lock:
                            errors.append(str(e))
                        continue
                    dt = (time.perf_counter() - t0) * 1e3
                    with lock:
                        lat.append(dt)

        pi, pr = self._pids()
        ci, cr = cpu_seconds(pi), cpu_seconds(pr)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(s,)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        return SwanResult(what, len(names), len(lat), seconds, cpu_seconds(pi) - ci,
                          cpu_seconds(pr) - cr, lat, errors[:5])

    def ike_child(self, n: int, concurrency: int) -> SwanResult:
        """n full IKE_SA + CHILD_SA setups (fresh charons, reuse_ikesa = no)."""
        self.start(reuse_ikesa=False)
        with Session(str(self.ini.vici)) as s:  # warm-up: one setup (plugins, first packets)
            s.initiate("c", "bench")
        return self._drive(f"ike_child.c{concurrency}", ["c"] * n, concurrency)

    def child_only(self, n: int, concurrency: int) -> SwanResult:
        """n CHILD_SAs in one existing IKE_SA (fresh charons, reuse_ikesa = yes)."""
        if n > self.n_children:
            raise ValueError(f"only {self.n_children} children configured")
        self.start(reuse_ikesa=True)
        with Session(str(self.ini.vici)) as s:
            s.initiate("c", "bench")  # the IKE_SA (and one CHILD_SA)
        return self._drive(f"child_only.c{concurrency}", [f"k{i}" for i in range(n)],
                           concurrency)

    def version(self) -> str:
        try:
            with Session(str(self.ini.vici)) as s:
                v = s.request("version")
            return f"{v.get('daemon', 'charon')} {v.get('version', '?')}"
        except (ViciError, OSError, AttributeError):
            return "?"
