"""kinkd with the XFRM backend inside a network namespace: trap policies, ACQUIRE -> CREATE.

This kernel has XFRM but no ESP: the daemon says so at start-up, installs the
policies of its children, and a packet matching a `start = "trap"` child makes the
kernel emit ACQUIRE, which starts a KINK CREATE. Everything (KDC, both daemons)
runs inside one namespace the test creates, with 198.18.0.1 and .2 on its lo; host2
is a tunnel-mode gateway for 198.19.2.0/24, a subnet routed out of a veth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests import realm as realmlib
from tests.daemons import Node, write_config
from tests.support.netns import can_create_netns

H1, H2 = "host1.kink.test", "host2.kink.test"
PORT = 910


def sh(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          check=check, timeout=60)


@pytest.fixture
def ns():
    ok, why = can_create_netns()
    if not ok:
        pytest.skip(why)
    name = f"kinkd-trap-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        sh(name, "ip", "link", "set", "lo", "up")
        sh(name, "ip", "addr", "add", "198.18.0.1/32", "dev", "lo")
        sh(name, "ip", "addr", "add", "198.18.0.2/32", "dev", "lo")
        # a subnet "behind" host2, routed out of a veth: traffic to it is not local, so the
        # kernel looks up the outbound policy and emits ACQUIRE (no dummy driver here)
        sh(name, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        sh(name, "ip", "link", "set", "v0", "up")
        sh(name, "ip", "link", "set", "v1", "up")
        sh(name, "ip", "route", "add", "198.19.2.0/24", "dev", "v0", "src", "198.18.0.1")
        yield name
    finally:
        subprocess.run(["ip", "netns", "pids", name], capture_output=True)
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
        for pid in pids.split():
            try:
                os.kill(int(pid), 9)
            except OSError:
                pass
        subprocess.run(["ip", "netns", "del", name])


@pytest.fixture
def bed(ns, tmp_path):
    rdir = tmp_path / "realm"
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, str(realmlib.REALM_TOOL), "up",
                    str(rdir), "--host", H1, "--host", H2, "--user", "alice"], check=True,
                   capture_output=True, timeout=120)
    realm = realmlib.load(rdir)
    n1 = Node(H1, "198.18.0.1", PORT, tmp_path / "h1", realm, wrap=["ip", "netns", "exec", ns])
    n2 = Node(H2, "198.18.0.2", PORT, tmp_path / "h2", realm, wrap=["ip", "netns", "exec", ns])
    for n in (n1, n2):
        n.directory.mkdir()
    try:
        yield ns, realm, n1, n2
    finally:
        for n in (n1, n2):
            try:
                n.stop()
            except Exception:  # noqa: BLE001
                pass
        realmlib.down(realm)


def configure_trap(realm, n1, n2):
    """h1: xfrm backend, a trap child towards 198.19.2.0/24 behind h2 (tunnel mode)."""
    child1 = {"name": "app", "local_ts": ["dynamic"], "remote_ts": ["198.19.2.0/24[udp/5555]"],
              "esp_proposals": ["aes128gcm16"], "start": "trap", "mode": "tunnel"}
    child2 = {"name": "app", "local_ts": ["198.19.2.0/24[udp/5555]"], "remote_ts": ["dynamic"],
              "esp_proposals": ["aes128gcm16"], "mode": "tunnel"}
    write_config(n1, [{"name": "host2", "address": f"198.18.0.2:{PORT}",
                       "principal": realm.service(H2), "child": [child1]}],
                 daemon_extra='backend = "xfrm"\non_shutdown = "delete"')
    write_config(n2, [{"name": "host1", "address": f"198.18.0.1:{PORT}",
                       "principal": realm.service(H1), "child": [child2]}])


def send_to_trap(ns: str) -> None:
    """One UDP packet matching the trap: the kernel emits ACQUIRE."""
    sh(ns, sys.executable, "-c",
       "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
       "s.bind(('198.18.0.1', 0))\n"
       "try:\n s.sendto(b'hello', ('198.19.2.7', 5555))\nexcept OSError:\n pass\n")


def wait_sas(n1, n2, timeout=15.0):
    deadline = time.monotonic() + timeout
    s1 = s2 = []
    while time.monotonic() < deadline:
        s1 = n1.ctl_json("sas")["sas"]
        s2 = n2.ctl_json("sas")["sas"]
        if s1 and s2:
            break
        time.sleep(0.1)
    return s1, s2


def test_trap_policy_acquire_starts_create(bed):
    ns, realm, n1, n2 = bed
    configure_trap(realm, n1, n2)
    n2.start()
    n1.start()
    # the kernel refuses ESP SAs here: the daemon says so clearly, once, at start-up
    assert "no ESP support" in n1.log()
    st = n1.ctl_json("status")
    assert st["daemon"]["backend"] == "xfrm" and "no ESP support" in st["daemon"]["kernel"]
    pol = sh(ns, "ip", "xfrm", "policy").stdout
    assert "src 198.18.0.1/32 dst 198.19.2.0/24 proto udp dport 5555" in pol
    assert "tmpl src 198.18.0.1 dst 198.18.0.2" in pol and "mode tunnel" in pol
    assert "dir out" in pol and "dir in" in pol and "proto esp" in pol
    assert n1.ctl_json("sas")["sas"] == []
    # one UDP packet matching the trap: the kernel emits ACQUIRE, kinkd negotiates
    send_to_trap(ns)
    s1, s2 = wait_sas(n1, n2)
    assert s1 and s2, n1.log()[-3000:]
    assert s1[0]["spi_in"] == s2[0]["spi_out"] and s1[0]["spi_out"] == s2[0]["spi_in"]
    assert s1[0]["child"] == "app" and s1[0]["transform"] == "aes128gcm16"
    assert "acquire" in n1.log()
    stats = json.loads(n1.ctl("stats", "--json").stdout)["counters"]
    assert stats.get("kernel.acquires", 0) >= 1
    # on_shutdown = "delete": SAs deleted with the peer, policies removed
    assert n1.stop() == 0
    assert "198.19.2.0/24" not in sh(ns, "ip", "xfrm", "policy").stdout


def test_kink_messages_bypass_a_child_covering_all_traffic(bed):
    """A child with the default selectors covers all traffic between the two hosts, KINK's
    own UDP included. kinkd exempts its sockets (per-socket bypass policies): without that,
    the responder's policy caught its own REPLY (ACQUIRE, "no answer" at the initiator) --
    found in the real-kernel test bed (tests/kernel)."""
    ns, realm, n1, n2 = bed
    child = {"name": "all", "esp_proposals": ["aes128gcm16"]}
    write_config(n1, [{"name": "host2", "address": f"198.18.0.2:{PORT}",
                       "principal": realm.service(H2), "child": [child]}],
                 daemon_extra='backend = "xfrm"')
    write_config(n2, [{"name": "host1", "address": f"198.18.0.1:{PORT}",
                       "principal": realm.service(H1), "child": [child]}],
                 daemon_extra='backend = "xfrm"')
    n2.start()
    n1.start()
    pol = sh(ns, "ip", "xfrm", "policy").stdout
    assert pol.count("socket in") == 2 and pol.count("socket out") == 2, pol
    r = n1.ctl("up", "host2", check=False, timeout=30)
    assert r.returncode == 0, r.stderr + n2.log()[-2000:]
    pol = sh(ns, "ip", "xfrm", "policy").stdout
    assert "src 198.18.0.1/32 dst 198.18.0.2/32" in pol, pol
    assert n1.ctl("down", "host2", check=False, timeout=30).returncode == 0
    assert n1.stop() == 0 and n2.stop() == 0
    assert "socket" not in sh(ns, "ip", "xfrm", "policy").stdout


def test_xfrm_daemon_runs_within_the_units_sandbox(bed, tmp_path):
    """The xfrm backend (netlink, policies, ACQUIRE, shutdown with DELETE) traced, with the
    unit's capabilities only (CAP_NET_ADMIN, CAP_NET_BIND_SERVICE for port 910): every
    system call, socket family, /proc and /dev path passes conf/kinkd.service's sandbox
    (see tests/test_systemd.py)."""
    from tests.test_systemd import _analyze, _strace, sandbox_problems, stop_traced, unit_privileges

    exe, strace = _analyze(), _strace()
    ns, realm, n1, n2 = bed
    configure_trap(realm, n1, n2)
    trace = tmp_path / "strace.log"
    n1.wrap = [*n1.wrap, *unit_privileges(), strace, "-f", "-qq", "-o", str(trace), "--"]
    n2.start()
    n1.start()
    send_to_trap(ns)
    s1, s2 = wait_sas(n1, n2)
    assert s1 and s2, n1.log()[-3000:]
    assert stop_traced(n1) == 0
    text = trace.read_text()
    assert "AF_NETLINK" in text
    problems = sandbox_problems(text, exe)
    assert not problems, "\n".join(problems[:40])


def test_reload_moves_the_kernel_policies(bed):
    """A reload that removes a trap child takes its policies out of the kernel; one that
    adds a trap child (or changes a child's selectors) installs the new ones. Before,
    a removed child's policies stayed in the kernel until the daemon stopped."""
    ns, realm, n1, n2 = bed
    configure_trap(realm, n1, n2)
    n1.start()
    pol = sh(ns, "ip", "xfrm", "policy").stdout
    assert "dst 198.19.2.0/24" in pol, pol

    def rewrite(children):
        write_config(n1, [{"name": "host2", "address": f"198.18.0.2:{PORT}",
                           "principal": realm.service(H2), "child": children}],
                     daemon_extra='backend = "xfrm"')
        n1.ctl("reload")
        return sh(ns, "ip", "xfrm", "policy").stdout

    other = {"name": "other", "local_ts": ["dynamic"], "remote_ts": ["198.19.3.0/24"],
             "esp_proposals": ["aes128gcm16"], "start": "trap", "mode": "tunnel"}
    pol = rewrite([other])
    assert "198.19.2.0/24" not in pol and "dst 198.19.3.0/24" in pol, pol
    moved = dict(other, remote_ts=["198.19.4.0/24"])
    pol = rewrite([moved])
    assert "198.19.3.0/24" not in pol and "dst 198.19.4.0/24" in pol, pol
    pol = rewrite([dict(moved, start="none")])
    assert "198.19.4.0/24" not in pol, pol
    assert n1.stop() == 0
    assert sh(ns, "ip", "xfrm", "policy").stdout == ""


def test_policies_fail_closed_when_the_peer_dies(bed):
    """A child brought up by `kinkctl up` whose peer dies (DPD: no answer to STATUS) loses
    its SAs but keeps its kernel policies, so its traffic cannot leave in the clear; the
    policies go with `kinkctl down`. (Before: removed with the SAs; the real-kernel bed
    saw the cleartext, tests/kernel/test_lifecycle.py.)"""
    ns, realm, n1, n2 = bed
    child1 = {"name": "app", "local_ts": ["dynamic"], "remote_ts": ["198.19.2.0/24[udp/5555]"],
              "esp_proposals": ["aes128gcm16"], "mode": "tunnel"}
    child2 = {"name": "app", "local_ts": ["198.19.2.0/24[udp/5555]"], "remote_ts": ["dynamic"],
              "esp_proposals": ["aes128gcm16"], "mode": "tunnel"}
    write_config(n1, [{"name": "host2", "address": f"198.18.0.2:{PORT}", "dpd": "1s",
                       "principal": realm.service(H2), "child": [child1]}],
                 daemon_extra='backend = "xfrm"')
    write_config(n2, [{"name": "host1", "address": f"198.18.0.1:{PORT}",
                       "principal": realm.service(H1), "child": [child2]}])
    n2.start()
    n1.start()
    assert "198.19.2.0/24" not in sh(ns, "ip", "xfrm", "policy").stdout  # not a trap child
    n1.ctl("up", "host2")
    assert "dst 198.19.2.0/24" in sh(ns, "ip", "xfrm", "policy").stdout
    n2.proc.kill()
    n2.proc.wait()
    deadline = time.monotonic() + 30
    while n1.ctl_json("sas")["sas"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert n1.ctl_json("sas")["sas"] == [], n1.log()[-2000:]
    assert "peer-dead" in n1.log()
    assert "dst 198.19.2.0/24" in sh(ns, "ip", "xfrm", "policy").stdout  # held: fail closed
    n1.ctl("down", "host2")
    assert "198.19.2.0/24" not in sh(ns, "ip", "xfrm", "policy").stdout
    assert n1.stop() == 0


def test_ikev1_peer_on_the_xfrm_backend_trap_and_forced_encapsulation(bed, tmp_path):
    """IKEv1 peers on the XFRM backend (issue 15): a trap child of an IKEv1 peer gets its
    policies at start, the kernel's ACQUIRE starts Main + Quick Mode, and with ``encap =
    true`` (no NAT here) the SAs are UDP-encapsulated. The IKE sockets (500 and 4500)
    bypass the policies as KINK's does; everything leaves the kernel at the stop. (The
    kernel here has no ESP: tests/kernel proves the ESP-in-UDP traffic in the VM.)"""
    ns, realm, n1, n2 = bed
    psk = tmp_path / "ike.psk"
    psk.write_text("a pre-shared key for the xfrm test\n")
    os.chmod(psk, 0o600)
    child1 = {"name": "app", "local_ts": ["198.18.0.1/32"], "remote_ts": ["198.19.2.0/24"],
              "esp_proposals": ["aes128gcm16"], "start": "trap", "mode": "tunnel"}
    child2 = {"name": "app", "local_ts": ["198.19.2.0/24"], "remote_ts": ["198.18.0.1/32"],
              "esp_proposals": ["aes128gcm16"], "mode": "tunnel"}
    ike = {"exchange": "ikev1", "psk_file": str(psk), "ike_proposals": ["aes128-sha256-ecp256"]}
    write_config(n1, [{"name": "gw", "address": "198.18.0.2", "encap": True, **ike,
                       "child": [child1]}],
                 daemon_extra='backend = "xfrm"\non_shutdown = "delete"')
    write_config(n2, [{"name": "gw1", "address": "198.18.0.1", **ike, "child": [child2]}],
                 daemon_extra='backend = "xfrm"')
    n2.start()
    n1.start()
    pol = sh(ns, "ip", "xfrm", "policy").stdout
    # KINK 910, IKE 500 and 4500 of both daemons: 6 sockets, each in and out
    assert pol.count("socket in") == 6 and pol.count("socket out") == 6, pol
    assert "src 198.18.0.1/32 dst 198.19.2.0/24" in pol and "mode tunnel" in pol
    assert "tmpl src 198.18.0.1 dst 198.18.0.2" in pol
    send_to_trap(ns)
    s1, s2 = wait_sas(n1, n2, timeout=30)
    assert s1 and s2, n1.log()[-3000:] + n2.log()[-2000:]
    assert s1[0]["exchange"] == s2[0]["exchange"] == "ikev1"
    assert s1[0]["spi_in"] == s2[0]["spi_out"] and s1[0]["spi_out"] == s2[0]["spi_in"]
    assert s1[0]["mode"] == s2[0]["mode"] == "udp_encapsulated_tunnel", s1
    assert json.loads(n1.ctl("stats", "--json").stdout)["counters"]["kernel.acquires"] >= 1
    assert "kernel-install-failed" not in n1.log() + n2.log()
    assert "udp-encap-failed" not in n1.log() + n2.log()
    # the responder's policies came with its SAs
    assert "src 198.19.2.0/24 dst 198.18.0.1/32" in sh(ns, "ip", "xfrm", "policy").stdout
    assert n1.stop() == 0 and n2.stop() == 0
    left = sh(ns, "ip", "xfrm", "policy").stdout
    assert "198.19.2.0/24" not in left and "socket" not in left, left


def test_reload_brings_the_first_ikev1_peer_and_takes_it_away(bed, tmp_path):
    """A daemon started with KINK peers only gets its first IKEv1 peer by a reload: the
    IKE endpoints (500, 4500) are bound then (with the xfrm backend: bypass policies), a
    port in use refuses the reload and changes nothing, and a reload without IKEv1 peers
    deletes their SAs."""
    ns, realm, n1, n2 = bed
    psk = tmp_path / "gw.psk"
    psk.write_text("reload brings this key\n")
    os.chmod(psk, 0o600)
    ike = {"exchange": "ikev1", "psk_file": str(psk), "ike_proposals": ["aes128-sha256-ecp256"]}
    kink_peer = {"name": "host2", "address": "198.18.0.2:910", "principal": realm.service(
        "host2.kink.test"), "child": [{"name": "k", "esp_proposals": ["aes128gcm16"]}]}
    gw = {"name": "gw", "address": "198.18.0.2", **ike,
          "child": [{"name": "net", "esp_proposals": ["aes128gcm16"]}]}
    write_config(n1, [kink_peer], daemon_extra='backend = "xfrm"')
    write_config(n2, [{"name": "gw1", "address": "198.18.0.1", **ike,
                       "child": [{"name": "net", "esp_proposals": ["aes128gcm16"]}]}])
    n2.start()
    n1.start()
    assert sh(ns, "ip", "xfrm", "policy").stdout.count("socket in") == 1  # KINK only
    write_config(n1, [kink_peer, gw], daemon_extra='backend = "xfrm"')
    # port 500 of host1 taken: the reload is refused, nothing changes
    blocker = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c",
         "import socket,sys,time\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "s.bind(('198.18.0.1', 500))\nprint('bound', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE)
    try:
        assert blocker.stdout.readline().strip() == b"bound"
        r = n1.ctl("reload", check=False)
        assert r.returncode != 0 and "IKEv1 endpoints" in r.stderr, (r.stdout, r.stderr)
    finally:
        blocker.kill()
        blocker.wait()
    assert n1.ctl("up", "gw", check=False).returncode != 0  # not a peer yet
    assert sh(ns, "ip", "xfrm", "policy").stdout.count("socket in") == 1
    r = n1.ctl("reload", check=False)
    assert r.returncode == 0, r.stderr + n1.log()[-2000:]
    assert "IKEv1 hosted" in r.stdout
    assert sh(ns, "ip", "xfrm", "policy").stdout.count("socket in") == 3  # + 500, 4500
    r = n1.ctl("up", "gw", check=False, timeout=30)
    assert r.returncode == 0, r.stderr + n1.log()[-2000:] + n2.log()[-2000:]
    (sa,) = n1.ctl_json("sas")["sas"]
    assert sa["exchange"] == "ikev1" and sa["peer"] == "gw"
    assert [p["name"] for p in n1.ctl_json("peers")["peers"]] == ["host2", "gw"]
    # and away again: the SAs are deleted with the peer, the responder drops its side
    write_config(n1, [kink_peer], daemon_extra='backend = "xfrm"')
    assert n1.ctl("reload", check=False).returncode == 0
    assert n1.ctl_json("sas")["sas"] == []
    deadline = time.monotonic() + 10
    while n2.ctl_json("sas")["sas"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert n2.ctl_json("sas")["sas"] == []
    stats = json.loads(n1.ctl("stats", "--json").stdout)["counters"]
    assert stats.get("negotiations.succeeded", 0) >= 1
    assert n1.stop() == 0 and n2.stop() == 0


def test_kinkctl_check_of_an_ikev1_peer(bed, tmp_path):
    """`kinkctl check` of an IKEv1 peer: its PSK file, then the peer (a Main Mode only when
    there is no ISAKMP SA: a wrong key is named; an R-U-THERE on the ISAKMP SA when there
    is one; no answer: exit 1)."""
    ns, realm, n1, n2 = bed
    good, bad = tmp_path / "good.psk", tmp_path / "bad.psk"
    good.write_text("the right key\n")
    bad.write_text("not the right key\n")
    for f in (good, bad):
        os.chmod(f, 0o600)
    ike = {"exchange": "ikev1", "ike_proposals": ["aes128-sha256-ecp256"]}
    child = {"name": "net", "esp_proposals": ["aes128gcm16"]}
    write_config(n1, [{"name": "gw", "address": "198.18.0.2", "psk_file": str(good), **ike,
                       "child": [child]}])
    write_config(n2, [{"name": "gw1", "address": "198.18.0.1", "psk_file": str(bad), **ike,
                       "child": [child]}])
    n2.start()
    n1.start()
    r = n1.ctl("check", "gw", "--timeout", "10", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "psk     ok" in r.stdout and "isakmp  FAIL" in r.stdout, r.stdout
    j = json.loads(n1.ctl("check", "gw", "--json", "--timeout", "10", check=False).stdout)
    assert j["exchange"] == "ikev1" and j["psk"]["ok"] and not j["isakmp_sa"]["ok"]
    # the responder finds the key wrong (its log: psk-mismatch) and says so with a Notify
    assert j["isakmp_sa"]["reason"] == "authentication-failed", j
    assert "AUTHENTICATION_FAILED" in j["isakmp_sa"]["error"], j
    assert "psk-mismatch" in n2.log()
    write_config(n2, [{"name": "gw1", "address": "198.18.0.1", "psk_file": str(good), **ike,
                       "child": [child]}])
    assert n2.ctl("reload", check=False).returncode == 0
    r = n1.ctl("check", "gw", "--timeout", "10", check=False)
    assert r.returncode == 0 and "negotiated (Main Mode)" in r.stdout, r.stdout + r.stderr
    assert n1.ctl_json("sas")["sas"] == []  # phase 1 only: no child SA
    r = n1.ctl("check", "gw", "--timeout", "10", check=False)
    assert r.returncode == 0 and "answered R-U-THERE" in r.stdout, r.stdout
    n2.proc.kill()
    n2.proc.wait()
    r = n1.ctl("check", "gw", "--timeout", "2", check=False)
    assert r.returncode == 1 and "no answer within 2s" in r.stdout, r.stdout
    os.chmod(good, 0o644)  # the key file as the daemon would refuse it at load
    j = json.loads(n1.ctl("check", "gw", "--json", "--timeout", "1", check=False).stdout)
    assert not j["psk"]["ok"] and "readable" in j["psk"]["error"], j
    assert n1.stop() == 0
