"""IKEv1 SAs carry traffic in a real kernel with ESP (run inside the VM, see conftest).

kinkd negotiates over IKEv1 (Main + Quick Mode, PSK) and installs the SAs through the XFRM
backend, plain ESP or UDP-encapsulated (NAT-T, RFC 3947/3948; forced here with ``encap =
true`` since the bed has no NAT). The proofs assert on the wire (captures on host1's
bridge port: ESP or ESP-in-UDP frames with the negotiated SPIs, no cleartext) and on the
kernels (``ip -s xfrm state``: the encapsulation template, packet counters, keys equal
kinkd's; ``/proc/net/xfrm_stat``: no error counter rose). Against strongSwan's charon with
its kernel-netlink backend, both kernels carry the traffic.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.daemons import write_config
from tests.kernel import packets
from tests.kernel.conftest import A1, A2, S1, S2, ctl, record
from tests.kernel.test_esp import _by_spi, _check_empty, _check_flow, _check_keys
from tests.support.netns import wait_for

PSK = "kinkd-kernel-bed-ikev1-psk"
IKE = "aes128-sha256-ecp256"


def _psk(pair) -> str:
    p = pair.tmp / "ike.psk"
    p.write_text(PSK + "\n")
    os.chmod(p, 0o600)
    return str(p)


def _configure(pair, child1: dict, child2: dict | None, *, encap: bool) -> None:
    psk = _psk(pair)
    extra = 'backend = "xfrm"\n'
    ike = {"exchange": "ikev1", "psk_file": psk, "ike_proposals": [IKE], "dpd": "off"}
    write_config(pair.n1, [{"name": "host2", "address": A2, "encap": encap, **ike,
                            "child": [child1]}], daemon_extra=extra)
    if child2 is not None:
        c2 = dict(child2)
        c2.pop("start", None)
        write_config(pair.n2, [{"name": "host1", "address": A1, **ike, "child": [c2]}],
                     daemon_extra=extra)


CASES = [
    ("transport", False, "aes128gcm16"),
    ("transport", True, "aes256-sha256"),
    ("tunnel", True, "aes128gcm16"),
]


@pytest.mark.parametrize("mode,encap,transform", CASES)
def test_ikev1_kinkd_pair(pair, mode, encap, transform):
    """kinkd <-> kinkd over IKEv1: plain ESP, and ESP in UDP (encap = true) in transport
    and tunnel mode."""
    if mode == "tunnel":
        pair.subnets()
        c1 = {"name": "net", "mode": "tunnel", "esp_proposals": [transform],
              "local_ts": ["198.19.1.0/24"], "remote_ts": ["198.19.2.0/24"]}
        c2 = {"name": "net", "mode": "tunnel", "esp_proposals": [transform],
              "local_ts": ["198.19.2.0/24"], "remote_ts": ["198.19.1.0/24"]}
        to, src = S2, S1
    else:
        c1 = c2 = {"name": "app", "esp_proposals": [transform],
                   "local_ts": ["dynamic"], "remote_ts": ["dynamic"]}
        to, src = A2, None
    _configure(pair, c1, c2, encap=encap)
    pair.start()
    pair.echo_server()
    r = pair.n1.ctl("up", "host2", timeout=90, check=False)
    assert r.returncode == 0, (r.stderr, pair.n1.log()[-3000:], pair.n2.log()[-3000:])
    (s1,) = ctl(pair.n1, "sas")["sas"]
    (s2,) = ctl(pair.n2, "sas")["sas"]
    assert s1["exchange"] == s2["exchange"] == "ikev1"
    assert s1["spi_in"] == s2["spi_out"] and s1["spi_out"] == s2["spi_in"]
    want_mode = f"udp_encapsulated_{mode}" if encap else mode
    assert s1["mode"] == s2["mode"] == want_mode, s1
    k1 = packets.xfrm_states(pair.ns1)
    assert {(s.src, s.dst, s.mode) for s in k1} == {(A1, A2, mode), (A2, A1, mode)}, (
        packets.ip_netns(pair.ns1, "-s", "xfrm", "state"), pair.n1.log()[-3000:])
    figures = _check_flow(pair, s1, f"ikev1-{mode}-{'encap' if encap else 'esp'}-{transform}",
                          to=to, src=src, encap=encap)
    _check_keys(pair)
    record(f"ikev1-{mode}-{'encap' if encap else 'esp'}-{transform}", spi_out=s1["spi_out"],
           spi_in=s1["spi_in"], encap=encap, **figures)
    # kinkctl down: the IPsec SAs are deleted with the peer (Informational DELETE) in both
    # kernels, the policies go with them
    assert pair.n1.ctl("down", "host2", timeout=60, check=False).returncode == 0
    wait_for(lambda: not packets.xfrm_states(pair.ns1) and not packets.xfrm_states(pair.ns2),
             30, 0.2, what="SAs gone from both kernels after kinkctl down")
    _check_empty(pair)
    assert pair.stop() == [0, 0]
    _check_empty(pair, stopped=True)


def _charon_conf(encap: bool) -> str:
    return f"""\
