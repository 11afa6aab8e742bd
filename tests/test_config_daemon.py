"""The configuration check with real processes: ``kinkd --check-config [--offline]``, a bad
``reload`` (the old configuration stays, the reply and the log say why, no traceback), and
``kinkctl check PEER`` between two daemons and a real KDC."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.daemons import BIN, Node, free_udp_port, write_config
from tests.test_daemon import H1, H2, child, peer_entry


def check_config(path, *extra, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kinkd"), "--check-config", str(path), *extra],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def node(realm, tmp_path):
    port = free_udp_port()
    n = Node(H1, "127.0.0.1", port, tmp_path / "h1", realm)
    n.directory.mkdir()
    other = Node(H2, "127.0.0.2", port, tmp_path / "h2", realm)
    write_config(n, [peer_entry(realm, other, [child()])])
    return n


def test_check_config_good_online(node):
    r = check_config(node.config_path, env=node.env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{node.config_path}: OK (1 peers, 1 children)"


def test_check_config_garbage_keytab(node, tmp_path):
    bad = tmp_path / "garbage.keytab"
    bad.write_bytes(b"this is not a keytab\n")
    text = node.config_path.read_text()
    node.config_path.write_text(text.replace(str(node.realm.keytab(H1)), str(bad)))
    r = check_config(node.config_path, env=node.env())
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"{node.config_path}:4: daemon.keytab: keytab {bad} is not a keytab (bad file header 7468)",
        f"kinkd: {node.config_path}: 1 error, 0 warnings"]
    # offline: the keytab is this machine's file, not looked at
    r = check_config(node.config_path, "--offline", env=node.env())
    assert r.returncode == 0, r.stderr
    assert "offline: keytab not checked" in r.stdout


def test_check_config_directory_keytab(node, tmp_path):
    d = tmp_path / "kt.d"
    d.mkdir()
    text = node.config_path.read_text()
    node.config_path.write_text(text.replace(str(node.realm.keytab(H1)), str(d)))
    r = check_config(node.config_path, env=node.env())
    assert r.returncode == 1
    assert f"{node.config_path}:4: daemon.keytab: keytab {d} is not a file (a directory)" in r.stderr
    assert check_config(node.config_path, "--offline", env=node.env()).returncode == 0
    # start-up says the same, without a traceback
    r = subprocess.run([str(BIN / "kinkd"), "--config", str(node.config_path)], env=node.env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"{node.config_path}:4: daemon.keytab: keytab {d} is not a file (a directory)" in r.stderr
    assert "Traceback" not in r.stderr


def test_check_config_wrong_principal_and_all_errors(node):
    """Online: the keytab must hold the principal; every error is listed, warnings too."""
    text = node.config_path.read_text()
    text = text.replace(f'keytab = "{node.realm.keytab(H1)}"', f'keytab = "{node.realm.keytab(H2)}"')
    text = text.replace('"aes256-sha256"', '"aes256-sha256-modp4096", "3des-sha1"')
    text = text.replace('max_tries = 4', 'max_tries = 40')
    node.config_path.write_text(text)
    r = check_config(node.config_path, env=node.env())
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[-1] == f"kinkd: {node.config_path}: 3 errors, 2 warnings"
    joined = "\n".join(lines)
    assert f"{node.config_path}:4: daemon.keytab: keytab {node.realm.keytab(H2)} has no key for " \
           f"{node.realm.service(H1)}" in joined
    assert f"{node.config_path}:12: daemon.timers.max_tries: must be between 1 and 20" in joined
    assert "peer[0].child[0].esp_proposals[1]: DH group 'modp4096' (16) is not supported" in joined
    assert "warning: peer[0].child[0].esp_proposals[2]: weak algorithm '3des'" in joined
    assert "warning: peer[0].child[0].esp_proposals[2]: weak algorithm 'sha1'" in joined
    # --offline: the keytab is not read, the rest is still checked
    r = check_config(node.config_path, "--offline", env=node.env())
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == f"kinkd: {node.config_path}: 2 errors, 2 warnings"


def test_check_config_warnings_only(node):
    text = node.config_path.read_text().replace('"aes256-sha256"', '"aes128-md5"')
    node.config_path.write_text(text)
    r = check_config(node.config_path, env=node.env())
    assert r.returncode == 0
    assert "warning: peer[0].child[0].esp_proposals[1]: weak algorithm 'md5'" in r.stderr
    assert r.stdout.strip() == f"{node.config_path}: OK (1 peers, 1 children, 1 warning)"


@pytest.fixture
def pair(realm, tmp_path):
    port = free_udp_port()
    n1 = Node(H1, "127.0.0.1", port, tmp_path / "h1", realm)
    n2 = Node(H2, "127.0.0.2", port, tmp_path / "h2", realm)
    for n in (n1, n2):
        n.directory.mkdir()
        n.extra_env["KINKD_ALLOW_TEST_KNOBS"] = "1"  # the clock test shifts h1's clock
    write_config(n1, [peer_entry(realm, n2, [child()])])
    write_config(n2, [peer_entry(realm, n1, [child(server=True)])])
    yield n1, n2
    for n in (n1, n2):
        try:
            n.stop()
        except Exception:  # noqa: BLE001
            pass


def test_reload_with_bad_config_keeps_the_old_one(pair):
    """A child without esp_proposals used to make reload drop the connection with a
    traceback in the log; now any bad config is refused, named, and the old one stays."""
    n1, n2 = pair
    n1.start()
    n2.start()
    n1.ctl("up", "host2")
    good = n1.config_path.read_text()
    # no esp_proposals: valid now (the defaults), a new child is added
    extra = ('\n[[peer.child]]\nname = "ssh"\nlocal_ts = ["dynamic"]\n'
             'remote_ts = ["dynamic[tcp/22]"]\n')
    n1.config_path.write_text(good + extra)
    r = n1.ctl_json("reload")
    assert r["changes"] == ["child host2/ssh added"] and r["warnings"] == []
    n2.config_path.write_text(n2.config_path.read_text() + extra.replace(
        'local_ts = ["dynamic"]\nremote_ts = ["dynamic[tcp/22]"]',
        'local_ts = ["dynamic[tcp/22]"]\nremote_ts = ["dynamic"]'))
    assert n2.ctl_json("reload")["changes"] == ["child host1/ssh added"]
    # broken: two errors; the reply names both, nothing changes
    bad = good + extra.replace('name = "ssh"', 'name = "ssh"\nesp_proposals = ["des-md5"]\nmode = "beet"')
    n1.config_path.write_text(bad)
    r = n1.ctl("reload", check=False)
    assert r.returncode == 1
    assert "daemon closed the connection" not in r.stderr
    assert "reload refused (2 errors in" in r.stderr and "the old configuration stays in force" in r.stderr
    assert "peer[0].child[1].mode: unknown mode 'beet'" in r.stderr
    assert "peer[0].child[1].esp_proposals[0]: 'des' (single DES) is not implemented" in r.stderr
    peers = n1.ctl_json("peers")["peers"]
    assert peers[0]["name"] == "host2"
    assert n1.ctl("up", "host2/ssh").returncode == 0  # the previous (good) config is in force
    # SIGHUP with the bad config: logged, no traceback, still running
    n1.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and n1.log().count("reload-failed") < 2:
        time.sleep(0.05)
    log = n1.log()
    assert log.count("reload-failed") == 2
    assert "unknown mode 'beet'" in log
    assert "Traceback" not in log
    assert n1.proc.poll() is None
    assert n1.ctl_json("status")["daemon"]["pid"] == n1.proc.pid


def test_kinkctl_check(pair):
    n1, n2 = pair
    n1.start()
    n2.start()
    r = n1.ctl("check", "host2")
    out = r.stdout
    assert out.splitlines()[0] == f"host2 (127.0.0.2:{n2.port}, {n1.realm.service(H2)}): OK"
    assert "ticket  ok" in out and "clock   ok" in out and "status  ok" in out
    j = n1.ctl_json("check", "host2")
    assert j["ok"] is True and j["peer"] == "host2"
    assert j["ticket"]["ok"] and j["ticket"]["server"] == n1.realm.service(H2)
    assert j["ticket"]["endtime"] > time.time()
    assert j["clock"]["ok"] and abs(j["clock"]["skew"]) < 2 and j["clock"]["max_skew"] == 300
    assert j["status"]["ok"] and j["status"]["epoch"]
    # unknown peer: an error, exit 1
    bad = n1.ctl("check", "nosuchpeer", check=False)
    assert bad.returncode == 1 and "no peer named 'nosuchpeer'" in bad.stderr
    # our clock 10 minutes behind (test knob, applied by reload): the skew is reported
    text = n1.config_path.read_text().replace("[daemon]\n", '[daemon]\ntesting = { clock_offset = "-10m" }\n', 1)
    n1.config_path.write_text(text)
    n1.ctl("reload")
    j = json.loads(n1.ctl("check", "host2", "--json", check=False).stdout)
    assert j["clock"]["ok"] is False and -602 < j["clock"]["skew"] < -598
    assert "behind the KDC's, more than the allowed 300s" in j["clock"]["error"]
    assert j["ok"] is False
    # the peer stopped: STATUS goes unanswered
    n1.config_path.write_text(text.replace('testing = { clock_offset = "-10m" }\n', ""))
    n1.ctl("reload")
    n2.stop()
    r = n1.ctl("check", "host2", "--timeout", "20", check=False)
    assert r.returncode == 1
    assert "status  FAIL" in r.stdout and "ticket  ok" in r.stdout and "clock   ok" in r.stdout
    assert "Traceback" not in n1.log()
