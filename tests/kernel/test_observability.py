"""What an operator reads about kernel SAs, checked against the kernel itself.

* ``kinkctl dump --show-keys`` on a capture of the exchange (with the responder's keytab)
  derives exactly the keys the kernels hold (``ip -s xfrm state``);
* ``kinkctl sas`` and the metrics show the kernel's per-SA counters: bytes, packets and
  integrity failures (forged ESP packets with the SA's SPI).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.daemons import BIN
from tests.kernel import packets
from tests.kernel.conftest import A1, H2, HERE, ctl, record

GCM = "aes128gcm16"


def _by_spi(ns: str) -> dict[int, packets.KernelSA]:
    return {s.spi: s for s in packets.xfrm_states(ns)}


def _kernel_keys(ksa: packets.KernelSA) -> dict[str, str]:
    algs = ksa.algorithms
    if "aead" in algs:
        return {"encryption": algs["aead"][1], "integrity": ""}
    return {"encryption": algs["enc"][1], "integrity": algs["auth-trunc"][1]}


@pytest.mark.parametrize("transform", [GCM, "aes256-sha256"])
def test_dump_of_a_capture_derives_the_kernel_keys(pair, transform):
    pair.configure({"name": "app", "esp_proposals": [transform]})
    pair.start()
    with pair.capture(f"exchange-{transform}") as cap:
        r = pair.n1.ctl("up", "host2", timeout=60, check=False)
    assert r.returncode == 0, (r.stderr, pair.n1.log()[-3000:])
    assert len(cap.capture.control()) >= 2, cap.capture.summary()  # CREATE and REPLY
    d = subprocess.run([str(BIN / "kinkctl"), "dump", "--keytab", str(pair.realm.keytab(H2)),
                        "--show-keys", "--json", str(cap.path)],
                       capture_output=True, text=True, timeout=120)
    assert d.returncode == 0, d.stderr
    derived = {int(s["spi"], 16): s for s in json.loads(d.stdout)["sas"]}
    k1, k2 = _by_spi(pair.ns1), _by_spi(pair.ns2)
    assert set(derived) == set(k1) == set(k2) and len(derived) == 2, (derived, k1, k2)
    for spi, s in derived.items():
        assert s["transform"] == transform and "keys" in s, s
        for k in (k1, k2):
            assert _kernel_keys(k[spi]) == s["keys"], (hex(spi), k[spi].text)
            assert (k[spi].src, k[spi].dst) == (s["src"], s["dst"]), (s, k[spi].text)
    record(f"dump-keys-{transform}", sas=sorted(map(hex, derived)),
           key_octets={hex(spi): len(s["keys"]["encryption"] + s["keys"]["integrity"]) // 2
                       for spi, s in derived.items()})


def test_kernel_counters_in_kinkctl_sas_and_metrics(pair):
    pair.configure({"name": "app", "esp_proposals": [GCM]})
    pair.start()
    pair.echo_server()
    assert pair.n1.ctl("up", "host2", timeout=60).returncode == 0
    t = pair.traffic("udp", count=25)
    assert t["received"] == t["sent"] == 25, t
    (sa,) = ctl(pair.n1, "sas")["sas"]
    spi_in, spi_out = int(sa["spi_in"], 16), int(sa["spi_out"], 16)
    k1 = _by_spi(pair.ns1)
    tr = sa["traffic"]
    for d, spi in (("in", spi_in), ("out", spi_out)):
        assert tr[d]["packets"] == k1[spi].packets == 25, (tr, k1[spi].text)
        assert tr[d]["bytes"] == k1[spi].bytes > 25 * 16, (tr, k1[spi].text)
        assert tr[d]["integrity_failed"] == 0 and tr[d]["replay"] == 0, tr
    # three forged packets with host1's inbound SPI, from host2's address
    forged = json.loads(pair.bed.run(pair.ns2, [
        sys.executable, str(HERE / "traffic.py"), "forge-esp", "--to", A1, "--spi", hex(spi_in),
        "--count", "3"], timeout=60).stdout)
    assert forged["sent"] == 3
    k1 = _by_spi(pair.ns1)
    assert k1[spi_in].integrity_failed == 3, k1[spi_in].text
    assert pair.kernel_errors(pair.ns1) == {"XfrmInStateProtoError": 3}, pair.kernel_errors(pair.ns1)
    (sa,) = ctl(pair.n1, "sas")["sas"]
    tr = sa["traffic"]
    assert tr["in"]["integrity_failed"] == 3 and tr["out"]["integrity_failed"] == 0, tr
    assert tr["in"]["packets"] == k1[spi_in].packets and tr["in"]["bytes"] == k1[spi_in].bytes
    table = pair.n1.ctl("sas").stdout
    assert "3 bad" in table and f"{k1[spi_out].packets}p/{k1[spi_out].bytes}B" in table, table
    metrics = ctl(pair.n1, "metrics")["text"]
    want = {'kinkd_kernel_sa_integrity_failed{direction="in"} 3',
            f'kinkd_kernel_sa_packets{{direction="out"}} {k1[spi_out].packets}',
            f'kinkd_kernel_sa_bytes{{direction="in"}} {k1[spi_in].bytes}'}
    assert want <= set(metrics.splitlines()), [m for m in metrics.splitlines() if "kernel_sa" in m]
    record("kernel-counters", traffic=t, forged=forged["sent"], sas_json=tr,
           kernel_in={"packets": k1[spi_in].packets, "bytes": k1[spi_in].bytes,
                      "integrity_failed": k1[spi_in].integrity_failed})
