"""The multi-host fault test bed: kinkd hosts in network namespaces, one KDC, impaired links.

Topology (everything in namespaces this bed creates; addresses from 198.18.0.0/15
inside them only)::

    host1 (198.18.1.1) --+
    host2 (198.18.1.2) --+-- hub: userspace Ethernet hub (tests/support/relay.py)
    ...                  |        dup / reorder / delay of KINK datagrams
    kdc (198.18.1.254) --+        krb5kdc started by krb5-testrealm/realm --address

The hub namespace has no addresses: ``relay.py`` bridges its ports in userspace,
so the daemons see each other's real addresses (``dynamic`` selectors and the
engine's peer matching by source address work unchanged) and the KDC is
reachable from every host. Loss is done with nftables on each host's
interface (:meth:`Bed.loss`, ``numgen random mod 100 < N drop``, KINK port only,
so the KDC is never affected by it).

Use::

    with Bed(tmp_path, hosts=2) as bed:
        a, b = bed.hosts
        a.configure([bed.peer(a, b, [child("c1", 5001)], start="start")])
        b.configure([bed.peer(b, a, [child("c1", 5001, server=True)])])
        b.start(); a.start()
        bed.impair(dup=10, reorder=20, seed=7)   # relay
        bed.loss(a, 30)                          # nftables on a's interface, both ways
        a.sas(), a.stats(), a.peers(), a.events("sa-established")
        bed.stop_kdc(); bed.start_kdc()
        a.restart(); b.kill()

Each :class:`Host` is a :class:`tests.daemons.Node` whose kinkd runs in the host's
namespace (``ip netns exec``); kinkctl runs in the root namespace against the
Unix control socket in the host's directory. :meth:`Bed.close` (also on
failure) stops the daemons, the relay and the KDC, and deletes the namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kinkd.config import TEST_KNOBS_ENV
from tests import realm as realmlib
from tests.daemons import BIN, REPO, Node
from tests.support import netns

KINK_PORT = 910
SUBNET = "198.18.1"
KDC_ADDRESS = f"{SUBNET}.254"
PREFIX = 24


def available() -> tuple[bool, str]:
    """(True, "") when the bed can be built here, else (False, why) for pytest.skip."""
    ok, reason = netns.can_create_netns()
    if not ok:
        return ok, reason
    ok, reason = netns.can_use_nft()
    if not ok:
        return ok, reason
    return True, ""


def child(name: str, port: int, *, server: bool = False, proposals=("aes128gcm16",),
          **kw: Any) -> dict:
    """A child protecting TCP to ``port`` on the server side; ``server=True``: its view."""
    ts = ["dynamic", f"dynamic[tcp/{port}]"]
    local, remote = (ts[1], ts[0]) if server else (ts[0], ts[1])
    c = {"name": name, "local_ts": [local], "remote_ts": [remote],
         "esp_proposals": list(proposals), "lifetime": "1h", "rekey_time": "50m"}
    c.update(kw)
    return c


class Host(Node):
    """One kinkd in its own namespace."""

    bed: Bed
    ns: str
    ifname: str = "eth0"

    @property
    def short(self) -> str:
        return self.name.split(".")[0]

    def configure(self, peers: list[dict], *, timers: dict | None = None,
                  clock_offset: str | None = None, daemon: dict | None = None) -> None:
        """Write kinkd.toml: listen on the host's address, short timers by default.

        ``clock_offset`` (e.g. ``"10m"``) sets the test-only [daemon.testing] knob and
        allows it (KINKD_ALLOW_TEST_KNOBS=1) in this daemon's environment only.
        """
        d = self.directory
        t = {"retransmit": "200ms", "retransmit_max": "1600ms", "max_tries": 6,
             "delete_grace": "0s", "kdc_backoff_max": "2s"}
        t.update(timers or {})
        dm = {"listen": [f"{self.address}:{self.port}"],
              "principal": self.realm.service(self.name),
              "keytab": str(self.realm.keytab(self.name)),
              "state_file": f"{d}/state.json", "control_socket": f"{d}/control.sock",
              "log_level": "debug"}
        dm.update(daemon or {})
        lines = ["[daemon]", *(f"{k} = {json.dumps(v)}" for k, v in dm.items()), "",
                 "[daemon.timers]", *(f"{k} = {json.dumps(v)}" for k, v in t.items()), ""]
        self.extra_env.pop(TEST_KNOBS_ENV, None)
        if clock_offset is not None:
            lines += ["[daemon.testing]", f"clock_offset = {json.dumps(clock_offset)}", ""]
            self.extra_env[TEST_KNOBS_ENV] = "1"
        for p in peers:
            lines.append("[[peer]]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in p.items() if k != "child"]
            for c in p.get("child", []):
                lines += ["", "[[peer.child]]", *(f"{k} = {json.dumps(v)}" for k, v in c.items())]
            lines.append("")
        self.config_path.write_text("\n".join(lines))

    def start(self, wait: bool = True) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = self.bed.net.popen(
                self.ns, [str(BIN / "kinkd"), "--config", str(self.config_path)],
                env=self.env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        if wait:
            self.wait_ready()

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        return self.bed.net.stop(self.proc, timeout=timeout)

    def kill(self) -> None:
        """The host is gone at once: SIGKILL, no DELETE, no state written."""
        if self.proc is not None:
            self.bed.net.stop(self.proc, sig=signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- views -------------------------------------------------------------------------
    def sas(self) -> list[dict]:
        return self.ctl_json("sas")["sas"]

    def stats(self) -> dict:
        return self.ctl_json("stats")["counters"]

    def peers(self) -> dict[str, dict]:
        return {p["name"]: p for p in self.ctl_json("peers")["peers"]}

    def events(self, kind: str, level: str | None = None) -> list[str]:
        """Log lines of one event kind (e.g. ``"clock-skew-corrected"``), of ``level`` only
        if given (text log format: ``TIME LEVEL KIND key=value ...``)."""
        out = []
        for ln in self.log().splitlines():
            f = ln.split(None, 3)
            if len(f) >= 3 and f[2] == kind and (level is None or f[1] == level):
                out.append(ln)
        return out


class Bed:
    """N kinkd hosts + KDC + relay hub, all in namespaces; a context manager."""

    def __init__(self, directory: Path, hosts: int = 2, *, seed: int = 1) -> None:
        self.directory = Path(directory)
        self.net = netns.NetnsBed("kink")
        self.realm: realmlib.Realm | None = None
        self.relay: subprocess.Popen | None = None
        self.hosts: list[Host] = []
        self.seed = seed
        try:
            self._build(hosts)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Bed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- construction --------------------------------------------------------------------
    def _build(self, n: int) -> None:
        net = self.net
        self.hub = net.add_namespace("hub")
        netns._call(["ip", "netns", "exec", self.hub, "sysctl", "-qw",
                     "net.ipv6.conf.all.disable_ipv6=1"], check=False)
        self.kdc_ns = net.add_namespace("kdc")
        ports = []
        names = [f"host{i + 1}.kink.test" for i in range(n)]
        members = [(self.kdc_ns, KDC_ADDRESS)] + [
            (net.add_namespace(f"h{i + 1}"), f"{SUBNET}.{i + 1}") for i in range(n)]
        for k, (ns, addr) in enumerate(members):
            port = f"p{k}"
            netns._ip("link", "add", port, "netns", self.hub, "type", "veth", "peer", "name",
                      "eth0", "netns", ns)
            netns._ip("-n", self.hub, "link", "set", port, "promisc", "on", "up")
            netns._call(["ip", "netns", "exec", ns, "sysctl", "-qw",
                         "net.ipv6.conf.all.disable_ipv6=1"], check=False)
            netns._ip("-n", ns, "addr", "add", f"{addr}/{PREFIX}", "dev", "eth0", "nodad")
            netns._ip("-n", ns, "link", "set", "eth0", "up")
            ports.append(port)
        self.params_path = self.directory / "relay-params.json"
        self.stats_path = self.directory / "relay-stats.json"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_params({"seed": self.seed})
        self.relay_log = self.directory / "relay.log"
        with open(self.relay_log, "ab") as log:
            self.relay = net.popen(self.hub, [sys.executable, "-m", "tests.support.relay",
                                              "--params", str(self.params_path), "--stats",
                                              str(self.stats_path), *ports],
                                   cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        netns.wait_for(lambda: self.stats_path.exists() or self.relay.poll() is not None,
                       timeout=10, what="relay start")
        if self.relay.poll() is not None:
            raise RuntimeError(f"relay exited: {self.relay_log.read_text()}")
        self.realm = realmlib.up(self.directory / "realm", hosts=names, users=("alice",),
                                 address=KDC_ADDRESS, netns=self.kdc_ns)
        for i, name in enumerate(names):
            ns = members[i + 1][0]
            d = self.directory / name.split(".")[0]
            d.mkdir()
            h = Host(name, members[i + 1][1], KINK_PORT, d, self.realm)
            h.bed, h.ns = self, ns
            self.hosts.append(h)

    def peer(self, me: Host, other: Host, children: list[dict], **kw: Any) -> dict:
        """A [[peer]] entry of ``me`` for ``other`` (named by its short host name)."""
        p = {"name": other.short, "address": f"{other.address}:{other.port}",
             "principal": self.realm.service(other.name), "child": children}
        p.update(kw)
        return p

    # -- impairments ---------------------------------------------------------------------
    def _write_params(self, params: dict) -> None:
        tmp = self.params_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(params))
        tmp.replace(self.params_path)

    def impair(self, *, dup: float = 0, reorder: float = 0, delay_ms: float = 0,
               jitter_ms: float = 0, reorder_ms: float = 20, seed: int | None = None) -> None:
        """Set the relay's duplication/reordering/delay of KINK datagrams (percent, ms)."""
        self._write_params({"seed": self.seed if seed is None else seed, "dup": dup,
                            "reorder": reorder, "reorder_ms": reorder_ms,
                            "delay_ms": delay_ms, "jitter_ms": jitter_ms,
                            "ports": [KINK_PORT]})
        os.kill(self.relay.pid, signal.SIGHUP)
        time.sleep(0.05)

    def relay_stats(self) -> dict:
        try:
            return json.loads(self.stats_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def loss(self, host: Host, percent: int, direction: str = "both") -> None:
        """Drop ``percent`` % of KINK datagrams on ``host``'s interface (0 = no loss)."""
        if percent <= 0:
            self.net.clear_udp_drop(host.ns, host.ifname)
        else:
            self.net.drop_udp(host.ns, host.ifname, percent, direction=direction,
                              ports=[KINK_PORT])

    def dropped(self, host: Host) -> int:
        return self.net.dropped_udp(host.ns, host.ifname)

    # -- KDC -----------------------------------------------------------------------------
    def stop_kdc(self) -> None:
        self.realm.stop_kdc()

    def start_kdc(self) -> None:
        self.realm.start_kdc()

    # -- teardown ------------------------------------------------------------------------
    def close(self) -> None:
        for h in self.hosts:
            with contextlib.suppress(Exception):
                h.stop(timeout=5)
        if self.realm is not None:
            with contextlib.suppress(Exception):
                realmlib.down(self.realm)
            self.realm = None
        self.net.close()


def wait_for(predicate, timeout: float, what: str = "", interval: float = 0.1):
    return netns.wait_for(predicate, timeout=timeout, interval=interval, what=what)
