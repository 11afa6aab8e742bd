"""Network-namespace test beds: namespaces, veth links, LANs, processes, packet loss.

Typical use::

    ok, reason = can_create_netns()
    if not ok:
        pytest.skip(reason)
    with NetnsBed() as bed:
        a, b = bed.add_namespaces(2)
        link = bed.link(a, b)                     # 198.18.1.1/24 <-> 198.18.1.2/24
        server = bed.popen(b, ["python3", "-m", "http.server", "-b", link.addr_b])
        bed.run(a, ["ping", "-c1", link.addr_b])
        bed.drop_udp(a, link.if_a, 30)            # drop 30 % of UDP on a's veth
    # everything (processes, namespaces, veths, nft tables) is gone here

Names embed the pid (``kt-<pid>-<n>-<label>``) so concurrent test runs coexist, and
namespaces left behind by a killed run (its pid no longer alive) are removed the next
time a bed is created.  Addresses: links and LANs get consecutive /24s from
198.18.1.0/24 .. 198.18.255.0/24; 198.19.0.0/16 is left for callers (e.g. protected
subnets on dummy interfaces, :meth:`NetnsBed.add_dummy`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import ipaddress
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

PREFIX = "kt"
_NAME_RE = re.compile(rf"^{PREFIX}-(\d+)-\d+(?:-[\w.]*)?$")
_seq = itertools.count(1)
_live_beds: weakref.WeakSet[NetnsBed] = weakref.WeakSet()


class NetnsError(RuntimeError):
    """A command run for the test bed failed (message includes its output)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _call(["ip", *args], check=check)


