"""SA life cycle in a real kernel: trap (ACQUIRE), rekey under traffic, kernel byte and
time expiry (soft: rekey; hard: removal).

As in test_esp: asserted on the wire (captures) and the kernel (``ip -s xfrm state``,
``/proc/net/xfrm_stat``), kinkd's own view only to learn the negotiated SPIs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time

from tests.kernel import packets
from tests.kernel.conftest import A1, A2, ctl, record

GCM = "aes128gcm16"


def _sas(node) -> list[dict]:
    return ctl(node, "sas")["sas"]


def _wait(pred, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _kernel_spis(ns: str) -> set[int]:
    return {s.spi for s in packets.xfrm_states(ns)}


def test_trap_acquire_create_then_traffic_flows(pair):
    """start = "trap": only policies at first; the first packet makes the kernel ACQUIRE,
    kinkd negotiates, and the traffic then flows as ESP."""
    pair.configure({"name": "app", "esp_proposals": [GCM], "start": "trap"})
    pair.start()
    pair.echo_server()
    pol = packets.xfrm_policies(pair.ns1)
    assert f"src {A1}/32 dst {A2}/32" in pol and "tmpl" in pol, pol
    assert packets.xfrm_states(pair.ns1) == [] and packets.xfrm_states(pair.ns2) == []
    with pair.capture("trap") as cap:
        t0 = time.monotonic()
        first = pair.traffic("udp", count=1, wait=0.5)  # the trigger
        _wait(lambda: len(_sas(pair.n1)) == 1 and len(_sas(pair.n2)) == 1, 30, "the trap's SAs")
        ready = time.monotonic() - t0
        then = pair.traffic("udp", count=20, rate=50)
    (s1,) = _sas(pair.n1)
    spi_out, spi_in = int(s1["spi_out"], 16), int(s1["spi_in"], 16)
    assert then["received"] == then["sent"] == 20, then
    assert _kernel_spis(pair.ns1) == {spi_out, spi_in} == _kernel_spis(pair.ns2)
    c = cap.capture
    seen = c.esp_by_spi()
    assert set(seen) == {spi_out, spi_in} and seen[spi_out] == first["received"] + 20, (
        c.summary())
    assert c.cleartext() == [] and c.contains(b"CLEARTEXT-MARKER") == 0, c.summary()
    acquires = ctl(pair.n1, "stats")["counters"].get("kernel.acquires", 0)
    assert acquires >= 1
    record("trap", trigger=first, sas_after_s=round(ready, 2), traffic=then, esp_frames=dict(seen),
           acquires=acquires, spi_out=s1["spi_out"], spi_in=s1["spi_in"])


def test_rekey_under_continuous_traffic_loses_nothing(pair, tmp_path):
    """200 datagrams/s (each echoed back) across a rekey: none lost, the new SAs carry the
    traffic, the old ones leave the kernel."""
    pair.configure({"name": "app", "esp_proposals": [GCM], "lifetime": "60s",
                    "rekey_time": "30s"})
    pair.start()
    pair.echo_server()
    assert pair.n1.ctl("up", "host2").returncode == 0
    (old,) = _sas(pair.n1)
    old_spis = {int(old["spi_in"], 16), int(old["spi_out"], 16)}
    stop = tmp_path / "stop"
    out = tmp_path / "traffic.json"
    with pair.capture("rekey") as cap:
        with open(out, "w") as f:
            proc = pair.bed.popen(pair.ns1, pair.traffic_argv(
                "udp", count=200 * 120, rate=200, wait=3) + ["--until-file", str(stop)],
                stdout=f)
        new = _wait(lambda: [s for s in _sas(pair.n1) if s["state"] == "mature"
                             and int(s["spi_out"], 16) not in old_spis], 75, "a rekey")[0]
        new_spis = {int(new["spi_in"], 16), int(new["spi_out"], 16)}
        # the old SAs leave both kernels; traffic goes on a little on the new ones
        _wait(lambda: _kernel_spis(pair.ns1) == new_spis and _kernel_spis(pair.ns2) == new_spis,
              30, "the old SAs to leave the kernel")
        time.sleep(2)
        stop.touch()
        assert proc.wait(60) == 0
    t = json.loads(out.read_text())
    assert t["sent"] > 1000 and t["lost"] == [] and t["received"] == t["sent"], (
        {k: v for k, v in t.items() if k != "lost"}, t["lost"][:20])
    c = cap.capture
    seen = c.esp_by_spi()
    assert set(seen) == old_spis | new_spis, c.summary()
    assert sum(seen.values()) == 2 * t["sent"], (sum(seen.values()), t["sent"])
    assert c.cleartext() == [], c.cleartext()[:5]
    for ns in (pair.ns1, pair.ns2):
        assert not pair.kernel_errors(ns), (ns, pair.kernel_errors(ns))
    record("rekey-under-traffic", rate=200, sent=t["sent"], received=t["received"],
           lost=len(t["lost"]), seconds=t["seconds"],
           esp_frames={hex(k): v for k, v in seen.items()},
           old=[old["spi_out"], old["spi_in"]], new=[new["spi_out"], new["spi_in"]])


def test_kernel_soft_byte_expiry_drives_the_rekey(pair):
    """life_bytes: the kernel counts the bytes and sends a soft EXPIRE; kinkd rekeys long
    before any time limit (the lifetime is 1 h)."""
    pair.configure({"name": "app", "esp_proposals": [GCM], "life_bytes": "24K"})
    pair.start()
    pair.echo_server()
    assert pair.n1.ctl("up", "host2").returncode == 0
    (old,) = _sas(pair.n1)
    old_out = int(old["spi_out"], 16)
    # the initiator's SAs get a soft limit (randomized below the hard one), the responder's
    # only the hard one: the initiator rekeys (RFC 4430 3.6)
    softs = {}
    for tag, ns in (("host1", pair.ns1), ("host2", pair.ns2)):
        for ksa in packets.xfrm_states(ns):
            assert "hard 24576(bytes)" in ksa.text, ksa.text
            m = re.search(r"soft (\d+)\(bytes\)", ksa.text)  # responders: soft (INF)
            if m:
                softs[f"{tag}:{ksa.spi:#010x}"] = int(m[1])
    soft = min(softs.values())
    assert 0 < soft < 24576, softs
    # each datagram counts 33 bytes (its UDP payload and header) on the SA: the soft limit
    # falls after about 714 of them, the hard one after 745; 1000 go out at 50/s
    with pair.capture("byte-expiry") as cap:
        t = pair.traffic("udp", count=1000, rate=50, wait=3)
    sas = _sas(pair.n1)
    assert [s for s in sas if int(s["spi_out"], 16) != old_out], (sas, pair.n1.log()[-3000:])
    (new,) = sas
    new_out = int(new["spi_out"], 16)
    seen = cap.capture.esp_by_spi()
    per_packet = 33
    # the old outbound SA carried traffic up to its soft limit, not beyond its hard one
    assert soft <= seen[old_out] * per_packet <= 24576, (seen, softs)
    assert seen[old_out] + seen[new_out] == t["sent"], seen
    assert t["received"] >= t["sent"] - 5, t  # at most the packets around the switch-over
    assert old_out not in _kernel_spis(pair.ns1) and old_out not in _kernel_spis(pair.ns2)
    counters = ctl(pair.n1, "stats")["counters"]
    record("kernel-soft-byte-expiry", soft_limits_bytes=softs, new_initiator=new["initiator"], hard_limit_bytes=24576,
           sent=t["sent"], received=t["received"], lost=len(t["lost"]),
           old_spi_out=old["spi_out"], old_sa_packets=seen[old_out], new_spi_out=new["spi_out"],
           new_sa_packets=seen[new_out],
           counters={k: v for k, v in counters.items() if "expire" in k or "rekey" in k})


@contextlib.contextmanager
def _frozen(node):
    """The node's kinkd stopped (SIGSTOP) inside the block: it neither answers KINK nor
    reads the kernel's events; its kernel goes on alone."""
    os.kill(node.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)


