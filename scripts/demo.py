#!/usr/bin/env python3
"""The README's demo: an embedded MIT realm, a user who kinits, a service ticket for kink/<host>.

Steps: realm up in a temporary directory -> `kinit alice` with her password ->
a service ticket for kink/host2 through gssapi (what kinkd's initiator does) ->
`klist` -> realm down. Later versions turn this into two kinkd peers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import realm as realmlib  # noqa: E402


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="kinkd-demo-") as tmp:
        step("bringing up the embedded MIT Kerberos realm KINK.TEST")
        r = realmlib.up(Path(tmp) / "realm", hosts=["host1.kink.test", "host2.kink.test"],
                        users=["alice"])
        try:
            print(f"KDC on 127.0.0.1:{r.kdc_port}; keytabs: "
                  + ", ".join(str(r.keytab(h)) for h in r.hosts))
            step("kinit alice@KINK.TEST (password from users.txt)")
            r.kinit("alice")
            step("service ticket for kink/host2.kink.test through gssapi")
            os.environ.update({k: r.env[k] for k in ("KRB5_CONFIG", "KRB5CCNAME")})
            import gssapi

            target = gssapi.Name(r.service("host2.kink.test"), gssapi.NameType.kerberos_principal)
            ctx = gssapi.SecurityContext(name=target, usage="initiate")
            token = ctx.step()
            print(f"AP-REQ token of {len(token)} bytes built for {r.service('host2.kink.test')}")
            step("klist")
            print(subprocess.run(["klist", "-e"], env=r.env, capture_output=True,
                                 text=True).stdout)
        finally:
            step("realm down")
            realmlib.down(r)
    print("demo finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
