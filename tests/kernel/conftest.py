"""Fixtures of the real-kernel tests (tests/kernel), which only run inside the QEMU VM.

``make test-kernel`` boots the VM once (tests/kernel/vm.py) and runs this directory's
tests in it, as root, on Debian's stock kernel with ESP. Everywhere else (the normal
``make test``) they are collected and skipped with the reason.

The bed: three namespaces on one bridged LAN 198.18.0.0/24 (and 2001:db8:18::/64):
host1 .1, host2 .2 and the KDC .3; kinkd runs in host1 and host2 with
``backend = "xfrm"``; captures are taken on host1's interface.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kinkd import control
from tests import realm as realmlib
from tests.daemons import Node, write_config
from tests.kernel import packets

HERE = Path(__file__).resolve().parent
IN_VM = os.environ.get("KINKD_KERNEL_VM") == "1"
SKIP_REASON = ("real-kernel ESP test: runs only inside the QEMU VM of `make test-kernel` "
               "(tests/kernel/vm.py); this kernel may lack ESP")

H1, H2 = "host1.kink.test", "host2.kink.test"
A1, A2, AKDC = "198.18.0.1", "198.18.0.2", "198.18.0.3"
A1_6, A2_6 = "2001:db8:18::1", "2001:db8:18::2"
S1, S2 = "198.19.1.1", "198.19.2.1"  # hosts in the subnets behind host1 / host2 (tunnel)
PORT = 910
IFACE = "lan0"


def pytest_collection_modifyitems(config, items):
    if IN_VM:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lan():
    """(bed, ns1, ns2, nskdc): the three namespaces on their LAN."""
    from tests.support.netns import NetnsBed, can_create_netns

    ok, why = can_create_netns()
    if not ok:
        pytest.skip(why)
    with NetnsBed("kern") as bed:
        ns1, ns2, nsk = bed.add_namespace("h1"), bed.add_namespace("h2"), bed.add_namespace("kdc")
        lan = bed.lan([ns1, ns2, nsk], ifname=IFACE, subnet="198.18.0.0/24")
        bed.hub = lan.hub  # captures: host1's bridge port p0 there is the wire
        assert [lan.addrs[n] for n in (ns1, ns2, nsk)] == [A1, A2, AKDC]
        bed.add_address(ns1, IFACE, f"{A1_6}/64")
        bed.add_address(ns2, IFACE, f"{A2_6}/64")
        yield bed, ns1, ns2, nsk


@pytest.fixture(scope="session")
def kdc(lan, tmp_path_factory):
    bed, ns1, ns2, nsk = lan
    d = tmp_path_factory.mktemp("realm")
    r = realmlib.up(d, hosts=(H1, H2), users=("alice",), address=AKDC, netns=nsk)
    try:
        yield r
    finally:
        realmlib.down(r)


class Pair:
    """kinkd on host1 (initiator side of the tests) and host2, both with backend xfrm."""

    def __init__(self, lan, realm, tmp_path: Path):
        self.bed, self.ns1, self.ns2, self.nsk = lan
        self.realm = realm
        self.tmp = tmp_path
        self.n1 = Node(H1, A1, PORT, tmp_path / "h1", realm, wrap=["ip", "netns", "exec", self.ns1])
        self.n2 = Node(H2, A2, PORT, tmp_path / "h2", realm, wrap=["ip", "netns", "exec", self.ns2])
        for n in (self.n1, self.n2):
            n.directory.mkdir(exist_ok=True)
        self.helpers: list[subprocess.Popen] = []
        # the namespaces live for the session: the kernel's error counters are compared
        # with their values at the start of the test
        self.stat_base = {ns: packets.xfrm_stat(ns) for ns in (self.ns1, self.ns2)}

    def kernel_errors(self, ns: str, allow: tuple[str, ...] = ("XfrmOutNoStates",)) -> dict:
        """The /proc/net/xfrm_stat counters of ``ns`` that rose during this test."""
        base = self.stat_base[ns]
        return {k: v - base.get(k, 0) for k, v in packets.xfrm_stat(ns).items()
                if v != base.get(k, 0) and k not in allow}

    def configure(self, child: dict, *, child2: dict | None = None, v6: bool = False,
                  daemon_extra: str = "", timers: str = "") -> None:
        a1, a2 = (A1_6, A2_6) if v6 else (A1, A2)
        self.n1.address, self.n2.address = a1, a2
        extra = 'backend = "xfrm"\n' + daemon_extra
        c2 = dict(child2 if child2 is not None else child)
        c2.pop("start", None)
        write_config(self.n1, [{"name": "host2", "address": _hp(a2), "principal":
                                self.realm.service(H2), "child": [child]}],
                     daemon_extra=extra, timers=timers)
        write_config(self.n2, [{"name": "host1", "address": _hp(a1), "principal":
                                self.realm.service(H1), "child": [c2]}],
                     daemon_extra=extra, timers=timers)

    def start(self) -> None:
        for n in (self.n2, self.n1):
            n.start(wait=False)
        for n in (self.n2, self.n1):
            st = self.wait_ready(n)["daemon"]
            assert st["backend"] == "xfrm" and st["kernel"] is None, st

    @staticmethod
    def wait_ready(n: Node, timeout: float = 60) -> dict:
        """Poll the control socket in-process (a kinkctl start costs seconds under TCG)."""
        deadline = time.monotonic() + timeout
        while True:
            if n.proc.poll() is not None:
                raise RuntimeError(f"kinkd {n.name} exited {n.proc.returncode}:\n{n.log()}")
            if os.path.exists(n.socket):
                try:
                    return ctl(n, "status")
                except control.ControlError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"kinkd {n.name} not ready after {timeout}s:\n{n.log()}")
            time.sleep(0.1)

    def stop(self) -> list[int]:
        return [n.stop() for n in (self.n1, self.n2)]

    @property
    def addrs(self) -> tuple[str, str]:
        return self.n1.address, self.n2.address

    # -- traffic and captures ----------------------------------------------------------------
    def echo_server(self, port: int = 7777) -> None:
        p = self.bed.popen(self.ns2, [sys.executable, str(HERE / "traffic.py"), "echo", "--port",
                                      str(port)], stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"ready"
        self.helpers.append(p)

    def traffic_argv(self, mode: str, *, to: str | None = None, src: str | None = None,
                     count: int = 10, rate: float = 50, port: int = 7777,
                     wait: float = 2.0) -> list[str]:
        return [sys.executable, str(HERE / "traffic.py"), mode, "--to", to or self.addrs[1],
                "--port", str(port), "--count", str(count), "--rate", str(rate), "--wait",
                str(wait)] + (["--src", src] if src else [])

    def traffic(self, mode: str, *, timeout: float = 120, **kw) -> dict:
        """Run traffic.py MODE in host1 to host2 (or ``to``); its JSON figures."""
        import json

        r = self.bed.run(self.ns1, self.traffic_argv(mode, **kw), timeout=timeout)
        return json.loads(r.stdout)

    def subnets(self) -> None:
        """198.19.1.0/24 behind host1, 198.19.2.0/24 behind host2 (for tunnel mode)."""
        for ns, addr in ((self.ns1, S1), (self.ns2, S2)):
            if subprocess.run(["ip", "-n", ns, "link", "show", "sub0"],
                              capture_output=True).returncode != 0:
                self.bed.add_dummy(ns, "sub0", f"{addr}/24")
        for ns, net, via, src in ((self.ns1, "198.19.2.0/24", A2, S1),
                                  (self.ns2, "198.19.1.0/24", A1, S2)):
            subprocess.run(["ip", "-n", ns, "route", "replace", net, "via", via, "src", src],
                           check=True)

    def capture(self, name: str) -> Capturing:
        return Capturing(self, self.tmp / f"{name}.pcap")

    def keep_artefacts(self, name: str) -> None:
        """Copy both daemons' logs and the kernels' SAs/policies to the host's exchange
        directory (make test-kernel: build/test-kernel/NAME-*)."""
        keep = os.environ.get("KINKD_VM_XFER")
        if not (keep and os.path.isdir(keep)):
            return
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        for tag, n, ns in (("h1", self.n1, self.ns1), ("h2", self.n2, self.ns2)):
            (Path(keep) / f"{name}-{tag}.log").write_text(n.log())
            kernel = subprocess.run(["ip", "-n", ns, "-s", "xfrm", "state"], capture_output=True,
                                    text=True).stdout
            kernel += subprocess.run(["ip", "-n", ns, "-s", "xfrm", "policy"],
                                     capture_output=True, text=True).stdout
            (Path(keep) / f"{name}-{tag}-xfrm.txt").write_text(kernel)

    def close(self) -> None:
        for p in self.helpers:
            self.bed.stop(p)
        for n in (self.n1, self.n2):
            try:
                n.stop()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        for ns in (self.ns1, self.ns2):  # the next test starts from an empty kernel
            subprocess.run(["ip", "-n", ns, "xfrm", "state", "flush"], check=False)
            subprocess.run(["ip", "-n", ns, "xfrm", "policy", "flush"], check=False)


def record(test: str, **figures) -> None:
    """Keep a proof's figures: printed, and appended to figures.jsonl for the host."""
    import json

    line = json.dumps({"test": test, **figures}, default=str)
    print(line)
    keep = os.environ.get("KINKD_VM_XFER")
    if keep and os.path.isdir(keep):
        with open(Path(keep) / "figures.jsonl", "a") as f:
            f.write(line + "\n")