def _expires(node) -> tuple[int, int]:
    c = ctl(node, "stats")["counters"]
    return c.get("kernel.expires-soft", 0), c.get("kernel.expires-hard", 0)


def test_kernel_hard_byte_expiry_removes_the_sas(pair):
    """host2's kinkd is frozen, so the rekey that host1's soft limit asks for cannot happen:
    at the hard byte limit the kernels delete the SAs themselves (host2's while its kinkd
    is frozen), the traffic stops, and each kinkd drops the pair on the hard EXPIRE."""
    pair.configure({"name": "app", "esp_proposals": [GCM], "life_bytes": "24K"})
    pair.start()
    pair.echo_server()
    assert pair.n1.ctl("up", "host2").returncode == 0
    (old,) = _sas(pair.n1)
    old_spis = {int(old["spi_in"], 16), int(old["spi_out"], 16)}
    old_out = int(old["spi_out"], 16)
    old_in = int(old["spi_in"], 16)  # host2's outbound SA
    with _frozen(pair.n2):
        with pair.capture("hard-byte-expiry") as cap:
            t = pair.traffic("udp", count=1000, rate=100, wait=2)
        _wait(lambda: not (_kernel_spis(pair.ns1) & old_spis), 30, "host1's kernel to drop the SAs")
        _wait(lambda: not [s for s in _sas(pair.n1) if int(s["spi_out"], 16) == old_out], 30,
              "host1's kinkd to drop the pair")
        soft1, hard1 = _expires(pair.n1)
        # fail closed: the child's policies stay without SAs (traffic waits for an ACQUIRE'd
        # negotiation; it never leaves in the clear, see the capture below)
        assert f"src {A1}/32 dst {A2}/32" in packets.xfrm_policies(pair.ns1)
        # the kernel checks a byte limit when the next packet uses the SA: host2's outbound
        # SA is at its limit (745 echoes) and goes with host2's next datagram, kinkd frozen
        assert old_in in _kernel_spis(pair.ns2)
        late = json.loads(pair.bed.run(pair.ns2, pair.traffic_argv(
            "udp", to=A1, count=1, wait=0.2), timeout=60).stdout)
        assert late["received"] == 0
        assert old_in not in _kernel_spis(pair.ns2), packets.ip_netns(pair.ns2, "xfrm", "state")
    # 33 octets per datagram count on the SA: the kernel passes them while the count is
    # below 24576, i.e. 745 datagrams, and refuses the rest (no SA: XfrmOutNoStates)
    seen = cap.capture.esp_by_spi()
    assert 700 < seen[old_out] <= 745, seen
    # the first refused datagram fails in sendto (EINVAL), the rest wait for an SA (ACQUIRE)
    assert t["received"] <= seen[old_out] < t["sent"] + t["send_errors"] == 1000, t
    assert cap.capture.cleartext() == [], cap.capture.summary()
    assert soft1 >= 1 and hard1 >= 1, (soft1, hard1)
    _wait(lambda: not [s for s in _sas(pair.n2) if int(s["spi_in"], 16) == old_out], 30,
          "host2's kinkd to drop the pair once thawed")
    _wait(lambda: not (_kernel_spis(pair.ns2) & old_spis), 30, "host2's inbound SA to go too")
    _, hard2 = _expires(pair.n2)
    assert hard2 >= 1, ctl(pair.n2, "stats")["counters"]
    assert pair.n1.ctl("down", "host2").returncode == 0  # a deliberate end releases them
    _wait(lambda: packets.xfrm_policies(pair.ns1) == "", 30, "kinkctl down to remove the policies")
    record("kernel-hard-byte-expiry", sent=t["sent"], received=t["received"],
           esp_on_old_sa=seen[old_out], hard_limit_bytes=24576,
           host1_expires={"soft": soft1, "hard": hard1}, host2_hard_expires=hard2)


