"""Two strongSwan (charon) peers in two network namespaces, for real IKEv1 traffic.

:func:`run_ikev1_exchanges` builds a test bed (see :mod:`tests.support.netns`)::

    ns "a" (initiator)                               ns "b" (responder)
    veth0 198.18.1.1 / 198.18.1.3  <--- veth --->    veth0 198.18.1.2 / 198.18.1.4

starts one charon per namespace (private ``/run`` via ``unshare -m`` + bind mount, because
charon's pid file is fixed at /var/run/charon.pid; ``STRONGSWAN_CONF`` and
``SWANCTL_DIR`` point at per-instance files; vici socket in the instance directory;
``kernel-libipsec`` because the kernel has no ESP), and negotiates over IKEv1 with a
pre-shared key:

* ``mm``: Main Mode 198.18.1.1 -> 198.18.1.2, then Quick Mode for
  198.19.1.0/24 <-> 198.19.2.0/24 (PFS modp2048);
* ``am``: Aggressive Mode 198.18.1.3 -> 198.18.1.4 (FQDN identities), then Quick Mode for
  198.19.3.0/24 <-> 198.19.4.0/24;

then deletes both IKE SAs (Informational exchanges).  kernel-libipsec forces UDP
encapsulation, so NAT-D payloads appear and the exchanges float to port 4500 (non-ESP
marker).  A raw ``AF_PACKET`` socket in namespace "a" (a Python child process) records
every frame on the veth into an Ethernet pcap, which is decoded with :mod:`kinkd.pcap`.

Run ``python -m tests.support.strongswan fixture tests/data/strongswan-ikev1.pcap`` to
regenerate the committed fixture (raw-IP pcap of the ISAKMP datagrams only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kinkd.pcap import LINKTYPE_ETHERNET, UdpDatagram, read_udp
from tests.support.netns import NetnsBed, can_create_netns, wait_for
from tests.support.pcapwrite import write_pcap, write_pcap_frames

CHARON = Path("/usr/lib/ipsec/charon")
LIBIPSEC_PLUGIN = Path("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so")
REPO_ROOT = Path(__file__).resolve().parents[2]
IKE_PORTS = frozenset({500, 4500})
PSK_MM = "kinkd-test-main-mode-psk"
PSK_AM = "kinkd-test-aggressive-mode-psk"

_PLUGINS = (
    "random nonce openssl pem pkcs1 pubkey x509 hmac kdf "
    "kernel-libipsec kernel-netlink socket-default vici"
)
#: the kernel's own ESP (kernel-netlink only): for a kernel with ESP (the VM of tests/kernel)
KERNEL_PLUGINS = _PLUGINS.replace("kernel-libipsec ", "")


def strongswan_available() -> tuple[bool, str]:
    """(True, "") when charon, swanctl, kernel-libipsec and /dev/net/tun are present."""
    if not CHARON.exists():
        return (
            False,
            f"strongSwan charon not installed ({CHARON}; apt-get install strongswan-charon)",
        )
    if shutil.which("swanctl") is None:
        return False, "swanctl not installed (apt-get install strongswan-swanctl)"
    if not LIBIPSEC_PLUGIN.exists():
        return False, "kernel-libipsec plugin missing (apt-get install libcharon-extra-plugins)"
    if not os.path.exists("/dev/net/tun"):
        return False, "/dev/net/tun missing (kernel-libipsec needs TUN)"
    return True, ""


def can_run() -> tuple[bool, str]:
    ok, reason = strongswan_available()
    if not ok:
        return ok, reason
    return can_create_netns()


def isakmp_payloads(datagrams: list[UdpDatagram]) -> list[bytes]:
    """ISAKMP messages carried by ``datagrams`` (port 500 as is; port 4500 without the
    4-octet non-ESP marker; NAT-keepalives and ESP-in-UDP dropped)."""
    out = []
    for d in datagrams:
        if 4500 in (d.sport, d.dport):
            if len(d.payload) >= 4 and d.payload[:4] == b"\0\0\0\0":
                out.append(d.payload[4:])
            # else: 0xff NAT-keepalive or ESP (non-zero SPI)
        elif 500 in (d.sport, d.dport):
            out.append(d.payload)
    return out


@dataclass
class Charon:
    """One charon instance in a namespace, configured from ``directory``."""

    bed: NetnsBed
    ns: str
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def vici(self) -> Path:
        return self.directory / "charon.vici"

    @property
    def env(self) -> dict[str, str]:
        return {
            "STRONGSWAN_CONF": str(self.directory / "strongswan.conf"),
            "SWANCTL_DIR": str(self.directory / "swanctl"),
        }

    def write_config(self, swanctl_conf: str, plugins: str = _PLUGINS) -> None:
        (self.directory / "run").mkdir(parents=True, exist_ok=True)
        (self.directory / "swanctl").mkdir(exist_ok=True)
        (self.directory / "strongswan.conf").write_text(
            f"""\
