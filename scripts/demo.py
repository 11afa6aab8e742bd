#!/usr/bin/env python3
"""The README's demo: two kinkd peers negotiate an ESP SA pair keyed by Kerberos.

1. an embedded MIT realm KINK.TEST (KDC on a free loopback port),
2. kinkd on 127.0.0.1 (host1) and on 127.0.0.2 (host2), memory backend, each
   with its keytab,
3. `kinkctl up host2` on host1: one CREATE/REPLY round trip,
4. both sides' `kinkctl sas` (SPIs and transforms match crosswise),
5. alice runs `kinit` and connects as herself (kinit-then-connect),
6. `kinkctl dump` decodes the captured exchange (when dumpcap may capture),
7. `kinkctl down host2`, then both daemons stop cleanly and the realm goes down.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import realm as realmlib  # noqa: E402
from tests.daemons import Node, free_udp_port, write_config  # noqa: E402

H1, H2 = "host1.kink.test", "host2.kink.test"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(cmd: str, r: subprocess.CompletedProcess) -> None:
    print(f"$ {cmd}")
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        sys.stdout.write(r.stderr)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="kinkd-demo-") as tmp:
        tmp = Path(tmp)
        step("bringing up the embedded MIT Kerberos realm KINK.TEST")
        realm = realmlib.up(tmp / "realm", hosts=[H1, H2], users=["alice"])
        nodes: list[Node] = []
        capture = None
        try:
            print(f"KDC on 127.0.0.1:{realm.kdc_port}; keytabs " +
                  ", ".join(str(realm.keytab(h)) for h in (H1, H2)))
            port = free_udp_port()
            n1 = Node(H1, "127.0.0.1", port, tmp / "host1", realm)
            n2 = Node(H2, "127.0.0.2", port, tmp / "host2", realm)
            nodes = [n1, n2]
            for n in nodes:
                n.directory.mkdir()
            esp = ["aes128gcm16", "aes256-sha256"]
            write_config(n1, [{"name": "host2", "address": f"127.0.0.2:{port}",
                               "principal": realm.service(H2),
                               "child": [{"name": "pg", "local_ts": ["dynamic"],
                                          "remote_ts": ["dynamic[tcp/5432]"], "esp_proposals": esp}]}])
            write_config(n2, [{"name": "host1", "address": f"127.0.0.1:{port}",
                               "principal": realm.service(H1),
                               "allow_principals": [realm.user("alice")],
                               "child": [{"name": "pg", "local_ts": ["dynamic[tcp/5432]"],
                                          "remote_ts": ["dynamic"], "esp_proposals": esp}]}])
            step(f"starting kinkd on 127.0.0.1:{port} (host1) and 127.0.0.2:{port} (host2)")
            for n in nodes:
                n.start()
                print(f"{n.name}: pid {n.proc.pid}, config {n.config_path}")
            dumpcap = shutil.which("dumpcap")
            if dumpcap:
                pcap = tmp / "kink.pcapng"
                capture = subprocess.Popen([dumpcap, "-q", "-i", "lo", "-f", f"udp port {port}",
                                            "-w", str(pcap)], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            step("host1: kinkctl up host2  (CREATE with an AP-REQ, REPLY with an AP-REP)")
            show("kinkctl up host2", n1.ctl("up", "host2"))
            step("both sides' SAs: host1's SPI-IN is host2's SPI-OUT and vice versa")
            show("[host1] kinkctl sas", n1.ctl("sas"))
            show("[host2] kinkctl sas", n2.ctl("sas"))
            step("kinit alice, then connect as alice (kinit-then-connect)")
            cc = f"FILE:{tmp}/alice.ccache"
            realm.kinit("alice", ccache=cc)
            print(realm.run("klist", "-c", cc).stdout)
            show("KRB5CCNAME=... kinkctl up host2/pg --as-user",
                 n1.ctl("up", "host2/pg", "--as-user", env={"KRB5CCNAME": cc}))
            step("kinkctl peers / status on host2")
            show("[host2] kinkctl peers", n2.ctl("peers"))
            if capture is not None:
                time.sleep(0.5)
                capture.send_signal(signal.SIGINT)
                capture.wait(10)
                capture = None
                step("kinkctl dump: what was on the wire (checksums verified with host2's keytab)")
                r = n1.ctl("dump", str(tmp / "kink.pcapng"), "--port", str(port), "--keytab",
                           str(realm.keytab(H2)), check=False)
                out = r.stdout.splitlines()
                print("\n".join(out[:40]) + (f"\n... ({len(out) - 40} more lines)" if len(out) > 40 else ""))
            step("host1: kinkctl down host2  (DELETE with the peer)")
            show("kinkctl down host2", n1.ctl("down", "host2"))
            show("[host2] kinkctl sas", n2.ctl("sas"))
            step("stopping both daemons (SIGTERM)")
            for n in nodes:
                print(f"{n.name}: exit status {n.stop()}")
        except Exception as e:
            print(f"demo failed: {e}", file=sys.stderr)
            for n in nodes:
                print(f"--- {n.name} log ---\n{n.log()[-3000:]}", file=sys.stderr)
            return 1
        finally:
            if capture is not None:
                capture.kill()
            for n in nodes:
                try:
                    n.stop()
                except Exception:  # noqa: BLE001
                    pass
            step("realm down")
            realmlib.down(realm)
    print("demo finished")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