def ctl(n: Node, cmd: str, **args) -> dict:
    """A control request without starting kinkctl (the tests run `kinkctl up/down` itself)."""
    return control.call(n.socket, cmd, args, timeout=60)


def _hp(addr: str) -> str:
    return f"[{addr}]:{PORT}" if ":" in addr else f"{addr}:{PORT}"


class Capturing:
    """tcpdump on the wire while the ``with`` block runs: host1's port of the LAN bridge, in
    the hub namespace, where no IPsec happens. (On host1's own interface, tunnel-mode
    packets show up a second time once decrypted: the kernel re-injects them there.)"""

    def __init__(self, pair: Pair, path: Path):
        self.pair, self.path = pair, path
        self.capture: packets.Capture | None = None

    def __enter__(self) -> Capturing:
        err = self.path.with_suffix(".err")
        self.errf = open(err, "wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.pair.bed.hub, "tcpdump", "-n", "-U", "--immediate-mode",
             "-s", "0", "-i", "p0", "-w", str(self.path)], stdout=subprocess.DEVNULL, stderr=self.errf,
            start_new_session=True)
        deadline = time.monotonic() + 20
        while b"listening on" not in err.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tcpdump did not start: {err.read_text()}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(20)
        self.errf.close()
        a, b = self.pair.addrs
        self.capture = packets.Capture(packets.read_pcap(self.path), a, b, PORT)
        keep = os.environ.get("KINKD_VM_XFER")
        if keep and os.path.isdir(keep):  # the host keeps the pcaps (make test-kernel)
            import shutil

            shutil.copy(self.path, Path(keep) / self.path.name)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call":
        item.kernel_failed = rep.failed
    return rep


@pytest.fixture
def pair(lan, kdc, tmp_path, request):
    p = Pair(lan, kdc, tmp_path)
    try:
        yield p
    finally:
        if getattr(request.node, "kernel_failed", True):
            p.keep_artefacts(request.node.name)  # logs and kernel state, for the host
        p.close()
