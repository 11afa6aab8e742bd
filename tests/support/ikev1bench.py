"""A first IKEv1 rate measurement against strongSwan (not yet part of ``make bench``):
``python -m tests.support.ikev1bench [N]`` (root: network namespaces).

Three runs of N sequential Main Mode + Quick Mode setups (each followed by the deletion of
its ISAKMP SA, not timed), one namespace per side, charon with kernel-libipsec (so NAT-T):

* ``ours->charon``: our engine (tests/support/ikev1peer.py) initiates, charon responds;
* ``charon->ours``: charon initiates (``swanctl --initiate``), our engine responds;
* ``charon->charon``: the same initiator against a charon responder: the baseline of the
  previous line (the swanctl/vici round trip is in both);

plus ``quick``: N Quick Modes (rekeys) on one ISAKMP SA from our initiator. Prints setups
per second and the median time of one setup.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.support import strongswan as sw
from tests.support.netns import NetnsBed
from tests.test_ikev1_strongswan import SWAN, US, Ours, _charon, _our_conf, _swan_conf

IKE, ESP = "aes128-sha256-ecp256", "aes128-sha256"


def _report(name: str, times: list[float]) -> None:
    print(f"{name:16} {len(times) / sum(times):7.1f} setups/s  median "
          f"{statistics.median(times) * 1000:6.1f} ms  (n={len(times)})", flush=True)


def main(n: int) -> None:
    ok, reason = sw.can_run()
    if not ok:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory(prefix="ikev1bench-") as tmp, NetnsBed("ike1b") as bed:
        work = Path(tmp)
        us, swan_ns = bed.add_namespace("us"), bed.add_namespace("swan")
        link = bed.link(us, swan_ns)
        assert (link.addr_a, link.addr_b) == (US, SWAN)
        bed.add_dummy(swan_ns, "prot0", "198.19.2.1/24")
        bed.add_dummy(us, "prot0", "198.19.1.1/24")
        bed.ns_us, bed.ns_swan = us, swan_ns
        # ours -> charon, then charon -> ours and Quick Mode only
        swan = _charon(bed, work / "a", _swan_conf(ike=IKE, esp=ESP))
        ours = Ours(bed, us, work, _our_conf(ike=IKE, esp=ESP))
        times = []
        for i in range(n):
            t0 = time.monotonic()
            ours.send(cmd="initiate", peer="swan", child="net")
            ours.wait(lambda d, i=i: d.get("type") == "SAEstablished"
                      and sum(e.get("type") == "SAEstablished" for e in ours.events) > i,
                      10, "setup")
            times.append(time.monotonic() - t0)
            ours.send(cmd="delete", peer="swan", child=None)
            time.sleep(0.05)
        _report("ours->charon", times)
        times = []
        base = sum(e.get("type") == "SAEstablished" for e in ours.events)
        for _ in range(n):
            t0 = time.monotonic()
            swan.swanctl("--initiate", "--child", "net", "--timeout", "10")
            times.append(time.monotonic() - t0)
            swan.swanctl("--terminate", "--ike", "kinkd", "--timeout", "10")
        ours.wait(lambda d: sum(e.get("type") == "SAEstablished" for e in ours.events)
                  >= base + n, 10, "all responded")
        _report("charon->ours", times)
        ours.send(cmd="initiate", peer="swan", child="net")
        times = []
        for _ in range(n):
            k = sum(e.get("type") == "SAEstablished" for e in ours.events)
            t0 = time.monotonic()
            ours.send(cmd="rekey", peer="swan", child="net")
            ours.wait(lambda d, k=k: d.get("type") == "SAEstablished" and sum(
                e.get("type") == "SAEstablished" for e in ours.events) > k, 10, "quick")
            times.append(time.monotonic() - t0)
        _report("quick (ours)", times)
        ours.close()
        swan.stop()
        # the baseline: charon -> charon, same initiator configuration
        ini = _charon(bed, work / "b", _swan_conf(ike=IKE, esp=ESP))
        res = sw.Charon(bed, us, work / "c")
        conf = _swan_conf(ike=IKE, esp=ESP)
        for a, b in (("198.18.1.2", "@@"), ("198.18.1.1", "198.18.1.2"), ("@@", "198.18.1.1"),
                     ("198.19.2.0", "@@"), ("198.19.1.0", "198.19.2.0"), ("@@", "198.19.1.0")):
            conf = conf.replace(a, b)
        res.write_config(conf)
        res.start()
        res.load()
        times = []
        for _ in range(n):
            t0 = time.monotonic()
            ini.swanctl("--initiate", "--child", "net", "--timeout", "10")
            times.append(time.monotonic() - t0)
            ini.swanctl("--terminate", "--ike", "kinkd", "--timeout", "10")
        _report("charon->charon", times)
        ini.stop()
        res.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
