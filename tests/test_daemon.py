"""kinkd as real processes against the real KDC: kinkctl, two daemons over UDP on loopback,
reload, signals, restart with the state file, kinit-then-connect."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import time

import pytest

from tests.daemons import BIN, Node, free_udp_port, write_config

H1, H2 = "host1.kink.test", "host2.kink.test"
SA_FIELDS = {"peer", "child", "protocol", "spi_in", "spi_out", "transform", "mode",
             "established_at", "expires_at"}


def child(name="pg", port=5432, proposals=("aes128gcm16", "aes256-sha256"), server=False, **kw):
    """A child protecting TCP to PORT on the server side (h2); ``server=True``: h2's view."""
    ts = ["dynamic", f"dynamic[tcp/{port}]"]
    local, remote = (ts[1], ts[0]) if server else (ts[0], ts[1])
    c = {"name": name, "local_ts": [local], "remote_ts": [remote],
         "esp_proposals": list(proposals), "lifetime": "1h", "rekey_time": "50m"}
    c.update(kw)
    return c


def peer_entry(realm, other: Node, children, **kw):
    p = {"name": other.name.split(".")[0], "address": f"{other.address}:{other.port}",
         "principal": realm.service(other.name), "child": children}
    p.update(kw)
    return p


@pytest.fixture
def pair(realm, tmp_path):
    """Two daemons, h1 (127.0.0.1) and h2 (127.0.0.2), each configured with the other."""
    port = free_udp_port()
    n1 = Node(H1, "127.0.0.1", port, tmp_path / "h1", realm)
    n2 = Node(H2, "127.0.0.2", port, tmp_path / "h2", realm)
    for n in (n1, n2):
        n.directory.mkdir()

    def configure(children1=None, children2=None, extra1=None, extra2=None, **daemon_kw):
        write_config(n1, [peer_entry(realm, n2, children1 or [child()],
                                     allow_principals=[realm.user("alice")], **(extra1 or {}))],
                     **daemon_kw)
        write_config(n2, [peer_entry(realm, n1, children2 or [child(server=True)],
                                     allow_principals=[realm.user("alice")], **(extra2 or {}))],
                     **daemon_kw)

    configure()
    n1.configure = n2.configure = configure
    yield n1, n2
    for n in (n1, n2):
        try:
            n.stop()
        except Exception:  # noqa: BLE001
            pass


def assert_matching(sas1, sas2):
    assert sas1 and len(sas1) == len(sas2)
    by_in = {s["spi_in"]: s for s in sas2}
    for s in sas1:
        other = by_in[s["spi_out"]]
        assert other["spi_out"] == s["spi_in"]
        assert other["transform"] == s["transform"]
        assert other["protocol"] == s["protocol"] == "esp"


def test_negotiate_delete_over_udp(pair):
    n1, n2 = pair
    n1.start()
    n2.start()
    r = n1.ctl("up", "host2/pg")
    assert "established" in r.stdout
    s1 = n1.ctl_json("sas")["sas"]
    s2 = n2.ctl_json("sas")["sas"]
    assert_matching(s1, s2)
    for s in s1 + s2:
        assert SA_FIELDS <= set(s)
        assert re.fullmatch(r"0x[0-9a-f]{8}", s["spi_in"]) and re.fullmatch(r"0x[0-9a-f]{8}", s["spi_out"])
        assert s["transform"] == "aes128gcm16" and s["mode"] == "transport"
        assert "keys" not in s
    human = n1.ctl("sas").stdout
    assert s1[0]["spi_in"] in human and "aes128gcm16" in human
    # delete with the peer: both sides lose the pair
    n1.ctl("down", "host2")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not n1.ctl_json("sas")["sas"] and not n2.ctl_json("sas")["sas"]:
            break
        time.sleep(0.1)
    assert n1.ctl_json("sas")["sas"] == [] and n2.ctl_json("sas")["sas"] == []


