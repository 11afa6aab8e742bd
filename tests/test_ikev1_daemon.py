"""kinkd hosts IKEv1 beside KINK: a daemon with an IKEv1 peer (strongSwan's charon) in a
network namespace; ``kinkctl up/sas/peers/down`` work for it as for KINK peers."""

from __future__ import annotations

import contextlib
import os
import time

import pytest

from tests.daemons import Node, write_config
from tests.support import strongswan as sw
from tests.support.netns import NetnsBed
from tests.test_ikev1_strongswan import PSK, SWAN, US, _charon, _gone, _swan_conf, _swan_keys

H1 = "host1.kink.test"


@pytest.fixture
def bed():
    ok, reason = sw.can_run()
    if not ok:
        pytest.skip(reason)
    with NetnsBed("ike1d") as b:
        us, swan = b.add_namespace("us"), b.add_namespace("swan")
        link = b.link(us, swan)
        assert (link.addr_a, link.addr_b) == (US, SWAN)
        b.add_dummy(swan, "prot0", "198.19.2.1/24")
        b.ns_us, b.ns_swan = us, swan
        yield b


def test_kinkd_negotiates_with_charon_over_ikev1(bed, realm, tmp_path):
    swan = _charon(bed, tmp_path, _swan_conf(ike="aes256-sha256-ecp256",
                                             esp="aes128-sha256-modp2048"))
    psk = tmp_path / "swan.psk"
    psk.write_text(PSK + "\n")
    os.chmod(psk, 0o600)
    (tmp_path / "h1").mkdir()
    node = Node(H1, US, 910, tmp_path / "h1", realm, wrap=["ip", "netns", "exec", bed.ns_us])
    write_config(node, [{
        "name": "swan", "exchange": "ikev1", "address": SWAN, "psk_file": str(psk),
        "ike_proposals": ["aes256-sha256-ecp256"],
        "child": [{"name": "net", "local_ts": ["198.19.1.0/24"],
                   "remote_ts": ["198.19.2.0/24"], "mode": "tunnel",
                   "esp_proposals": ["aes128-sha256-modp2048"]}]}])
    node.start()
    try:
        t0 = time.monotonic()
        node.ctl("up", "swan")
        took = time.monotonic() - t0
        sas = node.ctl_json("sas", "--show-keys")["sas"]
        (sa,) = sas
        assert sa["exchange"] == "ikev1" and sa["peer"] == "swan" and sa["mode"] in (
            "udp_encapsulated_tunnel", "3")
        listing = swan.swanctl("--list-sas")
        assert sa["spi_in"][2:] in listing and sa["spi_out"][2:] in listing
        keys = _swan_keys((swan.directory / "charon.log").read_text())
        assert sa["keys"]["in"]["encryption"] in keys and sa["keys"]["out"]["integrity"] in keys
        peers = node.ctl_json("peers")["peers"]
        assert [p["exchange"] for p in peers] == ["ikev1"] and peers[0]["sas"] == 1
        print(f"kinkctl up over IKEv1 (Main Mode + Quick Mode with PFS) in {took:.2f}s")
        node.ctl("down", "swan")
        assert _gone(swan, "net") and _gone(swan, "kinkd")
        assert node.ctl_json("sas")["sas"] == [] or all(
            s["state"] != "mature" for s in node.ctl_json("sas")["sas"])
        # charon initiates towards the daemon
        swan.swanctl("--initiate", "--child", "net", "--timeout", "10")
        deadline = time.monotonic() + 5
        while not node.ctl_json("sas")["sas"] and time.monotonic() < deadline:
            time.sleep(0.1)
        (sa,) = node.ctl_json("sas")["sas"]
        assert sa["initiator"] is False and sa["exchange"] == "ikev1"
        assert "ikev1.isakmp_sa.established" in node.ctl_json("stats")["counters"]
    finally:
        node.stop()
        swan.stop()
        print(node.log()[-3000:])