connections {{
    kinkd {{
        version = 1
        local_addrs = {A2}
        remote_addrs = {A1}
        proposals = {IKE}
        encap = {"yes" if encap else "no"}
        dpd_delay = 0
        rekey_time = 0
        local {{
            auth = psk
            id = {A2}
        }}
        remote {{
            auth = psk
            id = {A1}
        }}
        children {{
            app {{
                local_ts = {A2}/32
                remote_ts = {A1}/32
                esp_proposals = aes128gcm16
                mode = transport
                start_action = none
                rekey_time = 0
            }}
        }}
    }}
}}
secrets {{
    ike-kinkd {{
        id-a = {A1}
        id-b = {A2}
        secret = "{PSK}"
    }}
}}
"""


@pytest.mark.parametrize("encap", [False, True])
def test_ikev1_kinkd_and_charon_kernels(pair, encap, tmp_path):
    """kinkd (host1) <-> strongSwan's charon (host2) with its kernel-netlink backend: both
    kernels hold the SAs (same SPIs, same keys: charon's are read back from its kernel) and
    carry the traffic; charon's ``encap = yes`` fakes a NAT and both sides use ESP in UDP."""
    from tests.support import strongswan as sw

    if not sw.CHARON.exists():
        pytest.skip("strongSwan's charon is not installed")
    c1 = {"name": "app", "esp_proposals": ["aes128gcm16"], "local_ts": ["dynamic"],
          "remote_ts": ["dynamic"]}
    _configure(pair, c1, None, encap=False)
    charon = sw.Charon(pair.bed, pair.ns2, Path(tmp_path) / "charon")
    charon.write_config(_charon_conf(encap), plugins=sw.KERNEL_PLUGINS)
    charon.start(timeout=60)
    try:
        charon.load()
        pair.n1.start(wait=False)
        st = pair.wait_ready(pair.n1)["daemon"]
        assert st["backend"] == "xfrm" and st["kernel"] is None, st
        pair.echo_server()
        r = pair.n1.ctl("up", "host2", timeout=90, check=False)
        assert r.returncode == 0, (r.stderr, pair.n1.log()[-3000:], charon.log())
        (s1,) = ctl(pair.n1, "sas")["sas"]
        assert s1["mode"] == ("udp_encapsulated_transport" if encap else "transport"), s1
        spi_out, spi_in = int(s1["spi_out"], 16), int(s1["spi_in"], 16)
        # charon's kernel holds the mirror image: our outbound SPI is its inbound one
        k2 = _by_spi(packets.xfrm_states(pair.ns2))
        assert set(k2) == {spi_out, spi_in}, packets.ip_netns(pair.ns2, "xfrm", "state")
        assert (k2[spi_out].src, k2[spi_out].dst) == (A1, A2)
        keys = ctl(pair.n1, "sas", show_keys=True)["sas"][0]["keys"]
        assert k2[spi_out].algorithms["aead"][1] == keys["out"]["encryption"]
        assert k2[spi_in].algorithms["aead"][1] == keys["in"]["encryption"]
        figures = _check_flow(pair, s1, f"ikev1-charon-{'encap' if encap else 'esp'}", to=A2,
                              encap=encap)
        record(f"ikev1-charon-{'encap' if encap else 'esp'}", spi_out=s1["spi_out"],
               spi_in=s1["spi_in"], encap=encap, **figures)
        # our DELETE reaches charon: its kernel forgets the SAs
        assert pair.n1.ctl("down", "host2", timeout=60, check=False).returncode == 0
        wait_for(lambda: not packets.xfrm_states(pair.ns2), 30, 0.2,
                 what="charon's kernel SAs deleted")
        assert packets.xfrm_states(pair.ns1) == []
    finally:
        if os.environ.get("KINKD_VM_XFER"):
            (Path(os.environ["KINKD_VM_XFER"]) / f"charon-{encap}.log").write_text(charon.log())
        charon.stop()