def test_kinkctl_commands_and_schema(pair):
    n1, n2 = pair
    n1.start()
    n2.start()
    n1.ctl("up", "host2")
    st = n1.ctl_json("status")
    assert st["daemon"]["backend"] == "memory" and st["daemon"]["pid"] == n1.proc.pid
    assert st["identity"]["principal"] == n1.realm.service(H1)
    assert st["identity"]["ticket_expiry"] and st["identity"]["ticket_expiry"] > time.time()
    assert st["peers"][0]["name"] == "host2" and st["peers"][0]["state"] == "alive"
    assert st["sas"] == 1  # one record per SA pair (spi_in, spi_out)
    peers = n1.ctl_json("peers")["peers"]
    assert peers[0]["sas"] == 1 and peers[0]["epoch"]
    stats = n1.ctl_json("stats")["counters"]
    assert stats["negotiations.succeeded"] >= 1 and stats["tx.datagrams"] >= 1
    text = n1.ctl("metrics").stdout
    assert "# TYPE kinkd_negotiations_succeeded_total counter" in text
    assert re.search(r'^kinkd_sas\{state="mature"\} 1$', text, re.M)
    assert "kinkd_kdc_request_seconds_bucket" in text
    # keys only for root, only on request
    keyed = n1.ctl_json("sas", "--show-keys")["sas"]
    if os.getuid() == 0:
        assert all(len(s["keys"]["in"]["encryption"]) == 40 for s in keyed)  # 16 key + 4 salt
    human = n1.ctl("status").stdout
    assert "identity kink/host1.kink.test@KINK.TEST" in human and "host2" in human
    # errors are clear and exit non-zero
    bad = n1.ctl("up", "nosuchpeer", check=False)
    assert bad.returncode == 1 and "no peer named 'nosuchpeer'" in bad.stderr
    gone = subprocess.run([str(BIN / "kinkctl"), "--socket", str(n1.directory / "nope.sock"),
                           "status"], capture_output=True, text=True)
    assert gone.returncode == 1 and "is kinkd running?" in gone.stderr


def test_both_sides_derive_the_same_keys(pair):
    n1, n2 = pair
    n1.start()
    n2.start()
    n1.ctl("up", "host2")
    if os.getuid() != 0:
        pytest.skip("--show-keys needs root")
    k1 = {s["spi_in"]: s["keys"] for s in n1.ctl_json("sas", "--show-keys")["sas"]}
    k2 = {s["spi_out"]: s["keys"] for s in n2.ctl_json("sas", "--show-keys")["sas"]}
    assert k1.keys() == k2.keys()
    for spi in k1:
        assert k1[spi]["in"] == k2[spi]["out"]


def test_sighup_reload_keeps_unchanged_sas(pair):
    n1, n2 = pair
    server = [child(server=True), child("ssh", 22, server=True)]
    n1.configure(children1=[child(), child("ssh", 22)], children2=server)
    n1.start()
    n2.start()
    n1.ctl("up", "host2")
    before = {s["spi_in"] for s in n1.ctl_json("sas")["sas"]}
    assert len(before) == 2
    # change only the ssh child's proposals, keep pg
    n1.configure(children1=[child(), child("ssh", 22, proposals=("aes256gcm16",))],
                 children2=server)
    n1.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "reloaded" not in n1.log():
        time.sleep(0.05)
    log = n1.log()
    assert "child host2/ssh changed" in log
    pg = {s["spi_in"] for s in n1.ctl_json("sas")["sas"] if s["child"] == "pg"}
    assert pg and pg <= before
    r = n1.ctl_json("reload")
    assert r["changes"] == []


def test_sigterm_clean_exit_and_state_file(pair):
    n1, n2 = pair
    n1.start()
    n2.start()
    n1.ctl("up", "host2")
    assert n1.stop() == 0
    assert not os.path.exists(n1.socket)
    st = os.stat(n1.state_file)
    assert stat.S_IMODE(st.st_mode) == 0o600
    state = json.loads(n1.state_file.read_text())
    assert len(state["sadb"]["sas"]) >= 1
    assert "stopped" in n1.log()


def test_restart_with_state_file_renegotiates(pair):
    n1, n2 = pair
    n1.start()
    n2.start()
    n1.ctl("up", "host2")
    old = {s["spi_in"] for s in n2.ctl_json("sas")["sas"]}
    assert n1.stop() == 0
    n1.start()
    deadline = time.monotonic() + 15
    new = set()
    while time.monotonic() < deadline:
        s1 = n1.ctl_json("sas")["sas"]
        s2 = n2.ctl_json("sas")["sas"]
        new = {s["spi_in"] for s in s2}
        if s1 and s2 and not (new & old) and len(s1) == len(s2):
            break
        time.sleep(0.1)
    assert new and not (new & old), "the survivor kept SAs of the old epoch"
    assert "state-restored" in n1.log()
    assert_matching(n1.ctl_json("sas")["sas"], n2.ctl_json("sas")["sas"])


