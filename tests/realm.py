"""Test helper around ``krb5-testrealm/realm``: bring realms up/down, expose their facts.

The realm's environment (KRB5_CONFIG, ...) is never put into ``os.environ`` by
this module: tests get it as a dict (``Realm.env``) for subprocesses, or through
the function-scoped ``krb5_env`` fixture, which sets and restores it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REALM_TOOL = REPO / "krb5-testrealm" / "realm"


class RealmUnavailable(Exception):
    pass


@dataclass
class Realm:
    directory: Path
    realm: str
    kdc_port: int
    hosts: dict[str, dict]
    users: dict[str, str]  # short name -> password
    mode: str
    env: dict[str, str] = field(default_factory=dict)
    netns: str | None = None  # the network namespace the KDC runs in (test beds)

    def keytab(self, host: str) -> Path:
        return Path(self.hosts[host]["keytab"])

    def service(self, host: str) -> str:
        return self.hosts[host]["principal"]

    def user(self, name: str) -> str:
        return f"{name}@{self.realm}"

    def password(self, name: str) -> str:
        return self.users[name]

    def run(self, *cmd: str, input: str | None = None, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        e = dict(self.env)
        if env:
            e.update(env)
        return subprocess.run(list(cmd), input=input, env=e, capture_output=True, text=True,
                              check=check, timeout=60)

    def kinit(self, user: str, ccache: str | None = None) -> str:
        """kinit USER with its password into CCACHE (default: the realm's); returns the ccache name."""
        cc = ccache or self.env["KRB5CCNAME"]
        self.run("kinit", "-c", cc, self.user(user), input=self.password(user) + "\n")
        return cc

    def stop_kdc(self) -> None:
        tool("stop", self.directory, netns=self.netns)

    def start_kdc(self) -> None:
        tool("start", self.directory, netns=self.netns)


def tool(*args, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    r = subprocess.run([*prefix, sys.executable, str(REALM_TOOL), *map(str, args)],
                       capture_output=True, text=True, timeout=900)
    if check and r.returncode != 0:
        raise RealmUnavailable(f"realm {args[0]} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r


def load(directory: Path) -> Realm:
    info = json.loads((directory / "realm.json").read_text())
    state = json.loads((directory / "state.json").read_text())
    users = {}
    for line in (directory / "users.txt").read_text().splitlines():
        name, pw = line.split(" ", 1)
        users[name] = pw
    env = dict(os.environ)
    for k in [k for k in env if k.startswith("KRB5")]:
        del env[k]
    env.update(
        KRB5_CONFIG=str(directory / "krb5.conf"),
        KRB5_KDC_PROFILE=str(directory / "kdc.conf"),
        KRB5CCNAME=f"FILE:{directory}/ccache",
        KRB5RCACHEDIR=str(directory / "rcache"),
    )
    return Realm(directory=directory, realm=info["realm"], kdc_port=info["kdc_port"],
                 hosts=info["hosts"], users=users, mode=state["mode"], env=env)


def up(directory: Path, hosts=("host1.kink.test", "host2.kink.test"), users=("alice", "bob"),
       container: bool = False, realm: str = "KINK.TEST", address: str | None = None,
       netns: str | None = None) -> Realm:
    """Bring a realm up; ``address``: the KDC listens there instead of 127.0.0.1, and
    ``netns``: the tool (and so the KDC) runs inside that network namespace."""
    args = ["up", directory, "--realm", realm]
    for h in hosts:
        args += ["--host", h]
    for u in users:
        args += ["--user", u]
    if container:
        args.append("--container")
    if address:
        args += ["--address", address]
    tool(*args, netns=netns)
    r = load(directory)
    r.netns = netns
    return r


def down(r: Realm) -> None:
    tool("down", r.directory, check=False, netns=r.netns)