def test_kernel_hard_time_expiry_removes_the_sas(pair):
    """lifetime 60 s (rekey at 30 s): with host2's kinkd frozen from the start no rekey
    happens, and host2's kernel deletes the SAs at the hard time limit by itself; host2's
    kinkd learns it from the kernel's EXPIRE once thawed. (The soft time limit is kinkd's own randomized
    rekey timer, not the kernel's: see isakmp/kernel/xfrm.py.)"""
    pair.configure({"name": "app", "esp_proposals": [GCM], "lifetime": "60s",
                    "rekey_time": "30s"})
    pair.start()
    assert pair.n1.ctl("up", "host2").returncode == 0
    t0 = time.monotonic()
    (old,) = _sas(pair.n1)
    old_spis = {int(old["spi_in"], 16), int(old["spi_out"], 16)}
    for ns in (pair.ns1, pair.ns2):
        for ksa in packets.xfrm_states(ns):
            assert re.search(r"expire add: soft 0\(sec\), hard 60\(sec\)", ksa.text), ksa.text
    with _frozen(pair.n2):
        _wait(lambda: not (_kernel_spis(pair.ns2) & old_spis), 90, "host2's kernel to expire the SAs",
              interval=0.5)
        gone2 = time.monotonic() - t0
        # host1's kinkd gave up on the peer earlier (its rekey and STATUS unanswered: "peer
        # dead") and removed them itself, keeping the policies (fail closed)
        _wait(lambda: not (_kernel_spis(pair.ns1) & old_spis), 30, "host1's SAs to go")
        assert f"src {A1}/32 dst {A2}/32" in packets.xfrm_policies(pair.ns1)
    assert 55 <= gone2 <= 75, gone2
    _wait(lambda: not [s for s in _sas(pair.n2) if int(s["spi_in"], 16) in old_spis], 30,
          "host2's kinkd to drop the pair once thawed")
    _, hard2 = _expires(pair.n2)
    assert hard2 >= 1, ctl(pair.n2, "stats")["counters"]
    assert not [s for s in _sas(pair.n1) if int(s["spi_out"], 16) in old_spis]
    record("kernel-hard-time-expiry", lifetime=60, host2_gone_after_s=round(gone2, 1),
           host2_hard_expires=hard2)
