"""KINK half of the benchmark: two kinkd processes on loopback, driven through the ``bench``
control command of the benchmark's driver (``bench/driver.py``: the real ``kinkd.daemon.Daemon``
plus that command; processes started by ``bench/nodes.py``).

Topology: an embedded MIT realm (``krb5-testrealm/realm``, tickets warm), kinkd ``host1`` on
127.0.0.1 (initiator) and ``host2`` on 127.0.0.2 (responder), memory backend, no state
file, log level ``warning``. The engine keeps one SA pair per (peer, child, selectors), so
the initiator is configured with many peers (all pointing at host2, same principal) of many
children each, every child with its own port selector (``dynamic[tcp/P]``); host2 has one
peer entry (host1) with wide children (``dynamic[tcp]``: plain ESP; ``dynamic[udp]``: ESP with
PFS ecp256). A "target" is one (peer, child) pair = one CREATE = one SA pair.

Everything measured on the daemons comes from ``/proc/PID/stat`` (utime + stime, all threads)
and ``/proc/PID/status`` (VmRSS); latencies are measured by the bench command inside the
initiator daemon (engine.initiate -> SA_ESTABLISHED event).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.nodes import Node, free_udp_port, realm_down, realm_up
from kinkd import control

H1, H2 = "host1.kink.test", "host2.kink.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ESP = "aes128gcm16"
ESP_PFS = "aes128gcm16-ecp256"


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of PID (fields 14, 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@dataclass
class PeerSet:
    """``count`` initiator peers named ``prefix<i>``, ``children`` children each."""

    prefix: str
    count: int
    children: int
    pfs: bool = False
    u2u: bool = False
    used: int = 0  # targets handed out so far

    def target(self, i: int) -> tuple[str, str]:
        """Target i, round robin over the peers (consecutive targets on distinct peers)."""
        return f"{self.prefix}{i % self.count}", f"c{i // self.count}"

    @property
    def capacity(self) -> int:
        return self.count * self.children

    def take(self, n: int) -> list[tuple[str, str]]:
        if self.used + n > self.capacity:
            raise RuntimeError(f"peer set {self.prefix}: {self.used}+{n} > {self.capacity} children")
        out = [self.target(i) for i in range(self.used, self.used + n)]
        self.used += n
        return out


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return str(v)


def _daemon_section(node: Node, *, port: int | None = None, principal: str | None = None,
                    keytab: str | None = None, extra: tuple[str, ...] = (),
                    limits: tuple[str, ...] = ()) -> list[str]:
    """The bench daemons' [daemon] tables (KINK on ``port``, default the node's; the
    identity: the node's in the realm unless given; ``extra``/``limits``: more lines of
    [daemon] / [daemon.limits])."""
    d = node.directory
    return [
        "[daemon]",
        f'listen = ["{node.address}:{port or node.port}"]',
        f'principal = "{principal or node.realm.service(node.name)}"',
        f'keytab = "{keytab or node.realm.keytab(node.name)}"',
        'state_file = ""',
        f'control_socket = "{d}/control.sock"',
        'log_level = "warning"',
        *extra,
        "",
        "[daemon.timers]",
        'retransmit = "500ms"',
        "max_tries = 5",
        'delete_grace = "0s"',
        "",
        "[daemon.limits]",
        "max_sas = 1000000",
        "max_transactions = 16384",
        *limits,
        "",
    ]


def initiator_config(node: Node, responder: Node, sets: list[PeerSet]) -> str:
    lines = _daemon_section(node)
    k = 0
    for s in sets:
        proto = "udp" if s.pfs else "tcp"
        for p in range(s.count):
            lines += ["[[peer]]", f'name = "{s.prefix}{p}"',
                      f'address = "{responder.address}:{responder.port}"',
                      f'principal = "{node.realm.service(responder.name)}"']
            if s.u2u:
                lines.append("user_to_user = true")
            lines.append("")
            for c in range(s.children):
                lines += ["[[peer.child]]", f'name = "c{c}"',
                          f'local_ts = ["dynamic[{proto}/{10000 + k % 50000}]"]',
                          f'remote_ts = ["dynamic[{proto}/{1000 + k // 50000}]"]',
                          f'esp_proposals = ["{ESP_PFS if s.pfs else ESP}"]', ""]
                k += 1
    return "\n".join(lines)


def responder_config(node: Node, initiator: Node) -> str:
    lines = _daemon_section(node)
    lines += ["[[peer]]", 'name = "host1"', f'address = "{initiator.address}:{initiator.port}"',
              f'principal = "{node.realm.service(initiator.name)}"', "",
              "[[peer.child]]", 'name = "tcp"', 'local_ts = ["dynamic[tcp]"]',
              'remote_ts = ["dynamic[tcp]"]', f'esp_proposals = ["{ESP}"]', "",
              "[[peer.child]]", 'name = "udp"', 'local_ts = ["dynamic[udp]"]',
              'remote_ts = ["dynamic[udp]"]', f'esp_proposals = ["{ESP_PFS}"]', ""]
    return "\n".join(lines)


@dataclass
class Result:
    """One bench command's answer plus both daemons' CPU and RSS deltas."""

    op: str
    n: int
    ok: int
    failed: int
    seconds: float
    latency_ms: list[float]
    cpu_ini: float
    cpu_res: float
    sas: int
    gc_ini: dict = field(default_factory=dict)  # the collector's pauses (gcstats)
    gc_res: dict = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def drive(ini: Node, res: Node, op: str, targets: list[tuple[str, str | None]], *,
          concurrency: int = 1, rate: float = 0.0, timeout: float = 30.0) -> Result:
    """Run one ``bench`` control command on the initiator ``ini`` (in chunks: the control
    line limit); CPU deltas of both daemons from /proc."""
    ini_pid, res_pid = ini.proc.pid, res.proc.pid
    for n in (ini, res):  # reset: the collector's pauses of this run only
        control.call(n.socket, "gcstats", timeout=30)
    c0i, c0r = cpu_seconds(ini_pid), cpu_seconds(res_pid)
    lat: list[float] = []
    ok = failed = 0
    seconds = 0.0
    sas = 0
    chunk = 20000
    for i in range(0, len(targets), chunk):
        part = [list(t) for t in targets[i:i + chunk]]
        r = control.call(ini.socket, "bench",
                         {"op": op, "targets": part, "concurrency": concurrency,
                          "rate": rate, "timeout": timeout},
                         timeout=timeout + 60 + len(part) / 50)
        lat += r["latency_ms"]
        ok += r["ok"]
        failed += r["failed"]
        seconds += r["seconds"]
        sas = r["sas"]
    cpu_i, cpu_r = cpu_seconds(ini_pid) - c0i, cpu_seconds(res_pid) - c0r
    gc_i = control.call(ini.socket, "gcstats", timeout=30)
    gc_r = control.call(res.socket, "gcstats", timeout=30)
    return Result(op, len(targets), ok, failed, seconds, lat, cpu_i, cpu_r, sas,
                  gc_ini=gc_i, gc_res=gc_r)


def wait_ready(n: Node, timeout: float = 300) -> None:
    """Until the daemon answers ``status`` on its control socket (RuntimeError with its log
    when it exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if n.proc.poll() is not None:
            raise RuntimeError(f"kinkd {n.name} exited {n.proc.returncode}:\n{n.log()[-4000:]}")
        if os.path.exists(n.socket):
            try:
                control.call(n.socket, "status", timeout=10)
                return
            except (control.ControlError, OSError):
                pass
        time.sleep(0.1)
    raise RuntimeError(f"kinkd {n.name} not ready after {timeout}s")


class KinkBench:
    """A realm plus an initiator/responder kinkd pair configured with ``sets``."""

    def __init__(self, sets: list[PeerSet], workdir: Path | None = None):
        self.sets = {s.prefix: s for s in sets}
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kinkd-bench-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir)
        self.realm = None
        self.ini: Node | None = None
        self.res: Node | None = None

    def __enter__(self) -> KinkBench:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self.realm = realm_up(self.workdir / "realm", hosts=[H1, H2], users=["alice"])
        port = free_udp_port()
        self.ini = Node(H1, "127.0.0.1", port, self.workdir / "host1", self.realm)
        self.res = Node(H2, "127.0.0.2", port, self.workdir / "host2", self.realm)
        for n in (self.ini, self.res):
            n.directory.mkdir(parents=True, exist_ok=True)
        self.ini.config_path.write_text(initiator_config(self.ini, self.res, list(self.sets.values())))
        self.res.config_path.write_text(responder_config(self.res, self.ini))
        self.res.start()
        self.ini.start()
        for n in (self.res, self.ini):
            self._wait_ready(n)

    def _wait_ready(self, n: Node, timeout: float = 300) -> None:
        wait_ready(n, timeout)

    def close(self) -> None:
        for n in (self.ini, self.res):
            if n is not None and n.proc is not None:
                try:
                    n.stop()
                except Exception:  # noqa: BLE001
                    pass
        if self.realm is not None:
            realm_down(self.realm)
            self.realm = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # --- driving -------------------------------------------------------------------------

    def bench(self, op: str, targets: list[tuple[str, str | None]], *, concurrency: int = 1,
              rate: float = 0.0, timeout: float = 30.0) -> Result:
        """Run one bench command on the initiator (see :func:`drive`)."""
        return drive(self.ini, self.res, op, targets, concurrency=concurrency, rate=rate,
                     timeout=timeout)

    def warm(self, prefix: str) -> Result:
        """STATUS to every peer of a set: each peer's service ticket (and, for U2U, the
        responder's TGT) is fetched once, so later CREATEs find tickets warm."""
        s = self.sets[prefix]
        return self.bench("status", [(f"{prefix}{p}", None) for p in range(s.count)],
                          concurrency=8, timeout=60)

    def create(self, prefix: str, n: int, **kw) -> Result:
        return self.bench("create", self.sets[prefix].take(n), **kw)

    def down_all(self, prefix: str) -> None:
        """Delete every SA of a peer set (one DELETE per peer, many SPIs each)."""
        s = self.sets[prefix]
        self.bench("delete", [(f"{prefix}{p}", None) for p in range(s.count)],
                   concurrency=min(s.count, 16), timeout=120)

    def sas(self, node: Node) -> int:
        return int(control.call(node.socket, "status", timeout=60)["sas"])

    def counters(self, node: Node) -> dict:
        return control.call(node.socket, "stats", timeout=60)["counters"]

    def reset_children(self, prefix: str) -> None:
        """After down_all the children are free again."""
        self.sets[prefix].used = 0


def loopback_ok() -> tuple[bool, str]:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
    except OSError as e:
        return False, f"cannot bind 127.0.0.2: {e}"
    return True, ""