def test_kinkctl_up_names_the_reason(bed, realm, tmp_path):
    """Proposal mismatch (charon's NO-PROPOSAL-CHOSEN) and a wrong pre-shared key (charon
    cannot decrypt message 5 and stays silent; charon initiating: we refuse it) each give a
    named reason in kinkctl up's output, the log and the counters."""
    swan = _charon(bed, tmp_path, _swan_conf(ike="aes256-sha384-ecp384"))
    psk = tmp_path / "swan.psk"
    psk.write_text(PSK + "\n")
    os.chmod(psk, 0o600)
    (tmp_path / "h1").mkdir()
    node = Node(H1, US, 910, tmp_path / "h1", realm, wrap=["ip", "netns", "exec", bed.ns_us])
    write_config(node, [{
        "name": "swan", "exchange": "ikev1", "address": SWAN, "psk_file": str(psk),
        "ike_proposals": ["aes128-sha256-modp2048"],
        "child": [{"name": "net", "local_ts": ["198.19.1.0/24"],
                   "remote_ts": ["198.19.2.0/24"], "mode": "tunnel",
                   "esp_proposals": ["aes128-sha256"]}]}])
    node.start()
    try:
        r = node.ctl("up", "swan", check=False)
        assert r.returncode != 0 and "NO_PROPOSAL_CHOSEN" in r.stderr, r.stderr
        # the same proposals, another key
        (swan.directory / "swanctl" / "swanctl.conf").write_text(
            _swan_conf(psk="another-key-entirely"))
        swan.swanctl("--load-all", "--noprompt")
        r = node.ctl("up", "swan", check=False)
        assert r.returncode != 0 and "pre-shared key or identity mismatch" in r.stderr, r.stderr
        with contextlib.suppress(RuntimeError):
            swan.swanctl("--initiate", "--child", "net", "--timeout", "3")
        counters = node.ctl_json("stats")["counters"]
        assert counters.get("ikev1.failed.psk-mismatch", 0) >= 1, counters
        assert "pre-shared key mismatch" in node.log()
    finally:
        node.stop()
        swan.stop()


def test_one_daemon_a_kink_peer_and_an_ikev1_peer_at_once(bed, tmp_path):
    """host1 negotiates with host2 over KINK (real KDC, in the namespace) and with charon
    over IKEv1, both at the same time, from one kinkd process."""
    import subprocess
    import sys

    from tests import realm as realmlib

    us = bed.ns_us
    bed.run(us, ["ip", "addr", "add", "198.18.1.5/32", "dev", "lo"])
    rdir = tmp_path / "realm"
    subprocess.run(["ip", "netns", "exec", us, sys.executable, str(realmlib.REALM_TOOL), "up",
                    str(rdir), "--host", H1, "--host", "host2.kink.test"], check=True,
                   capture_output=True, timeout=120)
    realm = realmlib.load(rdir)
    swan = _charon(bed, tmp_path, _swan_conf())
    psk = tmp_path / "swan.psk"
    psk.write_text(PSK + "\n")
    os.chmod(psk, 0o600)
    n1 = Node(H1, US, 910, tmp_path / "h1", realm, wrap=["ip", "netns", "exec", us])
    n2 = Node("host2.kink.test", "198.18.1.5", 910, tmp_path / "h2", realm,
              wrap=["ip", "netns", "exec", us])
    for n in (n1, n2):
        n.directory.mkdir()
    kink_child = {"name": "app", "local_ts": ["dynamic"], "remote_ts": ["dynamic"],
                  "esp_proposals": ["aes128gcm16"]}
    write_config(n1, [
        {"name": "host2", "address": "198.18.1.5:910", "principal": realm.service(n2.name),
         "child": [kink_child]},
        {"name": "swan", "exchange": "ikev1", "address": SWAN, "psk_file": str(psk),
         "child": [{"name": "net", "local_ts": ["198.19.1.0/24"],
                    "remote_ts": ["198.19.2.0/24"], "mode": "tunnel",
                    "esp_proposals": ["aes128-sha256"]}]}])
    write_config(n2, [{"name": "host1", "address": f"{US}:910",
                       "principal": realm.service(H1), "child": [kink_child]}])
    try:
        n2.start()
        n1.start()
        import concurrent.futures as cf

        with cf.ThreadPoolExecutor(2) as ex:  # both negotiations at the same time
            ups = [ex.submit(n1.ctl, "up", peer) for peer in ("host2", "swan")]
            for f in ups:
                f.result(timeout=60)
        sas = n1.ctl_json("sas")["sas"]
        assert sorted((s["peer"], s["exchange"]) for s in sas) == [
            ("host2", "kink"), ("swan", "ikev1")]
        (k,) = [s for s in sas if s["peer"] == "host2"]
        (k2,) = n2.ctl_json("sas")["sas"]
        assert (k["spi_in"], k["spi_out"]) == (k2["spi_out"], k2["spi_in"])
        (i,) = [s for s in sas if s["peer"] == "swan"]
        assert i["spi_in"][2:] in swan.swanctl("--list-sas")
        peers = {p["name"]: p["exchange"] for p in n1.ctl_json("peers")["peers"]}
        assert peers == {"host2": "kink", "swan": "ikev1"}
        n1.ctl("down", "swan")
        assert [s["peer"] for s in n1.ctl_json("sas")["sas"] if s["state"] == "mature"] == \
            ["host2"]
    finally:
        for n in (n1, n2):
            with contextlib.suppress(Exception):
                n.stop()
        swan.stop()
        realmlib.down(realm)