def test_kinit_then_connect(pair, tmp_path):
    n1, n2 = pair
    n1.start()
    n2.start()
    cc = f"FILE:{tmp_path}/alice.ccache"
    n1.realm.kinit("alice", ccache=cc)
    r = n1.ctl("up", "host2/pg", "--as-user", env={"KRB5CCNAME": cc})
    assert "established" in r.stdout
    assert_matching(n1.ctl_json("sas")["sas"], n2.ctl_json("sas")["sas"])
    assert "alice@KINK.TEST" in n2.log()
    assert "alice@KINK.TEST (user)" in n1.ctl("sas").stdout  # whose SA it is, locally
    assert "alice@KINK.TEST" in n2.ctl("sas").stdout  # and who brought it up, remotely


def test_user_not_allowed_is_refused(pair, tmp_path):
    n1, n2 = pair
    n1.start()
    n2.start()
    cc = f"FILE:{tmp_path}/bob.ccache"
    n1.realm.kinit("bob", ccache=cc)
    r = n1.ctl("up", "host2/pg", "--as-user", "--timeout", "10", env={"KRB5CCNAME": cc},
               check=False)
    assert r.returncode == 1
    assert n2.ctl_json("sas")["sas"] == []
    assert "bob@KINK.TEST" in n2.log()
    failure = n1.ctl_json("peers")["peers"][0]["last_failure"]
    assert failure["child"] == "pg" and "refused" in failure["message"]
    assert "refused" in n1.ctl("peers").stdout