def _call(
    cmd: Sequence[str], *, check: bool = True, input: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(cmd), input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise NetnsError(
            f"{shlex.join(cmd)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


@functools.cache
def can_create_netns() -> tuple[bool, str]:
    """(True, "") when this process can create namespaces, else (False, reason to skip)."""
    if not sys.platform.startswith("linux"):
        return False, "network namespaces need Linux"
    if os.geteuid() != 0:
        return False, "creating network namespaces needs root (CAP_SYS_ADMIN/CAP_NET_ADMIN)"
    if shutil.which("ip") is None:
        return False, "iproute2 'ip' command not found"
    probe = f"{PREFIX}-{os.getpid()}-0-probe"
    try:
        res = _ip("netns", "add", probe, check=False)
        if res.returncode != 0:
            return False, f"ip netns add failed: {res.stderr.strip()}"
        res = _ip(
            "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False
        )
        if res.returncode != 0:
            return False, f"cannot create veth pairs: {res.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"cannot run ip: {exc}"
    finally:
        _ip("netns", "del", probe, check=False)
    return True, ""


@functools.cache
def can_use_nft() -> tuple[bool, str]:
    """(True, "") when ``nft`` exists and works inside a namespace."""
    ok, reason = can_create_netns()
    if not ok:
        return ok, reason
    if shutil.which("nft") is None:
        return False, "nftables 'nft' command not found"
    with NetnsBed() as bed:
        ns = bed.add_namespace("nftprobe")
        res = bed.run(ns, ["nft", "add", "table", "inet", "probe"], check=False)
        if res.returncode != 0:
            return False, f"nft does not work in a namespace: {res.stderr.strip()}"
    return True, ""


def cleanup_stale() -> list[str]:
    """Delete namespaces of this module whose creating process is gone; return their names."""
    res = _ip("netns", "list", check=False)
    removed = []
    for line in res.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME_RE.match(name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        _kill_namespace_pids(name)
        if _ip("netns", "del", name, check=False).returncode == 0:
            removed.append(name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_pids(ns: str) -> None:
    """SIGKILL every process still living in namespace ``ns`` (all were started for it)."""
    res = _ip("netns", "pids", ns, check=False)
    for tok in res.stdout.split():
        if tok.isdigit() and int(tok) != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(tok), signal.SIGKILL)


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> object:
    """Poll ``predicate`` until it returns something truthy; raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass(frozen=True)
class Link:
    """A veth pair between two namespaces."""

    ns_a: str
    if_a: str
    addr_a: str
    ns_b: str
    if_b: str
    addr_b: str
    prefixlen: int = 24


@dataclass(frozen=True)
class Lan:
    """A bridge (in its own hub namespace) with one veth per member namespace."""

    hub: str
    bridge: str
    ifname: str  # interface name inside every member
    addrs: Mapping[str, str]  # member namespace -> address
    prefixlen: int = 24


class NetnsBed:
    """Owns namespaces, links, nft tables and processes; :meth:`close` removes them all."""

    def __init__(self, tag: str = "") -> None:
        self.tag = re.sub(r"[^\w.]", "", tag)[:20]
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self._subnets = itertools.count(1)
        self._links = itertools.count(0)
        self._closed = False
        cleanup_stale()
        _live_beds.add(self)

    # -- context manager --------------------------------------------------------------
    def __enter__(self) -> NetnsBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- namespaces ------------------------------------------------------------------
    def add_namespace(self, label: str = "") -> str:
        """Create a namespace with ``lo`` up; return its name."""
        label = re.sub(r"[^\w.]", "", label or self.tag)[:20]
        name = f"{PREFIX}-{os.getpid()}-{next(_seq)}" + (f"-{label}" if label else "")
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def add_namespaces(self, n: int, label: str = "") -> list[str]:
        return [self.add_namespace(f"{label}{i}" if label else f"n{i}") for i in range(n)]

    def _subnet(self) -> ipaddress.IPv4Network:
        k = next(self._subnets)
        if k > 255:
            raise NetnsError("test bed ran out of 198.18.x.0/24 subnets")
        return ipaddress.IPv4Network(f"198.18.{k}.0/24")

    def link(
        self,
        ns_a: str,
        ns_b: str,
        *,
        if_a: str | None = None,
        if_b: str | None = None,
        subnet: str | None = None,
        mtu: int | None = None,
    ) -> Link:
        """Create a veth pair ``ns_a:if_a <-> ns_b:if_b`` with .1 / .2 of a fresh /24."""
        k = next(self._links)
        if_a = if_a or f"veth{k}"
        if_b = if_b or f"veth{k}"
        net = ipaddress.IPv4Network(subnet) if subnet else self._subnet()
        hosts = net.hosts()
        addr_a, addr_b = str(next(hosts)), str(next(hosts))
        _ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
            self._configure(ns, ifname, f"{addr}/{net.prefixlen}", mtu)
        return Link(ns_a, if_a, addr_a, ns_b, if_b, addr_b, net.prefixlen)

    def lan(
        self,
        members: Sequence[str],
        *,
        ifname: str | None = None,
        subnet: str | None = None,
        mtu: int | None = None,
    ) -> Lan:
        """Connect ``members`` to one bridged segment; member i gets host address i+1."""
        k = next(self._links)
        ifname = ifname or f"lan{k}"
        net = ipaddress.IPv4Network(subnet) if subnet else self._subnet()
        hub = self.add_namespace(f"hub{k}")
        bridge = "br0"
        _ip("-n", hub, "link", "add", bridge, "type", "bridge")
        _ip("-n", hub, "link", "set", bridge, "up")
        hosts = net.hosts()
        addrs: dict[str, str] = {}
        for i, ns in enumerate(members):
            port = f"p{i}"
            _ip(
                "link",
                "add",
                port,
                "netns",
                hub,
                "type",
                "veth",
                "peer",
                "name",
                ifname,
                "netns",
                ns,
            )
            _ip("-n", hub, "link", "set", port, "master", bridge)
            if mtu:
                _ip("-n", hub, "link", "set", port, "mtu", str(mtu))
            _ip("-n", hub, "link", "set", port, "up")
            addr = str(next(hosts))
            self._configure(ns, ifname, f"{addr}/{net.prefixlen}", mtu)
            addrs[ns] = addr
        return Lan(hub, bridge, ifname, addrs, net.prefixlen)

    def _configure(self, ns: str, ifname: str, cidr: str, mtu: int | None) -> None:
        if mtu:
            _ip("-n", ns, "link", "set", ifname, "mtu", str(mtu))
        _ip("-n", ns, "addr", "add", cidr, "dev", ifname, "nodad")
        _ip("-n", ns, "link", "set", ifname, "up")

    def add_address(self, ns: str, ifname: str, cidr: str) -> None:
        """Add another address (``"198.19.1.1/32"``) to an interface."""
        _ip("-n", ns, "addr", "add", cidr, "dev", ifname, "nodad")

    def add_dummy(self, ns: str, ifname: str, *cidrs: str) -> None:
        """Create an up dummy interface carrying ``cidrs`` (e.g. a protected subnet).

        Kernels without the ``dummy`` driver get a veth pair instead (``ifname`` plus an
        unused peer ``ifname`` + ``p``, both in ``ns``).
        """
        res = _ip("-n", ns, "link", "add", ifname, "type", "dummy", check=False)
        if res.returncode != 0:
            peer = (ifname + "p")[:15]
            _ip("-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", peer)
            _ip("-n", ns, "link", "set", peer, "up")
        for cidr in cidrs:
            self.add_address(ns, ifname, cidr)
        _ip("-n", ns, "link", "set", ifname, "up")

    def add_route(self, ns: str, dest: str, via: str) -> None:
        _ip("-n", ns, "route", "add", dest, "via", via)

    # -- commands and processes ----------------------------------------------------------
    @staticmethod
    def exec_prefix(ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def run(
        self,
        ns: str,
        cmd: Sequence[str] | str,
        *,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside ``ns`` to completion (text output captured)."""
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        full = [*self.exec_prefix(ns), *argv]
        proc = subprocess.run(
            full,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
            check=False,
        )
        if check and proc.returncode != 0:
            raise NetnsError(
                f"[{ns}] {shlex.join(argv)} exited {proc.returncode}: "
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def popen(
        self,
        ns: str,
        cmd: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        **kwargs: object,
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` inside ``ns`` in its own session; stopped by :meth:`close`.

        ``kwargs`` go to :class:`subprocess.Popen` (stdout, stderr, cwd, ...); stdin
        defaults to ``/dev/null``.
        """
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(  # noqa: S603 - test helper, argv list
            [*self.exec_prefix(ns), *argv],
            env=None if env is None else {**os.environ, **env},
            start_new_session=True,
            **kwargs,  # type: ignore[arg-type]
        )
        self.processes.append(proc)
        return proc

    def stop(
        self, proc: subprocess.Popen[bytes], timeout: float = 5.0, sig: int = signal.SIGTERM
    ) -> int:
        """Signal ``proc``'s process group (its pgid is its pid), wait, SIGKILL if needed."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        else:  # leader gone; children it left in the group still die with the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode

    # -- packet loss (nftables) -----------------------------------------------------------
    @staticmethod
    def _loss_table(ifname: str) -> str:
        return "ktloss_" + re.sub(r"\W", "_", ifname)

    def drop_udp(
        self,
        ns: str,
        ifname: str,
        percent: int,
        *,
        direction: str = "both",
        ports: Sequence[int] | None = None,
    ) -> None:
        """Drop ``percent`` % of UDP packets entering/leaving ``ifname`` in ``ns``.

        Uses a ``netdev`` table with ``ingress``/``egress`` hooks bound to the device
        (Linux >= 5.16): dropped outgoing datagrams vanish silently on the wire instead of
        failing ``sendto()`` with EPERM as an ``output``-hook drop would.  Works on hub
        bridge ports too.  ``direction``: ``"in"``, ``"out"`` or ``"both"``; ``ports``:
        only datagrams whose source or destination port is listed (each packet draws
        the random number once).  Replaces an earlier rule set on the same interface.
        """
        if not 0 <= percent <= 100:
            raise ValueError("percent must be within 0..100")
        if direction not in ("in", "out", "both"):
            raise ValueError("direction must be 'in', 'out' or 'both'")
        table = self._loss_table(ifname)
        self.clear_udp_drop(ns, ifname)
        if ports:
            portset = "{ " + ", ".join(str(int(p)) for p in ports) + " }"
            matches = [f"udp dport {portset}", f"udp sport {portset}"]
        else:
            matches = ["meta l4proto udp"]
        hooks = []
        if direction in ("in", "both"):
            hooks.append("ingress")
        if direction in ("out", "both"):
            hooks.append("egress")
        if percent >= 100:
            verdict = "counter drop;"
        elif percent > 0:
            verdict = f"numgen random mod 100 < {int(percent)} counter drop;"
        else:
            verdict = ""
        lines = [
            f"table netdev {table} {{",
            f"  chain loss {{ {verdict} accept; }}",
        ]
        for hook in hooks:
            lines.append(
                f'  chain {hook} {{ type filter hook {hook} device "{ifname}" priority -10; '
                "policy accept;"
            )
            lines.extend(f"    {m} jump loss" for m in matches)
            lines.append("  }")
        lines.append("}")
        self.run(ns, ["nft", "-f", "-"], input="\n".join(lines) + "\n")

    def clear_udp_drop(self, ns: str, ifname: str) -> None:
        """Remove the loss rules of ``ifname`` (no error when there are none)."""
        self.run(ns, ["nft", "delete", "table", "netdev", self._loss_table(ifname)], check=False)

    def dropped_udp(self, ns: str, ifname: str) -> int:
        """Number of packets dropped so far by :meth:`drop_udp` on ``ifname``."""
        res = self.run(
            ns, ["nft", "list", "chain", "netdev", self._loss_table(ifname), "loss"], check=False
        )
        m = re.search(r"packets (\d+)", res.stdout)
        return int(m.group(1)) if m else 0

    # -- teardown --------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process started here, then delete every namespace (idempotent)."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for proc in reversed(self.processes):
            try:
                self.stop(proc, timeout=3)
            except Exception as exc:  # keep tearing down
                errors.append(f"pid {proc.pid}: {exc}")
        for ns in reversed(self.namespaces):
            _kill_namespace_pids(ns)
            res = _ip("netns", "del", ns, check=False)
            if res.returncode != 0:
                errors.append(f"netns del {ns}: {res.stderr.strip()}")
        _live_beds.discard(self)
        if errors:
            raise NetnsError("test bed teardown incomplete: " + "; ".join(errors))


@contextlib.contextmanager
def netns_bed(
    n: int = 2, *, topology: str = "line", tag: str = ""
) -> Iterator[tuple[NetnsBed, list[str]]]:
    """Create ``n`` namespaces wired as ``"line"`` (n-1 veth links), ``"lan"`` (one bridge)
    or ``"none"``; yield ``(bed, namespaces)`` and tear everything down afterwards."""
    with NetnsBed(tag) as bed:
        nss = bed.add_namespaces(n, tag)
        if topology == "line":
            for a, b in itertools.pairwise(nss):
                bed.link(a, b)
        elif topology == "lan":
            bed.lan(nss)
        elif topology != "none":
            raise ValueError(f"unknown topology {topology!r}")
        yield bed, nss


@atexit.register
def _close_live_beds() -> None:
    for bed in list(_live_beds):
        with contextlib.suppress(Exception):
            bed.close()
