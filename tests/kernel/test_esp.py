"""kinkd's SAs carry traffic in a real kernel with ESP (run inside the VM, see conftest).

Every proof asserts on what the kernel and the wire show: frames captured on host1's
interface (ESP with the negotiated SPIs, no cleartext of the test traffic), the SAs
and counters of ``ip -s xfrm state``, ``/proc/net/xfrm_stat`` and ``ip xfrm policy``.
"""

from __future__ import annotations

import pytest

from tests.kernel import packets
from tests.kernel.conftest import A1, A1_6, A2, A2_6, S1, S2, ctl, record

TRANSFORMS = ["aes128gcm16", "aes256gcm16", "aes128-sha1", "aes256-sha256"]
MARKER = b"CLEARTEXT-MARKER"
COUNT = 20


def _spis(node) -> list[dict]:
    sas = ctl(node, "sas")["sas"]
    assert len(sas) == 1, sas
    return sas


def _up(pair) -> tuple[dict, dict]:
    r = pair.n1.ctl("up", "host2", timeout=60, check=False)
    assert r.returncode == 0, (r.stderr, pair.n1.log()[-3000:], pair.n2.log()[-3000:])
    (s1,) = _spis(pair.n1)
    (s2,) = _spis(pair.n2)
    assert s1["spi_in"] == s2["spi_out"] and s1["spi_out"] == s2["spi_in"]
    return s1, s2


def _by_spi(states: list[packets.KernelSA]) -> dict[int, packets.KernelSA]:
    return {s.spi: s for s in states}


def _check_flow(pair, s1: dict, name: str, *, to: str, src: str | None = None,
                count: int = COUNT, encap: bool | None = None) -> dict:
    """UDP and ICMP from host1 (or ``src`` behind it) to ``to``; returns the figures.
    ``encap`` (IKEv1 NAT-T): whether every ESP frame and kernel SA is UDP-encapsulated
    (4500 -> 4500); None: not checked."""
    spi_out, spi_in = int(s1["spi_out"], 16), int(s1["spi_in"], 16)
    k1_before = _by_spi(packets.xfrm_states(pair.ns1))
    k2_before = _by_spi(packets.xfrm_states(pair.ns2))
    with pair.capture(name) as cap:
        udp = pair.traffic("udp", to=to, src=src, count=count)
        icmp = pair.traffic("ping", to=to, src=src, count=count)
    c = cap.capture
    assert udp["received"] == udp["sent"] == count, udp
    assert icmp["received"] == icmp["sent"] == count, icmp
    seen = c.esp_by_spi()
    # 2 * count requests out, 2 * count replies back, each in its own ESP frame
    assert seen[spi_out] == 2 * count and seen[spi_in] == 2 * count, c.summary()
    assert set(seen) == {spi_out, spi_in}, seen
    if encap is not None:
        esp = c.esp()
        assert {p.encap for p in esp} == {encap}, c.summary()
        if encap:
            assert {(p.sport, p.dport) for p in esp} == {(4500, 4500)}, c.summary()
    assert c.cleartext() == [], c.cleartext()[:5]
    assert c.contains(MARKER) == 0
    inner = [p for p in c.packets if p.src.startswith("198.19.") or p.dst.startswith("198.19.")]
    assert inner == [], inner[:5]  # tunnel mode: the subnets' addresses never on the wire
    k1 = _by_spi(packets.xfrm_states(pair.ns1))
    k2 = _by_spi(packets.xfrm_states(pair.ns2))
    sent = k1[spi_out].packets - k1_before[spi_out].packets
    got = k2[spi_out].packets - k2_before[spi_out].packets
    back = k2[spi_in].packets - k2_before[spi_in].packets
    back_got = k1[spi_in].packets - k1_before[spi_in].packets
    assert sent == got == back == back_got == 2 * count, (sent, got, back, back_got)
    for k in (k1, k2):
        for sa in k.values():
            assert sa.integrity_failed == 0 and sa.replay == 0, sa.text
            if encap is not None:
                assert sa.encap == ((4500, 4500) if encap else None), sa.text
    for ns in (pair.ns1, pair.ns2):
        bad = pair.kernel_errors(ns)
        assert not bad, (ns, bad)
    return {"udp": udp, "icmp": icmp, "esp_frames": dict(seen), "kernel_packets_out": sent}


def _check_keys(pair) -> None:
    """The kernel's keys and algorithms are the ones kinkd negotiated (kinkctl sas --show-keys)."""
    for node, ns in ((pair.n1, pair.ns1), (pair.n2, pair.ns2)):
        (sa,) = ctl(node, "sas", show_keys=True)["sas"]
        k = _by_spi(packets.xfrm_states(ns))
        for d in ("in", "out"):
            ksa = k[int(sa[f"spi_{d}"], 16)]
            keys = sa["keys"][d]
            algs = ksa.algorithms
            if "gcm" in sa["transform"]:
                name, key, icv = algs["aead"]
                assert name == "rfc4106(gcm(aes))" and icv == 128, ksa.text
                assert key == keys["encryption"] and keys["integrity"] == "", ksa.text
                assert len(key) // 2 == int(sa["transform"][3:6]) // 8 + 4  # key + 4-octet salt
            else:
                name, key, _ = algs["enc"]
                assert name == "cbc(aes)" and key == keys["encryption"], ksa.text
                aname, akey, trunc = algs["auth-trunc"]
                want = {"sha1": ("hmac(sha1)", 96), "sha256": ("hmac(sha256)", 128)}[
                    sa["transform"].split("-")[1]]
                assert (aname, trunc) == want and akey == keys["integrity"], ksa.text