def test_check_config_cli(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[daemon]\nbackend = "pfkey"\nkeytab = "/nonexistent"\n')
    r = subprocess.run([str(BIN / "kinkd"), "--check-config", str(bad)], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert f"{bad}:3: daemon.keytab: keytab /nonexistent does not exist" in r.stderr
    bad.write_text('[daemon]\nkeytab = "/dev/null"\nbackend = "pfkey"\n')
    r = subprocess.run([str(BIN / "kinkd"), "--check-config", str(bad)], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert f"{bad}:3: daemon.backend: unknown backend 'pfkey'" in r.stderr
    for prog in ("kinkd", "kinkctl"):
        h = subprocess.run([str(BIN / prog), "--help"], capture_output=True, text=True)
        assert h.returncode == 0 and "usage" in h.stdout


def test_ipv6_json_logs_and_metrics_endpoint(realm, tmp_path):
    """Two daemons over IPv6 loopback, JSON log lines, Prometheus over TCP."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    mport = free_udp_port()
    n1 = Node(H1, "::1", port, tmp_path / "h1", realm)
    n2 = Node(H2, "::1", port + 1, tmp_path / "h2", realm)
    for n in (n1, n2):
        n.directory.mkdir()
    srv = [dict(child(), local_ts=["dynamic[tcp/5432]"], remote_ts=["dynamic"])]
    write_config(n1, [{"name": "host2", "address": f"[::1]:{port + 1}", "principal": realm.service(H2),
                       "child": [child()]}],
                 daemon_extra=f'log_format = "json"\nmetrics_listen = "127.0.0.1:{mport}"')
    write_config(n2, [{"name": "host1", "address": f"[::1]:{port}", "principal": realm.service(H1),
                       "child": srv}])
    try:
        n1.start()
        n2.start()
        n1.ctl("up", "host2")
        assert_matching(n1.ctl_json("sas")["sas"], n2.ctl_json("sas")["sas"])
        lines = [json.loads(x) for x in n1.log().splitlines() if x.startswith("{")]
        events = {x["event"] for x in lines}
        assert {"started", "sa-established"} <= events
        est = next(x for x in lines if x["event"] == "sa-established")
        assert est["peer"] == "host2" and est["level"] == "info"
        with socket.create_connection(("127.0.0.1", mport), timeout=5) as c:
            c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            body = b""
            while chunk := c.recv(65536):
                body += chunk
        assert body.startswith(b"HTTP/1.0 200 OK")
        assert b"kinkd_negotiations_succeeded_total 1" in body
    finally:
        for n in (n1, n2):
            n.stop()


def test_monitor_streams_events(pair):
    """kinkctl monitor: SA up and down (with hex SPIs) and a failure with its reason arrive
    as JSON lines while they happen; the daemon forgets the subscriber when it goes."""
    n1, n2 = pair
    n1.start()
    n2.start()
    mon = subprocess.Popen([str(BIN / "kinkctl"), "--socket", n1.socket, "monitor", "--json"],
                           stdout=subprocess.PIPE, text=True, env=n1.env())
    text = subprocess.Popen([str(BIN / "kinkctl"), "--socket", n1.socket, "monitor",
                             "--count", "1"], stdout=subprocess.PIPE, text=True, env=n1.env())
    try:
        deadline = time.monotonic() + 10
        while n1.ctl_json("status")["daemon"]["monitors"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        n1.ctl("up", "host2")
        n1.ctl("down", "host2")
        n2.stop()
        n1.ctl("up", "host2", "--timeout", "10", check=False)  # nobody answers: fails
        events = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "negotiation-failed" not in [e["event"] for e in events]:
            line = mon.stdout.readline()
            if not line:
                break
            events.append(json.loads(line))
        kinds = [e["event"] for e in events]
        assert "sa-established" in kinds and "sa-deleted" in kinds and "negotiation-failed" in kinds
        up = events[kinds.index("sa-established")]
        assert up["peer"] == "host2" and up["child"] == "pg"
        assert re.fullmatch(r"0x[0-9a-f]{8}", up["spi_in"]), up
        failed = events[kinds.index("negotiation-failed")]
        assert failed["reason"] and failed["peer"] == "host2"
        assert text.wait(10) == 0
        assert re.match(r"\d\d:\d\d:\d\d negotiation-started host2/pg: ", text.stdout.read())
    finally:
        mon.kill()
        mon.wait()
        text.kill()
        text.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and n1.ctl_json("status")["daemon"]["monitors"]:
        time.sleep(0.1)
    assert n1.ctl_json("status")["daemon"]["monitors"] == 0


def test_failures_are_actionable(pair):
    """Issue 12: a proposal mismatch names the offer on both sides (the refusing daemon's log
    and ``kinkctl up``); a wrong peer principal is ``principal-unknown`` with a hint, not GSS
    text; metrics labels are stable names, present at 0 before any failure."""
    n1, n2 = pair
    n1.configure([child(proposals=("aes128gcm16-modp2048",))],
                 [child(server=True, proposals=("aes256-sha256",))])
    n1.start()
    n2.start()
    m = n1.ctl("metrics").stdout
    assert 'kinkd_negotiations_failed_total{reason="no-proposal-chosen"} 0' in m
    assert 'kinkd_kdc_failures_total{reason="principal-unknown"} 0' in m
    r = n1.ctl("up", "host2/pg", "--timeout", "20", check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "NO_PROPOSAL_CHOSEN" in out, out
    assert "we offered esp aes128gcm16-modp2048 (transport)" in out, out
    log2 = n2.log()
    assert "offered esp aes128gcm16-modp2048 (transport)" in log2, log2
    assert "local policy of child pg: esp aes256-sha256 (transport)" in log2, log2
    assert "no common transform" in log2
    assert n1.ctl_json("stats")["counters"]["negotiations.failed.no-proposal-chosen"] == 1
    assert n2.ctl_json("stats")["counters"]["errors.sent.no-proposal-chosen"] == 1
    assert "reason=no-proposal-chosen" in n1.log()

    n1.stop()
    wrong = f"kink/host9.kink.test@{n1.realm.realm}"
    n1.configure(extra1={"principal": wrong})
    n1.start()
    r = n1.ctl("up", "host2/pg", "--timeout", "20", check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert f"principal-unknown: the KDC does not know {wrong} (check the peer's principal" \
        in out, out
    assert "Major" not in out and "GSS" not in out
    assert "reason=principal-unknown" in n1.log()
    # the library's own text only at debug level
    assert re.search(r"debug kdc-error reason=principal-unknown msg=.*not found in Kerberos",
                     n1.log())
    m = n1.ctl("metrics").stdout
    assert 'kinkd_kdc_failures_total{reason="principal-unknown"} 1' in m, m
    assert "CredentialsError" not in m and not re.search(r'reason="[^"]*\d+"', m)
