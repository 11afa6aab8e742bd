"""strongSwan baseline: two charon instances in two network namespaces, IKEv2 PSK, ESP
aes128gcm16, driven over vici (:mod:`bench.vici`).

Each charon gets a private ``/run`` through ``unshare -m`` + bind mount (its pid file is
fixed at /var/run/charon.pid), ``STRONGSWAN_CONF``/``SWANCTL_DIR`` per instance and its vici
socket in the instance directory (as ``tests/support/strongswan.py`` does; the benchmark
imports nothing from the test suite), with a strongswan.conf tuned for load:

* ``kernel-libipsec`` (the kernel has no ESP; it forces UDP encapsulation and refuses traffic
  selectors equal to the IKE addresses, so the protected subnets 198.19.1.0/24 and
  198.19.2.0/24 live on ``lo`` of each namespace);
* ``threads = 32``, ``dos_protection = no`` and high cookie/block/half-open thresholds, so
  8 concurrent blocking initiates are not throttled;
* ``reuse_ikesa = no`` for the IKE_SA+CHILD_SA measurement (every initiate makes a new
  IKE_SA), ``yes`` for CHILD_SA-only creation (one IKE_SA, many children that differ by
  a port in the initiator's selector: one CHILD_SA per identical selector per IKE_SA).

Both charons are restarted for every measurement, so every measurement starts empty. A
measurement ends when the initiator has installed one CHILD_SA per initiate (counted from
vici ``child-updown`` events): charon answers a blocking ``initiate`` as soon as *any*
CHILD_SA of the IKE_SA it used is installed, so with several initiates in flight on one
IKE_SA (CHILD_SA-only creation) the answers alone overstate the rate.

``SwanBench(version=1, ...)`` configures IKEv1 instead (Main Mode PSK + Quick Mode, used by
``bench/ikev1.py``): ``unique = never`` on both sides (no INITIAL_CONTACT), and, since
charon always reuses an IKEv1 SA whose peer config is equal to the one initiated (whatever
``reuse_ikesa`` says), ``n_conns`` connections that differ only by their IKE ``rekey_time``
give one fresh Main Mode per setup.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.vici import Session, ViciError

PSK = "kinkd-bench-psk-0123456789"
IKE_PROPOSAL = "aes128gcm16-prfsha256-x25519"
ESP_PROPOSAL = "aes128gcm16"
PLUGINS = ("random nonce openssl pem pkcs1 pubkey x509 hmac kdf gcm aes sha2 curve25519 "
           "kernel-libipsec kernel-netlink socket-default vici")
APT = ["strongswan-charon", "strongswan-swanctl", "libcharon-extra-plugins"]
CHARON = Path("/usr/lib/ipsec/charon")
LIBIPSEC_PLUGIN = Path("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def can_create_netns() -> tuple[bool, str]:
    """(True, "") when this process can create network namespaces and veth pairs."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if shutil.which("ip") is None:
        return False, "iproute2 'ip' command not found"
    probe = f"kb-{os.getpid()}-probe"
    try:
        r = _ip("netns", "add", probe, check=False)
        if r.returncode != 0:
            return False, f"ip netns add failed: {r.stderr.strip()}"
        r = _ip("-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False)
        if r.returncode != 0:
            return False, f"cannot create veth pairs: {r.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return True, ""


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
                 initiator: bool, *, version: int = 2, ike: str = IKE_PROPOSAL,
                 esp: str = ESP_PROPOSAL, n_conns: int = 0) -> str:
    """``version`` 1: IKEv1 Main Mode (PSK) + Quick Mode, ``unique = never`` (no
    INITIAL_CONTACT, so IKE_SAs set up side by side do not replace one another).

    ``n_conns`` (initiator, IKEv1): connections ``b0`` .. with one child ``c`` each. charon
    reuses an IKEv1 SA of an equal peer config whatever ``reuse_ikesa`` says, so each of
    these differs (by its IKE ``rekey_time``, one second apart) and initiating its child
    always runs a new Main Mode."""
    children = [f"""\
            c {{
                local_ts = {my_net}
                remote_ts = {peer_net}
                esp_proposals = {esp}
                start_action = none
                dpd_action = none
            }}"""]
    if initiator:
        for i in range(n_children):
            children.append(f"""\
            k{i} {{
                local_ts = {my_net}[tcp/{10000 + i}]
                remote_ts = {peer_net}
                esp_proposals = {esp}
                start_action = none
            }}""")
    body = "\n".join(children)
    extra = "".join(f"""\
    b{i} {{
        version = {version}
        local_addrs = {me}
        remote_addrs = {peer}
        proposals = {ike}
        dpd_delay = 0
        unique = never
        rekey_time = {14400 + i}s
        local {{
            auth = psk
            id = {me}
        }}
        remote {{
            auth = psk
            id = {peer}
        }}
        children {{
            c {{
                local_ts = {my_net}[tcp/{20000 + i}]
                remote_ts = {peer_net}
                esp_proposals = {esp}
                start_action = none
            }}
        }}
    }}
""" for i in range(n_conns if initiator else 0))
    return f"""\
connections {{
{extra}    bench {{
        version = {version}
        local_addrs = {me}
        remote_addrs = {peer}
        proposals = {ike}
        dpd_delay = 0
        unique = {"never" if version == 1 else "no"}
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
class Charon:
    """One charon in namespace ``ns``, configured from ``directory`` (private /run)."""

    ns: str
    directory: Path
    proc: subprocess.Popen | None = None

    @property
    def vici(self) -> Path:
        return self.directory / "charon.vici"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "STRONGSWAN_CONF": str(self.directory / "strongswan.conf"),
                "SWANCTL_DIR": str(self.directory / "swanctl")}

    def start(self, timeout: float) -> None:
        script = f'mount --bind "{self.directory / "run"}" /run && exec "{CHARON}"'
        with open(self.directory / "charon.out", "wb") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "unshare", "-m", "--propagation", "private",
                 "sh", "-c", script], env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.vici.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"charon in {self.ns} did not start:\n{self.log()}")
            time.sleep(0.05)

    def load(self) -> None:
        r = subprocess.run(["swanctl", "--load-all", "--noprompt", "--uri", f"unix://{self.vici}"],
                           env=self.env, capture_output=True, text=True, timeout=60, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"swanctl --load-all ({self.ns}) failed:\n{r.stdout}{r.stderr}\n"
                               f"{self.log()}")

    def stop(self) -> None:
        """SIGTERM to the process group (its pgid is its pid), SIGKILL after 5 s."""
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(5)
                return
            except subprocess.TimeoutExpired:
                continue

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-6000:]
                         for p in (self.directory / "charon.out", self.directory / "charon.log")
                         if p.exists())


@dataclass
class SwanResult:
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

    ADDRS = (("198.18.1.1", "198.19.1.1/24"), ("198.18.1.2", "198.19.2.1/24"))

    def __init__(self, workdir: Path, n_children: int = 4000, *, tag: str = "swb",
                 version: int = 2, ike: str = IKE_PROPOSAL, esp: str = ESP_PROPOSAL,
                 n_conns: int = 0):
        self.workdir = Path(workdir)
        self.n_children = n_children
        self.n_conns = n_conns  # IKEv1: connections b0 .. for fresh IKE_SAs (swanctl_conf)
        self.ike_version, self.ike, self.esp = version, ike, esp
        self.ns = (f"kb-{os.getpid()}-{tag}-a", f"kb-{os.getpid()}-{tag}-b")
        self.created: list[str] = []
        self.ini: Charon | None = None
        self.res: Charon | None = None

    def __enter__(self) -> SwanBench:
        try:
            for ns in self.ns:
                _ip("netns", "add", ns)
                self.created.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            a, b = self.ns
            _ip("link", "add", "veth0", "netns", a, "type", "veth", "peer", "name", "veth0",
                "netns", b)
            for ns, (addr, lo_net) in zip(self.ns, self.ADDRS, strict=True):
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "veth0", "nodad")
                _ip("-n", ns, "link", "set", "veth0", "up")
                _ip("-n", ns, "addr", "add", lo_net, "dev", "lo", "nodad")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        for ns in reversed(self.created):
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)
        self.created = []

    def start(self, reuse_ikesa: bool) -> None:
        self.stop()
        a, b = self.ns
        la, lb = self.ADDRS[0][0], self.ADDRS[1][0]
        self.ini = Charon(a, self.workdir / "initiator")
        self.res = Charon(b, self.workdir / "responder")
        for inst, me, peer, mine, theirs, is_ini in (
                (self.ini, la, lb, "198.19.1.0/24", "198.19.2.0/24", True),
                (self.res, lb, la, "198.19.2.0/24", "198.19.1.0/24", False)):
            if inst.directory.exists():
                shutil.rmtree(inst.directory)
            (inst.directory / "run").mkdir(parents=True)
            (inst.directory / "swanctl").mkdir()
            (inst.directory / "strongswan.conf").write_text(strongswan_conf(inst, reuse_ikesa))
            (inst.directory / "swanctl" / "swanctl.conf").write_text(
                swanctl_conf(me, peer, mine, theirs, self.n_children, is_ini,
                             version=self.ike_version, ike=self.ike, esp=self.esp,
                             n_conns=self.n_conns))
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

    def _drive(self, names: list[str] | list[tuple[str, str]], concurrency: int) -> SwanResult:
        """Initiate every child in ``names`` (a child of connection ``bench``, or a pair
        (child, connection)) with ``concurrency`` blocking vici sessions."""
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
                    child, ike = (name, "bench") if isinstance(name, str) else name
                    t0 = time.perf_counter()
                    try:
                        s.initiate(child, ike)
                    except (ViciError, OSError) as e:
                        with lock:
                            errors.append(str(e))
                        continue
                    dt = (time.perf_counter() - t0) * 1e3
                    with lock:
                        lat.append(dt)

        # charon answers a blocking initiate when any CHILD_SA of its IKE_SA is installed:
        # with several initiates in flight on one IKE_SA some return before their own
        # CHILD_SA is up. The run ends when the initiator has installed one per name.
        ups: list[float] = []
        watch = Session(str(self.ini.vici), timeout=120)
        watch.register("child-updown")

        def watcher() -> None:
            try:
                while len(ups) < len(names):
                    _name, msg = watch.event()
                    if msg.get("up") == "yes":
                        ups.append(time.perf_counter())
            except (ViciError, OSError):
                pass

        pi, pr = self._pids()
        ci, cr = cpu_seconds(pi), cpu_seconds(pr)
        t0 = time.perf_counter()
        w = threading.Thread(target=watcher, daemon=True)
        w.start()
        threads = [threading.Thread(target=worker, args=(s,)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answered = time.perf_counter()
        w.join(timeout=30 if not errors else 1)
        end = time.perf_counter() if w.is_alive() else max(answered, ups[-1] if ups else 0)
        watch.close()
        seconds = end - t0
        ok = min(len(lat), len(ups))
        if len(ups) < len(lat):
            errors.append(f"{len(lat)} initiates answered, {len(ups)} CHILD_SAs installed")
        return SwanResult(len(names), ok, seconds, cpu_seconds(pi) - ci,
                          cpu_seconds(pr) - cr, lat, errors[:5])

    def ike_child(self, n: int, concurrency: int) -> SwanResult:
        """n full IKE_SA + CHILD_SA setups (fresh charons, reuse_ikesa = no; IKEv1: one
        connection ``b<i>`` per setup, see :func:`swanctl_conf`)."""
        self.start(reuse_ikesa=False)
        with Session(str(self.ini.vici)) as s:  # warm-up: one setup (plugins, first packets)
            s.initiate("c", "bench")
        if self.ike_version == 1:
            if n > self.n_conns:
                raise ValueError(f"only {self.n_conns} IKEv1 connections configured")
            return self._drive([("c", f"b{i}") for i in range(n)], concurrency)
        return self._drive(["c"] * n, concurrency)

    def child_only(self, n: int, concurrency: int) -> SwanResult:
        """n CHILD_SAs in one existing IKE_SA (fresh charons, reuse_ikesa = yes)."""
        if n > self.n_children:
            raise ValueError(f"only {self.n_children} children configured")
        self.start(reuse_ikesa=True)
        with Session(str(self.ini.vici)) as s:
            s.initiate("c", "bench")  # the IKE_SA (and one CHILD_SA)
        return self._drive([f"k{i}" for i in range(n)], concurrency)

    def version(self) -> str:
        try:
            with Session(str(self.ini.vici)) as s:
                v = s.request("version")
            return f"{v.get('daemon', 'charon')} {v.get('version', '?')}"
        except (ViciError, OSError, AttributeError):
            return "?"