def _check_empty(pair, stopped: bool = False) -> None:
    """No SA and no policy left (while kinkd runs, its sockets' bypass policies stay)."""
    for ns in (pair.ns1, pair.ns2):
        assert packets.xfrm_states(ns) == [], packets.ip_netns(ns, "xfrm", "state")
        pol = packets.xfrm_policies(ns, sockets=stopped)
        assert pol == "", pol


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_transport_ipv4(pair, transform):
    pair.configure({"name": "app", "esp_proposals": [transform]})
    pair.start()
    pair.echo_server()
    s1, _ = _up(pair)
    assert s1["transform"] == transform and s1["mode"] == "transport"
    k1 = packets.xfrm_states(pair.ns1)
    assert {(s.src, s.dst, s.mode) for s in k1} == {(A1, A2, "transport"), (A2, A1, "transport")}, (
        packets.ip_netns(pair.ns1, "-s", "xfrm", "state"), pair.n1.log()[-3000:])
    pol = packets.xfrm_policies(pair.ns1)
    assert f"src {A1}/32 dst {A2}/32" in pol and "dir out" in pol and "dir in" in pol
    figures = _check_flow(pair, s1, f"transport-{transform}", to=A2)
    _check_keys(pair)
    record(f"transport-ipv4-{transform}", spi_out=s1["spi_out"], spi_in=s1["spi_in"], **figures)
    # DELETE: both kernels forget the SAs and policies
    r = pair.n1.ctl("down", "host2")
    assert r.returncode == 0, r.stderr
    _check_empty(pair)
    assert pair.stop() == [0, 0]
    _check_empty(pair, stopped=True)


@pytest.mark.parametrize("transform", ["aes128gcm16", "aes256-sha256"])
def test_tunnel_ipv4(pair, transform):
    """Tunnel mode between 198.19.1.0/24 (behind host1) and 198.19.2.0/24 (behind host2)."""
    pair.subnets()
    pair.configure({"name": "net", "mode": "tunnel", "esp_proposals": [transform],
                    "local_ts": ["198.19.1.0/24"], "remote_ts": ["198.19.2.0/24"]},
                   child2={"name": "net", "mode": "tunnel", "esp_proposals": [transform],
                           "local_ts": ["198.19.2.0/24"], "remote_ts": ["198.19.1.0/24"]})
    pair.start()
    pair.echo_server()
    s1, _ = _up(pair)
    assert s1["mode"] == "tunnel"
    k1 = packets.xfrm_states(pair.ns1)
    assert {(s.src, s.dst, s.mode) for s in k1} == {(A1, A2, "tunnel"), (A2, A1, "tunnel")}, (
        packets.ip_netns(pair.ns1, "-s", "xfrm", "state"))
    pol = packets.xfrm_policies(pair.ns2)
    assert "src 198.19.1.0/24 dst 198.19.2.0/24" in pol and "dir fwd" in pol, pol
    figures = _check_flow(pair, s1, f"tunnel-{transform}", to=S2, src=S1)
    _check_keys(pair)
    record(f"tunnel-ipv4-{transform}", spi_out=s1["spi_out"], spi_in=s1["spi_in"], **figures)
    assert pair.n1.ctl("down", "host2").returncode == 0
    _check_empty(pair)
    assert pair.stop() == [0, 0]
    _check_empty(pair, stopped=True)


@pytest.mark.parametrize("transform", ["aes256gcm16", "aes128-sha1"])
def test_transport_ipv6(pair, transform):
    pair.configure({"name": "app6", "esp_proposals": [transform]}, v6=True)
    pair.start()
    pair.echo_server()
    s1, _ = _up(pair)
    k1 = packets.xfrm_states(pair.ns1)
    assert {(s.src, s.dst, s.mode) for s in k1} == {(A1_6, A2_6, "transport"),
                                                    (A2_6, A1_6, "transport")}, (
        packets.ip_netns(pair.ns1, "-s", "xfrm", "state"))
    figures = _check_flow(pair, s1, f"transport6-{transform}", to=A2_6)
    _check_keys(pair)
    record(f"transport-ipv6-{transform}", spi_out=s1["spi_out"], spi_in=s1["spi_in"], **figures)
    assert pair.n1.ctl("down", "host2").returncode == 0
    _check_empty(pair)
    assert pair.stop() == [0, 0]
    _check_empty(pair, stopped=True)