charon {{
    load_modular = no
    load = {plugins}
    i_dont_care_about_security_and_use_aggressive_mode_psk = yes
    install_virtual_ip = no
    retransmit_timeout = 1.0
    retransmit_tries = 3
    plugins {{
        vici {{
            socket = unix://{self.vici}
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
    filelog {{
        log {{
            path = {self.directory / "charon.log"}
            default = 1
            ike = 2
            cfg = 2
            net = 2
            time_format = %H:%M:%S
        }}
    }}
}}
"""
        )
        (self.directory / "swanctl" / "swanctl.conf").write_text(swanctl_conf)

    def start(self, timeout: float = 10.0) -> None:
        script = f'mount --bind "{self.directory / "run"}" /run && exec "{CHARON}"'
        with open(self.directory / "charon.out", "wb") as out:
            self.proc = self.bed.popen(
                self.ns,
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"charon in {self.ns} exited early:\n{self.log()}")
            return self.vici.exists()

        wait_for(up, timeout, what=f"charon vici socket in {self.ns}")

    def swanctl(self, *args: str, timeout: float = 20.0) -> str:
        cmd = ["swanctl", *args, "--uri", f"unix://{self.vici}"]
        res = subprocess.run(
            cmd,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}\n"
                f"--- charon log ({self.ns}) ---\n{self.log()}"
            )
        return res.stdout

    def load(self) -> None:
        self.swanctl("--load-all", "--noprompt")

    def stop(self) -> None:
        if self.proc is not None:
            self.bed.stop(self.proc, timeout=5)

    def log(self) -> str:
        parts = []
        for name in ("charon.out", "charon.log"):
            p = self.directory / name
            if p.exists():
                parts.append(p.read_text(errors="replace")[-6000:])
        return "\n".join(parts)


def _initiator_conf() -> str:
    return f"""\
connections {{
    mm {{
        version = 1
        aggressive = no
        local_addrs = 198.18.1.1
        remote_addrs = 198.18.1.2
        proposals = aes128-sha256-modp2048
        dpd_delay = 0
        local {{
            auth = psk
            id = 198.18.1.1
        }}
        remote {{
            auth = psk
            id = 198.18.1.2
        }}
        children {{
            mm-child {{
                local_ts = 198.19.1.0/24
                remote_ts = 198.19.2.0/24
                esp_proposals = aes128-sha256-modp2048
                start_action = none
            }}
        }}
    }}
    am {{
        version = 1
        aggressive = yes
        local_addrs = 198.18.1.3
        remote_addrs = 198.18.1.4
        proposals = aes256-sha1-modp2048
        dpd_delay = 0
        local {{
            auth = psk
            id = initiator.am.example
        }}
        remote {{
            auth = psk
            id = responder.am.example
        }}
        children {{
            am-child {{
                local_ts = 198.19.3.0/24
                remote_ts = 198.19.4.0/24
                esp_proposals = aes256-sha1
                start_action = none
            }}
        }}
    }}
}}
secrets {{
    ike-mm {{
        id-a = 198.18.1.1
        id-b = 198.18.1.2
        secret = "{PSK_MM}"
    }}
    ike-am {{
        id-a = initiator.am.example
        id-b = responder.am.example
        secret = "{PSK_AM}"
    }}
}}
"""


def _responder_conf() -> str:
    conf = _initiator_conf()
    swaps = [
        ("198.18.1.1", "@@A1"),
        ("198.18.1.2", "198.18.1.1"),
        ("@@A1", "198.18.1.2"),
        ("198.18.1.3", "@@A3"),
        ("198.18.1.4", "198.18.1.3"),
        ("@@A3", "198.18.1.4"),
        ("198.19.1.0", "@@S1"),
        ("198.19.2.0", "198.19.1.0"),
        ("@@S1", "198.19.2.0"),
        ("198.19.3.0", "@@S3"),
        ("198.19.4.0", "198.19.3.0"),
        ("@@S3", "198.19.4.0"),
        ("id = initiator.am.example", "id = @@I"),
        ("id = responder.am.example", "id = initiator.am.example"),
        ("id = @@I", "id = responder.am.example"),
    ]
    for old, new in swaps:
        conf = conf.replace(old, new)
    return conf


@dataclass
class IkeCapture:
    """What one run produced."""

    datagrams: list[UdpDatagram]  # UDP 500/4500 datagrams in capture order
    messages: list[bytes]  # ISAKMP messages (non-ESP marker stripped)
    pcap_path: Path  # the raw Ethernet capture
    logs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _capture_command(ifname: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "tests.support.strongswan", "capture", ifname, str(out)]


def capture_main(ifname: str, out: str) -> None:
    """Record every frame on ``ifname`` (AF_PACKET) until SIGTERM; write an Ethernet pcap."""
    import socket

    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((ifname, 0))
    s.settimeout(0.05)
    frames: list[tuple[float, bytes]] = []
    print("ready", flush=True)
    while not stop:
        try:
            data = s.recv(262144)
        except TimeoutError:
            continue
        frames.append((time.time(), data))
    s.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            frames.append((time.time(), s.recv(262144)))
    write_pcap_frames(out, frames, linktype=LINKTYPE_ETHERNET)
    print(f"captured {len(frames)}", flush=True)


def run_ikev1_exchanges(workdir: Path | None = None, *, timeout: float = 15.0) -> IkeCapture:
    """Run both IKEv1 exchanges between two charons; return the captured ISAKMP traffic.

    Everything (charons, capture process, namespaces) is torn down before returning or
    raising.  ``workdir`` keeps configs, logs and the capture (a temporary directory
    that is removed afterwards when ``None``).
    """
    ok, reason = can_run()
    if not ok:
        raise RuntimeError(reason)
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kt-swan-")))
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        bed = stack.enter_context(NetnsBed("swan"))
        a, b = bed.add_namespace("swan-a"), bed.add_namespace("swan-b")
        link = bed.link(a, b)  # 198.18.1.1 <-> 198.18.1.2
        bed.add_address(a, link.if_a, "198.18.1.3/24")
        bed.add_address(b, link.if_b, "198.18.1.4/24")
        # Protected subnets live on dummy interfaces: kernel-libipsec routes the
        # CHILD_SA's traffic selectors through its TUN device and needs a source address.
        bed.add_dummy(a, "prot0", "198.19.1.1/24", "198.19.3.1/24")
        bed.add_dummy(b, "prot0", "198.19.2.1/24", "198.19.4.1/24")

        pcap_path = workdir / "capture.pcap"
        cap_out = open(workdir / "capture.out", "w+b")  # noqa: SIM115 - closed by ExitStack
        stack.callback(cap_out.close)
        capture = bed.popen(
            a, _capture_command(link.if_a, pcap_path), cwd=REPO_ROOT, stdout=cap_out, stderr=cap_out
        )

        def capture_ready() -> bool:
            if capture.poll() is not None:
                raise RuntimeError(f"capture process died: {(workdir / 'capture.out').read_text()}")
            return b"ready" in (workdir / "capture.out").read_bytes()

        wait_for(capture_ready, 10, what="packet capture")

        ini = Charon(bed, a, workdir / "initiator")
        res = Charon(bed, b, workdir / "responder")
        ini.write_config(_initiator_conf())
        res.write_config(_responder_conf())
        logs: dict[str, str] = {}
        try:
            res.start()
            ini.start()
            res.load()
            ini.load()
            t_init = str(int(timeout))
            ini.swanctl("--initiate", "--child", "mm-child", "--timeout", t_init)
            ini.swanctl("--initiate", "--child", "am-child", "--timeout", t_init)
            logs["sas"] = ini.swanctl("--list-sas")
            ini.swanctl("--terminate", "--ike", "mm", "--timeout", t_init)
            ini.swanctl("--terminate", "--ike", "am", "--timeout", t_init)
            time.sleep(0.2)  # let the last datagrams reach the capture socket
        finally:
            logs["initiator"] = ini.log()
            logs["responder"] = res.log()
            ini.stop()
            res.stop()
            bed.stop(capture, timeout=10)
        if capture.returncode != 0 or not pcap_path.exists():
            raise RuntimeError(f"capture failed: {(workdir / 'capture.out').read_text()}")
        datagrams = list(read_udp(pcap_path, set(IKE_PORTS)))
        return IkeCapture(
            datagrams=datagrams,
            messages=isakmp_payloads(datagrams),
            pcap_path=pcap_path,
            logs=logs,
            seconds=time.monotonic() - t0,
        )


def _main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "capture":
        capture_main(argv[1], argv[2])
        return 0
    if len(argv) == 2 and argv[0] == "fixture":
        result = run_ikev1_exchanges()
        Path(argv[1]).parent.mkdir(parents=True, exist_ok=True)
        n = write_pcap(argv[1], result.datagrams)
        print(f"wrote {n} datagrams ({len(result.messages)} ISAKMP) in {result.seconds:.1f}s")
        return 0
    print("usage: python -m tests.support.strongswan capture IFNAME OUT | fixture OUT.pcap")
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
