"""Daemon stop and restart in a real kernel: what stays in ``ip xfrm`` and what goes."""

from __future__ import annotations

from tests.kernel import packets
from tests.kernel.conftest import ctl, record

GCM = "aes128gcm16"


def _kernel(ns: str) -> tuple[set[int], str]:
    return {s.spi for s in packets.xfrm_states(ns)}, packets.xfrm_policies(ns, sockets=True)


def test_shutdown_with_delete_leaves_nothing(pair):
    """on_shutdown = "delete": SIGTERM with SAs up deletes them with the peer; neither
    kernel keeps a state or a policy (the stopped daemon's socket policies go with it)."""
    pair.configure({"name": "app", "esp_proposals": [GCM]},
                   daemon_extra='on_shutdown = "delete"')
    pair.start()
    assert pair.n1.ctl("up", "host2").returncode == 0
    assert len(packets.xfrm_states(pair.ns1)) == 2 and len(packets.xfrm_states(pair.ns2)) == 2
    assert pair.n1.stop() == 0
    spis1, pol1 = _kernel(pair.ns1)
    spis2, pol2 = _kernel(pair.ns2)
    assert spis1 == set() and pol1 == "", pol1
    assert spis2 == set(), packets.ip_netns(pair.ns2, "xfrm", "state")
    assert packets.xfrm_policies(pair.ns2) == ""  # host2 still runs: its bypass only
    assert pair.n2.stop() == 0
    assert _kernel(pair.ns2) == (set(), "")
    record("shutdown-delete", states_left=0, policies_left=0)


def test_restart_cleans_leftovers_and_renegotiates(pair):
    """Default on_shutdown (keep): the kernel keeps the SAs while kinkd is down; at its next
    start kinkd (new epoch) removes them and renegotiates, and traffic flows on new SAs."""
    pair.configure({"name": "app", "esp_proposals": [GCM], "start": "start"})
    pair.start()
    pair.echo_server()
    pair.n1.ctl("up", "host2")  # "start" children come up by themselves; make sure
    (old,) = ctl(pair.n1, "sas")["sas"]
    old_spis = {int(old["spi_in"], 16), int(old["spi_out"], 16)}
    assert pair.n1.stop() == 0
    kept, _ = _kernel(pair.ns1)
    assert kept == old_spis  # kept across the stop: traffic keeps flowing meanwhile
    assert pair.traffic("udp", count=5)["received"] == 5
    pair.n1.start(wait=False)
    pair.wait_ready(pair.n1)
    import time

    deadline = time.monotonic() + 60
    sas = []
    while time.monotonic() < deadline:
        sas = [s for s in ctl(pair.n1, "sas")["sas"] if s["state"] == "mature"]
        spis1, _ = _kernel(pair.ns1)
        if sas and not (spis1 & old_spis):
            break
        time.sleep(0.3)
    assert sas, pair.n1.log()[-3000:]
    new_spis = {int(sas[0]["spi_in"], 16), int(sas[0]["spi_out"], 16)}
    assert _kernel(pair.ns1)[0] == new_spis, packets.ip_netns(pair.ns1, "xfrm", "state")
    assert not (_kernel(pair.ns2)[0] & old_spis)  # the peer dropped ours too (new epoch)
    with pair.capture("restart") as cap:
        t = pair.traffic("udp", count=20)
    assert t["received"] == 20, t
    assert set(cap.capture.esp_by_spi()) == new_spis, cap.capture.summary()
    record("restart", old=sorted(map(hex, old_spis)), new=sorted(map(hex, new_spis)),
           traffic=t)
